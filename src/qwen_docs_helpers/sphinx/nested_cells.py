"""Execute and render ``{code-cell}`` fences nested in directives (tab-items, dropdowns, ...).

myst-nb only turns the *top-level* ``{code-cell}`` fences of a MyST text notebook into notebook
cells; a nested one is neither run nor shown, only warned about (MyST-NB issue #723). We work
around that in two steps, so authors can write cells where readers expect them:

1. At ``source-read``, each nested code-cell is hoisted to a top-level cell placed right after its
   outermost enclosing fence, with ``slot: nested-N`` added to its options (myst-nb copies
   fenced-cell options, unvalidated, into the cell metadata). A ``{nested-cell-slot}`` placeholder
   of the same height takes its place. Cells keep their source order, so they run in one kernel in
   the order they are written.
2. The :class:`PlaceNestedCells` transform moves each rendered cell (input and outputs) into its
   placeholder, before sphinx-design turns tabs and dropdowns into HTML (post-transforms).

Line numbers: after a block holding cells, the hoisted text's lines are shifted. :func:`map_lines_back`
gives the page's markdown-it tokens the lines of the file before they are rendered, so warnings raised while
parsing (an unknown role or directive) and on the doctree (unresolved references, failed cells, stderr) name
the right line; it runs from the site's myst-nb renderer (``nb_render_plugin = "qwen_docs"``, the default
this extension sets). With another renderer the transform maps the doctree's nodes back instead, and only
parse-time warnings keep shifted lines. Every code cell, nested or not, gets the line of its own opening
fence (myst-nb alone puts cells two lines below it). The original line is deliberately not put in the cell
metadata: jupyter-cache hashes all cell metadata, so an edit above a cell would make the page re-execute.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import yaml
from docutils import nodes
from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from myst_nb.core.read import is_myst_markdown_notebook
from myst_parser.parsers.directives import parse_directive_text
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.transforms import SphinxTransform
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

from .cells import code_cells

logger = logging.getLogger(__name__)

#: Cell-metadata key naming the placeholder a hoisted cell belongs in.
SLOT_KEY = "slot"
#: Directive that marks where a hoisted cell goes back.
SLOT_DIRECTIVE = "nested-cell-slot"
#: Directives whose content is literal text, not MyST: a ``{code-cell}`` in them is an example.
LITERAL_DIRECTIVES = frozenset(
    {
        "code",
        "code-block",
        "sourcecode",
        "code-cell",
        "raw-cell",
        "literalinclude",
        "raw",
        "eval-rst",
        "math",
        "csv-table",
        "mermaid",
        "graphviz",
    }
)
_WARNING_TYPE = "nested_cells"
_ORIGIN_KEY = "qwen_docs_nested_cells_origin"
_FENCES_KEY = "qwen_docs_cell_fence_lines"
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<marker>`{3,}|:{3,})(?P<info>.*)$")
_DIRECTIVE_NAME = re.compile(r"\{([^}\s]+)\}")
_BACKTICKS = re.compile(r" {0,3}(`+)")


@dataclass
class _Fence:
    start: int  # index of the opening line
    indent: int
    marker: str  # e.g. "````" or ":::"
    info: str  # e.g. "{code-cell} ipython3"
    opaque: bool  # literal content (code), so no fence opens inside it
    hoist: bool  # a {code-cell} nested in a top-level (unindented) directive


@dataclass
class _NestedCell:
    fence: _Fence
    stop: int  # index after its last line
    closed: bool  # ends with its own closing fence (rather than its parent's)
    after: int = -1  # index of the last line of its top-level block


class Hoisted(NamedTuple):
    """A notebook text with its nested cells hoisted, and where its lines come from."""

    text: str
    origin: list[int]  #: for each line of ``text``, the index of the source line it comes from
    problems: list[tuple[int, str]]  #: (source line index, message) of cells left where they were


def _closes(fence: _Fence, marker: str, info: str) -> bool:
    return not info and marker[0] == fence.marker[0] and len(marker) >= len(fence.marker)


def _scan(lines: list[str], first: int, colon_fences: bool) -> list[_NestedCell]:
    """Find the nested code-cells, by tracking open fences the way CommonMark nests them.

    Hand-written because no library exposes MyST's nested fence structure with line numbers.
    """
    stack: list[_Fence] = []
    found: list[_NestedCell] = []
    block: list[_NestedCell] = []  # cells of the top-level block still open

    def close(depth: int, at: int) -> None:
        inner = stack[-1]
        if inner.hoist:  # a cell is always innermost: nothing opens in literal content
            own = depth == len(stack) - 1 and at < len(lines)
            block.append(_NestedCell(inner, stop=at + 1 if own else at, closed=own))
        del stack[depth:]
        if not stack:
            for cell in block:
                cell.after = min(at, len(lines) - 1)
            found.extend(block)
            block.clear()

    for i in range(first, len(lines)):
        match = _FENCE.match(lines[i])
        if match is None or (match["marker"][0] == ":" and not colon_fences):
            continue
        marker, info = match["marker"], match["info"].strip()
        # the outermost fence this line can close wins: its content is raw text to everything outside
        depth = next((d for d, fence in enumerate(stack) if _closes(fence, marker, info)), None)
        if depth is not None:
            close(depth, i)
        elif not (stack and stack[-1].opaque) and not (marker[0] == "`" and "`" in info):
            name = _DIRECTIVE_NAME.match(info)
            directive = name[1] if name else None
            stack.append(
                _Fence(
                    start=i,
                    indent=len(match["indent"]),
                    marker=marker,
                    info=info,
                    opaque=directive is None or directive in LITERAL_DIRECTIVES,
                    hoist=directive == "code-cell" and bool(stack) and stack[0].indent == 0,
                )
            )
    if stack:
        close(0, len(lines))
    return found


class _CellOptions:
    """Stands in for the code-cell directive when reading options, exactly as myst-nb does."""

    option_spec: ClassVar[dict[str, Any]] = {"options": True}
    required_arguments = 0
    optional_arguments = 1
    has_content = True


def _read_cell(lines: list[str], cell: _NestedCell) -> tuple[dict[str, Any], list[str], str | None]:
    """Options, body lines and a parse problem of a nested cell, read as myst-nb reads a top-level one."""
    end = cell.stop - 1 if cell.closed else cell.stop
    content = [
        line[min(cell.fence.indent, len(line) - len(line.lstrip(" "))) :] for line in lines[cell.fence.start + 1 : end]
    ]
    result = parse_directive_text(
        _CellOptions,  # type: ignore[arg-type]
        "",
        "".join(f"{line}\n" for line in content),
        validate_options=False,
    )
    problem = result.warnings[0].msg if result.warnings else None
    return result.options, result.body, problem


def _is_rendered(options: dict[str, Any], body: list[str]) -> bool:
    """Whether myst-nb renders the cell at all: it drops empty and removed cells.

    Removal by configuration (``nb_remove_code_source`` and ``..._outputs``) is not foreseen: it warns.
    """
    tags = options.get("tags") or []
    if not ("load" in options or "\n".join(body).strip()):
        return False
    if "remove_cell" in tags or "remove-cell" in tags:
        return False
    no_input = "remove_input" in tags or "remove-input" in tags
    no_output = "remove_output" in tags or "remove-output" in tags
    return not (no_input and no_output)


def _placeholder(cell: _NestedCell, slot: str, rendered: bool) -> list[str]:
    """The slot directive, as many lines high as the cell, so lines inside the block stay put."""
    indent = " " * cell.fence.indent
    opening = f"{indent}{cell.fence.marker}{{{SLOT_DIRECTIVE}}} {slot}" + ("" if rendered else " removed")
    height = cell.stop - cell.fence.start
    closing = [f"{indent}{cell.fence.marker}"] if cell.closed else []
    return [opening, *[""] * (height - 1 - len(closing)), *closing]


def _hoisted_cell(cell: _NestedCell, slot: str, options: dict[str, Any], body: list[str]) -> list[str]:
    """A top-level code-cell reading back as the same options (plus the slot) and the same source."""
    meta = yaml.safe_dump({**options, SLOT_KEY: slot}, sort_keys=False, allow_unicode=True).splitlines()
    # the blank line after the options and the one closing a blank-ending body are dropped on reading
    inner = ["---", *meta, "---", "", *body, *([""] if body and not body[-1].strip() else [])]
    longest = max((len(m[1]) for line in inner if (m := _BACKTICKS.match(line))), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{cell.fence.info}", *inner, fence]


def hoist_nested_cells(text: str, *, colon_fences: bool = True) -> Hoisted | None:
    """Hoist every nested code-cell of a MyST text notebook; None when there is none."""
    lines = text.split("\n")
    first = 0
    if lines[0].startswith("---"):  # skip the front matter, as myst-nb does
        first = next((i + 1 for i in range(1, len(lines)) if lines[i].startswith(("---", "..."))), 0)
    cells = _scan(lines, first, colon_fences)
    if not cells:
        return None
    starts = {cell.fence.start: (number, cell) for number, cell in enumerate(cells, start=1)}
    pending: defaultdict[int, list[tuple[int, list[str]]]] = defaultdict(list)
    out: list[str] = []
    origin: list[int] = []
    problems: list[tuple[int, str]] = []
    skip_until = 0
    for i, line in enumerate(lines):
        if i in starts:
            number, cell = starts[i]
            slot = f"nested-{number}"
            options, body, problem = _read_cell(lines, cell)
            if problem is None:
                placeholder = _placeholder(cell, slot, _is_rendered(options, body))
                out.extend(placeholder)
                origin.extend(range(i, i + len(placeholder)))
                pending[cell.after].append((i, _hoisted_cell(cell, slot, options, body)))
                skip_until = cell.stop
            else:
                problems.append((i, f"nested code-cell not hoisted, its options could not be read: {problem}"))
        if i >= skip_until:
            out.append(line)
            origin.append(i)
        for start, hoisted in pending.pop(i, []):
            out.extend(hoisted)
            origin.extend([start] * len(hoisted))
    return Hoisted("\n".join(out), origin, problems)


class nested_cell_slot(nodes.Element):
    """Where a hoisted cell goes back; :class:`PlaceNestedCells` always replaces or removes it."""


class NestedCellSlot(SphinxDirective):
    """``{nested-cell-slot} nested-N [removed]``: written by the hoisting, not by authors."""

    required_arguments = 1
    optional_arguments = 1  # "removed": myst-nb renders nothing for this cell, so expect none
    has_content = True  # blank padding, so the page's lines keep their numbers

    def run(self) -> list[nodes.Node]:
        node = nested_cell_slot(slot=self.arguments[0], removed=self.arguments[1:] == ["removed"])
        self.set_source_info(node)
        return [node]


def _is_slotted_cell(cell: nodes.container) -> bool:
    return SLOT_KEY in (cell.get("cell_metadata") or {})


def _file_line(origin: list[int], line: int) -> int:
    """The 1-based line of the file that the 1-based ``line`` of the hoisted text comes from."""
    return origin[line - 1] + 1 if 0 < line <= len(origin) else line


def _restore_lines(document: nodes.document, origin: list[int]) -> None:
    """Give this page's nodes the line numbers of the file, not of the hoisted text."""
    source = document.get("source")
    for node in document.findall(nodes.Element):
        if isinstance(node.line, int) and node.source in (None, source):
            node.line = _file_line(origin, node.line)


def map_lines_back(md: MarkdownIt) -> None:
    """Have ``md`` give the tokens of a hoisted page the lines of the file, before anything is rendered.

    A markdown-it core rule, run last in myst-nb's pass over the whole page (the one that starts with its
    ``nb_initialise`` token); nested parses of directive content offset their own lines from the directive's,
    so they are left alone. Once it has run, the transform no longer maps the nodes (that would map twice).
    """
    document = md.options.get("document")
    env = getattr(getattr(document, "settings", None), "env", None)
    if env is None or not _current_document(env).get(_ORIGIN_KEY):
        return

    def file_lines(state: StateCore) -> None:
        if not state.tokens or state.tokens[0].type != "nb_initialise":
            return
        origin = _current_document(env).pop(_ORIGIN_KEY, None)
        if not origin:
            return
        for token in state.tokens:
            if token.map:
                token.map = [_file_line(origin, line) for line in token.map]
        for reference in state.env.get("duplicate_refs", []):  # warned about later, at these lines
            reference["map"] = [_file_line(origin, line) for line in reference["map"]]

    md.core.ruler.push("qwen_docs_file_lines", file_lines)


def cell_fence_lines(text: str, origin: list[int] | None, config: Any, path: Any = None) -> dict[int, int]:
    """Notebook cell index -> 1-based line, in the file, of the opening fence of that code cell.

    Reads ``text`` (the page as myst-nb gets it: hoisted, with ``origin`` mapping its lines back) exactly as
    myst-nb does, and takes its source map: the fence of each cell.
    """
    from myst_nb.core.read import read_myst_markdown_notebook

    notebook = read_myst_markdown_notebook(text, config=config, add_source_map=True, path=path)
    lines = {}
    for index, (cell, start) in enumerate(zip(notebook.cells, notebook.metadata["source_map"], strict=True)):
        if cell.cell_type == "code":
            lines[index] = origin[start - 1] + 1 if origin and 0 < start <= len(origin) else start
    return lines


def _set_cell_lines(document: nodes.document, fences: dict[int, int]) -> None:
    """Give every code cell, and every node inside it, the line of the cell's opening fence."""
    for cell in code_cells(document):
        line = fences.get(cell.get("cell_index", -1))
        if line is None:
            continue
        for node in cell.findall(nodes.Element):
            if node.line is not None or node is cell:
                node.line = line


class PlaceNestedCells(SphinxTransform):
    """Move each hoisted cell into its slot; warn (so ``-W`` fails) rather than drop anything."""

    default_priority = 100  # before sphinx-design's transform (699) and all post-transforms

    def apply(self, **kwargs: Any) -> None:
        origin = _current_document(self.env).pop(_ORIGIN_KEY, None)
        if origin:
            _restore_lines(self.document, origin)
        fences = _current_document(self.env).pop(_FENCES_KEY, None)
        if fences:
            _set_cell_lines(self.document, fences)
        slots: dict[str, nested_cell_slot] = {}
        for node in self.document.findall(nested_cell_slot):
            slots.setdefault(node["slot"], node)
        for cell in list(code_cells(self.document, _is_slotted_cell)):
            slot = cell["cell_metadata"][SLOT_KEY]
            placeholder = slots.pop(slot, None)
            if placeholder is None:
                logger.warning(
                    f"code-cell {SLOT_KEY} {slot!r} has no {SLOT_DIRECTIVE} to go to (was its parent "
                    f"dropped?); rendered after its enclosing block",
                    location=cell,
                    type=_WARNING_TYPE,
                    subtype="unused",
                )
                continue
            cell.parent.remove(cell)
            placeholder.replace_self(cell)
        for placeholder in list(self.document.findall(nested_cell_slot)):  # unfilled ones
            if not placeholder["removed"]:
                logger.warning(
                    f"no rendered code-cell for {SLOT_DIRECTIVE} {placeholder['slot']!r}",
                    location=placeholder,
                    type=_WARNING_TYPE,
                    subtype="missing",
                )
            placeholder.parent.remove(placeholder)


def _current_document(env: BuildEnvironment) -> MutableMapping[str, Any]:
    # Sphinx >= 8.2 calls it current_document; temp_data is the older name
    return env.current_document if hasattr(env, "current_document") else env.temp_data  # type: ignore[return-value]


def _is_text_notebook(app: Sphinx, docname: str, text: str) -> bool:
    """Mirrors myst-nb's choice: custom formats (jupytext, ...) win, else the mystnb front matter."""
    path = str(app.env.doc2path(docname))
    if any(path.endswith(suffix) for suffix in app.config.nb_custom_formats):
        return False
    return bool(is_myst_markdown_notebook(text))


def _hoist_on_source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    if not _is_text_notebook(app, docname, source[0]):
        return
    hoisted = hoist_nested_cells(source[0], colon_fences="colon_fence" in app.config.myst_enable_extensions)
    origin = None
    if hoisted is not None:
        for line, message in hoisted.problems:
            logger.warning(
                message,
                location=(docname, line + 1),
                type=_WARNING_TYPE,
                subtype="options",
            )
        source[0] = hoisted.text
        origin = hoisted.origin
        _current_document(app.env)[_ORIGIN_KEY] = origin
    try:
        fences = cell_fence_lines(source[0], origin, getattr(app.env, "myst_config", None),
                                  path=app.env.doc2path(docname))
    except Exception:  # myst-nb reports a page it cannot read itself; the lines stay its own then
        return
    _current_document(app.env)[_FENCES_KEY] = fences


def setup(app: Sphinx) -> dict[str, Any]:
    app.setup_extension("myst_nb")
    app.add_directive(SLOT_DIRECTIVE, NestedCellSlot)
    app.add_transform(PlaceNestedCells)
    app.connect("source-read", _hoist_on_source_read)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
