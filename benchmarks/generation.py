"""Decoding speed, time to first token and peak memory of Qwen2 / Qwen2-MoE with transformers, against the roofline.

Models of the real sizes are built on the device from their published configurations with random bfloat16
weights (nothing is downloaded): timings and memory are those of the real architecture, the text is noise.
For each model it measures, with a forced output length (no end-of-sequence token can stop a run):

- ``eager``: plain ``generate`` with transformers' reference implementations (eager attention; for MoE also
  the eager experts loop), batch 1;
- ``sdpa``: plain ``generate`` with the defaults (SDPA attention; MoE: grouped_mm experts), each batch size;
- ``fast``: :func:`qwen_docs_helpers.fast.prepare_fast` (static cache, compiled decoding, bucket padding),
  each batch size, each compiled into its own static-shape graph (``dynamic=False``) in its warm-up;
- ``nf4`` / ``int8``: the site's bitsandbytes presets, quantized from the same weights, batch 1.

Each row gets warm-up runs, then the median of ``--repeats`` timed runs: time to first token (``generate``
with one new token) and the full run, whose difference gives the decoding speed; ``torch._dynamo``'s counters
check that no timed run compiled. Each row also gets the bytes one decoding step reads
(:func:`qwen_docs_helpers.speed.traffic_per_step`, at the mean context length of the run) and its share of the
roofline: the measured memory bandwidth divided by those bytes. The bandwidth is the larger of a read-only
pass (``sum`` of a large tensor) and a device-to-device copy (bytes read + written), each timed after a
warm-up over at least ~200 iterations and a second; each row records the figure it used.

Results go to ``benchmarks/results/<gpu>.json`` with where, when and with what they were measured. Rows of an
earlier run in that file are kept (unless measured again) only if that run had the same provenance (device,
driver, CUDA, Python, library versions, MIG mode, ``--tiny``) and settings (prompt and new tokens, warm-up,
repeats, compile backend and dynamic); otherwise the earlier file is moved aside to ``<gpu>.<its date>.json``,
beside it, and keeps its own description. The file is rewritten after every row, so a run cut short keeps what
it measured. Progress goes to stderr. A model that cannot be built or checked is recorded as failed and the
next one runs; the exit status is 1 if any row or model of this run failed, else 0.

The commit comes from ``git``; in a copy without ``.git`` (say, one copied to an offline GPU machine) set
``QWEN_DOCS_COMMIT`` to the commit it was copied from (whether it had uncommitted changes is then unknown).

Usage::

    python benchmarks/generation.py                       # CUDA, all models, variants and batch sizes
    python benchmarks/generation.py --models Qwen/Qwen2-7B-Instruct --variants sdpa fast
    python benchmarks/generation.py --device cpu --tiny --output /tmp/tiny.json   # the same code, tiny configs
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import gc
import json
import logging
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing the package

from qwen_docs_helpers.speed import (  # noqa: E402
    BENCHMARK_MODELS,
    RESULTS_SCHEMA,
    model_size,
    spec_bandwidth,
    traffic_per_step,
)

VARIANTS = ("eager", "sdpa", "fast", "nf4", "int8")
BATCHED_VARIANTS = ("sdpa", "fast")  # the others run at batch 1 only
DEFAULT_BATCHES = (1, 4, 16)
#: Sizes of the --tiny configurations: the published architectures, shrunk (GQA ratio and MoE routing kept).
TINY_DENSE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_window_layers": 2, "vocab_size": 1024}
TINY_MOE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 4, "max_window_layers": 2, "vocab_size": 1024, "num_experts": 8,
            "num_experts_per_tok": 2, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 64}
_TOKEN_IDS = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
_PROGRESS = sys.stderr


def log(message: str) -> None:
    print(message, file=_PROGRESS, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Environment


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _run(*command: str) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def provenance(device: str, tiny: bool) -> dict[str, Any]:
    import torch

    cuda = device == "cuda"
    driver = _run("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader") if cuda else None
    mig = _run("nvidia-smi", "--query-gpu=mig.mode.current", "--format=csv,noheader") if cuda else None
    commit = _run("git", "rev-parse", "HEAD")
    status = _run("git", "status", "--porcelain", "--untracked-files=no") if commit else None
    if commit is None:  # no git or no .git (a copy on an offline GPU machine): the caller may say which commit
        commit = os.environ.get("QWEN_DOCS_COMMIT", "").strip() or None
    return {
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if cuda else _cpu_name(),
        "device_memory_bytes": torch.cuda.get_device_properties(0).total_memory if cuda else None,
        "driver": driver.splitlines()[0] if driver else None,
        "cuda": torch.version.cuda if cuda else None,
        "mig_mode": mig.splitlines()[0].strip() if mig else None,
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in ("torch", "transformers", "accelerate", "bitsandbytes")},
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "dirty": bool(status) if status is not None else None,
        "tiny": tiny,
        "c_compiler": c_compiler(),
        "argv": sys.argv[1:],
    }


def c_compiler() -> str | None:
    """The C compiler triton would use to build its launchers (``$CC``, else ``cc`` or ``gcc``), if any."""
    return shutil.which(os.environ.get("CC") or "cc") or shutil.which("gcc")


def slug(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _rate(operation: Callable[[], Any], nbytes: int, device: str, min_iterations: int, min_seconds: float,
          ) -> tuple[float, int]:
    """Bytes/s of ``operation`` (``nbytes`` moved per call) after a warm-up, timed over at least ``min_iterations``
    calls and ``min_seconds`` (CUDA events on a GPU); also the number of timed calls."""
    import torch

    for _ in range(3):
        operation()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(3):
        operation()
    synchronize(device)
    per_call = max((time.perf_counter() - start) / 3, 1e-9)
    iterations = max(min_iterations, int(min_seconds / per_call) + 1)
    if device == "cuda":
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(iterations):
            operation()
        end.record()
        end.synchronize()
        elapsed = begin.elapsed_time(end) / 1e3
    else:
        start = time.perf_counter()
        for _ in range(iterations):
            operation()
        elapsed = time.perf_counter() - start
    return nbytes * iterations / elapsed, iterations


def measure_bandwidth(device: str) -> dict[str, Any]:
    """Memory bandwidth two ways: a read-only pass (``sum`` of a bf16 tensor: each byte read once, as decoding
    reads its weights) and a device-to-device copy (each byte read and written once; writes can cost more than
    reads). The roofline uses the larger (``measured_bytes_per_s``)."""
    import torch

    cuda = device == "cuda"
    read_bytes = 2 * 2**30 if cuda else 2**26
    copy_bytes = 2**30 if cuda else 2**26
    min_iterations, min_seconds = (200, 1.0) if cuda else (5, 0.2)
    data = torch.empty(read_bytes // 2, dtype=torch.bfloat16, device=device).normal_()
    read, read_iterations = _rate(data.sum, read_bytes, device, min_iterations, min_seconds)
    del data
    source = torch.empty(copy_bytes, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    copy, copy_iterations = _rate(functools.partial(target.copy_, source), 2 * copy_bytes, device,
                                  min_iterations, min_seconds)
    del source, target
    free(device)
    timer = "CUDA events" if cuda else "perf_counter"
    return {
        "measured_bytes_per_s": max(read, copy),
        "read_bytes_per_s": read,
        "copy_bytes_per_s": copy,
        "method": f"the larger of a read-only pass (torch sum of a {read_bytes}-byte bf16 tensor, "
                  f"{read_iterations} times) and a copy (torch copy_ of a {copy_bytes}-byte tensor, "
                  f"{copy_iterations} times, bytes read + written), after warm-up, timed with {timer}",
    }


# ----------------------------------------------------------------------------------------------------------------
# Models


def build_config(model_id: str, tiny: bool) -> Any:
    from qwen_docs_helpers.published import published_config

    config = published_config(model_id)
    if tiny:
        sizes = TINY_MOE if config.model_type == "qwen2_moe" else TINY_DENSE
        config = published_config(model_id, **sizes, **_TOKEN_IDS)
    return config


def random_model(config: Any, device: str) -> Any:
    """The architecture with random bfloat16 weights, built on ``device`` without transformers' slow init."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    torch.manual_seed(0)
    with torch.device(device), no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.tie_weights()  # no_init_weights skips init_weights, which is where a tied lm_head gets tied
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim > 1:
                parameter.normal_(0.0, 0.02)
            elif "norm" in name:
                parameter.fill_(1.0)
            else:
                parameter.zero_()
    return _ready(model)


def _ready(model: Any) -> Any:
    """Eval mode, greedy, and no end-of-sequence token: every run generates exactly the tokens asked for."""
    from transformers import GenerationConfig

    model.eval()
    model.generation_config = GenerationConfig(do_sample=False, eos_token_id=None, bos_token_id=None, pad_token_id=0)
    return model


def quantized_model(config: Any, state_dict: dict[str, Any], preset: str, device: str) -> Any:
    """The same weights quantized at load time with the site's bitsandbytes preset."""
    import torch
    from transformers import AutoModelForCausalLM

    from qwen_docs_helpers.quantization import bnb_config

    cls = AutoModelForCausalLM._model_mapping[type(config)]
    model = cls.from_pretrained(
        None, config=config, state_dict=state_dict, dtype=torch.bfloat16, attn_implementation="sdpa",
        quantization_config=bnb_config(preset, model_type=config.model_type),
        device_map={"": 0} if device == "cuda" else device,
    )
    return _ready(model)


def free(device: str) -> None:
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------------------------
# Measurements


@dataclass
class Settings:
    device: str
    tiny: bool
    prompt_tokens: int
    new_tokens: int
    warmup: int
    repeats: int
    batches: tuple[int, ...]
    variants: tuple[str, ...]
    compile_backend: str
    dynamic: bool = False  # the fast path's graphs: one static-shape graph per batch size, never a dynamic one


def compile_config(settings: Settings) -> Any:
    """The fast path's ``CompileConfig``: one graph (``fullgraph``) with static shapes (``dynamic=False``), so
    each batch size compiles its own graph in its warm-up. With dynamo's default (``dynamic=None``) the second
    batch size would recompile into a dynamic-batch graph that later batch sizes reuse, and which graph a row
    measured would depend on the order of the rows. On CUDA with inductor: CUDA graphs (``reduce-overhead``)."""
    from transformers import CompileConfig

    if settings.compile_backend == "inductor" and settings.device == "cuda":
        return CompileConfig(fullgraph=True, mode="reduce-overhead", dynamic=settings.dynamic)
    return CompileConfig(backend=settings.compile_backend, fullgraph=True, mode="default", dynamic=settings.dynamic)


def _compilations() -> int:
    """Graphs ``torch._dynamo`` has compiled so far in this process (it compiles only on a cache miss)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def plain_generate(model: Any, prompt: Any, **kwargs: Any) -> Any:
    import torch

    return model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), **kwargs)


def _timed(run: Callable[[], Any], device: str) -> tuple[float, Any]:
    synchronize(device)
    start = time.perf_counter()
    out = run()
    synchronize(device)
    return time.perf_counter() - start, out


def measure(generate: Callable[..., Any], prompt: Any, settings: Settings) -> dict[str, Any]:
    """Warm up, then time first token and full runs; check every run produced exactly the tokens asked for."""
    import torch

    device, new = settings.device, settings.new_tokens
    expected = prompt.shape[1] + new

    def first() -> Any:
        return generate(prompt, max_new_tokens=1)

    def full() -> Any:
        out = generate(prompt, max_new_tokens=new)
        if tuple(out.shape) != (prompt.shape[0], expected):
            raise RuntimeError(f"generate returned shape {tuple(out.shape)}, expected {(prompt.shape[0], expected)}")
        return out

    warmup_s = 0.0
    compiled = _compilations()
    # The peak counts from before the warm-up: a CUDA graph (the fast path) takes its working memory when the
    # warm-up records it, and its replays in the timed runs use that memory without allocating any.
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(settings.warmup):
        warmup_s += _timed(first, device)[0] + _timed(full, device)[0]
    warmed = _compilations()
    firsts, fulls = [], []
    for _ in range(settings.repeats):
        firsts.append(_timed(first, device)[0])
        fulls.append(_timed(full, device)[0])
    timed_compilations = _compilations() - warmed
    if timed_compilations:  # its time would be in the medians: the row is not a steady-state measurement
        raise RuntimeError(f"{timed_compilations} graph(s) compiled during the timed runs, after the warm-up")
    ttft, total = statistics.median(firsts), statistics.median(fulls)
    if total <= ttft:  # the decoding time is the difference: noise larger than it gives no speed, not a huge one
        raise RuntimeError(f"the full run ({total:.3f} s) was not slower than the first token ({ttft:.3f} s): "
                           "timing noise; use more --new-tokens or --repeats")
    decode_s = total - ttft
    per_sequence = (new - 1) / decode_s
    return {
        "ttft_s": ttft,
        "total_s": total,
        "decode_tokens_per_s": per_sequence,
        "throughput_tokens_per_s": per_sequence * prompt.shape[0],
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else None,
        "warmup_s": warmup_s,
        "warmup_compilations": warmed - compiled,
        "timed_runs": settings.repeats,
    }


#: What must match for an earlier run's rows to stay in the same file: where and with what it ran, and how.
SAME_PROVENANCE = ("device_name", "driver", "cuda", "mig_mode", "python", "versions", "tiny")
SAME_SETTINGS = ("prompt_tokens", "new_tokens", "warmup", "repeats", "compile_backend", "dynamic")


def _settings_dict(settings: Settings) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in vars(settings).items()}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why an earlier results file cannot take this run's rows: its schema, provenance or settings differ."""
    if old.get("schema") != new["schema"]:
        return [f"schema {old.get('schema')!r} != {new['schema']!r}"]
    found = []
    for section, keys in (("provenance", SAME_PROVENANCE), ("settings", SAME_SETTINGS)):
        before, now = old.get(section) or {}, new[section]
        found += [f"{key} {before.get(key)!r} != {now.get(key)!r}" for key in keys if before.get(key) != now.get(key)]
    return found


def aside_path(path: Path, date: str | None) -> Path:
    """``<stem>.<date, filesystem-safe>.json`` beside ``path`` (a free name): where an earlier run's file goes."""
    try:
        stamp = dt.datetime.fromisoformat(str(date)).astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    except ValueError:
        stamp = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target, number = path.with_name(f"{path.stem}.{stamp}.json"), 1
    while target.exists():
        number += 1
        target = path.with_name(f"{path.stem}.{stamp}-{number}.json")
    return target


class Results:
    """The results file: rows of an earlier run of the same provenance and settings kept (else that file is moved
    aside), updated row by row, rewritten after each row."""

    def __init__(self, path: Path, prov: dict[str, Any], bandwidth: dict[str, Any], settings: Settings) -> None:
        self.path = path
        self.data: dict[str, Any] = {"schema": RESULTS_SCHEMA, "rows": [], "models": {}, "provenance": prov,
                                     "bandwidth": bandwidth, "settings": _settings_dict(settings)}
        self.added: list[dict[str, Any]] = []  # this run's rows
        if path.exists():
            try:
                old = json.loads(path.read_text())
                why = differences(old, self.data)
            except (ValueError, AttributeError) as error:
                old, why = {}, [f"unreadable ({error})"]
            if not why:
                self.data["rows"], self.data["models"] = old["rows"], old.get("models", {})
                log(f"{path}: same provenance and settings, adding to its {len(old['rows'])} rows")
            else:
                target = aside_path(path, (old.get("provenance") or {}).get("date"))
                os.replace(path, target)
                log(f"{path}: earlier run with other {'; '.join(why)}: moved it to {target.name}")
        self.write()

    def add_model(self, model_id: str, info: dict[str, Any]) -> None:
        self.data["models"][model_id] = info
        self.write()

    def add(self, row: dict[str, Any]) -> None:
        key = (row["model"], row["variant"], row["batch"])
        rows = [r for r in self.data["rows"] if (r["model"], r["variant"], r["batch"]) != key]
        self.data["rows"] = [*rows, row]
        self.added.append(row)
        self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(self.data, indent=1) + "\n")
        os.replace(temporary, self.path)


def plan(settings: Settings) -> list[tuple[str, int]]:
    """(variant, batch) pairs in the order they run: bf16 variants first, then the quantized ones."""
    steps = []
    for variant in VARIANTS:
        if variant in settings.variants:
            batches = settings.batches if variant in BATCHED_VARIANTS else (1,)
            steps.extend((variant, batch) for batch in batches)
    return steps


def run_model(model_id: str, settings: Settings, results: Results, bandwidth: dict[str, Any],
              counter: list[int], total: int) -> None:
    import torch

    from qwen_docs_helpers.fast import prepare_fast, use_implementations

    device = settings.device
    config = build_config(model_id, settings.tiny)
    moe = config.model_type == "qwen2_moe"
    short = model_id.split("/")[-1]
    log(f"{short}: building random bf16 weights on {device}")
    started = time.perf_counter()
    model = random_model(config, device)
    params = sum(p.numel() for p in model.parameters())
    results.add_model(model_id, {
        "config": "tiny" if settings.tiny else "published",
        "parameters": params,
        "analytic_parameters": model_size(config).total,
        "active_parameters": model_size(config).active,
        "build_s": time.perf_counter() - started,
        "status": "ok",
    })
    if params != model_size(config).total:
        raise RuntimeError(f"{model_id}: {params} parameters, the analytic count says {model_size(config).total}")
    generator = torch.Generator().manual_seed(0)

    def prompt_for(batch: int) -> Any:
        ids = torch.randint(0, config.vocab_size, (batch, settings.prompt_tokens), generator=generator)
        return ids.to(device)

    compile_setting = compile_config(settings)
    state_dict: dict[str, Any] | None = None
    generator_fast: Any = None
    run: Callable[..., Any] | None = None
    for variant, batch in plan(settings):
        counter[0] += 1
        row: dict[str, Any] = {"model": model_id, "variant": variant, "batch": batch,
                               "prompt_tokens": settings.prompt_tokens, "new_tokens": settings.new_tokens,
                               "date": results.data["provenance"]["date"],
                               "commit": results.data["provenance"]["commit"],
                               "dirty": results.data["provenance"].get("dirty")}
        weight_format = variant if variant in ("nf4", "int8") else "bf16"
        try:
            if variant in ("nf4", "int8"):
                if state_dict is None:  # free the bf16 model, keep its weights on the CPU to quantize from
                    state_dict = {k: v.to("cpu") for k, v in model.state_dict().items()}
                    model = None
                    free(device)
                model = quantized_model(config, state_dict, variant, device)
            attention = "eager" if variant == "eager" else None
            experts = "eager" if variant == "eager" and moe else None
            fast = variant == "fast"
            generator_fast = prepare_fast(model, compile=compile_setting) if fast else None
            run = (generator_fast.generate if generator_fast is not None
                   else functools.partial(plain_generate, model))
            with use_implementations(model, attention, experts):
                row["attn_implementation"] = "sdpa" if fast else model.config._attn_implementation
                experts_used = (model.get_experts_implementation().get("")
                                if moe and not fast else ("grouped_mm" if moe else None))
                row["experts_implementation"] = experts_used
                # generate itself swaps grouped_mm for batched_mm while decoding on GPUs (_optimize_model_for_decode)
                row["decode_experts_implementation"] = ("batched_mm" if experts_used == "grouped_mm" and device != "cpu"
                                                        else experts_used)
                row["compiled"] = bool(generator_fast and generator_fast.compiles)
                row["compile_backend"] = settings.compile_backend if row["compiled"] else None
                row["weight_format"] = weight_format
                row["weights_bytes"] = int(model.get_memory_footprint())
                row.update(measure(run, prompt_for(batch), settings))
            context = settings.prompt_tokens + (settings.new_tokens - 1) / 2
            traffic = traffic_per_step(config, weight_format=weight_format, batch=batch, context=round(context))
            roofline = bandwidth["measured_bytes_per_s"] / traffic.total
            row.update({
                "status": "ok",
                "mean_context": context,
                "bandwidth_bytes_per_s": bandwidth["measured_bytes_per_s"],
                "bytes_per_step": traffic.total,
                "weight_bytes_per_step": traffic.weights,
                "kv_bytes_per_step": traffic.kv_cache,
                "roofline_tokens_per_s": roofline,
                "roofline_share": row["decode_tokens_per_s"] / roofline,
                "roofline_share_spec": (row["decode_tokens_per_s"] * traffic.total / bandwidth["spec_bytes_per_s"]
                                        if bandwidth.get("spec_bytes_per_s") else None),
            })
            peak = row["peak_memory_bytes"]
            log(f"[{counter[0]}/{total}] {short} {variant} batch {batch}: {row['decode_tokens_per_s']:.1f} tok/s "
                f"per sequence, first token {1e3 * row['ttft_s']:.0f} ms"
                + (f", peak {peak / 2**30:.2f} GiB" if peak else "")
                + f", {row['roofline_share']:.1%} of the roofline ({roofline:.0f} tok/s)")
        except Exception as error:  # one failing row (out of memory, a missing kernel) must not lose the others
            message = " ".join(f"{type(error).__name__}: {error}".split())[:300]
            row.update({"status": "failed", "error": message})
            log(f"[{counter[0]}/{total}] {short} {variant} batch {batch}: FAILED {message}")
        results.add(row)
        # Both hold the model, and a compiled one also in a reference cycle (its compiled __call__): without
        # this, the bf16 model stays on the device through the nf4 row (load and measured peak memory) and
        # the nf4 model through the int8 load.
        generator_fast = run = None
        if variant in ("nf4", "int8"):
            model = None
            free(device)
    model = state_dict = None
    free(device)


def resolve_model(name: str, parser: argparse.ArgumentParser) -> str:
    """A full model id from an id or its last part (``Qwen2-7B-Instruct``)."""
    from qwen_docs_helpers.published import known_model_ids

    for known in known_model_ids():
        if name in (known, known.split("/")[-1]):
            return known
    parser.error(f"unknown model {name!r}; known: {', '.join(known_model_ids())}")
    raise AssertionError  # parser.error exits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny configurations (to test the script on a CPU)")
    parser.add_argument("--models", nargs="+", default=list(BENCHMARK_MODELS),
                        help="model ids or their last part (Qwen2-7B-Instruct)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--batches", nargs="+", type=int, default=list(DEFAULT_BATCHES))
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--output", type=Path, help="default: benchmarks/results/<device>.json "
                                                     "(.cache/benchmarks/ with --tiny, so the site never shows it)")
    args = parser.parse_args(argv)
    if args.warmup < 1:  # the fast path compiles (and on CUDA records its graphs) in the warm-up
        parser.error("--warmup must be at least 1 (the first run of a fast row compiles)")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    args.models = [resolve_model(name, parser) for name in args.models]

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU (use --device cpu --tiny to test the script)")
    if args.device == "cpu" and not args.tiny:
        parser.error("real sizes need a CUDA GPU; on a CPU use --tiny")
    if args.new_tokens < 2:
        parser.error("--new-tokens must be at least 2 (decoding speed is measured after the first token)")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # a line per int8 matmul on CPU, kernel notices
    warnings.filterwarnings("ignore", message=".*generation flags are not valid.*")
    # transformers' MoE dispatch calls an lru_cache'd version check that dynamo traces through: 12 lines of notice
    # in the middle of the progress, about transformers' code, with nothing for the reader to do
    warnings.filterwarnings("ignore", message="Dynamo detected a call to a `functools.lru_cache`-wrapped function")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # Static shapes compile one graph per model class, batch size and cache length. Past dynamo's recompile limit
    # (8) it would silently run the step eagerly and the "fast" rows would measure plain decoding: allow more, and
    # fail a row loudly rather than fall back.
    import torch._dynamo.config as dynamo_config

    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 64)
    dynamo_config.fail_on_recompile_limit_hit = True

    settings = Settings(args.device, args.tiny, args.prompt_tokens, args.new_tokens, args.warmup, args.repeats,
                        tuple(args.batches), tuple(args.variants), args.compile_backend)
    prov = provenance(args.device, args.tiny)
    log(f"device: {prov['device_name']}; versions: {prov['versions']}; commit {prov['commit']}"
        + (f"; MIG {prov['mig_mode']}" if prov["mig_mode"] else ""))
    if args.device == "cuda" and prov["c_compiler"] is None:
        log("WARNING: no C compiler found ($CC, cc or gcc): triton needs one to build its kernels, so the fast "
            "rows (torch.compile with inductor) will fail; install gcc first")
    bandwidth = measure_bandwidth(args.device)
    spec = spec_bandwidth(prov["device_name"]) if args.device == "cuda" else None
    bandwidth.update(spec_bytes_per_s=spec[0] if spec else None, spec=spec[1] if spec else None)
    log(f"memory bandwidth: read {bandwidth['read_bytes_per_s'] / 1e9:.0f} GB/s, copy "
        f"{bandwidth['copy_bytes_per_s'] / 1e9:.0f} GB/s" + (f" (datasheet: {spec[1]})" if spec else ""))
    if args.output is not None:
        output = args.output
    elif args.tiny:
        output = ROOT / ".cache" / "benchmarks" / f"tiny-{slug(prov['device_name'])}.json"
    else:
        output = ROOT / "benchmarks" / "results" / f"{slug(prov['device_name'])}.json"
    results = Results(output, prov, bandwidth, settings)
    steps = len(plan(settings))
    total = len(args.models) * steps
    counter = [0]
    failed_models = []
    for model_id in args.models:
        before = counter[0]
        try:
            run_model(model_id, settings, results, bandwidth, counter, total)
        except Exception as error:  # building or checking the model failed (out of memory, say): the next one runs
            message = " ".join(f"{type(error).__name__}: {error}".split())[:300]
            failed_models.append(model_id)
            results.add_model(model_id, {**results.data["models"].get(model_id, {}), "status": "failed",
                                         "error": message})
            counter[0] = before + steps
            log(f"[{counter[0]}/{total}] {model_id.split('/')[-1]}: FAILED {message}; its remaining rows skipped")
        free(args.device)  # after the except block, which held the failed model's frames
    failed = sum(row["status"] != "ok" for row in results.added)
    status = 1 if failed or failed_models else 0
    log(f"wrote {output} ({len(results.data['rows'])} rows; this run: {len(results.added)} rows, {failed} failed, "
        f"{len(failed_models)} of {len(args.models)} models failed; exit status {status})")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
