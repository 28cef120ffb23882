"""Stream a chat reply as it is generated, without the hangs of the usual Thread + TextIteratorStreamer recipe.

The recipe in transformers' docs runs ``generate`` in a thread and iterates a ``TextIteratorStreamer``. It
has three traps: an exception in the thread never reaches the loop, which then waits forever for text;
leaving the loop early lets generation run on to ``max_new_tokens``; and a stalled model blocks the loop
for good. :class:`ChatStream` closes each one: the thread always ends the stream and hands its exception
over, a ``StoppingCriteria`` stops generation when the consumer leaves, and waits are bounded.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

import torch
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from .chat import DEFAULT_MAX_NEW_TOKENS, Conversation, encode_chat
from .errors import InvalidArgumentError, StreamTimeoutError
from .validation import (
    generate_method,
    validate_context,
    validate_max_new_tokens,
    validate_messages,
    validate_reply_kwargs,
    validate_timeout,
)

__all__ = ["ChatStream", "StopOnEvent", "stream_reply"]


class StopOnEvent(StoppingCriteria):
    """Stop every sequence once ``event`` is set: how a consumer stops a generation running in a thread."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool,  # type: ignore[return-value]
                          device=input_ids.device)


def _generate_in_thread(generate: Callable[..., Any], streamer: TextIteratorStreamer, errors: list[BaseException],
                        generate_kwargs: dict[str, Any]) -> None:
    """Thread target. It holds no reference to the ChatStream, so an abandoned stream can be collected."""
    try:
        generate(**generate_kwargs, streamer=streamer)
    except BaseException as error:  # handed to the consumer, which re-raises it
        errors.append(error)
        # generate's own streamer.end() never ran: wake the consumer, which would otherwise wait forever.
        streamer.text_queue.put(streamer.stop_signal)


class ChatStream(Iterator[str]):
    """The pieces of one reply as they are generated; also a context manager that stops generation on exit.

    Iterate it for text pieces (``.text`` accumulates them). When generation fails, its exception is
    re-raised by the iteration once the text produced before the failure has been read. Waiting longer than
    ``timeout`` seconds for the next piece raises :class:`StreamTimeoutError` and asks generation to stop
    (the thread, a daemon, ends when the stalled step returns). :meth:`close` (also run when
    a ``with`` block ends, and requested when the stream is garbage-collected) stops generation after the
    current token and joins the thread.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, generate_kwargs: dict[str, Any],
                 *, timeout: float | None) -> None:
        self.text = ""
        self.timeout = timeout
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._finished = False
        self._streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, timeout=timeout, skip_special_tokens=True)
        user_criteria = generate_kwargs.pop("stopping_criteria", None) or []
        generate_kwargs["stopping_criteria"] = StoppingCriteriaList([*user_criteria, StopOnEvent(self._stop)])
        self._thread = threading.Thread(
            target=_generate_in_thread, args=(generate_method(model), self._streamer, self._errors, generate_kwargs),
            name="qwen-docs-stream", daemon=True,
        )
        self._thread.start()

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> str:
        while not self._finished:
            try:
                piece: str = next(self._streamer)
            except queue.Empty:
                # The thread is stuck inside a step, so joining it could block too: ask it to stop and leave.
                self._finished = True
                self._stop.set()
                raise StreamTimeoutError(
                    f"no reply text for {self.timeout} s (the model is stalled or very slow)",
                    "pass a larger timeout= (None waits forever), or check the device is not busy or swapping",
                ) from None
            except StopIteration:
                self._finished = True
                self._thread.join(self.timeout)  # the stream has ended, so the thread is returning
                if self._errors:
                    raise self._errors[0] from None
                raise
            if piece:  # the streamer sends '' for tokens that do not yet complete a printable piece
                self.text += piece
                return piece
        raise StopIteration

    def close(self) -> None:
        """Stop generation after the current token and wait for the thread (at most ``timeout`` seconds)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(self.timeout)

    @property
    def running(self) -> bool:
        """Whether the generation thread is still alive."""
        return self._thread.is_alive()

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        # Only signal: joining from a garbage-collection pass could block an unrelated thread.
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()


def _refuse_beams(model: PreTrainedModel, generate_kwargs: dict[str, Any]) -> None:
    """Refuse beam search up front: transformers' streamers take one sequence, and say so only mid-stream."""
    config = generate_kwargs.get("generation_config") or model.generation_config
    beams = generate_kwargs.get("num_beams", getattr(config, "num_beams", None))
    if beams is not None and beams != 1:
        raise InvalidArgumentError(f"num_beams={beams!r}: a stream shows one sequence as it is generated, beam "
                                   "search keeps several until the end", "drop num_beams (or pass num_beams=1), or "
                                   "call reply(model, tokenizer, messages, num_beams=...) for beam search")


def stream_reply(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    messages: Conversation,
    /,
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    timeout: float | None = 60.0,
    **generate_kwargs: Any,
) -> ChatStream:
    """Start generating the reply to ``messages`` in a background thread and return its :class:`ChatStream`.

    ``timeout`` bounds the wait for each next piece of text (the first one includes the prompt's prefill);
    ``None`` waits forever. ``generate_kwargs`` go to ``model.generate`` with the tokenizer (so ``stop_strings``
    work); ``stopping_criteria`` are kept and extended; arguments are checked as in
    :func:`~qwen_docs_helpers.chat.generate_replies`, and beam search is refused too (``num_beams`` > 1, as an
    argument or in the generation config), which transformers' streamers do not support. Use it as
    ``with stream_reply(...) as stream: for piece in stream: ...``.
    """
    validate_messages(messages)
    generate_method(model)  # a model that cannot generate fails here, not in the thread
    max_new_tokens = validate_max_new_tokens(max_new_tokens)
    if "streamer" in generate_kwargs:
        raise InvalidArgumentError("stream_reply got a streamer= argument", "drop it: stream_reply makes its own")
    validate_reply_kwargs(generate_kwargs, model)
    _refuse_beams(model, generate_kwargs)
    timeout = validate_timeout(timeout)
    inputs = encode_chat(tokenizer, [messages]).to(model.device)
    validate_context(model, inputs["input_ids"].shape[1])  # here, not in the thread
    return ChatStream(model, tokenizer,
                      {**inputs, "max_new_tokens": max_new_tokens, "tokenizer": tokenizer, **generate_kwargs},
                      timeout=timeout)
