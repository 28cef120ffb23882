"""Stream outputs render as a terminal shows them: chunks printed with ``end=""`` stay on one line.

The first test merges NotebookNodes directly; the second builds ``roots/streams`` with a real kernel, where
each ``flush=True`` print arrives as its own stream output, as ``TextStreamer``'s do.
"""

from __future__ import annotations

import shutil
from io import StringIO
from pathlib import Path

from docutils import nodes
from nbformat import from_dict
from sphinx.testing.util import SphinxTestApp

from qwen_docs_helpers.sphinx.streams import join_stream_chunks, merge_streams

ROOTS = Path(__file__).parent / "roots"


def stream(name: str, text: str) -> dict:
    return from_dict({"output_type": "stream", "name": name, "text": text})


def test_chunks_join_as_written_and_the_notebook_is_not_modified() -> None:
    outputs = [stream("stdout", "Large "), stream("stdout", "language "), stream("stderr", "warn\n"),
               stream("stdout", "models\n"), stream("stdout", "  indented")]
    before = [dict(output) for output in outputs]
    assert [o["text"] for o in join_stream_chunks(outputs)] == ["Large language models\n  indented", "warn\n"]
    merged = merge_streams(outputs)
    assert [(o["name"], o["text"]) for o in merged] == [("stdout", "Large language models\n  indented\n"),
                                                        ("stderr", "warn\n")]
    assert [dict(output) for output in outputs] == before
    # carriage returns still overwrite, as in a terminal (myst-nb's processing, kept)
    progress = merge_streams([stream("stdout", "\r10%"), stream("stdout", "\r100%"), stream("stdout", " done\n")])
    assert progress[0]["text"] == "100% done\n"
    display = from_dict({"output_type": "display_data", "data": {"text/plain": "x"}, "metadata": {}})
    assert merge_streams([display, stream("stdout", "a")])[0] is display


def test_built_page_shows_streamed_text_joined(tmp_path: Path) -> None:
    srcdir = tmp_path / "streams"
    shutil.copytree(ROOTS / "streams", srcdir)
    app = SphinxTestApp("html", srcdir=srcdir, status=StringIO(), warning=StringIO())
    try:
        app.build()
        doctree = app.env.get_doctree("index")
    finally:
        app.cleanup()
    blocks = [node for node in doctree.findall(nodes.literal_block) if "output" in node["classes"]]
    outputs = [node.astext().rstrip("\n") for node in blocks]
    assert outputs == ["Large language models (LLMs)\nare  big.", "100% done\nafter", "to stderr"]
