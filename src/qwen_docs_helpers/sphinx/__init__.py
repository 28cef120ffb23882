"""Sphinx extension of qwen-docs: ``extensions = [..., "qwen_docs_helpers.sphinx"]``.

- ``site``: every model id resolves offline (real weights linked, else stand-ins) before pages run;
- ``exec_cache``: a damaged execution cache is repaired before pages run;
- ``nested_cells``: code-cells inside tabs and dropdowns are executed and rendered in place;
- ``stamp``: each executed page says what it ran on;
- ``kernel_sockets``: kernels talk to the build over Unix sockets of their own, not TCP ports that two could want;
- ``dead_kernel``: a kernel that dies while a page runs, or twice as it starts, fails that page, not the build;
- ``stderr``: a cell that writes to stderr fails the build, at the cell's own line;
- ``streams``: text a cell prints in pieces (``TextStreamer``) renders joined, as a terminal shows it;
- ``reader_paths``: every way of reading a page (one tab per sync group, dropdowns skipped) has run the code
  each shown cell needs; a cell says ``continues: <sync key>`` where it builds on one tab's code;
- ``cells``: which doctree nodes are code cells, and their tags (shared by the transforms);
- ``cell_code``: whether a page shows a cell's code, and the names it binds and reads (shared);
- ``cell_errors``: a failed cell (or one whose kernel died) is reported with its page and line;
- ``downloads``: each executed page offers its notebook and its Python;
- ``hf_docstrings``: transformers' Markdown docstrings render as valid reST in the API reference;
- ``error_outputs``: error outputs show their ``Name: message`` line first (myst-nb renderer ``qwen_docs``, the
  default here; it also gives pages whose cells were hoisted the file's lines);
- ``search``: cell outputs (random text, with stand-ins) stay out of the search index.
"""

from __future__ import annotations

from typing import Any

from ..errors import missing_docs_extra

try:
    from sphinx.application import Sphinx

    from . import (
        cell_errors,
        dead_kernel,
        downloads,
        error_outputs,
        exec_cache,
        hf_docstrings,
        kernel_sockets,
        nested_cells,
        reader_paths,
        search,
        site,
        stamp,
        stderr,
        streams,
    )
except ModuleNotFoundError as error:  # one line that says which extra to install, not a bare import error
    extra = missing_docs_extra(__name__, error)
    if extra is None:
        raise
    raise extra from error


def setup(app: Sphinx) -> dict[str, Any]:
    modules = (site, exec_cache, nested_cells, reader_paths, stamp, downloads, kernel_sockets, dead_kernel,
               cell_errors, hf_docstrings, streams, stderr, search, error_outputs)
    for module in modules:
        module.setup(app)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
