"""Build the executed site into a staging folder and publish it only when the build succeeded.

A failing cell, a failed hidden check or any warning fails ``sphinx-build -W``; the site that was in
``html/`` before stays there untouched, and the failed attempt is kept in ``html.failed/`` to inspect.
Sphinx has no such switch itself (it writes pages in place as it goes), hence this small wrapper.

Every build writes every page into an empty folder (``-a``; reading and executing stay incremental), so a
page removed from the source is not left behind from an earlier site. After a failed build Sphinx's saved
environment is dropped: otherwise the next run would count the failed pages as up to date and never repeat
the warnings that failed them. ``QWEN_DOCS_EXECUTION=force`` also reads every page again (``-E``).

A build stopped with Ctrl+C, ``kill`` (SIGTERM) or a closed terminal (SIGHUP) stops all of Sphinx: it runs in a
process group of its own and gets each of these as one Ctrl+C, so that its page workers shut their kernels down
(:func:`run_sphinx`). Another signal a few seconds later kills the group.

The build's environment variables are checked before Sphinx starts (:func:`settings_problems`): a bad value is
one line naming the variable and what it accepts, not a Sphinx crash report.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from .errors import missing_docs_extra

try:
    from sphinx.errors import ConfigError
except ModuleNotFoundError as error:  # one line that says which extra to install, not a bare import error
    extra = missing_docs_extra(__name__, error)
    if extra is None:
        raise
    raise extra from error

#: Overrides how many pages execute at once (sphinx-build's ``-j``: a number or ``auto``).
JOBS_VARIABLE = "QWEN_DOCS_JOBS"
#: Which weights the pages run on (read by ``sphinx/site.py``); the first choice is the default.
WEIGHTS_VARIABLE, WEIGHTS_CHOICES = "QWEN_DOCS_WEIGHTS", ("auto", "real", "standin")
#: myst-nb's ``nb_execution_mode`` (read by ``docs/conf.py``); the first choice is the default.
EXECUTION_VARIABLE, EXECUTION_MODES = "QWEN_DOCS_EXECUTION", ("cache", "force", "auto", "off", "inline")
#: Seconds a cell may run (``nb_execution_timeout``, read by ``docs/conf.py``).
TIMEOUT_VARIABLE, DEFAULT_CELL_TIMEOUT = "QWEN_DOCS_CELL_TIMEOUT", 300


#: The signals that stop a build (POSIX), each passed on to Sphinx's process group as SIGINT.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
#: Seconds after the first stop signal in which more are part of the same stop: nox passes a Ctrl+C on, then sends
#: SIGTERM 0.3 s later and SIGKILL 0.2 s after that. A signal after these seconds kills Sphinx's process group.
SAME_STOP_S = 5.0


class SettingError(ConfigError):
    """A ``QWEN_DOCS_*`` variable has a value the build cannot use; the message is one line that names it and what
    it accepts. A :class:`~sphinx.errors.ConfigError`, so Sphinx shows it as it is when conf.py raises it."""


def _positive_int(text: str) -> int | None:
    """``text`` as a positive whole number, else ``None`` (ASCII digits only: ``int()`` fails on ``"²"``)."""
    return int(text) if text.isascii() and text.isdigit() and int(text) > 0 else None


def one_of(variable: str, value: str | None, choices: tuple[str, ...]) -> str:
    """``value`` of ``variable``, trimmed and lower-cased (unset or empty: the first of ``choices``)."""
    choice = (value or "").strip().lower() or choices[0]
    if choice not in choices:
        raise SettingError(f"{variable}={choice!r} is not one of {', '.join(choices)}: unset it (for {choices[0]}), "
                           "or set it to one of those")
    return choice


def execution_mode() -> str:
    """``$QWEN_DOCS_EXECUTION``: ``cache`` (the default) re-runs only pages whose code changed, ``force`` all."""
    return one_of(EXECUTION_VARIABLE, os.environ.get(EXECUTION_VARIABLE), EXECUTION_MODES)


def cell_timeout() -> int:
    """``$QWEN_DOCS_CELL_TIMEOUT``: seconds a cell may run, a positive whole number (default 300)."""
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_CELL_TIMEOUT
    seconds = _positive_int(text)
    if seconds is None:
        raise SettingError(f"{TIMEOUT_VARIABLE}={text!r} is not a positive whole number of seconds: unset it (for "
                           f"{DEFAULT_CELL_TIMEOUT}), or set it to one, e.g. 600")
    return seconds


def _jobs_setting() -> str:
    """``$QWEN_DOCS_JOBS`` trimmed and lower-cased (``""`` when unset)."""
    choice = os.environ.get(JOBS_VARIABLE, "").strip().lower()
    if choice and choice != "auto" and _positive_int(choice) is None:
        raise SettingError(f"{JOBS_VARIABLE}={choice!r} is neither a positive number nor 'auto': unset it or fix it")
    return choice


def settings_problems() -> list[str]:
    """One line per build variable with a bad value (none: ``[]``), checked before Sphinx starts."""
    checks = (
        execution_mode,
        cell_timeout,
        _jobs_setting,
        lambda: one_of(WEIGHTS_VARIABLE, os.environ.get(WEIGHTS_VARIABLE), WEIGHTS_CHOICES),
    )
    problems = []
    for check in checks:
        try:
            check()
        except SettingError as error:
            problems.append(str(error))
    return problems


def parallel_jobs(cuda_available: bool | None = None) -> str:
    """sphinx-build's ``-j``: ``auto`` on a CPU, but 1 where CUDA is available.

    Pages executing side by side on one GPU each hold their models in its memory: with real weights that is
    tens of GB a page (Qwen2-7B in bf16 is 15 GB a copy), which no single GPU holds for several pages at once.
    """
    try:
        choice = _jobs_setting()
    except SettingError as error:  # one line from the command line too (nox -s serve asks for this)
        raise SystemExit(str(error)) from None
    if choice:
        return choice
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    return "1" if cuda_available else "auto"


def run_sphinx(command: Sequence[str]) -> tuple[int, int | None]:
    """Run ``command`` (Sphinx) to the end and return its exit status and the signal that stopped the build, if any.

    Killed on its own, this wrapper would leave Sphinx and its page workers running, executing pages into a folder
    no one publishes (and, on a GPU runner, holding the GPU); a terminal's Ctrl+C reaches them only while they share
    its process group. So Sphinx gets a session of its own (no terminal can stop it for writing, either), and a
    stop signal here becomes SIGINT to that whole group, the interrupt its workers clean up after. More signals in
    the next :data:`SAME_STOP_S` seconds are ignored (Sphinx goes on cleaning up even if this wrapper is killed);
    one after that kills the group."""
    if os.name == "nt" or threading.current_thread() is not threading.main_thread():  # no handlers to install
        return subprocess.run(command, check=False).returncode, None
    sphinx = subprocess.Popen(command, start_new_session=True)
    received: list[int] = []
    first_at = 0.0

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal first_at
        if not received:
            first_at = time.monotonic()
            print(f"docs build: {signal.Signals(signum).name} received, stopping Sphinx and its page runs (to kill "
                  f"them, send another stop signal after {SAME_STOP_S:g} s)", file=sys.stderr, flush=True)
            passed_on = signal.SIGINT
        elif time.monotonic() - first_at < SAME_STOP_S:
            return
        else:
            passed_on = signal.SIGKILL
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):  # the group is gone already
            os.killpg(sphinx.pid, passed_on)

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        status = sphinx.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status, (received[0] if received else None)


def build_site(source: Path, build: Path, extra_args: Sequence[str] = ()) -> int:
    """Run ``sphinx-build -W`` for ``source`` and swap the result into ``build/html`` if it succeeded."""
    problems = settings_problems()
    if problems:
        for problem in problems:
            print(f"docs build not started: {problem}", file=sys.stderr)
        return 2
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
        *(["-E"] if execution_mode() == "force" else []),
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
    status, stopped_by = run_sphinx(command)
    if stopped_by is not None:  # the shell's convention for a process that a signal ended
        status = 128 + stopped_by
    if status != 0:
        (doctrees / "environment.pickle").unlink(missing_ok=True)  # the next run reads (and warns) again
        where = f"the previous site in {html} is unchanged" if html.is_dir() else f"nothing was published to {html}"
        if staging.is_dir() and any(staging.iterdir()):
            shutil.rmtree(failed, ignore_errors=True)
            staging.rename(failed)
            kept = (f"the failed build is in {failed} (paths printed above under {staging} are there now, e.g. the "
                    f"tracebacks in {failed / 'reports'})")
        else:  # Sphinx stopped before writing anything (a configuration error): keep an earlier failed build
            shutil.rmtree(staging, ignore_errors=True)
            kept = ("Sphinx had written no page yet" if stopped_by is not None
                    else "Sphinx stopped before writing any page: see its error above")
        failure = "failed"
        if stopped_by is not None:  # Sphinx reports a parallel build's interrupted workers as a crash to report
            failure = f"stopped by {signal.Signals(stopped_by).name}, which any Sphinx crash report above is about"
        print(f"docs build {failure} (exit {status}); {where}; {kept}", file=sys.stderr)
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
