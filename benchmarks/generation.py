"""Decoding speed, time to first token and peak memory of Qwen2 / Qwen2-MoE with transformers, against the roofline.

Models of the real sizes are built on the device from their published configurations with random bfloat16
weights (nothing is downloaded): timings and memory are those of the real architecture, the text is noise.
For each model it measures, with a forced output length (no end-of-sequence token can stop a run):

- ``eager``: plain ``generate`` with transformers' reference implementations (eager attention; for MoE also
  the eager experts loop), batch 1;
- ``sdpa``: plain ``generate`` with the defaults (SDPA attention; MoE: grouped_mm experts), each batch size;
- ``fast``: :func:`qwen_docs_helpers.fast.prepare_fast` (static cache, compiled decoding, bucket padding),
  each batch size;
- ``nf4`` / ``int8``: the site's bitsandbytes presets, quantized from the same weights, batch 1.

Each row gets warm-up runs, then the median of ``--repeats`` timed runs: time to first token (``generate``
with one new token) and the full run, whose difference gives the decoding speed. Each row also gets the bytes
one decoding step reads (:func:`qwen_docs_helpers.speed.traffic_per_step`, at the mean context length of the
run) and its share of the roofline, the measured copy bandwidth divided by those bytes.

Results go to ``benchmarks/results/<gpu>.json`` with where, when and with what they were measured; rows of
earlier runs on the same GPU are kept unless measured again, and the file is rewritten after every row, so a
run cut short keeps what it measured. Progress goes to stderr.

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
    status = _run("git", "status", "--porcelain", "--untracked-files=no")
    return {
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if cuda else _cpu_name(),
        "device_memory_bytes": torch.cuda.get_device_properties(0).total_memory if cuda else None,
        "driver": driver.splitlines()[0] if driver else None,
        "cuda": torch.version.cuda if cuda else None,
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in ("torch", "transformers", "accelerate", "bitsandbytes")},
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": _run("git", "rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
        "tiny": tiny,
        "argv": sys.argv[1:],
    }


def slug(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def measure_bandwidth(device: str, nbytes: int, iterations: int) -> float:
    """Bytes/s of a large device-to-device copy (each byte read once and written once)."""
    import torch

    source = torch.empty(nbytes, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    for _ in range(3):
        target.copy_(source)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iterations):
        target.copy_(source)
    synchronize(device)
    elapsed = time.perf_counter() - start
    del source, target
    return 2 * nbytes * iterations / elapsed


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
    for _ in range(settings.warmup):
        warmup_s += _timed(first, device)[0] + _timed(full, device)[0]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    firsts, fulls = [], []
    for _ in range(settings.repeats):
        firsts.append(_timed(first, device)[0])
        fulls.append(_timed(full, device)[0])
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
        "timed_runs": settings.repeats,
    }


class Results:
    """The results file: loaded (rows of earlier runs kept), updated row by row, rewritten after each row."""

    def __init__(self, path: Path, prov: dict[str, Any], bandwidth: dict[str, Any], settings: Settings) -> None:
        self.path = path
        self.data: dict[str, Any] = {"schema": RESULTS_SCHEMA, "rows": [], "models": {}}
        if path.exists():
            old = json.loads(path.read_text())
            if old.get("schema") == RESULTS_SCHEMA and old["provenance"].get("device_name") == prov["device_name"]:
                self.data["rows"], self.data["models"] = old["rows"], old.get("models", {})
            else:
                log(f"{path}: other device or format, starting a new file")
        self.data["provenance"] = prov
        self.data["bandwidth"] = bandwidth
        self.data["settings"] = {key: list(value) if isinstance(value, tuple) else value
                                 for key, value in vars(settings).items()}
        self.write()

    def add_model(self, model_id: str, info: dict[str, Any]) -> None:
        self.data["models"][model_id] = info
        self.write()

    def add(self, row: dict[str, Any]) -> None:
        key = (row["model"], row["variant"], row["batch"])
        rows = [r for r in self.data["rows"] if (r["model"], r["variant"], r["batch"]) != key]
        self.data["rows"] = [*rows, row]
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
    from transformers import CompileConfig

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
    })
    if params != model_size(config).total:
        raise RuntimeError(f"{model_id}: {params} parameters, the analytic count says {model_size(config).total}")
    generator = torch.Generator().manual_seed(0)

    def prompt_for(batch: int) -> Any:
        ids = torch.randint(0, config.vocab_size, (batch, settings.prompt_tokens), generator=generator)
        return ids.to(device)

    if settings.compile_backend == "inductor" and device == "cuda":
        compile_setting: Any = True  # transformers' defaults: inductor with CUDA graphs, fullgraph
    else:
        compile_setting = CompileConfig(backend=settings.compile_backend, fullgraph=True, mode="default")
    state_dict: dict[str, Any] | None = None
    generator_fast: Any = None
    run: Callable[..., Any] | None = None
    for variant, batch in plan(settings):
        counter[0] += 1
        row: dict[str, Any] = {"model": model_id, "variant": variant, "batch": batch,
                               "prompt_tokens": settings.prompt_tokens, "new_tokens": settings.new_tokens,
                               "date": results.data["provenance"]["date"],
                               "commit": results.data["provenance"]["commit"]}
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
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    settings = Settings(args.device, args.tiny, args.prompt_tokens, args.new_tokens, args.warmup, args.repeats,
                        tuple(args.batches), tuple(args.variants), args.compile_backend)
    prov = provenance(args.device, args.tiny)
    log(f"device: {prov['device_name']}; versions: {prov['versions']}")
    copy_bytes = 2**30 if args.device == "cuda" else 2**26
    measured = measure_bandwidth(args.device, copy_bytes, 50 if args.device == "cuda" else 5)
    spec = spec_bandwidth(prov["device_name"]) if args.device == "cuda" else None
    bandwidth = {
        "measured_bytes_per_s": measured,
        "method": f"torch copy_ of a {copy_bytes}-byte tensor on the device, repeated; bytes read + written",
        "spec_bytes_per_s": spec[0] if spec else None,
        "spec": spec[1] if spec else None,
    }
    log(f"copy bandwidth: {measured / 1e9:.0f} GB/s" + (f" (datasheet: {spec[1]})" if spec else ""))
    if args.output is not None:
        output = args.output
    elif args.tiny:
        output = ROOT / ".cache" / "benchmarks" / f"tiny-{slug(prov['device_name'])}.json"
    else:
        output = ROOT / "benchmarks" / "results" / f"{slug(prov['device_name'])}.json"
    results = Results(output, prov, bandwidth, settings)
    total = len(args.models) * len(plan(settings))
    counter = [0]
    for model_id in args.models:
        run_model(model_id, settings, results, bandwidth, counter, total)
    failed = sum(row["status"] != "ok" for row in results.data["rows"])
    log(f"wrote {output} ({len(results.data['rows'])} rows, {failed} failed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
