"""A kernel's stderr still reaches the build's, and its last line is kept for the messages of a dead kernel."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qwen_docs_helpers.sphinx.kernel_stderr import FATAL, LONGEST_QUOTE, KernelStderr


def _child_writes(stderr: KernelStderr, text: str, *, after: str = "", times: int = 1) -> None:
    """A child process, given ``stderr.fd`` as its stderr as jupyter_client gives it to a kernel, writes ``text``
    ``times`` times, then ``after``."""
    code = "import sys; sys.stderr.write(sys.argv[1] * int(sys.argv[2]) + sys.argv[3])"
    subprocess.run([sys.executable, "-c", code, text, str(times), after], stderr=stderr.fd, check=True)


def test_what_the_child_writes_reaches_the_builds_stderr_and_its_last_line_is_kept(
    capfd: pytest.CaptureFixture[str],
) -> None:
    written = "Traceback (most recent call last):\n  File ...\n\x1b[31mOSError: port taken\x1b[0m\n\n"
    with KernelStderr() as stderr:
        _child_writes(stderr, written)
        assert stderr.close() == "OSError: port taken"  # without colours or the blank line after it
        assert stderr.close() == "OSError: port taken"  # a second close changes nothing
    assert capfd.readouterr().err == written  # all of it, as it was


def test_a_long_output_is_kept_by_its_end_and_a_long_line_is_cut(capfd: pytest.CaptureFixture[str]) -> None:
    last = "E" * (LONGEST_QUOTE + 50)
    with KernelStderr() as stderr:
        _child_writes(stderr, "noise\n", times=100_000, after=last)  # 600 kB: more than a pipe holds
        said = stderr.close()
    assert said == "E" * (LONGEST_QUOTE - 1) + "…"
    assert capfd.readouterr().err.endswith("noise\n" + last)


def test_a_child_that_writes_nothing_leaves_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    with KernelStderr() as stderr:
        _child_writes(stderr, "")
        assert stderr.close() == ""
    assert capfd.readouterr().err == ""


def test_the_first_line_of_a_crash_report_is_found_above_the_stacks(capfd: pytest.CaptureFixture[str]) -> None:
    code = "import threading, time, ctypes; threading.Thread(target=time.sleep, args=(60,), daemon=True).start(); " \
        "ctypes.string_at(0)"
    with KernelStderr() as stderr:
        crashed = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], stderr=stderr.fd, check=False)
        last = stderr.close()
        assert crashed.returncode != 0
        assert stderr.fatal_error() == f"{FATAL}Segmentation fault"
    assert last != stderr.fatal_error()  # the report goes on with the stack of each thread
    assert capfd.readouterr().err.count("File ") >= 2  # the stacks reached the build's stderr


def test_output_without_a_crash_report_has_no_fatal_error(capfd: pytest.CaptureFixture[str]) -> None:
    with KernelStderr() as stderr:
        _child_writes(stderr, "Traceback (most recent call last):\nOSError: port taken\n")
        stderr.close()
        assert stderr.fatal_error() == ""
    capfd.readouterr()
