"""Chat replies from a Qwen chat model: the template, the padding and the decoding done once, correctly.

The three classic mistakes in chat snippets are right padding in a batch (generation then continues after
pad tokens), forgetting ``add_generation_prompt`` (the model continues the user's turn), and decoding the
whole sequence (the reply then repeats the prompt). Everything here pads on the left *per call*, without
touching the tokenizer's own ``padding_side``, and decodes only the new tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transformers import BatchEncoding, PreTrainedModel, PreTrainedTokenizerBase

from .errors import InvalidArgumentError
from .validation import (
    generate_method,
    validate_batch,
    validate_context,
    validate_max_new_tokens,
    validate_messages,
    validate_reply_kwargs,
    validate_tokenizer,
)

__all__ = ["DEFAULT_MAX_NEW_TOKENS", "Conversation", "encode_chat", "generate_replies", "reply"]

#: The reply length Qwen's own examples use.
DEFAULT_MAX_NEW_TOKENS = 512

#: A conversation: ``[{"role": "user", "content": "..."}, ...]``; any mapping per message (a TypedDict, a
#: ``Mapping[str, str]``), as the checks accept.
Conversation = Sequence[Mapping[str, Any]]


def encode_chat(tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Conversation]) -> BatchEncoding:
    """Apply the chat template (with the assistant prompt) and tokenize into one left-padded batch.

    The template is rendered to text first and tokenized in a second call because ``padding_side`` is a
    per-call argument of ``tokenizer(...)``, while ``apply_chat_template`` silently ignores it (it only
    honours ``tokenizer_kwargs={"padding_side": ...}``). The rendered text already holds the special tokens,
    so none are added. The messages are not validated here; the tokenizer is, once for every helper that
    encodes through here: something else in its place (a model passed in the wrong order, ``None``) or a
    tokenizer without a chat template (a base model's) raises :class:`~qwen_docs_helpers.errors.InvalidArgumentError`
    rather than an AttributeError or transformers' error.
    """
    validate_tokenizer(tokenizer)
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidArgumentError("the tokenizer has no chat template (a base model?)",
                                   "load an -Instruct/-Chat checkpoint or set tokenizer.chat_template")
    # typed as lists of dicts, but any mapping renders (the template only reads the messages' keys)
    texts = tokenizer.apply_chat_template([list(c) for c in conversations],  # type: ignore[arg-type]
                                          add_generation_prompt=True, tokenize=False)
    if len(texts) > 1 and tokenizer.pad_token is None:
        raise InvalidArgumentError("the tokenizer has no pad token, so a batch cannot be padded",
                                   "set tokenizer.pad_token (Qwen's is '<|endoftext|>') or send one conversation")
    encoded: BatchEncoding = tokenizer(texts, padding=len(texts) > 1, padding_side="left", add_special_tokens=False,
                                       return_tensors="pt")
    return encoded


def _generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Conversation],
              max_new_tokens: int, generate_kwargs: dict[str, Any]) -> list[str]:
    generate = generate_method(model)
    validate_reply_kwargs(generate_kwargs, model)
    inputs = encode_chat(tokenizer, conversations).to(model.device)
    validate_context(model, inputs["input_ids"].shape[1])
    if model.generation_config.pad_token_id is None and tokenizer.pad_token_id is not None:
        generate_kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
    generate_kwargs.setdefault("tokenizer", tokenizer)  # generate needs it for stop_strings
    output = generate(**inputs, max_new_tokens=max_new_tokens, **generate_kwargs)
    sequences = getattr(output, "sequences", output)  # a GenerateOutput with return_dict_in_generate=True
    new_tokens = sequences[:, inputs["input_ids"].shape[1]:]
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


def generate_replies(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    /,
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    **generate_kwargs: Any,
) -> list[str]:
    """Generate the assistant's next reply for each conversation, in one left-padded batch.

    ``generate_kwargs`` go to ``model.generate`` (e.g. ``do_sample=False``, ``stop_strings=[...]``: the
    tokenizer is passed along); the model's generation config supplies the rest. Returns one decoded reply
    per conversation, special tokens removed. Raises :class:`~qwen_docs_helpers.errors.InvalidMessagesError`
    for malformed conversations, and :class:`~qwen_docs_helpers.errors.InvalidArgumentError` for the arguments
    :func:`~qwen_docs_helpers.validation.validate_reply_kwargs` refuses: ``max_length`` (pass ``max_new_tokens``),
    ``num_return_sequences`` > 1, ``temperature=0`` while sampling (pass ``do_sample=False``), a misspelt name;
    and for a prompt that leaves no room in the model's context
    (:func:`~qwen_docs_helpers.validation.validate_context`).
    """
    validate_batch(conversations)
    return _generate(model, tokenizer, conversations, validate_max_new_tokens(max_new_tokens), generate_kwargs)


def reply(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    messages: Conversation,
    /,
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    **generate_kwargs: Any,
) -> str:
    """The assistant's next reply to one conversation (see :func:`generate_replies`)."""
    validate_messages(messages)
    return _generate(model, tokenizer, [messages], validate_max_new_tokens(max_new_tokens), generate_kwargs)[0]
