"""Memory a static KV cache will take, and memory a device has left: compared before the fast path allocates.

:class:`~qwen_docs_helpers.fast.FastGenerator` allocates its static cache at full size (prompt plus
``max_new_tokens``, for every sequence) when the first token is computed. Too large a cache fails there, deep inside
``generate``, with a CUDA out-of-memory error that does not name the cache, or on a CPU with the kernel's OOM killer.
Comparing the two sizes first gives a one-line refusal that says how long a reply fits instead. Only a cache that
certainly cannot fit is refused: what the device has left is counted generously (memory PyTorch holds unused,
swap), and the activations and compiled graphs that need memory besides are left out.
"""

from __future__ import annotations

import psutil
import torch
from transformers import PretrainedConfig, StaticCache

from .speed import kv_cache_bytes_per_token

__all__ = ["available_bytes", "static_cache_bytes"]


def available_bytes(device: torch.device | str) -> int | None:
    """The most a new allocation can take on ``device``, in bytes; ``None`` where that cannot be read.

    - CUDA: the device's free memory plus what PyTorch's caching allocator holds without using it (freed tensors
      it keeps for reuse, such as a static cache just dropped).
    - CPU: the system's available memory plus free swap (read with psutil).
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "cpu":
        return int(psutil.virtual_memory().available + psutil.swap_memory().free)
    return None


def static_cache_bytes(cache: StaticCache, config: PretrainedConfig, batch_size: int, dtype: torch.dtype) -> int:
    """Bytes the keys and values of ``cache`` take once allocated for ``batch_size`` sequences of ``dtype``.

    Each layer's length is the cache's own (a sliding-window layer holds at most its window); the bytes per position
    come from the model's ``config`` (:func:`~qwen_docs_helpers.speed.kv_cache_bytes_per_token`).
    """
    text = config.get_text_config(decoder=True)
    per_layer = kv_cache_bytes_per_token(text, dtype.itemsize) // int(text.num_hidden_layers)  # a position, a layer
    positions = sum(int(getattr(layer, "max_cache_len", 0)) for layer in cache.layers)  # 0: no keys and values
    return batch_size * per_layer * positions
