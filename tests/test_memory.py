"""What the fast path compares before it allocates a static cache: the cache's bytes and the memory left."""

from __future__ import annotations

import psutil
import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    PretrainedConfig,
    Qwen2Config,
    Qwen2MoeConfig,
    StaticCache,
)

from qwen_docs_helpers.memory import available_bytes, static_cache_bytes

_TINY = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=3, vocab_size=128)
CONFIGS = {
    "grouped-query attention": Qwen2Config(**_TINY, num_key_value_heads=2),
    "sliding-window layers": Qwen2Config(**_TINY, num_key_value_heads=2, use_sliding_window=True, sliding_window=8,
                                         max_window_layers=1),
    "MoE, a head per key": Qwen2MoeConfig(**_TINY, num_key_value_heads=4, num_experts=4, num_experts_per_tok=2,
                                          moe_intermediate_size=32, shared_expert_intermediate_size=64),
}


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_static_cache_bytes_are_what_a_forward_pass_allocates(config: PretrainedConfig, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    cache = StaticCache(config=config, max_cache_len=20)
    predicted = static_cache_bytes(cache, config, 3, dtype)
    with torch.no_grad():
        model(input_ids=torch.randint(0, 128, (3, 5)), past_key_values=cache, use_cache=True)
    assert cache.is_initialized
    lengths = [layer.keys.shape[2] for layer in cache.layers]
    if config.use_sliding_window:
        assert lengths == [20, 8, 8]  # the test covers layers shorter than the cache
    assert predicted == sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)


def test_available_bytes_on_the_cpu_are_within_the_machines_memory() -> None:
    """Bounds only: how fast the reading follows an allocation depends on the kernel (in this project's sandbox,
    touching 1 GiB moved it by 0.3 GiB), so no test asserts that. The fast-path tests compare it with a real cache."""
    available = available_bytes("cpu")
    assert available is not None
    assert 0 < available <= psutil.virtual_memory().total + psutil.swap_memory().total


def test_available_bytes_is_unknown_where_it_cannot_be_read() -> None:
    assert available_bytes("meta") is None
