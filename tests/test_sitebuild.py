"""Publishing the site: a failed build never replaces the last good one; pages share a GPU one at a time."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from qwen_docs_helpers.sitebuild import (
    JOBS_VARIABLE,
    SettingError,
    build_site,
    cell_timeout,
    execution_mode,
    parallel_jobs,
    settings_problems,
)

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


BAD_SETTINGS = [
    ("QWEN_DOCS_WEIGHTS", "bogus", "QWEN_DOCS_WEIGHTS='bogus' is not one of auto, real, standin: unset it"),
    ("QWEN_DOCS_EXECUTION", "bogus", "QWEN_DOCS_EXECUTION='bogus' is not one of cache, force, auto, off, inline"),
    ("QWEN_DOCS_CELL_TIMEOUT", "5s", "QWEN_DOCS_CELL_TIMEOUT='5s' is not a positive whole number of seconds"),
    ("QWEN_DOCS_CELL_TIMEOUT", "0", "QWEN_DOCS_CELL_TIMEOUT='0' is not a positive whole number of seconds"),
    ("QWEN_DOCS_CELL_TIMEOUT", "\u00b2", "QWEN_DOCS_CELL_TIMEOUT='\u00b2' is not a positive whole number"),  # isdigit()
    (JOBS_VARIABLE, "x", f"{JOBS_VARIABLE}='x' is neither a positive number nor 'auto'"),
]


@pytest.fixture
def clean_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, *_ in BAD_SETTINGS:
        monkeypatch.delenv(variable, raising=False)


@pytest.mark.usefixtures("clean_settings")
@pytest.mark.parametrize(("variable", "value", "message"), BAD_SETTINGS)
def test_a_bad_setting_stops_the_build_in_one_line_before_sphinx_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    variable: str, value: str, message: str,
) -> None:
    """Not a Sphinx crash report, and an earlier failed build is not thrown away."""
    monkeypatch.setenv(variable, value)
    (problem,) = settings_problems()
    assert problem.startswith(message) and "\n" not in problem
    build = tmp_path / "build"
    (build / "html.failed").mkdir(parents=True)
    (build / "html.failed" / "index.html").write_text("earlier")
    ran = []
    monkeypatch.setattr("subprocess.run", lambda *args, **kwargs: ran.append(args))
    assert build_site(ROOT, build) == 2
    assert ran == []  # Sphinx never started
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"docs build not started: {message}")
    assert (build / "html.failed" / "index.html").read_text() == "earlier"


@pytest.mark.usefixtures("clean_settings")
def test_settings_defaults_and_spellings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (execution_mode(), cell_timeout(), settings_problems()) == ("cache", 300, [])
    monkeypatch.setenv("QWEN_DOCS_EXECUTION", " Force ")
    monkeypatch.setenv("QWEN_DOCS_CELL_TIMEOUT", " 600 ")
    monkeypatch.setenv("QWEN_DOCS_WEIGHTS", "")  # empty: unset
    assert (execution_mode(), cell_timeout(), settings_problems()) == ("force", 600, [])


@pytest.mark.usefixtures("clean_settings")
def test_conf_py_reports_a_bad_setting_as_a_sphinx_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/conf.py reads the same variables for a plain sphinx-build: the same line, as a ConfigError."""
    from sphinx.errors import ConfigError

    monkeypatch.setenv("QWEN_DOCS_CELL_TIMEOUT", "5s")
    assert issubclass(SettingError, ConfigError)
    conf = Path(__file__).resolve().parents[1] / "docs" / "conf.py"
    with pytest.raises(ConfigError, match=r"^QWEN_DOCS_CELL_TIMEOUT='5s' is not a positive whole number"):
        exec(compile(conf.read_text(), str(conf), "exec"), {"__file__": str(conf)})


@pytest.mark.usefixtures("clean_settings")
def test_a_build_that_stops_before_writing_keeps_the_earlier_failed_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The message names html.failed only when this build left something there."""
    source, build = tmp_path / "src", tmp_path / "build"
    shutil.copytree(ROOT, source)
    (source / "conf.py").write_text((source / "conf.py").read_text() + "\nraise RuntimeError('conf.py is broken')\n")
    (build / "html.failed").mkdir(parents=True)
    (build / "html.failed" / "index.html").write_text("earlier")
    assert build_site(source, build) != 0
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "html.failed" not in message and "Sphinx stopped before writing any page" in message
    assert (build / "html.failed" / "index.html").read_text() == "earlier"
    assert not (build / "html.staging").exists()


@pytest.mark.parametrize("module", ["qwen_docs_helpers.sphinx", "qwen_docs_helpers.sitebuild"])
def test_without_sphinx_the_import_error_names_the_extra(module: str) -> None:
    import subprocess
    import sys

    code = f"import sys; sys.modules['sphinx'] = None\nimport {module}"  # as if Sphinx were not installed
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and last == (
        f"qwen_docs_helpers.errors.MissingExtraError: {module} needs sphinx, which is not installed: "
        "pip install 'qwen-docs-helpers[docs]' (the site's Sphinx tooling)")
