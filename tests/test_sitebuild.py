"""Publishing the site: a failed build never replaces the last good one; pages share a GPU one at a time."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from qwen_docs_helpers.sitebuild import JOBS_VARIABLE, build_site, parallel_jobs

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


def test_a_warning_fails_every_build_until_it_is_fixed(tmp_path: Path) -> None:
    """Sphinx saves its environment even when a build fails; the page must not pass as up to date next time."""
    source, build = tmp_path / "src", tmp_path / "build"
    shutil.copytree(ROOT, source)
    page = source / "index.md"
    page.write_text(page.read_text() + "\n```{no-such-directive}\n```\n")  # warned while reading, not a cell error
    assert build_site(source, build) != 0
    assert build_site(source, build) != 0  # unchanged: still failing, not published
    assert not (build / "html").exists()


def test_a_removed_page_leaves_the_site(tmp_path: Path) -> None:
    source, build = tmp_path / "src", tmp_path / "build"
    shutil.copytree(ROOT, source)
    (source / "other.md").write_text("---\norphan: true\n---\n# Other\n")
    assert build_site(source, build) == 0
    assert (build / "html" / "other.html").is_file()
    (source / "other.md").unlink()
    assert build_site(source, build) == 0
    assert not (build / "html" / "other.html").exists()
    assert "version 1" in (build / "html" / "index.html").read_text()  # unchanged pages are still written


def test_pages_execute_one_at_a_time_where_cuda_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """On one GPU, pages side by side would each hold their (real, 15 GB) models in its memory."""
    monkeypatch.delenv(JOBS_VARIABLE, raising=False)
    assert parallel_jobs(cuda_available=True) == "1"
    assert parallel_jobs(cuda_available=False) == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert parallel_jobs() == "1"  # asks torch when not told


@pytest.mark.parametrize("value", ["2", "auto", " AUTO "])
def test_jobs_variable_overrides(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(JOBS_VARIABLE, value)
    assert parallel_jobs(cuda_available=True) == value.strip().lower()


@pytest.mark.parametrize("value", ["0", "-1", "many", "1.5"])
def test_bad_jobs_variable_is_one_line_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(JOBS_VARIABLE, value)
    with pytest.raises(SystemExit, match=f"^{JOBS_VARIABLE}=.* is neither a positive number nor 'auto'"):
        parallel_jobs(cuda_available=False)
