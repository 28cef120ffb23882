"""Published configurations of the Qwen checkpoints the site uses, readable offline.

Pages compute sizes (parameters, memory, active experts) from the real architectures, and stand-ins copy
everything but the sizes from them, so the values live in one data file shipped with the package.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PretrainedConfig


@cache
def _published() -> dict[str, dict[str, Any]]:
    text = (resources.files("qwen_docs_helpers") / "data" / "published_configs.json").read_text()
    return {key: value for key, value in json.loads(text).items() if not key.startswith("_")}


def known_model_ids() -> tuple[str, ...]:
    """Model ids whose published configuration ships with this package."""
    return tuple(_published())


def _entry(model_id: str) -> dict[str, Any]:
    try:
        return _published()[model_id]
    except KeyError:
        raise KeyError(
            f"no published configuration for {model_id!r}; known ids: {', '.join(known_model_ids())}"
        ) from None


def published_config(model_id: str, **overrides: Any) -> PretrainedConfig:
    """The model's real ``config.json`` as a transformers config (no download), with ``overrides``."""
    from transformers import AutoConfig

    values = {**_entry(model_id)["config"], **overrides}
    return AutoConfig.for_model(values.pop("model_type"), **values)


def published_generation_config(model_id: str) -> dict[str, Any]:
    """The model's real ``generation_config.json`` values."""
    return dict(_entry(model_id)["generation_config"])


def published_eos_token(model_id: str) -> str:
    """The end-of-sequence token the model's tokenizer is published with."""
    return str(_entry(model_id)["eos_token"])
