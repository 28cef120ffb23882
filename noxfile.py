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
    """Lint, then the unit and Sphinx-extension tests (pass pytest arguments after --)."""
    install(session, "test,docs,quant")
    session.run("ruff", "check", "src", "tests", "noxfile.py", "docs/conf.py")
    session.run("pytest", *session.posargs)


@nox.session(venv_params=VENV_PARAMS)
def docs(session: nox.Session) -> None:
    """Execute and build the whole site into docs/_build/html, replacing it only when the build succeeds.

    Only pages whose code changed re-execute (myst-nb cache mode). Warnings are errors. Pass extra
    sphinx-build arguments after ``--``.
    """
    install(session, "docs,quant")
    html, staging = BUILD / "html", BUILD / "html.staging"
    shutil.rmtree(staging, ignore_errors=True)
    if html.is_dir():
        shutil.copytree(html, staging)  # incremental: unchanged pages are not rewritten
    session.run(
        "sphinx-build", "-W", "--keep-going", "-b", "html", "-j", "auto",
        "-d", str(BUILD / "doctrees"), str(DOCS), str(staging), *session.posargs,
    )
    previous = BUILD / "html.previous"
    shutil.rmtree(previous, ignore_errors=True)
    if html.is_dir():
        html.rename(previous)
    staging.rename(html)
    shutil.rmtree(previous, ignore_errors=True)
    session.log(f"site built: {html / 'index.html'}")
