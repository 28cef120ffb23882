"""The opt-in fast path (static cache, compiled decoding, bucket padding) gives the plain path's greedy tokens.

All comparisons run in float32 on the stand-ins, where the plain path is deterministic and padded and unpadded
batches agree token for token (tests/test_chat.py), so exact equality is the right check. Compilation runs on
CPU: one test compiles the dense stand-in with inductor (transformers' default backend; ~20 s cold on a loaded
2-core machine, a few seconds once inductor's cache is warm), the MoE test uses ``aot_eager`` (the same
dynamo graph capture with ``fullgraph=True``, without inductor's code generation) to keep the file short.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformers import CompileConfig, GenerationConfig, StaticCache

from qwen_docs_helpers import checks
from qwen_docs_helpers.chat import encode_chat, generate_replies
from qwen_docs_helpers.errors import InsufficientMemoryError, InvalidArgumentError, UnknownArgumentError
from qwen_docs_helpers.fast import DEFAULT_BUCKETS, bucket_length, pad_to_bucket, prepare_fast
from qwen_docs_helpers.memory import available_bytes, static_cache_bytes

SHORT = [{"role": "user", "content": "Hi"}]
LONG = [{"role": "user", "content": "Give me a short introduction to large language models, with examples."}]
OTHER = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
MAX_NEW_TOKENS = 12
GREEDY = dict(max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
#: Attributes transformers' generate leaves on a model after static-cache / compiled runs.
_GENERATE_STATE = ("_compiled_call", "_last_compile_config", "_previous_max_cache_length")

pytestmark = pytest.mark.filterwarnings("ignore:.*generation flags are not valid.*:UserWarning")


@pytest.fixture
def clean(dense_fp32: tuple, moe_fp32: tuple) -> Iterator[None]:
    """Start without, and leave the shared models as they were: no compiled call or cache length left behind."""
    models = [dense_fp32[0], moe_fp32[0]]
    before = [{name: model.__dict__.pop(name) for name in _GENERATE_STATE if name in model.__dict__}
              for model in models]
    yield
    for model, saved in zip(models, before, strict=True):
        for name in _GENERATE_STATE:
            model.__dict__.pop(name, None)
        model.__dict__.update(saved)


def plain(model: Any, inputs: Any) -> torch.Tensor:
    return model.generate(**inputs, **GREEDY)


@pytest.mark.parametrize(("length", "expected"), [(0, 64), (1, 64), (64, 64), (65, 128), (2000, 2048),
                                                  (2048, 2048), (2049, 4096), (5000, 6144)])
def test_bucket_length(length: int, expected: int) -> None:
    assert bucket_length(length) == expected


def test_bucket_length_custom_and_invalid() -> None:
    assert bucket_length(10, (32, 8, 16)) == 16  # order does not matter
    assert bucket_length(33, (8, 16, 32)) == 64
    for bad in [(), (0, 64), (-8,), (1.5,), (True,)]:
        with pytest.raises(InvalidArgumentError):
            bucket_length(3, bad)
    with pytest.raises(InvalidArgumentError):
        bucket_length(-1)


def test_pad_to_bucket_keeps_rows_and_token_sets() -> None:
    ids = torch.tensor([[7, 7, 3, 4, 5], [1, 2, 3, 4, 5]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    padded, padded_mask, added = pad_to_bucket(ids, mask, buckets=(8,))
    assert added == 3 and padded.shape == (2, 8) and padded_mask.shape == (2, 8)
    assert torch.equal(padded[:, 3:], ids) and torch.equal(padded_mask[:, 3:], mask)
    assert padded_mask[:, :3].sum() == 0
    for row in range(2):  # the filler repeats the row's first token: the set of ids (repetition penalty) is unchanged
        assert set(padded[row].tolist()) == set(ids[row].tolist())
    same, same_mask, none_added = pad_to_bucket(padded, padded_mask, buckets=(8,))
    assert none_added == 0 and same is padded and same_mask is padded_mask
    _, ones, _ = pad_to_bucket(ids, None, buckets=(8,))
    assert ones.tolist() == [[0, 0, 0, 1, 1, 1, 1, 1]] * 2


def test_prompts_of_different_lengths_share_a_bucket(dense_fp32: tuple) -> None:
    _, tokenizer = dense_fp32
    short, long = (encode_chat(tokenizer, [c]) for c in (SHORT, LONG))
    assert short["input_ids"].shape[1] < long["input_ids"].shape[1] <= DEFAULT_BUCKETS[0]
    shapes = {pad_to_bucket(e["input_ids"], e["attention_mask"])[0].shape for e in (short, long)}
    assert shapes == {(1, DEFAULT_BUCKETS[0])}


def test_static_cache_and_buckets_match_plain_dense(dense_fp32: tuple, clean: None) -> None:
    model, tokenizer = dense_fp32
    fast = prepare_fast(model, tokenizer, compile=False)
    assert not fast.compiles and fast.generation_config().disable_compile
    for conversations in ([LONG], [SHORT, LONG, OTHER]):
        inputs = encode_chat(tokenizer, conversations)
        expected = model.generate(**inputs, **GREEDY, output_logits=True, return_dict_in_generate=True)
        got = fast.generate(inputs["input_ids"], inputs["attention_mask"], **GREEDY, output_logits=True,
                            return_dict_in_generate=True)
        assert got.sequences.shape == expected.sequences.shape  # the bucket padding is removed again
        assert torch.equal(got.sequences, expected.sequences)
        # Not only the argmax: every step's logits (attending to the padding would move them by ~1).
        for fast_step, plain_step in zip(got.logits, expected.logits, strict=True):
            torch.testing.assert_close(fast_step, plain_step, atol=1e-4, rtol=0)
    # The chat-level helpers agree too.
    assert fast.generate_replies([SHORT, OTHER], max_new_tokens=MAX_NEW_TOKENS, do_sample=False) == \
        generate_replies(model, tokenizer, [SHORT, OTHER], max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    assert fast.reply(SHORT, max_new_tokens=4, do_sample=False) == \
        generate_replies(model, tokenizer, [SHORT], max_new_tokens=4, do_sample=False)[0]


def test_checks_read_the_fast_path_as_they_read_plain_generate(dense_fp32: tuple, clean: None) -> None:
    """``checks.greedy_manual(..., generate=fast.generate)`` (the speed page's hidden check, tests/gpu) gets the
    same prompt, tokens and logits as the plain path in float32: the bucket padding is not in what it reads."""
    model, tokenizer = dense_fp32
    fast = prepare_fast(model, tokenizer, compile=False)
    conversations = [SHORT, LONG]
    plain_runs = checks.greedy_manual(model, tokenizer, conversations, MAX_NEW_TOKENS)
    fast_runs = checks.greedy_manual(model, tokenizer, conversations, MAX_NEW_TOKENS, generate=fast.generate)
    for got, expected in zip(fast_runs, plain_runs, strict=True):
        assert (got.prompt, got.tokens) == (expected.prompt, expected.tokens) and got.tokens
        assert len(got.logits) == len(expected.logits) == len(got.tokens)
        for fast_step, plain_step in zip(got.logits, expected.logits, strict=True):
            torch.testing.assert_close(fast_step, plain_step, atol=1e-4, rtol=0)


def test_one_static_cache_per_batch_size_is_emptied_and_reused(dense_fp32: tuple, clean: None) -> None:
    """Calls of one batch size share one cache (same tensors, so CUDA graphs need not re-record), emptied each time:
    every call still gives the plain path's tokens, whatever ran before it."""
    model, tokenizer = dense_fp32
    fast = prepare_fast(model, tokenizer, compile=False)
    long, other = (encode_chat(tokenizer, [c]) for c in (LONG, OTHER))

    def run(inputs: Any, new_tokens: int) -> torch.Tensor:
        got = fast.generate(inputs["input_ids"], inputs["attention_mask"], max_new_tokens=new_tokens, do_sample=False)
        assert torch.equal(got, model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False))
        return got

    run(long, MAX_NEW_TOKENS)
    ((length, cache),) = fast._caches.values()
    assert length == DEFAULT_BUCKETS[0] + MAX_NEW_TOKENS - 1
    pointers = [layer.keys.data_ptr() for layer in cache.layers]
    run(other, MAX_NEW_TOKENS)  # another prompt in the same cache: nothing of the first one is left in it
    run(long, 3)  # fewer new tokens: the longer cache serves
    assert fast._caches[1][1] is cache and [layer.keys.data_ptr() for layer in cache.layers] == pointers
    run(long, MAX_NEW_TOKENS + 5)  # more than it holds: one longer cache replaces it, and is then reused
    grown = fast._caches[1][1]
    assert grown is not cache and fast._caches[1][0] == DEFAULT_BUCKETS[0] + MAX_NEW_TOKENS + 4
    run(other, 2)
    assert fast._caches[1][1] is grown
    batch = encode_chat(tokenizer, [SHORT, LONG])
    run(batch, 4)  # a batch of two has its own cache
    assert sorted(fast._caches) == [1, 2]
    fast.clear_caches()
    assert fast._caches == {}
    with pytest.raises(InvalidArgumentError, match="brings its own static cache"):
        fast.generate(long["input_ids"], past_key_values=cache, max_new_tokens=2)


def test_compiled_decoding_matches_plain_and_buckets_avoid_recompiles(dense_fp32: tuple, clean: None) -> None:
    """inductor on CPU, fullgraph: same tokens, and a longer prompt in the same bucket compiles nothing new.

    Without buckets the longer prompt needs a longer static cache, new shapes, and so a recompilation (checked
    with the cheap ``eager`` backend).
    """
    model, tokenizer = dense_fp32
    fast = prepare_fast(model, tokenizer, compile=True)
    config = fast.compile_config
    assert config is not None and config.backend == "inductor" and config.fullgraph and config._compile_all_devices
    assert fast.compiles
    short, long = (encode_chat(tokenizer, [c]) for c in (SHORT, LONG))
    assert torch.equal(fast.generate(short["input_ids"], short["attention_mask"], **GREEDY), plain(model, short))
    assert "_compiled_call" in model.__dict__  # generate took the compiled decoding path
    with torch._dynamo.config.patch(error_on_recompile=True):
        got = fast.generate(long["input_ids"], long["attention_mask"], **GREEDY)
    assert torch.equal(got, plain(model, long))

    # From scratch: after one recompilation dynamo makes the changed size dynamic and stops recompiling for it.
    torch._dynamo.reset()
    for name in _GENERATE_STATE:
        model.__dict__.pop(name, None)
    eager = CompileConfig(backend="eager", fullgraph=True, mode="default")
    unbucketed = prepare_fast(model, tokenizer, compile=eager, buckets=None)
    unbucketed.generate(short["input_ids"], short["attention_mask"], **GREEDY)
    with torch._dynamo.config.patch(error_on_recompile=True), pytest.raises(Exception, match=r"[Rr]ecompil"):
        unbucketed.generate(long["input_ids"], long["attention_mask"], **GREEDY)


def test_moe_experts_implementations_give_the_same_tokens(moe_fp32: tuple, clean: None) -> None:
    model, tokenizer = moe_fp32
    assert model.get_experts_implementation() == {"": "grouped_mm"}
    inputs = encode_chat(tokenizer, [SHORT, LONG])
    grouped = plain(model, inputs)
    model.set_experts_implementation("eager")
    try:
        eager = plain(model, inputs)
        # The fast path switches to grouped_mm for its call (eager experts cannot be captured in one graph) ...
        aot_eager = CompileConfig(backend="aot_eager", fullgraph=True, mode="default")
        compiled = prepare_fast(model, tokenizer, compile=aot_eager)
        fast = compiled.generate(inputs["input_ids"], inputs["attention_mask"], **GREEDY)
        # ... and back afterwards.
        assert model.get_experts_implementation() == {"": "eager"}
    finally:
        model.set_experts_implementation("grouped_mm")
    assert torch.equal(grouped, eager)
    assert torch.equal(fast, eager)


def test_fast_path_restores_attention_and_returns_dict_outputs(dense_fp32: tuple, clean: None) -> None:
    model, tokenizer = dense_fp32
    assert model.config._attn_implementation == "sdpa"
    eager = prepare_fast(model, tokenizer, compile=False, attn_implementation="eager")
    inputs = encode_chat(tokenizer, [SHORT])
    out = eager.generate(inputs["input_ids"], inputs["attention_mask"], return_dict_in_generate=True,
                         output_scores=True, **GREEDY)
    assert model.config._attn_implementation == "sdpa"
    assert torch.equal(out.sequences, plain(model, inputs))
    assert len(out.scores) == MAX_NEW_TOKENS


def test_compile_choices_and_refusals(dense_fp32: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer = dense_fp32
    assert prepare_fast(model).compile_config is None  # CPU: no compilation unless asked
    forced = prepare_fast(model, compile=True).compile_config
    assert forced is not None and forced.mode == "default" and forced._compile_all_devices
    custom = CompileConfig(backend="aot_eager")
    chosen = prepare_fast(model, compile=custom)
    assert chosen.compile_config is not None and chosen.compile_config.backend == "aot_eager"
    assert custom._compile_all_devices is None  # the caller's config is not modified
    settings = chosen.generation_config(max_new_tokens=3)
    assert settings.cache_implementation == "static" and not settings.disable_compile
    assert settings.max_new_tokens == 3 and model.generation_config.cache_implementation is None
    monkeypatch.setattr(model, "hf_quantizer", SimpleNamespace(is_compileable=False), raising=False)
    assert not prepare_fast(model, compile=True).compiles  # bitsandbytes models are not compiled by transformers
    with pytest.raises(InvalidArgumentError):
        prepare_fast(model, tokenizer).generate(torch.tensor([[1, 2]]), max_length=8)
    with pytest.raises(InvalidArgumentError):
        prepare_fast(model).reply(SHORT)  # no tokenizer
    with pytest.raises(InvalidArgumentError, match=r"did you mean max_new_tokens\?$"):
        prepare_fast(model, tokenizer).reply(SHORT, max_new_token=3)
    with pytest.raises(InvalidArgumentError, match=r"^temperature=0"):
        prepare_fast(model, tokenizer).generate_replies([SHORT], temperature=0)


@pytest.mark.parametrize(
    ("keywords", "fix"),
    [({"max_new_tokens": 32}, "generation settings (max_new_tokens=, do_sample=, ...) go to its reply(...)"),
     ({"compile_config": CompileConfig()}, "pass the CompileConfig as compile="),
     ({"bucket": (64,)}, "did you mean buckets=?")],
)
def test_prepare_fast_says_where_other_settings_go(dense_fp32: tuple, keywords: dict[str, object], fix: str) -> None:
    model, tokenizer = dense_fp32
    with pytest.raises(UnknownArgumentError) as caught:
        prepare_fast(model, tokenizer, **keywords)  # type: ignore[arg-type]
    assert caught.value.problem == f"prepare_fast() does not take {next(iter(keywords))}="
    assert fix in caught.value.fix
    assert prepare_fast(model=model, tokenizer=tokenizer).tokenizer is tokenizer  # both may be named


def test_min_length_counts_the_prompt_without_its_padding(dense_fp32: tuple, clean: None) -> None:
    model, tokenizer = dense_fp32
    inputs = encode_chat(tokenizer, [SHORT])
    length = inputs["input_ids"].shape[1]
    first = plain(model, inputs)[0, length].item()
    # The first greedy token ends the reply, unless min_length holds EOS back for 5 tokens.
    kwargs = dict(max_new_tokens=8, do_sample=False, eos_token_id=first, min_length=length + 5)
    expected = model.generate(**inputs, **kwargs)
    fast = prepare_fast(model, tokenizer, compile=False)
    got = fast.generate(inputs["input_ids"], inputs["attention_mask"], **kwargs)
    assert expected.shape[1] - length > 5 and torch.equal(got, expected)


@pytest.mark.filterwarnings("ignore:Using the model-agnostic default:UserWarning")
def test_without_max_new_tokens_the_lengths_are_plain_generates(dense_fp32: tuple, clean: None) -> None:
    model, tokenizer = dense_fp32
    fast = prepare_fast(model, tokenizer, compile=False)
    inputs = encode_chat(tokenizer, [SHORT])
    args = (inputs["input_ids"], inputs["attention_mask"])
    assert torch.equal(fast.generate(*args, do_sample=False), model.generate(**inputs, do_sample=False))
    limited = GenerationConfig(do_sample=False, max_length=inputs["input_ids"].shape[1] + 6)
    expected = model.generate(**inputs, generation_config=limited)
    assert expected.shape[1] == limited.max_length
    assert torch.equal(fast.generate(*args, generation_config=limited), expected)
    with pytest.raises(InvalidArgumentError, match="pass max_new_tokens"):
        fast.generate(*args, generation_config=GenerationConfig(do_sample=False, max_length=3))


def test_without_any_length_the_warning_is_plain_generates(dense_fp32: tuple, clean: None) -> None:
    """Both make transformers' default 20 new tokens and warn alike, counting the prompt without the bucket padding
    (left to generate, the fast path's warning counted the padding)."""
    import warnings

    model, tokenizer = dense_fp32
    inputs = encode_chat(tokenizer, [SHORT])
    fast = prepare_fast(model, tokenizer, compile=False)
    said = []
    for run in (lambda: model.generate(**inputs, do_sample=False),
                lambda: fast.generate(inputs["input_ids"], inputs["attention_mask"], do_sample=False)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            output = run()
        said.append([str(w.message) for w in caught if "model-agnostic" in str(w.message)])
        assert output.shape[1] == inputs["input_ids"].shape[1] + 20
    plain_said, fast_said = said
    assert len(plain_said) == 1 and fast_said == plain_said
    assert f"(={inputs['input_ids'].shape[1] + 20})" in fast_said[0]


def test_a_generation_config_and_settings_together(dense_fp32: tuple, clean: None) -> None:
    model, tokenizer = dense_fp32
    inputs = encode_chat(tokenizer, [SHORT])
    config = GenerationConfig(do_sample=False, repetition_penalty=1.3)
    expected = model.generate(**inputs, generation_config=config, max_new_tokens=5)
    got = prepare_fast(model, tokenizer, compile=False).generate(inputs["input_ids"], inputs["attention_mask"],
                                                                 generation_config=config, max_new_tokens=5)
    assert torch.equal(got, expected) and config.max_new_tokens is None  # the caller's config is not modified


def test_stop_strings_on_the_fast_path(dense_fp32: tuple, clean: None) -> None:
    model, tokenizer = dense_fp32
    fast = prepare_fast(model, tokenizer, compile=False)
    full = fast.reply(SHORT, max_new_tokens=8, do_sample=False)
    stop = full[len(full) // 2:].strip()[:1]
    kwargs = dict(max_new_tokens=8, do_sample=False, stop_strings=[stop])
    expected = generate_replies(model, tokenizer, [SHORT, OTHER], **kwargs)
    assert len(expected[0]) < len(full), "the stop string stops nothing: the test would be vacuous"
    assert fast.generate_replies([SHORT, OTHER], **kwargs) == expected
    with pytest.raises(InvalidArgumentError, match=r"^num_return_sequences=2"):
        fast.generate_replies([SHORT, OTHER], do_sample=True, num_return_sequences=2)


def test_a_generation_past_the_context_is_refused_before_its_cache_is_allocated(
    dense_fp32: tuple, clean: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tokenizer = dense_fp32
    inputs = encode_chat(tokenizer, [SHORT])
    length = inputs["input_ids"].shape[1]
    assert bucket_length(length) > length + 8, "the bucket padding must pass the context for this test"
    monkeypatch.setattr(model.config, "max_position_embeddings", length + 8)
    fast = prepare_fast(model, tokenizer, compile=False)
    args = (inputs["input_ids"], inputs["attention_mask"])
    # Up to the context it runs, and the bucket padding (positions from the mask) does not count against it.
    assert torch.equal(fast.generate(*args, max_new_tokens=8, do_sample=False, min_new_tokens=8),
                       model.generate(**inputs, max_new_tokens=8, do_sample=False, min_new_tokens=8))
    fast.clear_caches()
    with pytest.raises(InvalidArgumentError) as caught:
        fast.generate(*args, max_new_tokens=9, do_sample=False)
    assert caught.value.problem.startswith(f"the prompt's {length} tokens and 9 new ones need {length + 9} positions")
    assert caught.value.fix.startswith("pass max_new_tokens=8 or fewer, or, for a longer context, turn on YaRN")
    assert fast._caches == {}  # refused before the static cache was allocated
    with pytest.raises(InvalidArgumentError, match="max_new_tokens=8 or fewer"):  # a total length alike
        fast.generate(*args, generation_config=GenerationConfig(do_sample=False, max_length=length + 9))
    monkeypatch.setattr(model.config, "max_position_embeddings", length)
    with pytest.raises(InvalidArgumentError, match=r"^the prompt has \d+ tokens .* leaves none for the reply: shorten"):
        fast.reply(SHORT, max_new_tokens=1)


def _cache_bytes(cache: Any) -> int:
    """What transformers allocated for a static cache: the bytes of its keys and values tensors."""
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)


def _with_memory_left(monkeypatch: pytest.MonkeyPatch, available: int) -> None:
    monkeypatch.setattr("qwen_docs_helpers.fast.available_bytes", lambda device: available)


def test_a_cache_larger_than_this_machines_memory_is_refused_before_it_is_allocated(
    dense_fp32: tuple, clean: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On this machine's real memory: a static cache of terabytes is refused with the size of both and the longest
    reply that fits, and nothing is allocated. (Without the check, allocating it fails with the allocator's own
    error: each layer's tensors alone are larger than the machine. A cache a few times the machine's memory would
    be allocated layer by layer, in tensors that each fit, and the OOM killer would end the tests.)"""
    model, tokenizer = dense_fp32
    monkeypatch.setattr(model.config, "max_position_embeddings", 2**40)  # the context check lets it through
    fast = prepare_fast(model, tokenizer, compile=False)
    inputs = encode_chat(tokenizer, [SHORT])
    new_tokens = 2**36
    with pytest.raises(InsufficientMemoryError) as caught:
        fast.generate(inputs["input_ids"], inputs["attention_mask"], max_new_tokens=new_tokens, do_sample=False)
    assert isinstance(caught.value, MemoryError)
    assert re.fullmatch(rf"the fast path's static KV cache for 1 sequence of {new_tokens + 63:,} positions needs "
                        r"[\d.]+ GiB, and cpu has [\d.]+ GiB left", caught.value.problem), caught.value.problem
    fits = re.fullmatch(r"pass max_new_tokens=(\d+) or fewer", caught.value.fix)
    assert fits, caught.value.fix
    per_position = static_cache_bytes(StaticCache(config=model.config, max_cache_len=1), model.config, 1, torch.float32)
    left = (int(fits[1]) + 63) * per_position  # the memory the longest reply that fits takes
    assert 0.8 < left / available_bytes("cpu") <= 1.2  # what is left moves a little while the tests run
    assert fast._caches == {}


def test_the_largest_cache_that_fits_runs_and_one_more_token_is_refused(
    dense_fp32: tuple, clean: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refusal's max_new_tokens is exact: with memory left for just that cache, it runs (and gives the plain
    path's tokens, bucket padding counted), one token more is refused; a held cache long enough is reused without
    a check, since nothing is allocated."""
    model, tokenizer = dense_fp32
    fast = prepare_fast(model, tokenizer, compile=False)
    inputs = encode_chat(tokenizer, [SHORT])
    args = (inputs["input_ids"], inputs["attention_mask"])
    fast.generate(*args, max_new_tokens=6, do_sample=False)
    ((length, cache),) = fast._caches.values()
    assert length == DEFAULT_BUCKETS[0] + 5  # the padded prompt and all new tokens but the last
    exactly = _cache_bytes(cache)
    fast.clear_caches()
    _with_memory_left(monkeypatch, exactly)
    with pytest.raises(InsufficientMemoryError) as caught:
        fast.generate(*args, max_new_tokens=7, do_sample=False)
    assert caught.value.fix == "pass max_new_tokens=6 or fewer"
    assert fast._caches == {}
    assert torch.equal(fast.generate(*args, max_new_tokens=6, do_sample=False, min_new_tokens=6),
                       model.generate(**inputs, max_new_tokens=6, do_sample=False, min_new_tokens=6))
    assert _cache_bytes(fast._caches[1][1]) == exactly
    _with_memory_left(monkeypatch, 0)
    assert fast.generate(*args, max_new_tokens=3, do_sample=False).shape[1] <= inputs["input_ids"].shape[1] + 3


def test_a_refusal_names_the_caches_the_generator_holds_and_a_prompt_that_cannot_fit(
    dense_fp32: tuple, clean: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tokenizer = dense_fp32
    fast = prepare_fast(model, tokenizer, compile=False)
    fast.reply(SHORT, max_new_tokens=4, do_sample=False)
    held = _cache_bytes(fast._caches[1][1])  # 67 positions: the prompt's bucket, 64, and 3 of the 4 new tokens
    _with_memory_left(monkeypatch, 2 * held - 1)  # a byte short of the same cache for two sequences
    with pytest.raises(InsufficientMemoryError) as caught:
        fast.generate_replies([SHORT, OTHER], max_new_tokens=4, do_sample=False)
    assert caught.value.problem.startswith("the fast path's static KV cache for 2 sequences of 67 positions needs ")
    assert caught.value.fix.startswith("pass max_new_tokens=3 or fewer, or fewer conversations at once, ")
    unit, scale = ("MiB", 2**20) if held >= 2**20 else ("KiB", 2**10)
    freed = f", or call clear_caches() first: this generator's other caches hold {held / scale:.1f} {unit}, enough room"
    assert caught.value.fix.endswith(freed), caught.value.fix
    assert sorted(fast._caches) == [1]  # the refused cache is not kept
    _with_memory_left(monkeypatch, held - 1)  # now freeing the held cache would leave a byte short: not offered
    with pytest.raises(InsufficientMemoryError) as caught:
        fast.generate_replies([SHORT, OTHER], max_new_tokens=4, do_sample=False)
    assert "clear_caches" not in caught.value.fix and sorted(fast._caches) == [1]
    _with_memory_left(monkeypatch, 1)
    fast.clear_caches()
    with pytest.raises(InsufficientMemoryError, match=r"the prompt alone does not fit: shorten the conversation$"):
        fast.reply(SHORT, max_new_tokens=4)
    with pytest.raises(InsufficientMemoryError, match=r"left: the prompt alone does not fit: pass fewer or shorter "
                                                      r"conversations$"):
        fast.generate_replies([SHORT, OTHER], max_new_tokens=4)
    # A model spread over several devices spreads its cache too: one device's memory says nothing, so no check.
    monkeypatch.setattr(model, "hf_device_map", {"model.embed_tokens": 0, "lm_head": 1}, raising=False)
    assert fast.reply(SHORT, max_new_tokens=4, do_sample=False) == generate_replies(
        model, tokenizer, [SHORT], max_new_tokens=4, do_sample=False)[0]
