"""A kernel's standard error, passed on to the build's as it comes, with its end kept.

jupyter_client gives a kernel the build's own stderr, so a kernel that dies says why only there: in a parallel
build, among other pages' output, and often outside the tail of a CI log that a reader sees. :mod:`.dead_kernel`
gives the kernel a pipe instead, copied to the build's stderr by a thread, and quotes from its end in its messages:
the last line of a kernel that died as it started, the "Fatal Python error" of one that crashed while a cell ran.
No library tees a child process's stderr: this is ``os.pipe`` and a thread.
"""

from __future__ import annotations

import os
import threading
from types import TracebackType

from myst_nb.core.render import strip_ansi

#: The longest quote of a kernel's line, in characters.
LONGEST_QUOTE = 300
#: How Python's faulthandler starts its report of a crash (followed by Python stacks).
FATAL = "Fatal Python error: "
_KEPT_BYTES = 65536  # of the latest output: a faulthandler report (one stack, at most 100 frames) with its first line
_BUILD_STDERR = 2  # the descriptor a kernel inherits when it is given none


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` (``os.write`` may write part of it); a closed descriptor drops it."""
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:  # the build's stderr is gone: keep draining the pipe, or a chatty kernel would block on it
        pass


def _quote(line: str) -> str:
    return line if len(line) <= LONGEST_QUOTE else line[: LONGEST_QUOTE - 1] + "…"


class KernelStderr:
    """A pipe whose write end, :attr:`fd`, is a kernel's stderr: what the kernel writes reaches the build's
    stderr, and :meth:`close`, once the kernel has exited, returns the last line it wrote (and
    :meth:`fatal_error` its report of a crash)."""

    def __init__(self) -> None:
        read, self.fd = os.pipe()
        self._recent = b""
        self._closed = False
        self._copier = threading.Thread(target=self._copy, args=(read,), name="kernel-stderr", daemon=True)
        self._copier.start()

    def _copy(self, read: int) -> None:
        with os.fdopen(read, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                _write_all(_BUILD_STDERR, chunk)
                self._recent = (self._recent + chunk)[-_KEPT_BYTES:]

    def close(self, wait: float = 2.0) -> str:
        """Close this process's write end and wait up to ``wait`` seconds for the copy to end (it ends when the
        kernel, and any child that inherited its stderr, has exited); return the last non-empty line written,
        without colours and cut to :data:`LONGEST_QUOTE` characters ("" if none). Safe to call again."""
        if not self._closed:
            self._closed = True
            os.close(self.fd)
        self._copier.join(wait)
        lines = self._lines()
        return _quote(lines[-1]) if lines else ""

    def fatal_error(self) -> str:
        """The last ``Fatal Python error: ...`` line written (a crash that faulthandler reported), cut as in
        :meth:`close` ("" if none); call it after :meth:`close`."""
        return next((_quote(line) for line in reversed(self._lines()) if line.startswith(FATAL)), "")

    def _lines(self) -> list[str]:
        """The non-empty lines of what was kept, stripped and without colours."""
        text = strip_ansi(self._recent.decode("utf8", errors="replace"))
        return [line.strip() for line in text.splitlines() if line.strip()]

    def __enter__(self) -> KernelStderr:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
