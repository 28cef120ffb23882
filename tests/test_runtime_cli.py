"""The runtime description (page stamp, ``qwen-docs env``) and the ``qwen-docs`` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from hashlib import sha256
from pathlib import Path

import pytest
import torch

from qwen_docs_helpers.runtime import Runtime, describe_runtime

CLI = [sys.executable, "-m", "qwen_docs_helpers.cli"]


def run_cli(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, **kwargs)  # type: ignore[call-overload]


def test_runtime_reports_standins_and_missing_models(standin_hub: dict[str, Path], accelerator: str) -> None:
    runtime = describe_runtime(["Qwen/Qwen2-7B-Instruct", "Qwen/Qwen2-1.5B-Instruct"])
    assert runtime.weights["Qwen/Qwen2-7B-Instruct"] == "standin"
    assert runtime.weights["Qwen/Qwen2-1.5B-Instruct"] in {"standin", "missing"}
    assert runtime.accelerator == accelerator and runtime.offline
    assert runtime.versions["torch"] and runtime.versions["transformers"]
    stamp = runtime.as_markdown()
    assert "Executed on" in stamp and runtime.device in stamp
    assert "qd-standin-notice" in stamp and "random noise" in stamp


def test_stamp_has_no_standin_notice_with_real_weights() -> None:
    runtime = Runtime(
        device="GPU X",
        accelerator="cuda",
        python="3.12",
        versions={"torch": "2"},
        weights={"Qwen/Qwen2-7B-Instruct": "real", "Qwen/Qwen2-1.5B-Instruct": "real"},
        revisions={"Qwen/Qwen2-7B-Instruct": "f2826a00ceef68f0f2b946d945ecc0477ce4450c",
                   "Qwen/Qwen2-1.5B-Instruct": "local-copy"},
        offline=True,
        date="2026-01-01",
    )
    stamp = runtime.as_markdown()
    assert "qd-standin-notice" not in stamp and "2026-01-01" in stamp
    # which download ran: a Hub commit links to the model's files at that commit; another name is shown as it is
    assert ("`Qwen/Qwen2-7B-Instruct`: real weights at commit [`f2826a0`]"
            "(https://huggingface.co/Qwen/Qwen2-7B-Instruct/tree/f2826a00ceef68f0f2b946d945ecc0477ce4450c)") in stamp
    assert "`Qwen/Qwen2-1.5B-Instruct`: real weights at commit `local-copy`." in stamp


def test_stamp_output_carries_the_facts_the_downloads_state(standin_hub: dict[str, Path], accelerator: str) -> None:
    from IPython.core.formatters import DisplayFormatter

    from qwen_docs_helpers.published import published_config
    from qwen_docs_helpers.runtime import STAMP_FACTS_KEY, page_stamp
    from qwen_docs_helpers.speed import weight_bytes

    ids = ["Qwen/Qwen2-7B-Instruct", "Qwen/Qwen1.5-MoE-A2.7B-Chat"]
    data, metadata = DisplayFormatter().format(page_stamp(ids))
    facts = metadata["text/markdown"][STAMP_FACTS_KEY]
    assert "Executed on" in data["text/markdown"]
    assert facts["weights"]["Qwen/Qwen2-7B-Instruct"] == "standin" and facts["accelerator"] == accelerator
    assert facts["peak"]["ram_bytes"] > 2**20
    # GPU memory only where this process has used the GPU (on a GPU runner, tests/gpu runs first and has)
    gpu_used = accelerator == "cuda" and torch.cuda.is_initialized()
    assert (facts["peak"]["gpu_bytes"] is None) is not gpu_used
    assert facts["weight_bytes_bf16"] == [(i, round(weight_bytes(published_config(i)))) for i in ids]  # page order
    assert facts["weight_bytes_bf16"][0][1] == 2 * 7_615_616_512  # bf16, untied lm_head
    json.dumps(facts)  # it is stored in the notebook


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((), "required: command"),
        (("frobnicate",), "invalid choice"),
        (("standins", "--model", "Qwen/Nope"), "Qwen/Nope has no stand-in recipe: add its config.json and "
         "generation_config.json to src/qwen_docs_helpers/data/published_configs.json in a checkout of qwen-docs "
         "(see its README)"),
        (("standins", "--model", "Qwen/Qwen2-7B-Instrct"), "Qwen/Qwen2-7B-Instrct has no stand-in recipe: did you "
         "mean Qwen/Qwen2-7B-Instruct? (see 'qwen-docs standins --help')"),
        (("standins", "Qwen/Qwen2-7B-Instrct"), "Qwen/Qwen2-7B-Instrct has no stand-in recipe: did you "
         "mean Qwen/Qwen2-7B-Instruct?"),
        (("standins", "Qwen/Qwen2-1.5B-Instruct", "--model", "Qwen/Nope"), "Qwen/Nope has no stand-in recipe"),
        (("env", "--bogus"), "unrecognized arguments"),
        (("standins", "--cache-dir", ""), "empty path"),  # would write hub/ into the current directory
    ],
)
def test_bad_arguments_give_one_line_and_status_2(args: tuple[str, ...], needle: str, tmp_path: Path) -> None:
    result = run_cli(*args, cwd=tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("qwen-docs")
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_help_is_plain_text() -> None:
    result = run_cli("--help")
    assert result.returncode == 0 and "Create stand-in checkpoints" in result.stdout
    assert "``" not in result.stdout  # reST markup from the module docstring
    model_help = " ".join(run_cli("standins", "--help").stdout.split())
    assert "every id in published_configs.json" in model_help
    assert "Make model ids loadable offline" in model_help  # what the command does, and what to do next
    assert "the `export HF_HUB_CACHE=... HF_HUB_OFFLINE=1` line to run before starting Python" in model_help


def test_standins_command_creates_and_reports(tmp_path: Path) -> None:
    cache = tmp_path / "my cache"  # the printed export line must survive a space
    result = run_cli("standins", "--cache-dir", str(cache), "--model", "Qwen/Qwen2-1.5B-Instruct", "--no-real")
    assert result.returncode == 0, result.stderr
    model_id, weights, snapshot = result.stdout.strip().split("\t")
    assert (model_id, weights) == ("Qwen/Qwen2-1.5B-Instruct", "standin")
    assert Path(snapshot, "model.safetensors").is_file()
    (export,) = [line for line in result.stderr.splitlines() if "export HF_HUB_CACHE=" in line]
    shell = subprocess.run(
        ["bash", "-c", export.split(": ", 1)[1] + '\nprintf "%s\\n" "$HF_HUB_CACHE" "$HF_HUB_OFFLINE"'],
        capture_output=True, text=True, check=True,
    )
    assert shell.stdout.splitlines() == [str(cache.resolve() / "hub"), "1"]
    assert "[1/1] Qwen/Qwen2-1.5B-Instruct: building stand-in" in result.stderr


def test_standins_takes_ids_as_arguments_once_each_in_order(tmp_path: Path) -> None:
    ids = ["Qwen/Qwen2-1.5B-Instruct", "Qwen/Qwen2-7B"]
    result = run_cli("standins", *ids, "--model", ids[0], "--cache-dir", str(tmp_path), "--no-real")
    assert result.returncode == 0, result.stderr
    assert [line.split("\t")[0] for line in result.stdout.strip().splitlines()] == ids
    assert "[2/2] Qwen/Qwen2-7B: building stand-in" in result.stderr


def test_standins_command_error_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run_cli("standins", "--cache-dir", str(blocker), "--model", "Qwen/Qwen2-1.5B-Instruct")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    # names the path and says what to do, not just "[Errno 20] Not a directory: '...'"
    assert f"{blocker / 'hub'}: pass a --cache-dir" in result.stderr and "Errno" not in result.stderr


def test_env_command_json(standin_hub: dict[str, Path], accelerator: str) -> None:
    result = run_cli("env", "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["accelerator"] == accelerator
    assert facts["weights"]["Qwen/Qwen2-7B-Instruct"] == "standin"  # the subprocess inherits the test hub
    assert facts["hub_cache"] == os.environ["HF_HUB_CACHE"]  # as the text output shows it
    text = run_cli("env")
    assert f"hub cache: {facts['hub_cache']}" in text.stdout.splitlines()


def test_env_command_also_reports_the_private_cache_and_writes_nowhere(tmp_path: Path) -> None:
    """Right after a build made stand-ins, the user's own cache still has none: both are reported, labelled."""
    from hub_fixtures import SMALL_ID

    from qwen_docs_helpers.standins import hub_dir, prepare_hub

    def tree(root: Path) -> dict[str, str]:  # every file and folder, with a hash of each file
        return {str(p.relative_to(root)): sha256(p.read_bytes()).hexdigest() if p.is_file() else "/"
                for p in root.rglob("*")}

    private, user_hub = tmp_path / "private", tmp_path / "user-hub"
    prepare_hub([SMALL_ID], cache_dir=private, real_cache=tmp_path / "none", progress=lambda _: None)
    user_hub.mkdir()
    before = tree(tmp_path)
    env = {**os.environ, "HF_HUB_CACHE": str(user_hub), "QWEN_DOCS_CACHE": str(private)}
    text = run_cli("env", env=env, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert f"weights {SMALL_ID}: missing" in lines  # the user's cache
    assert f"qwen-docs private cache (site build, qwen-docs standins): {hub_dir(private)}" in lines
    assert f"private cache weights {SMALL_ID}: standin" in lines
    facts = json.loads(run_cli("env", "--json", env=env, cwd=tmp_path).stdout)
    assert facts["private_hub_cache"] == str(hub_dir(private))
    assert facts["private_weights"][SMALL_ID] == "standin" and facts["weights"][SMALL_ID] == "missing"
    elsewhere = run_cli("env", "--cache-dir", str(tmp_path / "other"), env=env, cwd=tmp_path).stdout
    assert f"private cache weights {SMALL_ID}: missing" in elsewhere.splitlines()
    assert tree(tmp_path) == before  # neither cache written, no other cache created
    assert list(user_hub.iterdir()) == []


def test_env_command_reports_one_cache_when_the_private_one_is_in_use(standin_hub: dict[str, Path],
                                                                      hub_cache: Path) -> None:
    """After exporting what `qwen-docs standins` prints (as the pages' kernels run), there is one cache to show."""
    result = run_cli("env", "--cache-dir", str(hub_cache.parent))  # HF_HUB_CACHE is that hub already
    assert result.returncode == 0, result.stderr
    assert "private cache" not in result.stdout


def test_env_command_names_a_damaged_cache_file_and_goes_on(tmp_path: Path) -> None:
    from qwen_docs_helpers.standins import repo_folder_name

    repo = tmp_path / "hub" / repo_folder_name("Qwen/Qwen2-7B-Instruct")
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    (repo / "snapshots" / "abc" / "config.json").write_text("{ not json")
    before = (repo / "snapshots" / "abc" / "config.json").read_text()
    result = run_cli("env", "--json", env={**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub")})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["weights"]["Qwen/Qwen2-7B-Instruct"] == "unreadable"
    (warning,) = result.stderr.strip().splitlines()
    assert str(repo / "snapshots" / "abc" / "config.json") in warning and "Traceback" not in result.stderr
    assert (repo / "snapshots" / "abc" / "config.json").read_text() == before


def test_peak_memory_is_this_process_peak_and_in_the_stamp() -> None:
    from qwen_docs_helpers.runtime import PeakMemory

    # A fresh process (no torch) under 1 GiB: after touching 1 GiB its peak must be at least that. It is started
    # from this process holding 1.5 GiB, which must not count as the child's peak (ru_maxrss survives exec).
    parent_ballast = b"p" * (3 * 2**29)
    probe = (
        "from qwen_docs_helpers.runtime import peak_memory\n"
        "before = peak_memory().ram_bytes\n"
        "ballast = b\"x\" * (2**30)\n"
        "after = peak_memory()\n"
        "print(before, after.ram_bytes, after.gpu_bytes)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    del parent_ballast
    before, after, gpu = done.stdout.split()
    assert int(before) < 2**30 <= int(after) < 2**30 + int(before) + 2**28
    assert gpu == "None"  # this process never imported torch, so it used no GPU
    text = PeakMemory(ram_bytes=3 * 2**30, gpu_bytes=47 * 2**30 + 2**29).as_markdown()
    assert text == "Peak memory of the page's run: **47.5 GiB of GPU memory** and **3.0 GiB of RAM**."
    runtime = Runtime(device="cpu", accelerator="cpu", python="3.12", versions={}, weights={}, offline=True)
    assert "**1.0 GiB of RAM**" in runtime.as_markdown(PeakMemory(ram_bytes=2**30, gpu_bytes=None))
    assert "Peak memory" not in runtime.as_markdown()


def test_standins_command_refuses_the_users_own_cache(tmp_path: Path) -> None:
    from hub_fixtures import SMALL_ID, make_real_snapshot

    home = tmp_path / "hf-home"
    real = make_real_snapshot(home / "hub", SMALL_ID)
    env = {key: value for key, value in os.environ.items() if key not in {"HF_HUB_CACHE", "QWEN_DOCS_CACHE"}}
    result = run_cli("standins", "--cache-dir", str(home), "--model", SMALL_ID, env={**env, "HF_HOME": str(home)})
    assert result.returncode == 1 and "your own Hugging Face hub cache" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert (real / "model.safetensors").is_file() and "qwen_docs_standin" not in (real / "config.json").read_text()


def test_env_command_names_the_commit_of_real_weights(tmp_path: Path) -> None:
    """A bug report says which download of the weights it ran on."""
    from hub_fixtures import SMALL_ID, make_real_snapshot

    snapshot = make_real_snapshot(tmp_path / "user-hub", SMALL_ID)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "user-hub"), "QWEN_DOCS_CACHE": str(tmp_path / "private")}
    text = run_cli("env", env=env, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert f"weights {SMALL_ID}: real (commit {snapshot.name})" in text.stdout.splitlines()
    facts = json.loads(run_cli("env", "--json", env=env, cwd=tmp_path).stdout)
    assert facts["revisions"] == {SMALL_ID: snapshot.name}
