"""Check chat inputs before they reach the tokenizer.

A malformed conversation otherwise fails deep inside the Jinja chat template (``'dict object' has no
attribute 'content'``) or, worse, renders a wrong prompt without failing at all; and a single conversation
passed where a batch is expected is silently read as a batch of messages. These checks name the offending
index and say how to fix it, in one line. They only read their input: valid input is returned as is.
:func:`validate_context` does the same for a prompt the model's context cannot hold, where ``generate``
would only warn once it had gone past it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from numbers import Integral
from typing import TYPE_CHECKING, Any, TypeGuard, TypeVar, cast

from .errors import InvalidArgumentError, InvalidMessagesError
from .keywords import closest_name

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

__all__ = [
    "ROLES",
    "context_length",
    "generate_method",
    "validate_batch",
    "validate_context",
    "validate_max_new_tokens",
    "validate_messages",
    "validate_reply_kwargs",
    "validate_timeout",
    "validate_tokenizer",
]

#: Whatever the caller passed: the checks return it unchanged, with its type.
_T = TypeVar("_T")

#: Roles the Qwen2 ChatML template (and transformers' chat templates in general) understand.
ROLES = ("system", "user", "assistant", "tool")

#: Rope types whose ``factor`` stretches the positions the model was trained on to a fixed, longer context
#: (transformers' names; ``"dynamic"`` rescales with the length instead and sets no limit of its own).
_STRETCHING_ROPE = frozenset({"linear", "yarn", "longrope", "llama3"})
#: How to get more positions than a configuration has (the end of the fixes of :func:`validate_context`).
_LONGER_CONTEXT = "or, for a longer context, turn on YaRN rope scaling in the configuration's rope_parameters"

_MESSAGE_FIX = "give every message a 'role' and a 'content' string"
_ROLE_FIX = f"use one of {', '.join(repr(role) for role in ROLES)}"


def _kind(value: object) -> str:
    """``'a str'``, ``'an int'``: the type of ``value`` for a message."""
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _is_list(value: object) -> bool:
    """A list or tuple; strings, bytes and mappings are sequences too but never a list of messages."""
    return isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)


def validate_messages(messages: _T, *, name: str = "messages") -> _T:
    """Check one conversation: a non-empty list of ``{'role': ..., 'content': str}`` dicts.

    ``role`` must be one of :data:`ROLES`; other keys (``name``, ``tool_call_id``, ...) are allowed. Returns
    ``messages`` itself, unchanged. ``name`` is how the conversation is called in error messages.
    Raises :class:`InvalidMessagesError`.
    """
    _check_messages(messages, name)
    return messages


def _check_messages(messages: Any, name: str) -> None:
    """:func:`validate_messages` without the return, so the public one can keep the caller's type."""
    if isinstance(messages, Mapping):
        raise InvalidMessagesError(f"{name} is a single dict, not a list of messages", "wrap it in a list: [message]")
    if not _is_list(messages):
        raise InvalidMessagesError(f"{name} is {_kind(messages)}, not a list",
                                   "pass a list of {'role': ..., 'content': ...} dicts")
    if len(messages) == 0:
        raise InvalidMessagesError(f"{name} is empty", "pass at least one message, e.g. [{'role': 'user', "
                                   "'content': 'Hello'}]")
    for index, message in enumerate(messages):
        where = f"{name}[{index}]"
        if _is_list(message):
            raise InvalidMessagesError(f"{where} is {_kind(message)}, not a message dict",
                                       "for several conversations at once use generate_replies(model, "
                                       "tokenizer, [conversation, ...])")
        if not isinstance(message, Mapping):
            raise InvalidMessagesError(f"{where} is {_kind(message)}, not a dict", _MESSAGE_FIX)
        for key in ("role", "content"):
            if key not in message:
                raise InvalidMessagesError(f"{where} has no {key!r}", _MESSAGE_FIX)
            if not isinstance(message[key], str):
                fix = _ROLE_FIX if key == "role" else f"{_MESSAGE_FIX} (convert it with str())"
                raise InvalidMessagesError(f"{where}[{key!r}] is {_kind(message[key])}, not a str", fix)
        if message["role"] not in ROLES:
            raise InvalidMessagesError(f"{where} has role {message['role']!r}", _ROLE_FIX)


def validate_batch(batch: _T, *, name: str = "conversations") -> _T:
    """Check a batch: a non-empty list of conversations, each valid for :func:`validate_messages`.

    A single conversation passed where a batch is expected is recognised and explained. Returns ``batch``
    itself, unchanged. Raises :class:`InvalidMessagesError`.
    """
    _check_batch(batch, name)
    return batch


def _check_batch(batch: Any, name: str) -> None:
    """:func:`validate_batch` without the return, so the public one can keep the caller's type."""
    if isinstance(batch, Mapping) or not _is_list(batch):
        raise InvalidMessagesError(f"{name} is {_kind(batch)}, not a list of conversations",
                                   "pass [conversation, ...], each conversation a list of message dicts")
    if len(batch) == 0:
        raise InvalidMessagesError(f"{name} is empty", "pass at least one conversation (a list of message dicts)")
    if any(isinstance(item, Mapping) for item in batch):
        raise InvalidMessagesError(f"{name} looks like a single conversation (its items are message dicts)",
                                   "wrap it in a list, [messages], or call reply(model, tokenizer, messages)")
    for index, conversation in enumerate(batch):
        _check_messages(conversation, f"{name}[{index}]")


def validate_max_new_tokens(max_new_tokens: Any) -> int:
    """Check that ``max_new_tokens`` is a positive integer (``True`` is not a number of tokens)."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, Integral):
        raise InvalidArgumentError(f"max_new_tokens is {_kind(max_new_tokens)} ({max_new_tokens!r}), not an int",
                                   "pass a positive whole number of tokens, e.g. max_new_tokens=512")
    if max_new_tokens < 1:
        raise InvalidArgumentError(f"max_new_tokens is {max_new_tokens}",
                                   "pass a positive number of tokens, e.g. max_new_tokens=512")
    return int(max_new_tokens)


def context_length(config: PretrainedConfig) -> int | None:
    """The positions a model's configuration is set up for, prompt and reply together, or ``None`` if it says none.

    That is ``max_position_embeddings`` or, with YaRN (or another rope scaling with a fixed ``factor``), ``factor``
    times ``original_max_position_embeddings`` if that is more: Qwen's instructions for 128k contexts add YaRN to
    ``config.json`` and leave ``max_position_embeddings`` at 32,768.
    """
    text = config.get_text_config(decoder=True)
    limit = getattr(text, "max_position_embeddings", None)
    if not isinstance(limit, int):
        return None
    rope = getattr(text, "rope_parameters", None) or {}
    if rope.get("rope_type") == "dynamic":
        return None
    if rope.get("rope_type") in _STRETCHING_ROPE and rope.get("factor"):
        original = rope.get("original_max_position_embeddings") or limit
        limit = max(limit, int(rope["factor"] * original))
    return limit


def validate_context(model: PreTrainedModel, prompt_tokens: int, total_tokens: int | None = None, *,
                     why: str = "") -> None:
    """Refuse a prompt that fills the model's context (:func:`context_length`), where every token of the reply
    would sit at a position the model is not set up for (``generate`` only warns once it has passed the
    context), and, given ``total_tokens`` (prompt and reply), a generation that would pass it; ``why`` says
    in the error why that is refused."""
    limit = context_length(model.config)
    if limit is None:
        return
    if prompt_tokens >= limit:
        raise InvalidArgumentError(f"the prompt has {prompt_tokens} tokens and the model's context is {limit} "
                                   "positions, which leaves none for the reply",
                                   f"shorten the conversation, {_LONGER_CONTEXT}")
    if total_tokens is not None and total_tokens > limit:
        raise InvalidArgumentError(f"the prompt's {prompt_tokens} tokens and {total_tokens - prompt_tokens} new ones "
                                   f"need {total_tokens} positions, past the model's context of {limit}{why}",
                                   f"pass max_new_tokens={limit - prompt_tokens} or fewer, {_LONGER_CONTEXT}")


def validate_reply_kwargs(generate_kwargs: Mapping[str, Any], model: PreTrainedModel | None = None) -> None:
    """Refuse ``generate`` arguments the reply helpers would get silently wrong, or that would fail deep inside.

    - ``max_length`` (the helpers always pass ``max_new_tokens``, which wins over it) and ``num_return_sequences``
      above 1, as an argument or in a ``generation_config`` (the helpers return one reply per conversation).
    - With sampling on (``do_sample=True`` here, in a ``generation_config``, or in the generation config of
      ``model``, as for Qwen's instruction models): a ``temperature`` of 0 or less, which other APIs read as
      greedy decoding and ``generate`` refuses without saying how to get it, and a ``top_p`` outside [0, 1]
      (above 1 ``generate`` quietly keeps every token).
    - A ``streamer`` without the ``put`` and ``end`` methods ``generate`` calls (``streamer=True``), which would
      fail inside ``generate`` with an ``AttributeError``.
    - Given ``model``: a misspelt argument, such as ``max_new_token``, that no part of ``generate`` or the model
      takes and that is close to the name of a generation setting (:func:`~.keywords.closest_name`); the error
      names that setting.

    Raises :class:`InvalidArgumentError`.
    """
    if "max_length" in generate_kwargs:
        raise InvalidArgumentError("max_length is ignored by the reply helpers (max_new_tokens wins over it)",
                                   "pass max_new_tokens, the number of tokens to generate, instead")
    config = generate_kwargs.get("generation_config")
    sequences = generate_kwargs.get("num_return_sequences", getattr(config, "num_return_sequences", None))
    if sequences is not None and sequences != 1:
        raise InvalidArgumentError(f"num_return_sequences={sequences!r}: the reply helpers return one reply per "
                                   "conversation", "call model.generate for several sequences per prompt, or "
                                   "call the helper once per sample")
    streamer = generate_kwargs.get("streamer")
    if streamer is not None and not all(callable(getattr(streamer, name, None)) for name in ("put", "end")):
        raise InvalidArgumentError(f"streamer={streamer!r} is not a streamer (generate calls its put and end "
                                   "methods)", "pass one such as TextStreamer(tokenizer, skip_prompt=True) to print "
                                   "the reply as it is generated, or call stream_reply(...) to iterate over it")
    if model is not None:
        _check_spelling(generate_kwargs, model)
    _check_sampling(generate_kwargs, model)


def _sampling(generate_kwargs: Mapping[str, Any], model: PreTrainedModel | None) -> tuple[bool, str]:
    """Whether ``generate`` will sample, and where that was set (for the error message)."""
    if "do_sample" in generate_kwargs:
        return bool(generate_kwargs["do_sample"]), "do_sample=True"
    for config, where in ((generate_kwargs.get("generation_config"), "the generation_config passed"),
                          (getattr(model, "generation_config", None), "the model's generation config")):
        do_sample = getattr(config, "do_sample", None)
        if do_sample is not None:
            return bool(do_sample), f"do_sample=True in {where}"
    return False, ""


def _check_sampling(generate_kwargs: Mapping[str, Any], model: PreTrainedModel | None) -> None:
    sampling, where = _sampling(generate_kwargs, model)
    if not sampling:
        return
    temperature = generate_kwargs.get("temperature")
    if _is_number(temperature) and not temperature > 0:
        raise InvalidArgumentError(f"temperature={temperature!r} with sampling on ({where}), which needs a "
                                   "temperature above 0 (transformers divides the scores by it)",
                                   "for greedy decoding pass do_sample=False; to sample, pass a temperature "
                                   "above 0, e.g. temperature=0.7")
    top_p = generate_kwargs.get("top_p")
    if _is_number(top_p) and not 0 <= top_p <= 1:
        raise InvalidArgumentError(f"top_p={top_p!r} is not a probability (sampling keeps the likeliest tokens "
                                   "whose probabilities add up to top_p)",
                                   "pass a value from 0 to 1, e.g. top_p=0.8; 1.0 keeps every token")


def _is_number(value: object) -> TypeGuard[float]:
    """An int or float (``True`` is not a temperature)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


#: Arguments ``generate`` takes out of its ``**kwargs`` itself, before it hands the rest to the model.
_GENERATE_POPS = frozenset({"tokenizer", "assistant_tokenizer", "trust_remote_code"})


def _check_spelling(generate_kwargs: Mapping[str, Any], model: PreTrainedModel) -> None:
    """Name the generation setting a misspelt argument was meant to be.

    ``generate`` refuses unknown arguments too, but only lists them; this check suggests the closest name, and
    only where one is close, so an argument of a model type it does not know is left to ``generate``."""
    if "custom_generate" in generate_kwargs:  # a custom generation method takes arguments of its own
        return
    import inspect

    from transformers import GenerationConfig
    from transformers.utils.generic import TransformersKwargs

    get_base_model = getattr(model, "get_base_model", None)  # a PEFT model wraps one
    # The class's methods: an instance's generate may be wrapped or patched.
    model_class: Any = type(get_base_model() if callable(get_base_model) else model)
    settings = {name for name in vars(GenerationConfig()) if not name.startswith("_")}
    settings |= set(inspect.signature(model_class.generate).parameters) - {"self", "kwargs"}
    taken = settings | _GENERATE_POPS | set(TransformersKwargs.__optional_keys__)
    taken |= set(inspect.signature(model_class.forward).parameters)
    taken |= set(inspect.signature(model_class.prepare_inputs_for_generation).parameters)
    for key in generate_kwargs:
        if key in taken:
            continue
        close = closest_name(key, settings)
        if close:
            raise InvalidArgumentError(f"{key} is not an argument of generate or of the model",
                                       f"did you mean {close}?")


def validate_timeout(timeout: Any) -> float | None:
    """Check that ``timeout`` is ``None`` (wait forever) or a positive number of seconds."""
    if timeout is None:
        return None
    if not _is_number(timeout) or not timeout > 0:
        raise InvalidArgumentError(f"timeout is {_kind(timeout)} ({timeout!r})",
                                   "pass a positive number of seconds, e.g. timeout=60, or None to wait forever")
    return float(timeout)


#: The fix for a model and tokenizer passed the wrong way round (or one of them left out).
_ORDER_FIX = "pass (model, tokenizer, messages) in that order, as in model, tokenizer = load_model(...)"


def _is_tokenizer(value: object) -> bool:
    """Whether ``value`` can render a chat template: a tokenizer (or a processor), whatever its class."""
    return callable(getattr(value, "apply_chat_template", None))


def generate_method(model: PreTrainedModel) -> Callable[..., Any]:
    """``model.generate``; a model without the head that predicts tokens (``AutoModel``) cannot generate.

    A tokenizer or anything else that is not a model is refused with the argument order: swapped or missing
    arguments otherwise fail deep inside ``generate`` or the tokenizer."""
    from transformers import GenerationMixin, PreTrainedModel

    base_model = getattr(model, "get_base_model", None)  # a PEFT model wraps one and generates with its adapter
    if not isinstance(model, GenerationMixin) and callable(base_model) and isinstance(base_model(), GenerationMixin):
        return cast("Callable[..., Any]", model.generate)
    if not isinstance(model, GenerationMixin):
        if _is_tokenizer(model):
            raise InvalidArgumentError(f"got a tokenizer ({type(model).__name__}) where the model goes", _ORDER_FIX)
        if not isinstance(model, PreTrainedModel):
            raise InvalidArgumentError(f"the model is {_kind(model)}, not a transformers model", _ORDER_FIX)
        raise InvalidArgumentError(f"{type(model).__name__} cannot generate text",
                                   "load the model with AutoModelForCausalLM (AutoModel leaves out the token head)")
    # transformers types generate's self as a Protocol that mypy cannot match with any model class
    return model.generate  # type: ignore[misc]


def validate_tokenizer(tokenizer: Any) -> None:
    """Check the tokenizer argument: something that renders chat templates, not a model or ``None``.

    Raises :class:`InvalidArgumentError` naming the argument order (a model here usually means the two were
    swapped), instead of an ``AttributeError`` from inside the helpers."""
    if _is_tokenizer(tokenizer):
        return
    from transformers import PreTrainedModel

    if isinstance(tokenizer, PreTrainedModel):
        raise InvalidArgumentError(f"got a model ({type(tokenizer).__name__}) where the tokenizer goes", _ORDER_FIX)
    what = "None" if tokenizer is None else f"{_kind(tokenizer)}, not a tokenizer"
    raise InvalidArgumentError(f"the tokenizer is {what}", _ORDER_FIX)
