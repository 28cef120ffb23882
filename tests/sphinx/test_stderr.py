"""A cell that writes to stderr fails the build at its own line, also below tabs holding nested cells."""

from __future__ import annotations

import re
import shutil
from io import StringIO
from pathlib import Path

from docutils import nodes
from sphinx.testing.util import SphinxTestApp

ROOTS = Path(__file__).parent / "roots"


def test_stderr_warns_once_at_the_cells_line(tmp_path: Path) -> None:
    srcdir = tmp_path / "stderr"
    shutil.copytree(ROOTS / "stderr", srcdir)
    warnings = StringIO()
    app = SphinxTestApp("html", srcdir=srcdir, status=StringIO(), warning=warnings)
    try:
        app.build()
        doctree = app.env.get_doctree("index")
    finally:
        app.cleanup()
    found = re.findall(r"index\.md:(\d+): WARNING: the cell wrote to stderr \('([^']*)'\)", warnings.getvalue())
    lines = (srcdir / "index.md").read_text().splitlines()
    noisy = next(i for i, line in enumerate(lines, start=1) if "noise" in line)
    fence = max(i for i in range(1, noisy) if lines[i - 1].startswith("```{code-cell}"))
    assert found == [(str(fence), "noise")], warnings.getvalue()  # not the cells shown or dropped on purpose
    shown = [node.astext().strip() for node in doctree.findall(nodes.literal_block) if "stderr" in node["classes"]]
    assert shown == ["noise", "shown on purpose"]  # rendered (the build fails on the first); the tagged one dropped
