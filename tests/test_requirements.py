"""``require``: the one-line notice where a cell's needs are unmet, and failures caught where they are met."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from qwen_docs_helpers import requirements
from qwen_docs_helpers.requirements import (
    NOTICE_PREFIX,
    NOTICE_WIDTH,
    NotRunHere,
    assert_ran,
    met,
    missing,
    require,
)

ABSENT = "qwen_docs_no_such_package"
ABSENT_2 = "qwen_docs_no_such_package_either"


@pytest.fixture(autouse=True)
def fresh_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(requirements, "_RECORDS", [])


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def turing_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")


# --- what is missing, in words ------------------------------------------------------------------------------


def test_nothing_required_is_met() -> None:
    assert missing() == []
    assert met()


def test_installed_packages_are_met() -> None:
    assert missing(packages=["json", "torch"]) == []


def test_missing_packages_are_named() -> None:
    assert missing(packages=["json", ABSENT]) == [f"the {ABSENT} package (not installed)"]
    assert missing(packages=[ABSENT, ABSENT_2]) == [f"the {ABSENT} and {ABSENT_2} packages (not installed)"]


def test_submodule_of_missing_package_is_missing() -> None:
    assert missing(packages=[f"{ABSENT}.sub"]) == [f"the {ABSENT}.sub package (not installed)"]


def test_packages_must_be_a_list() -> None:
    with pytest.raises(TypeError, match="list of import names"):
        missing(packages="tensorrt_llm")


def test_cuda_on_cpu(no_gpu: None) -> None:
    assert missing(cuda=True) == ["a CUDA GPU (this build ran on CPU)"]
    assert not met(cuda=True)


def test_capability_on_cpu(no_gpu: None) -> None:
    assert missing(cuda_capability=(8, 0)) == [
        "an NVIDIA GPU of compute capability 8.0 or newer (this build ran on CPU)"
    ]


def test_capability_too_old(turing_gpu: None) -> None:
    assert missing(cuda=True) == []
    assert missing(cuda_capability=(8, 0)) == [
        "an NVIDIA GPU of compute capability 8.0 or newer (this build's Tesla T4 is 7.5)"
    ]
    assert missing(cuda_capability=(7, 5)) == []


# --- the exception ------------------------------------------------------------------------------------------


def test_notice_is_one_sentence(no_gpu: None) -> None:
    with pytest.raises(NotRunHere) as caught:
        require(cuda=True, packages=[ABSENT])
    notice = f"{NOTICE_PREFIX}a CUDA GPU (this build ran on CPU) and the {ABSENT} package (not installed)."
    assert str(caught.value) == notice
    assert "\n" not in notice
    shown = caught.value._render_traceback_()
    assert " ".join(shown) == notice and len(shown) == 2
    assert all(len(line) <= NOTICE_WIDTH for line in shown)
    assert "tensorrt" not in ABSENT and ABSENT in " ".join(shown)  # names are never broken across lines


def test_short_notice_is_one_line() -> None:
    assert NotRunHere(["a CUDA GPU (this build ran on CPU)"])._render_traceback_() == [
        f"{NOTICE_PREFIX}a CUDA GPU (this build ran on CPU)."
    ]


def test_three_reasons_read_as_a_list(no_gpu: None) -> None:
    error = NotRunHere(["a", "b", "c"])
    assert error.notice == f"{NOTICE_PREFIX}a, b and c."


def test_met_requirements_return_none() -> None:
    assert require(packages=["json"]) is None


def test_records_outside_ipython(no_gpu: None) -> None:
    require(packages=["json"])
    with pytest.raises(NotRunHere):
        require(cuda=True)
    first, second = requirements.records()
    assert (first.needs, first.outcome, first.tracked) == ("json", "running", False)
    assert (second.needs, second.outcome) == ("cuda", "skipped")
    # Untracked cells cannot be checked (a failing script stops by itself): no false alarm.
    assert assert_ran() == "0 cell(s) with requirements ran, 1 not run here (requirements unmet)"


# --- under IPython: failures of cells whose requirements were met are caught ------------------------------


@pytest.fixture
def shell() -> Iterator[object]:
    from IPython.core.interactiveshell import InteractiveShell

    instance = InteractiveShell.instance()
    instance.run_cell("from qwen_docs_helpers.requirements import require", store_history=False)
    try:
        yield instance
    finally:
        InteractiveShell.clear_instance()


def test_ipython_shows_only_the_notice(shell: object, capsys: pytest.CaptureFixture[str]) -> None:
    result = shell.run_cell(f"require(packages=[{ABSENT!r}])\nprint('rest of the cell')", store_history=True)
    out = capsys.readouterr().out
    assert isinstance(result.error_in_exec, NotRunHere)
    assert " ".join(out.split()) == f"{NOTICE_PREFIX}the {ABSENT} package (not installed)."
    assert "Traceback" not in out and "rest of the cell" not in out
    assert assert_ran().endswith("1 not run here (requirements unmet)")


def test_ipython_cell_that_runs_is_recorded(shell: object) -> None:
    result = shell.run_cell("require(packages=['json'])\nvalue = 42", store_history=True)
    assert result.success and shell.user_ns["value"] == 42
    (record,) = requirements.records()
    assert (record.outcome, record.tracked, record.cell) == ("ok", True, result.execution_count)
    assert assert_ran() == "1 cell(s) with requirements ran, 0 not run here (requirements unmet)"


def test_ipython_failure_after_met_requirements_fails_the_check(shell: object) -> None:
    shell.run_cell("require(packages=['json'])\n1 / 0", store_history=True)
    shell.run_cell("require(packages=['json'])", store_history=True)  # a later cell that is fine
    with pytest.raises(AssertionError, match=r"1 cell\(s\) .* met here but failed: .*ZeroDivisionError"):
        assert_ran()


def test_ipython_watcher_is_removed_after_the_cell(shell: object) -> None:
    before = list(shell.events.callbacks["post_run_cell"])
    shell.run_cell("require(packages=['json'])", store_history=True)
    assert list(shell.events.callbacks["post_run_cell"]) == before


def test_ipython_error_before_exec_counts_as_failure(shell: object) -> None:
    record = requirements.RunRecord("json", "running", tracked=True)
    requirements._watch_cell(shell, record)
    shell.events.trigger(
        "post_run_cell", SimpleNamespace(execution_count=7, error_in_exec=None, error_before_exec=SyntaxError("bad"))
    )
    assert (record.outcome, record.cell, record.error) == ("failed", 7, "SyntaxError: bad")


# --- end to end: what an executed page receives from the kernel ---------------------------------------------


def test_kernel_sends_the_notice_as_the_whole_error_output() -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.v4.new_notebook()
    imports = "from qwen_docs_helpers.requirements import require\n"
    notebook.cells = [
        nbformat.v4.new_code_cell(f"{imports}require(packages=[{ABSENT!r}])"),
        nbformat.v4.new_code_cell("require(packages=['json'])\nraise ValueError('real failure')"),
        nbformat.v4.new_code_cell("from qwen_docs_helpers.requirements import assert_ran\nassert_ran()"),
    ]
    nbclient.NotebookClient(notebook, kernel_name="python3", allow_errors=True, timeout=120).execute()
    (notice,) = notebook.cells[0].outputs
    assert notice["output_type"] == "error" and notice["ename"] == "NotRunHere"
    assert " ".join(notice["traceback"]) == f"{NOTICE_PREFIX}the {ABSENT} package (not installed)."
    assert all("\x1b" not in line for line in notice["traceback"])  # plain text, no colour codes
    (check,) = notebook.cells[2].outputs
    assert check["ename"] == "AssertionError" and "ValueError: real failure" in check["evalue"]


# --- several GPUs -------------------------------------------------------------------------------------------


def test_several_gpus_on_cpu(no_gpu: None) -> None:
    assert missing(gpus=2) == ["2 CUDA GPUs (this build ran on CPU)"]


def test_several_gpus_on_one(turing_gpu: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert missing(gpus=2) == ["2 CUDA GPUs (this build has 1)"]
    assert missing(gpus=1) == []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert missing(gpus=2) == []
    assert missing(gpus=2, cuda_capability=(8, 0)) == [
        "2 NVIDIA GPUs of compute capability 8.0 or newer (this build's Tesla T4 is 7.5)"
    ]
    with pytest.raises(NotRunHere):
        require(gpus=2, cuda_capability=(8, 0))
    assert requirements.records()[-1].needs == "cuda>=8.0, 2 gpus"
