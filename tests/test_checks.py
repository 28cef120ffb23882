"""The invariants the pages' hidden cells assert: they pass on agreement and fail on disagreement."""

from __future__ import annotations

import pytest
import torch

from qwen_docs_helpers.checks import (
    Greedy,
    assert_batch_matches_single,
    assert_same_tokens,
    assert_stream_matches,
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


def test_stream_check() -> None:
    assert_stream_matches("hello world", "hello world", "ok")
    with pytest.raises(AssertionError, match="at character 6"):
        assert_stream_matches("hello there", "hello world", "x")
