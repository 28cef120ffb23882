"""The invariants the pages' hidden cells assert: they pass on agreement and fail on disagreement."""

from __future__ import annotations

import pytest
import torch

from qwen_docs_helpers.checks import (
    Greedy,
    assert_batch_matches_single,
    assert_same_tokens,
    assert_stream_matches,
    assert_stream_stops_on_exit,
    first_difference,
)


def logits(*rows: list[float]) -> list[torch.Tensor]:
    return [torch.tensor(row) for row in rows]


def test_first_difference() -> None:
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2], [1, 2, 3]) == 2
    assert first_difference("abc", "abd") == 2


def test_same_tokens_compares_prompts_and_new_tokens() -> None:
    a = Greedy([5, 6], [], [1, 2])
    assert_same_tokens(a, Greedy([5, 6], [], [1, 2]), "same")
    with pytest.raises(AssertionError, match="prompts differ from token 1"):
        assert_same_tokens(a, Greedy([5, 6], [], [1, 3]), "x")
    with pytest.raises(AssertionError, match="new tokens differ from position 1"):
        assert_same_tokens(a, Greedy([5, 7], [], [1, 2]), "x")
    with pytest.raises(AssertionError, match="no new tokens"):
        assert_same_tokens(Greedy([], [], [1]), Greedy([], [], [1]), "x")


def test_batch_check_accepts_only_near_ties() -> None:
    single = Greedy([1, 2, 3], logits([9, 0, 0, 0], [0, 0, 5.0, 4.95], [0, 0, 0, 9]), [7])
    identical = Greedy([1, 2, 3], [], [7])
    near_tie = Greedy([1, 3, 0], [], [7])  # departs at step 1, where the single run's top-2 gap was 0.05
    assert "1 identical, 1 departing" in assert_batch_matches_single([identical, near_tie], [single, single])
    clear = Greedy([1, 2, 3], logits([9, 0, 0, 0], [0, 0, 5.0, 1.0], [0, 0, 0, 9]), [7])
    with pytest.raises(AssertionError, match="not a near tie"):
        assert_batch_matches_single([near_tie], [clear])
    with pytest.raises(AssertionError, match="length only"):
        assert_batch_matches_single([Greedy([1, 2], [], [7])], [single])
    with pytest.raises(AssertionError, match="without logits a near tie cannot be told"):
        assert_batch_matches_single([near_tie], [Greedy([1, 2, 3], [], [7])])


def test_batch_check_compares_logits_up_to_the_departure() -> None:
    """Same tokens are not enough: logits that moved beyond rounding noise mean a real difference (a wrong mask)."""
    single = Greedy([1, 2], logits([3, 0, 0], [0, 0, 3]), [7])
    within_noise = Greedy([1, 2], logits([3, 0.05, 0], [0, 0, 3]), [7])
    assert "1 identical" in assert_batch_matches_single([within_noise], [single])
    with pytest.raises(AssertionError, match=r"logits moved by 0.5 at step 1, more than rounding noise \(0.1\)"):
        assert_batch_matches_single([Greedy([1, 2], logits([3, 0, 0], [0, 0.5, 3]), [7])], [single])


def test_batch_check_requires_a_near_tie_in_both_runs() -> None:
    single = Greedy([0, 1], logits([5, 0, 0], [0, 2.0, 1.95]), [7])
    flipped = Greedy([0, 2], logits([5, 0, 0], [0, 1.95, 2.0]), [7])  # a tie in both: noise flipped it
    assert "1 departing" in assert_batch_matches_single([flipped], [single])
    # each logit moved within noise (0.07, 0.09 <= 0.1), but the batched run's pick won by 0.11: no tie there
    clear_in_batch = Greedy([0, 2], logits([5, 0, 0], [0, 1.93, 2.04]), [7])
    with pytest.raises(AssertionError, match=r"the batched run's logits of the two tokens were 0\.11 apart"):
        assert_batch_matches_single([clear_in_batch], [single], relative=0.0)


def test_batch_check_allowance_grows_with_the_logits() -> None:
    """bf16 rounds logits near 30 in steps of 0.125: a flip one step apart is noise there, not at |logit| ~ 1."""
    big = Greedy([0, 1], logits([30, 0, 0], [0, 30.0, 29.875]), [7])
    flipped_big = Greedy([0, 2], logits([30, 0, 0], [0, 29.875, 30.0]), [7])
    assert "1 departing" in assert_batch_matches_single([flipped_big], [big])  # allowance 0.6 = 2% of 30
    with pytest.raises(AssertionError, match="more than rounding noise"):
        assert_batch_matches_single([flipped_big], [big], relative=0.0)  # a fixed 0.1 would call it a failure
    with pytest.raises(AssertionError, match="moved by 3"):  # 10% of the scale is not rounding
        assert_batch_matches_single([Greedy([0, 1], logits([30, 3, 0], [0, 30.0, 29.875]), [7])], [big])


def test_stream_check() -> None:
    assert_stream_matches("hello world", "hello world", "ok")
    with pytest.raises(AssertionError, match="at character 6"):
        assert_stream_matches("hello there", "hello world", "x")


MESSAGES = [{"role": "user", "content": "Give me a short introduction to large language models."}]


def test_stream_stop_check_passes_when_the_with_block_stops_generation(dense_fp32: tuple) -> None:
    model, tokenizer = dense_fp32
    steps = assert_stream_stops_on_exit(model, tokenizer, MESSAGES, forced_tokens=256)
    assert 0 < steps < 128


def test_stream_stop_check_fails_when_generation_runs_on(dense_fp32: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    from qwen_docs_helpers.streaming import ChatStream

    model, tokenizer = dense_fp32
    monkeypatch.setattr(ChatStream, "close", lambda self: self._thread.join())  # waits, never asks to stop
    with pytest.raises(AssertionError, match=r"^stream_reply: 256 of 256 steps ran after a break"):
        assert_stream_stops_on_exit(model, tokenizer, MESSAGES, forced_tokens=256)
