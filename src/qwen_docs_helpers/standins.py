"""Offline stand-in checkpoints in a private Hugging Face cache.

The site executes ``from_pretrained("Qwen/Qwen2-7B-Instruct")`` exactly as users write it. Without a hub,
that call needs a hub-cache entry for the id: this module writes one per model id into a *private* cache
(never the user's own), holding either a link to real weights found in the user's cache or a stand-in:
the real tokenizer, architecture class and generation config with tiny random weights, marked in its
config so code can tell it from the real thing. Its output rows are set so that what it generates is
everyday words in random order (``data/standin_words.txt``), never the rest of the 151k-token vocabulary.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import InvalidArgumentError, QwenDocsError
from .published import (
    known_model_ids,
    no_recipe,
    published_config,
    published_eos_token,
    published_generation_config,
)

if TYPE_CHECKING:  # torch and transformers load lazily: setting HF_HUB_CACHE after importing this module works
    from transformers import PretrainedConfig

#: Key in a stand-in's ``config.json`` that marks it as random weights.
STANDIN_MARKER = "qwen_docs_standin"
#: Bump when stand-ins change shape or weights, so stale ones are rebuilt (2: output drawn from benign words).
STANDIN_VERSION = 2
#: Model ids with a stand-in recipe (``published_configs.json``); all are created by default.
DEFAULT_MODEL_IDS = known_model_ids()

WeightsSource = Literal["real", "standin"]

#: Sizes that make a stand-in tiny while keeping the architecture's shape (GQA ratio, MoE routing).
_DENSE_SIZES = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "max_window_layers": 2}
_MOE_SIZES = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 4, "max_window_layers": 2,
              "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
              "shared_expert_intermediate_size": 64}


@dataclass(frozen=True)
class Resolved:
    """Where a model id resolves in the private cache, and to what."""

    model_id: str
    weights: WeightsSource
    snapshot: Path

    @property
    def revision(self) -> str:
        """The commit of the weights (a hub snapshot is named by it): a new download of real weights is a new one."""
        return self.snapshot.name


#: Overrides where the private cache is, for the site build and the ``qwen-docs`` command alike.
CACHE_VARIABLE = "QWEN_DOCS_CACHE"


def checkout_root(start: Path) -> Path | None:
    """The qwen-docs checkout holding ``start`` (the nearest folder with ``docs/conf.py`` and
    ``src/qwen_docs_helpers/``), if ``start`` is inside one."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / "docs" / "conf.py").is_file() and (folder / "src" / "qwen_docs_helpers").is_dir():
            return folder
    return None


def default_cache_dir(start: Path | None = None) -> Path:
    """The private cache: ``$QWEN_DOCS_CACHE``; else ``.cache/qwen-docs`` of the checkout holding ``start`` (default:
    the current directory), where the site build keeps its stand-ins; else ``~/.cache/qwen-docs``
    (``$XDG_CACHE_HOME/qwen-docs``).

    One rule for the build and the command line, so ``qwen-docs env`` and ``qwen-docs standins`` see the cache
    the build made; outside a checkout there is no build to share with, and the user's cache folder is
    the place that does not depend on where the command happens to run.
    """
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE]).expanduser().resolve()
    root = checkout_root(start or Path.cwd())
    parent = root / ".cache" if root else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return (parent / "qwen-docs").resolve()


def hub_dir(cache_dir: Path | None = None) -> Path:
    """The hub-cache folder to point ``HF_HUB_CACHE`` at."""
    return (cache_dir or default_cache_dir()) / "hub"


def same_folder(a: Path, b: Path) -> bool:
    """Whether two paths name the same folder (after ``~`` and links are resolved)."""
    return a.expanduser().resolve() == b.expanduser().resolve()


def default_user_hub_caches() -> list[Path]:
    """Where the user's real hub cache lives when ``HF_HUB_CACHE`` is not set: ``$HF_HOME/hub`` and the default."""
    env = os.environ
    default = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface" / "hub"
    homes = [Path(env["HF_HOME"]).expanduser() / "hub"] if env.get("HF_HOME") else []
    return [*homes, default.expanduser()]


def user_hub_cache(private: Path | None = None) -> Path:
    """The user's own hub cache as huggingface_hub would pick it, ignoring our private one.

    ``HF_HUB_CACHE`` is skipped when it is the ``private`` hub (default :func:`hub_dir`), as it is once the
    user exports what ``qwen-docs standins`` prints; ``$QWEN_DOCS_REAL_HUB_CACHE`` overrides everything.
    """
    env = os.environ
    if env.get("QWEN_DOCS_REAL_HUB_CACHE"):
        return Path(env["QWEN_DOCS_REAL_HUB_CACHE"]).expanduser()
    explicit = env.get("HF_HUB_CACHE")
    if explicit and not same_folder(Path(explicit), private or hub_dir()):
        return Path(explicit).expanduser()
    return default_user_hub_caches()[0]


def repo_folder_name(model_id: str) -> str:
    """The hub cache's folder name for a model repo (``models--Org--Name``)."""
    return "models--" + model_id.replace("/", "--")


def standin_config(model_id: str) -> PretrainedConfig:
    """The published config with tiny sizes and the stand-in marker, output rows untied from the input
    embeddings (Qwen2-1.5B ties them) so that :func:`favour_benign_tokens` can zero rows without zeroing prompts."""
    sizes = _MOE_SIZES if published_config(model_id).model_type == "qwen2_moe" else _DENSE_SIZES
    marker = {STANDIN_MARKER: {"of": model_id, "version": STANDIN_VERSION}}
    return published_config(model_id, **sizes, **marker, dtype="bfloat16", tie_word_embeddings=False)


def is_standin(config: PretrainedConfig | dict[str, Any]) -> bool:
    """Whether a model config (object or ``config.json`` dict) belongs to a stand-in."""
    values = config if isinstance(config, dict) else config.to_dict()
    return STANDIN_MARKER in values


class UnreadableEntryError(InvalidArgumentError):
    """A hub-cache file (``refs/main``, ``config.json``, the shard index) cannot be read or is not what it should be;
    ``path`` is that file, and the message names it."""

    def __init__(self, problem: str, fix: str, path: Path | None = None) -> None:
        super().__init__(problem, fix)
        self.path = path

    def __reduce__(self) -> tuple[type[QwenDocsError], tuple[object, ...]]:
        return type(self), (self.problem, self.fix, self.path)


def _unreadable(path: Path, error: Exception | str) -> UnreadableEntryError:
    reason = error if isinstance(error, str) else getattr(error, "strerror", None) or str(error)
    return UnreadableEntryError(
        f"{path} cannot be read ({reason})",
        "run `qwen-docs standins` to rebuild a stand-in or link of the private cache; in another cache, delete "
        "that model's models--... folder and download it again",
        path,
    )


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a cache file, or :class:`UnreadableEntryError` naming the file."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _unreadable(path, error) from error
    if not isinstance(value, dict):
        raise _unreadable(path, f"a JSON {type(value).__name__}, not an object")
    return value


def _snapshot(repo: Path) -> Path | None:
    """The snapshot ``refs/main`` points at, if the repo folder holds a complete one.

    Raises :class:`UnreadableEntryError` naming the file when ``refs/main``, ``config.json`` or the shard index
    cannot be read."""
    ref = repo / "refs" / "main"
    if not ref.is_file():
        return None
    try:
        revision = ref.read_text().strip()
    except (OSError, ValueError) as error:
        raise _unreadable(ref, error) from error
    if not revision or "/" in revision or revision in {".", ".."}:
        raise _unreadable(ref, f"{revision!r} is not a revision")
    snapshot = repo / "snapshots" / revision
    if not (snapshot / "config.json").is_file():
        return None
    _read_json(snapshot / "config.json")
    index = snapshot / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(shard, str) for shard in weight_map.values()):
            raise _unreadable(index, "no weight_map of tensor names to shard files")
        complete = all((snapshot / shard).is_file() for shard in set(weight_map.values()))
    else:
        complete = (snapshot / "model.safetensors").is_file()
    return snapshot if complete else None


def find_real_snapshot(model_id: str, cache: Path | None = None) -> Path | None:
    """A complete snapshot of real safetensors weights for ``model_id`` in the user's cache, if any.

    A file of that entry that cannot be read raises :class:`UnreadableEntryError` naming it (the user's cache is
    never modified): silently building a stand-in instead would put random text where real weights were meant.
    """
    repo = (cache or user_hub_cache()) / repo_folder_name(model_id)
    try:
        snapshot = _snapshot(repo)
    except UnreadableEntryError as error:
        raise UnreadableEntryError(
            error.problem,
            f"your Hugging Face cache's copy of {model_id} is damaged (it is left as it is): delete {repo} and "
            f"download it again (hf download {model_id}), or pass --no-real (use_real=False) to use a stand-in",
            error.path,
        ) from error
    if snapshot is None or is_standin(_read_json(snapshot / "config.json")):
        return None
    return snapshot


def resolve(model_id: str, cache_dir: Path | None = None) -> Resolved | None:
    """What ``model_id`` resolves to in the private cache now (``None`` when it is missing or incomplete)."""
    return resolve_in_hub(model_id, hub_dir(cache_dir))


def resolve_in_hub(model_id: str, hub: Path) -> Resolved | None:
    """What ``model_id`` resolves to in any hub cache folder (``None`` when missing, incomplete or stale).

    Raises :class:`UnreadableEntryError` naming the file when one of the entry's files cannot be read."""
    snapshot = _snapshot(hub / repo_folder_name(model_id))
    if snapshot is None:
        return None
    config = _read_json(snapshot / "config.json")
    if not is_standin(config):
        return Resolved(model_id, "real", snapshot)
    marker = config[STANDIN_MARKER]
    if not isinstance(marker, dict) or marker.get("version") != STANDIN_VERSION:
        return None
    return Resolved(model_id, "standin", snapshot)


@cache
def _shared_tokenizer() -> Any:
    """One tokenizer build (~4 s) per process, however many stand-ins are written."""
    from .tokenizer import build_qwen2_tokenizer

    return build_qwen2_tokenizer()


def _seed(model_id: str) -> int:
    return int.from_bytes(hashlib.sha256(model_id.encode()).digest()[:4], "little")


def write_standin_snapshot(model_id: str, target: Path, tokenizer: object | None = None) -> None:
    """Write a stand-in checkpoint (weights, config, generation config, tokenizer) into ``target``."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    tok: Any = tokenizer or _shared_tokenizer()
    config = standin_config(model_id)
    torch.manual_seed(_seed(model_id))  # same id, same weights: pages stay stable between builds
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    favour_benign_tokens(model, benign_token_ids(tok))
    model.generation_config = GenerationConfig(**published_generation_config(model_id))
    with _quiet_progress():
        model.save_pretrained(target)
    tok.eos_token = published_eos_token(model_id)
    tok.save_pretrained(target)
    for weights in target.glob("*.safetensors"):  # safetensors writes through a 0600 temporary file
        weights.chmod(0o666 & ~_umask())  # the checkpoint's other files follow the umask: so do the weights


#: What the final norm's weight is multiplied by, which multiplies every logit: at 80 the benign tokens'
#: logits stand so far above the others' (zero) that greedy, top-k and even full-vocabulary sampling pick
#: benign tokens (measured: the other 151k tokens keep about 1e-6 of the probability at most).
_BENIGN_LOGIT_SCALE = 80.0
#: Punctuation the noise may use besides words, so it reads as random text rather than one long list.
_BENIGN_PUNCTUATION = (",", ".")


def benign_words() -> list[str]:
    """The neutral English words of ``data/standin_words.txt``: random output must never show a reader an
    offensive word, and the whole 151k-token vocabulary holds some."""
    text = (resources.files("qwen_docs_helpers") / "data" / "standin_words.txt").read_text(encoding="utf8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def benign_token_ids(tokenizer: Any) -> list[int]:
    """Token ids of the benign words (each with its leading space, as one token) and of the punctuation."""
    vocab = tokenizer.get_vocab()
    tokens = ["\u0120" + word for word in benign_words()] + list(_BENIGN_PUNCTUATION)  # \u0120 (Ġ): a leading space
    missing = [token.removeprefix("\u0120") for token in tokens if token not in vocab]
    if missing:
        raise InvalidArgumentError(f"not one token of this tokenizer: {', '.join(missing)}",
                                   "use a Qwen2 tokenizer, or replace those words in data/standin_words.txt")
    return sorted(vocab[token] for token in tokens)


def favour_benign_tokens(model: Any, token_ids: Sequence[int]) -> None:
    """Make a random model's next token one of ``token_ids`` in the weights themselves, so the page's code needs
    no logits processor: every other output row becomes zero and the final norm's scale multiplies all logits.
    The output rows must not be the input embeddings (``tie_word_embeddings``), or the prompt would be zeroed."""
    import torch

    if not token_ids:
        raise InvalidArgumentError("no benign token ids were given", "pass the ids of the words stand-ins may output")
    rows = model.get_output_embeddings().weight
    if rows is model.get_input_embeddings().weight:
        raise InvalidArgumentError("the model ties its output rows to its input embeddings",
                                   "build it from a config with tie_word_embeddings=False")
    others = torch.ones(rows.shape[0], dtype=torch.bool)
    others[list(token_ids)] = False
    with torch.no_grad():
        rows[others] = 0
        model.model.norm.weight *= _BENIGN_LOGIT_SCALE


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """Keep transformers' shard-writing progress bar out of our own progress lines."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _revision(model_id: str, version: int = STANDIN_VERSION) -> str:
    return hashlib.sha1(f"{model_id}:standin:{version}".encode()).hexdigest()


def _standin_revisions(entry: Path) -> set[str]:
    """The snapshot names this tool gives stand-ins of the entry's model id (every format version so far)."""
    model_id = entry.name.removeprefix("models--").replace("--", "/")
    return {_revision(model_id, version) for version in range(1, STANDIN_VERSION + 1)}


@contextlib.contextmanager
def _locked(hub: Path) -> Iterator[None]:
    """One writer at a time per private cache (two builds starting together wait for each other)."""
    hub.mkdir(parents=True, exist_ok=True)
    with open(hub / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _replace_atomically(staging: Path, final: Path) -> None:
    """Swap ``staging`` in for ``final``: readers see the old entry or the new one, never half of one."""
    trash = final.with_name(f".old-{final.name}-{os.getpid()}")
    if final.is_symlink() or final.exists():
        final.rename(trash)
    staging.rename(final)
    if trash.is_symlink():
        trash.unlink()
    elif trash.exists():
        shutil.rmtree(trash)


_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack"}


def _is_standin_snapshot(snapshot: Path) -> bool:
    """Whether a snapshot folder's ``config.json`` carries the stand-in marker."""
    try:
        return is_standin(json.loads((snapshot / "config.json").read_text()))
    except (OSError, ValueError):
        return False


def replaceable(entry: Path) -> bool:
    """Whether a private-cache entry may be replaced: missing, a link (to real weights), or a folder with no
    weights but stand-ins (marked in their config, or in a snapshot named as this tool names them; e.g. one left
    by an older crashed run). Hub downloads (``blobs/``) and any other
    weights are never replaced, so nothing that this tool did not write is ever deleted."""
    if entry.is_symlink() or not entry.exists():
        return True
    if not entry.is_dir() or any((entry / "blobs").glob("*")):
        return False
    revisions = _standin_revisions(entry)  # ours even when its config.json was damaged
    ours = {
        snapshot for snapshot in (entry / "snapshots").glob("*")
        if snapshot.name in revisions or _is_standin_snapshot(snapshot)
    }
    return not any(path.suffix in _WEIGHT_SUFFIXES and ours.isdisjoint(path.parents) for path in entry.rglob("*"))


def _refuse_user_cache(hub: Path, real_cache: Path) -> None:
    """Refuse a private hub that is the user's own hub cache, where entries would replace real downloads."""
    for user_hub in (real_cache, user_hub_cache(hub), *default_user_hub_caches()):
        if same_folder(hub, user_hub):
            raise InvalidArgumentError(
                f"the private cache's hub folder {hub} is your own Hugging Face hub cache",
                "pass another --cache-dir (or $QWEN_DOCS_CACHE), e.g. ./.cache/qwen-docs: real weights found in "
                "your cache are linked from there",
            )


def _link_real(real: Path, final: Path, current: Resolved | None) -> None:
    """Point ``final`` at the user's repo folder holding ``real`` (unless it already does)."""
    if current and current.weights == "real" and current.snapshot.resolve() == real.resolve():
        return
    staging = final.with_name(f".staging-{os.getpid()}-link")
    staging.symlink_to(real.parent.parent.resolve(), target_is_directory=True)
    _replace_atomically(staging, final)


def _umask() -> int:
    """This process's umask (reading it means setting it: put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_standin(model_id: str, final: Path) -> None:
    """Build a stand-in in a staging folder and rename it into place (nothing half-written is left)."""
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=final.parent))
    revision = _revision(model_id)
    try:
        write_standin_snapshot(model_id, staging / "snapshots" / revision, _shared_tokenizer())
        (staging / "refs").mkdir()
        (staging / "refs" / "main").write_text(revision)
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700; the rest of the cache follows the umask
        _replace_atomically(staging, final)
    except BaseException:  # interrupted or failed: drop the half-written copy, keep the old entry
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _prepare_one(model_id: str, hub: Path, real_cache: Path, use_real: bool, force: bool,
                 say: Callable[[str], None]) -> Resolved:
    """Link real weights for ``model_id``, or (re)build its stand-in, or keep what is there; what it resolves to.

    ``say`` reports progress."""
    final = hub / repo_folder_name(model_id)
    try:
        current = resolve_in_hub(model_id, hub)
        unreadable = None
    except UnreadableEntryError as error:  # counts as incomplete: rebuilt below if it is ours to replace
        current, unreadable = None, error
    if not replaceable(final):
        if use_real and current is not None and current.weights == "real":
            say(f"{model_id}: real weights already in the private cache at {current.snapshot}, kept")
            return current
        if unreadable is not None:
            raise InvalidArgumentError(
                f"{unreadable.problem}, in {final}, which holds weights qwen-docs did not write",
                "it is never replaced or deleted: fix or delete that file (or the folder), or pass another --cache-dir",
            )
        raise InvalidArgumentError(
            f"{final} holds weights qwen-docs did not write (downloaded into the private cache?) and cannot be used",
            "it is never replaced or deleted: move it into your own hub cache, or pass another --cache-dir",
        )
    if unreadable is not None:
        say(f"{model_id}: {unreadable.problem}; replacing the entry")
    real = find_real_snapshot(model_id, real_cache) if use_real else None
    if real is not None:
        _link_real(real, final, current)
        say(f"{model_id}: real weights from {real}")
    elif force or current is None or current.weights != "standin":
        say(f"{model_id}: building stand-in")
        _write_standin(model_id, final)
    else:
        say(f"{model_id}: stand-in up to date")
    resolved = resolve_in_hub(model_id, hub)
    if resolved is None:  # pragma: no cover - would mean the rename above lost data
        raise RuntimeError(f"{model_id}: private cache entry at {final} is incomplete after writing")
    return resolved


def prepare_hub(
    model_ids: Iterable[str] = DEFAULT_MODEL_IDS,
    *,
    cache_dir: Path | None = None,
    real_cache: Path | None = None,
    use_real: bool = True,
    force: bool = False,
    progress: Callable[[str], None] = print,
) -> list[Resolved]:
    """Make every model id loadable offline from the private cache, preferring real weights.

    Real weights (a complete safetensors snapshot in the user's cache) are linked, read-only; other ids
    get a stand-in. Entries are built in a staging folder and renamed into place, so an interrupted run
    leaves no half-written checkpoint behind, and a lock serialises concurrent runs. Only links and
    stand-ins this tool wrote are ever replaced (:func:`replaceable`); a private cache that is the user's
    own hub cache raises :class:`~qwen_docs_helpers.errors.InvalidArgumentError`.
    """
    model_ids = list(dict.fromkeys(model_ids))
    unknown = [m for m in model_ids if m not in known_model_ids()]
    if unknown:
        raise ValueError(f"{no_recipe(*unknown)}; ids with one: {', '.join(known_model_ids())}")
    hub = hub_dir(cache_dir)
    real_cache = (real_cache or user_hub_cache(hub)).expanduser().resolve()
    _refuse_user_cache(hub, real_cache)
    results: list[Resolved] = []
    with _locked(hub):
        for done, model_id in enumerate(model_ids, start=1):
            def say(line: str, prefix: str = f"[{done}/{len(model_ids)}] ") -> None:
                progress(prefix + line)

            results.append(_prepare_one(model_id, hub, real_cache, use_real, force, say))
    return results


def offline_env(cache_dir: Path | None = None) -> dict[str, str]:
    """Environment variables that make transformers load from the private cache, offline."""
    return {"HF_HUB_CACHE": str(hub_dir(cache_dir)), "HF_HUB_OFFLINE": "1"}


def export_line(cache_dir: Path | None = None) -> str:
    """The shell line that sets :func:`offline_env`, as ``qwen-docs standins`` prints it for the user to run."""
    return "export " + " ".join(f"{key}={shlex.quote(value)}" for key, value in offline_env(cache_dir).items())
