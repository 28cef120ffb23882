"""A kernel that dies while a page runs fails that page, named at its cell, and never the whole build."""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import nbclient.exceptions
import nbformat
import pytest
from docutils import nodes
from jupyter_cache import get_cache
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from sphinx.application import Sphinx
from sphinx.cmd.build import build_main
from sphinx.testing.util import SphinxTestApp

from qwen_docs_helpers.sphinx import dead_kernel

ROOT = Path(__file__).parent / "roots" / "dead-kernel"
DIED = "the kernel died while it ran (out of memory? a crash in native code?): run it outside Sphinx"
#: What the kernel of dies-at-start.md writes to its stderr as it dies.
NO_IPYKERNEL = f"{sys.executable}: No module named no_such_ipykernel_launcher"
NOT_STARTED = (
    f"{dead_kernel.BEFORE_ANY_CELL}: check that kernel 'dies-at-start' starts (it exited or stopped answering at each "
    f"of its 2 starts; the last time, it printed {NO_IPYKERNEL!r}, at the end of its output above)"
)
STARTED_AGAIN = (f"kernel {{!r}} failed as it started ({dead_kernel.STARTUP_DEATH}; start 1 of 2; it printed: {{}}); "
                 "starting it again")
#: How code cell 1 of crashes.md is reported: the kernel's faulthandler reported the segfault.
CRASHED = (
    "the kernel died while it ran and printed 'Fatal Python error: Segmentation fault': the Python stack of the "
    "call that crashed follows that line in the build's output above"
)
#: What the kernel of dies-once.md writes to its stderr as it dies.
PORT_TAKEN = "zmq.error.ZMQError: Address already in use (addr='tcp://127.0.0.1:5555')"


def _fails_once(first_start: str) -> str:
    """A kernel's script: its first process runs ``first_start`` and leaves the marker file named by its first
    argument, so that every later one starts ipykernel."""
    return f"""
import sys, time
from pathlib import Path
marker, connection_file = sys.argv[1:]
if not Path(marker).exists():
    Path(marker).touch()
    {first_start}
from ipykernel import kernelapp
kernelapp.launch_new_instance(["-f", connection_file])
"""


#: The kernel of dies-once.md: its first process exits at once, as when a TCP port it was given is taken.
DIES_ONCE = _fails_once(
    f'print("Traceback (most recent call last):", "  ...", {PORT_TAKEN!r}, sep="\\n", file=sys.stderr); sys.exit(1)'
)
#: A kernel whose first process hangs (as one did in CI after it failed to bind a port another process had taken)
#: until nbclient gives up on it.
HANGS_ONCE = _fails_once("time.sleep(600)")


def _kernel(jupyter_path: Path, name: str, argv: list[str]) -> None:
    spec = jupyter_path / "kernels" / name / "kernel.json"
    spec.parent.mkdir(parents=True)
    spec.write_text(json.dumps({"argv": argv, "display_name": name, "language": "python"}))


@pytest.fixture(scope="module", autouse=True)
def kernels_that_die_at_start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The kernels of dies-at-start.md (its process always exits at once, as when its Python has no
    ipykernel) and of dies-once.md."""
    jupyter_path = tmp_path_factory.mktemp("jupyter")
    no_ipykernel = [sys.executable, "-m", "no_such_ipykernel_launcher", "-f", "{connection_file}"]
    _kernel(jupyter_path, "dies-at-start", no_ipykernel)
    marker = jupyter_path / "dies-once.started"
    _kernel(jupyter_path, "dies-once", [sys.executable, "-c", DIES_ONCE, str(marker), "{connection_file}"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", str(jupyter_path))  # read by each kernel manager, forked builds included
        yield


def build(srcdir: Path, cache: Path, **kwargs: object) -> tuple[SphinxTestApp, str, str]:
    status, warnings = StringIO(), StringIO()
    overrides = {"nb_execution_cache_path": str(cache)}
    app = SphinxTestApp("html", srcdir=srcdir, status=status, warning=warnings, confoverrides=overrides, **kwargs)
    try:
        app.build()  # a crash report would be an exception here
    finally:
        app.cleanup()
    return app, status.getvalue(), warnings.getvalue()


def cell_span(page: Path, first_line: str) -> range:
    """The source lines of the cell holding ``first_line``, from its opening fence to its closing one."""
    lines = page.read_text().splitlines()
    fence = max(n for n, line in enumerate(lines[: lines.index(first_line)]) if line.startswith("```"))
    close = next(n for n in range(lines.index(first_line), len(lines)) if lines[n] == "```")
    return range(fence + 1, close + 2)  # 1-based


@pytest.fixture(scope="module")
def first_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[SphinxTestApp, str, str, Path]:
    tmp = tmp_path_factory.mktemp("dead-kernel")
    srcdir, cache = tmp / "src", tmp / "cache"
    shutil.copytree(ROOT, srcdir)
    return (*build(srcdir, cache), cache)


def test_the_cell_that_was_running_is_named(first_build: tuple[SphinxTestApp, str, str, Path]) -> None:
    app, _, warnings, _ = first_build
    matches = re.findall(rf"dies\.md:(\d+): WARNING: code cell 2: {re.escape(DIED)}", warnings)
    assert len(matches) == 1, warnings
    assert int(matches[0]) in cell_span(ROOT / "dies.md", "os._exit(1)")
    assert "Executing notebook failed: DeadKernelError" in warnings
    # the other pages executed as usual: the healthy one fully, the hidden one up to its death
    assert "healthy page ran" in (app.outdir / "index.html").read_text()
    assert "index.md" not in warnings


def test_a_crash_in_native_code_is_quoted_by_faulthandlers_report(
    first_build: tuple[SphinxTestApp, str, str, Path],
) -> None:
    app, _, warnings, _ = first_build
    matches = re.findall(rf"crashes\.md:(\d+): WARNING: code cell 1: {re.escape(CRASHED)}", warnings)
    assert len(matches) == 1, warnings
    crash = "ctypes.string_at(0)  # reads memory at address 0: a segmentation fault"
    assert int(matches[0]) in cell_span(ROOT / "crashes.md", crash)
    cell = next(node for node in app.env.get_doctree("crashes").findall(nodes.container)
                if node.get("nb_element") == "cell_code")
    said = f"{dead_kernel.EVALUE}{dead_kernel.PRINTED}Fatal Python error: Segmentation fault"
    assert said in cell.astext()


def test_the_stack_of_the_crash_reaches_the_builds_output(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    srcdir = tmp_path / "src"
    srcdir.mkdir()
    for name in ("conf.py", "index.md", "crashes.md"):
        shutil.copy(ROOT / name, srcdir)
    build(srcdir, tmp_path / "cache")
    output = capfd.readouterr().err
    report = output[output.index("Fatal Python error: Segmentation fault") :]
    assert re.search(r'File "[^"]*ipykernel[^"]*", line 3 in <module>', report), report  # the cell's own line
    assert "in string_at" in report
    assert "Thread 0x" not in report  # only the thread that crashed, not ipykernel's


def test_faulthandler_is_on_in_a_healthy_kernel_and_leaves_no_names(
    first_build: tuple[SphinxTestApp, str, str, Path],
) -> None:
    app, _, _, _ = first_build
    assert "faulthandler on: True ; names left behind: []" in (app.outdir / "index.html").read_text()


def test_only_an_ipykernel_spec_is_given_ipykernels_options() -> None:
    def client(name: str, notebook_names: str | None = None) -> SimpleNamespace:
        metadata = {"kernelspec": {"name": notebook_names}} if notebook_names else {}
        return SimpleNamespace(kernel_name=name, nb=SimpleNamespace(metadata=metadata))

    assert dead_kernel.runs_ipykernel(client("python3"))
    assert not dead_kernel.runs_ipykernel(client("dies-once"))  # python -c ...: its own arguments only
    assert not dead_kernel.runs_ipykernel(client("no-such-kernel"))
    assert not dead_kernel.runs_ipykernel(client("", notebook_names="dies-once"))
    assert dead_kernel.runs_ipykernel(client(""))  # nbclient's default: python3


def test_a_hidden_cell_is_named_by_its_line(first_build: tuple[SphinxTestApp, str, str, Path]) -> None:
    _, _, warnings, _ = first_build
    line = (ROOT / "hidden.md").read_text().splitlines().index("# a hidden set-up cell that takes the kernel down") + 1
    assert re.search(rf"hidden\.md:{line}: WARNING: hidden cell: {re.escape(DIED)}", warnings), warnings


def test_the_page_shows_the_death_and_nothing_after_it(first_build: tuple[SphinxTestApp, str, str, Path]) -> None:
    app, _, _, _ = first_build
    cells = [
        node for node in app.env.get_doctree("dies").findall(nodes.container) if node.get("nb_element") == "cell_code"
    ]
    outputs = [
        "".join(out.astext() for out in cell.findall(nodes.container) if out.get("nb_element") == "cell_code_output")
        for cell in cells
    ]
    assert "before the death" in outputs[0]
    assert f"DeadKernelError: {dead_kernel.EVALUE}" in outputs[1]
    assert outputs[2] == ""  # never ran, and does not pretend to


def test_a_kernel_that_dies_at_its_first_start_runs_the_page(first_build: tuple[SphinxTestApp, str, str, Path]) -> None:
    app, status, warnings, cache = first_build
    assert STARTED_AGAIN.format("dies-once", PORT_TAKEN) in status, status
    assert "dies-once.md" not in warnings
    assert "ran on the second start" in (app.outdir / "dies-once.html").read_text()
    assert "dies-once.md" in {Path(record.uri).name for record in get_cache(cache).list_cache_records()}


def test_a_kernel_that_dies_as_it_starts_fails_its_page(first_build: tuple[SphinxTestApp, str, str, Path]) -> None:
    app, status, warnings, _ = first_build
    assert STARTED_AGAIN.format("dies-at-start", NO_IPYKERNEL) in status, status  # started twice, then failed
    assert status.count("kernel 'dies-at-start' failed as it started") == 1
    # for the page, not a cell, and not a crash report (first_build would have raised)
    assert re.search(rf"dies-at-start\.md: WARNING: {re.escape(NOT_STARTED)}", warnings), warnings
    assert "dies-at-start.md: WARNING: Executing notebook failed: DeadKernelError" in warnings
    report = (app.outdir / "reports" / "dies-at-start.err.log").read_text()
    assert dead_kernel.STARTUP_DEATH in report  # jupyter_client's error, kept as the cause
    cells = [node for node in app.env.get_doctree("dies-at-start").findall(nodes.container)
             if node.get("nb_element") == "cell_code"]
    outputs = [node for node in cells[0].findall(nodes.container) if node.get("nb_element") == "cell_code_output"]
    assert len(cells) == 1 and outputs == []  # it never ran
    assert "A page whose kernel dies as it starts" in (app.outdir / "dies-at-start.html").read_text()
    assert "healthy page ran" in (app.outdir / "index.html").read_text()


def test_a_rebuild_runs_the_page_again(first_build: tuple[SphinxTestApp, str, str, Path]) -> None:
    app, _, _, cache = first_build
    cached = ["dies-once.md", "index.md"]
    assert sorted(Path(record.uri).name for record in get_cache(cache).list_cache_records()) == cached
    _, status, warnings = build(app.srcdir, cache)  # same environment: an incremental build
    assert "dies.md: Executing notebook" in status and "index.md: Executing notebook" not in status, status
    assert re.search(rf"dies\.md:\d+: WARNING: code cell 2: {re.escape(DIED)}", warnings), warnings
    assert "dies-at-start.md: Executing notebook" in status, status
    assert re.search(rf"dies-at-start\.md: WARNING: {re.escape(NOT_STARTED)}", warnings), warnings
    assert sorted(Path(record.uri).name for record in get_cache(cache).list_cache_records()) == cached


def test_force_mode_in_parallel_fails_the_w_build_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    srcdir = tmp_path / "src"
    shutil.copytree(ROOT, srcdir)
    warning_file = tmp_path / "warnings.txt"
    args = ["-W", "-j", "2", "-q", "-b", "html", "-D", "nb_execution_mode=force", "-w", str(warning_file)]
    status = build_main([*args, str(srcdir), str(tmp_path / "out")])
    warnings = warning_file.read_text()
    assert status == 1, capsys.readouterr().err  # a crash report would be status 2
    assert re.search(rf"dies\.md:\d+: WARNING: code cell 2: {re.escape(DIED)}", warnings), warnings
    assert re.search(rf"dies-at-start\.md: WARNING: {re.escape(NOT_STARTED)}", warnings), warnings
    assert "healthy page ran" in (tmp_path / "out" / "index.html").read_text()


def _notebook(*sources: str) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell("# Title")]
    for source in sources:
        cell = nbformat.v4.new_code_cell(source)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="stored\n")]
        cell.execution_count = 9
        notebook.cells.append(cell)
    return notebook


def test_the_running_cell_is_the_last_one_sent() -> None:
    notebook = _notebook("a = 1", "   ", "b = 2", "c = 3", "d = 4")
    notebook.cells[3].metadata["tags"] = ["skip-execution"]
    client = SimpleNamespace(nb=notebook, skip_cells_with_tag="skip-execution", code_cells_executed=0)
    assert dead_kernel.running_cell(client) is None
    client.code_cells_executed = 2  # the empty cell and the skipped one were not sent
    assert dead_kernel.running_cell(client) == 4

    error = dead_kernel.as_cell_failure(client)
    assert isinstance(error, CellExecutionError) and isinstance(error, nbclient.exceptions.DeadKernelError)
    assert "c = 3" in str(error) and error.ename == "DeadKernelError"
    assert notebook.cells[4].outputs[-1]["evalue"] == dead_kernel.EVALUE + dead_kernel.GUESS  # it said nothing
    assert notebook.cells[1].outputs  # cells that ran keep their outputs
    assert not notebook.cells[5].outputs and notebook.cells[5].execution_count is None  # never ran


def test_a_death_before_any_cell_names_none() -> None:
    client = SimpleNamespace(nb=_notebook("a = 1"), skip_cells_with_tag="skip-execution", code_cells_executed=0)
    error = dead_kernel.as_cell_failure(client)
    assert "before any cell ran" in str(error)
    assert client.nb.cells[1].outputs[0]["text"] == "stored\n"


@pytest.mark.parametrize(
    ("message", "executed", "expected"),
    [(dead_kernel.STARTUP_DEATH, 0, True), (dead_kernel.STARTUP_DEATH, 1, False),
     # seen in CI: a kernel that lost a port to another process hung instead of exiting
     ("Kernel didn't respond in 60 seconds", 0, True), ("Kernel didn't respond in 60 seconds", 2, False),
     ("Kernel didn't respond to heartbeats in 60 seconds and timed out", 0, True),
     ("Kernel died", 0, False), ("Kernel is busy", 0, False)],
)
def test_only_jupyter_clients_startup_failures_count(message: str, executed: int, expected: bool) -> None:
    client = SimpleNamespace(code_cells_executed=executed)
    assert dead_kernel.failed_at_startup(client, RuntimeError(message)) is expected


@pytest.mark.parametrize(
    ("error", "words"),
    [(f"DeadKernelError: {dead_kernel.BEFORE_ANY_CELL}", ""),
     (f"DeadKernelError: {dead_kernel.BEFORE_ANY_CELL}{dead_kernel.PRINTED}OSError: x; y", "OSError: x; y"),
     (f"DeadKernelError: {dead_kernel.EVALUE}", None)],
)
def test_the_words_of_a_kernel_that_died_at_start_are_read_back(error: str, words: str | None) -> None:
    assert dead_kernel.startup_words(error) == words


@pytest.mark.parametrize(
    ("error", "words"),
    [(f"DeadKernelError: {dead_kernel.EVALUE}{dead_kernel.GUESS}", ""),
     (f"DeadKernelError: {dead_kernel.EVALUE}{dead_kernel.PRINTED}Fatal Python error: Aborted",
      "Fatal Python error: Aborted"),
     (f"DeadKernelError: {dead_kernel.BEFORE_ANY_CELL}", None), ("ValueError: the kernel died", None)],
)
def test_the_crash_report_of_a_kernel_that_died_in_a_cell_is_read_back(error: str, words: str | None) -> None:
    assert dead_kernel.crash_words(error) == words


def test_a_death_in_a_cell_quotes_the_crash_report() -> None:
    client = SimpleNamespace(nb=_notebook("a = 1"), skip_cells_with_tag="skip-execution", code_cells_executed=1)
    error = dead_kernel.as_cell_failure(client, "Fatal Python error: Aborted")
    said = f"{dead_kernel.EVALUE}{dead_kernel.PRINTED}Fatal Python error: Aborted"
    assert client.nb.cells[1].outputs[-1]["evalue"] == said
    assert dead_kernel.crash_words(str(error).strip().splitlines()[-1]) == "Fatal Python error: Aborted"


def test_a_death_before_any_cell_quotes_what_the_kernel_printed() -> None:
    client = SimpleNamespace(nb=_notebook("a = 1"), skip_cells_with_tag="skip-execution", code_cells_executed=0)
    error = dead_kernel.as_cell_failure(client, "OSError: port taken")
    assert dead_kernel.startup_words(str(error)) == "OSError: port taken"


def _one_cell_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], code: str,
                  startup_timeout: int) -> tuple[nbformat.NotebookNode, NotebookClient]:
    """A notebook of one cell and the client that would run it on a kernel (named "test") that runs ``argv``, with
    NotebookClient.execute reporting and restarting as in a build; a short start-up timeout keeps tests quick."""
    _kernel(tmp_path, "test", argv)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    dead_kernel.setup(cast(Sphinx, None))
    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "test", "display_name": "test"}})
    notebook.cells.append(nbformat.v4.new_code_cell(code))
    return notebook, NotebookClient(notebook, kernel_name="test", startup_timeout=startup_timeout)


def test_a_kernel_that_hangs_at_its_first_start_is_started_again(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """jupyter_client's "Kernel didn't respond in 60 seconds" once crashed a CI build; the kernel is now started once
    more, as one that dies at start is."""
    argv = [sys.executable, "-c", HANGS_ONCE, str(tmp_path / "started"), "{connection_file}"]
    notebook, client = _one_cell_run(tmp_path, monkeypatch, argv, "print('ran on the second start')", 3)
    client.execute()
    assert (tmp_path / "started").exists()  # the first start hung
    assert notebook.cells[0].outputs[0]["text"] == "ran on the second start\n"


def test_a_kernel_that_hangs_at_every_start_fails_the_page_after_its_second(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """nbclient kills a kernel that does not answer in time; after the second start the page fails, no cell run, with
    jupyter_client's timeout as the cause."""
    argv = [sys.executable, "-c", "import time; time.sleep(600)", "{connection_file}"]
    notebook, client = _one_cell_run(tmp_path, monkeypatch, argv, "print('never runs')", 2)
    with pytest.raises(dead_kernel.DeadKernelError) as raised:
        client.execute()
    # reported as a failure before any cell ran (what it printed last is how it took being stopped)
    assert dead_kernel.startup_words(str(raised.value)) is not None
    assert str(raised.value.__cause__).startswith("Kernel didn't respond in 2 seconds")
    assert notebook.cells[0].outputs == []
