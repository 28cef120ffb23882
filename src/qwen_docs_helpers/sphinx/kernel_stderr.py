"""A kernel's standard error, passed on to the build's as it comes, with its last line kept.

jupyter_client gives a kernel the build's own stderr, so a kernel that dies as it starts says why only there:
in a parallel build, among other pages' output, and often outside the tail of a CI log that a reader sees.
:mod:`.dead_kernel` gives the kernel a pipe instead, copied to the build's stderr by a thread, and quotes its last
line in its messages. No library tees a child process's stderr: this is ``os.pipe`` and a thread.
"""

from __future__ import annotations

import os
import threading
from types import TracebackType

from myst_nb.core.render import strip_ansi

#: The longest quote of a kernel's last line, in characters.
LONGEST_QUOTE = 300
_KEPT_BYTES = 4096  # of the latest output: enough for the last line of a traceback
_BUILD_STDERR = 2  # the descriptor a kernel inherits when it is given none


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` (``os.write`` may write part of it); a closed descriptor drops it."""
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:  # the build's stderr is gone: keep draining the pipe, or a chatty kernel would block on it
        pass


class KernelStderr:
    """A pipe whose write end, :attr:`fd`, is a kernel's stderr: what the kernel writes reaches the build's
    stderr, and :meth:`close`, once the kernel has exited, returns the last line it wrote."""

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
        text = strip_ansi(self._recent.decode("utf8", errors="replace"))
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        return last if len(last) <= LONGEST_QUOTE else last[: LONGEST_QUOTE - 1] + "…"

    def __enter__(self) -> KernelStderr:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
