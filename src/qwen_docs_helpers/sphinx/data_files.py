"""Files of the source folder that a page's code reads, and which of them the page offers for download.

A cell runs with the page's folder as its working directory, so ``Path("data/sample.json")`` works on the
build. A reader who downloads the page's script or notebook has only that file, so the downloads name every
such file and where to save it, and a file the page does not offer (no ``{download}`` link) fails the build:
the downloads would fail where the page did not. The code is searched for string literals that name an
existing file, relative to the page's folder; paths built at run time are not seen.
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Iterable
from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.environment import BuildEnvironment

from .cell_code import without_magics


def _string_literals(code: str) -> Iterable[str]:
    """The plain (not f-) string constants of some Python code, as far as it tokenizes."""
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            if token.type == tokenize.STRING:
                try:
                    value = ast.literal_eval(token.string)
                except (ValueError, SyntaxError):  # an f-string before Python 3.12 tokenizes as one STRING
                    continue
                if isinstance(value, str):
                    yield value
    except (tokenize.TokenError, SyntaxError):
        return


def files_named(code: str, folder: Path, root: Path) -> dict[str, Path]:
    """Existing files under ``root`` that string literals in ``code`` name relative to ``folder``: the path as
    written (``/``-separated) -> the file, resolved; in the order the code names them."""
    found: dict[str, Path] = {}
    for text in _string_literals(without_magics(code)):
        if not text.strip() or "\n" in text or len(text) > 255 or Path(text).is_absolute():
            continue
        path = (folder / text).resolve()
        if path.is_file() and path.is_relative_to(root.resolve()):
            found.setdefault(Path(text).as_posix(), path)
    return found


def offered_files(document: nodes.document, env: BuildEnvironment) -> set[Path]:
    """The files the page's own text links with ``{download}`` (resolved), before any link added by this build."""
    offered = set()
    for reference in document.findall(addnodes.download_reference):
        _, path = env.relfn2path(reference["reftarget"], env.docname)
        offered.add(Path(path).resolve())
    return offered
