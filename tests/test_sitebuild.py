"""Publishing the site: a failed build never replaces the last good one; pages share a GPU one at a time."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from qwen_docs_helpers import sitebuild
from qwen_docs_helpers.sitebuild import (
    JOBS_VARIABLE,
    SettingError,
    build_site,
    cell_timeout,
    execution_mode,
    parallel_jobs,
    run_sphinx,
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


#: A page cell that records its kernel's and its child process's ids (as ``<kernel>-<child>`` in the folder that
#: ``QWEN_DOCS_TEST_PIDS`` names) and then runs until it is stopped, like the page that runs `transformers serve`.
_LONG_CELL = '''
import os, pathlib, subprocess, time
child = subprocess.Popen(["sleep", "600"])
pathlib.Path(os.environ["QWEN_DOCS_TEST_PIDS"], f"{os.getpid()}-{child.pid}").touch()
try:
    time.sleep(600)
finally:
    child.terminate()
'''


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead and waiting for its parent to collect it, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _stop_like_kill(build_process: subprocess.Popen[str]) -> None:
    """``kill <pid>``: SIGTERM to the wrapper alone."""
    build_process.send_signal(signal.SIGTERM)


def _stop_like_nox_on_ctrl_c(build_process: subprocess.Popen[str]) -> None:
    """Ctrl+C in the terminal of ``nox -s docs``: SIGINT to the terminal's process group (nox and the wrapper),
    then nox's own shutdown of the wrapper (nox/popen.py): SIGTERM after 0.3 s, SIGKILL after 0.2 s more."""
    os.killpg(build_process.pid, signal.SIGINT)
    for then, signum in ((0.3, signal.SIGTERM), (0.2, signal.SIGKILL)):
        try:
            build_process.wait(timeout=then)
            return
        except subprocess.TimeoutExpired:
            build_process.send_signal(signum)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc (Linux)")
@pytest.mark.parametrize(("stop", "exit_status", "message"), [
    (_stop_like_kill, 128 + signal.SIGTERM,
     "docs build stopped by SIGTERM, which any Sphinx crash report above is about (exit 143); nothing was published"),
    (_stop_like_nox_on_ctrl_c, -signal.SIGKILL, "docs build: SIGINT received, stopping Sphinx"),
], ids=["kill", "nox-ctrl-c"])
def test_a_stopped_build_stops_every_page_run_and_what_the_cells_started(
        tmp_path: Path, stop: Callable[[subprocess.Popen[str]], None], exit_status: int, message: str) -> None:
    """Sphinx, its page workers, their kernels and the processes that cells started all end, instead of running on
    without the wrapper (with nox, after it: Sphinx cleans up on its own)."""
    source, build, pids = tmp_path / "src", tmp_path / "build", tmp_path / "pids"
    shutil.copytree(ROOT, source)
    pids.mkdir()
    index = source / "index.md"
    index.write_text(index.read_text() + "\n```{toctree}\nslow-1\nslow-2\n```\n")
    for name in ("slow-1", "slow-2"):  # two pages: with two jobs, each runs in a worker process of its own
        (source / f"{name}.md").write_text(index.read_text().split("# Site")[0]
                                           + f"# {name}\n\n```{{code-cell}} ipython3\n{_LONG_CELL}```\n")
    env = {**os.environ, "QWEN_DOCS_TEST_PIDS": str(pids), JOBS_VARIABLE: "2"}
    build_process = subprocess.Popen([sys.executable, "-m", "qwen_docs_helpers.sitebuild", str(source), str(build)],
                                     env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(list(pids.iterdir())) < 2:
            assert build_process.poll() is None, build_process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the two cells did not start in 120 s"
            time.sleep(0.2)
        started = [int(pid) for entry in pids.iterdir() for pid in entry.name.split("-")]
        stop(build_process)
        build_process.wait(timeout=60)
    finally:
        if build_process.poll() is None:
            build_process.kill()
    deadline = time.monotonic() + 30
    while any(_running(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in started if _running(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"still running 30 s after the build stopped: {left} of kernels and cell children {started}"
    assert build_process.returncode == exit_status
    assert build_process.stderr is not None and message in build_process.stderr.read()
    assert not (build / "html").exists()


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_more_stop_signals_are_the_same_stop_at_first_and_then_kill(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child that ignores SIGINT: a SIGTERM soon after the first (as nox sends) leaves it running; one after
    ``SAME_STOP_S`` kills it."""
    monkeypatch.setattr(sitebuild, "SAME_STOP_S", 2.0)
    ignores_interrupts = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(60)"
    for delay in (1.0, 1.3, 3.5):  # the child has started and ignores SIGINT by the first
        threading.Timer(delay, os.kill, (os.getpid(), signal.SIGTERM)).start()
    started = time.monotonic()
    status, stopped_by = run_sphinx([sys.executable, "-c", ignores_interrupts])
    assert (status, stopped_by) == (-signal.SIGKILL, signal.SIGTERM)
    assert 3.5 <= time.monotonic() - started < 30  # not killed by the second signal
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the wrapper's handlers are gone again
