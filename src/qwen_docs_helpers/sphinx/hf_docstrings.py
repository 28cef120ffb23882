"""Make transformers' docstrings valid reStructuredText for our API reference pages.

transformers writes docstrings in Markdown for Hugging Face's doc-builder. This keeps their prose and
argument lists, turns their Markdown literals, references and links into reST, and drops their fenced
examples (unexecuted code, some with placeholder model ids), so the model cards' API reference builds
``-W`` clean and shows no code that did not run. Their Google-style ``Args:`` sections then go through
napoleon, so each parameter is listed once, with the type autodoc reads from the signature. (Napoleon is
applied to these docstrings only: enabled site-wide it would read our own ``name: text`` attribute
docstrings as types.)
"""

from __future__ import annotations

import re
from typing import Any

from sphinx.application import Sphinx
from sphinx.ext.napoleon import Config
from sphinx.ext.napoleon.docstring import GoogleDocstring

_HF_REFERENCE = re.compile(r"\[`~?(?:[\w.]+\.)?(\w+)`\]")  # [`~generation.GenerationMixin.generate`] -> `generate`
_ABSOLUTE_LINK = re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)")  # Markdown link -> reST link
_RELATIVE_LINK = re.compile(r"\[([^\]]+)\]\((?!https?:)[^)]*\)")  # doc-builder links to pages we lack -> text
_LITERAL = re.compile(r"(?<![`\w])`([^`]+)`(?![`\w])")  # Markdown `code` -> reST ``code``
_NAPOLEON = Config(napoleon_numpy_docstring=False, napoleon_use_param=True, napoleon_use_rtype=True)


def transformers_docstring(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """Rewrite one transformers docstring in place (others are left alone)."""
    if not name.startswith("transformers."):
        return
    kept, in_fence = [], False
    for line in lines:
        if line.strip().startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence or line.strip() in {"Example:", "Examples:"} or line.strip().startswith(("<Tip", "</Tip")):
            continue
        if _RELATIVE_LINK.fullmatch(line.strip()):  # "[What are input IDs?](../glossary#input-ids)" alone
            continue
        line = _HF_REFERENCE.sub(r"`\1`", line)
        line = _RELATIVE_LINK.sub(r"\1", _LITERAL.sub(r"``\1``", line))
        kept.append(_ABSOLUTE_LINK.sub(r"`\1 <\2>`__", line))
    # napoleon documents a napoleon.Config as the config to pass; its hints only name Sphinx's own Config
    lines[:] = GoogleDocstring(kept, _NAPOLEON, app, what, name, obj, options).lines()  # type: ignore[arg-type]


def setup(app: Sphinx) -> dict[str, object]:
    app.setup_extension("sphinx.ext.autodoc")  # the event below is autodoc's
    app.connect("autodoc-process-docstring", transformers_docstring)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
