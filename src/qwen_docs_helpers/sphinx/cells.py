"""The code cells of a page as myst-nb renders them into the doctree, and the tabs and dropdowns around them
(sphinx-design), for the extension's transforms."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeGuard

from docutils import nodes


def is_code_cell(node: nodes.Node) -> TypeGuard[nodes.container]:
    """A rendered code cell: myst-nb's container holding the cell's source and outputs."""
    return isinstance(node, nodes.container) and node.get("nb_element") == "cell_code"


def is_cell_output(node: nodes.Node) -> TypeGuard[nodes.container]:
    """The outputs of a rendered code cell (myst-nb's container under the cell, after its source)."""
    return isinstance(node, nodes.container) and node.get("nb_element") == "cell_code_output"


def code_cells(
    root: nodes.Node, where: Callable[[nodes.container], bool] = lambda cell: True
) -> Iterator[nodes.container]:
    """The code cells under ``root``, in document order (those ``where`` accepts)."""
    return (node for node in root.findall(nodes.container) if is_code_cell(node) and where(node))


def cell_tags(cell: nodes.Element) -> list[str]:
    """The tags of a rendered code cell (its ``:tags:`` option)."""
    return list((cell.get("cell_metadata") or {}).get("tags", []))


def ancestors(node: nodes.Node) -> Iterator[nodes.Element]:
    """The elements enclosing ``node`` (a cell's tab-item, dropdown, section ...), innermost first."""
    parent = node.parent
    while parent is not None and not isinstance(parent, nodes.document):
        yield parent
        parent = parent.parent


def is_component(node: nodes.Node, name: str) -> TypeGuard[nodes.Element]:
    """A sphinx-design component (``tab-set``, ``tab-item``, ``dropdown``) before its HTML post-transforms."""
    return isinstance(node, nodes.Element) and node.get("design_component") == name


def heading(node: nodes.Element) -> str:
    """The title of a section, or the label of a tab-item or dropdown ('' when it has none)."""
    first = node.children[0] if node.children else None
    return first.astext() if isinstance(first, (nodes.title, nodes.rubric)) else ""
