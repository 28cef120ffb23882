"""A damaged execution cache is repaired before pages run: never used half-written, never a crash."""

from __future__ import annotations

import shutil
from io import StringIO
from pathlib import Path

import pytest
from sphinx.testing.util import SphinxTestApp

from qwen_docs_helpers.sphinx import site
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


def test_runtime_key_changes_with_the_helpers_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outputs cached before a change to qwen_docs_helpers (which the cells run) are not reused after it."""
    package = tmp_path / "qwen_docs_helpers"
    (package / "sphinx").mkdir(parents=True)
    (package / "chat.py").write_text("A = 1\n")
    (package / "sphinx" / "site.py").write_text("")
    monkeypatch.setattr(site, "__file__", str(package / "sphinx" / "site.py"))
    first = site.runtime_key("w=standin")
    assert site.runtime_key("w=standin") == first  # stable
    (package / "chat.py").write_text("A = 2\n")
    second = site.runtime_key("w=standin")
    assert second != first and second.startswith("cpu-")
    assert site.runtime_key("w=real") != second  # the weights are part of the key too
