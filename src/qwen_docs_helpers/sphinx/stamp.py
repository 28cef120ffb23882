"""Give every executed page a "executed on" stamp, computed by a hidden cell that runs with the page.

The stamp is produced inside the page's own kernel run (and cached with it), so it states what that
execution really ran on: device, versions, date, and real or stand-in weights for the models the page
names, with the stand-in notice when the output is random text. The cell is appended at the end of the
source (so no line number of the page moves, and it runs after every other cell) and a transform
shows it under the page title.
"""

from __future__ import annotations

import re
from typing import Any

from docutils import nodes
from docutils.transforms import Transform
from myst_nb.core.read import is_myst_markdown_notebook
from sphinx.application import Sphinx
from sphinx.util import logging

from ..published import known_model_ids
from .cells import cell_tags, code_cells, is_code_cell

logger = logging.getLogger(__name__)

_MODEL_ID = re.compile(r"Qwen/[A-Za-z0-9._-]+")
#: Tag on the injected cell, so the transform, tests and download tools can recognise it.
STAMP_TAG = "qd-stamp"


def models_named(text: str) -> list[str]:
    """Known model ids mentioned in a page, in order of first mention."""
    known = set(known_model_ids())
    return [model_id for model_id in dict.fromkeys(_MODEL_ID.findall(text)) if model_id in known]


def stamp_cell(model_ids: list[str]) -> str:
    """The hidden code cell that prints the stamp."""
    return (  # its output (the stand-in notice) is never cut by the output height cap (nb_scroll_outputs)
        "\n```{code-cell} ipython3\n"
        "---\n"
        f"tags: [remove-input, {STAMP_TAG}]\n"
        "mystnb: {scroll_outputs: false}\n"
        "---\n"
        "from qwen_docs_helpers.runtime import page_stamp\n\n"
        f"page_stamp({model_ids!r})\n"
        "```\n"
    )


def add_stamp(app: Sphinx, docname: str, source: list[str]) -> None:
    if app.config.qwen_docs_stamp and is_myst_markdown_notebook(source[0]):
        source[0] = source[0].rstrip("\n") + "\n" + stamp_cell(models_named(source[0]))


def is_stamp_cell(node: nodes.Node) -> bool:
    """The hidden cell that prints the stamp (added to every executed page, not written by its author)."""
    return is_code_cell(node) and STAMP_TAG in cell_tags(node)


class MoveStampUnderTitle(Transform):
    """Show the stamp cell's output right under the page title."""

    default_priority = 200

    def apply(self, **kwargs: Any) -> None:
        cell = next(code_cells(self.document, is_stamp_cell), None)
        if cell is None:
            return
        section = next(iter(self.document.findall(nodes.section)), None)
        if section is None or not isinstance(section[0], nodes.title):
            logger.warning("executed page has no title to put its 'executed on' stamp under", location=cell)
            return
        cell.parent.remove(cell)
        section.insert(1, cell)


def setup(app: Sphinx) -> dict[str, object]:
    app.add_config_value("qwen_docs_stamp", True, "env", bool)
    app.connect("source-read", add_stamp, priority=600)
    app.add_transform(MoveStampUnderTitle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
