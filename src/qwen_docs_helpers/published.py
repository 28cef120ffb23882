"""Published configurations of the Qwen checkpoints the site uses, readable offline.

Pages compute sizes (parameters, memory, active experts) from the real architectures, and stand-ins copy
everything but the sizes from them, so the values live in one data file shipped with the package.
"""

from __future__ import annotations

import difflib
import json
import re
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PretrainedConfig


#: How a page names a Qwen model id: the stamp lists the ids a page names, and the build warns about any without a
#: recipe (``qwen_docs_helpers.sphinx.stamp``).
MODEL_ID_PATTERN = re.compile(r"Qwen/[A-Za-z0-9._-]+")
#: Where the recipes live in a checkout, as the messages about a missing one name it.
RECIPES_FILE = "src/qwen_docs_helpers/data/published_configs.json"


@cache
def _published() -> dict[str, dict[str, Any]]:
    text = (resources.files("qwen_docs_helpers") / "data" / "published_configs.json").read_text()
    return {key: value for key, value in json.loads(text).items() if not key.startswith("_")}


def known_model_ids() -> tuple[str, ...]:
    """Model ids whose published configuration ships with this package."""
    return tuple(_published())


def no_recipe(*model_ids: str) -> str:
    """The one line every message about ids without a published configuration ends in: what to add, and where
    (a stand-in can only copy a configuration that ships with the package)."""
    many = len(model_ids) > 1
    return (f"{', '.join(model_ids)} {'have' if many else 'has'} no stand-in recipe: add {'their' if many else 'its'} "
            f"config.json and generation_config.json to {RECIPES_FILE} in a checkout of qwen-docs (see its README)")


#: Numbers in a model id (``2``, ``7``, ``1.5``): ids that differ in one name another model, not a typo of it.
_NUMBERS = re.compile(r"\d+(?:\.\d+)?")


def likely_typo_of(model_id: str) -> str | None:
    """The known id ``model_id`` is most likely a misspelling of, else ``None``.

    Close in spelling (``difflib``, ignoring case), at most two characters longer or shorter, and with the same
    numbers: ``Qwen/Qwen2-0.5B-Instruct`` or ``Qwen/Qwen2-7B-Instruct-AWQ`` are other models on the hub, so
    advice to download them stays right, while ``Qwen/Qwen2-7B-Instrct`` exists nowhere.
    """
    by_folded = {known.lower(): known for known in known_model_ids()}
    folded = model_id.lower()
    if model_id in known_model_ids():
        return None
    for match in difflib.get_close_matches(folded, by_folded, n=3, cutoff=0.85):
        if abs(len(match) - len(folded)) <= 2 and _NUMBERS.findall(match) == _NUMBERS.findall(folded):
            return by_folded[match]
    return None


def _entry(model_id: str) -> dict[str, Any]:
    try:
        return _published()[model_id]
    except KeyError:
        raise KeyError(f"{no_recipe(model_id)}; known ids: {', '.join(known_model_ids())}") from None


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
