"""A cell's stream outputs merged as a terminal shows them: chunks joined as written, not one per line.

With ``nb_merge_streams`` myst-nb 1.4 strips every chunk of a stream and ends it with a newline (since MyST-NB
#604; MyST-NB #690 is open about it), so ``TextStreamer``, which prints a few tokens at a time with ``end=""``,
rendered one word per line. Here the chunks of each stream are first joined exactly as written (as nbclient's
own ``coalesce_streams`` does), then myst-nb's merge runs on one chunk per stream, keeping the rest of what it
does (carriage returns and backspaces applied, stdout before stderr). The notebook's outputs are not modified.
"""

from __future__ import annotations

import copy
from typing import Any

from nbformat import NotebookNode
from sphinx.application import Sphinx


def join_stream_chunks(outputs: list[NotebookNode]) -> list[NotebookNode]:
    """One output per stream name, at the place of its first chunk, holding every chunk's text in order."""
    joined: list[NotebookNode] = []
    streams: dict[str, NotebookNode] = {}
    for output in outputs:
        if output.get("output_type") == "stream":
            name = output["name"]
            if name in streams:
                streams[name]["text"] += output["text"]
                continue
            output = streams[name] = copy.deepcopy(output)
        joined.append(output)
    return joined


def merge_streams(outputs: list[NotebookNode]) -> list[NotebookNode]:
    """myst-nb's ``coalesce_streams`` on the joined chunks (what ``nb_merge_streams = True`` then renders)."""
    from myst_nb.core.utils import coalesce_streams

    merged: list[NotebookNode] = coalesce_streams(join_stream_chunks(outputs))
    return merged


def setup(app: Sphinx) -> dict[str, Any]:
    # myst-nb's renderer calls the coalesce_streams its module imported; it has no setting or hook for this.
    from myst_nb.core import render

    render.coalesce_streams = merge_streams
    return {"parallel_read_safe": True, "parallel_write_safe": True}
