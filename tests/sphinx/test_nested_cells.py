"""Nested code-cells: the fence scanner on its own, then real myst-nb + sphinx-design builds.

The builds run the fixture projects under ``roots/`` with a real kernel; one parallel build of
``roots/nested-cells`` is shared by most tests (module-scoped), and the assertions read its
doctrees and HTML as sphinx-design's own tests do.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from html.parser import HTMLParser
from io import StringIO
from pathlib import Path

import pytest
from docutils import nodes
from myst_nb.core.read import read_myst_markdown_notebook
from sphinx.cmd.build import build_main
from sphinx.testing.util import SphinxTestApp

from qwen_docs_helpers.sphinx.nested_cells import SLOT_KEY, hoist_nested_cells, nested_cell_slot

ROOTS = Path(__file__).parent / "roots"
FRONT = "---\nfile_format: mystnb\nkernelspec:\n  name: python3\n  display_name: Python 3\n---\n"

# ---------------------------------------------------------------- the scanner, without Sphinx

NESTED = (
    FRONT
    + """
# Page

```{code-cell} ipython3
top = 1
```

`````{tab-set}
````{tab-item} Key options
```{code-cell} ipython3
:tags: [hide-output, raises-exception]
:mystnb:
:  number_source_lines: true
raise ValueError(top)
```
````
````{tab-item} YAML options
::::{dropdown} Deeper
:::{code-cell}
---
tags: [remove-input]
---

print("starts after a blank line")

:::
::::
````
`````

Text after.
"""
)

# the same cells written at top level, as myst-nb reads them without this extension
TOP_LEVEL = (
    FRONT
    + """
```{code-cell} ipython3
top = 1
```
```{code-cell} ipython3
:tags: [hide-output, raises-exception]
:mystnb:
:  number_source_lines: true
raise ValueError(top)
```
```{code-cell}
---
tags: [remove-input]
---

print("starts after a blank line")

```
"""
)


def _code_cells(text: str) -> list[tuple[str, dict]]:
    notebook = read_myst_markdown_notebook(text)
    return [(cell.source, dict(cell.metadata)) for cell in notebook.cells if cell.cell_type == "code"]


def test_hoisted_cells_read_back_as_myst_nb_reads_top_level_cells() -> None:
    hoisted = hoist_nested_cells(NESTED)
    assert hoisted is not None and not hoisted.problems
    cells = _code_cells(hoisted.text)
    slots = [metadata.pop(SLOT_KEY, None) for _, metadata in cells]
    assert slots == [None, "nested-1", "nested-2"]  # the top-level cell is left alone
    assert cells == _code_cells(TOP_LEVEL)
    # every placeholder comes before its cell, and the cells stay in source order
    assert re.findall(r"nested-cell-slot\} (nested-\d)|slot: (nested-\d)", hoisted.text) == [
        ("nested-1", ""), ("nested-2", ""), ("", "nested-1"), ("", "nested-2"),
    ]  # fmt: skip


def test_lines_outside_hoisted_cells_keep_their_text_and_numbers_map_back() -> None:
    hoisted = hoist_nested_cells(NESTED)
    assert hoisted is not None
    source, text = NESTED.split("\n"), hoisted.text.split("\n")
    assert len(hoisted.origin) == len(text)
    # a line differs from the one it maps to only where a nested cell was (placeholder padding, hoisted copy)
    cell_lines: set[int] = set()
    for opening, closing in (("```{code-cell} ipython3", "```"), (":::{code-cell}", ":::")):
        start = max(i for i, line in enumerate(source) if line == opening)
        cell_lines |= set(range(start, source.index(closing, start + 1) + 1))
    assert all(line == source[o] or o in cell_lines for line, o in zip(text, hoisted.origin, strict=True))
    # inside the outer block nothing moved: the placeholder is exactly as high as the cell
    outer_end = source.index("`````", source.index("`````{tab-set}") + 1)
    assert hoisted.origin[: outer_end + 1] == list(range(outer_end + 1))
    assert hoisted.origin[text.index("Text after.")] == source.index("Text after.")


@pytest.mark.parametrize(
    "text",
    [
        # a code-cell shown as an example inside literal blocks is text, not a cell
        "````markdown\n::::{tab-set}\n```{code-cell}\nx = 1\n```\n::::\n````\n",
        "````{code-block} md\n:::{note}\n```{code-cell}\nx = 1\n```\n:::\n````\n",
        # top-level cells are myst-nb's job
        "```{code-cell} ipython3\nx = 1\n```\n",
        # an indented block (e.g. in a list item) is not top level for myst-nb: hoisting would break the list
        "1. Step\n\n   ::::{tab-set}\n   ```{code-cell}\n   x = 1\n   ```\n   ::::\n",
    ],
)
def test_leaves_alone_what_is_not_a_nested_cell(text: str) -> None:
    assert hoist_nested_cells(FRONT + text) is None


def test_colon_fences_only_count_when_myst_enables_them() -> None:
    text = FRONT + ":::{note}\n```{code-cell}\nx = 1\n```\n:::\n"
    assert hoist_nested_cells(text, colon_fences=True) is not None
    assert hoist_nested_cells(text, colon_fences=False) is None


# ---------------------------------------------------------------- real builds


def _make_app(tmp: Path, root: str, **kwargs) -> tuple[SphinxTestApp, StringIO, StringIO]:
    srcdir = tmp / root
    if not srcdir.exists():
        shutil.copytree(ROOTS / root, srcdir)
    status, warning = StringIO(), StringIO()
    app = SphinxTestApp("html", srcdir=srcdir, status=status, warning=warning, **kwargs)
    return app, status, warning


def _record_sources(app: SphinxTestApp, into: Path) -> None:
    """Save each page's text as myst-nb gets it, and the reading process (parallel reads fork)."""
    into.mkdir()

    def record(_app: object, docname: str, source: list[str]) -> None:
        (into / f"{docname}.md").write_text(source[0], encoding="utf8")
        (into / f"{docname}.pid").write_text(str(os.getpid()))

    app.connect("source-read", record, priority=900)  # after the hoisting (500)


class Built:
    def __init__(self, app: SphinxTestApp, status: str, warnings: str, sources: Path) -> None:
        self.app, self.status, self.warnings, self.sources = app, status, warnings, sources

    def doctree(self, docname: str) -> nodes.document:
        return self.app.env.get_doctree(docname)

    def html(self, docname: str) -> str:
        return (self.app.outdir / f"{docname}.html").read_text(encoding="utf8")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    tmp = tmp_path_factory.mktemp("nested")
    app, status, warning = _make_app(tmp, "nested-cells", parallel=2)
    _record_sources(app, tmp / "sources")
    try:
        app.build()
    finally:
        app.cleanup()  # the doctrees and HTML stay; only this process's docutils registrations go
    return Built(app, status.getvalue(), warning.getvalue(), tmp / "sources")


def _cells(node: nodes.Node) -> list[nodes.container]:
    return list(node.findall(lambda n: isinstance(n, nodes.container) and n.get("nb_element") == "cell_code"))


def _tab_contents(doctree: nodes.Node) -> dict[str, nodes.Element]:
    """Tab label -> its tab-content container, as sphinx-design's directives build them."""
    items = doctree.findall(lambda n: isinstance(n, nodes.container) and n.get("design_component") == "tab-item")
    return {item[0].astext(): item[1] for item in items}


def _element_texts(html: str, match: Callable[[str, dict[str, str | None]], bool]) -> list[str]:
    """Text of every HTML element ``match(tag, attrs)`` accepts, nested elements included."""

    class Collect(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.open: list[tuple[str, int | None]] = []
            self.found: list[list[str]] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag in {"input", "br", "img", "meta", "link", "hr", "wbr"}:
                return
            index = None
            if match(tag, dict(attrs)):
                index = len(self.found)
                self.found.append([])
            self.open.append((tag, index))

        def handle_endtag(self, tag: str) -> None:
            while self.open and self.open.pop()[0] != tag:
                pass

        def handle_data(self, data: str) -> None:
            for _, index in self.open:
                if index is not None:
                    self.found[index].append(data)

    parser = Collect()
    parser.feed(html)
    return ["".join(parts) for parts in parser.found]


def _tab_panel_texts(html: str) -> list[str]:
    return _element_texts(html, lambda tag, attrs: "sd-tab-content" in (attrs.get("class") or ""))


def test_nested_cells_run_and_render_inside_their_tab(built: Built) -> None:
    tabs = _tab_contents(built.doctree("tabs"))
    manual = _cells(tabs["Manual"])
    assert len(manual) == 1
    assert [child["nb_element"] for child in manual[0].children] == ["cell_code_source", "cell_code_output"]
    assert manual[0].children[0].astext() == 'x = base + 2\nprint("manual", x)'
    assert manual[0].children[1].astext().strip() == "manual 42"
    assert "boom" in _cells(tabs["Pipeline"])[0].astext()
    assert not list(built.doctree("tabs").findall(nested_cell_slot))
    panels = _tab_panel_texts(built.html("tabs"))
    assert [("manual 42" in p, "ValueError: boom" in p, "hidden 84" in p) for p in panels] == [
        (True, False, False), (False, True, False), (False, False, True),
    ]  # fmt: skip
    assert "x = base + 2" in panels[0]  # the input moved with the output


def test_tab_sync_attributes_survive(built: Built) -> None:
    labels = re.findall(r"<label[^>]*>", built.html("tabs"))
    synced = [(re.search(r'data-sync-group="([^"]*)"', label), re.search(r'data-sync-id="([^"]*)"', label))
              for label in labels]  # fmt: skip
    assert [(group[1], sync[1]) for group, sync in synced if group and sync] == [
        ("interface", "manual"), ("interface", "pipeline"), ("interface", "hidden"),
    ]  # fmt: skip


def test_cell_in_dropdown_renders_inside_its_details(built: Built) -> None:
    dropdowns = _element_texts(built.html("dropdown"), lambda tag, attrs: tag == "details")
    assert len(dropdowns) == 2
    assert 'print("in dropdown")' in dropdowns[0] and "\nin dropdown\n" in dropdowns[0]
    assert "in dropdown" not in dropdowns[1]


def test_tab_set_inside_dropdown(built: Built) -> None:
    doctree = built.doctree("dropdown")
    tabs = _tab_contents(doctree)
    assert [_cells(tabs[label])[0].astext().split() for label in ("A", "B")] == [
        ['print("deep', 'a")', "deep", "a"], ['print("deep', 'b")', "deep", "b"],
    ]  # fmt: skip
    more = _element_texts(built.html("dropdown"), lambda tag, attrs: tag == "details")[1]
    panels = _tab_panel_texts(built.html("dropdown"))
    assert len(panels) == 2 and "deep a" in panels[0] and "deep b" in panels[1]
    assert all(panel in more for panel in panels)


def test_cell_tags_behave_as_for_top_level_cells(built: Built) -> None:
    tabs = _tab_contents(built.doctree("tabs"))
    pipeline, hidden = _cells(tabs["Pipeline"])[0], _cells(tabs["Hidden"])[0]
    assert pipeline["cell_metadata"]["tags"] == ["raises-exception"]
    assert hidden["cell_metadata"]["tags"] == ["hide-output"] and hidden["hide_mode"] == "output"
    # hide-output: myst-nb's HTML post-transform folds the output below the input
    folded = _element_texts(
        built.html("tabs"), lambda tag, attrs: tag == "details" and "qd-traceback" not in (attrs.get("class") or "")
    )
    assert len(folded) == 1 and "hidden 84" in folded[0] and "print" not in folded[0]
    # raises-exception: the traceback is shown, and the run carried on (later cells have outputs)
    assert "ValueError: boom" in _tab_panel_texts(built.html("tabs"))[1]
    assert "after 43" in built.html("tabs")


def test_cells_run_in_source_order_in_one_kernel(built: Built) -> None:
    cells = _cells(built.doctree("tabs"))
    outputs = [cell.children[-1].astext().strip() for cell in cells]
    assert [cell["exec_count"] for cell in cells] == [1, 2, 3, 4, 5]
    # nested cells see top-level ones, later nested and top-level cells see nested ones
    assert [outputs[i] for i in (0, 1, 3, 4)] == ["top-level 40", "manual 42", "hidden 84", "after 43"]


def test_parallel_build_with_several_notebooks_is_clean(built: Built) -> None:
    readers = {int((built.sources / f"{doc}.pid").read_text()) for doc in ("index", "tabs", "dropdown")}
    assert os.getpid() not in readers  # each page was read (and executed) in a forked worker
    assert built.warnings == ""  # what -W turns into a failure


def test_top_level_cells_plain_fences_and_plain_pages_are_untouched(built: Built) -> None:
    srcdir = built.app.srcdir
    assert (built.sources / "index.md").read_text() == (srcdir / "index.md").read_text()
    hoisted = (built.sources / "tabs.md").read_text()
    assert '```{code-cell} ipython3\nbase = 40\nprint("top-level", base)\n```' in hoisted
    assert '```python\nprint("plain fence, not executed")\n```' in hoisted
    doctree = built.doctree("tabs")
    top_level = [cell for cell in _cells(doctree) if SLOT_KEY not in cell["cell_metadata"]]
    assert [cell.parent.tagname for cell in top_level] == ["section", "section"]
    plain = [block for block in _tab_contents(doctree)["Pipeline"].findall(nodes.literal_block)
             if block.get("language") == "python"]  # fmt: skip
    assert [block.astext() for block in plain] == ['print("plain fence, not executed")\n']
    assert "not executed" in built.html("index") and not _cells(built.doctree("index"))


def test_cache_mode_reuses_outputs_and_renders_them_in_place(tmp_path: Path) -> None:
    overrides = {"nb_execution_cache_path": str(tmp_path / "jupyter_cache")}

    def build() -> str:
        app, _, warning = _make_app(tmp_path, "cache", confoverrides=overrides, freshenv=True)
        try:
            app.build()
        finally:
            app.cleanup()
        assert warning.getvalue() == ""
        (panel,) = _tab_panel_texts((app.outdir / "index.html").read_text(encoding="utf8"))
        return re.search(r"run ([0-9a-f]{32})", panel)[1]

    first = build()
    page = tmp_path / "cache" / "index.md"
    # prose edits move the cell's line: the cached run must still match (no line in the cell metadata)
    page.write_text(page.read_text().replace("# Cached\n", "# Cached\n\nA new paragraph.\n"))
    assert build() == first


def test_orphan_slots_warn_with_their_page_line_and_fail_w(tmp_path: Path) -> None:
    shutil.copytree(ROOTS / "orphans", tmp_path / "src")
    warnings = tmp_path / "warnings.txt"
    args = ["-W", "-q", "-b", "html", "-w", str(warnings), str(tmp_path / "src"), str(tmp_path / "out")]
    assert build_main(args) == 1
    found = {
        (int(m["line"]), m["type"])
        for m in re.finditer(r"index\.md:(?P<line>\d+): WARNING: .*\[(?P<type>[\w.]+)\]$", warnings.read_text(), re.M)
    }
    assert {
        (17, "nested_cells.unused"),  # its tab-set dropped the placeholder: the cell stays, with a warning
        (22, "nested_cells.unused"),  # a slot option with no placeholder (at its fence line)
        (27, "nested_cells.missing"),  # a placeholder with no cell
        (30, "ref.doc"),  # found after hoisting, reported at its line in the file
        (32, "myst.directive_unknown"),  # found while parsing the hoisted text: its line in the file too
        (35, "myst.role_unknown"),
        (38, "nested_cells.options"),  # unreadable options: left nested (and myst-nb warns too)
        (38, "mystnb.nbcell"),
    } <= found
    # not a notebook: left to myst-nb, which warns about the nested cell (one line below its fence)
    assert re.search(r"plain\.md:12: WARNING: .*\[mystnb\.nbcell\]$", warnings.read_text(), re.M)
    assert "nested_cells" not in "".join(line for line in warnings.read_text().splitlines() if "plain.md" in line)
    html = (tmp_path / "out" / "index.html").read_text(encoding="utf8")
    assert "dropped by sphinx-design" in html and "a slot that was never hoisted" in html


def test_a_site_naming_another_renderer_keeps_it_and_the_doctree_still_gets_the_file_lines(tmp_path: Path) -> None:
    # myst-nb's own renderer does not map the tokens: the transform maps the nodes back instead
    shutil.copytree(ROOTS / "orphans", tmp_path / "src")
    warnings = tmp_path / "warnings.txt"
    build_main(["-q", "-b", "html", "-D", "nb_render_plugin=default", "-w", str(warnings), str(tmp_path / "src"),
                str(tmp_path / "out")])
    assert re.search(r"index\.md:30: WARNING: unknown document: 'no-such-page'", warnings.read_text())
    # parse-time warnings keep the hoisted text's lines then: the site's choice was kept
    assert not re.search(r"index\.md:32: WARNING: Unknown directive type", warnings.read_text())
