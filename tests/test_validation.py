"""validate_messages / validate_batch / validate_max_new_tokens, and the one-line error contract."""

from __future__ import annotations

import copy
import pickle
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from transformers import GenerationConfig, Qwen2Config, Qwen2MoeConfig

from qwen_docs_helpers import errors
from qwen_docs_helpers.errors import InvalidArgumentError, InvalidMessagesError, QwenDocsError
from qwen_docs_helpers.published import published_config
from qwen_docs_helpers.validation import (
    ROLES,
    context_length,
    validate_batch,
    validate_context,
    validate_max_new_tokens,
    validate_messages,
    validate_reply_kwargs,
    validate_timeout,
)

# --- strategies -------------------------------------------------------------------------------------------

texts = st.text(max_size=20)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(ROLES), "content": texts},
    optional={"name": texts, "tool_call_id": texts},  # extra keys are allowed and left alone
)
conversation = st.lists(message, min_size=1, max_size=6)
not_a_str = st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), st.binary(max_size=3),
                      st.lists(st.integers(), max_size=2), st.dictionaries(texts, texts, max_size=1))
not_a_dict = st.one_of(st.none(), st.integers(), texts, st.lists(message, max_size=2), st.tuples(texts, texts))


@st.composite
def malformed(draw: st.DrawFn) -> tuple[Any, int | None]:
    """A conversation with exactly one defect, and the index of the broken message (None: the list itself)."""
    messages = draw(conversation)
    defect = draw(st.sampled_from(["container", "empty", "item", "missing", "role_type", "role_value",
                                   "content_type"]))
    if defect == "container":
        return draw(st.one_of(st.none(), st.integers(), texts, message, st.sets(st.integers(), max_size=2))), None
    if defect == "empty":
        return draw(st.sampled_from([[], ()])), None
    index = draw(st.integers(0, len(messages) - 1))
    broken = dict(messages[index])
    if defect == "item":
        messages[index] = draw(not_a_dict)
        return messages, index
    if defect == "missing":
        del broken[draw(st.sampled_from(["role", "content"]))]
    elif defect == "role_type":
        broken["role"] = draw(not_a_str)
    elif defect == "role_value":
        broken["role"] = draw(texts.filter(lambda role: role not in ROLES))
    else:
        broken["content"] = draw(not_a_str)
    messages[index] = broken
    return messages, index


def assert_one_line(error: QwenDocsError) -> None:
    text = str(error)
    assert "\n" not in text and "\r" not in text, text
    assert error.problem and error.fix and text == f"{error.problem}: {error.fix}"


# --- validate_messages --------------------------------------------------------------------------------------

@given(conversation)
def test_valid_conversations_pass_unchanged(messages: list[dict[str, str]]) -> None:
    before = copy.deepcopy(messages)
    assert validate_messages(messages) is messages
    assert messages == before


@given(malformed())
def test_malformed_conversations_raise_one_line_naming_the_index(case: tuple[Any, int | None]) -> None:
    messages, index = case
    with pytest.raises(InvalidMessagesError) as caught:
        validate_messages(messages)
    assert_one_line(caught.value)
    assert isinstance(caught.value, ValueError)
    if index is not None:
        assert caught.value.problem.startswith(f"messages[{index}]"), str(caught.value)


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user"}],
         "messages[2] has no 'content': give every message a 'role' and a 'content' string"),
        ([{"role": "bot", "content": "hi"}],
         "messages[0] has role 'bot': use one of 'system', 'user', 'assistant', 'tool'"),
        ([], "messages is empty: pass at least one message, e.g. [{'role': 'user', 'content': 'Hello'}]"),
        ({"role": "user", "content": "hi"}, "messages is a single dict, not a list of messages: wrap it in a list: "
                                            "[message]"),
        ([{"role": "user", "content": None}],
         "messages[0]['content'] is a NoneType, not a str: give every message a 'role' and a 'content' string "
         "(convert it with str())"),
    ],
)
def test_messages_name_the_problem_and_the_fix(messages: Any, expected: str) -> None:
    with pytest.raises(InvalidMessagesError) as caught:
        validate_messages(messages)
    assert str(caught.value) == expected


def test_a_batch_passed_as_one_conversation_is_explained() -> None:
    with pytest.raises(InvalidMessagesError, match=r"messages\[0\] is a list, not a message dict: .*generate_replies"):
        validate_messages([[{"role": "user", "content": "hi"}]])


# --- validate_batch -----------------------------------------------------------------------------------------

@given(st.lists(conversation, min_size=1, max_size=4))
def test_valid_batches_pass_unchanged(batch: list[list[dict[str, str]]]) -> None:
    before = copy.deepcopy(batch)
    assert validate_batch(batch) is batch
    assert batch == before


@given(st.lists(conversation, min_size=0, max_size=3), malformed(), st.integers(0, 3))
def test_a_malformed_conversation_in_a_batch_is_named(good: list[Any], case: tuple[Any, int | None],
                                                      position: int) -> None:
    bad, index = case
    position = min(position, len(good))
    batch = [*good[:position], bad, *good[position:]]
    with pytest.raises(InvalidMessagesError) as caught:
        validate_batch(batch)
    assert_one_line(caught.value)
    problem = caught.value.problem
    if isinstance(bad, dict):  # one message dict in the batch reads as "a single conversation"
        assert "single conversation" in problem
    elif index is not None:
        assert problem.startswith(f"conversations[{position}][{index}]"), problem
    else:
        assert problem.startswith(f"conversations[{position}]"), problem


def test_empty_batch_and_single_conversation_are_explained() -> None:
    with pytest.raises(InvalidMessagesError, match=r"^conversations is empty: "):
        validate_batch([])
    with pytest.raises(InvalidMessagesError, match=r"single conversation .*wrap it in a list, \[messages\]"):
        validate_batch([{"role": "user", "content": "hi"}])
    with pytest.raises(InvalidMessagesError, match=r"^conversations is a str"):
        validate_batch("hi")


# --- validate_max_new_tokens --------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [1, 7, 512])
def test_positive_ints_are_accepted(value: int) -> None:
    assert validate_max_new_tokens(value) == value


@pytest.mark.parametrize("value", [0, -3, True, False, 1.5, 8.0, "16", None])
def test_other_values_are_rejected(value: Any) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validate_max_new_tokens(value)
    assert_one_line(caught.value)
    assert "max_new_tokens" in caught.value.problem


# --- the error classes --------------------------------------------------------------------------------------

ERROR_CLASSES = [getattr(errors, name) for name in errors.__all__]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_errors_are_one_line_and_survive_pickling(cls: type[QwenDocsError]) -> None:
    error = cls("something\n   is wrong", "do\nthis")
    assert str(error) == "something is wrong: do this"
    copy_ = pickle.loads(pickle.dumps(error))
    assert type(copy_) is cls and str(copy_) == str(error) and copy_.fix == "do this"


def test_errors_keep_the_builtin_bases_callers_catch() -> None:
    assert issubclass(errors.ModelNotAvailableError, OSError)
    assert issubclass(errors.UnsafeWeightsError, OSError)
    assert issubclass(errors.QuantizationUnavailableError, ImportError)
    assert issubclass(errors.AttentionUnavailableError, ImportError)
    assert issubclass(errors.StreamTimeoutError, TimeoutError)
    assert issubclass(errors.InvalidMessagesError, ValueError)
    assert all(issubclass(cls, QwenDocsError) for cls in ERROR_CLASSES)


# --- validate_timeout and validate_reply_kwargs ---------------------------------------------------------------

@pytest.mark.parametrize("value", [None, 0.5, 5, 60.0])
def test_timeouts_are_none_or_positive_numbers(value: Any) -> None:
    assert validate_timeout(value) == value


@pytest.mark.parametrize("value", [0, -1, "5", True, float("nan"), [5]])
def test_other_timeouts_are_rejected_in_one_line(value: Any) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validate_timeout(value)
    assert_one_line(caught.value)
    assert "timeout" in caught.value.problem


@pytest.mark.parametrize("kwargs", [{"max_length": 5}, {"num_return_sequences": 2},
                                    {"generation_config": GenerationConfig(do_sample=True, num_return_sequences=3)}])
def test_reply_arguments_the_helpers_would_get_wrong_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validate_reply_kwargs(kwargs)
    assert_one_line(caught.value)


def test_other_reply_arguments_pass() -> None:
    validate_reply_kwargs({"do_sample": False, "num_return_sequences": 1, "generation_config": GenerationConfig()})


@pytest.mark.parametrize("streamer", [True, "stdout", print])
def test_a_streamer_that_is_not_one_says_what_to_pass(streamer: object) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^streamer=.* is not a streamer") as caught:
        validate_reply_kwargs({"streamer": streamer})
    assert_one_line(caught.value)
    assert "TextStreamer(tokenizer, skip_prompt=True)" in caught.value.fix and "stream_reply" in caught.value.fix


def test_streamers_pass(dense_fp32: tuple) -> None:
    from transformers import TextIteratorStreamer, TextStreamer

    _, tokenizer = dense_fp32
    for streamer in (None, TextStreamer(tokenizer), TextIteratorStreamer(tokenizer)):
        validate_reply_kwargs({"streamer": streamer})


# --- sampling settings and misspelt generate arguments ----------------------------------------------------------

@pytest.mark.parametrize("kwargs", [{"do_sample": True, "temperature": 0},
                                    {"do_sample": True, "temperature": -0.5},
                                    {"do_sample": True, "temperature": float("nan")},
                                    {"generation_config": GenerationConfig(do_sample=True), "temperature": 0.0}])
def test_a_temperature_of_zero_with_sampling_on_says_how_to_decode_greedily(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^temperature=") as caught:
        validate_reply_kwargs(kwargs)
    assert_one_line(caught.value)
    assert "do_sample=False" in caught.value.fix


def test_sampling_on_in_the_models_generation_config_counts(dense_fp32: tuple) -> None:
    """Qwen's instruction models sample by default, so temperature=0 alone fails in generate."""
    model, _ = dense_fp32
    assert model.generation_config.do_sample, "the stand-in lost Qwen's sampling defaults: vacuous"
    with pytest.raises(InvalidArgumentError, match=r"do_sample=True in the model's generation config"):
        validate_reply_kwargs({"temperature": 0}, model)
    validate_reply_kwargs({"temperature": 0, "do_sample": False}, model)  # greedy: the temperature is unused


@pytest.mark.parametrize("kwargs", [{"temperature": 0}, {"do_sample": False, "temperature": 0},
                                    {"do_sample": True, "temperature": 0.7, "top_p": 0.0},
                                    {"do_sample": True, "top_p": 1}, {"do_sample": False, "top_p": 2.0},
                                    {"generation_config": GenerationConfig(do_sample=False), "temperature": 0}])
def test_sampling_settings_pass_where_they_are_valid_or_unused(kwargs: dict[str, Any]) -> None:
    validate_reply_kwargs(kwargs)


@pytest.mark.parametrize("top_p", [1.5, 2, -0.1])
def test_a_top_p_outside_zero_to_one_is_refused(top_p: float) -> None:
    with pytest.raises(InvalidArgumentError, match=rf"^top_p={top_p}") as caught:
        validate_reply_kwargs({"do_sample": True, "top_p": top_p})
    assert_one_line(caught.value)


@pytest.mark.parametrize(("typed", "meant"), [("max_new_token", "max_new_tokens"), ("temprature", "temperature"),
                                              ("repetition_penality", "repetition_penalty"),
                                              ("do_samples", "do_sample"), ("stop_string", "stop_strings")])
def test_a_misspelt_generate_argument_is_named_with_the_setting_meant(dense_fp32: tuple, typed: str,
                                                                       meant: str) -> None:
    model, _ = dense_fp32
    with pytest.raises(InvalidArgumentError, match=rf"^{typed} is not an argument") as caught:
        validate_reply_kwargs({typed: 1}, model)
    assert_one_line(caught.value)
    assert caught.value.fix == f"did you mean {meant}?"


def test_arguments_generate_or_the_model_take_are_not_misspellings(dense_fp32: tuple, moe_fp32: tuple) -> None:
    taken = {"stop_strings": ["."], "tokenizer": None, "assistant_tokenizer": None, "use_cache": True,
             "attention_mask": None, "output_attentions": False, "streamer": None, "logits_processor": None,
             "return_dict_in_generate": True, "output_scores": True, "cache_implementation": "static"}
    validate_reply_kwargs(taken, dense_fp32[0])
    validate_reply_kwargs({"output_router_logits": False}, moe_fp32[0])  # a Qwen2-MoE forward argument
    validate_reply_kwargs({"banana": 1}, dense_fp32[0])  # close to nothing: generate lists it itself
    validate_reply_kwargs({"max_new_token": 1})  # without the model there is nothing to check names against


def test_context_length_follows_the_rope_scaling() -> None:
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768, "rope_theta": 1e6}
    assert context_length(published_config("Qwen/Qwen2-7B-Instruct")) == 32768
    assert context_length(published_config("Qwen/Qwen1.5-MoE-A2.7B-Chat")) == 8192
    # Qwen's instructions: YaRN added, max_position_embeddings left at 32,768; this site's: both set.
    assert context_length(Qwen2Config(max_position_embeddings=32768, rope_parameters=yarn)) == 131072
    assert context_length(Qwen2Config(max_position_embeddings=131072, rope_parameters=yarn)) == 131072
    assert context_length(Qwen2MoeConfig(max_position_embeddings=8192,
                                         rope_parameters={"rope_type": "linear", "factor": 2.0})) == 16384
    assert context_length(Qwen2Config(rope_parameters={"rope_type": "dynamic", "factor": 2.0})) is None


def test_validate_context_refuses_a_full_prompt_and_an_overlong_total() -> None:
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 100, "rope_theta": 1e6}
    model = SimpleNamespace(config=Qwen2Config(max_position_embeddings=100, rope_parameters=yarn))
    validate_context(model, 399)  # type: ignore[arg-type]  # YaRN: 400 positions
    validate_context(model, 300, 400)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError) as caught:
        validate_context(model, 400)  # type: ignore[arg-type]
    assert str(caught.value) == ("the prompt has 400 tokens and the model's context is 400 positions, which leaves "
                                 "none for the reply: shorten the conversation, or, for a longer context, turn on "
                                 "YaRN rope scaling in the configuration's rope_parameters")
    with pytest.raises(InvalidArgumentError) as caught:
        validate_context(model, 300, 401, why="; because")  # type: ignore[arg-type]
    assert str(caught.value).startswith("the prompt's 300 tokens and 101 new ones need 401 positions, past the "
                                        "model's context of 400; because: pass max_new_tokens=100 or fewer, or, ")
    dynamic = SimpleNamespace(config=Qwen2Config(rope_parameters={"rope_type": "dynamic", "factor": 2.0}))
    validate_context(dynamic, 10**6, 10**7)  # type: ignore[arg-type]  # no limit to check against
