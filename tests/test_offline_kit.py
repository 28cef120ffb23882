"""tools/offline_kit.py: what an offline GPU machine must be sent, and the check that runs there first.

A wrong kit costs a GPU session its device time (a missing wheel fails minutes into a build), so the choice
is tested on the real pinned environment these tests run in, and the bitsandbytes slimming on a real-shaped
wheel.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "offline_kit.py"
spec = importlib.util.spec_from_file_location("offline_kit", SCRIPT)
assert spec is not None and spec.loader is not None
offline_kit = importlib.util.module_from_spec(spec)
sys.modules["offline_kit"] = offline_kit  # dataclasses look the module up by name
spec.loader.exec_module(offline_kit)

PYTHON = "{}.{}".format(*sys.version_info)
#: Run through tools/offline_run.sh, this environment lacks what its kit left out on purpose.
LEFT_OUT = offline_kit.left_out(os.environ.get(offline_kit.KIT_VARIABLE))


def test_closure_holds_what_the_site_build_imports_with_installed_versions() -> None:
    needs = offline_kit.closure(PYTHON, LEFT_OUT)
    for name in ("sphinx", "myst-nb", "sphinx-design", "ipykernel", "transformers", "bitsandbytes", "matplotlib"):
        assert name in needs, name
    from importlib import metadata

    assert needs["transformers"].version == metadata.version("transformers")
    # followed through extras: transformers[serving] needs fastapi, which nothing else here asks for
    assert "fastapi" in needs
    assert any(str(r).startswith("transformers[serving]") for r in needs["transformers"].wanted_by)
    # the project runs from src/ on the target: it is never a wheel of the kit
    assert offline_kit.PROJECT not in needs


@pytest.mark.skipif("debugpy" in LEFT_OUT, reason="debugpy is left out of this offline kit")
def test_skipping_a_package_drops_what_only_it_needs() -> None:
    everything = offline_kit.closure(PYTHON)
    assert "debugpy" in everything  # wanted only by ipykernel, which runs without it
    without = offline_kit.closure(PYTHON, {"debugpy"})
    assert "debugpy" not in without
    assert "ipykernel" in without


def test_kit_carries_missing_and_incompatible_packages_only() -> None:
    needs = {
        "sphinx": offline_kit.Need("Sphinx", "9.0.4", (Requirement("sphinx>=8"),)),
        "numpy": offline_kit.Need("numpy", "2.4.6", (Requirement("numpy>=1.17"),)),
        "huggingface-hub": offline_kit.Need("huggingface_hub", "2.4.0", (Requirement("huggingface-hub>=1.31,<3"),)),
        "tokenizers": offline_kit.Need("tokenizers", "0.23.3", (Requirement("tokenizers>=0.23.1,<0.24"),)),
        "transformers": offline_kit.Need("transformers", "5.23.0", (Requirement("transformers>=5.0,<6"),)),
        "debugpy": offline_kit.Need("debugpy", "1.8.22", (Requirement("debugpy>=1.6.5"),)),
    }
    have = {"numpy": "2.5.2", "huggingface-hub": "1.20.0", "tokenizers": None, "transformers": "5.17.0"}
    chosen = offline_kit.kit_contents(needs, have, also={"transformers"}, skip={"debugpy"})
    assert set(chosen) == {"sphinx", "huggingface-hub", "transformers"}
    assert chosen["sphinx"] == "missing on the target"
    assert "1.20.0" in chosen["huggingface-hub"] and ">=1.31" in chosen["huggingface-hub"]
    assert "5.17.0" in chosen["transformers"]


def test_read_target_takes_names_versions_and_comments(tmp_path: Path) -> None:
    target = tmp_path / "target.txt"
    target.write_text("# the image\nHuggingFace_Hub==1.33.0\ntorch==2.11.0  # cu130\n\nmatplotlib\n")
    assert offline_kit.read_target(target) == {"huggingface-hub": "1.33.0", "torch": "2.11.0", "matplotlib": None}


def test_device_target_file_parses_and_has_the_image_torch() -> None:
    have = offline_kit.read_target(ROOT / "tools" / "targets" / "device-image.txt")
    assert have["torch"] == "2.11.0"
    assert "sphinx" not in have  # the reason for a kit


def fake_bitsandbytes_wheel(folder: Path) -> Path:
    wheel = folder / "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl"
    files = {
        "bitsandbytes/__init__.py": b"",
        "bitsandbytes/libbitsandbytes_cpu.so": b"cpu",
        "bitsandbytes/libbitsandbytes_cuda128.so": b"x" * 1000,
        "bitsandbytes/libbitsandbytes_cuda130.so": b"cuda130",
        "bitsandbytes/libbitsandbytes_rocm72.so": b"rocm",
    }
    record = "".join(f"{name},sha256=abc,{len(data)}\n" for name, data in files.items())
    record += "bitsandbytes-0.50.2.dist-info/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("bitsandbytes-0.50.2.dist-info/RECORD", record)
    return wheel


def test_slim_bitsandbytes_keeps_cpu_and_the_one_cuda_library(tmp_path: Path) -> None:
    wheel = fake_bitsandbytes_wheel(tmp_path)
    offline_kit.slim_bitsandbytes(wheel, "130")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        record = archive.read("bitsandbytes-0.50.2.dist-info/RECORD").decode()
    assert names == {
        "bitsandbytes/__init__.py",
        "bitsandbytes/libbitsandbytes_cpu.so",
        "bitsandbytes/libbitsandbytes_cuda130.so",
        "bitsandbytes-0.50.2.dist-info/RECORD",
    }
    assert "cuda128" not in record and "rocm" not in record and "cuda130" in record
    assert not [p for p in tmp_path.iterdir() if p != wheel]  # no temporary file left behind


def test_slim_bitsandbytes_refuses_a_cuda_the_wheel_lacks(tmp_path: Path) -> None:
    wheel = fake_bitsandbytes_wheel(tmp_path)
    before = wheel.read_bytes()
    with pytest.raises(SystemExit, match="no library for CUDA 999"):
        offline_kit.slim_bitsandbytes(wheel, "999")
    assert wheel.read_bytes() == before  # nothing lost
    assert [p.name for p in tmp_path.iterdir()] == [wheel.name]


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "check", *args], capture_output=True, text=True, timeout=120)


def test_check_passes_in_this_pinned_environment() -> None:
    result = run_check()
    assert result.returncode == 0, result.stderr
    assert "installed and agrees" in result.stdout


def test_check_names_a_requirement_the_installed_packages_break(monkeypatch: pytest.MonkeyPatch) -> None:
    real_version = offline_kit.metadata.version

    def older_transformers(name: str) -> str:
        return "4.57.0" if name.lower() == "transformers" else real_version(name)

    monkeypatch.setattr(offline_kit.metadata, "version", older_transformers)
    assert offline_kit.check(offline_kit.argparse.Namespace(kit=os.environ.get(offline_kit.KIT_VARIABLE))) == 1


def test_check_accepts_what_the_kit_left_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kit.json").write_text(json.dumps({"python_version": PYTHON, "skipped": ["debugpy"], "wheels": {}}))
    real_distribution = offline_kit.metadata.distribution

    def no_debugpy(name: str):  # as on a target the kit was built for: debugpy not installed
        if name.lower() == "debugpy":
            raise offline_kit.metadata.PackageNotFoundError(name)
        return real_distribution(name)

    monkeypatch.setattr(offline_kit.metadata, "distribution", no_debugpy)
    monkeypatch.delenv(offline_kit.KIT_VARIABLE, raising=False)
    with pytest.raises(SystemExit, match="debugpy is not installed"):
        offline_kit.check(offline_kit.argparse.Namespace(kit=None))
    assert offline_kit.check(offline_kit.argparse.Namespace(kit=tmp_path)) == 0
