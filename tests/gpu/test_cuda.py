"""The helpers on a CUDA GPU: what the CPU tests cannot reach (CUDA graphs, bitsandbytes' CUDA kernels, SDPA flash).

Skipped without a CUDA GPU. On one, ``nox -s tests`` runs them with the rest; on an offline GPU machine,
``bash tools/offline_run.sh .whl python3 -m pytest tests/gpu``. The models are the stand-ins in bfloat16, loaded
as a GPU user would. Two bf16 paths are compared with the pages' rule (``checks.assert_batch_matches_single``:
equal, or departing only at a near tie), not for exact equality: GPU kernels may sum in other orders.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from transformers import StaticCache

from qwen_docs_helpers import checks
from qwen_docs_helpers.chat import encode_chat
from qwen_docs_helpers.errors import InsufficientMemoryError
from qwen_docs_helpers.fast import prepare_fast
from qwen_docs_helpers.memory import available_bytes, static_cache_bytes

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run `pytest tests/gpu` on one)"),
    pytest.mark.filterwarnings("ignore:.*generation flags are not valid.*:UserWarning"),
]

DENSE_ID, MOE_ID = "Qwen/Qwen2-7B-Instruct", "Qwen/Qwen1.5-MoE-A2.7B-Chat"  # the stand-ins conftest builds
SHORT = [{"role": "user", "content": "Hi"}]
LONG = [{"role": "user", "content": "Give me a short introduction to large language models, with examples."}]
OTHER = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
NEW_TOKENS = 16


def _load(model_id: str, **kwargs: Any) -> tuple[Any, Any]:
    from qwen_docs_helpers.loading import load_model

    return load_model(model_id, dtype=torch.bfloat16, device_map="cuda", **kwargs)


def _held(model_id: str) -> Iterator[tuple[Any, Any]]:
    """A stand-in in bf16 on the GPU while the fixture lives, freed afterwards."""
    model, tokenizer = _load(model_id)
    yield model, tokenizer
    del model
    torch.cuda.empty_cache()


@pytest.fixture(scope="module")
def dense_cuda(standin_hub: dict) -> Iterator[tuple[Any, Any]]:
    yield from _held(DENSE_ID)


@pytest.fixture(scope="module")
def moe_cuda(standin_hub: dict) -> Iterator[tuple[Any, Any]]:
    yield from _held(MOE_ID)


@pytest.fixture
def recordings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts CUDA graph recordings (``CUDAGraphTreeManager.record_function``: reduce-overhead records with it)."""
    from torch._inductor import cudagraph_trees

    calls: list[int] = []
    record = cudagraph_trees.CUDAGraphTreeManager.record_function

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return record(self, *args, **kwargs)

    monkeypatch.setattr(cudagraph_trees.CUDAGraphTreeManager, "record_function", counting)
    return calls


def _singles(model: Any, tokenizer: Any, conversations: list, generate: Any = None) -> list[checks.Greedy]:
    return [checks.greedy_manual(model, tokenizer, [c], NEW_TOKENS, generate=generate)[0] for c in conversations]


def test_models_load_on_the_gpu_in_bf16(dense_cuda: tuple, moe_cuda: tuple) -> None:
    for model, _ in (dense_cuda, moe_cuda):
        assert model.device.type == "cuda" and model.dtype == torch.bfloat16
        assert {p.device.type for p in model.parameters()} == {"cuda"}
        assert model.config._attn_implementation == "sdpa"


def test_fast_path_compiles_with_cuda_graphs_and_matches_plain(dense_cuda: tuple) -> None:
    """By default the fast path compiles on CUDA (inductor, reduce-overhead, fullgraph) and keeps plain's tokens."""
    model, tokenizer = dense_cuda
    fast = prepare_fast(model, tokenizer)
    config = fast.compile_config
    assert fast.compiles and config is not None
    assert (config.backend, config.mode, config.fullgraph) == ("inductor", "reduce-overhead", True)
    conversations = [SHORT, LONG, OTHER]
    plain = _singles(model, tokenizer, conversations)
    print(checks.assert_batch_matches_single(_singles(model, tokenizer, conversations, fast.generate), plain))
    assert "_compiled_call" in model.__dict__  # generate took the compiled decoding step
    batched = checks.greedy_manual(model, tokenizer, conversations, NEW_TOKENS, generate=fast.generate)
    print(checks.assert_batch_matches_single(batched, plain))


def test_reused_static_cache_replays_cuda_graphs(dense_cuda: tuple, recordings: list[int]) -> None:
    """After warm-up, new prompts of the same batch size and bucket compile nothing and record no CUDA graph: the
    generator hands ``generate`` the same cache tensors each call (fast.py's reason for keeping its caches)."""
    model, tokenizer = dense_cuda
    fast = prepare_fast(model, tokenizer)
    short, long, other = (encode_chat(tokenizer, [c]).to("cuda") for c in (SHORT, LONG, OTHER))

    def run(inputs: Any) -> None:
        fast.generate(inputs["input_ids"], inputs["attention_mask"], max_new_tokens=NEW_TOKENS, do_sample=False)

    for _ in range(3):  # warm-up: compile (or reuse the compiled step), CUDA graph warm-up run, recording
        run(short)
    assert recordings, "no CUDA graph was recorded in the warm-up: the decoding step did not run under CUDA graphs"
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    recorded = len(recordings)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for inputs in (long, other, short, long):
            run(inputs)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    assert len(recordings) == recorded, f"{len(recordings) - recorded} CUDA graph re-recordings after warm-up"


def test_a_new_static_cache_per_call_re_records(dense_cuda: tuple, recordings: list[int]) -> None:
    """The control for the test above: ``cache_implementation="static"`` gives ``generate`` a new cache each call,
    and CUDA graphs record again (what fast.py's docstring says it avoids)."""
    model, tokenizer = dense_cuda
    fast = prepare_fast(model, tokenizer)
    config = fast.generation_config(max_new_tokens=NEW_TOKENS, do_sample=False)
    inputs = encode_chat(tokenizer, [LONG]).to("cuda")
    for _ in range(3):
        model.generate(**inputs, generation_config=config)
    recorded = len(recordings)
    model.generate(**inputs, generation_config=config)
    assert len(recordings) > recorded


def test_moe_fast_path_on_cuda_matches_eager_experts(moe_cuda: tuple) -> None:
    """grouped_mm (batched_mm while decoding) compiled, against the reference eager experts loop."""
    model, tokenizer = moe_cuda
    conversations = [SHORT, LONG]
    before = model.get_experts_implementation()
    model.set_experts_implementation("eager")
    try:
        reference = _singles(model, tokenizer, conversations)
    finally:
        model.set_experts_implementation(before[""])
    fast = prepare_fast(model, tokenizer)
    assert fast.compiles
    print(checks.assert_batch_matches_single(_singles(model, tokenizer, conversations, fast.generate), reference))
    assert model.get_experts_implementation() == before


def test_sdpa_flash_backend_generates(dense_cuda: tuple) -> None:
    """Only the flash kernel allowed: batch-1 generation (no padding mask) runs on it and keeps the tokens."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model, tokenizer = dense_cuda
    reference = _singles(model, tokenizer, [LONG])
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        flash = _singles(model, tokenizer, [LONG])
    print(checks.assert_batch_matches_single(flash, reference))


def test_available_bytes_count_the_memory_pytorch_holds_unused() -> None:
    """A freed tensor stays reserved by PyTorch's caching allocator: the driver no longer counts it as free, but a
    new static cache can take it, so available_bytes still does."""
    before = available_bytes("cuda")
    block = torch.ones(2**30, dtype=torch.uint8, device="cuda")
    assert available_bytes("cuda") <= before - 2**30
    del block
    free_for_the_driver, _ = torch.cuda.mem_get_info()
    assert free_for_the_driver <= before - 2**30 + 2**26  # still reserved
    assert available_bytes("cuda") >= before - 2**26


def test_a_static_cache_past_the_gpus_memory_is_refused_without_allocating(
    dense_cuda: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twice what the GPU has left: refused before the cache exists, with a max_new_tokens that would fit."""
    model, tokenizer = dense_cuda
    monkeypatch.setattr(model.config, "max_position_embeddings", 2**40)  # the context check lets it through
    fast = prepare_fast(model, tokenizer, compile=False)
    inputs = encode_chat(tokenizer, [SHORT]).to("cuda")
    per_position = static_cache_bytes(StaticCache(config=model.config, max_cache_len=1), model.config, 1,
                                      torch.bfloat16)
    new_tokens = 2 * available_bytes("cuda") // per_position
    allocated = torch.cuda.memory_allocated()
    with pytest.raises(InsufficientMemoryError) as caught:
        fast.generate(inputs["input_ids"], inputs["attention_mask"], max_new_tokens=new_tokens, do_sample=False)
    assert torch.cuda.memory_allocated() == allocated and fast._caches == {}
    print(caught.value)
    fits = re.fullmatch(r"pass max_new_tokens=(\d+) or fewer", caught.value.fix)
    assert fits and 0.45 < int(fits[1]) / new_tokens <= 0.5


@pytest.mark.parametrize("model_id", [DENSE_ID, MOE_ID])
@pytest.mark.parametrize("preset", ["nf4", "int8"])
def test_bitsandbytes_presets_run_on_cuda(standin_hub: dict, model_id: str, preset: str) -> None:
    """The site's presets load with bitsandbytes' CUDA kernels and generate; the fast path does not compile them."""
    import bitsandbytes as bnb

    model, tokenizer = _load(model_id, quantization=preset)
    try:
        layer = bnb.nn.Linear4bit if preset == "nf4" else bnb.nn.Linear8bitLt
        quantized = [m for m in model.modules() if isinstance(m, layer)]
        assert quantized and all(m.weight.device.type == "cuda" for m in quantized)
        (run,) = checks.greedy_manual(model, tokenizer, [LONG], NEW_TOKENS)
        assert run.tokens and all(torch.isfinite(step).all() for step in run.logits)
        fast = prepare_fast(model, tokenizer)
        assert not fast.compiles  # transformers does not compile bitsandbytes models
        assert isinstance(fast.reply(SHORT, max_new_tokens=4, do_sample=False), str)
    finally:
        del model
        torch.cuda.empty_cache()
