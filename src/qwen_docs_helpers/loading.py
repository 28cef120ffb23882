"""Load a Qwen chat model and its tokenizer the way every page does, with failures that say what to do.

One call instead of the usual pair of ``from_pretrained`` calls so that the pages agree on the safe and
batch-ready defaults (safetensors only, no remote code, left padding, eval mode) and so that the common
failures (no weights offline, pickled weights, no FlashAttention, no bitsandbytes) end in one clear line.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import try_to_load_from_cache
from huggingface_hub.constants import is_offline_mode
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils.import_utils import is_flash_attn_2_available

from .errors import (
    AttentionUnavailableError,
    InvalidArgumentError,
    ModelNotAvailableError,
    QwenDocsError,
    UnsafeWeightsError,
)
from .published import MODEL_ID_PATTERN, known_model_ids, no_recipe
from .quantization import Preset, bnb_config, require_quantization

__all__ = ["AttentionFallbackWarning", "choose_attention", "load_model"]

FLASH_ATTENTION_2 = "flash_attention_2"
FALLBACK_ATTENTION = "sdpa"


class AttentionFallbackWarning(UserWarning):
    """FlashAttention-2 was asked for but is unusable here, so SDPA is used instead."""


def _attention_policy(requested: str | None, strict: bool, flash_available: bool | None) -> tuple[str | None, str]:
    """The attention to load with, and a warning to give ('' for none)."""
    if requested != FLASH_ATTENTION_2:
        return requested, ""
    if flash_available is None:
        flash_available = is_flash_attn_2_available()
    if flash_available:
        return requested, ""
    problem = "attn_implementation='flash_attention_2' is unusable here (flash-attn is not installed or no CUDA GPU)"
    install = "pip install flash-attn --no-build-isolation on a CUDA machine"
    if strict:
        raise AttentionUnavailableError(problem, f"{install}, or pass attn_implementation='sdpa'")
    return FALLBACK_ATTENTION, f"{problem}: using 'sdpa' instead; {install}, or pass strict_attention=True to fail"


def choose_attention(requested: str | None, strict: bool = False, *, flash_available: bool | None = None) -> str | None:
    """The ``attn_implementation`` to load with, following the site's attention policy.

    - ``None`` stays ``None``: transformers picks its default, SDPA for Qwen2 and Qwen2-MoE.
    - ``"flash_attention_2"`` is kept when flash-attn is usable (``is_flash_attn_2_available()``: installed
      and a CUDA GPU). Otherwise it becomes ``"sdpa"`` with an :class:`AttentionFallbackWarning`, or, with
      ``strict=True``, raises :class:`AttentionUnavailableError`.
    - Anything else (``"sdpa"``, ``"eager"``, ...) is passed through for transformers to check.

    ``flash_available`` overrides the check (for tests and for what-if pages).
    """
    choice, warning = _attention_policy(requested, strict, flash_available)
    if warning:
        warnings.warn(warning, AttentionFallbackWarning, stacklevel=2)
    return choice


def _snapshot_folder(model_id: str) -> Path | None:
    """The local folder holding ``model_id``'s files: the path itself, or its snapshot in the hub cache."""
    if Path(model_id).is_dir():
        return Path(model_id)
    try:
        cached = try_to_load_from_cache(model_id, "config.json")
    except ValueError:  # not a valid repo id: from_pretrained reports that better
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def _require_safetensors(model_id: str) -> None:
    """Refuse a checkpoint that is known to have only pickled weights, before torch unpickles anything."""
    folder = _snapshot_folder(model_id)
    if folder is None or any(folder.glob("*.safetensors")):
        return
    pickled = sorted(path.name for path in folder.glob("*.bin") if path.name.startswith("pytorch_model"))
    if pickled:
        raise UnsafeWeightsError(
            f"{model_id} has only pickled weights ({', '.join(pickled)}), which can run code when loaded",
            "convert to safetensors in a trusted environment (from_pretrained(path, use_safetensors=False)"
            ".save_pretrained(new_path) writes safetensors) and load new_path",
        )


def _looks_like_path(model_id: str, offline: bool) -> bool:
    """Whether a missing ``model_id`` was meant as a folder: it starts like a path or has more than one ``/``
    (offline, also a name without an ``owner/``, which Qwen's hub ids always have)."""
    if model_id.startswith((".", "/", "~")) or model_id.count("/") > 1:
        return True
    return offline and "/" not in model_id


def _not_available(model_id: str) -> ModelNotAvailableError | None:
    """The error for a missing folder, or an id missing from the cache offline (``None``: keep transformers')."""
    if Path(model_id).expanduser().is_dir():
        return None
    offline = is_offline_mode()
    if _looks_like_path(model_id, offline):
        return ModelNotAvailableError(
            f"no such folder: {Path(model_id).expanduser().resolve()}",
            "check the path (a relative one starts at the current directory), or pass a hub id such as "
            "Qwen/Qwen2-7B-Instruct",
        )
    if not offline:
        return None
    download = (f"run `hf download {model_id}` (older: `huggingface-cli download {model_id}`) on a machine with hub "
                "access and copy the cache here")
    if model_id in known_model_ids():
        standin = "or create stand-ins with `qwen-docs standins`"
    elif MODEL_ID_PATTERN.fullmatch(model_id):  # `qwen-docs standins` would refuse it: say what it needs first
        standin = f"or, for a stand-in: {no_recipe(model_id)}, then run `qwen-docs standins`"
    else:  # stand-ins are Qwen checkpoints only
        standin = ""
    return ModelNotAvailableError(
        f"{model_id} is not in the Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading it",
        f"{download}, {standin}" if standin else download,
    )


#: The dtypes weights can be loaded in; float8 and other storage-only types need a quantization config instead.
_LOAD_DTYPES = frozenset({torch.float32, torch.float16, torch.bfloat16, torch.float64})


def _check_dtype(dtype: object) -> str | torch.dtype:
    """``"auto"`` or a torch dtype of :data:`_LOAD_DTYPES`, given as such or by name (``"bfloat16"``)."""
    if isinstance(dtype, str) and dtype == "auto":
        return "auto"
    value = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(value, torch.dtype) or value not in _LOAD_DTYPES:
        raise InvalidArgumentError(f"dtype={dtype!r} is not a dtype load_model can load weights in",
                                   "pass 'auto', torch.bfloat16, torch.float16, torch.float32 or torch.float64 (or "
                                   "a name such as 'bfloat16'); for 8- or 4-bit weights pass quantization='int8' or "
                                   "'nf4'")
    return value


def _require_tokenizer(source: str, tokenizer: PreTrainedTokenizerBase, config: Any) -> None:
    """Refuse the near-empty tokenizer transformers builds for a folder without tokenizer files."""
    vocab_size = getattr(config.get_text_config(), "vocab_size", None)
    if vocab_size and len(tokenizer) < vocab_size // 2:
        raise ModelNotAvailableError(
            f"{source} has no tokenizer files (its tokenizer knows {len(tokenizer)} tokens, the model {vocab_size})",
            "save the tokenizer there too (tokenizer.save_pretrained(path))",
        )


def _quantization_config(
    quantization: Preset | BitsAndBytesConfig | None, model_type: str, dtype: str | torch.dtype
) -> BitsAndBytesConfig | None:
    if quantization is None:
        return None
    if isinstance(quantization, BitsAndBytesConfig):
        require_quantization("nf4" if quantization.load_in_4bit else "int8")
        return quantization
    if not isinstance(quantization, str):
        raise InvalidArgumentError(f"quantization={quantization!r} is not a preset name or a BitsAndBytesConfig",
                                   "pass 'nf4', 'int8', a BitsAndBytesConfig, or None")
    config = bnb_config(quantization, model_type=model_type,
                        compute_dtype=dtype if isinstance(dtype, torch.dtype) else torch.bfloat16)
    require_quantization(quantization)
    return config


def load_model(
    model_id: str | os.PathLike[str],
    *,
    dtype: str | torch.dtype = "auto",
    device_map: str | dict[str, Any] | None = "auto",
    attn_implementation: str | None = None,
    strict_attention: bool = False,
    quantization: Preset | BitsAndBytesConfig | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``model_id`` (hub id or local folder) and its tokenizer, ready for batched chat.

    - Weights come from safetensors only (``use_safetensors=True``) and remote code is never trusted; a
      checkpoint with only ``pytorch_model*.bin`` raises :class:`UnsafeWeightsError`.
    - Attention follows :func:`choose_attention`: ``None`` keeps transformers' default (SDPA);
      ``"flash_attention_2"`` falls back to ``"sdpa"`` with a warning when flash-attn is unusable, or raises
      :class:`AttentionUnavailableError` when ``strict_attention=True``.
    - ``quantization`` is a preset of :func:`~qwen_docs_helpers.quantization.bnb_config` (``"nf4"``,
      ``"int8"``; 4-bit compute runs in ``dtype`` when that is a torch dtype, else bfloat16) or a
      ``BitsAndBytesConfig``; :class:`QuantizationUnavailableError` when bitsandbytes cannot run here.
    - ``dtype`` is ``"auto"`` (the checkpoint's) or torch.bfloat16, float16, float32 or float64, or its name.
    - A missing folder, an id missing from the cache offline, or a folder without tokenizer files raises
      :class:`ModelNotAvailableError`.

    The tokenizer pads on the left (decoder-only batches must end where generation starts); the model is
    returned in eval mode.
    """
    source = os.fspath(model_id)
    dtype = _check_dtype(dtype)
    attention, warning = _attention_policy(attn_implementation, strict_attention, None)
    if warning:
        warnings.warn(warning, AttentionFallbackWarning, stacklevel=2)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
        _require_safetensors(source)
        quantization_config = _quantization_config(quantization, config.model_type, dtype)
        tokenizer = AutoTokenizer.from_pretrained(source, padding_side="left", trust_remote_code=False)
        _require_tokenizer(source, tokenizer, config)
        extra: dict[str, Any] = {}
        if attention is not None:
            extra["attn_implementation"] = attention
        if quantization_config is not None:
            extra["quantization_config"] = quantization_config
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, device_map=device_map, use_safetensors=True, trust_remote_code=False, **extra
        )
    except QwenDocsError:
        raise
    except OSError as error:
        replacement = _not_available(source)
        if replacement is None:
            raise
        raise replacement from error
    model.eval()
    return model, tokenizer
