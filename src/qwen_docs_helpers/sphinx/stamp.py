"""Give every executed page a "verified on" stamp, computed by a hidden cell that runs with the page.

The stamp is produced inside the page's own kernel run (and cached with it), so it states what that
execution really ran on: device, versions, date, and real or stand-in weights for the models the page
names, with the stand-in notice when the output is random text.
"""

from __future__ import annotations

import re

from myst_nb.core.read import is_myst_markdown_notebook
from sphinx.application import Sphinx
from sphinx.util import logging

from ..published import known_model_ids

logger = logging.getLogger(__name__)

_MODEL_ID = re.compile(r"Qwen/[A-Za-z0-9._-]+")
#: Tag on the injected cell, so tests and the copy/download tools can recognise it.
STAMP_TAG = "qd-stamp"


def models_named(text: str) -> list[str]:
    """Known model ids mentioned in a page, in order of first mention."""
    known = set(known_model_ids())
    return [model_id for model_id in dict.fromkeys(_MODEL_ID.findall(text)) if model_id in known]


def stamp_cell(model_ids: list[str]) -> str:
    """The hidden code cell that prints the stamp."""
    return (
        "```{code-cell} ipython3\n"
        f":tags: [remove-input, {STAMP_TAG}]\n"
        "from qwen_docs_helpers.runtime import page_stamp\n\n"
        f"page_stamp({model_ids!r})\n"
        "```\n"
    )


def insert_stamp(text: str, model_ids: list[str]) -> str | None:
    """Insert the stamp cell right after the page title (the first line after the front matter)."""
    lines = text.splitlines(keepends=True)
    end = next((i for i, line in enumerate(lines[1:], start=1) if line.startswith(("---", "..."))), None)
    if end is None:
        return None
    title = next((i for i in range(end + 1, len(lines)) if lines[i].strip()), None)
    if title is None or not lines[title].startswith("# "):
        return None
    return "".join([*lines[: title + 1], "\n", stamp_cell(model_ids), "\n", *lines[title + 1 :]])


def add_stamp(app: Sphinx, docname: str, source: list[str]) -> None:
    if not app.config.qwen_docs_stamp or not is_myst_markdown_notebook(source[0]):
        return
    stamped = insert_stamp(source[0], models_named(source[0]))
    if stamped is None:
        logger.warning(
            "executed page has no '# Title' line right after its front matter; no 'verified on' stamp added",
            location=docname,
            type="qwen_docs",
            subtype="stamp",
        )
        return
    source[0] = stamped


def setup(app: Sphinx) -> dict[str, object]:
    app.add_config_value("qwen_docs_stamp", True, "env", bool)
    app.connect("source-read", add_stamp, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
