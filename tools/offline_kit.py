"""Wheels for running the site build and the benchmark on an offline GPU machine whose python3 has CUDA torch.

``nox`` cannot install anything on a machine with no package index, and a wheelhouse of every pin in
requirements/constraints.txt would be mostly packages such a machine already has (numpy, matplotlib, ...).
This gathers only what the target lacks: the dependency closure of ``qwen-docs-helpers[docs,quant]`` with
this environment's (pinned) versions, minus the packages the target lists, plus those whose listed version
breaks a requirement. No library does this subtraction (pip can only download or install everything), so it
is written here; downloading stays pip's job.

Usage (Python 3.11+, the python that has the pinned environment, e.g. ``.nox/docs/bin/python``)::

    python tools/offline_kit.py build --target tools/targets/device-image.txt --python-version 3.12 \\
        --also transformers --skip debugpy --cuda 130 --out .whl
    # on the target, from a copy of the checkout with .whl/ in it:
    bash tools/offline_run.sh .whl python3 -m qwen_docs_helpers.sitebuild docs docs/_build

``check`` (run on the target by offline_run.sh) lists every requirement of the closure that the installed
packages do not meet, so a missing or wrong wheel fails at once with its name, not minutes into a build.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

PROJECT = "qwen-docs-helpers"
#: Set by offline_run.sh to the kit in use, so that checks and tests there know what it left out.
KIT_VARIABLE = "QWEN_DOCS_OFFLINE_KIT"
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
EXTRAS = frozenset({"docs", "quant"})
#: manylinux tags pip may take for the target; pip matches each exactly.
PLATFORMS = (
    "manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_26_x86_64", "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64",
)


@dataclass(frozen=True)
class Need:
    """One package of the closure: the version this environment pins, and what requires it."""

    name: str
    version: str
    wanted_by: tuple[Requirement, ...]


def marker_env(python_version: str, extra: str) -> dict[str, str]:
    """The marker values of a Linux x86-64 CPython ``python_version`` target."""
    return {
        "python_version": python_version, "python_full_version": f"{python_version}.0", "os_name": "posix",
        "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
        "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": extra,
    }


def applies(requirement: Requirement, extras: frozenset[str], python_version: str) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate(marker_env(python_version, extra)) for extra in extras | {""})


def root_requirements(pyproject: Path = PYPROJECT, extras: frozenset[str] = EXTRAS) -> list[Requirement]:
    """The project's own requirements with ``extras``, read from pyproject.toml (on the target it is not installed)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    texts = list(project["dependencies"])
    for extra in sorted(extras):
        texts += project["optional-dependencies"][extra]
    return [Requirement(text) for text in texts]


def closure(python_version: str, skipped: set[str] | frozenset[str] = frozenset()) -> dict[str, Need]:
    """Every distribution the project needs on the target, with the versions installed in this python.

    ``skipped`` packages (optional at run time, left out of a kit) are neither required nor followed.
    """
    extras_seen: dict[str, frozenset[str]] = {}
    wanted_by: dict[str, list[Requirement]] = {}
    todo = [(requirement, frozenset[str]()) for requirement in root_requirements()]
    while todo:
        requirement, extras = todo.pop()
        if not applies(requirement, extras, python_version):
            continue
        key = canonicalize_name(requirement.name)
        if key in skipped:
            continue
        wanted_by.setdefault(key, []).append(requirement)
        wanted_extras = frozenset(requirement.extras)
        if key in extras_seen and wanted_extras <= extras_seen[key]:
            continue
        extras_seen[key] = extras_seen.get(key, frozenset()) | wanted_extras
        try:
            dist = metadata.distribution(key)
        except metadata.PackageNotFoundError:
            sys.exit(f"offline_kit: {requirement.name} is not installed in {sys.executable}")
        todo += [(Requirement(text), extras_seen[key]) for text in dist.requires or []]
    return {
        key: Need(metadata.distribution(key).metadata["Name"], metadata.version(key), tuple(wanted_by[key]))
        for key in extras_seen
    }


def read_target(path: Path) -> dict[str, str | None]:
    """Packages the target has: one per line, ``name`` or ``name==version`` (``#`` starts a comment)."""
    have: dict[str, str | None] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            have[canonicalize_name(name)] = version.strip() or None
    return have


def kit_contents(
    needs: dict[str, Need], have: dict[str, str | None], also: set[str], skip: set[str]
) -> dict[str, str]:
    """The packages to carry, each with the reason."""
    chosen: dict[str, str] = {}
    for key, need in sorted(needs.items()):
        if key in skip:
            continue
        if key not in have:
            chosen[key] = "missing on the target"
        elif key in also:
            chosen[key] = f"asked for (target has {have[key] or 'another version'})"
        elif have[key] is not None:
            broken = [str(r) for r in need.wanted_by if not r.specifier.contains(Version(have[key]), prereleases=True)]
            if broken:
                chosen[key] = f"target's {have[key]} breaks {', '.join(broken)}"
    return chosen


def slim_bitsandbytes(wheel: Path, cuda: str) -> None:
    """Keep only the CPU and CUDA ``cuda`` native libraries of a bitsandbytes wheel (43 MB → about 3 MB).

    The wheel ships one library per CUDA, ROCm and XPU version; it loads the one matching torch.version.cuda.
    """
    keep = {"libbitsandbytes_cpu.so", f"libbitsandbytes_cuda{cuda}.so"}

    def dropped(member: str) -> bool:
        leaf = member.rsplit("/", 1)[-1]
        return leaf.startswith("libbitsandbytes_") and leaf not in keep

    with tempfile.NamedTemporaryFile(dir=wheel.parent, suffix=".whl", delete=False) as handle:
        slim = Path(handle.name)
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            if dropped(info.filename):
                continue
            data = source.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(line for line in lines if not dropped(line.split(",", 1)[0])).encode()
            target.writestr(info, data)
    if not any(name.endswith(f"libbitsandbytes_cuda{cuda}.so") for name in zipfile.ZipFile(slim).namelist()):
        slim.unlink()
        sys.exit(f"offline_kit: {wheel.name} has no library for CUDA {cuda}; check --cuda (torch.version.cuda there)")
    slim.replace(wheel)


def download(pins: list[str], python_version: str, out: Path) -> None:
    """Binary wheels for the target; a package published only as an sdist is built into a wheel here."""
    target = ["--python-version", python_version, "--implementation", "cp", "--only-binary=:all:"]
    for platform in PLATFORMS:
        target += ["--platform", platform]
    pip = [sys.executable, "-m", "pip"]
    for pin in pins:
        print(f"  {pin}", file=sys.stderr)
        got = subprocess.run(
            [*pip, "download", "--quiet", "--no-deps", *target, "-d", str(out), pin], capture_output=True, text=True
        )
        if got.returncode != 0:  # only an sdist: pure-Python ones build to a py3-none-any wheel
            subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "-w", str(out), pin], check=True)


def build(args: argparse.Namespace) -> int:
    have = read_target(args.target)
    also = {canonicalize_name(name) for name in args.also}
    skip = {canonicalize_name(name) for name in args.skip}
    unknown = sorted((also | skip) - closure(args.python_version).keys())
    if unknown:
        sys.exit(f"offline_kit: {', '.join(unknown)} not in the closure of {PROJECT}[{','.join(sorted(EXTRAS))}]")
    needs = closure(args.python_version, skip)
    chosen = kit_contents(needs, have, also, skip)
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.whl"):
        old.unlink()
    print(f"downloading {len(chosen)} wheels for CPython {args.python_version} into {args.out}", file=sys.stderr)
    download([f"{needs[key].name}=={needs[key].version}" for key in chosen], args.python_version, args.out)
    if "bitsandbytes" in chosen and args.cuda:
        (wheel,) = args.out.glob("bitsandbytes-*.whl")
        slim_bitsandbytes(wheel, args.cuda)
    manifest = {"python_version": args.python_version, "skipped": sorted(skip), "wheels": chosen}
    (args.out / "kit.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = 0
    for key, why in chosen.items():
        (wheel,) = [w for w in args.out.glob("*.whl") if canonicalize_name(w.name.split("-")[0]) == key]
        total += wheel.stat().st_size
        print(f"{wheel.stat().st_size / 2**20:7.1f} MiB  {needs[key].name}=={needs[key].version}: {why}")
    print(f"{total / 2**20:7.1f} MiB  in {len(chosen)} wheels")
    return 0


def left_out(kit: Path | str | None) -> set[str]:
    """The packages a kit left out on purpose (none without a kit)."""
    return set(json.loads((Path(kit) / "kit.json").read_text())["skipped"]) if kit else set()


def check(args: argparse.Namespace) -> int:
    """Requirements of the closure that this python's installed packages do not meet."""
    python_version = "{}.{}".format(*sys.version_info)
    skipped = left_out(args.kit)
    problems = []
    for need in closure(python_version, skipped).values():
        for requirement in need.wanted_by:
            installed = metadata.version(requirement.name)  # closure() already failed on a missing one
            if not requirement.specifier.contains(Version(installed), prereleases=True):
                problems.append(f"{requirement.name} {installed} does not meet {requirement}")
    for problem in sorted(set(problems)):  # each once, however many packages want it
        print(f"offline_kit check: {problem}", file=sys.stderr)
    if problems:
        return 1
    note = f" ({', '.join(sorted(skipped))} left out on purpose)" if skipped else ""
    print(f"offline_kit check: every package {PROJECT} needs is installed and agrees{note}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("build", help="download the wheels the target lacks")
    make.add_argument("--target", type=Path, required=True, help="file listing the target's packages")
    make.add_argument("--python-version", required=True, help="the target's python3, e.g. 3.12")
    make.add_argument("--out", type=Path, default=Path(".whl"), help="folder for the wheels (emptied first)")
    make.add_argument("--also", nargs="*", default=[], help="carry these even where the target has them")
    make.add_argument("--skip", nargs="*", default=[], help="leave these out (optional at run time)")
    make.add_argument("--cuda", help="keep only this CUDA's bitsandbytes library, e.g. 130 for torch cu130")
    make.set_defaults(run=build)
    verify = commands.add_parser("check", help="fail if an installed package does not meet a requirement")
    verify.add_argument(
        "--kit", type=Path, default=os.environ.get(KIT_VARIABLE) or None,
        help=f"the kit folder: its kit.json names the packages left out (default: ${KIT_VARIABLE})",
    )
    verify.set_defaults(run=check)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
