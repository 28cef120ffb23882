"""What a page or a bug report ran on: device, library versions, and real or stand-in weights per model.

Executed pages print this as their "executed on" stamp, and ``qwen-docs env`` prints it for bug reports,
so the description is computed in one place from the live process, never typed by hand.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import re
import resource
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from .published import known_model_ids, published_config
from .speed import weight_bytes
from .standins import UnreadableEntryError, resolve_in_hub, same_folder

_VERSIONED = ("torch", "transformers", "accelerate", "bitsandbytes")
#: Key, in the metadata of the stamp's output, of the facts of the run that the page's downloads state.
STAMP_FACTS_KEY = "qwen_docs_stamp"


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def active_hub_cache() -> Path:
    """The hub cache transformers reads from in this process."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


@dataclass(frozen=True)
class Runtime:
    """A snapshot of the runtime, ready to print."""

    device: str
    accelerator: str  # "cuda" or "cpu"
    python: str
    versions: dict[str, str | None]
    weights: dict[str, str]  # model id -> "real", "standin", "missing" or "unreadable" (a damaged cache entry)
    offline: bool
    revisions: dict[str, str] = field(default_factory=dict)  # model id -> commit of its real weights (hub snapshot)
    date: str = field(default_factory=lambda: dt.date.today().isoformat())
    hub_cache: str = field(default_factory=lambda: str(active_hub_cache()))  # where the weights were looked up
    # qwen-docs' private cache (the site build's, `qwen-docs standins`') when asked for and not hub_cache itself:
    # the build's stand-ins are there, not in the user's cache, so "missing" above alone would mislead
    private_hub_cache: str | None = None
    private_weights: dict[str, str] = field(default_factory=dict)  # model id -> as in weights, in that cache

    @property
    def uses_standins(self) -> bool:
        """Whether any model id ran on a stand-in (random weights): its generated text is noise."""
        return "standin" in self.weights.values()

    def as_text(self) -> str:
        """Plain lines for a terminal or a bug report."""
        lines = [
            f"date: {self.date}",
            f"device: {self.device} ({self.accelerator})",
            f"python: {self.python}",
            *(f"{name}: {version or 'not installed'}" for name, version in self.versions.items()),
            f"hub offline: {'yes' if self.offline else 'no'}",
            f"hub cache: {self.hub_cache}",
            *(f"weights {model_id}: {source}" + (f" (commit {self.revisions[model_id]})" if model_id in self.revisions
                                                  else "") for model_id, source in self.weights.items()),
        ]
        if self.private_hub_cache is not None:
            lines.append(f"qwen-docs private cache (site build, qwen-docs standins): {self.private_hub_cache}")
            lines.extend(f"private cache weights {model_id}: {source}"
                         for model_id, source in self.private_weights.items())
        return "\n".join(lines)

    def executed_on(self) -> str:
        """Device, Python and library versions, as the stamp prints them.

        The site's execution cache is keyed on this same text (``sphinx/site.py``), so a page that comes from
        the cache never shows versions other than the ones it ran on.
        """
        versions = ", ".join(f"{name} {version}" for name, version in self.versions.items() if version)
        return f"**{self.device}** ({self.accelerator}) with Python {self.python}, {versions}"

    def as_markdown(self, peak: PeakMemory | None = None) -> str:
        """The page stamp: what ran (and its ``peak`` memory), and a plain notice when the weights were stand-ins."""
        weights = "; ".join(
            f"`{model_id}`: {_WEIGHT_WORDS[source]}"
            + (f" at commit {_commit_link(model_id, self.revisions[model_id])}" if model_id in self.revisions else "")
            for model_id, source in self.weights.items()
        )
        stamp = (
            f":::{{admonition}} Executed on {self.date}\n:class: qd-stamp\n\n"
            f"Every code cell on this page ran on {self.executed_on()}.\n\nWeights: {weights or 'none loaded'}.\n"
            + (f"\n{peak.as_markdown()}\n" if peak is not None else "")
            + ":::\n"
        )
        if self.uses_standins:
            stamp += (
                "\n:::{admonition} Stand-in weights: the generated text is random noise\n"
                ":class: warning qd-standin-notice\n\n"
                "This build ran on **stand-in checkpoints** (it had no access to the real weights, or no GPU to run "
                "them on): tiny models "
                "with random weights, the real Qwen2 tokenizer, chat template and generation config. The code is "
                "exactly what runs with the real models, and prompts and token counts are real, but **the "
                "generated text is random noise**, everyday words in random order, not what the real model would "
                "answer.\n:::\n"
            )
        return stamp


@dataclass(frozen=True)
class PeakMemory:
    """The most memory a process has held so far: resident RAM, and GPU memory allocated by PyTorch (all GPUs)."""

    ram_bytes: int
    gpu_bytes: int | None  # None where CUDA is not in use

    def parts(self) -> list[str]:
        """What it held, in words: ``["44.5 GiB of GPU memory", "3.0 GiB of RAM"]`` (no GPU part without CUDA)."""
        gpu = [f"{self.gpu_bytes / 2**30:.1f} GiB of GPU memory"] if self.gpu_bytes is not None else []
        return [*gpu, f"{self.ram_bytes / 2**30:.1f} GiB of RAM"]

    def as_markdown(self) -> str:
        return f"Peak memory of the page's run: {' and '.join(f'**{part}**' for part in self.parts())}."


def _peak_rss() -> int:
    """Peak resident bytes of this process's own memory.

    Linux's VmHWM, not ``getrusage``'s ru_maxrss: that one survives exec, so a kernel started from a large
    process (the Sphinx build, pytest) would report its parent's size as its own peak.
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss if sys.platform == "darwin" else rss * 1024


def peak_memory() -> PeakMemory:
    """This process's peak memory; for a page's stamp cell, which runs last, that is the page's peak.

    On a GPU runner this says how large a GPU the page needs with the weights it ran on.
    """
    ram = _peak_rss()
    torch = sys.modules.get("torch")  # a page that never imported torch used no GPU
    gpu = None
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        gpu = sum(torch.cuda.max_memory_allocated(index) for index in range(torch.cuda.device_count()))
    return PeakMemory(ram_bytes=ram, gpu_bytes=gpu)


_HUB_COMMIT = re.compile(r"[0-9a-f]{40}")  # how the Hub names a snapshot

_WEIGHT_WORDS = {
    "real": "real weights", "standin": "stand-in (random weights)", "missing": "not available",
    "unreadable": "not available (damaged cache entry)",
}


def _commit_link(model_id: str, revision: str) -> str:
    """The commit as Markdown: a link to the model's files at that commit on the Hub when it is a Hub commit."""
    if _HUB_COMMIT.fullmatch(revision):
        return f"[`{revision[:7]}`](https://huggingface.co/{model_id}/tree/{revision})"
    return f"`{revision}`"


def _weights_in(hub: Path, model_ids: Iterable[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Model id -> ``real``, ``standin``, ``missing`` or ``unreadable`` in one hub cache folder (read only), and
    model id -> the commit of the real weights among them: which download produced a page's outputs."""
    weights: dict[str, str] = {}
    revisions: dict[str, str] = {}
    for model_id in model_ids:
        try:
            resolved = resolve_in_hub(model_id, hub)
        except UnreadableEntryError as error:  # a description must not fail: say which file, go on
            print(f"warning: {error}", file=sys.stderr)
            weights[model_id] = "unreadable"
            continue
        weights[model_id] = resolved.weights if resolved else "missing"
        if resolved is not None and resolved.weights == "real":
            revisions[model_id] = resolved.revision
    return weights, revisions


def describe_runtime(model_ids: Iterable[str] | None = None, private_hub: Path | None = None) -> Runtime:
    """Describe this process's runtime; ``model_ids`` defaults to every id the site knows.

    ``private_hub`` (``standins.hub_dir()``) also looks the models up in qwen-docs' private cache, unless that is
    the hub cache in use already; nothing is written to either.
    """
    import torch

    if torch.cuda.is_available():
        device, accelerator = torch.cuda.get_device_name(0), "cuda"
    else:
        device, accelerator = _cpu_name(), "cpu"
    hub = active_hub_cache()
    model_ids = list(model_ids if model_ids is not None else known_model_ids())
    private = None if private_hub is None or same_folder(private_hub, hub) else private_hub
    weights, revisions = _weights_in(hub, model_ids)
    return Runtime(
        device=device,
        accelerator=accelerator,
        python=platform.python_version(),
        versions={name: _version(name) for name in _VERSIONED},
        weights=weights,
        revisions=revisions,
        offline=os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"},
        hub_cache=str(hub),
        private_hub_cache=str(private) if private is not None else None,
        private_weights=_weights_in(private, model_ids)[0] if private is not None else {},
    )


def stamp_facts(runtime: Runtime, peak: PeakMemory | None) -> dict[str, object]:
    """What the page's ``.py`` download says of its memory: the run's device, weights and peak, and the size
    each named model's real weights have in bfloat16 (from its published configuration), in the page's order."""
    sizes: list[tuple[str, int]] = []  # pairs, not a mapping: notebooks store mappings with their keys sorted
    for model_id in runtime.weights:
        with contextlib.suppress(KeyError):  # an id with no published configuration has no known size
            sizes.append((model_id, round(weight_bytes(published_config(model_id), "bf16"))))
    return {
        "device": runtime.device,
        "accelerator": runtime.accelerator,
        "weights": dict(runtime.weights),
        "revisions": dict(runtime.revisions),
        "peak": None if peak is None else {"ram_bytes": peak.ram_bytes, "gpu_bytes": peak.gpu_bytes},
        "weight_bytes_bf16": sizes,
    }


def page_stamp(model_ids: Iterable[str]) -> object:
    """The stamp as a rich Markdown display object, for the hidden cell that runs last on an executed page.

    Its output's metadata carries :func:`stamp_facts` under :data:`STAMP_FACTS_KEY`, for the page's downloads.
    """
    from IPython.display import Markdown

    runtime, peak = describe_runtime(model_ids), peak_memory()
    return Markdown(runtime.as_markdown(peak), metadata={STAMP_FACTS_KEY: stamp_facts(runtime, peak)})
