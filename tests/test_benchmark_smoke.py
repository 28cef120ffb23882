"""benchmarks/generation.py: the roofline arithmetic by hand, and a tiny CPU run of the real code path.

The GPU run cannot happen in CI; ``--device cpu --tiny`` runs the same code (random models built from the
published configurations, shrunk; every variant; forced output length; results file) in a few seconds, and the
file it writes is checked here field by field, arithmetic included.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest

from qwen_docs_helpers.published import published_config
from qwen_docs_helpers.speed import (
    BENCHMARK_MODELS,
    RESULTS_SCHEMA,
    kv_cache_bytes_per_token,
    load_results,
    model_size,
    roofline_tokens_per_s,
    traffic_per_step,
    weight_bytes,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "generation.py"
FIXTURE = ROOT / "tests" / "data" / "benchmark-tiny-cpu.json"
H100, H200 = 3.35e12, 4.8e12
DENSE, SMALL, MOE = BENCHMARK_MODELS


def test_qwen2_7b_bytes_per_token_by_hand() -> None:
    """Qwen2-7B: h=3584, 28 layers, 28 query / 4 KV heads of 128, FFN 18944, vocab 152064, untied lm_head."""
    h, layers, kv, ffn, vocab = 3584, 28, 4 * 128, 18944, 152064
    attention = (h * h + h) + 2 * (h * kv + kv) + h * h  # q, k, v with biases; o without
    per_layer = attention + 3 * h * ffn + 2 * h  # SwiGLU MLP, two RMSNorms
    params = layers * per_layer + h + 2 * vocab * h  # final norm, embedding, lm_head
    assert params == model_size(published_config(DENSE)).total == 7_615_616_512
    read = 2 * (params - vocab * h) + 2 * h  # everything but the embedding table, plus one row of it
    traffic = traffic_per_step(published_config(DENSE))
    assert traffic.weights == read and traffic.kv_cache == 0
    assert round(read / 1e9, 2) == 14.14
    assert round(roofline_tokens_per_s(published_config(DENSE), H100)) == 237
    assert round(roofline_tokens_per_s(published_config(DENSE), H200)) == 339
    # KV cache: keys and values, 28 layers x 4 heads x 128, bf16 = 56 KiB per token of context.
    assert kv_cache_bytes_per_token(published_config(DENSE)) == 2 * layers * kv * 2 == 56 * 1024
    assert traffic_per_step(published_config(DENSE), batch=4, context=1000).kv_cache == 4 * 1000 * 56 * 1024


def test_moe_active_bytes_per_token_by_hand() -> None:
    """Qwen1.5-MoE-A2.7B: h=2048, 24 layers, 16 heads (no GQA), 60 experts of 1408 (top 4), shared 5632."""
    h, layers, experts, top_k, m, shared, vocab = 2048, 24, 60, 4, 1408, 5632, 151936
    attention = 4 * h * h + 3 * h
    routed = experts * 3 * h * m
    fixed = attention + experts * h + 3 * h * shared + h + 2 * h  # router, shared expert, its gate, norms
    total = layers * (fixed + routed) + h + 2 * vocab * h
    active = layers * (fixed + top_k * 3 * h * m) + h + 2 * vocab * h
    size = model_size(published_config(MOE))
    assert (size.total, size.active) == (total, active)
    assert round(total / 1e9, 1) == 14.3 and round(active / 1e9, 2) == 2.69
    read = 2 * (active - vocab * h) + 2 * h
    assert traffic_per_step(published_config(MOE)).weights == read
    assert round(read / 1e9, 2) == 4.76
    assert round(roofline_tokens_per_s(published_config(MOE), H100)) == 704
    # At batch 4 the tokens of a step use ~14.5 distinct experts per layer (uniform routing), not 4.
    distinct = experts * (1 - (1 - top_k / experts) ** 4)
    batch4 = traffic_per_step(published_config(MOE), batch=4).weights
    assert math.isclose(batch4, read - 2 * h + 4 * 2 * h + layers * 2 * 3 * h * m * (distinct - top_k))


def test_quantized_formats_and_tied_embeddings() -> None:
    dense = published_config(DENSE)
    # NF4: 4 bits + an 8-bit absmax per 64 weights + a float32 per 256 blocks; lm_head stays bf16.
    linear = 28 * ((3584 * 3584) * 2 + 2 * 3584 * 512 + 3 * 3584 * 18944)
    bf16 = traffic_per_step(dense).weights
    nf4 = traffic_per_step(dense, weight_format="nf4").weights
    assert math.isclose(bf16 - nf4, linear * (2 - 0.5 - 1 / 64 - 4 / (64 * 256)))
    int8 = traffic_per_step(dense, weight_format="int8").weights
    rows = 28 * (3584 + 2 * 512 + 3584 + 2 * 18944 + 3584)  # one float32 scale per output row
    assert math.isclose(bf16 - int8, linear - 4 * rows)
    # Qwen2-1.5B ties lm_head to the embedding: stored once, but still read in full every step.
    small = published_config(SMALL)
    assert small.tie_word_embeddings
    assert weight_bytes(small) == 2 * model_size(small).total
    assert traffic_per_step(small).weights == 2 * (model_size(small).total) + 2 * small.hidden_size
    with pytest.raises(ValueError):
        traffic_per_step(dense, batch=0)


def _meta_model(model_id: str) -> Any:
    """The real-size architecture on the meta device: shapes and dtypes, no memory."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(published_config(model_id), dtype=torch.bfloat16)


@pytest.mark.parametrize("model_id", BENCHMARK_MODELS)
def test_model_size_matches_the_real_size_architecture(model_id: str) -> None:
    """Totals, active parameters and bf16 bytes of speed.py against the modules transformers builds."""
    config = published_config(model_id)
    model = _meta_model(model_id)
    parameters = dict(model.named_parameters())  # a tied lm_head is the embedding's parameter, listed once
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == config.tie_word_embeddings
    size = model_size(config)
    assert sum(p.numel() for p in parameters.values()) == size.total
    assert sum(p.numel() * p.element_size() for p in parameters.values()) == weight_bytes(config, "bf16")
    # Active: every parameter but the routed experts, which a token uses top_k of num_experts (transformers 5
    # fuses them into 3-D (num_experts, out, in) parameters). Router, shared expert and its gate always run.
    active = 0
    for name, parameter in parameters.items():
        if ".mlp.experts." in name:
            assert parameter.ndim == 3 and parameter.shape[0] == config.num_experts, name
            active += parameter.numel() // config.num_experts * config.num_experts_per_tok
        else:
            active += parameter.numel()
    assert size.active == active
    if config.model_type == "qwen2_moe":
        assert size.active < size.total and round(size.active / 1e9, 2) == 2.69  # the "A2.7B" of the name
        names = {name.split(".", 3)[-1] for name in parameters if name.startswith("model.layers.0.mlp.")}
        assert names == {"mlp.gate.weight", "mlp.experts.gate_up_proj", "mlp.experts.down_proj",
                         "mlp.shared_expert.gate_proj.weight", "mlp.shared_expert.up_proj.weight",
                         "mlp.shared_expert.down_proj.weight", "mlp.shared_expert_gate.weight"}
    else:
        assert size.active == size.total


@pytest.mark.parametrize("model_id", BENCHMARK_MODELS)
def test_kv_cache_bytes_match_transformers_caches(model_id: str) -> None:
    """traffic_per_step's KV cache against the tensors a real-size forward pass fills (on meta: no memory)."""
    import torch
    from transformers import DynamicCache, StaticCache

    config = published_config(model_id)
    model = _meta_model(model_id)
    batch, prompt, max_len = 3, 7, 11
    for cache, context in ((DynamicCache(config=config), prompt), (StaticCache(config=config, max_cache_len=max_len),
                                                                   max_len)):
        with torch.no_grad():
            model(input_ids=torch.zeros(batch, prompt, dtype=torch.long, device="meta"), past_key_values=cache)
        tensors = [t for layer in cache.layers for t in (layer.keys, layer.values)]
        assert len(tensors) == 2 * config.num_hidden_layers
        assert tensors[0].dtype == torch.bfloat16 and tensors[0].shape[0] == batch and tensors[0].shape[2] == context
        stored = sum(t.numel() * t.element_size() for t in tensors)
        assert stored == batch * context * kv_cache_bytes_per_token(config), type(cache).__name__
        assert stored == traffic_per_step(config, batch=batch, context=context).kv_cache


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("bench") / "tiny.json"
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--output", str(output),
               "--prompt-tokens", "8", "--new-tokens", "64", "--warmup", "1", "--repeats", "3",
               "--batches", "1", "2", "--compile-backend", "eager"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[21/21]" in done.stderr and "wrote" in done.stderr  # progress lines on stderr
    return output


def test_tiny_run_results_file(tiny_run: Path) -> None:
    data: dict[str, Any] = json.loads(tiny_run.read_text())
    assert data["schema"] == RESULTS_SCHEMA
    prov = data["provenance"]
    assert prov["device"] == "cpu" and prov["tiny"] is True and prov["device_name"]
    assert dt.datetime.fromisoformat(prov["date"]).tzinfo is not None
    assert prov["commit"] is None or len(prov["commit"]) == 40
    assert {"torch", "transformers", "bitsandbytes"} <= set(prov["versions"])
    assert prov["mig_mode"] is None and "c_compiler" in prov  # nvidia-smi is only asked on CUDA
    bandwidth = data["bandwidth"]
    assert bandwidth["read_bytes_per_s"] > 0 and bandwidth["copy_bytes_per_s"] > 0
    assert bandwidth["measured_bytes_per_s"] == max(bandwidth["read_bytes_per_s"], bandwidth["copy_bytes_per_s"])
    assert "read-only" in bandwidth["method"] and bandwidth["spec_bytes_per_s"] is None
    assert data["settings"]["new_tokens"] == 64 and data["settings"]["dynamic"] is False
    for model_id, info in data["models"].items():
        assert info["config"] == "tiny" and info["parameters"] == info["analytic_parameters"], model_id
        assert info["status"] == "ok", model_id

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from generation import build_config
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    rows = data["rows"]
    assert [(r["variant"], r["batch"]) for r in rows if r["model"] == DENSE] == [
        ("eager", 1), ("sdpa", 1), ("sdpa", 2), ("fast", 1), ("fast", 2), ("nf4", 1), ("int8", 1)]
    assert {r["model"] for r in rows} == set(BENCHMARK_MODELS) and len(rows) == 21
    for row in rows:
        where = f"{row['model']} {row['variant']} {row['batch']}"
        assert row["status"] == "ok", (where, row.get("error"))
        assert row["peak_memory_bytes"] is None  # CPU
        assert row["ttft_s"] > 0 and row["total_s"] > row["ttft_s"] and row["decode_tokens_per_s"] > 0
        assert math.isclose(row["decode_tokens_per_s"], 63 / (row["total_s"] - row["ttft_s"]))
        assert math.isclose(row["throughput_tokens_per_s"], row["batch"] * row["decode_tokens_per_s"])
        config = build_config(row["model"], tiny=True)
        traffic = traffic_per_step(config, weight_format=row["weight_format"], batch=row["batch"],
                                   context=round(8 + 63 / 2))
        assert row["bytes_per_step"] == traffic.total and row["kv_bytes_per_step"] == traffic.kv_cache
        assert row["bandwidth_bytes_per_s"] == bandwidth["measured_bytes_per_s"]  # the figure its roofline used
        assert math.isclose(row["roofline_tokens_per_s"], row["bandwidth_bytes_per_s"] / traffic.total)
        # Compiling happens in the warm-up (a timed run that compiled fails its row): a fast row compiles its
        # batch size's graph there, the plain variants compile nothing. (Tiny, Qwen2-1.5B has the shapes of
        # Qwen2-7B, already compiled in this process: dynamo reuses those graphs.)
        compiles = row["variant"] == "fast" and row["model"] != SMALL
        assert row["warmup_compilations"] == (1 if compiles else 0), where
        assert math.isclose(row["roofline_share"], row["decode_tokens_per_s"] / row["roofline_tokens_per_s"])
        assert row["compiled"] == (row["variant"] == "fast"), where
        assert row["attn_implementation"] == ("eager" if row["variant"] == "eager" else "sdpa"), where
        # The weights in memory are what the analytic model says for that format: bf16 to the byte (plus the
        # rotary buffer); quantized within 5 %, since bitsandbytes keeps its scales outside the parameters
        # (4 bytes per 64-wide row in int8 here). Quantizing lm_head or the routed experts would move 15-40 %.
        analytic = weight_bytes(config, row["weight_format"])
        tolerance = 64 if row["weight_format"] == "bf16" else 0.05 * analytic
        assert abs(row["weights_bytes"] - analytic) <= tolerance, where
    moe = {r["variant"]: r for r in rows if r["model"] == MOE and r["batch"] == 1}
    assert moe["eager"]["experts_implementation"] == "eager"
    assert moe["sdpa"]["experts_implementation"] == moe["fast"]["experts_implementation"] == "grouped_mm"
    assert moe["sdpa"]["decode_experts_implementation"] == "grouped_mm"  # on CPU generate keeps it for decoding


def _generation() -> Any:
    """benchmarks/generation.py as a module."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import generation
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return generation


def test_measure_refuses_a_decoding_time_lost_in_noise() -> None:
    """The decoding speed is (new - 1) / (full run - first token). A full run no slower than the first token
    (noise; seen at real size on a CPU with 4 new tokens) once gave 3e9 tokens/s as an "ok" row."""
    import time

    import torch

    generation = _generation()
    settings = generation.Settings("cpu", True, 8, 4, 0, 1, (1,), ("sdpa",), "eager")
    prompt = torch.zeros(1, 8, dtype=torch.long)

    def generate(delay_first: float, delay_full: float) -> Any:
        def run(ids: Any, max_new_tokens: int) -> Any:
            time.sleep(delay_first if max_new_tokens == 1 else delay_full)
            return torch.zeros(ids.shape[0], ids.shape[1] + max_new_tokens, dtype=torch.long)
        return run

    row = generation.measure(generate(0.01, 0.05), prompt, settings)
    assert 0 < row["decode_tokens_per_s"] < 3 / 0.03
    with pytest.raises(RuntimeError, match="not slower than the first token"):
        generation.measure(generate(0.05, 0.01), prompt, settings)


def test_peak_memory_counts_the_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA graph (the fast path) takes its working memory when the warm-up records it; its replays in the timed
    runs allocate nothing. A peak reset after the warm-up left that memory out of the fast rows, so the peak has to
    count from before the warm-up. Here the GPU's allocator is played by a counter: each run's allocations are
    larger during the warm-up, as when a graph is recorded."""
    import time

    import torch

    generation = _generation()
    settings = generation.Settings("cuda", True, 8, 4, 1, 2, (1,), ("fast",), "eager")
    prompt = torch.zeros(1, 8, dtype=torch.long)
    gib, allocator = 2**30, {"peak": 0}
    runs: list[int] = []

    def run(ids: Any, max_new_tokens: int) -> Any:
        runs.append(max_new_tokens)
        warm_up = len(runs) <= 2  # settings.warmup == 1: one first-token run and one full run
        allocator["peak"] = max(allocator["peak"], (3 if warm_up else 1) * gib)
        time.sleep(0.01 if max_new_tokens == 1 else 0.05)
        return torch.zeros(ids.shape[0], ids.shape[1] + max_new_tokens, dtype=torch.long)

    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: allocator.update(peak=0))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: allocator["peak"])
    row = generation.measure(run, prompt, settings)
    assert runs == [1, 4, 1, 4, 1, 4]
    assert row["peak_memory_bytes"] == 3 * gib


def test_each_model_is_released_before_the_next_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """run_model keeps one model on the device at a time: the bf16 model is gone before the nf4 one loads (and
    is not counted in the nf4 row's peak memory), the nf4 one before int8. The fast path's generator and a
    compiled model's reference cycle once kept them alive: on a GPU, the bf16 Qwen1.5-MoE (28.6 GB) beside
    its nf4 copy (26.8 GB, the routed experts stay bf16)."""
    # Imported here first: bitsandbytes' first import logs an exception (a kernel it cannot fetch) and pytest's
    # log capture keeps that record, its traceback and so every frame below it, the loading model's included.
    import transformers.integrations.bitsandbytes  # noqa: F401

    generation = _generation()
    refs: list[tuple[str, weakref.ref[Any]]] = []
    events: list[tuple[str, list[str]]] = []

    def alive() -> list[str]:
        return [name for name, ref in refs if ref() is not None]

    random_model, quantized_model, measure = generation.random_model, generation.quantized_model, generation.measure

    def tracked_random_model(config: Any, device: str) -> Any:
        model = random_model(config, device)
        refs.append(("bf16", weakref.ref(model)))
        return model

    def tracked_quantized_model(config: Any, state_dict: Any, preset: str, device: str) -> Any:
        events.append((f"load {preset}", alive()))
        model = quantized_model(config, state_dict, preset, device)
        refs.append((preset, weakref.ref(model)))
        return model

    def tracked_measure(*args: Any) -> Any:
        events.append(("measure", alive()))
        return measure(*args)

    monkeypatch.setattr(generation, "random_model", tracked_random_model)
    monkeypatch.setattr(generation, "quantized_model", tracked_quantized_model)
    monkeypatch.setattr(generation, "measure", tracked_measure)
    settings = generation.Settings("cpu", True, 8, 64, 1, 3, (1,), ("sdpa", "fast", "nf4", "int8"), "eager")
    bandwidth = {"measured_bytes_per_s": 1e9}
    results = generation.Results(tmp_path / "r.json", {"device_name": "cpu", "date": "", "commit": None},
                                 bandwidth, settings)
    generation.run_model(DENSE, settings, results, bandwidth, [0], 4)
    assert [row["status"] for row in results.data["rows"]] == ["ok"] * 4, results.data["rows"]
    assert results.data["rows"][1]["compiled"]
    assert events == [("measure", ["bf16"]), ("measure", ["bf16"]), ("load nf4", []), ("measure", ["nf4"]),
                      ("load int8", []), ("measure", ["int8"])]


def test_the_fixture_has_the_format_the_script_writes(tiny_run: Path) -> None:
    """tests/test_speed.py renders tests/data/benchmark-tiny-cpu.json: it must have the fields a run writes now
    (regenerate it with the command in its provenance's argv when this fails)."""
    live, fixture = json.loads(tiny_run.read_text()), json.loads(FIXTURE.read_text())
    assert fixture["schema"] == live["schema"]
    for section in ("provenance", "bandwidth", "settings"):
        assert set(fixture[section]) == set(live[section]), section
    assert {key for info in fixture["models"].values() for key in info} == {
        key for info in live["models"].values() for key in info}
    assert {key for row in fixture["rows"] for key in row} == {key for row in live["rows"] for key in row}


def test_fast_rows_compile_one_static_graph_per_batch_size(tmp_path: Path) -> None:
    """With dynamo's default (dynamic=None) the second batch size recompiled into a dynamic-batch graph, which
    the third then reused: the graph a row measured depended on the order of the rows. Now every batch size
    compiles its own static graph, in its warm-up."""
    import torch

    generation = _generation()
    torch._dynamo.reset()  # graphs that earlier tests compiled in this process would be found, not compiled
    settings = generation.Settings("cpu", True, 8, 64, 1, 3, (1, 2, 4), ("fast",), "eager")
    assert settings.dynamic is False and generation.compile_config(settings).dynamic is False
    bandwidth = {"measured_bytes_per_s": 1e9}
    results = generation.Results(tmp_path / "r.json", {"device_name": "cpu", "date": "", "commit": None},
                                 bandwidth, settings)
    generation.run_model(SMALL, settings, results, bandwidth, [0], 3)
    rows = results.data["rows"]
    assert [(row["batch"], row["status"], row["warmup_compilations"]) for row in rows] == [
        (1, "ok", 1), (2, "ok", 1), (4, "ok", 1)], rows


def _provenance(**changes: Any) -> dict[str, Any]:
    return {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "device_memory_bytes": 85e9,
            "driver": "580.65", "cuda": "13.0", "mig_mode": "Disabled", "python": "3.12.3",
            "versions": {"torch": "2.11.0", "transformers": "5.23.0"}, "date": "2026-11-20T10:00:00+00:00",
            "commit": "a" * 40, "dirty": False, "tiny": False, "argv": [], **changes}


def _row(prov: dict[str, Any], variant: str) -> dict[str, Any]:
    return {"model": DENSE, "variant": variant, "batch": 1, "date": prov["date"], "commit": prov["commit"],
            "dirty": prov["dirty"], "status": "ok", "bandwidth_bytes_per_s": prov["bandwidth"]}


def test_results_merge_only_runs_of_the_same_provenance_and_settings(tmp_path: Path) -> None:
    """Rows of an earlier run stay in the file only if it ran with the same provenance and settings, since the
    file's provenance, settings and bandwidth are the latest run's; else the earlier file is moved aside, and the
    page shows both, each described by its own provenance."""
    generation = _generation()
    settings = generation.Settings("cuda", False, 128, 256, 1, 3, (1,), ("sdpa", "fast"), "inductor")
    path = tmp_path / "nvidia-h100-80gb-hbm3.json"

    def run(prov: dict[str, Any], variant: str, run_settings: Any = settings) -> Any:
        results = generation.Results(path, {k: v for k, v in prov.items() if k != "bandwidth"},
                                     {"measured_bytes_per_s": prov["bandwidth"]}, run_settings)
        results.add(_row(prov, variant))
        return results

    first = _provenance(bandwidth=3.0e12)
    run(first, "sdpa")
    # Same GPU, driver, versions and settings, another day and commit: the rows merge, each keeps its own.
    second = _provenance(date="2026-11-21T09:30:00+00:00", commit="b" * 40, dirty=True, bandwidth=3.1e12)
    merged = run(second, "fast")
    assert [row["variant"] for row in merged.data["rows"]] == ["sdpa", "fast"]
    assert [row["variant"] for row in merged.added] == ["fast"]
    (result,) = load_results(tmp_path)
    text = result.describe()
    assert "in 2 runs from 2026-11-20 10:00 UTC to 2026-11-21 09:30 UTC" in text
    assert "at commits aaaaaaaaaa, bbbbbbbbbb with uncommitted changes." in text
    assert "each run its own: 3.00 TB/s to 3.10 TB/s" in result.describe_bandwidth()
    # Another transformers version: the earlier file goes aside under its date, the new one starts empty.
    third = _provenance(date="2026-11-22T08:00:00+00:00", versions={"torch": "2.11.0", "transformers": "5.24.0"},
                        bandwidth=3.2e12)
    fresh = run(third, "sdpa")
    assert [row["date"] for row in fresh.data["rows"]] == [third["date"]]
    aside = tmp_path / "nvidia-h100-80gb-hbm3.20261121T093000Z.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == [aside.name, path.name]
    newer, older = load_results(tmp_path)  # both load, newest first, each with its own provenance and rows
    assert (newer.path, older.path) == (path, aside)
    assert "transformers 5.24.0" in newer.describe() and "on 2026-11-22 08:00 UTC" in newer.describe()
    assert "transformers 5.23.0" in older.describe() and len(older.rows) == 2
    # Other settings (here more new tokens) move it aside too; so does a second file of the same date.
    longer = generation.Settings("cuda", False, 128, 512, 1, 3, (1,), ("sdpa",), "inductor")
    run(third, "sdpa", longer)
    assert (tmp_path / "nvidia-h100-80gb-hbm3.20261122T080000Z.json").exists()
    assert json.loads(path.read_text())["settings"]["new_tokens"] == 512
    run(third, "sdpa", settings)
    assert (tmp_path / "nvidia-h100-80gb-hbm3.20261122T080000Z-2.json").exists()
    assert len(load_results(tmp_path)) == 4


def test_differences_name_what_changed() -> None:
    generation = _generation()
    settings = generation.Settings("cuda", False, 128, 256, 1, 3, (1,), ("sdpa",), "inductor")
    new = {"schema": RESULTS_SCHEMA, "provenance": _provenance(), "settings": generation._settings_dict(settings)}
    assert generation.differences(json.loads(json.dumps(new)), new) == []
    old = {**new, "provenance": _provenance(driver="570.1", mig_mode="Enabled", commit="c" * 40)}
    assert generation.differences(old, new) == ["driver '570.1' != '580.65'", "mig_mode 'Enabled' != 'Disabled'"]
    old = {**new, "settings": {**new["settings"], "warmup": 2, "dynamic": None, "batches": [4]}}
    assert generation.differences(old, new) == ["warmup 2 != 1", "dynamic None != False"]  # batches may differ
    assert generation.differences({**new, "schema": 0}, new) == [f"schema 0 != {RESULTS_SCHEMA}"]


def test_commit_from_the_environment_without_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the checkout without .git (as sent to an offline GPU machine) once recorded commit None."""
    generation = _generation()
    real_run = generation._run
    monkeypatch.setenv("QWEN_DOCS_COMMIT", "0123456789abcdef")
    if real_run("git", "rev-parse", "HEAD"):  # git answers: it wins over the variable
        assert generation.provenance("cpu", True)["commit"] == real_run("git", "rev-parse", "HEAD")
    monkeypatch.setattr(generation, "_run", lambda *command: None if command[0] == "git" else real_run(*command))
    prov = generation.provenance("cpu", True)
    assert prov["commit"] == "0123456789abcdef" and prov["dirty"] is None
    monkeypatch.delenv("QWEN_DOCS_COMMIT")
    assert generation.provenance("cpu", True)["commit"] is None
    assert "QWEN_DOCS_COMMIT" in (generation.__doc__ or "")


def test_a_failing_model_is_recorded_and_the_next_one_runs(tmp_path: Path) -> None:
    """Building a model (out of memory, say) or its parameter check failing once aborted every later model."""
    output = tmp_path / "r.json"
    code = f"""
import sys
sys.path.insert(0, {str(ROOT / "benchmarks")!r})
import generation
build = generation.random_model
def random_model(config, device):
    if config.tie_word_embeddings:  # Qwen2-1.5B
        raise MemoryError("no room for the weights")
    return build(config, device)
generation.random_model = random_model
sys.exit(generation.main(["--device", "cpu", "--tiny", "--output", {str(output)!r}, "--models", "Qwen2-1.5B-Instruct",
                          "Qwen2-7B-Instruct", "--variants", "sdpa", "--batches", "1", "--new-tokens", "64",
                          "--repeats", "3", "--compile-backend", "eager"]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 1, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert "[1/2] Qwen2-1.5B-Instruct: FAILED MemoryError: no room for the weights" in done.stderr
    assert "[2/2] Qwen2-7B-Instruct sdpa batch 1:" in done.stderr
    assert "1 of 2 models failed; exit status 1" in lines[-1]
    data = json.loads(output.read_text())
    assert data["models"][SMALL] == {"status": "failed", "error": "MemoryError: no room for the weights"}
    assert data["models"][DENSE]["status"] == "ok"
    assert [(row["model"], row["status"]) for row in data["rows"]] == [(DENSE, "ok")]


@pytest.mark.parametrize("option", ["--warmup", "--repeats"])
def test_refuses_no_warmup_or_no_repeats(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--warmup 0 once let a fast row's first timed run compile (and on CUDA record its graphs)."""
    with pytest.raises(SystemExit) as exited:
        _generation().main(["--device", "cpu", "--tiny", option, "0"])
    assert exited.value.code == 2 and f"{option} must be at least 1" in capsys.readouterr().err


def test_tiny_results_load_for_the_page_only_when_asked(tiny_run: Path) -> None:
    assert load_results(tiny_run.parent) == []  # tiny runs never reach the site
    (result,) = load_results(tiny_run.parent, include_tiny=True)
    assert result.tiny and len(result.rows) == 21


def test_refuses_real_sizes_on_cpu() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 2 and "--tiny" in done.stderr
