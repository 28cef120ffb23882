"""Build the executed site into a staging folder and publish it only when the build succeeded.

A failing cell, a failed hidden check or any warning fails ``sphinx-build -W``; the site that was in
``html/`` before stays there untouched, and the failed attempt is kept in ``html.failed/`` to inspect.
Sphinx has no such switch itself (it writes pages in place as it goes), hence this small wrapper.

Every build writes every page into an empty folder (``-a``; reading and executing stay incremental), so a
page removed from the source is not left behind from an earlier site. After a failed build Sphinx's saved
environment is dropped: otherwise the next run would count the failed pages as up to date and never repeat
the warnings that failed them. ``QWEN_DOCS_EXECUTION=force`` also reads every page again (``-E``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

#: Overrides how many pages execute at once (sphinx-build's ``-j``: a number or ``auto``).
JOBS_VARIABLE = "QWEN_DOCS_JOBS"


def parallel_jobs(cuda_available: bool | None = None) -> str:
    """sphinx-build's ``-j``: ``auto`` on a CPU, but 1 where CUDA is available.

    Pages executing side by side on one GPU each hold their models in its memory: with real weights that is
    tens of GB a page (Qwen2-7B in bf16 is 15 GB a copy), which no single GPU holds for several pages at once.
    """
    choice = os.environ.get(JOBS_VARIABLE, "").strip().lower()
    if choice:
        if choice != "auto" and not (choice.isdigit() and int(choice) > 0):
            raise SystemExit(f"{JOBS_VARIABLE}={choice!r} is neither a positive number nor 'auto': unset it or fix it")
        return choice
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    return "1" if cuda_available else "auto"


def build_site(source: Path, build: Path, extra_args: Sequence[str] = ()) -> int:
    """Run ``sphinx-build -W`` for ``source`` and swap the result into ``build/html`` if it succeeded."""
    html, staging, failed = build / "html", build / "html.staging", build / "html.failed"
    doctrees = build / "doctrees"
    shutil.rmtree(staging, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "sphinx",
        "-W",
        "--keep-going",
        "-a",
        *(["-E"] if os.environ.get("QWEN_DOCS_EXECUTION") == "force" else []),
        "-b",
        "html",
        "-j",
        parallel_jobs(),
        "-d",
        str(doctrees),
        str(source),
        str(staging),
        *extra_args,
    ]
    status = subprocess.run(command, check=False).returncode
    if status != 0:
        (doctrees / "environment.pickle").unlink(missing_ok=True)  # the next run reads (and warns) again
        shutil.rmtree(failed, ignore_errors=True)
        if staging.is_dir():
            staging.rename(failed)
        where = f"the previous site in {html} is unchanged" if html.is_dir() else f"nothing was published to {html}"
        print(f"docs build failed (exit {status}); {where}; the failed build is in {failed} (paths printed above "
              f"under {staging} are there now, e.g. the tracebacks in {failed / 'reports'})", file=sys.stderr)
        return status
    previous = build / "html.previous"
    shutil.rmtree(previous, ignore_errors=True)
    if html.is_dir():
        html.rename(previous)
    staging.rename(html)
    shutil.rmtree(previous, ignore_errors=True)
    shutil.rmtree(failed, ignore_errors=True)
    print(f"site built: {html / 'index.html'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qwen_docs_helpers.sitebuild", description=__doc__)
    parser.add_argument("source", type=Path, help="the Sphinx source folder (with conf.py)")
    parser.add_argument("build", type=Path, help="the build folder; the site goes to BUILD/html")
    parser.add_argument("sphinx_args", nargs=argparse.REMAINDER, help="more sphinx-build arguments")
    args = parser.parse_args(argv)
    return build_site(args.source, args.build, args.sphinx_args)


if __name__ == "__main__":
    sys.exit(main())
