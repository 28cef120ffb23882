"""Offer every executed page as a notebook (.ipynb) and as a Python script (.py), linked under its stamp.

The notebook is the one the page ran, cell for cell (the nested cells hoisted into place, the hidden
check cells and the stamp cell included), with the outputs the page shows. myst-nb writes it to
``jupyter_execute/<docname>.ipynb``, but on a cache hit it writes the notebook *without* the outputs
it renders (it merges the cached outputs into a copy), so the outputs are merged from the execution
cache again here, as myst-nb does, and the result is written to ``downloads/<docname>.ipynb`` beside
``jupyter_execute``.

The script is written next to it, from the same notebook: the cells the page shows, in the order they
ran (so both tabs of each tab set, and the cells inside dropdowns), each headed by where it sits on the
page (``# %% Basic usage / Manual``, the "percent" cell format Jupytext, VS Code and Spyder open as
notebook cells). Cells the page hides are left out: they are the build's own checks (with the project's
internal check helpers) and its "executed on" stamp, which describe the build machine, not the recipe.
A hidden cell tagged ``qd-script`` is kept, for setup a reader needs. If a shown cell uses a name that
only a left-out cell defined, the script would fail where the page did not, so the build warns
(``-W`` fails). Cells tagged ``raises-exception`` raise on the page and carry on; in the script they
run in ``try``/``except`` and print the error, so the rest still runs as it did on the page.

Since the script runs every tab, it can hold a model once per tab that loads it, so its header says what
memory it needs: with real weights, the peak the page's run measured (the stamp cell records its facts in
its output's metadata); with stand-ins, whose peak says nothing of real weights, the size of each named
model's weights in bfloat16. Where the code reads a file of the source folder (``Path("data/x.json")``), the
header and the links name it (:mod:`.data_files`); a file the page does not offer for download fails the build.

Both files are attached with Sphinx's own download mechanism (as myst-nb's ``{nb-download}`` role
does), so the HTML builder copies them to ``_downloads/`` on every build.
"""

from __future__ import annotations

import contextlib
import io
import os
import textwrap
import tokenize
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import nbformat
from docutils import nodes
from myst_nb.sphinx_ import NbMetadataCollector
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.transforms import SphinxTransform
from sphinx.util import logging

from ..runtime import STAMP_FACTS_KEY, PeakMemory
from .cell_code import is_shown, names, without_magics
from .cell_code import source as _source
from .cell_code import tags as _tags
from .cells import ancestors, code_cells, heading, is_component
from .data_files import files_named, offered_files
from .stamp import STAMP_TAG, is_stamp_cell

logger = logging.getLogger(__name__)

#: Class of the paragraph holding the two links.
DOWNLOADS_CLASS = "qd-downloads"
#: Folder, beside myst-nb's ``jupyter_execute``, of the files offered for download.
DOWNLOADS_FOLDER = "downloads"
#: Tag that keeps a hidden cell in the script.
SCRIPT_TAG = "qd-script"
#: Tag with which authors say a cell is meant to raise (myst-nb's own).
RAISES_TAG = "raises-exception"
_SKIP_TAGS = frozenset({"skip-execution", "skip_execution"})
_SEPARATOR = " / "
_HEADER_WIDTH = 100  # characters per comment line of the script's header


class Script(NamedTuple):
    """A page's Python script, and what it had to leave out."""

    text: str
    left_out: list[int]  #: notebook indices of the code cells not in the script
    unresolved: list[tuple[int, str, int]]  #: (cell, name, left-out cell defining it) for names the script lacks
    notes_memory: bool = False  #: whether the header says what memory the script needs (it loads models)


def in_script(cell: Mapping[str, Any]) -> bool:
    """Whether a notebook cell belongs in the page's script: a code cell the page shows, or tagged ``qd-script``."""
    if cell.get("cell_type") != "code" or not _source(cell).strip():
        return False
    return SCRIPT_TAG in _tags(cell) or (is_shown(cell) and STAMP_TAG not in _tags(cell))


def _unresolved(cells: Sequence[Mapping[str, Any]]) -> list[tuple[int, str, int]]:
    """Names a kept cell reads that only a left-out cell (run before it) had bound."""
    found: list[tuple[int, str, int]] = []
    kept_bound: set[str] = set()
    left_out_bound: dict[str, int] = {}
    for index, cell in enumerate(cells):
        if cell.get("cell_type") != "code":
            continue
        found_names = names(_source(cell))
        if found_names is None:
            continue
        bound, read = found_names
        if in_script(cell):
            for name in sorted(read - kept_bound):
                if name in left_out_bound:
                    found.append((index, name, left_out_bound[name]))
            kept_bound |= bound
        else:
            left_out_bound.update(dict.fromkeys(bound - kept_bound, index))
    return found


def _string_continuation_lines(source: str) -> set[int]:
    """1-based numbers of the lines that continue a multi-line string: indenting them would change it."""
    lines: set[int] = set()
    starts: list[int] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            name = tokenize.tok_name[token.type]
            if name in ("FSTRING_START", "TSTRING_START"):
                starts.append(token.start[0])
            elif name in ("FSTRING_END", "TSTRING_END") and starts:
                lines.update(range(starts.pop() + 1, token.end[0] + 1))
            elif token.type == tokenize.STRING:
                lines.update(range(token.start[0] + 1, token.end[0] + 1))
    except (tokenize.TokenError, SyntaxError):
        pass
    return lines


def _indented(source: str) -> str:
    keep = _string_continuation_lines(source)
    return "\n".join(
        line if number in keep or not line.strip() else "    " + line
        for number, line in enumerate(source.split("\n"), start=1)
    )


def _cell_code(cell: Mapping[str, Any]) -> str:
    source = _source(cell).rstrip()
    tags = _tags(cell)
    # IPython magics and shell escapes are not Python: keep them visible, as comments
    source = without_magics(source)
    if tags & _SKIP_TAGS:
        commented = "\n".join(f"# {line}" if line.strip() else "#" for line in source.split("\n"))
        return "# Not run when the page was built:\n" + commented
    if RAISES_TAG in tags:
        return (
            "# On the page this cell raises an error; the script prints it and goes on, as the page did.\n"
            f"try:\n{_indented(source)}\nexcept Exception:\n    traceback.print_exc()"
        )
    return source


def recorded_stamp_facts(notebook: Mapping[str, Any]) -> dict[str, Any] | None:
    """The facts the page's stamp cell recorded of its run (``runtime.stamp_facts``), if it has run."""
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code" or STAMP_TAG not in _tags(cell):
            continue
        for output in cell.get("outputs", []):
            facts = output.get("metadata", {}).get("text/markdown", {}).get(STAMP_FACTS_KEY)
            if isinstance(facts, dict):
                return facts
    return None


def _header_paragraph(text: str) -> list[str]:
    """``text`` as a paragraph of the script's header: comment lines, after an empty comment line."""
    wrapped = textwrap.wrap(text, width=_HEADER_WIDTH - 2, break_on_hyphens=False, break_long_words=False)
    return ["#", *(f"# {line}" for line in wrapped)]


def memory_note(facts: Mapping[str, Any] | None) -> list[str]:
    """Header lines saying what memory the script needs with real weights; none if the page loads no model."""
    sizes: Sequence[tuple[str, int]] = (facts or {}).get("weight_bytes_bf16") or []
    if facts is None or not sizes:
        return []
    text = (
        "Memory: the script runs all of the page's code in turn, every tab included, so it can hold several "
        "models at once (two tabs that each load a model hold a copy each) until a later cell frees them. To "
        "follow one recipe, run only the cells whose header names it."
    )
    not_real = [model_id for model_id, source in facts.get("weights", {}).items() if source != "real"]
    peak = facts.get("peak") or {}
    if not not_real and peak:
        measured = PeakMemory(ram_bytes=peak["ram_bytes"], gpu_bytes=peak.get("gpu_bytes")).parts()
        text += (
            f" When the page was built, its code ran on {facts.get('device', 'its build machine')} with real "
            f"weights and peaked at {' and '.join(measured)}: the script needs about as much."
        )
    else:
        listed = "; ".join(f"{model_id} {size / 1e9:.1f} GB" for model_id, size in sizes)
        text += f" With real weights, one copy of each model the page names takes, in bfloat16: {listed}."
    if not_real:
        which = "" if set(not_real) >= {model_id for model_id, _ in sizes} else f" for {', '.join(not_real)}"
        text += (
            f" The page was built on stand-in weights (tiny random models){which}, so the peak memory its stamp "
            "shows says nothing of what real weights need."
        )
    return _header_paragraph(text)


def weights_note(facts: Mapping[str, Any] | None) -> list[str]:
    """Header lines naming the commit of each model's real weights the page ran on; none on stand-ins, whose
    outputs no download reproduces."""
    revisions: Mapping[str, str] = (facts or {}).get("revisions") or {}
    if not revisions:
        return []
    listed = "; ".join(f"{model_id} at commit {revision}" for model_id, revision in revisions.items())
    text = (f"Weights: the page ran on {listed}. from_pretrained loads the newest download you have; "
            "to run on the same files, pass it revision= with that commit.")
    return _header_paragraph(text)


def _them(files: Sequence[str]) -> tuple[str, str]:
    return ("it", "that path") if len(files) == 1 else ("them", "those paths")


def files_note(files: Sequence[str]) -> list[str]:
    """Header lines naming the files the code reads, which the reader must save where the code looks for them."""
    if not files:
        return []
    it, path = _them(files)
    text = (f"Files: the code reads {', '.join(files)}, which the page offers for download: save {it} at {path}, "
            "relative to the folder you run the script from.")
    return _header_paragraph(text)


def _heading_line(text: str) -> str:
    return " ".join(text.replace("[", "(").replace("]", ")").split())


def script_from_notebook(
    notebook: Mapping[str, Any],
    *,
    title: str = "",
    places: Mapping[int, str] | None = None,
    files: Sequence[str] = (),
) -> Script:
    """The Python script of an executed page's notebook (see the module docstring for what goes in).

    ``places`` maps notebook cell indices to where the cell sits on the page, for the cell headers; ``files``
    are the files the code reads (paths relative to the page), which the header names.
    """
    places = places or {}
    cells = notebook.get("cells", [])
    kept = [(index, cell) for index, cell in enumerate(cells) if in_script(cell)]
    left_out = [i for i, cell in enumerate(cells) if cell.get("cell_type") == "code" and not in_script(cell)]
    header = [f"# {_heading_line(title)}" if title else "# Page code", "#"]
    header += [
        "# The code cells of the page, in the order they ran when the page was built: each tab of a tab set",
        "# and the cells inside dropdowns included. Cells the page hides (its build checks and its",
        '# "executed on" stamp) are left out. "# %%" lines start cells (Jupytext, VS Code, Spyder).',
    ]
    facts = recorded_stamp_facts(notebook)
    memory = memory_note(facts)
    header += memory + weights_note(facts) + files_note(files)
    if any(RAISES_TAG in _tags(cell) for _, cell in kept):
        header += ["", "import traceback"]
    parts = ["\n".join(header)]
    for index, cell in kept:
        place = _heading_line(places.get(index, ""))
        parts.append(f"# %% {place}".rstrip() + "\n" + _cell_code(cell))
    return Script("\n\n".join(parts) + "\n", left_out, _unresolved(cells), notes_memory=bool(memory))


# ------------------------------------------------------------------------------------------- Sphinx


def _place(cell: nodes.Element) -> str:
    """Nearest section (not the page title), then enclosing dropdowns and tabs, outermost first."""
    parts: list[str] = []
    section_seen = False
    for ancestor in ancestors(cell):
        if is_component(ancestor, "tab-item") or is_component(ancestor, "dropdown"):
            parts.append(heading(ancestor))
        elif isinstance(ancestor, nodes.section) and not section_seen:
            section_seen = True
            if isinstance(ancestor.parent, nodes.section):  # a page title has the document as parent
                parts.append(heading(ancestor))
    return _SEPARATOR.join(part for part in reversed(parts) if part)


def executed_notebook(path: Path, *, method: str | None, cache_path: str | None) -> nbformat.NotebookNode:
    """The notebook myst-nb wrote for a page, with the outputs the page shows, from its cache if need be."""
    notebook: nbformat.NotebookNode = nbformat.read(path, as_version=4)
    if method == "cache" and cache_path:
        from jupyter_cache import get_cache

        with contextlib.suppress(KeyError):  # no match: it ran now (outputs in place), or it failed
            _, notebook = get_cache(cache_path).merge_match_into_notebook(notebook)
    return notebook


def _link(target: Path, srcdir: Path, text: str) -> addnodes.download_reference:
    # as myst-nb's {nb-download}: a leading "/" makes Sphinx read the path from the source folder
    reftarget = target.as_posix() if os.name == "nt" else "/" + os.path.relpath(target, srcdir)
    node = addnodes.download_reference("", "", reftarget=reftarget, refexplicit=True)
    node += nodes.literal(text, text, classes=["xref", "download"])
    return node


class AddDownloadLinks(SphinxTransform):
    """Write the page's script next to its executed notebook, and link both under the stamp."""

    default_priority = 210  # after the stamp moved under the title (200); before doctree-read collects downloads

    def apply(self, **kwargs: Any) -> None:
        docname = self.env.docname
        executed = NbMetadataCollector.get_exec_data(self.env, docname)
        if not self.config.qwen_docs_downloads or not executed:
            return
        nb_config = self.env.mystnb_config  # type: ignore[attr-defined]  # myst-nb adds it to the environment
        *folders, name = docname.split("/")
        written = Path(nb_config.output_folder, *folders, f"{name}.ipynb")
        if not written.is_file():
            logger.warning(
                f"no executed notebook at {written}: the page offers no downloads",
                location=docname,
                type="qwen_docs",
                subtype="downloads",
            )
            return
        notebook = executed_notebook(written, method=executed.get("method"), cache_path=nb_config.execution_cache_path)
        folder = Path(nb_config.output_folder).with_name(DOWNLOADS_FOLDER).joinpath(*folders)
        folder.mkdir(parents=True, exist_ok=True)
        notebook_path, script_path = folder / f"{name}.ipynb", folder / f"{name}.py"
        nbformat.write(notebook, notebook_path)
        cells = {cell["cell_index"]: cell for cell in code_cells(self.document) if "cell_index" in cell}
        places = {index: _place(cell) for index, cell in cells.items()}
        title = next((section[0].astext() for section in self.document.findall(nodes.section)), "")
        files = self._files_read(notebook, cells)
        script = script_from_notebook(notebook, title=title, places=places, files=list(files))
        for index, name_used, definer in script.unresolved:
            first_line = next((line for line in _source(notebook.cells[definer]).splitlines() if line.strip()), "")
            logger.warning(
                f"the page's .py download would fail: a shown cell uses {name_used!r}, which only a hidden cell "
                f"defines (the one starting {first_line.strip()!r}); show that code, or tag that cell {SCRIPT_TAG!r}",
                location=cells.get(index, docname),
                type="qwen_docs",
                subtype="downloads",
            )
        script_path.write_text(script.text, encoding="utf8")

        srcdir = Path(self.env.srcdir)
        paragraph = nodes.paragraph(classes=[DOWNLOADS_CLASS])
        paragraph += nodes.Text("Download this page as a notebook, ")
        paragraph += _link(notebook_path, srcdir, notebook_path.name)
        paragraph += nodes.Text(" (with the outputs shown here), or as a Python script, ")
        paragraph += _link(script_path, srcdir, script_path.name)
        paragraph += nodes.Text(".")
        if script.notes_memory:
            paragraph += nodes.Text(" Both run every tab in turn: the script's first lines say how much memory "
                                    "that takes.")
        if files:
            paragraph += nodes.Text(" Both read ")
            for number, (relative, path) in enumerate(files.items()):
                paragraph += nodes.Text(", " if number else "")
                paragraph += _link(path, srcdir, relative)
            it, where = _them(list(files))
            paragraph += nodes.Text(f", offered here too: save {it} at {where}, relative to the folder you run "
                                    "them from.")
        self._insert(paragraph)

    def _files_read(self, notebook: Mapping[str, Any], cells: Mapping[int, nodes.Element]) -> dict[str, Path]:
        """The files of the source folder the script's cells read (path relative to the page -> file) that the
        page offers for download; each one it does not offer is a warning at the cell that reads it."""
        srcdir = Path(self.env.srcdir)
        folder = Path(self.env.doc2path(self.env.docname)).parent
        offered = offered_files(self.document, self.env)
        files: dict[str, Path] = {}
        for index, cell in enumerate(notebook.get("cells", [])):
            if not in_script(cell):
                continue
            for relative, path in files_named(_source(cell), folder, srcdir).items():
                if path in offered:
                    files.setdefault(relative, path)
                    continue
                logger.warning(
                    f"the page's downloads would fail: a cell they run reads {relative}, which the page does not "
                    f"offer; link it in the page's text ({{download}}`{relative}`) so that readers can save it",
                    location=cells.get(index, self.env.docname),
                    type="qwen_docs",
                    subtype="downloads",
                )
        return files

    def _insert(self, paragraph: nodes.paragraph) -> None:
        stamp = next(code_cells(self.document, is_stamp_cell), None)
        if stamp is not None:
            stamp.parent.insert(stamp.parent.index(stamp) + 1, paragraph)
            return
        section = next(iter(self.document.findall(nodes.section)), None)
        if section is not None and section.children and isinstance(section[0], nodes.title):
            section.insert(1, paragraph)
        else:
            self.document.append(paragraph)


def setup(app: Sphinx) -> dict[str, object]:
    app.add_config_value("qwen_docs_downloads", True, "env", bool)
    app.add_transform(AddDownloadLinks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
