"""Opt-in fast generation: a static KV cache, a ``torch.compile``'d decoding step, prompts padded to buckets.

Plain ``model.generate`` grows its KV cache token by token and runs every decoding step op by op from
Python. For batch-1 decoding on a GPU that launch overhead, not the GPU, is often the limit. transformers 5
has the pieces to remove it, and :class:`FastGenerator` turns them on together, without hand-written loops:

- A static KV cache: allocated once at its final size, so every decoding step has the same tensor shapes. With a
  static cache, ``generate`` compiles the *decoding* step itself (the prefill stays eager) with the
  ``compile_config`` of the generation config; on CPU only when asked (``CompileConfig._compile_all_devices``,
  what transformers' own tests use). The generator keeps one ``StaticCache`` per batch size and empties it for
  the next call, instead of ``cache_implementation="static"``, with which transformers 5 allocates a new cache in
  every call: new tensor addresses make CUDA graphs re-record at each call, and PyTorch stops using CUDA graphs
  for the step after 128 re-records (``torch._inductor.config.triton.cudagraph_unexpected_rerecord_limit``).
- ``attn_implementation="sdpa"`` while the fast path runs: FlashAttention-2 with a static cache is reported
  broken (transformers#32040) and breaks the compiled graph.
- For Qwen2-MoE, ``experts_implementation="grouped_mm"`` (transformers switches it to ``"batched_mm"`` for the
  decoding steps on GPUs): the ``"eager"`` experts loop over the experts that received tokens, a
  data-dependent Python loop that ``torch.compile`` cannot capture in one graph.
- Prompts are left-padded to the next *bucket* length (64, 128, 256, ...) with attention-mask zeros. The
  static cache is sized ``prompt + max_new_tokens``, so without buckets every new prompt length gives new
  shapes and, on a GPU, a new compilation and new CUDA graphs; with them, shapes repeat.

The padding changes no token: positions come from the attention mask, masked positions are never attended,
and the filler token is each row's own first token, so even the repetition penalty (which looks at the
*set* of tokens in the sequence, padding included) sees the same set. :obj:`prepare_fast` is the short way
to get a :class:`FastGenerator`; its ``generate`` takes and returns what ``model.generate`` does (the bucket
padding is removed from the output), and ``generate_replies`` / ``reply`` mirror
:mod:`qwen_docs_helpers.chat`. The model is not changed: the attention and experts implementations are
switched for the duration of each call and restored afterwards (so one generator per model at a time, not
from several threads).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers import CompileConfig, GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase, StaticCache

from .chat import DEFAULT_MAX_NEW_TOKENS, Conversation, encode_chat
from .errors import InsufficientMemoryError, InvalidArgumentError
from .keywords import explain_unknown_keywords
from .memory import available_bytes, static_cache_bytes
from .validation import (
    generate_method,
    validate_batch,
    validate_context,
    validate_max_new_tokens,
    validate_messages,
    validate_reply_kwargs,
    validate_tokenizer,
)

__all__ = [
    "COMPILING_DEVICES",
    "DEFAULT_BUCKETS",
    "FastGenerator",
    "bucket_length",
    "pad_to_bucket",
    "prepare_fast",
]

#: Prompt lengths the fast path pads to; longer prompts go to the next multiple of the largest.
DEFAULT_BUCKETS: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
#: Devices on which transformers compiles the decoding step of a static-cache ``generate`` by itself.
COMPILING_DEVICES = ("cuda", "xpu", "neuron", "tpu")


#: Sampling-only generation settings at the values transformers treats as "not set" (None would be refilled
#: from the model's generation config).
_SAMPLING_NEUTRAL = {"temperature": 1.0, "top_p": 1.0, "top_k": 50, "typical_p": 1.0, "epsilon_cutoff": 0.0,
                     "eta_cutoff": 0.0}
#: transformers' model-agnostic ``max_length``: with none set anywhere, ``generate`` makes this many new tokens.
_DEFAULT_MAX_LENGTH = 20


def _check_buckets(buckets: Sequence[int]) -> tuple[int, ...]:
    values = tuple(buckets)
    if not values or any(not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in values):
        raise InvalidArgumentError(f"buckets={buckets!r} must be a non-empty sequence of positive ints",
                                   f"pass e.g. {DEFAULT_BUCKETS}")
    return tuple(sorted(set(values)))


def bucket_length(length: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> int:
    """The padded length for a prompt of ``length`` tokens: the smallest bucket that holds it.

    Beyond the largest bucket, the next multiple of the largest (``4096`` for ``2049`` with the defaults).
    """
    values = _check_buckets(buckets)
    if length < 0:
        raise InvalidArgumentError(f"length={length} is negative", "pass a token count")
    for bucket in values:
        if length <= bucket:
            return bucket
    largest = values[-1]
    return -(-length // largest) * largest


def pad_to_bucket(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, buckets: Sequence[int] = DEFAULT_BUCKETS
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Left-pad a batch to its bucket length: ``(input_ids, attention_mask, added)``.

    The added columns have attention-mask 0 and repeat each row's first token (its own left padding, or its
    first real token), so the set of token ids in every row is unchanged. ``added`` is the number of
    columns added on the left (``0`` when the length already is a bucket).
    """
    if input_ids.ndim != 2:
        raise InvalidArgumentError(f"input_ids has shape {tuple(input_ids.shape)}", "pass a 2-D (batch, length) tensor")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    length = input_ids.shape[1]
    added = bucket_length(length, buckets) - length
    if added == 0:
        return input_ids, attention_mask, 0
    filler = input_ids[:, :1].expand(-1, added)
    zeros = attention_mask.new_zeros((attention_mask.shape[0], added))
    return torch.cat([filler, input_ids], dim=1), torch.cat([zeros, attention_mask], dim=1), added


def _default_compile_config(device_type: str) -> CompileConfig:
    """transformers' defaults (inductor, CUDA graphs via ``reduce-overhead``), in one graph (``fullgraph``).

    ``fullgraph=True`` makes a graph break an error instead of a silent slowdown. On devices without CUDA graphs
    the mode is ``"default"``.
    """
    mode = "reduce-overhead" if device_type == "cuda" else "default"
    return CompileConfig(fullgraph=True, mode=mode)


class FastGenerator:
    """``generate`` with a static KV cache, compiled decoding and bucket-padded prompts (see the module docs).

    - ``compile``: ``None`` (default) compiles where transformers does by itself (CUDA and other accelerators),
      not on CPU; ``True`` compiles on any device (inductor, ``fullgraph=True`` so that a graph break is an
      error rather than a silent slowdown, CUDA graphs on CUDA: ``mode="reduce-overhead"``); a ``CompileConfig``
      compiles with that (e.g. ``CompileConfig(backend="aot_eager")``); ``False`` never compiles (static cache
      and buckets only).
    - ``buckets``: prompt lengths to pad to (:func:`bucket_length`); ``None`` turns padding off.
    - ``attn_implementation``: used while generating (default ``"sdpa"``); ``None`` keeps the model's.
    - ``experts_implementation``: for MoE models, used while generating (default ``"grouped_mm"``); ``None``
      keeps the model's. Ignored for dense models.

    The first call with a new batch size or cache length compiles (tens of seconds); time the calls after it.
    """

    @explain_unknown_keywords(
        {"compile_config": "pass the CompileConfig as compile=",
         "cache_implementation": "the fast path always decodes with its own static cache"},
        "prepare_fast takes the model, the tokenizer, {keywords}; generation settings (max_new_tokens=, "
        "do_sample=, ...) go to its reply(...) and generate_replies(...) calls",
        name="prepare_fast",
    )
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
        *,
        compile: bool | CompileConfig | None = None,
        buckets: Sequence[int] | None = DEFAULT_BUCKETS,
        attn_implementation: str | None = "sdpa",
        experts_implementation: str | None = "grouped_mm",
    ) -> None:
        self._generate = generate_method(model)
        if tokenizer is not None:
            validate_tokenizer(tokenizer)
        self.model = model
        self.tokenizer = tokenizer
        self.buckets = _check_buckets(buckets) if buckets is not None else None
        self.attn_implementation = attn_implementation
        self.experts_implementation = experts_implementation if _has_experts(model) else None
        device_type = model.device.type
        if isinstance(compile, CompileConfig):
            config: CompileConfig | None = copy.deepcopy(compile)
        elif compile or (compile is None and device_type in COMPILING_DEVICES):
            config = _default_compile_config(device_type)
        else:
            config = None
        if config is not None and device_type not in COMPILING_DEVICES:
            config._compile_all_devices = True  # type: ignore[assignment]  # transformers' switch for compiling on CPU
        self.compile_config = config
        #: batch size (sequences in the cache) -> (cache length, the static cache reused by the calls of that size)
        self._caches: dict[int, tuple[int, StaticCache]] = {}

    def static_cache(self, batch_size: int, length: int) -> StaticCache:
        """The generator's static cache for ``batch_size`` sequences, emptied, holding at least ``length`` tokens.

        The same cache object (the same tensors, at the same addresses) serves every call of that batch size; it is
        only replaced by a longer one when a call needs more room, so lengths only grow, as transformers' own
        ``_previous_max_cache_length`` does for its caches.
        """
        held = self._caches.get(batch_size)
        if held is not None and held[0] >= length:
            held[1].reset()
            return held[1]
        cache = StaticCache(config=self.model.config.get_text_config(decoder=True), max_cache_len=length)
        self._caches[batch_size] = (length, cache)
        return cache

    def clear_caches(self) -> None:
        """Drop the static caches the generator keeps between calls (their memory is freed with them)."""
        self._caches.clear()

    @property
    def compiles(self) -> bool:
        """Whether ``generate`` will compile the decoding step: compilation was asked for, and the model is
        neither quantized with a method transformers does not compile (bitsandbytes) nor offloaded."""
        if self.compile_config is None:
            return False
        quantizer = getattr(self.model, "hf_quantizer", None)
        if quantizer is not None and not quantizer.is_compileable:
            return False
        devices = set(getattr(self.model, "hf_device_map", {}).values())
        return "disk" not in devices and not ("cpu" in devices and len(devices) > 1)

    def generation_config(self, base: GenerationConfig | None = None, /, **overrides: Any) -> GenerationConfig:
        """A copy of ``base`` (default: the model's generation config) with the fast path's settings and
        ``overrides`` (generation settings only; others are ignored).

        It asks for ``cache_implementation="static"``, so it also works on its own with ``model.generate``;
        :meth:`generate` passes its own reused cache instead."""
        config = copy.deepcopy(base if base is not None else self.model.generation_config)
        config.cache_implementation = "static"
        if self.compile_config is not None:
            config.compile_config = copy.deepcopy(self.compile_config)  # keeps _compile_all_devices
            config.disable_compile = False
        else:
            config.compile_config = None
            config.disable_compile = True  # a static cache alone would make transformers compile on GPUs
        config.update(**overrides)
        return config

    def implementations(self) -> contextlib.AbstractContextManager[None]:
        """Switch the model to the fast path's attention and experts implementations, and back afterwards."""
        return use_implementations(self.model, self.attn_implementation, self.experts_implementation)

    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **generate_kwargs: Any
    ) -> Any:
        """``model.generate`` on the fast path; returns what it returns, without the bucket padding.

        Pass ``max_new_tokens`` (a ``max_length`` argument is refused). Other keyword arguments override the
        model's generation config (or a ``generation_config=`` passed in), as with ``model.generate``; the
        config's ``max_length`` and ``min_length`` count the prompt without its bucket padding, as they do there.
        With no length anywhere it makes 20 new tokens and warns, as ``model.generate`` does for the same prompt.
        A prompt and length that need more positions than the model's context are refused before the static cache
        is allocated (:func:`~qwen_docs_helpers.validation.validate_context`), and so is a new static cache larger
        than the memory the model's device has left (:class:`~qwen_docs_helpers.errors.InsufficientMemoryError`,
        with the longest ``max_new_tokens`` that fits; :mod:`qwen_docs_helpers.memory`).
        """
        if "max_length" in generate_kwargs:
            raise InvalidArgumentError("max_length counts the bucket padding on the fast path",
                                       "pass max_new_tokens instead")
        if "past_key_values" in generate_kwargs:
            raise InvalidArgumentError("the fast path brings its own static cache",
                                       "drop past_key_values, or call model.generate to pass a cache")
        added = 0
        if self.buckets is not None:
            input_ids, attention_mask, added = pad_to_bucket(input_ids, attention_mask, self.buckets)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        config = self.generation_config(generate_kwargs.pop("generation_config", None))
        others = config.update(**generate_kwargs)  # generation settings go into the config, the rest to generate
        if self.tokenizer is not None:
            others.setdefault("tokenizer", self.tokenizer)  # generate needs it for stop_strings
        if not config.do_sample:
            # Greedy: the model's sampling settings (Qwen's temperature, top_p, top_k) do nothing; dropping them
            # spares the "generation flags are not valid" warning plain generate(do_sample=False) does not give.
            for name, neutral in _SAMPLING_NEUTRAL.items():
                setattr(config, name, neutral)
        if config.pad_token_id is None and self.tokenizer is not None and self.tokenizer.pad_token_id is not None:
            config.pad_token_id = self.tokenizer.pad_token_id
        # The cache generate would build: (max_length - 1) tokens for max(num_beams, num_return_sequences) copies.
        length = input_ids.shape[1]
        max_length = self._shift_lengths(config, length, added)
        # Its static cache is allocated for the whole length at once: refuse one past the context before that.
        validate_context(self.model, length - added, max_length - added,
                         why="; the fast path allocates its static cache for all of them before the first token")
        copies = max(config.num_beams or 1, config.num_return_sequences or 1)
        batch_size, cache_length = input_ids.shape[0] * copies, max(max_length - 1, length)
        cache = self.static_cache(batch_size, cache_length)
        if not cache.is_initialized:  # a new cache: refuse one that cannot fit before generate allocates it
            self._refuse_too_large(batch_size, cache_length, length)
        config.cache_implementation = None  # the cache is passed in: generate refuses both
        with self.implementations():
            output = self._generate(input_ids=input_ids, attention_mask=attention_mask,
                                         generation_config=config, past_key_values=cache, **others)
        if isinstance(output, torch.Tensor):
            return output[:, added:]
        output.sequences = output.sequences[:, added:]
        return output

    def _refuse_too_large(self, batch_size: int, length: int, prompt_length: int) -> None:
        """Raise :class:`InsufficientMemoryError` (and drop the new cache) when a static cache of ``length``
        positions for ``batch_size`` sequences needs more memory than the model's device has left, with the largest
        ``max_new_tokens`` that fits for this ``prompt_length`` (bucket padding included: it is cached too).

        A model spread over several devices is not checked: its cache is spread with its layers."""
        if len(set(getattr(self.model, "hf_device_map", {}).values())) > 1:
            return
        available = available_bytes(self.model.device)
        if available is None:
            return
        config = self.model.config
        dtype = next(self.model.get_input_embeddings().parameters()).dtype  # what keys and values are computed in

        def needed(positions: int) -> int:
            cache = StaticCache(config=config.get_text_config(decoder=True), max_cache_len=positions)  # lazy: empty
            return static_cache_bytes(cache, config, batch_size, dtype)

        need = needed(length)
        if need <= available:
            return
        del self._caches[batch_size]
        low, high = 0, length  # the longest cache that fits, by bisection: its size only grows with its length
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if needed(middle) <= available else (low, middle - 1)
        fits = low - prompt_length + 1  # generate caches the prompt and all new tokens but the last
        several = batch_size > 1
        problem = (f"the fast path's static KV cache for {batch_size} sequence{'s' if several else ''} of {length:,} "
                   f"positions needs {_size(need)}, and {self.model.device} has {_size(available)} left")
        if fits >= 1:
            fix = f"pass max_new_tokens={fits} or fewer" + (", or fewer conversations at once" if several else "")
        else:
            fix = "the prompt alone does not fit: " + ("pass fewer or shorter conversations" if several
                                                       else "shorten the conversation")
        held = sum(static_cache_bytes(cache, config, size, dtype)
                   for size, (_, cache) in self._caches.items() if cache.is_initialized)
        if held and need <= available + held:  # only where freeing them would make room
            fix += f", or call clear_caches() first: this generator's other caches hold {_size(held)}, enough room"
        raise InsufficientMemoryError(problem, fix)

    def _shift_lengths(self, config: GenerationConfig, length: int, added: int) -> int:
        """Move the config's total lengths past the ``added`` padding columns of a ``length``-token batch, so they
        allow the same new tokens as plain ``generate``; returns the total length generation may reach."""
        fallback = self.model.generation_config  # what generate fills unset values from
        min_length = config.min_length if config.min_length is not None else fallback.min_length
        if min_length:
            config.min_length = min_length + added
        if config.max_new_tokens is not None:
            return length + int(config.max_new_tokens)
        max_length = config.max_length if config.max_length is not None else fallback.max_length
        if max_length is None:  # generate's model-agnostic default, in new tokens
            return length + self._default_new_tokens(config, length - added)
        if max_length <= length - added:
            raise InvalidArgumentError(f"the prompt has {length - added} tokens, not fewer than the generation "
                                       f"config's max_length={max_length}", "pass max_new_tokens")
        config.max_length = max_length + added
        return int(config.max_length)

    @staticmethod
    def _default_new_tokens(config: GenerationConfig, prompt_length: int) -> int:
        """Set ``max_new_tokens`` to what plain ``generate`` makes without any length (20 new tokens), with its
        warning worded for the prompt without its bucket padding (``generate`` would count the padding)."""
        warnings.warn(f"Using the model-agnostic default `max_length` (={prompt_length + _DEFAULT_MAX_LENGTH}) to "
                      "control the generation length. We recommend setting `max_new_tokens` to control the maximum "
                      "length of the generation.", UserWarning, stacklevel=4)
        config.max_new_tokens = _DEFAULT_MAX_LENGTH
        return _DEFAULT_MAX_LENGTH

    def _tokenizer(self) -> PreTrainedTokenizerBase:
        if self.tokenizer is None:
            raise InvalidArgumentError("this FastGenerator has no tokenizer",
                                       "pass one to prepare_fast(model, tokenizer) to generate replies")
        return self.tokenizer

    def generate_replies(
        self, conversations: Sequence[Conversation], *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        **generate_kwargs: Any,
    ) -> list[str]:
        """:func:`qwen_docs_helpers.chat.generate_replies` on the fast path."""
        validate_batch(conversations)
        validate_reply_kwargs(generate_kwargs, self.model)
        tokenizer = self._tokenizer()
        inputs = encode_chat(tokenizer, conversations).to(self.model.device)
        output = self.generate(inputs["input_ids"], inputs["attention_mask"],
                               max_new_tokens=validate_max_new_tokens(max_new_tokens), **generate_kwargs)
        sequences = getattr(output, "sequences", output)
        return tokenizer.batch_decode(sequences[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def reply(self, messages: Conversation, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
              **generate_kwargs: Any) -> str:
        """:func:`qwen_docs_helpers.chat.reply` on the fast path."""
        validate_messages(messages)
        return self.generate_replies([messages], max_new_tokens=max_new_tokens, **generate_kwargs)[0]


@contextlib.contextmanager
def use_implementations(model: PreTrainedModel, attention: str | None, experts: str | None) -> Iterator[None]:
    """Run with these attention and experts implementations (``None``: keep the model's), then switch back."""
    attention_before: str | None = model.config._attn_implementation
    experts_before = model.get_experts_implementation() if experts else None
    # A loaded model always records its implementation; without one there would be nothing to switch back to.
    switch_to = attention if attention_before is not None and attention_before != attention else None
    try:
        if switch_to is not None:
            model.set_attn_implementation(switch_to)
        if experts is not None:
            model.set_experts_implementation(experts)
        yield
    finally:
        if switch_to is not None and attention_before is not None:
            model.set_attn_implementation(attention_before)
        if experts_before is not None:
            model.set_experts_implementation(experts_before)


def _size(count: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count / 2**10:.1f} KiB"


def _has_experts(model: PreTrainedModel) -> bool:
    """Whether the model has experts whose implementation transformers can switch (Qwen2-MoE does)."""
    can_set = getattr(model, "_can_set_experts_implementation", None)
    return bool(can_set and can_set() and any(v is not None for v in model.get_experts_implementation().values()))


#: The short way to make a :class:`FastGenerator` (the same class): ``prepare_fast(model, tokenizer)``.
prepare_fast = FastGenerator
