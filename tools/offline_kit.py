"""Wheels for running the site build and the benchmark on an offline GPU machine whose python3 has CUDA torch.

``nox`` cannot install anything on a machine with no package index, and a wheelhouse of every pin in
requirements/constraints.txt would be mostly packages such a machine already has (numpy, matplotlib, ...).
This gathers only what the target lacks: the dependency closure of ``qwen-docs-helpers[docs,quant]`` with
this environment's (pinned) versions, minus the packages the target lists, plus those whose listed version
breaks a requirement. No library does this subtraction (pip can only download or install everything), so it
is written here; downloading stays pip's job.

Usage (Python 3.11+, the python that has the pinned environment, e.g. ``.nox/docs/bin/python``)::

    python tools/offline_kit.py build --target tools/targets/device-image.txt --python-version 3.12 \\
        --also transformers peft --skip debugpy --cuda 130 --out .whl
    # on the target, from a copy of the checkout with .whl/ in it:
    bash tools/offline_run.sh .whl python3 -m qwen_docs_helpers.sitebuild docs docs/_build

``check`` (run on the target by offline_run.sh) lists every requirement of the closure that the installed
packages do not meet, so a missing or wrong wheel fails at once with its name, not minutes into a build. It also
fails on a stale kit: ``build`` records hashes of requirements/constraints.txt and pyproject.toml in kit.json,
and ``check`` compares them with the checkout's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

PROJECT = "qwen-docs-helpers"
#: Set by offline_run.sh to the kit in use, so that checks and tests there know what it left out.
KIT_VARIABLE = "QWEN_DOCS_OFFLINE_KIT"
ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
#: Files a kit is built from: kit.json records their hashes, and ``check`` fails when the checkout's differ.
SOURCES = (CONSTRAINTS, PYPROJECT)
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


def closure(
    python_version: str, skipped: set[str] | frozenset[str] = frozenset(), missing: list[str] | None = None
) -> dict[str, Need]:
    """Every distribution the project needs on the target, with the versions installed in this python.

    ``skipped`` packages (optional at run time, left out of a kit) are neither required nor followed. A package
    that is not installed ends the program, or, given a ``missing`` list, is added to it and left out.
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
            if missing is None:
                sys.exit(f"offline_kit: {requirement.name} is not installed in {sys.executable}")
            missing.append(f"{requirement.name} is not installed in {sys.executable}")
            extras_seen.pop(key, None)
            continue
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


def read_pins(path: Path = CONSTRAINTS) -> dict[str, str]:
    """The exact pins (``name==version``) of a constraints file, by canonical name."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name.split("[", 1)[0].strip())] = version.split(";", 1)[0].strip()
    return pins


def pin_conflicts(needs: dict[str, Need], chosen: dict[str, str], pins: dict[str, str]) -> list[str]:
    """``name installed (pinned version)`` for each package of the kit whose installed version breaks its pin."""
    conflicts = []
    for key in sorted(chosen):
        pin = pins.get(key)
        if pin is None:
            continue
        try:
            same = Version(needs[key].version) == Version(pin)
        except InvalidVersion:
            same = needs[key].version == pin
        if not same:
            conflicts.append(f"{needs[key].name} {needs[key].version} (pinned {pin})")
    return conflicts


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_hashes() -> dict[str, str]:
    """The sha256 of each file a kit is built from, by its path in the checkout."""
    return {path.relative_to(ROOT).as_posix(): sha256(path) for path in SOURCES}


def _file_mode() -> int:
    """The mode a new file gets under this process's umask (0o644 under the usual 022)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


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
    slim.chmod(_file_mode())  # NamedTemporaryFile made it 0600: readable by its owner only
    if not any(name.endswith(f"libbitsandbytes_cuda{cuda}.so") for name in zipfile.ZipFile(slim).namelist()):
        slim.unlink()
        sys.exit(f"offline_kit: {wheel.name} has no library for CUDA {cuda}; check --cuda (torch.version.cuda there)")
    slim.replace(wheel)


def target_tags(python_version: str) -> set[Tag]:
    """The wheel tags a Linux x86-64 CPython ``python_version`` (with the PLATFORMS above) installs."""
    version = tuple(int(part) for part in python_version.split(".")[:2])
    interpreter = f"cp{version[0]}{version[1]}"
    return {
        *cpython_tags(version, platforms=PLATFORMS),
        *compatible_tags(version, interpreter, platforms=PLATFORMS),
    }


def fits_target(filename: str, python_version: str) -> bool:
    """Whether a wheel file name has a tag the target installs (py3-none-any, its cpXY or abi3, manylinux)."""
    try:
        tags = parse_wheel_filename(filename)[3]
    except InvalidWheelFilename:
        return False
    return not tags.isdisjoint(target_tags(python_version))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def download(pins: list[str], python_version: str, out: Path) -> None:
    """Binary wheels for the target; a package published only as an sdist is built into a wheel here, and kept
    only when that wheel installs on the target too (pure Python: py3-none-any)."""
    target = ["--python-version", python_version, "--implementation", "cp", "--only-binary=:all:"]
    for platform in PLATFORMS:
        target += ["--platform", platform]
    pip = [sys.executable, "-m", "pip"]
    for pin in pins:
        print(f"  {pin}", file=sys.stderr)
        got = subprocess.run(
            [*pip, "download", "--quiet", "--no-deps", *target, "-d", str(out), pin], capture_output=True, text=True
        )
        if got.returncode == 0:
            continue
        with tempfile.TemporaryDirectory(dir=out) as folder:
            built = subprocess.run(
                [*pip, "wheel", "--quiet", "--no-deps", "-w", folder, pin], capture_output=True, text=True
            )
            wheels = sorted(Path(folder).glob("*.whl"))
            unfit = [wheel.name for wheel in wheels if not fits_target(wheel.name, python_version)]
            if built.returncode != 0 or not wheels or unfit:
                local = f"built {', '.join(unfit)} here" if unfit else f"build here: {_last_line(built.stderr)}"
                sys.exit(
                    f"offline_kit: no wheel of {pin} for CPython {python_version} on manylinux x86-64 "
                    f"(pip download: {_last_line(got.stderr)}; {local}): build one on a machine like the target "
                    "and put it in the kit, or --skip the package if it is optional"
                )
            for wheel in wheels:
                shutil.move(wheel, out / wheel.name)


def build(args: argparse.Namespace) -> int:
    have = read_target(args.target)
    also = {canonicalize_name(name) for name in args.also}
    skip = {canonicalize_name(name) for name in args.skip}
    unknown = sorted((also | skip) - closure(args.python_version).keys())
    if unknown:
        sys.exit(f"offline_kit: {', '.join(unknown)} not in the closure of {PROJECT}[{','.join(sorted(EXTRAS))}]")
    needs = closure(args.python_version, skip)
    chosen = kit_contents(needs, have, also, skip)
    conflicts = pin_conflicts(needs, chosen, read_pins())
    if conflicts:
        sys.exit(
            f"offline_kit: {sys.executable} has versions other than {CONSTRAINTS.relative_to(ROOT)} pins: "
            f"{', '.join(conflicts)}; run build with the pinned environment's python (e.g. .nox/docs/bin/python "
            "after `nox -s docs`)"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.whl"):
        old.unlink()
    print(f"downloading {len(chosen)} wheels for CPython {args.python_version} into {args.out}", file=sys.stderr)
    download([f"{needs[key].name}=={needs[key].version}" for key in chosen], args.python_version, args.out)
    if "bitsandbytes" in chosen and args.cuda:
        (wheel,) = args.out.glob("bitsandbytes-*.whl")
        slim_bitsandbytes(wheel, args.cuda)
    manifest = {
        "python_version": args.python_version, "skipped": sorted(skip), "wheels": chosen,
        "versions": {key: needs[key].version for key in chosen}, "sources": source_hashes(),
    }
    (args.out / "kit.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = 0
    for key, why in chosen.items():
        (wheel,) = [w for w in args.out.glob("*.whl") if canonicalize_name(w.name.split("-")[0]) == key]
        total += wheel.stat().st_size
        print(f"{wheel.stat().st_size / 2**20:7.1f} MiB  {needs[key].name}=={needs[key].version}: {why}")
    print(f"{total / 2**20:7.1f} MiB  in {len(chosen)} wheels")
    return 0


def read_kit(kit: Path | str | None) -> dict:
    """A kit's kit.json (empty without a kit); a folder that is not a kit ends the program with one line."""
    if not kit:
        return {}
    path = Path(kit) / "kit.json"
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict) or not isinstance(manifest.get("skipped", []), list):
            raise ValueError("not a kit manifest")
    except (OSError, ValueError) as error:
        sys.exit(
            f"offline_kit: {path} cannot be read ({getattr(error, 'strerror', None) or error}): pass the folder "
            "`offline_kit.py build --out` wrote (or set $" + KIT_VARIABLE + "), or build the kit again"
        )
    return manifest


def left_out(kit: Path | str | None) -> set[str]:
    """The packages a kit left out on purpose (none without a kit)."""
    return set(read_kit(kit).get("skipped", []))


def kit_problems(manifest: dict) -> list[str]:
    """Why a kit does not fit this checkout: sources changed since it was built, or its packages not in use."""
    if not manifest:
        return []
    recorded = manifest.get("sources")
    if not isinstance(recorded, dict):
        return ["kit is stale: rebuild it (its kit.json records no hashes of the files it was built from)"]
    problems = []
    for name, digest in sorted(recorded.items()):
        path = ROOT / name
        if path.is_file() and sha256(path) != digest:
            problems.append(f"kit is stale: rebuild it ({name} changed since the kit was built)")
    for key, version in sorted((manifest.get("versions") or {}).items()):
        try:
            installed = metadata.version(key)
        except metadata.PackageNotFoundError:
            continue  # reported by the closure check when the project needs it
        if installed != version:
            problems.append(f"{key} {installed} is in use, not the kit's {version}: another copy shadows the kit's")
    return problems


def check(args: argparse.Namespace) -> int:
    """Requirements of the closure that this python's installed packages do not meet, every one of them."""
    python_version = "{}.{}".format(*sys.version_info)
    manifest = read_kit(args.kit)
    skipped = set(manifest.get("skipped", []))
    problems = kit_problems(manifest)
    for need in closure(python_version, skipped, missing=problems).values():
        for requirement in need.wanted_by:
            installed = metadata.version(requirement.name)  # closure() left out a missing one
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
