"""A kernel that dies while a page executes fails that page like a failed cell, not the whole build.

When the kernel process dies (out of memory, a crash in native code, ``os._exit``), nbclient raises
DeadKernelError. When it dies as it starts (its Python cannot import ipykernel, it is killed),
``NotebookClient.execute`` fails before sending any cell with a plain RuntimeError, "Kernel died before
replying to kernel_info", raised by jupyter_client's ``KernelClient.wait_for_ready``. Both myst-nb execution modes
("force" and "cache") run pages through jupyter-cache's ``single_nb_execution``, which catches only
CellExecutionError and CellTimeoutError, so either death used to escape myst-nb and end the build with
Sphinx's crash report. Neither library has a hook in between, so ``NotebookClient.execute`` is wrapped (the
one call both modes go through, and the one that still knows which cell was running): the death is re-raised
as a CellExecutionError subclass, which jupyter-cache and myst-nb then handle as any failed execution (a
warning for the page, the traceback in ``reports/``, nothing cached). The cell that was running gets an
error output saying that the kernel died, which :mod:`~qwen_docs_helpers.sphinx.cell_errors` reports at the
cell's line; cells after it keep no outputs. A death before any cell ran is reported for the page as such.

A kernel that dies or does not answer as it starts is started once more before the page fails. Over TCP,
jupyter_client picks free ports, closes them and hands them to the kernel, which cannot bind one that another
process took in between (jupyter/jupyter_client#154, open), so a healthy kernel now and then failed at start on a
busy machine, most often by exiting, once (in CI) by hanging until jupyter_client's 60 s start-up timeout.
:mod:`.kernel_sockets` now gives kernels Unix sockets instead, where it can; the second start stays for where it
cannot, and for any other start that fails once. A kernel that cannot start (its Python has no ipykernel) fails
again and fails the page as before. Both messages quote the last line the kernel wrote to its stderr
(:mod:`.kernel_stderr`), the reason it gave if it gave one.

An IPython kernel is started with faulthandler on, so that a crash in native code while a cell runs (a segfault
in a CUDA extension, an abort) prints the Python stack of the thread that crashed to the build's stderr, and the
cell's error quotes its first line. ipykernel points the kernel's fd 2 at a pipe of its own while cells run, to show
what C code writes there as cell output; that pipe dies with the kernel, so faulthandler writes to the copy of
the original stderr that ipykernel keeps. A kernel killed outright (out of memory) prints nothing. The option
replaces any ``exec_lines`` of an IPython profile, so pages cannot depend on a maintainer's profile either.
"""

from __future__ import annotations

import atexit
import functools
from itertools import pairwise
from typing import Any, cast

import nbclient.exceptions
import nbformat
from jupyter_client.kernelspec import NATIVE_KERNEL_NAME, KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from sphinx.application import Sphinx
from sphinx.util import logging

from .kernel_stderr import KernelStderr

logger = logging.getLogger(__name__)

#: The error a dead kernel is reported as (myst-nb's execution data records this class name).
ENAME = "DeadKernelError"
#: What the running cell's error output says, followed by :data:`PRINTED` and the kernel's report of its crash, if
#: it made one, else by :data:`GUESS`.
EVALUE = "the kernel died while this cell ran"
#: What may have killed a kernel that said nothing.
GUESS = " (out of memory? a crash in native code?)"
#: What the page's error says when no cell had been sent to the kernel (most often: it died as it started).
BEFORE_ANY_CELL = "the kernel died before any cell ran"
#: jupyter_client's error (a plain RuntimeError) for a kernel process that exited while it started.
STARTUP_DEATH = "Kernel died before replying to kernel_info"
#: How jupyter_client's errors for a kernel that never answered as it started begin: it exited, or it did not reply
#: in time (nbclient then kills it).
STARTUP_FAILURES = (STARTUP_DEATH, "Kernel didn't respond in ", "Kernel didn't respond to heartbeats in ")
#: How many times a kernel is started in all before its death at start fails the page.
STARTS = 2
#: Joins an error to what the kernel wrote as it died (see :func:`startup_words` and :func:`crash_words`).
PRINTED = "; it printed: "
#: The kernel argument that turns faulthandler on, writing to the stderr the kernel was started with the stack of
#: the thread that crashed (ipykernel's own threads would only bury it). ``getattr``: a kernel configured not to
#: capture fd 2 has no copy, and its fd 2 is that stderr.
FAULTHANDLER = (
    "--IPKernelApp.exec_lines=['import faulthandler as _f, sys as _s; "
    "_f.enable(getattr(_s.stderr, \"_original_stdstream_copy\", _s.__stderr__), all_threads=False); del _f, _s']"
)


class DeadKernelError(CellExecutionError, nbclient.exceptions.DeadKernelError):
    """nbclient's DeadKernelError as a failed cell, so that jupyter-cache and myst-nb report it as one."""


def running_cell(client: NotebookClient) -> int | None:
    """Index of the cell nbclient was running: the last one it sent to the kernel (None: it had sent none)."""
    sent = 0
    for index, cell in enumerate(client.nb.cells):
        tags = cell.metadata.get("tags", [])
        # the cells nbclient sends (NotebookClient.async_execute_cell skips the others)
        if cell.cell_type == "code" and cell.source.strip() and client.skip_cells_with_tag not in tags:
            sent += 1
            if sent == client.code_cells_executed:
                return index
    return None


def as_cell_failure(client: NotebookClient, printed: str = "") -> DeadKernelError:
    """Mark the notebook of a client whose kernel died, and return the error to raise instead (``printed``: what
    the kernel said as it died, quoted: its last line if it died before any cell ran, else its crash report)."""
    index = running_cell(client)
    said = PRINTED + printed if printed else ""
    if index is None:
        message = BEFORE_ANY_CELL + said
        return DeadKernelError(f"{ENAME}: {message}", ENAME, message)
    evalue = EVALUE + (said or GUESS)
    output = nbformat.v4.new_output("error", ename=ENAME, evalue=evalue, traceback=[f"{ENAME}: {evalue}"])
    cell = client.nb.cells[index]
    cell.outputs.append(output)
    for later in client.nb.cells[index + 1 :]:  # nothing after the death ran: no stored outputs claim it did
        if later.cell_type == "code":
            later.outputs = []
            later.execution_count = None
    return cast(DeadKernelError, DeadKernelError.from_cell_and_msg(cell, output))  # typed as returning the base class


def _words_after(error: str, lead: str) -> str | None:
    _, found, after = error.partition(lead)
    if not found:
        return None
    return after.removeprefix(PRINTED) if after.startswith(PRINTED) else ""


def startup_words(error: str) -> str | None:
    """From the error line of a page whose kernel died: None if a cell had run, else what the kernel last printed
    ("" if nothing)."""
    return _words_after(error, BEFORE_ANY_CELL)


def crash_words(error: str) -> str | None:
    """From an error line: None if it is not that of a cell during which the kernel died, else the first line of
    the kernel's crash report ("" if it made none)."""
    return _words_after(error, EVALUE)


def runs_ipykernel(client: NotebookClient) -> bool:
    """Whether the client's kernel spec (chosen as nbclient chooses it) runs ``python -m ipykernel_launcher``, and so
    takes IPKernelApp's options."""
    name = client.kernel_name or client.nb.metadata.get("kernelspec", {}).get("name") or NATIVE_KERNEL_NAME
    try:
        argv = KernelSpecManager().get_kernel_spec(name).argv
    except NoSuchKernel:
        return False
    return any(flag == "-m" and module in ("ipykernel_launcher", "ipykernel") for flag, module in pairwise(argv))


def failed_at_startup(client: NotebookClient, error: RuntimeError) -> bool:
    """Whether ``error`` is jupyter_client's report of a kernel that exited or did not answer as it started, no cell
    run."""
    return str(error).startswith(STARTUP_FAILURES) and client.code_cells_executed == 0


def _reporting_death(execute: Any) -> Any:
    @functools.wraps(execute)
    def wrapper(self: NotebookClient, *args: Any, **kwargs: Any) -> Any:
        if FAULTHANDLER not in self.extra_arguments and runs_ipykernel(self):
            self.extra_arguments = [*self.extra_arguments, FAULTHANDLER]
        start = 1
        while True:
            with KernelStderr() as stderr:
                try:  # a caller's own choice of the kernel's stderr is kept
                    return execute(self, *args, **{"stderr": stderr.fd, **kwargs})
                except nbclient.exceptions.DeadKernelError as death:
                    if isinstance(death, DeadKernelError):
                        raise
                    stderr.close()  # the kernel has exited: its crash report, if any, is all in
                    raise as_cell_failure(self, stderr.fatal_error()) from death
                except RuntimeError as error:
                    if not failed_at_startup(self, error):
                        raise
                    printed = stderr.close()  # the kernel has exited: this is all it wrote
                    # nbclient cleaned up after the failed start (the next execute makes a new kernel manager,
                    # with new ports) but left its at-exit clean-up registered, which would fail at exit and keep
                    # this client alive until then
                    atexit.unregister(self._cleanup_kernel)
                    if start == STARTS:
                        raise as_cell_failure(self, printed) from error
                    logger.info("kernel %r failed as it started (%s; start %d of %d%s); starting it again",
                                self.kernel_name, error, start, STARTS, PRINTED + printed if printed else "")
                    start += 1

    wrapper.reports_dead_kernel = True  # type: ignore[attr-defined]  # marks the patch, so it is applied once
    return wrapper


def setup(app: Sphinx) -> dict[str, object]:
    if not getattr(NotebookClient.execute, "reports_dead_kernel", False):  # once per process
        NotebookClient.execute = _reporting_death(NotebookClient.execute)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
