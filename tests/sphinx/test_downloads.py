"""Downloads: each executed page links its executed notebook and its Python script, under its stamp.

One parallel build of ``roots/downloads`` (real kernels, myst-nb + sphinx-design) is shared by the
Sphinx tests; the script generator is also tested on its own, without Sphinx.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from io import StringIO
from pathlib import Path

import nbformat
import pytest
from docutils import nodes
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from sphinx import addnodes
from sphinx.testing.util import SphinxTestApp
from sphinx.util.console import strip_colors

from qwen_docs_helpers.runtime import STAMP_FACTS_KEY
from qwen_docs_helpers.sphinx.data_files import files_named
from qwen_docs_helpers.sphinx.downloads import (
    DOWNLOADS_CLASS,
    in_script,
    memory_note,
    recorded_stamp_facts,
    script_from_notebook,
)

ROOTS = Path(__file__).parent / "roots"

# ---------------------------------------------------------------- the script, without Sphinx


def _run(script: str) -> dict[str, object]:
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec(compile(script, "<script>", "exec"), namespace)
    return namespace


def test_only_cells_the_page_shows_go_in_the_script() -> None:
    cells = [
        new_markdown_cell("# Title"),
        new_code_cell("shown = 1"),
        new_code_cell("check = 2", metadata={"tags": ["remove-cell"]}),
        new_code_cell("stamp()", metadata={"tags": ["remove-input", "qd-stamp"]}),
        new_code_cell("no_output = 3", metadata={"tags": ["remove-output"]}),
        new_code_cell("folded = 4", metadata={"tags": ["hide-input"]}),
        new_code_cell("setup = 5", metadata={"tags": ["remove-cell", "qd-script"]}),
        new_code_cell("   \n"),
    ]
    assert [in_script(cell) for cell in cells] == [False, True, False, False, True, True, True, False]
    script = script_from_notebook(new_notebook(cells=cells), title="Title", places={1: "Intro / Manual"})
    assert "# %% Intro / Manual\nshown = 1\n" in script.text
    assert script.left_out == [2, 3, 7]
    assert _run(script.text).keys() >= {"shown", "no_output", "folded", "setup"}
    assert "check = 2" not in script.text and "stamp()" not in script.text


def test_cells_that_raise_are_wrapped_and_strings_keep_their_text() -> None:
    source = (
        'plain = """a\n  b\nc"""\n'
        "value = 7\n"
        'formatted = f"""{value}\n    {value + 1}\n"""\n'
        "def helper():\n"
        '    return """kept\n  as is"""\n'
        "\n"
        "raise RuntimeError(helper())"
    )
    raising = new_code_cell(source, metadata={"tags": ["raises-exception"]})
    notebook = new_notebook(cells=[raising, new_code_cell("after = 1")])
    script = script_from_notebook(notebook)
    assert "import traceback" in script.text and "try:\n    plain = " in script.text
    namespace = _run(script.text)  # prints the RuntimeError's traceback, then carries on
    expected: dict[str, object] = {}
    with pytest.raises(RuntimeError, match="kept\n  as is"):
        exec(source, expected)
    for name in ("plain", "formatted"):
        assert namespace[name] == expected[name]
    assert namespace["helper"]() == "kept\n  as is" and namespace["after"] == 1  # type: ignore[operator]


def test_magics_and_skipped_cells_are_comments() -> None:
    notebook = new_notebook(
        cells=[
            new_code_cell("%pip install nothing\n!ls\nx = 1"),
            new_code_cell('print("not run")', metadata={"tags": ["skip-execution"]}),
        ]
    )
    text = script_from_notebook(notebook).text
    assert "# %pip install nothing\n# !ls\nx = 1" in text
    assert '# Not run when the page was built:\n# print("not run")' in text
    assert _run(text)["x"] == 1


def test_names_that_only_hidden_cells_define_are_reported() -> None:
    cells = [
        new_code_cell("import math\nsecret = 6\nshared = 1", metadata={"tags": ["remove-cell"]}),
        new_code_cell("shared = 2"),  # the shown cell binds it itself: fine
        new_code_cell("def f(arg):\n    return arg\nprint([y for y in range(secret)], f(shared), math.pi)"),
    ]
    assert script_from_notebook(new_notebook(cells=cells)).unresolved == [(2, "math", 0), (2, "secret", 0)]


def _stamped(facts: dict[str, object]) -> nbformat.NotebookNode:
    """A notebook whose stamp cell ran and recorded ``facts``, as ``runtime.page_stamp`` does."""
    output = nbformat.v4.new_output(
        "display_data", data={"text/markdown": "stamp"}, metadata={"text/markdown": {STAMP_FACTS_KEY: facts}}
    )
    stamp = new_code_cell("page_stamp([...])", metadata={"tags": ["remove-input", "qd-stamp"]}, outputs=[output])
    return new_notebook(cells=[new_code_cell("x = 1"), stamp])


SIZES = [["Qwen/Qwen2-7B-Instruct", 15_231_233_024], ["Qwen/Qwen1.5-MoE-A2.7B-Chat", 28_631_568_384]]
IDS = [model_id for model_id, _ in SIZES]


def _header(script: str) -> str:
    """The header's text, comment marks and line breaks removed."""
    lines = script.split("\n\n# %%")[0].splitlines()
    return " ".join(line.removeprefix("#").strip() for line in lines if line.strip("# "))


def test_header_gives_the_measured_peak_of_a_run_on_real_weights() -> None:
    facts = {
        "device": "NVIDIA H100 80GB HBM3", "accelerator": "cuda",
        "weights": dict.fromkeys(IDS, "real"), "weight_bytes_bf16": SIZES,
        "peak": {"ram_bytes": 3 * 2**30, "gpu_bytes": 44 * 2**30 + 2**29},
    }
    built = script_from_notebook(_stamped(facts), title="Chat")
    assert built.notes_memory
    script = built.text
    header = _header(script)
    assert "runs all of the page's code in turn, every tab included, so it can hold several models" in header
    assert ("its code ran on NVIDIA H100 80GB HBM3 with real weights and peaked at 44.5 GiB of GPU memory and "
            "3.0 GiB of RAM: the script needs about as much.") in header
    assert "GB;" not in header and "stand-in" not in header
    assert "Weights:" not in header  # no commit recorded: nothing to say
    assert all(len(line) <= 100 for line in script.splitlines())
    assert _run(script)["x"] == 1  # the header is comments only


def test_header_names_the_commit_of_the_real_weights_the_page_ran_on() -> None:
    commit = "f2826a00ceef68f0f2b946d945ecc0477ce4450c"
    facts = {
        "device": "NVIDIA H100 80GB HBM3", "accelerator": "cuda", "weights": {IDS[0]: "real", IDS[1]: "standin"},
        "revisions": {IDS[0]: commit}, "weight_bytes_bf16": SIZES, "peak": {"ram_bytes": 2**30, "gpu_bytes": 2**30},
    }
    script = script_from_notebook(_stamped(facts), title="Chat").text
    assert (f"Weights: the page ran on {IDS[0]} at commit {commit}. from_pretrained loads the newest "
            "download you have; to run on the same files, pass it revision= with that commit.") in _header(script)
    assert all(len(line) <= 100 for line in script.splitlines()) and _run(script)["x"] == 1
    standins = {**facts, "weights": dict.fromkeys(IDS, "standin"), "revisions": {}}
    assert "Weights:" not in _header(script_from_notebook(_stamped(standins)).text)


def test_header_gives_model_sizes_when_the_run_used_standins() -> None:
    facts = {
        "device": "AMD EPYC", "accelerator": "cpu", "weights": dict.fromkeys(IDS, "standin"),
        "weight_bytes_bf16": SIZES, "peak": {"ram_bytes": 2**30, "gpu_bytes": None},
    }
    stored = nbformat.reads(nbformat.writes(_stamped(facts)), as_version=4)  # as a notebook file keeps it
    header = _header(script_from_notebook(stored).text)
    assert ("one copy of each model the page names takes, in bfloat16: Qwen/Qwen2-7B-Instruct 15.2 GB; "
            "Qwen/Qwen1.5-MoE-A2.7B-Chat 28.6 GB.") in header
    assert "built on stand-in weights (tiny random models), so the peak memory" in header
    assert "1.0 GiB" not in header  # a stand-in run's peak would mislead
    # one model on real weights, one not: the header names the one that ran on a stand-in
    mixed = {**facts, "weights": {"Qwen/Qwen2-7B-Instruct": "real", "Qwen/Qwen1.5-MoE-A2.7B-Chat": "missing"}}
    assert "(tiny random models) for Qwen/Qwen1.5-MoE-A2.7B-Chat, so" in _header(
        script_from_notebook(_stamped(mixed)).text)
    # real weights but no measured peak: the sizes, and no word of stand-ins
    unmeasured = _header(script_from_notebook(_stamped({**facts, "weights": dict.fromkeys(IDS, "real"),
                                                        "peak": None})).text)
    assert "in bfloat16: Qwen/Qwen2-7B-Instruct 15.2 GB;" in unmeasured and "stand-in" not in unmeasured


def test_no_memory_note_without_models_or_stamp() -> None:
    empty = {"device": "cpu", "accelerator": "cpu", "weights": {}, "weight_bytes_bf16": [], "peak": None}
    assert "Memory:" not in script_from_notebook(_stamped(empty)).text
    assert not script_from_notebook(_stamped(empty)).notes_memory
    assert memory_note(None) == [] and recorded_stamp_facts(new_notebook(cells=[new_code_cell("x = 1")])) is None


def test_files_named_are_existing_files_under_the_root(tmp_path: Path) -> None:
    root, page_dir = tmp_path / "docs", tmp_path / "docs" / "guide"
    (root / "data").mkdir(parents=True)
    page_dir.mkdir()
    (root / "data" / "a.json").write_text("{}")
    (page_dir / "b.txt").write_text("")
    (tmp_path / "outside.txt").write_text("")
    absolute = repr(str(root / "data" / "a.json"))
    code = (
        "!ls data\n"
        "a = open('../data/a.json')\n"
        "b, again = 'b.txt', \"../data/a.json\"\n"
        f"skipped = [f'b.txt', 'missing.txt', '../data', '../../outside.txt', {absolute}, '', 'b.txt\\n']\n"
    )
    found = files_named(code, page_dir, root)
    assert list(found) == ["../data/a.json", "b.txt"]  # in order, once each
    assert found["../data/a.json"] == (root / "data" / "a.json").resolve()
    assert files_named("x = 1", page_dir, root) == {}


def test_header_names_the_files_the_code_reads() -> None:
    notebook = new_notebook(cells=[new_code_cell("print(open('data/a.json').read())")])
    script = script_from_notebook(notebook, title="T", files=["data/a.json", "data/b.txt"])
    assert ("Files: the code reads data/a.json, data/b.txt, which the page offers for download: save them at those "
            "paths, relative to the folder you run the script from.") in _header(script.text)
    assert "Files:" not in script_from_notebook(notebook, title="T").text


# ---------------------------------------------------------------- a real build


class Built:
    def __init__(self, app: SphinxTestApp, warnings: str) -> None:
        self.app, self.warnings = app, strip_colors(warnings)
        self.outdir = Path(app.outdir)

    def doctree(self, docname: str) -> nodes.document:
        return self.app.env.get_doctree(docname)

    def html(self, docname: str) -> str:
        return (self.outdir / f"{docname}.html").read_text(encoding="utf8")

    def downloads(self, docname: str) -> dict[str, Path]:
        """Suffix -> the file each download link of the page points at."""
        (paragraph,) = re.findall(rf'<p class="{DOWNLOADS_CLASS}">(.*?)</p>', self.html(docname), re.S)
        hrefs = re.findall(r'<a class="reference download internal" download="" href="([^"]+)"', paragraph)
        page_dir = (self.outdir / docname).parent
        return {Path(href).suffix: (page_dir / href).resolve() for href in hrefs}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    srcdir = tmp_path_factory.mktemp("downloads") / "downloads"
    shutil.copytree(ROOTS / "downloads", srcdir)
    status, warning = StringIO(), StringIO()
    app = SphinxTestApp("html", srcdir=srcdir, status=status, warning=warning, parallel=2)
    try:
        app.build()
    finally:
        app.cleanup()  # the doctrees and HTML stay
    return Built(app, warning.getvalue())


def test_links_sit_under_the_stamp(built: Built) -> None:
    section = next(iter(built.doctree("page").findall(nodes.section)))
    title, stamp, links, prose = section.children[:4]
    assert isinstance(title, nodes.title) and "qd-stamp" in stamp["cell_metadata"]["tags"]
    assert DOWNLOADS_CLASS in links["classes"] and prose.astext() == "Some prose."
    references = list(links.findall(addnodes.download_reference))
    assert [Path(ref["filename"]).name for ref in references] == ["page.ipynb", "page.py"]
    assert links.astext().startswith("Download this page as a notebook, page.ipynb")
    assert "memory" not in links.astext()  # the page loads no model: its script has no memory note


def test_links_point_at_the_executed_files(built: Built) -> None:
    written = built.outdir.parent / "downloads"
    for docname in ("page", "hidden", "sub/deep"):
        files = built.downloads(docname)
        assert sorted(files) == [".ipynb", ".py"], docname
        for suffix, path in files.items():
            assert path.is_relative_to(built.outdir / "_downloads")
            assert path.read_bytes() == (written / f"{docname}{suffix}").read_bytes()
        # executed in place (force mode): the notebook is the one myst-nb wrote
        executed = nbformat.read(built.outdir.parent / "jupyter_execute" / f"{docname}.ipynb", as_version=4)
        assert nbformat.read(files[".ipynb"], as_version=4) == executed
    assert built.downloads("sub/deep")[".py"].name == "deep.py"


def test_notebook_download_is_the_notebook_as_executed(built: Built) -> None:
    notebook = nbformat.read(built.downloads("page")[".ipynb"], as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    # every cell that ran, the hidden check and the stamp included, with its outputs
    assert [cell.execution_count for cell in code] == [1, 2, 3, 4, 5, 6, None, 7, 8]
    assert "_checked = x == 43" in code[3].source and "qd-stamp" in code[8].metadata.tags
    streams = ["".join(o.get("text", "") for o in cell.outputs) for cell in code]
    assert streams[:3] == ["top-level 40\n", "manual 42\n", "pipeline 43\n"]
    assert code[5].outputs[0].ename == "ValueError"
    assert streams[7].startswith("shell") and streams[7].endswith("\nafter   second line\n")
    json.loads(built.downloads("page")[".ipynb"].read_text())  # plain JSON, as a browser gets it


EXPECTED_SCRIPT = '''\
# A page
#
# The code cells of the page, in the order they ran when the page was built: each tab of a tab set
# and the cells inside dropdowns included. Cells the page hides (its build checks and its
# "executed on" stamp) are left out. "# %%" lines start cells (Jupytext, VS Code, Spyder).

import traceback

# %%
base = 40
print("top-level", base)

# %% Two ways / Manual
x = base + 2
print("manual", x)

# %% Two ways / Pipeline
x = base + 3
print("pipeline", x)

# %%
setting = "kept"

# %% Errors
# On the page this cell raises an error; the script prints it and goes on, as the page did.
try:
    message = """first line
  second line"""
    raise ValueError(f"""{setting}
{message}""")
except Exception:
    traceback.print_exc()

# %% Errors
# Not run when the page was built:
# print("skipped")

# %% Errors / More (details)
# !echo shell
print("after", message.splitlines()[1])
'''


def test_script_download(built: Built) -> None:
    assert built.downloads("page")[".py"].read_text(encoding="utf8") == EXPECTED_SCRIPT


def test_script_reproduces_the_page(built: Built, tmp_path: Path) -> None:
    script = built.downloads("page")[".py"]
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "top-level 40\nmanual 42\npipeline 43\nafter   second line\n"
    assert "ValueError: kept\nfirst line\n  second line" in run.stderr  # the error the page shows
    page_text = built.html("page")
    missing = [line for line in run.stdout.splitlines() if line not in page_text]
    assert not missing, f"the page does not show {missing}"


def test_pages_without_a_run_offer_nothing(built: Built) -> None:
    for docname in ("index", "plain", "off"):
        assert DOWNLOADS_CLASS not in built.html(docname), docname
    assert not (built.outdir.parent / "jupyter_execute" / "off.py").exists()


def _download_warnings(built: Built) -> list[tuple[str, int, str]]:
    found = re.findall(r"^(\S+):(\d+): WARNING: (.*) \[qwen_docs\.downloads\]$", built.warnings, re.M)
    return [(Path(path).name, int(line), message) for path, line, message in found]


def test_a_shown_cell_needing_hidden_code_fails_the_build(built: Built) -> None:
    found = [warning for warning in _download_warnings(built) if warning[0] == "hidden.md"]
    assert [(name, line) for name, line, _ in found] == [("hidden.md", 17)] * 2  # its fence
    assert ["'math'" in found[0][2], "'secret'" in found[1][2]] == [True, True]
    assert "the one starting 'import math'" in found[0][2]
    # nothing else warns: -W passes without hidden.md and unoffered.md
    assert len(built.warnings.strip().splitlines()) == len(_download_warnings(built)) == 3


def test_a_shown_cell_reading_a_file_the_page_does_not_offer_fails_the_build(built: Built) -> None:
    (found,) = [warning for warning in _download_warnings(built) if warning[0] == "unoffered.md"]
    assert found[1] == 10  # the cell's fence
    assert found[2] == ("the page's downloads would fail: a cell they run reads data/sample.json, which the page does "
                        "not offer; link it in the page's text ({download}`data/sample.json`) so that readers can "
                        "save it")


def test_files_the_code_reads_are_named_and_linked(built: Built, tmp_path: Path) -> None:
    files = built.downloads("reads")
    assert sorted(files) == [".ipynb", ".json", ".py"]
    assert files[".json"].read_bytes() == (built.app.srcdir / "data" / "sample.json").read_bytes()
    (links,) = [p for p in built.doctree("reads").findall(nodes.paragraph) if DOWNLOADS_CLASS in p["classes"]]
    assert links.astext().endswith(" Both read data/sample.json, offered here too: save it at that path, relative "
                                   "to the folder you run them from.")
    script = files[".py"]
    assert ("Files: the code reads data/sample.json, which the page offers for download: save it at that path, "
            "relative to the folder you run the script from.") in _header(script.read_text(encoding="utf8"))
    (tmp_path / "data").mkdir()
    shutil.copy(files[".json"], tmp_path / "data" / "sample.json")  # what the header asks the reader to do
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("sum 7 ")
    assert "Files:" not in built.downloads("page")[".py"].read_text(encoding="utf8")


def test_notebook_from_the_cache_keeps_its_outputs(tmp_path: Path) -> None:
    """On a cache hit myst-nb writes its notebook without outputs: the download still has them."""
    srcdir = tmp_path / "cache"
    shutil.copytree(ROOTS / "cache", srcdir)
    overrides = {"nb_execution_cache_path": str(tmp_path / "jupyter_cache")}

    def build() -> tuple[Built, str]:
        warning = StringIO()
        app = SphinxTestApp("html", srcdir=srcdir, warning=warning, confoverrides=overrides, freshenv=True)
        try:
            app.build()
        finally:
            app.cleanup()
        built = Built(app, warning.getvalue())
        assert built.warnings == ""
        notebook = nbformat.read(built.downloads("index")[".ipynb"], as_version=4)
        (output,) = [o.text for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
        return built, output

    _, executed = build()
    built, cached = build()  # a fresh environment: read again, outputs from the cache
    assert cached == executed and cached.startswith("run ")
    written = nbformat.read(built.outdir.parent / "jupyter_execute" / "index.ipynb", as_version=4)
    # myst-nb's own file has none: why we merge (if this fails, myst-nb fixed it and the merge can go)
    assert not any(cell.get("outputs") for cell in written.cells)
