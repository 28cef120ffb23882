"""Hub-cache entries for tests: the smallest model id, and 'real' weights in a user's cache.

Plain helpers (not fixtures), imported as ``from hub_fixtures import ...`` by test modules here and below:
pytest puts ``tests/`` on ``sys.path`` for its ``conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

from qwen_docs_helpers import standins
from qwen_docs_helpers.standins import STANDIN_MARKER, repo_folder_name

SMALL_ID = "Qwen/Qwen2-1.5B-Instruct"  # the smallest stand-in (tied embeddings)


def make_real_snapshot(user_cache: Path, model_id: str, *, safetensors: bool = True) -> Path:
    """A user's hub-cache entry holding 'real' (unmarked) weights for ``model_id``."""
    from transformers import AutoModelForCausalLM

    revision = "0" * 40
    snapshot = user_cache / repo_folder_name(model_id) / "snapshots" / revision
    config = standins.standin_config(model_id)
    delattr(config, STANDIN_MARKER)
    model = AutoModelForCausalLM.from_config(config)
    if safetensors:
        model.save_pretrained(snapshot)
    else:
        import torch

        snapshot.mkdir(parents=True)
        config.save_pretrained(snapshot)
        torch.save(model.state_dict(), snapshot / "pytorch_model.bin")
    (snapshot.parents[1] / "refs").mkdir(parents=True)
    (snapshot.parents[1] / "refs" / "main").write_text(revision)
    return snapshot
