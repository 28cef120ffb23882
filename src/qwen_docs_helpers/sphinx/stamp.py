"""Give every executed page an "executed on" stamp, computed by a hidden cell that runs with the page.

The stamp is produced inside the page's own kernel run (and cached with it), so it states what that
execution really ran on: device, versions, date, and real or stand-in weights for the models the page
names, with the stand-in notice when the output is random text. The cell is appended at the end of the
source (so no line number of the page moves, and it runs after every other cell) and a transform
shows it under the page title. A model id the page names that has no stand-in recipe is a warning at its
line: the build could not make it loadable, so its cells would fail offline with transformers' advice to
check the internet connection, and the stamp could not say what it ran on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from docutils import nodes
from docutils.transforms import Transform
from myst_nb.core.read import is_myst_markdown_notebook
from sphinx.application import Sphinx
from sphinx.util import logging

from ..published import MODEL_ID_PATTERN, known_model_ids, no_recipe
from .cells import cell_tags, code_cells, is_code_cell

logger = logging.getLogger(__name__)

#: Tag on the injected cell, so the transform, tests and download tools can recognise it.
STAMP_TAG = "qd-stamp"


def _mentions(text: str) -> Iterator[tuple[str, int]]:
    """Each model id named in ``text`` and where (a hub name never ends in ``.``: a sentence's full stop is not
    part of it); a match inside a URL or path (``huggingface.co/collections/Qwen/qwen2-...``) names a web page."""
    for match in MODEL_ID_PATTERN.finditer(text):
        name = match.group().rstrip(".-")
        if name != "Qwen/" and (match.start() == 0 or text[match.start() - 1] != "/"):
            yield name, match.start()


def models_named(text: str) -> list[str]:
    """Known model ids mentioned in a page, in order of first mention."""
    known = set(known_model_ids())
    return [model_id for model_id in dict.fromkeys(name for name, _ in _mentions(text)) if model_id in known]


def ids_without_recipe(text: str) -> dict[str, int]:
    """Model ids a page names that have no stand-in recipe, each with the line of its first mention."""
    known = set(known_model_ids())
    found: dict[str, int] = {}
    for model_id, start in _mentions(text):
        if model_id not in known and model_id not in found:
            found[model_id] = text.count("\n", 0, start) + 1
    return found


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


def warn_ids_without_recipe(app: Sphinx, docname: str, source: list[str]) -> None:
    """Warn, at its line, about each model id an executed page names that the build cannot make loadable."""
    if not is_myst_markdown_notebook(source[0]):
        return
    for model_id, line in ids_without_recipe(source[0]).items():
        logger.warning(no_recipe(model_id), location=(docname, line), type="qwen_docs", subtype="no_recipe")


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
    # on the text as written, before nested_cells hoists cells out of tabs (priority 500): the file's own lines
    app.connect("source-read", warn_ids_without_recipe, priority=400)
    app.add_transform(MoveStampUnderTitle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
