"""stream_reply: same text as reply(), errors reach the consumer, early exits stop generation, stalls time out.

No pytest-timeout here, so every consumer that could hang runs in a helper thread joined with a deadline:
a hang fails the test instead of blocking the run.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import torch
from transformers import StoppingCriteria

from qwen_docs_helpers.chat import encode_chat, reply
from qwen_docs_helpers.errors import InvalidArgumentError, StreamTimeoutError
from qwen_docs_helpers.streaming import ChatStream, stream_reply

MESSAGES = [{"role": "user", "content": "Write a haiku about left padding."}]
GREEDY = {"do_sample": False}
LONG = {"max_new_tokens": 500, "min_new_tokens": 500}  # only a stop request can end it early (no EOS)
DEADLINE = 10.0  # seconds before a consumer is declared hung
STREAM_THREAD = "qwen-docs-stream"
TRANSIENT = ("ThreadPoolExecutor", "tqdm_monitor", STREAM_THREAD)

pytestmark = pytest.mark.filterwarnings("ignore:.*generation flags are not valid.*:UserWarning")

T = TypeVar("T")


class Injected(RuntimeError):
    """The failure the tests inject into generation."""


def within(seconds: float, consume: Callable[[], T]) -> T:
    """Run ``consume`` in a thread; fail if it has not finished after ``seconds``; re-raise its exception."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(("ok", consume()))
        except BaseException as error:
            result.append(("error", error))

    consumer = threading.Thread(target=run, daemon=True)
    consumer.start()
    consumer.join(seconds)
    if consumer.is_alive():
        pytest.fail(f"consumer hung: no result after {seconds} s")
    kind, value = result[0]
    if kind == "error":
        raise value
    return value


def stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == STREAM_THREAD and t.is_alive()]


def wait_for_no_stream_threads(seconds: float = DEADLINE) -> None:
    deadline = time.monotonic() + seconds
    while stream_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not stream_threads(), "generation thread still running"


class CountSteps(StoppingCriteria):
    """Counts decoding steps; raises ``Injected`` at step ``fail_at`` (if given)."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.steps = 0
        self.fail_at = fail_at

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        self.steps += 1
        if self.steps == self.fail_at:
            raise Injected(f"injected at step {self.steps}")
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)  # type: ignore[return-value]


@pytest.fixture
def baseline(dense_fp32: tuple) -> int:
    """The thread count once helper threads that end on their own (weight-loading pools) are gone."""
    deadline = time.monotonic() + DEADLINE
    while any(t.name.startswith(TRANSIENT) for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    wait_for_no_stream_threads()
    return threading.active_count()


# --- normal streaming -------------------------------------------------------------------------------------------


def test_streamed_text_equals_the_reply(dense_fp32: tuple, baseline: int) -> None:
    model, tokenizer = dense_fp32
    kwargs = {"max_new_tokens": 24, "min_new_tokens": 24, **GREEDY}
    expected = reply(model, tokenizer, MESSAGES, **kwargs)

    def consume() -> tuple[list[str], str]:
        with stream_reply(model, tokenizer, MESSAGES, **kwargs) as stream:
            return list(stream), stream.text

    pieces, text = within(DEADLINE, consume)
    assert expected and len(pieces) > 1  # really streamed, in several pieces
    assert "".join(pieces) == text == expected
    assert threading.active_count() == baseline


def test_a_finished_stream_stays_finished(dense_fp32: tuple, baseline: int) -> None:
    model, tokenizer = dense_fp32
    stream = stream_reply(model, tokenizer, MESSAGES, max_new_tokens=3, **GREEDY)
    within(DEADLINE, lambda: list(stream))
    assert within(1.0, lambda: list(stream)) == []  # no second wait for the timeout
    assert not stream.running and threading.active_count() == baseline


def test_arguments_are_checked_before_a_thread_starts(dense_fp32: tuple, baseline: int) -> None:
    model, tokenizer = dense_fp32
    with pytest.raises(InvalidArgumentError, match="streamer"):
        stream_reply(model, tokenizer, MESSAGES, streamer=object())
    with pytest.raises(InvalidArgumentError, match="timeout"):
        stream_reply(model, tokenizer, MESSAGES, timeout=0)
    for bad in ("5", True):
        with pytest.raises(InvalidArgumentError, match=r"^timeout is"):
            stream_reply(model, tokenizer, MESSAGES, timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"^max_length"):
        stream_reply(model, tokenizer, MESSAGES, max_length=5)
    with pytest.raises(InvalidArgumentError, match=r"^num_return_sequences"):
        stream_reply(model, tokenizer, MESSAGES, do_sample=True, num_return_sequences=2)
    with pytest.raises(InvalidArgumentError, match=r"^temperature=0"):
        stream_reply(model, tokenizer, MESSAGES, temperature=0)
    with pytest.raises(InvalidArgumentError, match=r"did you mean top_k\?$"):
        stream_reply(model, tokenizer, MESSAGES, topk=5)
    assert threading.active_count() == baseline


def test_a_prompt_that_fills_the_context_is_refused_before_a_thread_starts(
    dense_fp32: tuple, baseline: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tokenizer = dense_fp32
    monkeypatch.setattr(model.config, "max_position_embeddings", 4)
    with pytest.raises(InvalidArgumentError, match=r"^the prompt has \d+ tokens and the model's context is 4 "):
        stream_reply(model, tokenizer, MESSAGES)
    assert threading.active_count() == baseline


def test_beam_search_is_refused_before_streaming(dense_fp32: tuple, baseline: int) -> None:
    """transformers' streamers take one sequence: without the check, beam search fails only mid-iteration."""
    from transformers import GenerationConfig

    model, tokenizer = dense_fp32
    with pytest.raises(InvalidArgumentError, match=r"^num_beams=2: a stream shows one sequence") as caught:
        stream_reply(model, tokenizer, MESSAGES, num_beams=2, **GREEDY)
    assert "\n" not in str(caught.value) and "reply(" in caught.value.fix
    with pytest.raises(InvalidArgumentError, match=r"^num_beams=3"):
        stream_reply(model, tokenizer, MESSAGES, generation_config=GenerationConfig(num_beams=3, do_sample=False))
    assert threading.active_count() == baseline
    with stream_reply(model, tokenizer, MESSAGES, max_new_tokens=2, num_beams=1, **GREEDY) as stream:
        within(DEADLINE, lambda: list(stream))  # num_beams=1 is plain greedy decoding, and streams


def test_stop_strings_stop_the_stream_as_they_stop_reply(dense_fp32: tuple, baseline: int) -> None:
    model, tokenizer = dense_fp32
    full = reply(model, tokenizer, MESSAGES, max_new_tokens=8, **GREEDY)
    stop = full[len(full) // 2:].strip()[:1]
    inputs = encode_chat(tokenizer, [MESSAGES])
    out = model.generate(**inputs, max_new_tokens=8, stop_strings=[stop], tokenizer=tokenizer, **GREEDY)
    expected = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert stop and len(expected) < len(full), "the stop string stops nothing: the test would be vacuous"

    def consume() -> str:
        with stream_reply(model, tokenizer, MESSAGES, max_new_tokens=8, stop_strings=[stop], **GREEDY) as stream:
            return "".join(stream)

    assert within(DEADLINE, consume) == expected
    wait_for_no_stream_threads()


# --- failures reach the consumer ----------------------------------------------------------------------------------


def test_an_error_during_generation_reaches_the_consumer(dense_fp32: tuple, baseline: int) -> None:
    model, tokenizer = dense_fp32
    stream = stream_reply(model, tokenizer, MESSAGES, max_new_tokens=50, min_new_tokens=50,
                          stopping_criteria=[CountSteps(fail_at=16)], **GREEDY)
    start = time.monotonic()
    with pytest.raises(Injected, match="step 16"):
        within(DEADLINE, lambda: list(stream))
    assert time.monotonic() - start < 5.0
    assert stream.text  # what was generated before the failure was streamed
    assert not stream.running and threading.active_count() == baseline


def test_an_error_before_the_first_token_reaches_the_consumer(dense_fp32: tuple, monkeypatch: pytest.MonkeyPatch,
                                                              baseline: int) -> None:
    model, tokenizer = dense_fp32

    def broken_generate(**kwargs: Any) -> None:
        raise Injected("no memory left")

    monkeypatch.setattr(model, "generate", broken_generate)
    stream = stream_reply(model, tokenizer, MESSAGES, timeout=None)  # no timeout: only the fix prevents a hang
    with pytest.raises(Injected, match="no memory left"):
        within(DEADLINE, lambda: list(stream))
    assert stream.text == "" and threading.active_count() == baseline


def test_a_stalled_generation_times_out(dense_fp32: tuple, monkeypatch: pytest.MonkeyPatch, baseline: int) -> None:
    model, tokenizer = dense_fp32

    def stalled_generate(**kwargs: Any) -> None:
        time.sleep(1.0)
        kwargs["streamer"].end()

    monkeypatch.setattr(model, "generate", stalled_generate)
    stream = stream_reply(model, tokenizer, MESSAGES, timeout=0.2)
    start = time.monotonic()
    with pytest.raises(StreamTimeoutError) as caught:
        within(DEADLINE, lambda: next(stream))
    assert 0.2 <= time.monotonic() - start < 0.9  # raised on time, not when the stall ended
    assert "\n" not in str(caught.value) and "timeout=" in caught.value.fix
    wait_for_no_stream_threads(3.0)  # the stalled thread ends with its step
    assert threading.active_count() == baseline


# --- leaving early stops generation --------------------------------------------------------------------------------


def test_leaving_the_with_block_stops_generation(dense_fp32: tuple, baseline: int) -> None:
    model, tokenizer = dense_fp32
    counter = CountSteps()

    def consume() -> ChatStream:
        with stream_reply(model, tokenizer, MESSAGES, stopping_criteria=[counter], **LONG,
                          **GREEDY) as stream:
            for _ in stream:
                break
        return stream

    stream = within(DEADLINE, consume)
    assert not stream.running  # joined on exit
    assert counter.steps < 100  # stopped long before max_new_tokens
    assert threading.active_count() == baseline


def test_close_stops_generation(dense_fp32: tuple, baseline: int) -> None:
    model, tokenizer = dense_fp32
    counter = CountSteps()
    stream = stream_reply(model, tokenizer, MESSAGES, stopping_criteria=[counter], **LONG, **GREEDY)
    within(DEADLINE, lambda: next(stream))
    within(DEADLINE, stream.close)
    assert not stream.running and counter.steps < 100 and threading.active_count() == baseline


def test_breaking_out_of_a_bare_loop_stops_generation(dense_fp32: tuple, baseline: int) -> None:
    """Without ``with``: the abandoned stream is collected, which asks generation to stop."""
    model, tokenizer = dense_fp32
    counter = CountSteps()

    def consume() -> None:
        for _ in stream_reply(model, tokenizer, MESSAGES, stopping_criteria=[counter], **LONG, **GREEDY):
            break

    within(DEADLINE, consume)
    wait_for_no_stream_threads()
    assert counter.steps < 100 and threading.active_count() == baseline


# --- the same faults, many times ---------------------------------------------------------------------------------


def test_faults_repeated_never_hang_or_leak(dense_fp32: tuple, monkeypatch: pytest.MonkeyPatch,
                                            baseline: int) -> None:
    """100 streams, each failing in generation (at a random step), failing at once, or left early."""
    model, tokenizer = dense_fp32
    real_generate = model.generate
    rng = random.Random(0)
    outcomes = {"error": 0, "break": 0}

    def fail_at_once(**kwargs: Any) -> None:
        raise Injected("at once")

    for round_ in range(100):
        kind = ("error-in-generate", "error-at-once", "break")[round_ % 3]
        monkeypatch.setattr(model, "generate", fail_at_once if kind == "error-at-once" else real_generate)
        fail_at = rng.randint(1, 4) if kind == "error-in-generate" else None
        length = 4 if fail_at else 200
        stream = stream_reply(model, tokenizer, MESSAGES, max_new_tokens=length, min_new_tokens=length,
                              timeout=DEADLINE, stopping_criteria=[CountSteps(fail_at)], **GREEDY)

        def consume(stream: ChatStream = stream, kind: str = kind) -> str:
            with stream:
                try:
                    for _ in stream:
                        if kind == "break":
                            return "break"
                except Injected:
                    return "error"
            return "completed"

        outcome = within(DEADLINE, consume)
        assert outcome == ("break" if kind == "break" else "error"), (round_, kind, outcome)
        outcomes[outcome] += 1
        assert not stream.running, f"round {round_}: thread not joined"
    assert outcomes == {"error": 67, "break": 33}
    assert threading.active_count() == baseline
