"""Publishing the site: a failed build never replaces the last good one."""

from __future__ import annotations

import shutil
from pathlib import Path

from qwen_docs_helpers.sitebuild import build_site

ROOT = Path(__file__).parent / "sphinx" / "roots" / "sitebuild"


def test_failed_build_keeps_the_previous_site(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    source, build = tmp_path / "src", tmp_path / "build"
    shutil.copytree(ROOT, source)
    assert build_site(source, build) == 0
    index = build / "html" / "index.html"
    assert "version 1" in index.read_text()
    good = index.read_text()

    page = source / "index.md"
    page.write_text(
        page.read_text().replace('print("version", 1)', 'print("version", 2)\nraise RuntimeError("broken")')
    )
    assert build_site(source, build) != 0
    assert index.read_text() == good  # the published site is still the last good one
    assert "version 2" in (build / "html.failed" / "index.html").read_text()
    assert not (build / "html.staging").exists()
    assert "the previous site in" in capsys.readouterr().err

    page.write_text(page.read_text().replace('raise RuntimeError("broken")', ""))
    assert build_site(source, build) == 0
    assert "version 2" in index.read_text()
    assert not (build / "html.failed").exists()
