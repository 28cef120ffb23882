"""Load a Qwen chat model and its tokenizer the way every page does, with failures that say what to do.

One call instead of the usual pair of ``from_pretrained`` calls so that the pages agree on the safe and
batch-ready defaults (safetensors only, no remote code, left padding, eval mode) and so that the common
failures (no weights offline, pickled weights, no FlashAttention, no bitsandbytes) end in one clear line.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import try_to_load_from_cache
from huggingface_hub.constants import is_offline_mode
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils.import_utils import is_flash_attn_2_available

from .errors import (
    AttentionUnavailableError,
    InvalidArgumentError,
    ModelNotAvailableError,
    QwenDocsError,
    UnsafeWeightsError,
)
from .keywords import explain_unknown_keywords
from .published import MODEL_ID_PATTERN, known_model_ids, likely_typo_of, no_recipe
from .quantization import Preset, bnb_config, require_quantization, say_int8_casts_once

__all__ = ["AttentionFallbackWarning", "choose_attention", "load_model"]

FLASH_ATTENTION_2 = "flash_attention_2"
FALLBACK_ATTENTION = "sdpa"


class AttentionFallbackWarning(UserWarning):
    """FlashAttention-2 was asked for but is unusable here, so SDPA is used instead."""


def _attention_policy(requested: str | None, strict: bool, flash_available: bool | None) -> tuple[str | None, str]:
    """The attention to load with, and a warning to give ('' for none)."""
    if requested != FLASH_ATTENTION_2:
        return requested, ""
    if flash_available is None:
        flash_available = is_flash_attn_2_available()
    if flash_available:
        return requested, ""
    problem = "attn_implementation='flash_attention_2' is unusable here (flash-attn is not installed or no CUDA GPU)"
    install = "pip install flash-attn --no-build-isolation on a CUDA machine"
    if strict:
        raise AttentionUnavailableError(problem, f"{install}, or pass attn_implementation='sdpa'")
    return FALLBACK_ATTENTION, f"{problem}: using 'sdpa' instead; {install}, or pass strict_attention=True to fail"


def choose_attention(requested: str | None, strict: bool = False, *, flash_available: bool | None = None) -> str | None:
    """The ``attn_implementation`` to load with, following the site's attention policy.

    - ``None`` stays ``None``: transformers picks its default, SDPA for Qwen2 and Qwen2-MoE.
    - ``"flash_attention_2"`` is kept when flash-attn is usable (``is_flash_attn_2_available()``: installed
      and a CUDA GPU). Otherwise it becomes ``"sdpa"`` with an :class:`AttentionFallbackWarning`, or, with
      ``strict=True``, raises :class:`AttentionUnavailableError`.
    - Anything else (``"sdpa"``, ``"eager"``, ...) is passed through for transformers to check.

    ``flash_available`` overrides the check (for tests and for what-if pages).
    """
    choice, warning = _attention_policy(requested, strict, flash_available)
    if warning:
        warnings.warn(warning, AttentionFallbackWarning, stacklevel=2)
    return choice


def _snapshot_folder(model_id: str, revision: str | None) -> Path | None:
    """The local folder holding ``model_id``'s files: the path itself, or its snapshot in the hub cache."""
    if Path(model_id).is_dir():
        return Path(model_id)
    try:
        cached = try_to_load_from_cache(model_id, "config.json", revision=revision)
    except ValueError:  # not a valid repo id: from_pretrained reports that better
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def _require_safetensors(model_id: str, revision: str | None) -> None:
    """Refuse a checkpoint that is known to have only pickled weights, before torch unpickles anything."""
    folder = _snapshot_folder(model_id, revision)
    if folder is None or any(folder.glob("*.safetensors")):
        return
    pickled = sorted(path.name for path in folder.glob("*.bin") if path.name.startswith("pytorch_model"))
    if pickled:
        raise UnsafeWeightsError(
            f"{model_id} has only pickled weights ({', '.join(pickled)}), which can run code when loaded",
            "convert to safetensors in a trusted environment (from_pretrained(path, use_safetensors=False)"
            ".save_pretrained(new_path) writes safetensors) and load new_path",
        )


def _looks_like_path(model_id: str, offline: bool) -> bool:
    """Whether a missing ``model_id`` was meant as a folder: it starts like a path or has more than one ``/``
    (offline, also a name without an ``owner/``, which Qwen's hub ids always have)."""
    if model_id.startswith((".", "/", "~")) or model_id.count("/") > 1:
        return True
    return offline and "/" not in model_id


#: The fix for a path that is not a checkpoint folder.
_FOLDER_FIX = "point at the folder save_pretrained wrote (it holds config.json), or pass a hub id such as " \
              "Qwen/Qwen2-7B-Instruct"


def _check_source(source: str) -> None:
    """Refuse an empty id, a file, or a folder without ``config.json`` before transformers reads it: its errors
    for these speak of model types and repo ids (or, for a file, of a missing folder)."""
    if not source.strip():
        raise InvalidArgumentError("the model id is empty", _FOLDER_FIX)
    path = Path(source)
    if path.is_file():
        raise ModelNotAvailableError(f"{path.resolve()} is a file, not a checkpoint folder", _FOLDER_FIX)
    if path.is_dir() and not (path / "config.json").is_file():
        raise ModelNotAvailableError(f"{path.resolve()} has no config.json, so it is not a checkpoint folder",
                                     _FOLDER_FIX)


def _check_device_map(device_map: object) -> None:
    """Refuse a device map naming CUDA where torch cannot use it (torch fails later, with a bare AssertionError
    when it was built without CUDA)."""
    places = device_map.values() if isinstance(device_map, dict) else [device_map]
    # a bare integer is an accelerator index, as in device_map=0 or {"": 0}
    cuda = [place for place in places if str(place).startswith("cuda") or type(place) is int]
    if not cuda or torch.cuda.is_available():
        return
    reason = "this torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
    raise InvalidArgumentError(f"device_map={device_map!r} asks for CUDA, but {reason}",
                               "pass device_map='auto' (a GPU when there is one, else the CPU) or device_map='cpu'")


def _private_standin(model_id: str, revision: str | None) -> str | None:
    """What the private cache of ``qwen-docs standins`` holds for ``model_id`` (``"real"``, ``"standin"``), when
    it is not the hub cache in use (and holds ``revision``, if one is asked for); else ``None``."""
    from huggingface_hub import constants

    from .standins import hub_dir, resolve, same_folder

    if same_folder(hub_dir(), Path(constants.HF_HUB_CACHE)):
        return None
    try:
        resolved = resolve(model_id)
    except QwenDocsError:  # a damaged entry: the load reports what it meets, `qwen-docs standins` repairs it
        return None
    if resolved is None or revision not in (None, "main", resolved.revision):
        return None
    return resolved.weights


def _hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the hub answers one request, made without huggingface_hub's retries (which take ~25 s to fail)."""
    from huggingface_hub import constants, get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception:  # connection, DNS, proxy or timeout errors (the HTTP library's classes vary by version)
        return False
    return True


def _use_private_cache(model_id: str, weights: str, why: str) -> ModelNotAvailableError:
    """The error that says to export what ``qwen-docs standins`` printed; ``why`` no download is possible."""
    from .standins import export_line

    return ModelNotAvailableError(
        f"{model_id} is not in the hub cache in use and {why}, but `qwen-docs standins` put it ({weights} weights) "
        "in its private cache",
        f"run `{export_line()}` (the line `qwen-docs standins` prints), then start Python again",
    )


def _unreachable_but_private(model_id: str, revision: str | None) -> ModelNotAvailableError | None:
    """Online, an id missing from the hub cache in use but in the private cache, with no hub to download it from:
    say so before from_pretrained retries for ~25 s and fails in 60 lines. With a hub, downloading goes ahead."""
    if is_offline_mode() or Path(model_id).exists() or _snapshot_folder(model_id, revision) is not None:
        return None
    weights = _private_standin(model_id, revision)
    if weights is None or _hub_reachable():
        return None
    return _use_private_cache(model_id, weights, "the hub cannot be reached")


def _cached_revisions(model_id: str) -> list[str]:
    """The commits and branch or tag names the hub cache in use holds ``model_id`` at (none when it holds none)."""
    from huggingface_hub import constants

    from .standins import repo_folder_name

    repo = Path(constants.HF_HUB_CACHE) / repo_folder_name(model_id)
    refs = [ref.relative_to(repo / "refs").as_posix() for ref in (repo / "refs").rglob("*") if ref.is_file()]
    snapshots = [snapshot.name for snapshot in (repo / "snapshots").glob("*") if snapshot.is_dir()]
    return sorted(refs) + sorted(snapshots)


def _revision_not_cached(model_id: str, revision: str) -> ModelNotAvailableError | None:
    """Offline, ``model_id`` is cached but not at ``revision``: name the revisions it is cached at (a commit
    abbreviated here is given in full, since only the hub can expand one); ``None`` when it is not cached at all,
    or is cached at ``revision`` (the load failed for another reason)."""
    cached = _cached_revisions(model_id)
    if not cached or revision in cached:
        return None
    problem = f"{model_id} is in the Hugging Face cache, but not at revision {revision!r}, and HF_HUB_OFFLINE=1 " \
              "forbids downloading it"
    expanded = [name for name in cached if len(revision) >= 4 and name.startswith(revision) and name != revision]
    if expanded:
        return ModelNotAvailableError(problem, f"offline, a commit must be given in full: pass revision="
                                               f"{expanded[0]!r}")
    return ModelNotAvailableError(
        problem,
        f"pass one it holds ({', '.join(repr(name) for name in cached)}), or run `hf download {model_id} --revision "
        f"{revision}` on a machine with hub access and copy the cache here",
    )


def _not_available(model_id: str, revision: str | None) -> ModelNotAvailableError | None:
    """The error for a missing folder, a likely typo of a known id, or an id missing from the cache offline (at
    ``revision``, when one is asked for; ``None``: keep transformers')."""
    if Path(model_id).is_dir():
        return None
    offline = is_offline_mode()
    if _looks_like_path(model_id, offline):
        return ModelNotAvailableError(
            f"no such folder: {Path(model_id).resolve()}",
            "check the path (a relative one starts at the current directory), or pass a hub id such as "
            "Qwen/Qwen2-7B-Instruct",
        )
    typo_of = likely_typo_of(model_id)
    if typo_of is not None:  # downloading advice would be for a model that does not exist
        where = "is not in the Hugging Face cache" if offline else "could not be loaded"
        return ModelNotAvailableError(f"{model_id} {where}", f"did you mean {typo_of}? (check the spelling)")
    if not offline:
        return None
    if revision is not None:
        missing_revision = _revision_not_cached(model_id, revision)
        if missing_revision is not None:
            return missing_revision
    weights = _private_standin(model_id, revision)
    if weights is not None:
        return _use_private_cache(model_id, weights, "HF_HUB_OFFLINE=1 forbids downloading it")
    pinned = f"{model_id} --revision {revision}" if revision is not None else model_id
    download = (f"run `hf download {pinned}` (older: `huggingface-cli download {pinned}`) on a machine with hub "
                "access and copy the cache here")
    if model_id in known_model_ids():
        standin = "or create stand-ins with `qwen-docs standins`"
    elif MODEL_ID_PATTERN.fullmatch(model_id):  # `qwen-docs standins` would refuse it: say what it needs first
        standin = f"or, for a stand-in: {no_recipe(model_id)}, then run `qwen-docs standins`"
    else:  # stand-ins are Qwen checkpoints only
        standin = ""
    return ModelNotAvailableError(
        f"{model_id} is not in the Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading it",
        f"{download}, {standin}" if standin else download,
    )


#: The dtypes weights can be loaded in; float8 and other storage-only types need a quantization config instead.
_LOAD_DTYPES = frozenset({torch.float32, torch.float16, torch.bfloat16, torch.float64})


def _check_dtype(dtype: object) -> str | torch.dtype:
    """``"auto"`` or a torch dtype of :data:`_LOAD_DTYPES`, given as such or by name (``"bfloat16"``)."""
    if isinstance(dtype, str) and dtype == "auto":
        return "auto"
    value = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(value, torch.dtype) or value not in _LOAD_DTYPES:
        raise InvalidArgumentError(f"dtype={dtype!r} is not a dtype load_model can load weights in",
                                   "pass 'auto', torch.bfloat16, torch.float16, torch.float32 or torch.float64 (or "
                                   "a name such as 'bfloat16'); for 8- or 4-bit weights pass quantization='int8' or "
                                   "'nf4'")
    return value


def _check_revision(source: str, revision: object) -> str | None:
    """``None`` or a non-empty revision name, for a hub id: a local folder holds one version, whatever is asked."""
    if revision is None:
        return None
    if not isinstance(revision, str) or not revision.strip():
        raise InvalidArgumentError(f"revision={revision!r} is not a branch, tag or commit name",
                                   "pass a commit hash, a branch or tag name such as 'main', or None for 'main'")
    if Path(source).is_dir():
        raise InvalidArgumentError(f"revision={revision!r} was given for the local folder {Path(source).resolve()}, "
                                   "which holds one version of the files",
                                   "drop revision=, or pass the hub id to load that revision from the hub cache")
    return revision


def _config(source: str, revision: str | None) -> Any:
    """The checkpoint's config, never running its code: custom code or an unknown ``model_type`` is one line."""
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=False, revision=revision)
    except ValueError as error:
        replacement = _unloadable_config(source, revision)
        if replacement is None:
            raise
        raise replacement from error


def _unloadable_config(source: str, revision: str | None) -> InvalidArgumentError | None:
    """Why transformers refused a config.json it read: custom code (``auto_map``) or a ``model_type`` it does not
    know (``None``: another reason, keep transformers' error)."""
    from transformers import CONFIG_MAPPING, PretrainedConfig, __version__

    try:
        values, _ = PretrainedConfig.get_config_dict(source, revision=revision)
    except (OSError, ValueError):
        return None
    model_type = values.get("model_type")
    if model_type in CONFIG_MAPPING:  # transformers knows the architecture: its error has another cause
        return None
    if "auto_map" in values:
        return InvalidArgumentError(
            f"{source} needs its own Python code to load (config.json has auto_map), and load_model never runs "
            "code from a checkpoint",
            "review that code; if you trust it, load the checkpoint with transformers yourself, allowing remote code",
        )
    if isinstance(model_type, str):
        return InvalidArgumentError(f"{source} has model_type {model_type!r}, which transformers {__version__} "
                                    "does not know", "pip install --upgrade transformers (newer models need a newer "
                                    "release), or load a checkpoint of an architecture it knows")
    return None


def _require_tokenizer(source: str, tokenizer: PreTrainedTokenizerBase, config: Any) -> None:
    """Refuse the near-empty tokenizer transformers builds for a folder without tokenizer files."""
    vocab_size = getattr(config.get_text_config(), "vocab_size", None)
    if vocab_size and len(tokenizer) < vocab_size // 2:
        raise ModelNotAvailableError(
            f"{source} has no tokenizer files (its tokenizer knows {len(tokenizer)} tokens, the model {vocab_size})",
            "save the tokenizer there too (tokenizer.save_pretrained(path))",
        )


def _quantization_config(
    quantization: Preset | BitsAndBytesConfig | None, model_type: str, dtype: str | torch.dtype
) -> BitsAndBytesConfig | None:
    if quantization is None:
        return None
    if isinstance(quantization, BitsAndBytesConfig):
        require_quantization("nf4" if quantization.load_in_4bit else "int8")
        return quantization
    if not isinstance(quantization, str):
        raise InvalidArgumentError(f"quantization={quantization!r} is not a preset name or a BitsAndBytesConfig",
                                   "pass 'nf4', 'int8', a BitsAndBytesConfig, or None")
    config = bnb_config(quantization, model_type=model_type,
                        compute_dtype=dtype if isinstance(dtype, torch.dtype) else torch.bfloat16)
    require_quantization(quantization)
    return config


#: What to pass instead of the ``from_pretrained`` options load_model does not take under their own names.
FROM_PRETRAINED_HINTS = {
    "torch_dtype": "torch_dtype is transformers 4's name for dtype: pass dtype= instead "
                   "(dtype='auto' keeps the checkpoint's)",
    "quantization_config": "pass the BitsAndBytesConfig as quantization=, or a preset: quantization='nf4' or 'int8'",
    "load_in_4bit": "pass quantization='nf4' (transformers 5 takes load_in_4bit only inside a BitsAndBytesConfig)",
    "load_in_8bit": "pass quantization='int8' (transformers 5 takes load_in_8bit only inside a BitsAndBytesConfig)",
    "trust_remote_code": "load_model never runs a checkpoint's own code; Qwen2 and Qwen2-MoE are built into "
                         "transformers",
    "use_safetensors": "load_model always loads safetensors, and refuses a checkpoint that has only pickled .bin "
                       "weights",
}


@explain_unknown_keywords(
    FROM_PRETRAINED_HINTS,
    "load_model takes {keywords}; for other from_pretrained options call AutoModelForCausalLM.from_pretrained "
    "and AutoTokenizer.from_pretrained(..., padding_side='left') yourself",
)
def load_model(
    model_id: str | os.PathLike[str],
    *,
    dtype: str | torch.dtype = "auto",
    device_map: str | dict[str, Any] | None = "auto",
    attn_implementation: str | None = None,
    strict_attention: bool = False,
    quantization: Preset | BitsAndBytesConfig | None = None,
    revision: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``model_id`` (hub id or local folder) and its tokenizer, ready for batched chat.

    - Weights come from safetensors only (``use_safetensors=True``) and remote code is never trusted; a
      checkpoint with only ``pytorch_model*.bin`` raises :class:`UnsafeWeightsError`.
    - Attention follows :func:`choose_attention`: ``None`` keeps transformers' default (SDPA);
      ``"flash_attention_2"`` falls back to ``"sdpa"`` with a warning when flash-attn is unusable, or raises
      :class:`AttentionUnavailableError` when ``strict_attention=True``.
    - ``quantization`` is a preset of :func:`~qwen_docs_helpers.quantization.bnb_config` (``"nf4"``,
      ``"int8"``; 4-bit compute runs in ``dtype`` when that is a torch dtype, else bfloat16) or a
      ``BitsAndBytesConfig``; :class:`QuantizationUnavailableError` when bitsandbytes cannot run here.
      With ``"int8"`` (or an 8-bit config) bitsandbytes' warning that it casts bfloat16 inputs to float16 is
      said once instead of at every matmul (:func:`~qwen_docs_helpers.quantization.say_int8_casts_once`).
    - ``dtype`` is ``"auto"`` (the checkpoint's) or torch.bfloat16, float16, float32 or float64, or its name.
    - ``revision`` pins a hub id to a commit (the one a page's stamp names), branch or tag, for the model and the
      tokenizer alike; ``None`` is ``"main"``. Offline, a commit must be given in full, and a revision the cache
      lacks raises :class:`ModelNotAvailableError` naming the ones it holds. A local folder takes none.
    - An empty id, a file, a folder without ``config.json``, a missing folder, a likely misspelling of a known
      id, an id missing from the cache offline (or online with no hub to reach while ``qwen-docs standins`` has it
      in its private cache: the error gives the ``export`` line), or a folder without tokenizer files raises
      :class:`ModelNotAvailableError` (:class:`InvalidArgumentError` for the empty id).
    - A checkpoint that needs its own code (``auto_map``) or has a ``model_type`` transformers does not know, or a
      ``device_map`` naming CUDA where torch has none, raises :class:`InvalidArgumentError`.
    - A keyword it does not take raises :class:`~qwen_docs_helpers.errors.UnknownArgumentError` naming what to pass
      instead (``dtype=`` for ``torch_dtype=``, ``quantization=`` for ``quantization_config=``, ...).

    The tokenizer pads on the left (decoder-only batches must end where generation starts); the model is
    returned in eval mode.
    """
    source = os.path.expanduser(os.fspath(model_id))
    _check_source(source)
    revision = _check_revision(source, revision)
    dtype = _check_dtype(dtype)
    _check_device_map(device_map)
    attention, warning = _attention_policy(attn_implementation, strict_attention, None)
    if warning:
        warnings.warn(warning, AttentionFallbackWarning, stacklevel=2)
    unreachable = _unreachable_but_private(source, revision)
    if unreachable is not None:
        raise unreachable
    try:
        config = _config(source, revision)
        _require_safetensors(source, revision)
        quantization_config = _quantization_config(quantization, config.model_type, dtype)
        tokenizer = AutoTokenizer.from_pretrained(source, padding_side="left", trust_remote_code=False,
                                                  revision=revision)
        _require_tokenizer(source, tokenizer, config)
        extra: dict[str, Any] = {}
        if attention is not None:
            extra["attn_implementation"] = attention
        if quantization_config is not None:
            extra["quantization_config"] = quantization_config
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, device_map=device_map, use_safetensors=True, trust_remote_code=False,
            revision=revision, **extra
        )
    except QwenDocsError:
        raise
    except OSError as error:
        replacement = _not_available(source, revision)
        if replacement is None:
            raise
        raise replacement from error
    if quantization_config is not None and quantization_config.load_in_8bit:
        say_int8_casts_once()
    model.eval()
    return model, tokenizer
