"""A damaged execution cache is repaired before pages run: never used half-written, never a crash."""

from __future__ import annotations

import shutil
from io import StringIO
from pathlib import Path

from sphinx.testing.util import SphinxTestApp

from qwen_docs_helpers.sphinx.exec_cache import repair_cache

ROOT = Path(__file__).parent / "roots" / "sitebuild"


def build(srcdir: Path, cache: Path) -> tuple[str, str]:
    status, warnings = StringIO(), StringIO()
    app = SphinxTestApp(
        "html",
        srcdir=srcdir,
        status=status,
        warning=warnings,
        freshenv=True,
        confoverrides={"nb_execution_mode": "cache", "nb_execution_cache_path": str(cache)},
    )
    try:
        app.build()
    finally:
        app.cleanup()
    return status.getvalue(), warnings.getvalue()


def test_damaged_records_and_databases_are_repaired(tmp_path: Path) -> None:
    srcdir, cache = tmp_path / "src", tmp_path / "cache"
    shutil.copytree(ROOT, srcdir)
    status, warnings = build(srcdir, cache)
    assert "Executed notebook" in status and warnings == ""
    assert repair_cache(cache) == []  # a healthy cache is left alone

    # a record whose notebook file was cut short (a build killed mid-write)
    (notebook,) = cache.glob("executed/*/base.ipynb")
    notebook.write_text('{"cells": [')
    status, warnings = build(srcdir, cache)
    assert "dropped damaged cache record" in status and "Executed notebook" in status, status
    assert warnings == ""
    assert "version 1" in (srcdir / "_build" / "html" / "index.html").read_text()

    # a database that is no longer SQLite at all
    (cache / "global.db").write_bytes(b"not a database" * 100)
    status, warnings = build(srcdir, cache)
    assert "was unreadable" in status and "Executed notebook" in status, status
    assert warnings == ""
    assert list(tmp_path.glob("cache.damaged-*"))  # kept aside for inspection, not deleted
    status, _ = build(srcdir, cache)
    assert "Executed notebook" not in status  # the rebuilt cache serves the next build
