"""The "executed on" stamp under each executed page's title, and failed cells named by page and line."""

from __future__ import annotations

import re
import shutil
from html import unescape
from io import StringIO
from pathlib import Path

import pytest
from docutils import nodes
from sphinx.testing.util import SphinxTestApp

from qwen_docs_helpers.sphinx.cell_errors import error_line
from qwen_docs_helpers.sphinx.cells import code_cells
from qwen_docs_helpers.sphinx.error_outputs import NOT_RUN_CLASS
from qwen_docs_helpers.sphinx.stamp import STAMP_TAG, ids_without_recipe, models_named

ROOT = Path(__file__).parent / "roots" / "stamped"


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory, standin_hub: dict[str, Path], hub_cache: Path
) -> tuple[SphinxTestApp, str]:
    srcdir = tmp_path_factory.mktemp("stamped") / "src"
    shutil.copytree(ROOT, srcdir)
    warnings = StringIO()
    app = SphinxTestApp(
        "html",
        srcdir=srcdir,
        status=StringIO(),
        warning=warnings,
        confoverrides={"qwen_docs_cache_dir": str(hub_cache.parent)},
    )
    try:
        app.build()
    finally:
        app.cleanup()
    return app, warnings.getvalue()


def test_models_named_keeps_known_ids_in_order() -> None:
    text = "Qwen/Qwen1.5-MoE-A2.7B-Chat then Qwen/Qwen2-7B-Instruct, Qwen/Unknown and Qwen/Qwen2-7B-Instruct again"
    assert models_named(text) == ["Qwen/Qwen1.5-MoE-A2.7B-Chat", "Qwen/Qwen2-7B-Instruct"]


def test_ids_without_recipe_are_found_with_their_line() -> None:
    text = ("Qwen/Qwen2-7B-Instruct is known.\nSee https://huggingface.co/collections/Qwen/qwen2-665 and\n"
            'load_model("Qwen/Qwen2-0.5B-Instruct") or Qwen/Qwen9-1B.\nQwen/Qwen2-0.5B-Instruct again.')
    assert ids_without_recipe(text) == {"Qwen/Qwen2-0.5B-Instruct": 3, "Qwen/Qwen9-1B": 3}  # full stop not in it
    assert models_named(text + " Qwen/Qwen2-7B.") == ["Qwen/Qwen2-7B-Instruct", "Qwen/Qwen2-7B"]


def test_a_model_id_without_recipe_is_a_warning_at_its_line(built: tuple[SphinxTestApp, str]) -> None:
    """Not transformers' "check your internet connection" from a cell that loads it offline."""
    _, warnings = built
    line = ROOT.joinpath("index.md").read_text().splitlines().index(
        "It also names `Qwen/Qwen9-1B`, which has no stand-in recipe, and links the") + 1
    assert (f"index.md:{line}: WARNING: Qwen/Qwen9-1B has no stand-in recipe: add its config.json and "
            "generation_config.json to src/qwen_docs_helpers/data/published_configs.json in a checkout of qwen-docs "
            "(see its README)") in warnings
    assert "qwen2-6659360b33528ced941e557f" not in warnings  # a collection's URL names no model
    # after a tab set whose cell is hoisted: still the line in the file
    after_tabs = len(ROOT.joinpath("failing.md").read_text().rstrip("\n").splitlines())
    assert f"failing.md:{after_tabs}: WARNING: Qwen/Qwen9-2B has no stand-in recipe" in warnings
    assert warnings.count("has no stand-in recipe") == 2


def test_stamp_sits_under_the_title_and_names_the_weights(built: tuple[SphinxTestApp, str]) -> None:
    app, _ = built
    doctree = app.env.get_doctree("index")
    section = next(iter(doctree.findall(nodes.section)))
    assert isinstance(section[0], nodes.title)
    stamp_cell = section[1]
    assert STAMP_TAG in stamp_cell["cell_metadata"]["tags"]
    text = stamp_cell.astext()
    assert "Executed on" in text and "Qwen/Qwen2-7B-Instruct" in text and "stand-in (random weights)" in text
    assert "random noise" in text
    html = (app.outdir / "index.html").read_text()
    assert html.index("qd-stamp") < html.index("This page talks about")
    assert "from qwen_docs_helpers.runtime import page_stamp" not in html  # input hidden
    # never cut by the output height cap, which other tall outputs get (nb_scroll_outputs)
    assert "config_scroll_outputs" not in stamp_cell["classes"]
    tall = [cell for cell in code_cells(app.env.get_doctree("expected")) if "line 39" in cell.astext()]
    assert len(tall) == 1 and "config_scroll_outputs" in tall[0]["classes"]


def test_errors_show_their_line_first_and_fold_the_frames(built: tuple[SphinxTestApp, str]) -> None:
    app, _ = built
    html = (app.outdir / "expected.html").read_text()
    line = html.index("qd-error-line")
    shown = _text(html[line:html.index("</pre>", line)])
    assert shown.strip().endswith(">KeyError: 'meant to fail'"), shown  # the whole block: that line
    folded = html.index('<details class="qd-traceback">', line)
    frames = _text(html[folded:html.index("</details>", folded)])
    assert "Full traceback" in frames and 'raise KeyError("meant to fail")' in frames
    assert html.count('<details class="qd-traceback">') == 1  # the skipped cell has no traceback to fold


def _text(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", "", html))


def test_a_cell_skipped_by_require_shows_a_note_not_a_failure(built: tuple[SphinxTestApp, str]) -> None:
    app, _ = built
    doctree = app.env.get_doctree("expected")
    notes = [node for node in doctree.findall(nodes.container) if NOT_RUN_CLASS in node["classes"]]
    assert len(notes) == 1
    assert notes[0].astext().startswith("Not run on this build: needs the surely_not_installed_package package")
    assert not list(notes[0].findall(nodes.literal_block))


def test_failed_cell_is_named_with_page_and_line(built: tuple[SphinxTestApp, str]) -> None:
    app, warnings = built
    source_line = ROOT.joinpath("failing.md").read_text().splitlines().index("```{code-cell} ipython3", 16) + 1
    matches = re.findall(r"failing\.md:(\d+): WARNING: code cell (\d+) raised ValueError: boom in a tab", warnings)
    assert matches, warnings
    assert matches == [(str(source_line), "2")]  # its fence; the page's 2nd cell (the added stamp cell not counted)
    # the page failed before its last cell, so it carries no stamp claiming it ran
    assert "Executed on" not in (app.outdir / "failing.html").read_text()


def test_expected_errors_are_not_reported(built: tuple[SphinxTestApp, str]) -> None:
    app, warnings = built
    assert "expected.md" not in warnings.replace("expected.md: WARNING: Executing notebook", "")
    assert "still runs" in (app.outdir / "expected.html").read_text()


def test_error_line_strips_colours() -> None:
    assert error_line("Traceback\n\x1b[31mValueError\x1b[39m: boom\n\n") == "ValueError: boom"
    assert error_line("") == "an error"


def test_timed_out_cell_is_named_with_page_and_line(built: tuple[SphinxTestApp, str]) -> None:
    _, warnings = built
    fence = ROOT.joinpath("slow.md").read_text().splitlines().index("import time") - 1
    # the page's own limit (its front matter), not the site's
    matches = re.findall(r"slow\.md:(\d+): WARNING: code cell \d+ timed out \(ran past \w+, 3 s", warnings)
    assert matches, warnings
    assert abs(int(matches[0]) - (fence + 1)) <= 2


def test_failed_hidden_check_is_named_with_page_and_line(built: tuple[SphinxTestApp, str]) -> None:
    _, warnings = built
    # its first line, "import math", is also the first line of the shown cell above it: the whole source is matched
    line = ROOT.joinpath("check.md").read_text().splitlines().index("# Check: arithmetic still works.") - 1
    assert re.search(
        rf"check\.md:{line}: WARNING: hidden cell raised AssertionError: total should be 3 \(a check on this",
        warnings,
    ), warnings


def test_a_message_of_several_lines_is_reported_by_its_first(built: tuple[SphinxTestApp, str]) -> None:
    _, warnings = built
    assert re.search(r"multiline\.md:10: WARNING: code cell 1 raised OSError: We couldn't connect to the hub … \(fix",
                     warnings), warnings


def test_outputs_are_left_out_of_the_search_index(built: tuple[SphinxTestApp, str]) -> None:
    app, _ = built
    assert "zanzibarquux" in (app.outdir / "expected.html").read_text()  # shown on the page
    index = (app.outdir / "searchindex.js").read_text()
    assert "quuxpros" in index and "zanzibarquux" not in index  # prose (stemmed) is in, the output is not
