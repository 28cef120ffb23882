"""transformers' Markdown docstrings become reST with one parameter list (sphinx/hf_docstrings.py)."""

from __future__ import annotations

from qwen_docs_helpers.sphinx.hf_docstrings import transformers_docstring

DOCSTRING = '''The model's forward pass, see [`~generation.GenerationMixin.generate`].

Args:
    input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
        Indices of input sequence tokens. [What are input IDs?](../glossary#input-ids)
    use_cache (`bool`, *optional*):
        Whether to return the [key/value cache](https://huggingface.co/docs/kv).

Example:

```python
>>> model = AutoModel.from_pretrained("some/placeholder")
```
'''.splitlines()


def forward(input_ids: object = None, use_cache: bool | None = None) -> None:
    """Stands in for a transformers method."""


def _convert(name: str) -> list[str]:
    lines = list(DOCSTRING)
    transformers_docstring(None, "method", name, forward, None, lines)  # type: ignore[arg-type]
    return lines


def test_args_become_one_parameter_field_each_with_reST_literals() -> None:
    text = "\n".join(_convert("transformers.Qwen2Model.forward"))
    assert "Args:" not in text
    assert text.count(":param input_ids:") == 1 and text.count(":param use_cache:") == 1
    assert ":type input_ids: ``torch.LongTensor`` of shape ``(batch_size, sequence_length)``, *optional*" in text
    assert "see ``generate``." in text  # a doc-builder reference, as a literal
    assert "`key/value cache <https://huggingface.co/docs/kv>`__" in text
    assert "What are input IDs?" in text and "../glossary" not in text  # a link to a page we lack: its text


def test_examples_that_did_not_run_are_dropped() -> None:
    text = "\n".join(_convert("transformers.Qwen2Model.forward"))
    assert "placeholder" not in text and "Example" not in text


def test_other_docstrings_are_left_alone() -> None:
    assert _convert("qwen_docs_helpers.loading.load_model") == DOCSTRING
