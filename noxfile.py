"""Sessions that build the executed site and run the tests, each in its own pinned environment.

On a CPU machine torch is pinned to the local CPU build; on a GPU runner (nvidia-smi present, or
QWEN_DOCS_TORCH=system) the sessions see the runner's own CUDA torch instead of installing one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

ROOT = Path(__file__).parent
DOCS = ROOT / "docs"
BUILD = DOCS / "_build"
CONSTRAINTS = ("-c", str(ROOT / "requirements" / "constraints.txt"))
CPU_TORCH = "torch==2.13.0"
SYSTEM_TORCH = os.environ.get("QWEN_DOCS_TORCH") == "system" or (
    os.environ.get("QWEN_DOCS_TORCH") != "pinned" and shutil.which("nvidia-smi") is not None
)
VENV_PARAMS = ["--system-site-packages"] if SYSTEM_TORCH else []

nox.options.sessions = ["tests", "docs"]
nox.options.reuse_existing_virtualenvs = True


def install(session: nox.Session, extras: str) -> None:
    """The project with ``extras``, pinned; torch from the runner or the pinned CPU build."""
    if SYSTEM_TORCH:
        session.run("python", "-c", "import torch; print('using the runner torch', torch.__version__)")
    else:
        session.install(CPU_TORCH)
    session.install(*CONSTRAINTS, "-e", f".[{extras}]")


@nox.session(venv_params=VENV_PARAMS)
def tests(session: nox.Session) -> None:
    """Lint and type-check, then the unit and Sphinx-extension tests (pass pytest arguments after --)."""
    install(session, "test,docs,quant")
    session.run("ruff", "check", "src", "tests", "benchmarks", "tools", "noxfile.py", "docs/conf.py")
    session.run("mypy")  # the package ships py.typed: pyproject's [tool.mypy] checks it strictly
    session.run("pytest", "--ignore=tests/browser", *session.posargs)  # those run in the browser session


def build_site(session: nox.Session, *sphinx_args: str) -> None:
    """Execute and build the site into docs/_build/html, published only if the -W build succeeded."""
    session.run("python", "-m", "qwen_docs_helpers.sitebuild", str(DOCS), str(BUILD), *sphinx_args)


@nox.session(venv_params=VENV_PARAMS)
def docs(session: nox.Session) -> None:
    """Execute and build the whole site into docs/_build/html, replacing it only when the build succeeds.

    Only pages whose code changed re-execute (myst-nb cache mode). Warnings are errors. Pass extra
    sphinx-build arguments after ``--``.
    """
    install(session, "docs,quant")
    build_site(session, *session.posargs)


@nox.session(venv_params=VENV_PARAMS)
def browser(session: nox.Session) -> None:
    """The built site in Chromium: synced tabs, dropdowns, copy buttons, stamp, downloads (each page's script and
    notebook are fetched and run as a reader would), links, search, phones.

    Builds the site as ``docs`` does first (incremental: after ``docs`` nothing is rebuilt), then runs
    tests/browser against docs/_build/html, which fail rather than skip when something is missing.
    Needs Debian's Chromium (``apt-get install chromium``; Playwright's browser downloads are not used).
    Phone-width screenshots go to docs/_build/screenshots/. Pass pytest arguments after ``--``.
    """
    install(session, "test,docs,quant,browser")
    build_site(session)
    session.run("pytest", "tests/browser", *session.posargs, env={"QWEN_DOCS_REQUIRE_SITE": "1"})


@nox.session(venv_params=VENV_PARAMS)
def serve(session: nox.Session) -> None:
    """Live preview on http://127.0.0.1:8000: rebuilds on each edit under docs/ and reloads the page.

    Only pages whose code changed execute (the execution cache is the one ``docs`` fills); warnings are
    shown, not fatal. It builds into docs/_build/serve/ with its own environment, so docs/_build/html
    stays what ``docs`` built (and ``docs`` still sees every warning). Edits to src/qwen_docs_helpers
    rebuild too and, since every page calls the helpers, re-execute every page (minutes). Pass
    sphinx-autobuild arguments after ``--`` (``--port 8001``, ``--open-browser``).
    """
    install(session, "docs,quant,serve")
    out = BUILD / "serve"
    # as many pages at once as the docs session runs: one at a time where CUDA is (they would share its memory)
    jobs = session.run(
        "python", "-c", "from qwen_docs_helpers.sitebuild import parallel_jobs; print(parallel_jobs())", silent=True
    )
    session.run(
        "sphinx-autobuild", "--host", "127.0.0.1", "--port", "8000", "-j", str(jobs).strip(),
        "-d", str(out / "doctrees"), "--ignore", str(BUILD), "--re-ignore", r"__pycache__|\.ipynb_checkpoints",
        "--watch", str(ROOT / "src" / "qwen_docs_helpers"), str(DOCS), str(out / "html"), *session.posargs,
    )


@nox.session(venv_params=VENV_PARAMS)
def overhead(session: nox.Session) -> None:
    """Time the helpers against raw transformers on the same inputs and print a table of ratios."""
    install(session, "docs")
    session.run("python", "benchmarks/helpers_overhead.py", *session.posargs)


@nox.session(venv_params=VENV_PARAMS)
def benchmark(session: nox.Session) -> None:
    """Decoding speed, first-token time and peak memory on a CUDA GPU, against the memory-bandwidth roofline.

    Real-size Qwen2-7B, Qwen2-1.5B and Qwen1.5-MoE-A2.7B with random weights (no download); writes
    benchmarks/results/<gpu>.json for the speed page. Pass arguments after ``--`` (``--help`` lists them;
    ``--device cpu --tiny`` runs the same code on tiny models, to try it without a GPU).
    """
    install(session, "docs,quant")
    session.run("python", "benchmarks/generation.py", *session.posargs)
