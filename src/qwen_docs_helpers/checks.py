"""Invariants the executed pages assert in hidden cells, re-running each path with greedy decoding.

The visible snippets keep the model's own (sampling) generation config, so their outputs cannot be
compared. These functions re-run the same paths greedily and raise ``AssertionError`` with a one-line
reason when two paths that must agree do not; a failing check fails the docs build.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

Messages = list[dict[str, str]]

#: Logit disagreement always accepted as rounding noise (see ``assert_batch_matches_single``): the bf16 logits
#: of the random-weight stand-ins (|logit| about 1) move by up to 0.017 between a batch and a single run, and
#: by about 0.5 when the attention mask is wrong.
NEAR_TIE_LOGIT_GAP = 0.1
#: Beyond that floor, the share of the largest |logit| accepted as rounding noise. bf16 keeps 8 significant
#: bits, so logits near 30 (real weights) round in steps of 0.125 and a batch moves them by a few steps;
#: 2% of 30 is 0.6, far below what a wrong mask or position does to real weights.
RELATIVE_LOGIT_NOISE = 0.02


@dataclass(frozen=True)
class Greedy:
    """Greedy new tokens of one conversation, with the prompt they continue and each step's logits."""

    tokens: list[int]
    logits: list[torch.Tensor]
    prompt: list[int]


def _new_tokens(tokens: Sequence[int], pad_id: int | None, eos_ids: set[int]) -> list[int]:
    """Tokens up to and including the first end-of-sequence token, without trailing padding."""
    out: list[int] = []
    for token in tokens:
        out.append(int(token))
        if token in eos_ids:
            break
    while out and pad_id is not None and out[-1] == pad_id and pad_id not in eos_ids:
        out.pop()
    return out


def first_difference(first: Sequence[Any], second: Sequence[Any]) -> int | None:
    """Index where two sequences first differ (the shorter length if one is a prefix), or None if equal."""
    for index, (a, b) in enumerate(zip(first, second, strict=False)):
        if a != b:
            return index
    return None if len(first) == len(second) else min(len(first), len(second))


def _eos_ids(model: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [] if eos is None else [eos])


def greedy_manual(
    model: Any, tokenizer: Any, conversations: list[Messages], max_new_tokens: int,
    generate: Callable[..., Any] | None = None,
) -> list[Greedy]:
    """Greedy generation for a (left-padded) batch of conversations, as the Manual tab does it.

    ``generate`` replaces ``model.generate`` (e.g. a fast path's ``FastGenerator.generate``, which takes and
    returns the same), so that another path is read out exactly as the plain one.
    """
    from .chat import encode_chat  # the Manual tab's steps: template to text, then left-padded tokens

    inputs = encode_chat(tokenizer, conversations).to(model.device)
    run = model.generate if generate is None else generate
    with torch.no_grad():
        out = run(**inputs, max_new_tokens=max_new_tokens, do_sample=False, output_logits=True,
                  return_dict_in_generate=True)
    new = out.sequences[:, inputs.input_ids.shape[1] :]
    eos = _eos_ids(model)
    results = []
    for row in range(len(conversations)):
        tokens = _new_tokens(new[row].tolist(), tokenizer.pad_token_id, eos)
        prompt = inputs.input_ids[row][inputs.attention_mask[row].bool()].tolist()
        results.append(Greedy(tokens, [step[row].float().cpu() for step in out.logits[: len(tokens)]], prompt))
    return results


def greedy_pipeline(
    pipe: Any, conversations: list[Messages], max_new_tokens: int, batch_size: int = 1
) -> list[Greedy]:
    """Greedy prompt and new tokens from a text-generation pipeline for each conversation (no logits)."""
    prompts = [
        pipe.tokenizer.apply_chat_template(c, tokenize=True, add_generation_prompt=True, return_dict=False)
        for c in conversations
    ]
    outputs = pipe(
        conversations, max_new_tokens=max_new_tokens, do_sample=False, return_tensors=True, batch_size=batch_size
    )
    eos, pad = _eos_ids(pipe.model), pipe.tokenizer.pad_token_id
    results = []
    for prompt, out in zip(prompts, outputs, strict=True):
        ids = list(out[0]["generated_token_ids"])
        while len(ids) > len(prompt) and ids[0] == pad and prompt[0] != pad:  # batched rows keep their left padding
            ids.pop(0)
        results.append(Greedy(_new_tokens(ids[len(prompt) :], pad, eos), [], ids[: len(prompt)]))
    return results


def assert_same_tokens(first: Greedy, second: Greedy, what: str) -> None:
    """Exact agreement of two greedy runs: the same prompt tokens and the same new tokens."""
    if first.prompt != second.prompt:
        raise AssertionError(f"{what}: prompts differ from token {first_difference(first.prompt, second.prompt)} on")
    if first.tokens != second.tokens:
        at = first_difference(first.tokens, second.tokens)
        raise AssertionError(f"{what}: new tokens differ from position {at} on")
    if not first.tokens:
        raise AssertionError(f"{what}: no new tokens were generated, so there is nothing to compare")


def noise_allowance(
    logits: Sequence[torch.Tensor], floor: float = NEAR_TIE_LOGIT_GAP, relative: float = RELATIVE_LOGIT_NOISE
) -> float:
    """How far rounding noise may move these logits: ``floor``, or ``relative`` of their largest magnitude."""
    scale = max((float(step.abs().max()) for step in logits), default=0.0)
    return max(floor, relative * scale)


def _departure(index: int, b: Greedy, s: Greedy, allowed: float) -> str | None:
    """Why batched ``b`` is not ``s`` up to rounding noise (None: it is), judged on logits where both have them."""
    step = first_difference(b.tokens, s.tokens)
    if step is not None and step >= min(len(b.tokens), len(s.tokens)):
        return f"conversation {index}: batched and single outputs differ in length only"
    compared = len(s.tokens) if step is None else step + 1  # up to and including the departing step
    if b.logits and s.logits:
        moved = [float((x - y).abs().max()) for x, y in zip(b.logits[:compared], s.logits[:compared], strict=False)]
        worst = max(range(len(moved)), key=moved.__getitem__, default=None)
        if worst is not None and moved[worst] > allowed:
            return (f"conversation {index}: logits moved by {moved[worst]:.3g} at step {worst}, more than "
                    f"rounding noise ({allowed:.3g})")
    if step is None:
        return None
    if not s.logits:
        return f"conversation {index}: departs at step {step}, and without logits a near tie cannot be told"
    picks = (s.tokens[step], b.tokens[step])
    for name, run in (("single", s), ("batched", b)):
        if run.logits:
            gap = abs(float(run.logits[step][picks[0]] - run.logits[step][picks[1]]))
            if gap > allowed:
                return (f"conversation {index}: batched output departs at step {step} where the {name} run's logits "
                        f"of the two tokens were {gap:.3g} apart > {allowed:.3g} (not a near tie)")
    return None


def assert_batch_matches_single(
    batched: Sequence[Greedy],
    single: Sequence[Greedy],
    tolerance: float = NEAR_TIE_LOGIT_GAP,
    relative: float = RELATIVE_LOGIT_NOISE,
) -> str:
    """Batched greedy output equals one-by-one output, or departs from it only at a near tie.

    Left padding (or bucket padding) changes the shapes of the matrix products, so floating-point rounding
    differs a little between a batch and a single sequence. Noise may move the logits by ``tolerance``, or by
    ``relative`` of their largest magnitude where that is more (bf16 rounds in steps that grow with the value).
    Where both runs have logits, they must agree within that up to and including the first departing token;
    and where the runs pick different tokens, those two tokens must have been that close in each run with
    logits (a near tie such noise can flip). Anything else is a real disagreement. Returns a one-line summary.
    """
    exact, near_ties, widest = 0, 0, tolerance
    for index, (b, s) in enumerate(zip(batched, single, strict=True)):
        allowed = noise_allowance(s.logits, tolerance, relative)
        widest = max(widest, allowed)
        problem = _departure(index, b, s, allowed)
        if problem:
            raise AssertionError(problem)
        if b.tokens == s.tokens:
            exact += 1
        else:
            near_ties += 1
    return f"{exact} identical, {near_ties} departing only at a near tie (logits within {widest:.2g})"


def assert_stream_matches(streamed: str, reference: str, what: str) -> None:
    """Streamed text equals the text decoded at once."""
    if streamed != reference:
        at = first_difference(streamed, reference)
        raise AssertionError(f"{what}: streamed text differs from the non-streamed text at character {at}")


class _CountSteps:
    """A stopping criterion that only counts the decoding steps."""

    def __init__(self) -> None:
        self.steps = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        self.steps += 1
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


def assert_stream_stops_on_exit(model: Any, tokenizer: Any, messages: Messages, *, read_chars: int = 100,
                                forced_tokens: int = 1024) -> int:
    """Leaving a :func:`~qwen_docs_helpers.streaming.stream_reply` ``with`` block stops generation.

    Forces ``forced_tokens`` new tokens (no early end of text), breaks out after ``read_chars`` characters and
    requires the thread to have ended within half of them (the thread may run a few tokens ahead of the
    reader). Returns the number of steps generation ran.
    """
    from .streaming import stream_reply

    counter = _CountSteps()
    with stream_reply(model, tokenizer, messages, max_new_tokens=forced_tokens, min_new_tokens=forced_tokens,
                      stopping_criteria=[counter]) as stream:
        for _ in stream:
            if len(stream.text) > read_chars:
                break
    if stream.running:
        raise AssertionError("stream_reply: the generation thread outlived the with block")
    if counter.steps >= forced_tokens // 2:
        raise AssertionError(f"stream_reply: {counter.steps} of {forced_tokens} steps ran after a break "
                             f"at {len(stream.text)} characters: leaving the with block did not stop generation")
    return counter.steps
