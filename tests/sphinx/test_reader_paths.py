"""Reader paths: a shown cell never needs code that a reader of other tabs, or one who skipped a dropdown, did not run.

One parallel build of ``roots/reader-paths`` (real kernels, myst-nb + sphinx-design) is shared by the tests,
which read its warnings, doctrees and HTML. Every page of the fixture runs without error in one kernel: the
problems found are those of readers, not of the build.
"""

from __future__ import annotations

import re
import shutil
from io import StringIO
from pathlib import Path

import pytest
from docutils import nodes
from sphinx.testing.util import SphinxTestApp
from sphinx.util.console import strip_colors

from qwen_docs_helpers.sphinx.cell_code import names
from qwen_docs_helpers.sphinx.cells import is_code_cell
from qwen_docs_helpers.sphinx.reader_paths import CONTINUES_CLASS

ROOTS = Path(__file__).parent / "roots"

# ---------------------------------------------------------------- what a cell takes from before it, without Sphinx


@pytest.mark.parametrize(
    ("source", "bound", "taken"),
    [
        ("x = x.to(device)", {"x"}, {"x", "device"}),  # read before the cell binds it
        ("x = 1\nx += y", {"x"}, {"y"}),
        ("for i in items:\n    total = total + i", {"i", "total"}, {"items", "total"}),
        ("import a.b as c, d.e\nfrom f import g\nprint(c, d, g)", {"c", "d", "g"}, set()),  # builtins: never taken
        # a function's parameters and locals are its own; what it reads from outside is taken when it is called
        ("def f(arg):\n    local = arg + later\n    return local + other\nlater = 1", {"f", "later"}, {"other"}),
        ("def f():\n    global G\n    G = 1", {"f", "G"}, set()),
        ("print([y for y in ys if y > low], {k: v for k, v in pairs})", set(), {"ys", "low", "pairs"}),
        ("lam = lambda v, w=default: v + w + outer", {"lam"}, {"default", "outer"}),
        ("class K(Base):\n    a = 1\n    b = a + q", {"K"}, {"Base", "q"}),
        ("try:\n    pass\nexcept E as err:\n    print(err)\ndel gone", set(), {"E", "gone"}),
        ("with open(p) as fh:\n    (n := fh.read())", {"fh", "n"}, {"p"}),
        ("!ls", None, None),
    ],
)
def test_names_a_cell_binds_and_takes_from_before_it(
    source: str, bound: set[str] | None, taken: set[str] | None
) -> None:
    found = names(source)
    assert (found == (bound, taken)) if bound is not None else found is None


# ---------------------------------------------------------------- a real build


class Built:
    def __init__(self, app: SphinxTestApp, warnings: str) -> None:
        self.app, self.warnings = app, strip_colors(warnings)
        self.outdir = Path(app.outdir)

    def found(self, docname: str) -> dict[int, str]:
        """Line -> message of each reader-paths warning of a page (one per line in this fixture)."""
        pattern = rf"^\S*/{docname}\.md:(\d+): WARNING: (.*) \[qwen_docs\.reader_paths\]$"
        found = re.findall(pattern, self.warnings, re.M)
        lines = [int(line) for line, _ in found]
        assert len(set(lines)) == len(lines), found
        return {int(line): message for line, message in found}

    def doctree(self, docname: str) -> nodes.document:
        return self.app.env.get_doctree(docname)

    def html(self, docname: str) -> str:
        return (self.outdir / f"{docname}.html").read_text(encoding="utf8")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    srcdir = tmp_path_factory.mktemp("reader-paths") / "reader-paths"
    shutil.copytree(ROOTS / "reader-paths", srcdir)
    warning = StringIO()
    app = SphinxTestApp("html", srcdir=srcdir, status=StringIO(), warning=warning, parallel=2)
    try:
        app.build()
    finally:
        app.cleanup()  # the doctrees and HTML stay
    return Built(app, warning.getvalue())


def _notes(doctree: nodes.document) -> list[tuple[str, nodes.Element]]:
    """Each generated note, with the node that follows it."""
    found = []
    for note in doctree.findall(nodes.paragraph):
        if CONTINUES_CLASS in note["classes"]:
            found.append((note.astext(), note.parent[note.parent.index(note) + 1]))
    return found


def test_only_reader_path_problems_warn(built: Built) -> None:
    # everything else on the pages is fine for every reader: names bound in every tab (imports included),
    # builtins, names bound only later, hidden cells, reads inside the dropdown that binds the name
    other = [line for line in built.warnings.splitlines() if line.strip() and "[qwen_docs.reader_paths]" not in line]
    assert other == []
    assert sorted(built.found("tabs")) == [49, 53, 68, 72, 77]
    assert sorted(built.found("dropdowns")) == [37, 48, 53]
    assert sorted(built.found("unsynced")) == [29, 41]
    assert sorted(built.found("partial")) == [53]


def test_a_read_of_another_tabs_name_warns_at_the_cell_fence(built: Built) -> None:
    assert built.found("tabs")[49] == (
        "a reader of the Pipeline tab has no 'model' here (bound only by code in the Manual tab): move this cell "
        "into the tab set, bind the name outside the tabs, or give the cell ':continues: manual'"
    )
    # a hidden cell binding the same name does not help the reader: it is not on the page
    assert built.found("tabs")[53].startswith("a reader of the Pipeline tab has no 'hidden_and_manual' here")
    # inside a dropdown, the tabs before it count the same way
    assert built.found("dropdowns")[37].startswith("a reader of the Pipeline tab has no 'model' here")


def test_a_name_bound_only_in_a_dropdown_warns_outside_it(built: Built) -> None:
    found = built.found("dropdowns")
    for line in (48, 53):  # in another dropdown, and after both
        assert found[line] == (
            "a reader who skips the dropdown 'Extra' has no 'extra' here (bound only by code in the dropdown "
            "'Extra'): bind the name outside the dropdown, or in this cell too"
        )


def test_continues_makes_the_cell_part_of_the_tab_and_notes_what_it_uses(built: Built) -> None:
    notes = _notes(built.doctree("tabs"))
    # only the names that readers of the other tab lack: not 'shared', which both tabs bind
    assert [(text, cell["cell_metadata"].get("continues")) for text, cell in notes] == [
        ("Continues the Manual tab: uses model, tokenizer.", "manual")
    ]
    assert is_code_cell(notes[0][1]) and notes[0][1].line == 62
    # what it binds counts as Manual-tab code for the cells after it
    assert "has no 'answer' here (bound only by code in the Manual tab)" in built.found("tabs")[68]
    # a nested (hoisted) cell carries the option too: 'extra', bound in its own dropdown, is not the tab's
    assert [text for text, _ in _notes(built.doctree("dropdowns"))] == ["Continues the Manual tab: uses model."]
    # rendered right above the cell's input
    pattern = rf'<p class="{CONTINUES_CLASS}">(.*?)</p>\s*(<div class="cell .*?</pre>)'
    note = re.search(pattern, built.html("tabs"), re.S)
    assert note is not None and note[1].endswith('<span class="pre">tokenizer</span></code>.')
    assert re.sub(r"<[^>]+>", "", note[2]).strip() == "print(model, tokenizer, shared)\nanswer = model + 1"


def test_a_stale_or_unknown_continues_warns(built: Built) -> None:
    found = built.found("tabs")
    assert found[72] == (
        "':continues: manual' is stale: this cell needs nothing that only the Manual tab binds; remove the option"
    )
    assert found[77] == (
        "':continues: nowhere' names no tab of this page (its sync keys: 'manual', 'pipeline'): use one of them, "
        "or remove the option"
    )
    assert len(_notes(built.doctree("tabs"))) == 1  # no note on either


def test_tab_sets_without_a_sync_group_are_each_a_choice(built: Built) -> None:
    found = built.found("unsynced")
    assert found[41] == (
        "a reader of the 'B' tab (tab set at line 10) has no 'only_a' here (bound only by code in the 'A' tab "
        "(tab set at line 10)): move this cell into that tab, or bind the name outside the tabs"
    )
    # in a tab of the second set: its readers picked that tab and, independently, one of the first set
    assert found[29].startswith(
        "a reader of the 'B' tab (tab set at line 10) and the 'C' tab (tab set at line 26) has no 'only_a' here"
    )


def test_a_synced_set_without_the_readers_key_shows_its_default_tab(built: Built) -> None:
    found = built.found("partial")
    assert found[53].startswith("a reader of the Server tab has no 'm' here")
    # 'p': a reader of Server sees the second set's default tab (its first, Pipeline), which binds it
    assert 57 not in found
