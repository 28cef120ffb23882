"""Decoding speed against the memory-bandwidth roofline, and the benchmark results the speed page shows.

Generating one token at batch 1 multiplies one vector by every weight matrix the token passes through, so
each weight is read from GPU memory once per token and used for two floating-point operations. No GPU can
do that faster than its memory delivers the bytes: ``tokens/s <= bandwidth / bytes read per token``, the
*roofline*. This module computes the bytes from a model's published configuration (no weights needed), for
bfloat16, bitsandbytes NF4 and int8 weights, any batch size and context length, and loads and presents the
results ``benchmarks/generation.py`` measured on a GPU.

What is counted per decoding step (one new token for each of ``batch`` sequences):

- every weight of attention, MLPs, norms, the router and ``lm_head`` (read in full however many sequences);
- for Qwen2-MoE only the routed experts that some token in the batch selected: ``top_k`` of them at batch 1
  and, for larger batches, the expected number of distinct experts if tokens choose uniformly and
  independently, ``E * (1 - (1 - k/E) ** batch)``, plus the shared expert;
- one embedding row per sequence (not the table);
- the KV cache of every sequence at the given context length (keys and values, all layers, bfloat16).

Quantized formats follow the site's bitsandbytes presets: the linear layers of attention, MLPs and shared
expert are quantized; embeddings, ``lm_head``, norms, the router and the routed experts (fused 3-D parameters
in transformers 5, which bitsandbytes does not quantize) stay in bfloat16, and so does Qwen2-MoE's
``shared_expert_gate`` in NF4.

Activations, the KV-cache writes and the logits are left out: they are small next to the weights.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import ResultsNotFoundError
from .standins import checkout_root

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from transformers import PretrainedConfig

__all__ = [
    "ANCHORS",
    "BENCHMARK_MODELS",
    "RESULTS_SCHEMA",
    "SPEC_BANDWIDTHS",
    "Anchor",
    "BenchmarkResults",
    "MarkdownText",
    "ModelSize",
    "Traffic",
    "WeightFormat",
    "figure_svg",
    "kv_cache_bytes_per_token",
    "load_results",
    "markdown_table",
    "model_size",
    "options_table",
    "plot_results",
    "plot_roofline",
    "results_dir",
    "results_table",
    "roofline_tokens_per_s",
    "spec_bandwidth",
    "traffic_per_step",
    "weight_bytes",
]

#: How linear-layer weights are stored: bfloat16, bitsandbytes NF4 (double quantization) or LLM.int8().
WeightFormat = Literal["bf16", "nf4", "int8"]
#: The models the benchmark measures (real sizes from their published configurations).
BENCHMARK_MODELS = ("Qwen/Qwen2-7B-Instruct", "Qwen/Qwen2-1.5B-Instruct", "Qwen/Qwen1.5-MoE-A2.7B-Chat")
#: Version of the results file format written by ``benchmarks/generation.py``.
RESULTS_SCHEMA = 1

#: Datasheet memory bandwidths (bytes/s), matched against ``torch.cuda.get_device_name()`` in this order.
SPEC_BANDWIDTHS: tuple[tuple[str, float, str], ...] = (
    ("H200", 4.8e12, "NVIDIA H200: 4.8 TB/s HBM3e"),
    ("H100 NVL", 3.9e12, "NVIDIA H100 NVL: 3.9 TB/s HBM3"),
    ("H100 PCIe", 2.0e12, "NVIDIA H100 PCIe: 2.0 TB/s HBM2e"),
    ("H100", 3.35e12, "NVIDIA H100 SXM: 3.35 TB/s HBM3"),
    ("A100-SXM4-80GB", 2.039e12, "NVIDIA A100 SXM4 80GB: 2.039 TB/s HBM2e"),
    ("A100 80GB PCIe", 1.935e12, "NVIDIA A100 PCIe 80GB: 1.935 TB/s HBM2e"),
    ("A100", 1.555e12, "NVIDIA A100 40GB: 1.555 TB/s HBM2"),
)

_BF16 = 2  # bytes
_NF4_BLOCK = 64  # weights per NF4 block; each has an absmax, quantized to 8 bits by double quantization
_NF4_NESTED_BLOCK = 256  # absmax values per second-level block, each with one float32 scale


def spec_bandwidth(device_name: str) -> tuple[float, str] | None:
    """The datasheet memory bandwidth (bytes/s) and its description for a GPU name, if known."""
    for pattern, value, label in SPEC_BANDWIDTHS:
        if pattern.lower() in device_name.lower():
            return value, label
    return None


def _linear_bytes(in_features: int, out_features: int, bias: bool, fmt: WeightFormat) -> float:
    weights = in_features * out_features
    stored: float
    if fmt == "bf16":
        stored = weights * _BF16
    elif fmt == "nf4":  # 4 bits, one 8-bit absmax per block, one float32 per nested block
        stored = weights / 2 + weights / _NF4_BLOCK + 4 * weights / (_NF4_BLOCK * _NF4_NESTED_BLOCK)
    elif fmt == "int8":  # 8 bits and one float32 scale per output row
        stored = weights + 4 * out_features
    else:
        raise ValueError(f"unknown weight format {fmt!r}; use 'bf16', 'nf4' or 'int8'")
    return stored + (out_features * _BF16 if bias else 0)


@dataclass(frozen=True)
class _Part:
    """A group of parameters: how many, bytes stored in each format, and how much of it one step reads."""

    name: str
    params: int
    stored: dict[str, float]  # weight format -> bytes


def _head_dim(config: Any) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def _sparse_layers(config: Any) -> list[bool]:
    if config.model_type != "qwen2_moe":
        return [False] * config.num_hidden_layers
    step = max(int(getattr(config, "decoder_sparse_step", 1) or 1), 1)
    dense = set(getattr(config, "mlp_only_layers", None) or [])
    return [i not in dense and config.num_experts > 0 and (i + 1) % step == 0 for i in range(config.num_hidden_layers)]


def _linears(
    *shapes: tuple[int, int, bool], quantized: Iterable[str] = ("nf4", "int8")
) -> tuple[int, dict[str, float]]:
    """Parameter count and stored bytes per format of some linear layers; formats not in ``quantized`` stay bf16."""
    quantized = set(quantized)
    params = sum(i * o + (o if b else 0) for i, o, b in shapes)
    stored = {fmt: sum(_linear_bytes(i, o, b, fmt if fmt in quantized else "bf16") for i, o, b in shapes)
              for fmt in ("bf16", "nf4", "int8")}
    return params, stored


def _plain(params: int) -> tuple[int, dict[str, float]]:
    return params, {fmt: float(params * _BF16) for fmt in ("bf16", "nf4", "int8")}


def _parts(config: Any) -> list[_Part]:
    h, v = config.hidden_size, config.vocab_size
    d = _head_dim(config)
    q, kv = config.num_attention_heads * d, config.num_key_value_heads * d
    parts: dict[str, list[tuple[int, dict[str, float]]]] = {}

    def add(name: str, value: tuple[int, dict[str, float]]) -> None:
        parts.setdefault(name, []).append(value)

    for sparse in _sparse_layers(config):
        add("attention", _linears((h, q, True), (h, kv, True), (h, kv, True), (q, h, False)))
        add("norms", _plain(2 * h))
        if sparse:
            e, m, s = config.num_experts, config.moe_intermediate_size, config.shared_expert_intermediate_size
            add("router", _plain(e * h))
            add("routed experts", _plain(e * 3 * h * m))  # fused 3-D parameters: bitsandbytes leaves them in bf16
            add("shared expert", _linears((h, s, False), (h, s, False), (s, h, False)))
            # The site's 4-bit preset keeps shared_expert_gate (a Linear(hidden, 1)) unquantized; int8 quantizes it.
            add("shared expert", _linears((h, 1, False), quantized=("int8",)))
        else:
            add("mlp", _linears((h, config.intermediate_size, False), (h, config.intermediate_size, False),
                                (config.intermediate_size, h, False)))
    add("norms", _plain(h))
    add("embedding", _plain(v * h))
    add("lm_head", _plain(v * h))  # lm_head stays unquantized with transformers' bitsandbytes defaults
    result = []
    for name, values in parts.items():
        result.append(_Part(name, sum(p for p, _ in values),
                            {fmt: sum(s[fmt] for _, s in values) for fmt in ("bf16", "nf4", "int8")}))
    return result


@dataclass(frozen=True)
class ModelSize:
    """Parameter counts of a model, from its configuration."""

    total: int  # every parameter (a tied lm_head counted once)
    active: int  # parameters one token uses (MoE: top_k routed experts), embedding table included
    by_part: dict[str, int]  # attention, mlp / routed experts / shared expert / router, norms, embedding, lm_head
    tied: bool


def model_size(config: PretrainedConfig) -> ModelSize:
    """Total and active parameters of a Qwen2 or Qwen2-MoE configuration."""
    by_part = {part.name: part.params for part in _parts(config)}
    tied = bool(getattr(config, "tie_word_embeddings", False))
    total = sum(by_part.values()) - (by_part["lm_head"] if tied else 0)
    active = total
    if "routed experts" in by_part:
        active -= round(by_part["routed experts"] * (1 - config.num_experts_per_tok / config.num_experts))
    return ModelSize(total=total, active=active, by_part=by_part, tied=tied)


def weight_bytes(config: PretrainedConfig, weight_format: WeightFormat = "bf16") -> float:
    """Bytes the weights take in memory (all experts; a tied ``lm_head`` once), bitsandbytes' quantization
    constants included (which layers are quantized: see the module docs)."""
    parts = {part.name: part.stored[weight_format] for part in _parts(config)}
    tied = bool(getattr(config, "tie_word_embeddings", False))
    return sum(parts.values()) - (parts["lm_head"] if tied else 0)


def kv_cache_bytes_per_token(config: PretrainedConfig, dtype_bytes: int = _BF16) -> int:
    """KV-cache bytes per token of context for one sequence: keys and values of every layer."""
    return int(2 * config.num_hidden_layers * config.num_key_value_heads * _head_dim(config) * dtype_bytes)


def _expected_experts(experts: int, top_k: int, batch: int) -> float:
    return experts * (1 - (1 - top_k / experts) ** batch)


@dataclass(frozen=True)
class Traffic:
    """Bytes read from memory in one decoding step (one new token for each sequence of the batch)."""

    weights: float
    kv_cache: float
    batch: int
    context: int
    weight_format: str

    @property
    def total(self) -> float:
        return self.weights + self.kv_cache

    @property
    def per_token(self) -> float:
        """Bytes per generated token (the step's bytes shared by the batch)."""
        return self.total / self.batch


def traffic_per_step(
    config: PretrainedConfig, *, weight_format: WeightFormat = "bf16", batch: int = 1, context: int = 0
) -> Traffic:
    """Bytes one decoding step reads (module docs): weights used by the batch plus its KV cache at ``context``."""
    if batch < 1 or context < 0:
        raise ValueError(f"batch={batch} must be >= 1 and context={context} >= 0")
    weights = 0.0
    for part in _parts(config):
        stored = part.stored[weight_format]
        if part.name == "embedding":
            weights += batch * config.hidden_size * _BF16
        elif part.name == "routed experts":
            e, k = config.num_experts, config.num_experts_per_tok
            weights += stored * min(_expected_experts(e, k, batch), e) / e
        else:
            weights += stored
    kv = batch * context * kv_cache_bytes_per_token(config)
    return Traffic(weights=weights, kv_cache=float(kv), batch=batch, context=context, weight_format=weight_format)


def roofline_tokens_per_s(
    config: PretrainedConfig, bandwidth: float, *, weight_format: WeightFormat = "bf16", batch: int = 1,
    context: int = 0,
) -> float:
    """The most tokens/s *per sequence* memory bandwidth allows (multiply by ``batch`` for the throughput)."""
    return bandwidth / traffic_per_step(config, weight_format=weight_format, batch=batch, context=context).total


# ---------------------------------------------------------------------------------------------------------------
# Published figures measured elsewhere, quoted beside ours as anchors (never as our results).


@dataclass(frozen=True)
class Anchor:
    """A published decoding speed, with its hardware and source."""

    what: str
    hardware: str
    tokens_per_s: float
    source: str
    url: str
    memory_gib: float | None = None
    notes: str = ""


ANCHORS: tuple[Anchor, ...] = (
    Anchor("Qwen2.5-7B-Instruct BF16, transformers 4.46", "NVIDIA A100 80GB", 40.38,
           "Qwen speed benchmark", "https://qwen.readthedocs.io/en/latest/getting_started/speed_benchmark.html",
           memory_gib=14.38, notes="batch 1, 2,048 forced new tokens; same sizes as Qwen2-7B"),
    Anchor("Qwen2.5-7B-Instruct BF16, vLLM 0.6.3", "NVIDIA A100 80GB", 84.28,
           "Qwen speed benchmark", "https://qwen.readthedocs.io/en/latest/getting_started/speed_benchmark.html",
           notes="batch 1, 2,048 forced new tokens"),
    Anchor("Llama-3.1-8B BF16, transformers generate", "NVIDIA H100", 41.0, "bitsandbytes benchmarking README",
           "https://github.com/bitsandbytes-foundation/bitsandbytes/tree/main/benchmarking", notes="batch 1"),
    Anchor("Llama-3.1-8B NF4, transformers generate", "NVIDIA H100", 30.1, "bitsandbytes benchmarking README",
           "https://github.com/bitsandbytes-foundation/bitsandbytes/tree/main/benchmarking", notes="batch 1"),
    Anchor("Llama-3.1-8B NF4 + double quant, transformers generate", "NVIDIA H100", 24.3,
           "bitsandbytes benchmarking README",
           "https://github.com/bitsandbytes-foundation/bitsandbytes/tree/main/benchmarking", notes="batch 1"),
    Anchor("Llama-3.1-8B int8, transformers generate", "NVIDIA H100", 19.2, "bitsandbytes benchmarking README",
           "https://github.com/bitsandbytes-foundation/bitsandbytes/tree/main/benchmarking", notes="batch 1"),
    Anchor("Llama-3.1-8B int8 with outlier decomposition", "NVIDIA H100", 12.2, "bitsandbytes benchmarking README",
           "https://github.com/bitsandbytes-foundation/bitsandbytes/tree/main/benchmarking", notes="batch 1"),
    Anchor("Llama-2-7B BF16, gpt-fast (static cache + torch.compile)", "NVIDIA A100", 104.9, "gpt-fast README",
           "https://github.com/pytorch-labs/gpt-fast", notes="batch 1"),
)


# ---------------------------------------------------------------------------------------------------------------
# Results written by benchmarks/generation.py


@dataclass
class BenchmarkResults:
    """One results file: where and when it was measured, the bandwidth found, and one row per measurement."""

    path: Path
    provenance: dict[str, Any]
    bandwidth: dict[str, Any]
    settings: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def device(self) -> str:
        return str(self.provenance.get("device_name", "unknown device"))

    @property
    def tiny(self) -> bool:
        return bool(self.provenance.get("tiny"))

    def describe(self) -> str:
        """Where, when, with what, at which commit, and how: the rows' dates and commits, which span several runs
        where a run added its rows to an earlier one's file (only ever one of the same provenance and settings)."""
        p = self.provenance
        versions = ", ".join(f"{name} {version}" for name, version in (p.get("versions") or {}).items() if version)
        driver = f", driver {p['driver']}" if p.get("driver") else ""
        mig = " (a MIG instance)" if str(p.get("mig_mode") or "").lower() == "enabled" else ""
        dates = sorted({d for d in (_utc(row.get("date")) for row in self.rows) if d}
                       or {d for d in [_utc(p.get("date"))] if d})
        when = ("on an unknown date" if not dates else f"on {dates[0]}" if len(dates) == 1
                else f"in {len(dates)} runs from {dates[0]} to {dates[-1]}")
        runs = dict.fromkeys((row.get("commit"), row.get("dirty", p.get("dirty"))) for row in self.rows)
        commits = [str(commit or "unknown")[:10] + (" with uncommitted changes" if dirty else "")
                   for commit, dirty in (runs or {(p.get("commit"), p.get("dirty")): None})]
        at = f"at commit{'s' if len(commits) > 1 else ''} {', '.join(commits)}"
        s = self.settings
        how = ""
        if s.get("new_tokens"):
            how = (f" Each row: {s.get('prompt_tokens')}-token prompts, {s['new_tokens']} new tokens, the median of "
                   f"{s.get('repeats')} timed run(s) after {s.get('warmup')} warm-up run(s).")
        return f"Measured on {self.device}{mig}{driver} {when}, with {versions}, {at}.{how}"

    def describe_bandwidth(self) -> str:
        """The memory bandwidth the rows' rooflines divide by, how it was measured, and the datasheet's."""
        b = self.bandwidth
        tb = "{:.2f} TB/s".format
        if b.get("read_bytes_per_s") and b.get("copy_bytes_per_s"):
            text = (f"Memory bandwidth measured: {tb(b['read_bytes_per_s'] / 1e12)} reading a large tensor once, "
                    f"{tb(b['copy_bytes_per_s'] / 1e12)} copying one (bytes read + written); the roofline uses the "
                    f"larger")
        else:  # files written before the read-only pass was measured
            text = f"Copy bandwidth measured (bytes read + written): {tb(b['measured_bytes_per_s'] / 1e12)}"
        used = sorted({row["bandwidth_bytes_per_s"] for row in _ok(self.rows) if row.get("bandwidth_bytes_per_s")})
        if len(used) > 1:  # rows added by later runs: each row's roofline used its own run's measurement
            text += f" (each run its own: {tb(used[0] / 1e12)} to {tb(used[-1] / 1e12)})"
        spec = b.get("spec")
        return text + (f"; datasheet: {spec}." if spec else ".")


def _utc(date: Any) -> str | None:
    try:
        return dt.datetime.fromisoformat(str(date)).astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return None


#: Overrides where the benchmark results are (needed where the package is installed rather than run from a checkout).
RESULTS_VARIABLE = "QWEN_DOCS_BENCHMARK_RESULTS"


def results_dir() -> Path:
    """Where the benchmark writes its results: ``$QWEN_DOCS_BENCHMARK_RESULTS``, else ``benchmarks/results`` of
    the checkout this package runs from.

    An installed package (site-packages) has no checkout around it, and no results: that raises
    :class:`~qwen_docs_helpers.errors.ResultsNotFoundError` rather than naming a folder that cannot exist."""
    override = os.environ.get(RESULTS_VARIABLE)
    if override:
        return Path(override)
    root = checkout_root(Path(__file__).parent)
    if root is None:
        raise ResultsNotFoundError(
            "qwen_docs_helpers is installed, not run from a qwen-docs checkout, so there is no benchmarks/results",
            f"set {RESULTS_VARIABLE} to the folder holding the results files, or run from a checkout "
            "(pip install -e .)")
    return root / "benchmarks" / "results"


def load_results(folder: str | Path, *, include_tiny: bool = False) -> list[BenchmarkResults]:
    """Every results file (``*.json``) in ``folder``, newest first; tiny-configuration test runs are skipped.

    A folder that does not exist raises :class:`~qwen_docs_helpers.errors.ResultsNotFoundError` (a mistyped path
    would otherwise read as "no results yet"); an existing folder without results gives ``[]``."""
    if not Path(folder).is_dir():
        raise ResultsNotFoundError(f"no such folder: {Path(folder).resolve()}",
                                   "pass the folder holding the benchmark's results files (benchmarks/results of a "
                                   "checkout, see results_dir())")
    found = []
    for path in sorted(Path(folder).glob("*.json")):
        data = json.loads(path.read_text())
        if data.get("schema") != RESULTS_SCHEMA:
            raise ValueError(f"{path}: results schema {data.get('schema')!r}, expected {RESULTS_SCHEMA}")
        result = BenchmarkResults(path, data["provenance"], data["bandwidth"], data["settings"], list(data["rows"]))
        if include_tiny or not result.tiny:
            found.append(result)
    return sorted(found, key=lambda r: str(r.provenance.get("date", "")), reverse=True)


def _fmt(value: float | None, digits: int = 1, scale: float = 1.0) -> str:
    return "–" if value is None else f"{value / scale:,.{digits}f}"  # noqa: RUF001 (an en dash for "none")


def _ok(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if row.get("status") == "ok"]


def _short(model_id: str) -> str:
    return model_id.split("/")[-1]


class MarkdownText(str):
    """Markdown that a notebook renders (``display(text)``, or the cell's last expression) and a plain Python
    script prints as it is, a readable table."""

    __slots__ = ()

    def _repr_markdown_(self) -> str:
        return str(self)


def markdown_table(
    header: Sequence[str], rows: Iterable[Sequence[object]], *, left: int = 1, title: str = ""
) -> MarkdownText:
    """A Markdown table: the ``left`` first columns aligned left, the others (numbers) right, under ``title`` (a
    Markdown paragraph) if given. Cells are written with ``str``, so format numbers first; ``|`` is escaped (by
    hand: tabulate's "pipe" format, the one kept library at hand, leaves a ``|`` in a cell to split it)."""

    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    align = "|" + "|".join("---" if i < left else "--:" for i in range(len(header))) + "|"
    table = "\n".join([line(header), align, *(line(row) for row in rows)])
    return MarkdownText(f"{title}\n\n{table}" if title else table)


def results_table(result: BenchmarkResults, *, models: Sequence[str] | None = None) -> str:
    """Markdown: per model, a table of every successful row (speed, first token, memory, share of the roofline),
    then the rows that failed, with their errors."""
    header = ("variant", "batch", "tok/s per sequence", "tok/s, all sequences", "first token, ms",
              "peak memory, GiB", "roofline tok/s", "share of roofline")
    sections = []
    ok = _ok(result.rows)
    for model in dict.fromkeys(row["model"] for row in result.rows):
        if models is not None and model not in models:
            continue
        rows = []
        for row in (r for r in ok if r["model"] == model):
            share = row.get("roofline_share")
            rows.append((
                row["variant"], row["batch"], _fmt(row["decode_tokens_per_s"]), _fmt(row["throughput_tokens_per_s"]),
                _fmt(row["ttft_s"], 1, 1e-3), _fmt(row.get("peak_memory_bytes"), 2, 2**30),
                _fmt(row["roofline_tokens_per_s"], 0), "–" if share is None else f"{share:.0%}",  # noqa: RUF001
            ))
        lines = [f"**{_short(model)}**", "", markdown_table(header, rows)]
        failed = [row for row in result.rows if row["model"] == model and row.get("status") != "ok"]
        if failed:
            lines += ["", "Not measured: " + "; ".join(
                f"{row['variant']} at batch {row['batch']} ({row.get('error', 'failed')})" for row in failed) + "."]
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


def options_table(result: BenchmarkResults, *, baseline: str = "sdpa") -> str:
    """What each option costs or gains in batch-1 speed and saves in peak memory, next to ``baseline``."""
    table = []
    rows = [row for row in _ok(result.rows) if row["batch"] == 1]
    for model in dict.fromkeys(row["model"] for row in rows):
        base = next((row for row in rows if row["model"] == model and row["variant"] == baseline), None)
        if base is None:
            continue
        for row in rows:
            if row["model"] != model or row["variant"] == baseline:
                continue
            speed = row["decode_tokens_per_s"] / base["decode_tokens_per_s"]
            memory = "–"  # noqa: RUF001
            if row.get("peak_memory_bytes") and base.get("peak_memory_bytes"):
                delta = (row["peak_memory_bytes"] - base["peak_memory_bytes"]) / 2**30
                memory = f"{delta:+.2f} GiB"
            table.append((_short(model), row["variant"], f"{speed:.2f}x", memory))
    return markdown_table(("model", "option", f"decode speed vs {baseline}", f"peak memory vs {baseline}"), table,
                          left=2)


#: Size (inches) and text sizes (points) of the speed page's plots: an image is shown at its own width on a desktop
#: (about 520 CSS pixels) and scaled to about two thirds on a phone, where 11 points still read as about 10 pixels.
_PLOT_WIDTH = 5.4
_PLOT_STYLE: dict[Any, Any] = {
    "font.size": 11.5, "axes.titlesize": 12, "axes.labelsize": 11.5, "xtick.labelsize": 11,
    "ytick.labelsize": 11, "legend.fontsize": 11,
}
_SPEED, _ROOFLINE, _MEMORY = "#4c72b0", "#c44e52", "#55a868"


def _number(value: float, _position: object = None) -> str:
    """A tick label: thousands separated, no exponent, no trailing zeros (``1,000``, ``0.5``)."""
    return f"{value:,.0f}" if abs(value) >= 10 or value == round(value) else f"{value:g}"


def plot_results(result: BenchmarkResults) -> Figure:
    """Batch-1 decoding speed per variant for each model, with its roofline, and peak memory beside it: one row
    per model, with a legend."""
    logging.getLogger("matplotlib").setLevel(logging.ERROR)  # a first import builds a font cache and says so
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.layout_engine import ConstrainedLayoutEngine
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    rows = [row for row in _ok(result.rows) if row["batch"] == 1]
    models = list(dict.fromkeys(row["model"] for row in rows))
    with matplotlib.rc_context(_PLOT_STYLE):
        counts = [sum(row["model"] == model for row in rows) for model in models]
        height = max(0.5 + sum(1.0 + 0.28 * count for count in counts), 2.0)
        figure = Figure(figsize=(_PLOT_WIDTH, height), layout=ConstrainedLayoutEngine(h_pad=0.1, w_pad=0.15))
        axes = figure.subplots(max(len(models), 1), 2, squeeze=False, width_ratios=(3, 2),
                               height_ratios=[max(count, 1) for count in counts] or None)
        for (speed_axis, memory_axis), model in zip(axes, models, strict=False):
            mine = [row for row in rows if row["model"] == model]
            names = [row["variant"] for row in mine]
            speed_axis.barh(names, [row["decode_tokens_per_s"] for row in mine], color=_SPEED)
            for y, row in enumerate(mine):
                speed_axis.plot([row["roofline_tokens_per_s"]] * 2, [y - 0.42, y + 0.42], color=_ROOFLINE,
                                linewidth=2.5)
            speed_axis.set_title(_short(model), loc="left", fontweight="bold")
            speed_axis.set_xlabel("tokens/s at batch 1")
            speed_axis.invert_yaxis()
            memory_axis.sharey(speed_axis)
            memory_axis.barh(names, [(row.get("peak_memory_bytes") or 0) / 2**30 for row in mine], color=_MEMORY)
            memory_axis.set_xlabel("peak GPU memory, GiB")
            memory_axis.tick_params(axis="y", left=False, labelleft=False)
            for axis in (speed_axis, memory_axis):
                axis.xaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]))
                axis.xaxis.set_major_formatter(FuncFormatter(_number))
                axis.grid(True, axis="x", alpha=0.3)
                axis.set_axisbelow(True)
        figure.legend(handles=[Patch(color=_SPEED, label="measured decoding speed"),
                               Line2D([], [], color=_ROOFLINE, linewidth=2.5, label="its roofline"),
                               Patch(color=_MEMORY, label="peak memory")],
                      loc="outside upper center", ncols=3, frameon=False, handlelength=1.2, columnspacing=1.0)
    return figure


def plot_roofline(
    configs: dict[str, PretrainedConfig], bandwidth: float, *, batches: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
    context: int = 1024, label: str = "",
) -> Figure:
    """Roofline throughput (tokens/s, all sequences) against batch size, one line per model, log-log, with the
    batch-1 values written beside the lines."""
    logging.getLogger("matplotlib").setLevel(logging.ERROR)
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    with matplotlib.rc_context(_PLOT_STYLE):
        figure = Figure(figsize=(_PLOT_WIDTH, 4.2), layout="constrained")
        axis = figure.subplots()
        for name, config in configs.items():
            values = [batch * roofline_tokens_per_s(config, bandwidth, batch=batch, context=context)
                      for batch in batches]
            (line,) = axis.plot(batches, values, marker="o", label=_short(name))
            axis.annotate(_number(values[0]), (batches[0], values[0]), xytext=(-7, 0), textcoords="offset points",
                          ha="right", va="center", color=line.get_color(), fontsize=10.5)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(list(batches), [str(b) for b in batches])
        axis.set_xlim(batches[0] / 2.5, batches[-1] * 1.25)  # room for the batch-1 values on the left
        axis.yaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
        axis.yaxis.set_major_formatter(FuncFormatter(_number))
        axis.yaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel("sequences decoded together (batch size)")
        axis.set_ylabel("tokens/s, all sequences")
        axis.set_title(f"Memory-bandwidth roofline{', ' + label if label else ''},\ncontext {context:,} tokens")
        axis.grid(True, which="major", alpha=0.3)
        axis.legend(loc="upper left")
    return figure


def figure_svg(figure: Figure) -> str:
    """The figure as SVG text with no date or random ids in it, so unchanged results give an unchanged page. The
    background is transparent: the page's stylesheet gives the image its card (``img.qd-plot``)."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "qwen-docs", "svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None}, transparent=True)
    return buffer.getvalue()
