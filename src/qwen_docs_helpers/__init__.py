"""Helpers behind qwen-docs: load Qwen2 / Qwen2-MoE chat models, chat, stream, quantize, and offline stand-ins.

Names are imported lazily, on first use: ``import qwen_docs_helpers`` (and the Sphinx extension in
``qwen_docs_helpers.sphinx``) stays cheap, and torch and transformers load only when a helper needs them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import (
    AttentionUnavailableError,
    InsufficientMemoryError,
    InvalidArgumentError,
    InvalidMessagesError,
    MissingExtraError,
    ModelNotAvailableError,
    QuantizationUnavailableError,
    QwenDocsError,
    ResultsNotFoundError,
    StreamTimeoutError,
    UnknownArgumentError,
    UnsafeWeightsError,
)

if TYPE_CHECKING:
    from .chat import encode_chat, generate_replies, reply
    from .loading import AttentionFallbackWarning, choose_attention, load_model
    from .quantization import bnb_config, quantization_available
    from .standins import hub_dir, is_standin, offline_env, prepare_hub
    from .streaming import ChatStream, stream_reply
    from .validation import validate_batch, validate_max_new_tokens, validate_messages

#: Public name -> the submodule that defines it.
_LAZY = {
    "encode_chat": "chat",
    "generate_replies": "chat",
    "reply": "chat",
    "AttentionFallbackWarning": "loading",
    "choose_attention": "loading",
    "load_model": "loading",
    "bnb_config": "quantization",
    "quantization_available": "quantization",
    "hub_dir": "standins",
    "is_standin": "standins",
    "offline_env": "standins",
    "prepare_hub": "standins",
    "ChatStream": "streaming",
    "stream_reply": "streaming",
    "validate_batch": "validation",
    "validate_max_new_tokens": "validation",
    "validate_messages": "validation",
}

__all__ = [
    "AttentionFallbackWarning",
    "AttentionUnavailableError",
    "ChatStream",
    "InsufficientMemoryError",
    "InvalidArgumentError",
    "InvalidMessagesError",
    "MissingExtraError",
    "ModelNotAvailableError",
    "QuantizationUnavailableError",
    "QwenDocsError",
    "ResultsNotFoundError",
    "StreamTimeoutError",
    "UnknownArgumentError",
    "UnsafeWeightsError",
    "bnb_config",
    "choose_attention",
    "encode_chat",
    "generate_replies",
    "hub_dir",
    "is_standin",
    "load_model",
    "offline_env",
    "prepare_hub",
    "quantization_available",
    "reply",
    "stream_reply",
    "validate_batch",
    "validate_max_new_tokens",
    "validate_messages",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
