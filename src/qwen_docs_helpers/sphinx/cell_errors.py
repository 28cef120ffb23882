"""Name the page, line and error of every cell that failed, in one warning each.

myst-nb reports a failed execution as "Executing notebook failed: CellExecutionError" for the page (or,
raising, as a Sphinx crash report). The failing cell's traceback is in the doctree, so this transform
turns each unexpected one into ``page.md:LINE: WARNING: code cell N raised ValueError: ...`` that points
at the cell in the source file, and the ``-W`` build fails on it. A cell past the timeout is interrupted
by nbclient and reported as timed out; a kernel that dies (out of memory, a crash in native code) is
reported at the cell that was running, and one that died before any cell ran (as it started) for the page
(:mod:`~qwen_docs_helpers.sphinx.dead_kernel` keeps the death from crashing the build). A page whose
execution failed is read and executed again by the next build, so an incremental rebuild neither keeps the
failure as the page's result nor drops its warning.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from docutils import nodes
from myst_nb.core.render import strip_ansi
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.transforms import SphinxTransform
from sphinx.util import logging

from . import dead_kernel
from .cells import cell_tags, code_cells
from .error_outputs import ERROR_LINE_CLASS
from .stamp import is_stamp_cell

logger = logging.getLogger(__name__)

#: What each page-level execution failure means for the reader of the build log.
_FAILURES = {
    "CellTimeoutError": "timed out (ran past nb_execution_timeout, {timeout} s): make it faster, "
    "or raise the limit (QWEN_DOCS_CELL_TIMEOUT for this site)",
}
#: What a dead kernel that said nothing means, and what to do about it ({code}: what to run).
_DIED = (
    "(out of memory? a crash in native code?): run {code} outside Sphinx to see how it dies "
    "(`dmesg` shows out-of-memory kills), then make it use less memory or avoid the crash"
)
#: What to do about a kernel that crashed and said so ({words}: the first line of its report).
_CRASHED = (
    "and printed {words!r}: the Python stack of the call that crashed follows that line in the build's output above"
)
#: What to check when the kernel died before any cell ran ({kernel}: which kernel the page runs; {starts}: how often).
_NOT_STARTED = (
    "check that {kernel} starts (it exited or stopped answering at each of its {starts} starts{printed}); "
    "`jupyter kernelspec list` shows where its spec is, and the Python that the spec runs must import ipykernel"
)
#: How _NOT_STARTED quotes the last line the kernel wrote, the whole of which is in the build's output.
_PRINTED = "; the last time, it printed {words!r}, at the end of its output above"
#: nbclient's CellExecutionError text quotes the failing cell's source between dashed lines.
_FAILED_SOURCE = re.compile(r"executing the following cell:\n-+\n(.*?)\n-+\n", re.DOTALL)
#: The tag with which authors say a cell is meant to raise (myst-nb's own).
EXPECTED_ERROR_TAG = "raises-exception"


def _died(words: str, code: str) -> str:
    """What a dead kernel means: what it printed as it crashed (``words``), or guesses if it printed nothing."""
    return _CRASHED.format(words=words) if words else _DIED.format(code=code)


def _is_authors_cell(cell: nodes.container) -> bool:
    """A code cell of the page's author: the stamp cell the site adds is not counted ("code cell N")."""
    return not is_stamp_cell(cell)


def error_line(traceback: str) -> str:
    """The ``Name: message`` line that ends a rendered traceback."""
    lines = [line.strip() for line in strip_ansi(traceback).splitlines() if line.strip()]
    return lines[-1] if lines else "an error"


def _reported_error(block: nodes.literal_block) -> str:
    """The error, in one line: the ``Name: message`` block of :mod:`.error_outputs` starts with the name
    (a message of several lines is cut after its first); a whole traceback (myst-nb's renderer) ends with it."""
    if ERROR_LINE_CLASS not in block.get("classes", []):
        return error_line(block.astext())
    first, *more = [line.strip() for line in block.astext().splitlines() if line.strip()] or ["an error"]
    return first + (" …" if more else "")


def _page_timeout(page: Path, default: int) -> int:
    """The cell time limit of a page: its front matter's ``mystnb: execution_timeout``, else the site's."""
    text = page.read_text(encoding="utf8") if page.is_file() else ""
    front = re.match(r"---\n(.*?)\n---\n", text, re.DOTALL)
    try:
        matter = yaml.safe_load(front.group(1)) if front else None
    except yaml.YAMLError:
        matter = None
    mystnb = matter.get("mystnb") if isinstance(matter, dict) else None
    return int(mystnb.get("execution_timeout", default)) if isinstance(mystnb, dict) else default


def source_line_of(cell_source: str, page: str) -> int | None:
    """The 1-based line where the whole of ``cell_source`` appears in ``page`` (its first line; blank lines
    ignored), or None: matching one line alone would find an ``import torch`` of an earlier cell."""
    wanted = [line.strip() for line in cell_source.splitlines() if line.strip()]
    numbered = [(n, line.strip()) for n, line in enumerate(page.splitlines(), start=1) if line.strip()]
    texts = [text for _, text in numbered]
    for i in range(len(numbered) - len(wanted) + 1):
        if wanted and texts[i : i + len(wanted)] == wanted:
            return numbered[i][0]
    return None


class ReportFailedCells(SphinxTransform):
    """Warn, at the cell's own source line, for each traceback in a cell not tagged ``raises-exception``."""

    default_priority = 900  # after the nested cells are in place and their line numbers restored

    def apply(self, **kwargs: Any) -> None:
        from myst_nb.sphinx_ import NbMetadataCollector

        data = NbMetadataCollector.get_exec_data(self.env, self.env.docname) or {}
        timeout = _page_timeout(self.env.doc2path(self.env.docname), self.config.nb_execution_timeout)
        failure = _FAILURES.get(data.get("error") or "", f"stopped the page with {data.get('error')}").format(
            timeout=timeout
        )
        cells = list(code_cells(self.document, _is_authors_cell))
        if data.get("error") == dead_kernel.ENAME:
            self._report_death(cells, data.get("traceback") or "")
            return
        for number, cell in enumerate(cells, start=1):
            if EXPECTED_ERROR_TAG in cell_tags(cell):
                continue
            for block in cell.findall(nodes.literal_block):
                if "traceback" in block.get("classes", []):
                    error = _reported_error(block)
                    if data.get("error") == "CellExecutionError" or not error.startswith("KeyboardInterrupt"):
                        what = f"raised {error} (fix it, or tag it '{EXPECTED_ERROR_TAG}' if the error is the point)"
                    else:  # nbclient interrupts a cell that runs past the timeout
                        what = failure
                    self._warn(cell, f"code cell {number} {what}")
                    return
        if data.get("error") == "CellExecutionError":
            self._report_hidden_cell(data.get("traceback") or "")

    def _report_death(self, cells: list[nodes.container], traceback: str) -> None:
        """The running cell carries dead_kernel's error output; a hidden one is found in the page source."""
        for number, cell in enumerate(cells, start=1):
            for block in cell.findall(nodes.literal_block):
                words = dead_kernel.crash_words(error_line(block.astext()))
                if "traceback" in block.get("classes", []) and words is not None:
                    self._warn(cell, f"code cell {number}: the kernel died while it ran {_died(words, 'it')}")
                    return
        words = dead_kernel.startup_words(error_line(traceback))
        if words is not None:  # most often: it died as it started
            name = (self.env.metadata.get(self.env.docname, {}).get("kernelspec") or {}).get("name")
            kernel = f"kernel {name!r}" if name else "the page's kernel"
            printed = _PRINTED.format(words=words) if words else " and printed nothing"
            advice = _NOT_STARTED.format(kernel=kernel, starts=dead_kernel.STARTS, printed=printed)
            self._warn_page(f"{dead_kernel.BEFORE_ANY_CELL}: {advice}", None)
            return
        line = self._hidden_cell_line(traceback)
        crashed = dead_kernel.crash_words(error_line(traceback)) or ""
        if line is None:  # the cell is not to be found
            self._warn_page("the kernel died " + _died(crashed, "the page's code"), None)
        else:
            self._warn_page(f"hidden cell: the kernel died while it ran {_died(crashed, 'it')}", line)

    def _report_hidden_cell(self, traceback: str) -> None:
        """A failing ``remove-cell`` cell (a hidden check) is not in the doctree: find it in the page source."""
        message = f"hidden cell raised {error_line(traceback)} (a check on this page failed)"
        self._warn_page(message, self._hidden_cell_line(traceback))

    def _hidden_cell_line(self, traceback: str) -> int | None:
        """The line, in the page source, of the cell that nbclient's error text quotes (None: not found)."""
        source = _FAILED_SOURCE.search(strip_ansi(traceback))
        page = self.env.doc2path(self.env.docname)
        if source is None or not page.is_file():
            return None
        return source_line_of(source.group(1), page.read_text(encoding="utf8"))

    def _warn_page(self, message: str, line: int | None) -> None:
        location = self.env.docname if line is None else (self.env.docname, line)
        logger.warning(message, location=location, type="qwen_docs", subtype="cell_error")

    @staticmethod
    def _warn(location: nodes.Node, message: str) -> None:
        logger.warning(message, location=location, type="qwen_docs", subtype="cell_error")


def retry_failed_pages(
    app: Sphinx, env: BuildEnvironment, added: set[str], changed: set[str], removed: set[str]
) -> list[str]:
    """Read again the pages whose execution failed: Sphinx would keep them, warnings dropped, as up to date."""
    from myst_nb.sphinx_ import NbMetadataCollector

    return sorted(
        docname
        for docname, data in NbMetadataCollector.get_doc_data(env).items()
        if (data.get("exec_data") or {}).get("succeeded") is False
    )


def setup(app: Sphinx) -> dict[str, object]:
    app.add_transform(ReportFailedCells)
    app.connect("env-get-outdated", retry_failed_pages)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
