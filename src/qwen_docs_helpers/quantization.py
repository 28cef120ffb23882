"""bitsandbytes presets for Qwen2 and Qwen2-MoE, and an honest answer to "can I use them here?".

The pages show two presets, NF4 4-bit and int8. They are spelled out once here so every page loads the
same thing, with the one model-specific exception built in: Qwen2-MoE's ``shared_expert_gate`` is a
``Linear(hidden, 1)``, and bitsandbytes' 4-bit CPU kernel asserts on an output size of 1 (``N must be
divisible by block_n``), so it stays unquantized together with ``lm_head``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from functools import cache
from typing import Literal, get_args

import torch
from transformers import BitsAndBytesConfig
from transformers.utils.import_utils import BITSANDBYTES_MIN_VERSION, is_bitsandbytes_available

from .errors import InvalidArgumentError, QuantizationUnavailableError
from .keywords import explain_unknown_keywords

__all__ = [
    "MOE_4BIT_SKIP_MODULES",
    "PRESETS",
    "Preset",
    "bnb_config",
    "quantization_available",
    "require_quantization",
    "say_int8_casts_once",
]

#: A preset name: 4-bit NF4 or LLM.int8() 8-bit.
Preset = Literal["nf4", "int8"]
#: Preset names, in the order the pages present them.
PRESETS: tuple[Preset, ...] = get_args(Preset)
#: Modules kept in full precision when Qwen2-MoE is loaded in 4 bits (see the module docstring).
MOE_4BIT_SKIP_MODULES = ("shared_expert_gate", "lm_head")


def _check_preset(preset: str) -> Preset:
    if preset not in PRESETS:
        raise InvalidArgumentError(f"unknown quantization preset {preset!r}",
                                   f"use one of {', '.join(repr(p) for p in PRESETS)} or pass a BitsAndBytesConfig")
    return preset


@explain_unknown_keywords(
    {"bnb_4bit_compute_dtype": "pass compute_dtype=", "load_in_4bit": "pass the preset 'nf4'",
     "load_in_8bit": "pass the preset 'int8'"},
    "bnb_config takes a preset ('nf4' or 'int8'), {keywords}; for other settings build a "
    "BitsAndBytesConfig yourself and pass it to load_model(quantization=...)",
)
def bnb_config(preset: Preset, *, model_type: str | None = None,
               compute_dtype: torch.dtype = torch.bfloat16) -> BitsAndBytesConfig:
    """The ``BitsAndBytesConfig`` for a preset.

    ``"nf4"``: 4-bit NormalFloat weights with double quantization (the quantization constants are quantized
    too) and matmuls in ``compute_dtype``. ``"int8"``: LLM.int8() 8-bit weights; bitsandbytes casts bfloat16
    inputs to float16 for its int8 matmuls and logs that on every matmul, which
    :func:`~qwen_docs_helpers.loading.load_model` reduces to once (:func:`say_int8_casts_once`). ``model_type`` is
    the config's ``model_type``; for ``"qwen2_moe"`` in 4 bits :data:`MOE_4BIT_SKIP_MODULES` stay unquantized.
    """
    if _check_preset(preset) == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    # Setting the skip list replaces transformers' default one (which keeps lm_head), so lm_head is listed.
    skip = list(MOE_4BIT_SKIP_MODULES) if model_type == "qwen2_moe" else None
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=skip,
    )


#: The logger bitsandbytes warns on, at every int8 matmul, that bfloat16 (or float32) inputs are cast to float16.
INT8_CAST_LOGGER = "bitsandbytes.autograd._functions"
_INT8_CAST_MESSAGE = "MatMul8bitLt: inputs will be cast from"


class _SayOnce(logging.Filter):
    """Let each distinct int8 cast warning through once and drop its exact repeats (one per matmul, hundreds per
    reply, would bury everything else); other records pass untouched."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(_INT8_CAST_MESSAGE):
            return True
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def say_int8_casts_once() -> None:
    """Make bitsandbytes say its int8 cast warning once per dtype, not on every matmul (the cast itself, and the
    dtype, are unchanged). Installs a filter on :data:`INT8_CAST_LOGGER`, at most one per process."""
    logger = logging.getLogger(INT8_CAST_LOGGER)
    if not any(isinstance(existing, _SayOnce) for existing in logger.filters):
        logger.addFilter(_SayOnce())


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@cache
def _probe(preset: Preset, device: str) -> tuple[bool, str]:
    if importlib.util.find_spec("bitsandbytes") is None:
        return False, "bitsandbytes is not installed"
    try:
        bnb = importlib.import_module("bitsandbytes")
    except Exception as error:  # a broken install fails here with anything from OSError to RuntimeError
        return False, f"bitsandbytes does not import ({type(error).__name__}: {_short(error)})"
    if not is_bitsandbytes_available():
        return False, f"bitsandbytes {bnb.__version__} is older than transformers needs ({BITSANDBYTES_MIN_VERSION})"
    supported = getattr(bnb, "supported_torch_devices", {"cuda"})
    if device not in supported:
        return False, f"bitsandbytes {bnb.__version__} has no {device} backend (it has {', '.join(sorted(supported))})"
    # Run the kernels once: an importable bitsandbytes without a working backend fails only here.
    try:
        layer: torch.nn.Module
        if preset == "nf4":
            layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.bfloat16, quant_type="nf4")
        else:
            layer = bnb.nn.Linear8bitLt(64, 64, has_fp16_weights=False)
        layer = layer.to(device)
        with torch.inference_mode():
            layer(torch.ones(2, 64, dtype=torch.bfloat16 if preset == "nf4" else torch.float16, device=device))
    except Exception as error:
        return False, f"bitsandbytes {bnb.__version__} failed a {preset} test matmul on {device} " \
                      f"({type(error).__name__}: {_short(error)})"
    return True, f"bitsandbytes {bnb.__version__} runs {preset} on {device}"


def _short(error: BaseException) -> str:
    return " ".join(str(error).split())[:200]


def quantization_available(preset: Preset = "nf4") -> tuple[bool, str]:
    """Whether ``preset`` can run on this machine (GPU if there is one, else CPU), and why or why not.

    Checks that bitsandbytes imports, supports the device, and runs one small quantized matmul; the answer
    is cached per preset and device.
    """
    return _probe(_check_preset(preset), _device())


def require_quantization(preset: Preset = "nf4") -> None:
    """Raise :class:`QuantizationUnavailableError` with the reason when ``preset`` cannot run here."""
    ok, reason = quantization_available(preset)
    if not ok:
        raise QuantizationUnavailableError(
            f"{preset} quantization cannot run here ({reason})",
            "pip install 'bitsandbytes>=0.45' (a build with a backend for this device), or load without quantization=",
        )
