"""The code of a notebook cell: whether the page shows it, and the names it binds and reads.

Shared by ``downloads`` (what the page's script holds) and ``reader_paths`` (what each reader of the
page has run). A cell is a notebook cell mapping (``cell_type``, ``source``, ``metadata``), as in an
``.ipynb`` file; :func:`from_node` makes one from a code cell rendered in the doctree.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from typing import Any

from docutils import nodes
from pyflakes import checker as pyflakes_checker
from pyflakes import messages as pyflakes_messages

#: Tags with which a page hides a cell's code (myst-nb's own).
HIDDEN_TAGS = frozenset({"remove-cell", "remove_cell", "remove-input", "remove_input"})
_MAGIC = re.compile(r"^\s*[%!]")
#: pyflakes' reports of a name read before anything in the cell bound it.
_TAKEN = (pyflakes_messages.UndefinedName, pyflakes_messages.UndefinedLocal)


def tags(cell: Mapping[str, Any]) -> set[str]:
    """The tags of a notebook cell."""
    return set(cell.get("metadata", {}).get("tags", []) or [])


def source(cell: Mapping[str, Any]) -> str:
    """The source of a notebook cell, as one string."""
    text = cell.get("source", "")
    return "".join(text) if isinstance(text, list) else text


def is_shown(cell: Mapping[str, Any]) -> bool:
    """Whether the page shows this cell's code: a non-empty code cell without a hiding tag."""
    return cell.get("cell_type") == "code" and bool(source(cell).strip()) and not tags(cell) & HIDDEN_TAGS


def without_magics(text: str) -> str:
    """The source with its IPython magics and shell escapes (``%...``, ``!...``) turned into comments."""
    return "\n".join(f"# {line}" if _MAGIC.match(line) else line for line in text.split("\n"))


def names(text: str) -> tuple[set[str], set[str]] | None:
    """Names a cell binds, and names it takes from before it; None when it is not plain Python (magics).

    Bound: names the cell leaves bound at the top level (not its functions' locals, not names it deletes).
    Taken: names it reads before binding them itself (``x = x + 1`` takes ``x``), in the order its code
    runs, and names its functions read that the cell binds nowhere. pyflakes works both out (its
    "undefined name" is a name taken from before the cell); builtins are never reported as taken.
    """
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    check = pyflakes_checker.Checker(tree)
    taken = {message.message_args[0] for message in check.messages if isinstance(message, _TAKEN)}
    module = next(scope for scope in check.deadScopes if isinstance(scope, pyflakes_checker.ModuleScope))
    bound = {name for name, binding in module.items() if not isinstance(binding, pyflakes_checker.Builtin)}
    return bound, taken


def from_node(cell: nodes.Element) -> dict[str, Any]:
    """The notebook cell of a code cell rendered in the doctree (its source is empty where the page hides it)."""
    inputs = [child for child in cell.children
              if isinstance(child, nodes.Element) and child.get("nb_element") == "cell_code_source"]
    text = inputs[0].astext() if inputs else ""
    return {"cell_type": "code", "source": text, "metadata": dict(cell.get("cell_metadata") or {})}
