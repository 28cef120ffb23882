"""bitsandbytes presets: the configs, the availability check, and real 4-bit / 8-bit loads on CPU."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import BitsAndBytesConfig

from qwen_docs_helpers import quantization
from qwen_docs_helpers.chat import reply
from qwen_docs_helpers.errors import InvalidArgumentError, QuantizationUnavailableError, UnknownArgumentError
from qwen_docs_helpers.loading import load_model
from qwen_docs_helpers.quantization import PRESETS, bnb_config, quantization_available

DENSE_ID = "Qwen/Qwen2-7B-Instruct"
MOE_ID = "Qwen/Qwen1.5-MoE-A2.7B-Chat"
HELLO = [{"role": "user", "content": "Hello!"}]

# int8 matmuls cast bf16 activations to fp16 and say so on every call.
pytestmark = [
    pytest.mark.filterwarnings("ignore:MatMul8bitLt.*:UserWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),  # bnb import
]


# --- configs ------------------------------------------------------------------------------------------------


def test_nf4_preset() -> None:
    config = bnb_config("nf4")
    assert config.load_in_4bit and not config.load_in_8bit
    assert config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    assert not config.llm_int8_skip_modules  # transformers' own default (keep lm_head) applies
    assert bnb_config("nf4", compute_dtype=torch.float16).bnb_4bit_compute_dtype == torch.float16


def test_int8_preset() -> None:
    config = bnb_config("int8", model_type="qwen2_moe")
    assert config.load_in_8bit and not config.load_in_4bit and not config.llm_int8_skip_modules


def test_moe_in_4_bits_keeps_shared_expert_gate_and_lm_head() -> None:
    assert bnb_config("nf4", model_type="qwen2_moe").llm_int8_skip_modules == ["shared_expert_gate", "lm_head"]
    assert not bnb_config("nf4", model_type="qwen2").llm_int8_skip_modules


def test_unknown_preset() -> None:
    with pytest.raises(InvalidArgumentError, match=r"unknown quantization preset 'fp8': use one of 'nf4', 'int8'"):
        bnb_config("fp8")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("keywords", "message"),
    [({"bnb_4bit_compute_dtype": torch.float16},
      "bnb_config() does not take bnb_4bit_compute_dtype=: pass compute_dtype="),
     ({"load_in_8bit": True}, "bnb_config() does not take load_in_8bit=: pass the preset 'int8'"),
     ({"bnb_4bit_quant_type": "fp4"}, "bnb_config() does not take bnb_4bit_quant_type=: bnb_config takes a preset "
      "('nf4' or 'int8'), model_type= and compute_dtype=; for other settings build a BitsAndBytesConfig yourself "
      "and pass it to load_model(quantization=...)")],
)
def test_bitsandbytes_config_options_say_what_to_pass(keywords: dict[str, object], message: str) -> None:
    with pytest.raises(UnknownArgumentError) as caught:
        bnb_config("nf4", **keywords)  # type: ignore[arg-type]
    assert str(caught.value) == message


# --- availability -------------------------------------------------------------------------------------------


@pytest.fixture
def no_bitsandbytes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Pretend bitsandbytes is not installed (find_spec returns None for a None entry in sys.modules)."""
    quantization._probe.cache_clear()
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    yield
    quantization._probe.cache_clear()


@pytest.mark.parametrize("preset", PRESETS)
def test_availability_is_a_reasoned_answer(preset: quantization.Preset) -> None:
    ok, reason = quantization_available(preset)
    assert isinstance(ok, bool) and reason and "\n" not in reason
    assert ("runs" in reason) == ok


def test_missing_bitsandbytes_is_reported(no_bitsandbytes: None) -> None:
    assert quantization_available("nf4") == (False, "bitsandbytes is not installed")


@pytest.mark.parametrize("quantization_arg", ["nf4", "int8", BitsAndBytesConfig(load_in_4bit=True)],
                         ids=["nf4", "int8", "config"])
def test_loading_without_bitsandbytes_raises_with_the_reason(
    standin_hub: dict[str, Path], no_bitsandbytes: None, quantization_arg: object
) -> None:
    with pytest.raises(QuantizationUnavailableError) as caught:
        load_model(DENSE_ID, quantization=quantization_arg)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)
    assert "bitsandbytes is not installed" in caught.value.problem and "pip install" in caught.value.fix


# --- real quantized loads on this machine ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def bnb() -> object:
    for preset in PRESETS:
        ok, reason = quantization_available(preset)
        if not ok:
            pytest.skip(reason)
    import bitsandbytes

    return bitsandbytes


def _linear_weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the decoder layers' parameters (the stand-ins' embeddings would swamp any difference)."""
    layers = model.model.layers  # type: ignore[union-attr]
    return sum(p.numel() * p.element_size() for p in layers.parameters())


@pytest.fixture(scope="module")
def dense_layer_bytes(standin_hub: dict[str, Path]) -> int:
    model, _ = load_model(DENSE_ID, device_map="cpu")
    return _linear_weight_bytes(model)


def test_dense_nf4_is_quantized_and_generates(bnb: object, dense_layer_bytes: int) -> None:
    model, tokenizer = load_model(DENSE_ID, quantization="nf4", device_map="cpu")
    linears = [m for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(isinstance(m, bnb.nn.Linear4bit) for m in linears)  # type: ignore[attr-defined]
    assert all(isinstance(m.weight, bnb.nn.Params4bit) and m.weight.dtype == torch.uint8 for m in linears)  # type: ignore[attr-defined]
    assert linears[0].weight.quant_state.quant_type == "nf4"
    assert type(model.lm_head) is torch.nn.Linear
    assert _linear_weight_bytes(model) < dense_layer_bytes / 2  # 4-bit weights vs bf16: at least 2x smaller
    assert isinstance(reply(model, tokenizer, HELLO, max_new_tokens=4, do_sample=False), str)


def test_dense_int8_is_quantized_and_generates(bnb: object, dense_layer_bytes: int) -> None:
    model, tokenizer = load_model(DENSE_ID, quantization="int8", device_map="cpu")
    linears = [m for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(isinstance(m, bnb.nn.Linear8bitLt) for m in linears)  # type: ignore[attr-defined]
    assert all(isinstance(m.weight, bnb.nn.Int8Params) and m.weight.dtype == torch.int8 for m in linears)  # type: ignore[attr-defined]
    assert _linear_weight_bytes(model) < dense_layer_bytes * 0.75
    assert isinstance(reply(model, tokenizer, HELLO, max_new_tokens=4, do_sample=False), str)


def test_moe_int8_generates(bnb: object) -> None:
    model, tokenizer = load_model(MOE_ID, quantization="int8", device_map="cpu")
    quantized = [name for name, m in model.named_modules() if isinstance(m, bnb.nn.Linear8bitLt)]  # type: ignore[attr-defined]
    assert any(name.endswith("shared_expert_gate") for name in quantized)
    assert isinstance(reply(model, tokenizer, HELLO, max_new_tokens=4, do_sample=False), str)


def test_moe_nf4_skips_the_gate_and_generates(bnb: object) -> None:
    model, tokenizer = load_model(MOE_ID, quantization="nf4", device_map="cpu")
    modules = dict(model.named_modules())
    gates = [m for name, m in modules.items() if name.endswith("shared_expert_gate")]
    assert gates and all(type(m) is torch.nn.Linear for m in gates)  # kept in bf16: out_features == 1
    assert type(model.lm_head) is torch.nn.Linear
    shared = [m for name, m in modules.items() if ".shared_expert." in name and isinstance(m, torch.nn.Linear)]
    assert shared and all(isinstance(m, bnb.nn.Linear4bit) for m in shared)  # type: ignore[attr-defined]
    assert isinstance(reply(model, tokenizer, HELLO, max_new_tokens=4, do_sample=False), str)


class _Records(logging.Handler):
    """Keeps what reaches the handlers of a logger (after the logger's own filters)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_int8_says_its_cast_warning_once(bnb: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """bitsandbytes logs the bf16 -> fp16 cast at every int8 matmul: hundreds of lines per reply, without the filter."""
    logger = logging.getLogger(quantization.INT8_CAST_LOGGER)
    monkeypatch.setattr(logger, "filters", [])  # as in a fresh process: earlier loads installed the filter
    records = _Records()
    logger.addHandler(records)
    try:
        model, tokenizer = load_model(DENSE_ID, quantization="int8", device_map="cpu")
        load_model(DENSE_ID, quantization=BitsAndBytesConfig(load_in_8bit=True), device_map="cpu")
        for _ in range(2):
            reply(model, tokenizer, HELLO, max_new_tokens=4, do_sample=False)
    finally:
        logger.removeHandler(records)
    casts = [message for message in records.messages if message.startswith("MatMul8bitLt")]
    assert casts == ["MatMul8bitLt: inputs will be cast from torch.bfloat16 to float16 during quantization"]
    assert model.dtype == torch.bfloat16  # said once, still done: the dtype is not changed
    assert len(logger.filters) == 1  # one filter, however many loads
    other = logging.LogRecord(logger.name, logging.WARNING, __file__, 1, "something else", None, None)
    assert logger.filter(other) and logger.filter(other)  # other records, repeats included, pass
