"""Shared fixtures: tiny stand-in checkpoints in a private, offline hub cache.

huggingface_hub reads ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` once, when it is first imported, so they are
set here at import time, before any test module imports transformers. The cache lives in the repository's
ignored ``.cache/test-hub`` (``$QWEN_DOCS_TEST_CACHE`` overrides it) so that stand-ins built once (~4 s)
are reused by later runs; ``prepare_hub`` rebuilds them when their format version changes.
"""

from __future__ import annotations

import os
from pathlib import Path

TEST_CACHE = Path(
    os.environ.get("QWEN_DOCS_TEST_CACHE") or Path(__file__).resolve().parents[1] / ".cache" / "test-hub"
).resolve()
os.environ["HF_HUB_CACHE"] = str(TEST_CACHE / "hub")  # == standins.hub_dir(TEST_CACHE), checked below
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# The property tests check validation logic, not speed: on a loaded 2-core CI machine (or the first run of a
# fresh clone, while Hypothesis builds its Unicode tables) their timing checks failed on the machine, not the code.
settings.register_profile("qwen-docs", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("qwen-docs")

DENSE_ID = "Qwen/Qwen2-7B-Instruct"
MOE_ID = "Qwen/Qwen1.5-MoE-A2.7B-Chat"


@pytest.fixture(scope="session")
def accelerator() -> str:
    """What the runtime description must report on this machine: the whole suite also runs on GPU runners
    (.github/workflows/gpu-docs.yml), where a check for "cpu" would fail on correct code."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="session")
def hub_cache() -> Path:
    """The hub cache the tests run against (``HF_HUB_CACHE``)."""
    return TEST_CACHE / "hub"


@pytest.fixture(scope="session")
def standin_hub() -> dict[str, Path]:
    """Build (or reuse) the stand-ins the tests load; model id -> snapshot folder."""
    import huggingface_hub.constants
    import tqdm
    from transformers.utils import logging as hf_logging

    from qwen_docs_helpers.standins import offline_env, prepare_hub

    # Quiet loads, and no tqdm monitor thread coming and going under the streaming tests' thread counts.
    hf_logging.disable_progress_bar()
    tqdm.tqdm.monitor_interval = 0

    expected = offline_env(TEST_CACHE)
    constants = huggingface_hub.constants
    seen = {"HF_HUB_CACHE": constants.HF_HUB_CACHE, "HF_HUB_OFFLINE": constants.HF_HUB_OFFLINE}
    if seen["HF_HUB_CACHE"] != expected["HF_HUB_CACHE"] or not seen["HF_HUB_OFFLINE"]:
        pytest.fail(f"huggingface_hub was imported before tests/conftest.py set its environment ({seen}); "
                    "import it only inside tests or fixtures")
    resolved = prepare_hub([DENSE_ID, MOE_ID], cache_dir=TEST_CACHE, use_real=False, progress=lambda _: None)
    return {entry.model_id: entry.snapshot for entry in resolved}


def _load(model_id: str, dtype: torch.dtype) -> tuple:
    from qwen_docs_helpers.loading import load_model

    return load_model(model_id, dtype=dtype, device_map="cpu")


# Models are shared by the whole session: tests may patch attributes with monkeypatch but must not mutate them.
@pytest.fixture(scope="session")
def dense_fp32(standin_hub: dict[str, Path]) -> tuple:
    return _load(DENSE_ID, torch.float32)


@pytest.fixture(scope="session")
def dense_bf16(standin_hub: dict[str, Path]) -> tuple:
    return _load(DENSE_ID, torch.bfloat16)


@pytest.fixture(scope="session")
def moe_fp32(standin_hub: dict[str, Path]) -> tuple:
    return _load(MOE_ID, torch.float32)


@pytest.fixture(scope="session")
def moe_bf16(standin_hub: dict[str, Path]) -> tuple:
    return _load(MOE_ID, torch.bfloat16)
