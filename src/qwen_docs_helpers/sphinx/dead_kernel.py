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

A kernel that dies as it starts is started once more before the page fails: jupyter_client picks free ports,
closes them and hands them to the kernel, which cannot bind one that another process took in between
(jupyter/jupyter_client#154, open), so a healthy kernel now and then dies at start on a busy machine. A kernel
that cannot start (its Python has no ipykernel) dies again and fails the page as before. Both messages quote the
last line the kernel wrote to its stderr (:mod:`.kernel_stderr`), the reason it gave if it gave one.
"""

from __future__ import annotations

import atexit
import functools
from typing import Any, cast

import nbclient.exceptions
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from sphinx.application import Sphinx
from sphinx.util import logging

from .kernel_stderr import KernelStderr

logger = logging.getLogger(__name__)

#: The error a dead kernel is reported as (myst-nb's execution data records this class name).
ENAME = "DeadKernelError"
#: What the running cell's error output says.
EVALUE = "the kernel died while this cell ran (out of memory? a crash in native code?)"
#: What the page's error says when no cell had been sent to the kernel (most often: it died as it started).
BEFORE_ANY_CELL = "the kernel died before any cell ran"
#: jupyter_client's error (a plain RuntimeError) for a kernel process that exited while it started.
STARTUP_DEATH = "Kernel died before replying to kernel_info"
#: How many times a kernel is started in all before its death at start fails the page.
STARTS = 2
#: Joins the page's error to the last line a kernel that died as it started wrote (see :func:`startup_words`).
PRINTED = "; it printed: "


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
    """Mark the notebook of a client whose kernel died, and return the error to raise instead (``printed``: the
    last line the kernel wrote, quoted when it died before any cell ran)."""
    index = running_cell(client)
    if index is None:
        message = BEFORE_ANY_CELL + (PRINTED + printed if printed else "")
        return DeadKernelError(f"{ENAME}: {message}", ENAME, message)
    output = nbformat.v4.new_output("error", ename=ENAME, evalue=EVALUE, traceback=[f"{ENAME}: {EVALUE}"])
    cell = client.nb.cells[index]
    cell.outputs.append(output)
    for later in client.nb.cells[index + 1 :]:  # nothing after the death ran: no stored outputs claim it did
        if later.cell_type == "code":
            later.outputs = []
            later.execution_count = None
    return cast(DeadKernelError, DeadKernelError.from_cell_and_msg(cell, output))  # typed as returning the base class


def startup_words(error: str) -> str | None:
    """From the error line of a page whose kernel died: None if a cell had run, else what the kernel last printed
    ("" if nothing)."""
    _, found, after = error.partition(BEFORE_ANY_CELL)
    return after.removeprefix(PRINTED) if found else None


def died_at_startup(client: NotebookClient, error: RuntimeError) -> bool:
    """Whether ``error`` is jupyter_client's report of a kernel that exited before it answered, no cell run."""
    return str(error) == STARTUP_DEATH and client.code_cells_executed == 0


def _reporting_death(execute: Any) -> Any:
    @functools.wraps(execute)
    def wrapper(self: NotebookClient, *args: Any, **kwargs: Any) -> Any:
        start = 1
        while True:
            with KernelStderr() as stderr:
                try:  # a caller's own choice of the kernel's stderr is kept
                    return execute(self, *args, **{"stderr": stderr.fd, **kwargs})
                except nbclient.exceptions.DeadKernelError as death:
                    if isinstance(death, DeadKernelError):
                        raise
                    raise as_cell_failure(self) from death
                except RuntimeError as error:
                    if not died_at_startup(self, error):
                        raise
                    printed = stderr.close()  # the kernel has exited: this is all it wrote
                    # nbclient cleaned up after the failed start (the next execute makes a new kernel manager,
                    # with new ports) but left its at-exit clean-up registered, which would fail at exit and keep
                    # this client alive until then
                    atexit.unregister(self._cleanup_kernel)
                    if start == STARTS:
                        raise as_cell_failure(self, printed) from error
                    logger.info("kernel %r died as it started (start %d of %d%s); starting it again",
                                self.kernel_name, start, STARTS, PRINTED + printed if printed else "")
                    start += 1

    wrapper.reports_dead_kernel = True  # type: ignore[attr-defined]  # marks the patch, so it is applied once
    return wrapper


def setup(app: Sphinx) -> dict[str, object]:
    if not getattr(NotebookClient.execute, "reports_dead_kernel", False):  # once per process
        NotebookClient.execute = _reporting_death(NotebookClient.execute)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
