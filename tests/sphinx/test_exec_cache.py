"""A damaged execution cache is repaired before pages run: never used half-written, never a crash."""

from __future__ import annotations

import shutil
from io import StringIO
from pathlib import Path

import pytest
from sphinx.testing.util import SphinxTestApp

from qwen_docs_helpers import runtime
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


def test_runtime_key_changes_with_the_helpers_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   accelerator: str) -> None:
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
    assert second != first and second.startswith(f"{accelerator}-")
    assert site.runtime_key("w=real") != second  # the weights are part of the key too
    (package / "data").mkdir()
    (package / "data" / "standin_words.txt").write_text("water\n")
    third = site.runtime_key("w=standin")
    assert third != second  # data the stand-ins are made from, not only code
    (package / "data" / "standin_words.txt").write_text("river\n")
    fourth = site.runtime_key("w=standin")
    assert fourth != third
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "chat.cpython-311.pyc").write_bytes(b"\0")
    assert site.runtime_key("w=standin") == fourth  # Python's bytecode, written by any import, is not a change


@pytest.mark.parametrize("name", ["python", *runtime._VERSIONED])
def test_every_version_the_stamp_prints_is_part_of_the_key(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """After an upgrade of anything the stamp names (accelerate, bitsandbytes, Python...), cached pages would show
    a stamp with the old version: they run again instead."""
    before_key, before_stamp = site.runtime_key("w"), runtime.describe_runtime(()).as_markdown()
    if name == "python":
        monkeypatch.setattr(runtime.platform, "python_version", lambda: "3.99.0")
    else:
        real_version = runtime._version
        monkeypatch.setattr(runtime, "_version", lambda dist: "99.0" if dist == name else real_version(dist))
    after_stamp = runtime.describe_runtime(()).as_markdown()
    assert after_stamp != before_stamp and "99.0" in after_stamp  # the stamp does print it
    assert site.runtime_key("w") != before_key


def test_data_files_the_pages_read_are_part_of_the_key(tmp_path: Path) -> None:
    """New benchmark results (a file a cell reads, with unchanged code) must re-execute the pages."""
    docs, results = tmp_path / "docs", tmp_path / "results"
    (docs / "data" / "sub").mkdir(parents=True)
    results.mkdir()
    (docs / "data" / "sub" / "sample.json").write_text("{}")
    patterns = ["data/**/*", str(results / "*.json")]  # relative to the docs folder, or absolute
    empty = site.data_digest(docs, patterns)
    (results / "h100.json").write_text('{"rows": []}')
    with_results = site.data_digest(docs, patterns)
    assert with_results != empty and site.data_digest(docs, patterns) == with_results
    (results / "h100.json").write_text('{"rows": [1]}')
    assert site.data_digest(docs, patterns) != with_results
    (docs / "data" / "sub" / "sample.json").write_text('{"a": 1}')  # found recursively
    changed = site.data_digest(docs, patterns)
    (results / "notes.txt").write_text("not matched")
    assert site.data_digest(docs, patterns) == changed
    assert site.runtime_key("w", data=changed) != site.runtime_key("w", data=empty)


def _open_cache(path: Path) -> str:
    from jupyter_cache import get_cache

    try:
        get_cache(path).list_cache_records()
    except Exception as error:
        return type(error).__name__
    return "ok"


def test_a_new_cache_is_created_before_parallel_readers_open_it(tmp_path: Path) -> None:
    """Two -j readers opening a cache that does not exist yet race on CREATE TABLE ("table settings already exists",
    about 1 in 5 here); check_cache creates it first, in the main process."""
    import multiprocessing
    from types import SimpleNamespace

    from qwen_docs_helpers.sphinx.exec_cache import check_cache

    paths = [tmp_path / f"run{index}" / "cpu-key" for index in range(10)]
    for path in paths:
        check_cache(None, SimpleNamespace(nb_execution_mode="cache", nb_execution_cache_path=str(path)))  # type: ignore[arg-type]
        assert (path / "global.db").is_file()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        outcomes = pool.map(_open_cache, [path for path in paths for _ in range(2)])
    assert outcomes == ["ok"] * 20


def test_kernels_get_a_private_quiet_ipython_directory(tmp_path: Path) -> None:
    """The maintainer's IPython startup files must not run in the pages; ipykernel's TCP notice stays out."""
    folder = site.kernel_profile(tmp_path / "ipython")
    config = folder / "profile_default" / "ipython_kernel_config.py"
    assert 'c.IPKernelApp.log_level = "ERROR"' in config.read_text()
    config.write_text("c.IPKernelApp.log_level = 'DEBUG'\n")  # rewritten on the next build
    site.kernel_profile(tmp_path / "ipython")
    assert config.read_text() == site.KERNEL_CONFIG


def test_old_runtimes_caches_are_removed_beyond_the_ones_used_last(tmp_path: Path) -> None:
    import os

    parent = tmp_path / ".jupyter_cache"
    names = [f"cpu-{index:012x}" for index in range(12)]
    for age, name in enumerate(names):  # names[0] used last
        (parent / name).mkdir(parents=True)
        os.utime(parent / name, (1e9 - age * 3600,) * 2)
    (parent / "cpu-000000000000.damaged-20260101-000000").mkdir()  # kept aside on purpose: never deleted
    (parent / "notes").mkdir()
    current = parent / "cuda-ffffffffffff"  # this build's, new

    removed = site.prune_runtime_caches(current, keep=8)
    assert sorted(path.name for path in removed) == sorted(names[7:])
    left = {path.name for path in parent.iterdir()}
    assert left == {*names[:7], current.name, "cpu-000000000000.damaged-20260101-000000", "notes"}
    # a cache used again is the newest, whatever its age
    site.prune_runtime_caches(parent / names[6], keep=2)
    assert {path.name for path in parent.iterdir() if path.name.startswith(("cpu-", "cuda-"))} == {
        names[6], current.name, "cpu-000000000000.damaged-20260101-000000"}
