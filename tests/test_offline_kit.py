"""tools/offline_kit.py: what an offline GPU machine must be sent, and the check that runs there first.

A wrong kit costs a GPU session its device time (a missing wheel fails minutes into a build), so the choice
is tested on the real pinned environment these tests run in, and the bitsandbytes slimming on a real-shaped
wheel.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
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


def write_kit(folder: Path, **fields: object) -> Path:
    """A kit.json as build writes it for this checkout (no wheels), with ``fields`` replaced."""
    manifest = {"python_version": PYTHON, "skipped": [], "wheels": {}, "versions": {},
                "sources": offline_kit.source_hashes(), **fields}
    (folder / "kit.json").write_text(json.dumps(manifest))
    return folder


def test_check_accepts_what_the_kit_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_kit(tmp_path, skipped=["debugpy"])
    real_distribution = offline_kit.metadata.distribution

    def no_debugpy(name: str):  # as on a target the kit was built for: debugpy not installed
        if name.lower() == "debugpy":
            raise offline_kit.metadata.PackageNotFoundError(name)
        return real_distribution(name)

    monkeypatch.setattr(offline_kit.metadata, "distribution", no_debugpy)
    monkeypatch.delenv(offline_kit.KIT_VARIABLE, raising=False)
    assert offline_kit.check(offline_kit.argparse.Namespace(kit=None)) == 1
    assert "debugpy is not installed" in capsys.readouterr().err
    assert offline_kit.check(offline_kit.argparse.Namespace(kit=tmp_path)) == 0


@pytest.mark.parametrize(
    ("filename", "fits"),
    [
        ("pkg-1.0-py3-none-any.whl", True),
        ("pkg-1.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", True),
        ("pkg-1.0-cp39-abi3-manylinux2014_x86_64.whl", True),
        ("bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl", True),
        ("pkg-1.0-cp311-cp311-linux_x86_64.whl", False),  # what `pip wheel` builds on a 3.11 machine
        ("pkg-1.0-cp312-cp312-linux_x86_64.whl", False),  # not manylinux: may need this machine's libraries
        ("pkg-1.0-cp311-cp311-manylinux2014_x86_64.whl", False),
        ("pkg-1.0-cp312-cp312-manylinux_2_17_aarch64.whl", False),
        ("pkg-1.0-py2-none-any.whl", False),
        ("not-a-wheel.whl", False),
    ],
)
def test_only_wheels_for_the_target_fit(filename: str, fits: bool) -> None:
    assert offline_kit.fits_target(filename, "3.12") is fits


def fake_pip(monkeypatch: pytest.MonkeyPatch, built_name: str | None) -> list[list[str]]:
    """pip whose download fails (no binary wheel) and whose wheel command builds ``built_name``."""
    calls: list[list[str]] = []

    def run(command: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        if "download" in command:
            return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found for pkg==1.0\n")
        folder = Path(command[command.index("-w") + 1])
        if built_name is None:
            return subprocess.CompletedProcess(command, 1, "", "error: no compiler\n")
        (folder / built_name).write_bytes(b"wheel")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(offline_kit.subprocess, "run", run)
    return calls


def test_a_wheel_built_here_for_another_python_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_pip(monkeypatch, "pkg-1.0-cp311-cp311-linux_x86_64.whl")
    with pytest.raises(SystemExit) as exit_:
        offline_kit.download(["pkg==1.0"], "3.12", tmp_path)
    message = str(exit_.value.code)
    assert "\n" not in message and "No matching distribution found for pkg==1.0" in message
    assert "cp311-cp311-linux_x86_64" in message and "CPython 3.12" in message
    assert list(tmp_path.iterdir()) == []  # nothing unusable left in the kit


def test_a_failed_local_build_keeps_the_download_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_pip(monkeypatch, None)
    with pytest.raises(SystemExit, match=r"pip download: ERROR: No matching distribution.*no compiler"):
        offline_kit.download(["pkg==1.0"], "3.12", tmp_path)


def test_a_pure_python_wheel_built_here_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_pip(monkeypatch, "pkg-1.0-py3-none-any.whl")
    offline_kit.download(["pkg==1.0"], "3.12", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["pkg-1.0-py3-none-any.whl"]


def test_slimmed_wheel_is_readable_like_any_new_file(tmp_path: Path) -> None:
    wheel = fake_bitsandbytes_wheel(tmp_path)
    old = os.umask(0o022)
    try:
        offline_kit.slim_bitsandbytes(wheel, "130")
    finally:
        os.umask(old)
    assert stat.S_IMODE(wheel.stat().st_mode) == 0o644


def test_pins_are_read_and_a_kit_package_off_its_pin_is_named(tmp_path: Path) -> None:
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("# pins\nhuggingface_hub==2.4.0\nSphinx==9.0.4  # docs\ntorch>=2\n")
    pins = offline_kit.read_pins(constraints)
    assert pins == {"huggingface-hub": "2.4.0", "sphinx": "9.0.4"}
    needs = {
        "sphinx": offline_kit.Need("Sphinx", "9.0.4", ()),
        "huggingface-hub": offline_kit.Need("huggingface_hub", "2.3.0", ()),
        "numpy": offline_kit.Need("numpy", "1.0", ()),
    }
    chosen = {key: "missing on the target" for key in needs}
    assert offline_kit.pin_conflicts(needs, chosen, pins) == ["huggingface_hub 2.3.0 (pinned 2.4.0)"]
    assert offline_kit.pin_conflicts(needs, {"sphinx": "x", "numpy": "x"}, pins) == []


#: build runs in the pinned environment, never where a kit was installed (which lacks what the kit left out).
IN_KIT = pytest.mark.skipif(os.environ.get(offline_kit.KIT_VARIABLE) is not None,
                            reason="build runs in the pinned environment; an offline machine keeps its own versions")


@IN_KIT
def test_this_environment_matches_its_pins() -> None:
    real = offline_kit.closure(PYTHON, LEFT_OUT)
    assert offline_kit.pin_conflicts(real, dict.fromkeys(real, "x"), offline_kit.read_pins()) == []


@IN_KIT
def test_build_refuses_an_environment_off_the_pins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_version = offline_kit.metadata.version

    def older_sphinx(name: str) -> str:
        return "1.0.0" if offline_kit.canonicalize_name(name) == "sphinx" else real_version(name)

    monkeypatch.setattr(offline_kit.metadata, "version", older_sphinx)
    monkeypatch.setattr(offline_kit, "download", lambda *args: pytest.fail("downloaded despite the pin conflict"))
    target = tmp_path / "target.txt"
    target.write_text("torch==2.11.0\n")
    args = offline_kit.argparse.Namespace(
        target=target, python_version=PYTHON, also=[], skip=sorted(LEFT_OUT), cuda=None, out=tmp_path / "kit"
    )
    with pytest.raises(SystemExit, match=r"^offline_kit: .* pins: .*Sphinx 1\.0\.0 \(pinned \d") as exit_:
        offline_kit.build(args)
    assert "\n" not in str(exit_.value.code) and not (tmp_path / "kit").exists()


@IN_KIT
def test_build_records_sources_and_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_download(pins: list[str], python_version: str, out: Path) -> None:
        for pin in pins:
            name, version = pin.split("==")
            (out / f"{name}-{version}-py3-none-any.whl").write_bytes(b"wheel")

    monkeypatch.setattr(offline_kit, "download", fake_download)
    target = tmp_path / "target.txt"
    target.write_text("".join(f"{name}\n" for name in offline_kit.closure(PYTHON, LEFT_OUT) if name != "sphinx"))
    args = offline_kit.argparse.Namespace(
        target=target, python_version=PYTHON, also=[], skip=sorted(LEFT_OUT), cuda=None, out=tmp_path / "kit"
    )
    assert offline_kit.build(args) == 0
    manifest = json.loads((tmp_path / "kit" / "kit.json").read_text())
    from importlib import metadata

    assert manifest["versions"] == {"sphinx": metadata.version("sphinx")}
    assert manifest["sources"] == {
        "requirements/constraints.txt": offline_kit.sha256(ROOT / "requirements" / "constraints.txt"),
        "pyproject.toml": offline_kit.sha256(ROOT / "pyproject.toml"),
    }


def test_check_fails_on_a_stale_kit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kit = write_kit(tmp_path, skipped=sorted(LEFT_OUT))
    assert offline_kit.check(offline_kit.argparse.Namespace(kit=kit)) == 0
    sources = offline_kit.source_hashes()
    write_kit(tmp_path, skipped=sorted(LEFT_OUT), sources={**sources, "requirements/constraints.txt": "0" * 64})
    assert offline_kit.check(offline_kit.argparse.Namespace(kit=kit)) == 1
    err = capsys.readouterr().err
    assert "kit is stale: rebuild it (requirements/constraints.txt changed" in err and "pyproject" not in err
    write_kit(tmp_path, skipped=sorted(LEFT_OUT), sources={"gone/file.txt": "0" * 64})  # not in the checkout
    assert offline_kit.check(offline_kit.argparse.Namespace(kit=kit)) == 0
    manifest = json.loads((tmp_path / "kit.json").read_text())
    del manifest["sources"]  # built before kits recorded their sources: cannot be vouched for
    (tmp_path / "kit.json").write_text(json.dumps(manifest))
    assert offline_kit.check(offline_kit.argparse.Namespace(kit=kit)) == 1
    assert "kit is stale: rebuild it" in capsys.readouterr().err


def test_check_names_a_kit_package_shadowed_by_another_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kit = write_kit(tmp_path, skipped=sorted(LEFT_OUT), versions={"sphinx": "0.0.1"})
    assert offline_kit.check(offline_kit.argparse.Namespace(kit=kit)) == 1
    assert "sphinx" in capsys.readouterr().err


def test_check_lists_every_missing_package(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    real_distribution = offline_kit.metadata.distribution
    gone = {"sphinx", "fastapi"} - LEFT_OUT

    def without(name: str):
        if offline_kit.canonicalize_name(name) in gone:
            raise offline_kit.metadata.PackageNotFoundError(name)
        return real_distribution(name)

    monkeypatch.setattr(offline_kit.metadata, "distribution", without)
    assert offline_kit.check(offline_kit.argparse.Namespace(kit=None)) == 1
    err = capsys.readouterr().err
    for name in gone:
        assert f"{name} is not installed" in err.lower()


def test_check_on_a_folder_that_is_not_a_kit_is_one_line(tmp_path: Path) -> None:
    result = run_check("--kit", str(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "kit.json" in result.stderr and "build" in result.stderr


RUN_SCRIPT = ROOT / "tools" / "offline_run.sh"
FAKE_PYTHON = """#!/bin/sh
# python3 for offline_run.sh: `pip install --target DIR WHEEL...` unpacks nothing, it names each wheel in DIR
if [ "$2" = pip ]; then
  while [ "$#" -gt 0 ]; do
    case $1 in --target) shift; target=$1 ;; *.whl) touch "$target/$(basename "$1").installed" ;; esac
    shift
  done
fi
exit 0
"""


def run_script(tmp_path: Path, kit: Path, site: Path) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python3").write_text(FAKE_PYTHON)
    (bin_dir / "python3").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", QWEN_DOCS_OFFLINE_SITE=str(site))
    return subprocess.run(
        ["bash", str(RUN_SCRIPT), str(kit), "ls", "-A", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


def test_run_script_installs_into_an_emptied_folder(tmp_path: Path) -> None:
    kit, site = tmp_path / "kit", tmp_path / "site"
    kit.mkdir()
    (kit / "old-1.0-py3-none-any.whl").write_bytes(b"")
    first = run_script(tmp_path, kit, site)
    assert first.returncode == 0, first.stderr
    assert "old-1.0-py3-none-any.whl.installed" in first.stdout.split()
    (kit / "old-1.0-py3-none-any.whl").unlink()
    (kit / "new-1.0-py3-none-any.whl").write_bytes(b"")
    second = run_script(tmp_path, kit, site)  # the earlier kit's package must not stay and shadow
    assert second.returncode == 0, second.stderr
    assert sorted(second.stdout.split()) == [".qwen-docs-offline-site", "new-1.0-py3-none-any.whl.installed"]


def test_run_script_never_empties_a_folder_it_did_not_make(tmp_path: Path) -> None:
    kit, site = tmp_path / "kit", tmp_path / "site"
    kit.mkdir()
    (kit / "pkg-1.0-py3-none-any.whl").write_bytes(b"")
    site.mkdir()
    (site / "precious.txt").write_text("mine")
    result = run_script(tmp_path, kit, site)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "QWEN_DOCS_OFFLINE_SITE" in result.stderr and (site / "precious.txt").read_text() == "mine"


def test_run_script_without_wheels_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run_script(tmp_path, tmp_path / "empty", tmp_path / "site")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "no wheels in" in result.stderr and "*.whl" not in result.stderr
    assert not (tmp_path / "site").exists()
