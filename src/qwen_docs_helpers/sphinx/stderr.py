"""Stray stderr in a cell's outputs fails the build, reported at the cell's own line.

myst-nb's ``nb_output_stderr = "warn"`` warns while the page is parsed. On a page with nested cells that is
the hoisted text, where every line after a tab set or dropdown holding cells is shifted, so the warning
named the wrong line (once past the end of the file). This check runs on the doctree after
:mod:`.nested_cells` has put the cells back in their tabs and restored their lines. The site sets
``nb_output_stderr = "show"`` (myst-nb renders the stderr, and stays quiet) and ``qwen_docs_stderr =
"warn"``. A cell may still show its stderr on purpose (``mystnb: {output_stderr: show}`` in its options)
or drop it (tag ``remove-stderr``), as with myst-nb itself.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.transforms import SphinxTransform
from sphinx.util import logging

from .cells import code_cells

logger = logging.getLogger(__name__)


def _is_stderr(node: nodes.Node) -> bool:
    return isinstance(node, nodes.literal_block) and {"output", "stderr"} <= set(node.get("classes", []))


def shows_stderr_on_purpose(cell: nodes.Element) -> bool:
    """Whether the cell's own options ask myst-nb to show its stderr (``output_stderr: show``)."""
    options = (cell.get("cell_metadata") or {}).get("mystnb")
    return isinstance(options, dict) and options.get("output_stderr") == "show"


class WarnOnStderr(SphinxTransform):
    """Warn once per cell whose outputs hold stderr, at the line of the cell's fence."""

    default_priority = 150  # after PlaceNestedCells (100) restored the lines

    def apply(self, **kwargs: Any) -> None:
        if self.config.qwen_docs_stderr != "warn":
            return
        for cell in code_cells(self.document):
            if shows_stderr_on_purpose(cell):
                continue
            stderr = next(iter(cell.findall(_is_stderr)), None)
            if stderr is None:
                continue
            first = next((line for line in stderr.astext().splitlines() if line.strip()), "").strip()
            logger.warning(
                f"the cell wrote to stderr ({first[:120]!r}): remove the noise (progress bars, log lines, "
                "warnings), or tag the cell 'remove-stderr', or give it 'mystnb: {output_stderr: show}'",
                location=cell,
                type="qwen_docs",
                subtype="stderr",
            )


def setup(app: Sphinx) -> dict[str, object]:
    app.add_config_value("qwen_docs_stderr", "off", "env", str)
    app.add_transform(WarnOnStderr)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
