"""Every way of reading a page runs: a shown cell never needs code that its reader skipped.

All code cells of a page run in one kernel, in source order: both tabs of a tab set, and the cells
inside dropdowns. A reader runs less. They pick one tab per sync group (one tab per tab set that is not
synced), read the page in order, and may skip any dropdown, so they copy a cell that reads ``model``
after having run only the Pipeline tab's code, which binds ``pipe``. The build would pass and the
reader would get a ``NameError``. This transform finds those cells.

The model, on the doctree once :mod:`.nested_cells` has put every cell in its tab or dropdown:

- A *reader* picks a tab for each sync group (``:sync-group:`` with every tab of the set keyed by
  ``:sync:``; a synced set without the picked key shows its default tab, as sphinx-design does) and
  for each other tab set. The cells on their path are those in no tab, or in tabs they picked.
- Names bound by a cell inside a dropdown reach only the cells inside that same dropdown: the
  dropdown is optional reading. Its cells are still on every path, and checked.
- Only cells the page shows count (see :func:`.cell_code.is_shown`): hidden cells neither bind nor
  are checked. A name no shown cell binds before the reading cell is not this check's business
  (builtins; names only hidden cells bind, which :mod:`.downloads` reports).
- A shown cell reading a name that a shown cell binds earlier must, on every path through it, find a
  binding of that name earlier on that path; otherwise the build warns at the cell's fence
  (``qwen_docs.reader_paths``), naming the reader who lacks it.

A cell that deliberately builds on one tab's code says so with the cell option ``continues: <sync
key>`` (e.g. ``:continues: manual``). It is then treated as part of that tab (for its bindings
too), and a note is rendered above it, generated from this analysis: "Continues the Manual tab: uses
``model``, ``tokenizer``.", the names that only readers of that tab have. A ``continues`` naming no
sync key of the page, or one the cell needs nothing from, warns as stale.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.transforms import SphinxTransform
from sphinx.util import logging

from .cell_code import from_node, is_shown, names, without_magics
from .cells import ancestors, code_cells, heading, is_component

logger = logging.getLogger(__name__)

#: Cell option (so cell-metadata key) naming the sync key of the tab a cell continues.
CONTINUES_KEY = "continues"
#: Class of the generated note above a cell that continues a tab.
CONTINUES_CLASS = "qd-continues"
_WARNING_TYPE, _WARNING_SUBTYPE = "qwen_docs", "reader_paths"

Condition = dict[str, frozenset[str]]  # choice -> the values of it under which a cell is on the path


@dataclass(frozen=True)
class _Tab:
    """A tab a reader may pick: ``value`` of ``choice`` (a sync group, or one unsynced tab set)."""

    choice: str
    value: str
    label: str
    synced: bool
    line: int | None

    def describe(self) -> str:
        if self.synced:
            return f"the {self.label} tab"
        return f"the {self.label!r} tab" + (f" (tab set at line {self.line})" if self.line else "")


@dataclass
class _Cell:
    node: nodes.Element
    binds: set[str]
    reads: set[str]
    tabs: list[_Tab]  # the tabs it is in, outermost first (a valid ``continues`` adds one)
    condition: Condition
    dropdowns: tuple[nodes.Element, ...]  # outermost first
    continues: Any = None

    def where(self) -> str:
        places = [tab.describe() for tab in reversed(self.tabs)]
        places += [f"the dropdown {heading(dropdown)!r}" for dropdown in reversed(self.dropdowns)]
        return "code in " + " in ".join(places) if places else "code outside the tabs"


@dataclass
class _Page:
    """The choices a reader of a page makes, and the tabs of each."""

    domains: dict[str, list[str]] = field(default_factory=dict)  # choice -> its values, in page order
    items: dict[int, tuple[_Tab, frozenset[str]]] = field(default_factory=dict)  # id(tab-item) -> tab, when shown
    tabs: dict[tuple[str, str], _Tab] = field(default_factory=dict)  # (choice, value) -> its first tab
    by_key: dict[str, list[_Tab]] = field(default_factory=dict)  # sync key -> its first tab in each sync group


def _read_tab_sets(document: nodes.document) -> _Page:
    page = _Page()
    defaults: list[tuple[nodes.Element, str, set[str]]] = []  # default tab of a synced set, its group, its keys
    tab_sets = [node for node in document.findall(nodes.Element) if is_component(node, "tab-set")]
    for number, tab_set in enumerate(tab_sets):
        items = [child for child in tab_set.children if is_component(child, "tab-item")]
        labels = [item[0] if item.children and isinstance(item[0], nodes.rubric) else None for item in items]
        keys = [label.get("sync_id") if label is not None else None for label in labels]
        groups = {label.get("sync_group") if label is not None else None for label in labels}
        synced = bool(items) and None not in keys and None not in groups and len(groups) == 1
        choice = f"sync group {groups.pop()}" if synced else f"tab set {number}"
        domain = page.domains.setdefault(choice, [])
        for index, (item, key) in enumerate(zip(items, keys, strict=True)):
            value = str(key) if synced else str(index)
            tab = _Tab(choice, value, heading(item) or value, synced, tab_set.line)
            if value not in domain:
                domain.append(value)
                page.tabs[(choice, value)] = tab
                if synced:
                    page.by_key.setdefault(value, []).append(tab)
            page.items[id(item)] = (tab, frozenset({value}))
        if synced:
            default = next((item for item in items if item.get("selected")), items[0])
            defaults.append((default, choice, {str(key) for key in keys}))
    # a synced set lacking the key a reader picked keeps showing its default tab (sphinx-design's script)
    for item, choice, own_keys in defaults:
        tab, values = page.items[id(item)]
        page.items[id(item)] = (tab, values | frozenset(set(page.domains[choice]) - own_keys))
    return page


def _add(condition: Condition, choice: str, values: frozenset[str]) -> None:
    condition[choice] = condition[choice] & values if choice in condition else values


def _read_cells(document: nodes.document, page: _Page) -> list[_Cell]:
    cells = []
    for node in code_cells(document):
        cell = from_node(node)
        found = names(without_magics(cell["source"])) if is_shown(cell) else None
        if found is None:
            continue
        tabs: list[_Tab] = []
        condition: Condition = {}
        dropdowns: list[nodes.Element] = []
        for ancestor in reversed(list(ancestors(node))):
            if is_component(ancestor, "tab-item") and id(ancestor) in page.items:
                tab, values = page.items[id(ancestor)]
                tabs.append(tab)
                _add(condition, tab.choice, values)
            elif is_component(ancestor, "dropdown"):
                dropdowns.append(ancestor)
        bound, read = found
        continues = cell["metadata"].get(CONTINUES_KEY)
        cells.append(_Cell(node, bound, read, tabs, condition, tuple(dropdowns), continues))
    return cells


def _visible(binder: _Cell, reader: _Cell) -> bool:
    """Whether the reader of ``reader`` has run ``binder`` whenever both are on its path (dropdowns)."""
    outer = reader.dropdowns[: len(binder.dropdowns)]
    return len(outer) == len(binder.dropdowns) and all(a is b for a, b in zip(outer, binder.dropdowns, strict=True))


def _satisfied(condition: Condition, assignment: dict[str, str]) -> bool:
    return all(assignment[choice] in values for choice, values in condition.items())


def _missing_paths(
    page: _Page, reader: _Cell, condition: Condition, binders: list[_Cell]
) -> list[dict[str, str]]:
    """The readers (one value per choice that matters) on whose path ``reader`` finds none of ``binders``."""
    visible = [binder for binder in binders if _visible(binder, reader)]
    choices = list(dict.fromkeys([*condition, *(choice for b in visible for choice in b.condition)]))
    options = [[v for v in page.domains[c] if c not in condition or v in condition[c]] for c in choices]
    missing = []
    for values in itertools.product(*options):
        assignment = dict(zip(choices, values, strict=True))
        if not any(_satisfied(binder.condition, assignment) for binder in visible):
            missing.append(assignment)
    return missing


def _describe_readers(page: _Page, missing: list[dict[str, str]], binders: list[_Cell], reader: _Cell) -> str:
    """Who lacks the name: "a reader of the Pipeline tab", or who skipped a dropdown."""
    if not any(_visible(binder, reader) for binder in binders):
        return f"a reader who skips the dropdown {heading(_skipped(binders[0], reader))!r}"
    labels = page.tabs
    parts = []
    order = list(page.domains)
    choices = sorted(missing[0], key=order.index)  # tab sets in page order
    for choice in choices:
        values = list(dict.fromkeys(assignment[choice] for assignment in missing))
        if len(values) == len(page.domains[choice]):
            continue  # any tab of it will do: not part of who lacks the name
        tabs = [labels[(choice, value)] for value in values]
        if tabs[0].synced:
            parts.append("the " + " or ".join(tab.label for tab in tabs) + " tab")
        else:
            parts.append(" or ".join(tab.describe() for tab in tabs))
    # describe the whole set only where it is exactly every combination of these tabs
    combinations = 1
    for choice in choices:
        combinations *= len({assignment[choice] for assignment in missing})
    if combinations != len(missing) or not parts:
        first = missing[0]
        parts = [labels[(choice, first[choice])].describe() for choice in choices]
    return "a reader of " + " and ".join(parts)


def _skipped(binder: _Cell, reader: _Cell) -> nodes.Element:
    """The outermost dropdown around ``binder`` that ``reader`` is not in."""
    common = 0
    while common < len(reader.dropdowns) and binder.dropdowns[common] is reader.dropdowns[common]:
        common += 1
    return binder.dropdowns[common]


def _advice(page: _Page, reader: _Cell, binders: list[_Cell], plural: bool) -> str:
    name = "the names" if plural else "the name"
    visible = [binder for binder in binders if _visible(binder, reader)]
    if not visible:
        return f"bind {name} outside the dropdown, or in this cell too"
    synced = [tab for binder in visible for tab in binder.tabs if tab.synced and tab.choice not in reader.condition]
    if synced:
        return (f"move this cell into the tab set, bind {name} outside the tabs, or give the cell "
                f"':{CONTINUES_KEY}: {synced[0].value}'")
    if reader.tabs:
        return f"bind {name} in this cell's tab too, or outside the tabs"
    return f"move this cell into that tab, or bind {name} outside the tabs"


def _names_list(found: Iterable[str]) -> str:
    return ", ".join(repr(name) for name in found)


class CheckReaderPaths(SphinxTransform):
    """Warn where a reader of some tabs, or one who skips a dropdown, lacks a name a shown cell reads."""

    default_priority = 120  # after PlaceNestedCells (100) put the cells in their tabs and gave them their lines

    def apply(self, **kwargs: Any) -> None:
        if not self.config.qwen_docs_reader_paths:
            return
        page = _read_tab_sets(self.document)
        cells = _read_cells(self.document, page)
        for index, cell in enumerate(cells):
            own = dict(cell.condition)
            self._declared(page, cell)  # the cells before it are declared already: they count as in their tab
            self._check(page, cell, cells[:index], own)

    def _declared(self, page: _Page, cell: _Cell) -> None:
        """Make a cell with ``continues`` part of that tab, or warn why it cannot be."""
        key = cell.continues
        if key is None:
            return
        tabs = page.by_key.get(str(key), []) if isinstance(key, (str, int)) else []
        if not tabs:
            keys = _names_list(page.by_key) or "none"
            self._warn(cell, f"':{CONTINUES_KEY}: {key}' names no tab of this page (its sync keys: {keys}): "
                             "use one of them, or remove the option")
            cell.continues = None
            return
        for tab in tabs:
            if tab.choice in cell.condition and tab.value not in cell.condition[tab.choice]:
                self._warn(cell, f"':{CONTINUES_KEY}: {key}' cannot hold: this cell is in "
                                 f"{next(t for t in cell.tabs if t.choice == tab.choice).describe()}; "
                                 "remove the option")
                cell.continues = None
                return
        for tab in tabs:
            _add(cell.condition, tab.choice, frozenset({tab.value}))
            cell.tabs.append(tab)

    def _check(self, page: _Page, cell: _Cell, before: list[_Cell], own: Condition) -> None:
        problems: dict[tuple[str, str], list[str]] = {}
        taken = []
        for name in sorted(cell.reads):
            binders = [binder for binder in before if name in binder.binds]
            if not binders:
                continue
            missing = _missing_paths(page, cell, cell.condition, binders)
            if cell.continues is not None and not missing and _missing_paths(page, cell, own, binders):
                taken.append(name)
            if not missing:
                continue
            readers = _describe_readers(page, missing, binders, cell)
            places = " or ".join(dict.fromkeys(binder.where() for binder in binders))
            problems.setdefault((readers, places), []).append(name)
        for (readers, places), found in problems.items():
            binders = [b for b in before if b.binds & set(found)]
            advice = _advice(page, cell, binders, len(found) > 1)
            self._warn(cell, f"{readers} has no {_names_list(found)} here (bound only by {places}): {advice}")
        if cell.continues is None:
            return
        tab = cell.tabs[-1]
        if not taken:
            self._warn(cell, f"':{CONTINUES_KEY}: {cell.continues}' is stale: this cell needs nothing that only "
                             f"{tab.describe()} binds; remove the option")
            return
        note = nodes.paragraph(classes=[CONTINUES_CLASS])
        note.source, note.line = cell.node.source, cell.node.line
        note += nodes.Text(f"Continues the {tab.label} tab: uses ")
        for number, name in enumerate(taken):
            if number:
                note += nodes.Text(", ")
            note += nodes.literal(name, name)
        note += nodes.Text(".")
        cell.node.parent.insert(cell.node.parent.index(cell.node), note)

    def _warn(self, cell: _Cell, message: str) -> None:
        logger.warning(message, location=cell.node, type=_WARNING_TYPE, subtype=_WARNING_SUBTYPE)


def setup(app: Sphinx) -> dict[str, object]:
    app.add_config_value("qwen_docs_reader_paths", True, "env", bool)
    app.add_transform(CheckReaderPaths)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
