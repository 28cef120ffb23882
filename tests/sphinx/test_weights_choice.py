"""Which weights a build runs on: real ones from the user's hub cache on a GPU, stand-ins on a CPU unless asked."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from hub_fixtures import SMALL_ID, make_real_snapshot  # tests/ is on sys.path (its conftest.py)
from sphinx.errors import ConfigError

from qwen_docs_helpers.sphinx import site
from qwen_docs_helpers.standins import resolve


@pytest.mark.parametrize(
    ("choice", "has_cuda", "expected"),
    [(None, True, True), (None, False, False), ("auto", False, False), ("AUTO", True, True),
     ("real", False, True), ("real", True, True), ("standin", True, False), (" standin ", False, False)],
)
def test_choice(choice: str | None, has_cuda: bool, expected: bool) -> None:
    assert site.use_real_weights(choice, has_cuda) is expected


def test_a_bad_choice_is_one_line_that_lists_the_good_ones() -> None:
    with pytest.raises(ConfigError, match=r"^QWEN_DOCS_WEIGHTS='reel' is not one of auto, real, standin: unset it"):
        site.use_real_weights("reel", True)


@pytest.mark.parametrize(("choice", "expected"), [(None, "standin"), ("real", "real"), ("standin", "standin")])
def test_a_cpu_build_uses_real_weights_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, choice: str | None, expected: str
) -> None:
    user_cache = tmp_path / "user-hub"
    make_real_snapshot(user_cache, SMALL_ID)
    monkeypatch.setenv("QWEN_DOCS_REAL_HUB_CACHE", str(user_cache))
    if choice is None:
        monkeypatch.delenv("QWEN_DOCS_WEIGHTS", raising=False)
    else:
        monkeypatch.setenv("QWEN_DOCS_WEIGHTS", choice)
    monkeypatch.setattr(os, "environ", os.environ.copy())  # prepare_models exports the offline environment
    config = SimpleNamespace(qwen_docs_prepare_models=True, qwen_docs_cache_dir=str(tmp_path / "private"),
                             qwen_docs_models=[SMALL_ID], nb_execution_cache_path="")
    app = SimpleNamespace(confdir=str(tmp_path), parallel=1)
    site.prepare_models(app, config)  # type: ignore[arg-type]
    resolved = resolve(SMALL_ID, tmp_path / "private")
    assert resolved is not None and resolved.weights == expected
    assert os.environ["HF_HUB_CACHE"] == str(tmp_path / "private" / "hub")


@pytest.mark.parametrize("variable", [True, False])
def test_the_build_keeps_its_cache_where_qwen_docs_cache_says_else_in_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: bool
) -> None:
    """The place `qwen-docs standins` and `qwen-docs env` use too (standins.default_cache_dir)."""
    checkout = tmp_path / "checkout"
    (checkout / "docs").mkdir(parents=True)
    (checkout / "docs" / "conf.py").write_text("")
    (checkout / "src" / "qwen_docs_helpers").mkdir(parents=True)
    if variable:
        monkeypatch.setenv("QWEN_DOCS_CACHE", str(tmp_path / "chosen"))
    else:
        monkeypatch.delenv("QWEN_DOCS_CACHE", raising=False)
    monkeypatch.setenv("QWEN_DOCS_WEIGHTS", "standin")
    monkeypatch.setenv("QWEN_DOCS_REAL_HUB_CACHE", str(tmp_path / "no-user-hub"))
    monkeypatch.setattr(os, "environ", os.environ.copy())  # prepare_models exports the offline environment
    config = SimpleNamespace(qwen_docs_prepare_models=True, qwen_docs_cache_dir="", qwen_docs_models=[SMALL_ID],
                             nb_execution_cache_path="")
    app = SimpleNamespace(confdir=str(checkout / "docs"), parallel=1)
    site.prepare_models(app, config)  # type: ignore[arg-type]
    expected = tmp_path / "chosen" if variable else checkout / ".cache" / "qwen-docs"
    assert os.environ["HF_HUB_CACHE"] == str(expected.resolve() / "hub")
    assert resolve(SMALL_ID, expected) is not None


def test_a_new_download_of_real_weights_gets_its_own_execution_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cached outputs of the old weights must not be shown after `hf download` fetched a newer commit."""
    user_cache = tmp_path / "user-hub"
    old = make_real_snapshot(user_cache, SMALL_ID)
    monkeypatch.setenv("QWEN_DOCS_REAL_HUB_CACHE", str(user_cache))
    monkeypatch.setenv("QWEN_DOCS_WEIGHTS", "real")
    monkeypatch.setattr(os, "environ", os.environ.copy())  # prepare_models exports the offline environment

    def cache_path() -> str:
        config = SimpleNamespace(qwen_docs_prepare_models=True, qwen_docs_cache_dir=str(tmp_path / "private"),
                                 qwen_docs_models=[SMALL_ID], nb_execution_cache_path=str(tmp_path / "exec"),
                                 qwen_docs_data_files=[])
        site.prepare_models(SimpleNamespace(confdir=str(tmp_path), parallel=1), config)  # type: ignore[arg-type]
        return str(config.nb_execution_cache_path)

    first = cache_path()
    assert cache_path() == first  # the same weights keep their cached outputs
    new_revision = "1" * 40
    shutil.copytree(old, old.with_name(new_revision))
    (old.parents[1] / "refs" / "main").write_text(new_revision)  # what a newer download leaves
    assert cache_path() != first
    resolved = resolve(SMALL_ID, tmp_path / "private")
    assert resolved is not None and (resolved.weights, resolved.revision) == ("real", new_revision)
