"""Build-time environment of the site: every model id the pages load resolves offline.

Runs once per build, before any page executes: it links real weights where the user's hub cache has
them and creates stand-ins for the rest, then points the kernel's environment at that private cache.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.util import logging

from ..published import known_model_ids
from ..sitebuild import WEIGHTS_CHOICES, WEIGHTS_VARIABLE, one_of
from ..standins import Resolved, default_cache_dir, find_real_snapshot, offline_env, prepare_hub

logger = logging.getLogger(__name__)

#: Environment the executing kernel inherits: offline hub and no progress bars in cell outputs.
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # tqdm.auto warns on import in a kernel without ipywidgets; the bars themselves are disabled above.
    "PYTHONWARNINGS": "ignore:IProgress not found",
}


def use_real_weights(choice: str | None, has_cuda: bool) -> bool:
    """Whether real weights found in the user's hub cache are used: ``auto`` (the default) uses them where a
    CUDA GPU can run them and not on a CPU (Qwen2-7B in bf16 is 15 GB per copy and minutes per cell there),
    ``real`` always, ``standin`` never (``choice`` is ``QWEN_DOCS_WEIGHTS``)."""
    choice = one_of(WEIGHTS_VARIABLE, choice, WEIGHTS_CHOICES)  # a SettingError (ConfigError) when bad
    return choice == "real" or (choice == "auto" and has_cuda)


def prepare_models(app: Sphinx, config: Config) -> None:
    """Resolve every model id the site uses, then export the offline environment for the kernel."""
    if not config.qwen_docs_prepare_models:
        return
    import torch

    # qwen_docs_cache_dir (conf.py, -D), else $QWEN_DOCS_CACHE, else the checkout's .cache/qwen-docs: where
    # `qwen-docs standins` and `qwen-docs env` look too
    cache_dir = Path(config.qwen_docs_cache_dir) if config.qwen_docs_cache_dir else default_cache_dir(Path(app.confdir))
    model_ids = config.qwen_docs_models or known_model_ids()
    use_real = use_real_weights(os.environ.get(WEIGHTS_VARIABLE), torch.cuda.is_available())
    if not use_real:
        unused = [model_id for model_id in model_ids if find_real_snapshot(model_id)]
        if unused:
            logger.info(f"[qwen-docs] real weights in your hub cache not used on this build ({', '.join(unused)}): "
                        "stand-ins on a CPU unless QWEN_DOCS_WEIGHTS=real")
    resolved = prepare_hub(
        model_ids,
        cache_dir=cache_dir.resolve(),
        use_real=use_real,
        progress=lambda line: logger.info(f"[qwen-docs] {line}"),
    )
    os.environ.update(offline_env(cache_dir.resolve()))
    os.environ.update(QUIET_ENV)
    os.environ["IPYTHONDIR"] = str(kernel_profile(cache_dir.resolve() / "ipython"))
    if app.parallel > 1 and "OMP_NUM_THREADS" not in os.environ:
        # one kernel per parallel reader: torch's default threads per kernel would oversubscribe the cores
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // app.parallel))
    summary = weights_signature(resolved)
    logger.info(f"[qwen-docs] weights for this build: {summary}")
    if config.nb_execution_cache_path:
        # Outputs cached on one runtime must not be shown as if they ran on another.
        key = runtime_key(summary, data_digest(Path(app.confdir), config.qwen_docs_data_files))
        config.nb_execution_cache_path = str(Path(config.nb_execution_cache_path) / key)
        logger.info(f"[qwen-docs] execution cache for this runtime: {config.nb_execution_cache_path}")
        removed = prune_runtime_caches(Path(config.nb_execution_cache_path))
        if removed:
            logger.info(f"[qwen-docs] removed the execution caches of {len(removed)} older runtimes (keeping the "
                        f"{KEEP_RUNTIME_CACHES} used last)")


def weights_signature(resolved: Iterable[Resolved]) -> str:
    """Each model id's weights and their commit, ``id=real@<commit>``: part of the execution cache's key, so
    outputs of one download of real weights are never shown after a newer one (``hf download`` moved
    ``refs/main``), and the build's log names the commits it ran."""
    return ", ".join(f"{r.model_id}={r.weights}@{r.revision}" for r in resolved)


#: How many runtimes' execution caches a build keeps, its own included: every edit of the helpers and every
#: version change starts a new one, and the old ones would pile up unread.
KEEP_RUNTIME_CACHES = 8
_RUNTIME_CACHE_NAME = re.compile(r"(?:cpu|cuda)-[0-9a-f]{12}")  # what runtime_key names


def prune_runtime_caches(current: Path, keep: int = KEEP_RUNTIME_CACHES) -> list[Path]:
    """Mark ``current`` (this runtime's cache folder) as used now and delete the caches of other runtimes beyond
    the ``keep`` used last (by folder time); returns the deleted folders. Only folders named like
    :func:`runtime_key` are touched (a damaged cache moved aside is kept for inspection)."""
    current.mkdir(parents=True, exist_ok=True)
    os.utime(current)
    others = [path for path in current.parent.iterdir()
              if path.is_dir() and path != current and _RUNTIME_CACHE_NAME.fullmatch(path.name)]
    others.sort(key=lambda path: path.stat().st_mtime, reverse=True)
    removed = others[max(keep - 1, 0):]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def helpers_digest() -> str:
    """A hash of the helper package's code and data (every file but Python's bytecode), which the pages run: a
    new word list for the stand-ins changes what they print as much as new code does."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    files = (p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    for path in sorted(files):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


#: The kernels' own settings (``ipython_kernel_config.py`` of the build's IPython directory).
KERNEL_CONFIG = """\
# Written by qwen-docs for the kernels that execute the pages; rewritten on every build.
# ipykernel warns on every start over TCP (where kernel_sockets keeps it) that its sockets are unencrypted: noise.
c.IPKernelApp.log_level = "ERROR"
"""


def kernel_profile(folder: Path) -> Path:
    """A build-private IPython directory for the kernels (``IPYTHONDIR``): the maintainer's own IPython startup
    files and settings do not run in the pages, and the kernels start quietly (:data:`KERNEL_CONFIG`)."""
    profile = folder / "profile_default"
    profile.mkdir(parents=True, exist_ok=True)
    config = profile / "ipython_kernel_config.py"
    if not config.is_file() or config.read_text() != KERNEL_CONFIG:
        config.write_text(KERNEL_CONFIG)
    return folder


def data_digest(confdir: Path, patterns: list[str]) -> str:
    """A hash of the files the pages read (``qwen_docs_data_files``: globs, relative to the Sphinx source folder
    or absolute; ``**`` matches folders recursively).

    Cells that read a file (the speed page's benchmark results) show what it held when they ran; the
    execution cache cannot see a file change, since the cell's code stays the same.
    """
    digest = hashlib.sha256()
    found = {Path(name) for pattern in patterns for name in glob.glob(os.path.join(confdir, pattern), recursive=True)}
    for path in sorted(path for path in found if path.is_file()):
        name = os.path.relpath(path, confdir).replace(os.sep, "/")
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def runtime_key(weights: str, data: str = "") -> str:
    """A short name for what executes the pages: device, Python and library versions (exactly what the stamp
    prints: :meth:`~qwen_docs_helpers.runtime.Runtime.executed_on`), the helpers' code, the weights, and the
    digest of the data files the pages read (:func:`data_digest`).

    The execution cache is keyed on cell code only, so each runtime gets its own cache folder: a GPU runner
    with real weights never reuses outputs executed on a CPU with stand-ins, and an upgrade of torch or
    transformers (or anything else the stamp names), any change to qwen_docs_helpers (which the cells call), or a
    changed data file (new benchmark results) re-executes every page. A new cache folder also changes the
    configuration, so Sphinx reads every page again.
    """
    from ..runtime import describe_runtime

    runtime = describe_runtime(model_ids=())
    signature = f"{runtime.executed_on()}|helpers {helpers_digest()}|{weights}|data {data}"
    return f"{runtime.accelerator}-{hashlib.sha256(signature.encode()).hexdigest()[:12]}"


def setup(app: Sphinx) -> dict[str, object]:
    app.add_config_value("qwen_docs_prepare_models", True, "env", bool)
    app.add_config_value("qwen_docs_cache_dir", "", "env", str)
    app.add_config_value("qwen_docs_models", [], "env", list)
    app.add_config_value("qwen_docs_data_files", [], "env", list)
    app.connect("config-inited", prepare_models)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
