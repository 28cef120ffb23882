"""generate_replies / reply: left-padded batches give the one-by-one replies; only new text is decoded.

How "the same" is judged (measured on the random-weight stand-ins, 32 conversations x 32 greedy tokens):
in float32 batched and one-by-one greedy decoding agree token for token and their per-step scores differ by
< 1e-6. In bfloat16 the padded batch runs matmuls of other shapes, scores move by one or two bf16 ulps
(<= 0.017 seen), and since the stand-ins' logits are nearly flat (std 0.16 over 151k tokens, exact ties
common at bf16 resolution) about 1 conversation in 4 picks a different token at some step. So float32 is
checked for exact equality, and bfloat16 by the pages' own rule (checks.assert_batch_matches_single): the
scores agree within rounding noise up to the first differing token, and that token was a near-tie in *both*
runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from qwen_docs_helpers import checks
from qwen_docs_helpers.chat import encode_chat, generate_replies, reply
from qwen_docs_helpers.errors import InvalidArgumentError, InvalidMessagesError

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "You are a terse assistant."},
     {"role": "user", "content": "Give me a short introduction to large language models, with two examples."}],
    [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."},
     {"role": "user", "content": "And times 3?"}],
    [{"role": "user", "content": "请介绍一下你自己。"}],
]
MAX_NEW_TOKENS = 16
FP32_ATOL = 1e-4
DENSE_ID = "Qwen/Qwen2-7B-Instruct"
ASSISTANT_PROMPT = [151644, 77091, 198]  # "<|im_start|>assistant\n"

# The stand-ins' generation config asks for sampling; these tests turn it off, which transformers notes.
pytestmark = pytest.mark.filterwarnings("ignore:.*generation flags are not valid.*:UserWarning")


@dataclass
class Greedy:
    """One conversation's greedy continuation: token ids up to and including EOS, and each step's scores."""

    tokens: list[int]
    scores: torch.Tensor  # (steps, vocab), float32, after logits processors (repetition penalty)


def greedy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, conversations: list,
           padding_side: str = "left") -> list[Greedy]:
    texts = tokenizer.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False)
    inputs = tokenizer(texts, padding=True, padding_side=padding_side, add_special_tokens=False, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, output_scores=True,
                         return_dict_in_generate=True)
    eos = set(model.generation_config.eos_token_id)
    start = inputs["input_ids"].shape[1]
    results = []
    for row in range(len(conversations)):
        tokens = out.sequences[row, start:].tolist()
        end = next((i + 1 for i, token in enumerate(tokens) if token in eos), len(tokens))
        results.append(Greedy(tokens[:end], torch.stack([step[row] for step in out.scores[:end]]).float()))
    return results


def disagreement(batched: Greedy, single: Greedy, **allowance: float) -> str | None:
    """Why ``batched`` is not an acceptable greedy decoding of the same conversation as ``single`` (None: it is),
    by the rule the pages' hidden cells apply (checks.assert_batch_matches_single)."""
    as_checked = [checks.Greedy(run.tokens, list(run.scores), []) for run in (batched, single)]
    try:
        checks.assert_batch_matches_single([as_checked[0]], [as_checked[1]], **allowance)
    except AssertionError as problem:
        return str(problem).removeprefix("conversation 0: ")
    return None


@pytest.fixture(params=["dense", "moe"])
def fp32_model(request: pytest.FixtureRequest) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    return request.getfixturevalue(f"{request.param}_fp32")


@pytest.fixture(params=["dense", "moe"])
def bf16_model(request: pytest.FixtureRequest) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    return request.getfixturevalue(f"{request.param}_bf16")


# --- batched == one by one --------------------------------------------------------------------------------


def test_fp32_batched_equals_one_by_one(fp32_model: tuple) -> None:
    model, tokenizer = fp32_model
    singles = [greedy(model, tokenizer, [c])[0] for c in CONVERSATIONS]
    batched = greedy(model, tokenizer, CONVERSATIONS)
    assert [b.tokens for b in batched] == [s.tokens for s in singles]
    problems = [disagreement(b, s, tolerance=FP32_ATOL, relative=0.0) for b, s in zip(batched, singles, strict=True)]
    assert problems == [None] * len(singles)
    replies = generate_replies(model, tokenizer, CONVERSATIONS, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    assert replies == [tokenizer.decode(s.tokens, skip_special_tokens=True) for s in singles]
    assert any(replies)  # not vacuous: something was generated


def test_bf16_batch_differs_from_one_by_one_only_at_near_ties(bf16_model: tuple) -> None:
    model, tokenizer = bf16_model
    batched = greedy(model, tokenizer, CONVERSATIONS)
    singles = [greedy(model, tokenizer, [c])[0] for c in CONVERSATIONS]
    problems = [disagreement(b, s) for b, s in zip(batched, singles, strict=True)]
    assert problems == [None] * len(CONVERSATIONS)


def test_the_bf16_check_catches_a_wrongly_padded_batch(dense_bf16: tuple) -> None:
    """Control: right padding (generation continues after the pads) must fail the bf16 comparison."""
    model, tokenizer = dense_bf16
    batched = greedy(model, tokenizer, CONVERSATIONS, padding_side="right")
    singles = [greedy(model, tokenizer, [c])[0] for c in CONVERSATIONS]
    problems = [disagreement(b, s) for b, s in zip(batched, singles, strict=True)]
    lengths = [len(tokenizer.apply_chat_template(c, add_generation_prompt=True)["input_ids"]) for c in CONVERSATIONS]
    for length, problem in zip(lengths, problems, strict=True):
        if length == max(lengths):
            assert problem is None  # no padding in this row, so right padding does no harm
        else:  # the first token is predicted from a pad position
            assert problem is not None and " at step 0, " in problem, problems


# --- encoding and decoding ----------------------------------------------------------------------------------


@pytest.fixture
def right_padding(dense_fp32: tuple, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """The shared stand-in with its tokenizer set to pad on the right (restored after the test)."""
    model, tokenizer = dense_fp32
    monkeypatch.setattr(tokenizer, "padding_side", "right")
    return model, tokenizer


def test_batch_is_left_padded_without_touching_the_tokenizer(right_padding: tuple) -> None:
    _, tokenizer = right_padding
    inputs = encode_chat(tokenizer, CONVERSATIONS)
    assert tokenizer.padding_side == "right"
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert (mask == 0).any()  # the batch does need padding
    for row, row_mask in zip(ids.tolist(), mask.tolist(), strict=True):
        assert row[-3:] == ASSISTANT_PROMPT  # every prompt ends where generation starts
        assert row_mask == sorted(row_mask)  # zeros only on the left
        assert all(token == tokenizer.pad_token_id for token, m in zip(row, row_mask, strict=True) if m == 0)


def test_replies_do_not_depend_on_the_tokenizers_padding_side(right_padding: tuple) -> None:
    model, tokenizer = right_padding
    kwargs = {"max_new_tokens": 8, "do_sample": False}
    from_right = generate_replies(model, tokenizer, CONVERSATIONS, **kwargs)
    assert tokenizer.padding_side == "right"
    tokenizer.padding_side = "left"
    assert generate_replies(model, tokenizer, CONVERSATIONS, **kwargs) == from_right


def test_reply_decodes_only_the_new_tokens(dense_fp32: tuple) -> None:
    model, tokenizer = dense_fp32
    messages = [{"role": "user", "content": "zebra-quartz-7781"}]
    text = reply(model, tokenizer, messages, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    (expected,) = greedy(model, tokenizer, [messages])
    assert expected.tokens, "the stand-in generated nothing: the test would be vacuous"
    assert text == tokenizer.decode(expected.tokens, skip_special_tokens=True)
    assert "zebra-quartz-7781" not in text and "<|im_start|>" not in text and "<|im_end|>" not in text


def test_return_dict_in_generate_is_accepted(dense_fp32: tuple) -> None:
    model, tokenizer = dense_fp32
    kwargs = {"max_new_tokens": 4, "do_sample": False}
    assert reply(model, tokenizer, CONVERSATIONS[0], return_dict_in_generate=True, **kwargs) == reply(
        model, tokenizer, CONVERSATIONS[0], **kwargs)


# --- inputs are validated before generating -----------------------------------------------------------------


@pytest.fixture
def no_generate(dense_fp32: tuple, monkeypatch: pytest.MonkeyPatch) -> tuple:
    model, tokenizer = dense_fp32

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("generate ran on invalid input")

    monkeypatch.setattr(model, "generate", refuse)
    return model, tokenizer


def test_invalid_input_is_rejected_before_generating(no_generate: tuple) -> None:
    model, tokenizer = no_generate
    with pytest.raises(InvalidMessagesError, match="single conversation"):
        generate_replies(model, tokenizer, CONVERSATIONS[0])
    with pytest.raises(InvalidMessagesError, match=r"^conversations is empty"):
        generate_replies(model, tokenizer, [])
    with pytest.raises(InvalidMessagesError, match=r"^messages\[0\] is a list"):
        reply(model, tokenizer, CONVERSATIONS)
    with pytest.raises(InvalidMessagesError, match=r"^messages\[0\] has no 'content'"):
        reply(model, tokenizer, [{"role": "user"}])
    with pytest.raises(InvalidArgumentError, match=r"^max_new_tokens is 0"):
        reply(model, tokenizer, CONVERSATIONS[0], max_new_tokens=0)


def test_a_prompt_that_fills_the_context_is_refused_before_generating(no_generate: tuple,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer = no_generate
    longest = encode_chat(tokenizer, CONVERSATIONS)["input_ids"].shape[1]
    monkeypatch.setattr(model.config, "max_position_embeddings", longest)
    with pytest.raises(InvalidArgumentError, match=rf"^the prompt has {longest} tokens and the model's context is "
                                                   rf"{longest} positions, which leaves none for the reply: shorten"):
        generate_replies(model, tokenizer, CONVERSATIONS)


def test_the_plain_path_does_not_refuse_new_tokens_past_the_context(dense_fp32: tuple,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Unlike the fast path, which allocates its cache up front: a long max_new_tokens is an upper bound, and
    generate warns if it really passes the context."""
    model, tokenizer = dense_fp32
    length = encode_chat(tokenizer, [CONVERSATIONS[0]])["input_ids"].shape[1]
    monkeypatch.setattr(model.config, "max_position_embeddings", length + 1)
    expected = reply(model, tokenizer, CONVERSATIONS[0], max_new_tokens=4, do_sample=False)
    monkeypatch.undo()
    assert expected == reply(model, tokenizer, CONVERSATIONS[0], max_new_tokens=4, do_sample=False)


# --- generate arguments the helpers pass on, or refuse ------------------------------------------------------


def stop_string_case(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, messages: list) -> tuple[str, str]:
    """A stop string from the middle of the greedy reply, and the text model.generate stops at for it."""
    full = reply(model, tokenizer, messages, max_new_tokens=8, do_sample=False)
    stop = full[len(full) // 2:].strip()[:1]
    inputs = encode_chat(tokenizer, [messages])
    out = model.generate(**inputs, max_new_tokens=8, do_sample=False, stop_strings=[stop], tokenizer=tokenizer)
    expected = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert stop and stop in expected and len(expected) < len(full), "the stop string stops nothing: vacuous"
    return stop, expected


def test_stop_strings_work_through_the_helpers(dense_fp32: tuple) -> None:
    model, tokenizer = dense_fp32
    stop, expected = stop_string_case(model, tokenizer, CONVERSATIONS[0])
    kwargs = {"max_new_tokens": 8, "do_sample": False, "stop_strings": [stop]}
    assert reply(model, tokenizer, CONVERSATIONS[0], **kwargs) == expected
    assert generate_replies(model, tokenizer, CONVERSATIONS[:2], **kwargs)[0] == expected
    assert reply(model, tokenizer, CONVERSATIONS[0], tokenizer=tokenizer, **kwargs) == expected  # no name clash


def test_arguments_the_helpers_would_get_wrong_are_refused(no_generate: tuple) -> None:
    model, tokenizer = no_generate
    with pytest.raises(InvalidArgumentError, match=r"^num_return_sequences=3") as caught:
        reply(model, tokenizer, CONVERSATIONS[0], do_sample=True, num_return_sequences=3)
    assert "\n" not in str(caught.value) and "model.generate" in caught.value.fix
    with pytest.raises(InvalidArgumentError, match=r"^num_return_sequences=2"):
        generate_replies(model, tokenizer, CONVERSATIONS[:2], do_sample=True, num_return_sequences=2)
    with pytest.raises(InvalidArgumentError, match=r"^max_length") as caught:
        reply(model, tokenizer, CONVERSATIONS[0], max_length=5)
    assert "max_new_tokens" in caught.value.fix
    with pytest.raises(InvalidArgumentError, match=r"^temperature=0 with sampling on"):
        reply(model, tokenizer, CONVERSATIONS[0], temperature=0)  # the model's generation config samples
    with pytest.raises(InvalidArgumentError, match=r"did you mean max_new_tokens\?$"):
        generate_replies(model, tokenizer, CONVERSATIONS[:2], max_new_token=5)
    with pytest.raises(InvalidArgumentError, match=r"^streamer=True is not a streamer"):
        reply(model, tokenizer, CONVERSATIONS[0], streamer=True)


def test_a_streamer_prints_the_reply_it_returns(dense_fp32: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import TextStreamer

    model, tokenizer = dense_fp32
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    text = reply(model, tokenizer, CONVERSATIONS[0], max_new_tokens=6, do_sample=False, streamer=streamer)
    assert text and capsys.readouterr().out.strip() == text.strip()


def test_a_model_without_the_token_head_is_refused_in_one_line(standin_hub: dict[str, Path]) -> None:
    from transformers import AutoModel

    from qwen_docs_helpers.fast import FastGenerator
    from qwen_docs_helpers.streaming import stream_reply

    bare = AutoModel.from_pretrained(standin_hub[DENSE_ID])  # Qwen2Model: no lm_head, no generate
    tokenizer = AutoTokenizer.from_pretrained(standin_hub[DENSE_ID])
    for attempt in (lambda: reply(bare, tokenizer, CONVERSATIONS[0]),
                    lambda: stream_reply(bare, tokenizer, CONVERSATIONS[0]),
                    lambda: FastGenerator(bare, tokenizer)):
        with pytest.raises(InvalidArgumentError, match=r"Qwen2Model cannot generate.*AutoModelForCausalLM") as info:
            attempt()
        assert "\n" not in str(info.value)


def _helpers(model: object, tokenizer: object, messages: list) -> list:
    """Every entry point that takes (model, tokenizer, messages), as calls to try."""
    from qwen_docs_helpers.fast import prepare_fast
    from qwen_docs_helpers.streaming import stream_reply

    return [lambda: reply(model, tokenizer, messages),  # type: ignore[arg-type]
            lambda: generate_replies(model, tokenizer, [messages]),  # type: ignore[arg-type]
            lambda: stream_reply(model, tokenizer, messages),  # type: ignore[arg-type]
            lambda: prepare_fast(model, tokenizer).reply(messages)]  # type: ignore[arg-type]


def test_a_tokenizer_without_a_chat_template_is_refused_in_one_line(
    no_generate: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tokenizer = no_generate
    monkeypatch.setattr(tokenizer, "chat_template", None)  # a base model's tokenizer
    for attempt in _helpers(model, tokenizer, CONVERSATIONS[0]):
        with pytest.raises(InvalidArgumentError) as caught:
            attempt()
        assert str(caught.value) == ("the tokenizer has no chat template (a base model?): load an -Instruct/-Chat "
                                     "checkpoint or set tokenizer.chat_template")


def test_swapped_or_missing_model_and_tokenizer_name_the_order(no_generate: tuple) -> None:
    model, tokenizer = no_generate
    cases = [(tokenizer, model, r"^got a tokenizer \(\w+\) where the model goes"),
             (model, None, r"^the tokenizer is None"),
             (model, model, r"^got a model \(Qwen2ForCausalLM\) where the tokenizer goes"),
             ("Qwen/Qwen2-7B-Instruct", tokenizer, r"^the model is a str, not a transformers model")]
    for first, second, problem in cases:
        attempts = _helpers(first, second, CONVERSATIONS[0])
        if second is None:  # prepare_fast(model) without a tokenizer is allowed (for generate); replies say so
            attempts.pop()
        for attempt in attempts:
            with pytest.raises(InvalidArgumentError, match=problem) as caught:
                attempt()
            assert "\n" not in str(caught.value)
            assert caught.value.fix.startswith("pass (model, tokenizer, messages) in that order")


def test_encode_chat_names_the_order_for_a_model_in_the_tokenizer_slot(dense_fp32: tuple) -> None:
    model, _ = dense_fp32
    with pytest.raises(InvalidArgumentError, match=r"^got a model \(Qwen2ForCausalLM\) where the tokenizer goes"):
        encode_chat(model, CONVERSATIONS[:1])


def test_a_peft_model_replies_with_its_adapter(dense_fp32: tuple) -> None:
    peft = pytest.importorskip("peft")
    model, tokenizer = dense_fp32
    plain = reply(model, tokenizer, CONVERSATIONS[0], max_new_tokens=4, do_sample=False)
    adapted = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj"]))
    try:  # a fresh LoRA adapter adds zero, so the reply is the base model's
        assert reply(adapted, tokenizer, CONVERSATIONS[0], max_new_tokens=4, do_sample=False) == plain
        with pytest.raises(InvalidArgumentError, match=r"did you mean max_new_tokens\?$"):  # the base model's names
            reply(adapted, tokenizer, CONVERSATIONS[0], max_new_token=4)
    finally:
        adapted.unload()  # the fixture's model is shared: take the adapter layers out again


def test_messages_may_be_any_mapping(dense_fp32: tuple) -> None:
    """Conversation is typed Sequence[Mapping]: reply validates and renders read-only mappings as it does dicts."""
    from types import MappingProxyType

    model, tokenizer = dense_fp32
    frozen = [MappingProxyType(message) for message in CONVERSATIONS[2]]
    assert reply(model, tokenizer, frozen, max_new_tokens=4, do_sample=False) == \
        reply(model, tokenizer, CONVERSATIONS[2], max_new_tokens=4, do_sample=False)
