"""Sphinx extension of qwen-docs: ``extensions = [..., "qwen_docs_helpers.sphinx"]``."""

from __future__ import annotations

from typing import Any

from sphinx.application import Sphinx

from . import nested_cells


def setup(app: Sphinx) -> dict[str, Any]:
    nested_cells.setup(app)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
