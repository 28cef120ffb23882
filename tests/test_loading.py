"""load_model and the attention policy, on the offline stand-ins."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from qwen_docs_helpers.errors import (
    AttentionUnavailableError,
    InvalidArgumentError,
    ModelNotAvailableError,
    UnknownArgumentError,
    UnsafeWeightsError,
)
from qwen_docs_helpers.loading import AttentionFallbackWarning, choose_attention, load_model
from qwen_docs_helpers.standins import is_standin

DENSE_ID = "Qwen/Qwen2-7B-Instruct"


@pytest.fixture(autouse=True)
def no_private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An empty private cache (the one `qwen-docs standins` writes), whatever the machine has in its own."""
    monkeypatch.setenv("QWEN_DOCS_CACHE", str(tmp_path / "no-private-cache"))


# --- choose_attention (pure) ----------------------------------------------------------------------------------


@pytest.mark.parametrize("requested", [None, "sdpa", "eager"])
def test_other_attentions_pass_through(requested: str | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_attention(requested, strict=True, flash_available=False) == requested


def test_flash_attention_is_kept_when_usable() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_attention("flash_attention_2", strict=True, flash_available=True) == "flash_attention_2"


def test_flash_attention_falls_back_to_sdpa_with_a_warning() -> None:
    with pytest.warns(AttentionFallbackWarning) as record:
        assert choose_attention("flash_attention_2", flash_available=False) == "sdpa"
    (warning,) = record
    text = str(warning.message)
    assert "\n" not in text and "'sdpa'" in text and "pip install flash-attn" in text
    assert warning.filename == __file__  # points at the caller, not at the helper


def test_strict_flash_attention_raises() -> None:
    with pytest.raises(AttentionUnavailableError) as caught:
        choose_attention("flash_attention_2", strict=True, flash_available=False)
    assert "\n" not in str(caught.value) and "pip install flash-attn" in caught.value.fix


def test_availability_is_checked_by_default() -> None:
    from transformers.utils import is_flash_attn_2_available

    if is_flash_attn_2_available():
        pytest.skip("flash-attn is usable on this machine")
    with pytest.warns(AttentionFallbackWarning):
        assert choose_attention("flash_attention_2") == "sdpa"


# --- load_model -----------------------------------------------------------------------------------------------


def test_loads_the_standin_by_hub_id_ready_for_batches(standin_hub: dict[str, Path]) -> None:
    model, tokenizer = load_model(DENSE_ID)
    assert is_standin(model.config)
    assert not model.training
    assert tokenizer.padding_side == "left"
    assert model.dtype == torch.bfloat16  # dtype="auto" keeps the checkpoint's dtype
    assert model.config._attn_implementation == "sdpa"  # transformers' default, kept by attn_implementation=None


def test_loads_a_local_folder(standin_hub: dict[str, Path]) -> None:
    model, tokenizer = load_model(standin_hub[DENSE_ID], dtype=torch.float32, device_map="cpu")
    assert model.dtype == torch.float32 and tokenizer.padding_side == "left"


def test_flash_attention_request_loads_with_sdpa(standin_hub: dict[str, Path]) -> None:
    from transformers.utils import is_flash_attn_2_available

    if is_flash_attn_2_available():
        pytest.skip("flash-attn is usable on this machine")
    with pytest.warns(AttentionFallbackWarning):
        model, _ = load_model(DENSE_ID, attn_implementation="flash_attention_2")
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(AttentionUnavailableError):
        load_model(DENSE_ID, attn_implementation="flash_attention_2", strict_attention=True)


def test_unknown_id_offline_says_how_to_get_weights(standin_hub: dict[str, Path]) -> None:
    with pytest.raises(ModelNotAvailableError) as caught:
        load_model("Qwen/Qwen2-0.5B-Not-Here")
    error = caught.value
    assert "\n" not in str(error)
    assert "Qwen/Qwen2-0.5B-Not-Here" in error.problem and "HF_HUB_OFFLINE=1" in error.problem
    assert "hf download Qwen/Qwen2-0.5B-Not-Here" in error.fix
    # `qwen-docs standins` refuses an id without a recipe: the fix says what to add before advising it
    assert error.fix.endswith(
        "Qwen/Qwen2-0.5B-Not-Here has no stand-in recipe: add its config.json and generation_config.json to "
        "src/qwen_docs_helpers/data/published_configs.json in a checkout of qwen-docs (see its README), then run "
        "`qwen-docs standins`"
    )
    assert isinstance(error, OSError) and isinstance(error.__cause__, OSError)


def test_a_known_id_missing_offline_says_to_create_standins(
    standin_hub: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))  # where try_to_load_from_cache looks
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    with pytest.raises(ModelNotAvailableError) as caught:
        load_model("Qwen/Qwen2-1.5B-Instruct")
    assert caught.value.fix.endswith("or create stand-ins with `qwen-docs standins`")
    assert "no stand-in recipe" not in caught.value.fix


def test_a_missing_non_qwen_id_offline_is_not_offered_a_standin(standin_hub: dict[str, Path]) -> None:
    with pytest.raises(ModelNotAvailableError) as caught:
        load_model("someone/not-a-qwen-model")
    assert "hf download someone/not-a-qwen-model" in caught.value.fix and "stand-in" not in caught.value.fix


def _pickled_copy(snapshot: Path, target: Path) -> Path:
    """A copy of a stand-in whose weights are a pickled pytorch_model.bin instead of safetensors."""
    from safetensors.torch import load_file

    target.mkdir(parents=True)
    for path in snapshot.iterdir():
        if path.suffix != ".safetensors":
            shutil.copy(path, target)
    torch.save(load_file(snapshot / "model.safetensors"), target / "pytorch_model.bin")
    return target


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if anything calls torch.load: refusing pickled weights must happen before they are read."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load was called on pickled weights")

    monkeypatch.setattr(torch, "load", refuse)


def test_pickled_weights_in_a_folder_are_refused(standin_hub: dict[str, Path], tmp_path: Path,
                                                 no_unpickling: None) -> None:
    folder = _pickled_copy(standin_hub[DENSE_ID], tmp_path / "pickled")
    with pytest.raises(UnsafeWeightsError) as caught:
        load_model(folder)
    assert "\n" not in str(caught.value)
    assert "pytorch_model.bin" in caught.value.problem and "safetensors" in caught.value.fix


def test_pickled_weights_in_the_hub_cache_are_refused(standin_hub: dict[str, Path], hub_cache: Path,
                                                      no_unpickling: None) -> None:
    repo = hub_cache / "models--qwen-docs-tests--pickled"
    revision = "0" * 40
    shutil.rmtree(repo, ignore_errors=True)
    try:
        _pickled_copy(standin_hub[DENSE_ID], repo / "snapshots" / revision)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(revision)
        with pytest.raises(UnsafeWeightsError):
            load_model("qwen-docs-tests/pickled")
    finally:
        shutil.rmtree(repo, ignore_errors=True)


def test_quantization_must_be_a_preset_or_a_config(standin_hub: dict[str, Path]) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^quantization=4 is not a preset name"):
        load_model(DENSE_ID, quantization=4)  # type: ignore[arg-type]


def test_a_folder_without_tokenizer_files_is_refused(standin_hub: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "no-tokenizer"
    shutil.copytree(standin_hub[DENSE_ID], folder)
    for path in folder.iterdir():
        if path.name.startswith(("tokenizer", "vocab", "merges", "special_tokens")):
            path.unlink()
    with pytest.raises(ModelNotAvailableError, match=r"^.*no-tokenizer has no tokenizer files") as caught:
        load_model(folder, device_map="cpu")
    assert "\n" not in str(caught.value) and "tokenizer.save_pretrained(path)" in caught.value.fix


def test_a_mistyped_folder_says_no_such_folder(standin_hub: dict[str, Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotAvailableError) as caught:
        load_model("./models/qwen2")
    error = caught.value
    assert error.problem == f"no such folder: {tmp_path.resolve() / 'models' / 'qwen2'}"
    assert "hf download" not in error.fix and "\n" not in str(error)


@pytest.mark.parametrize(
    "dtype", ["float17", "int8", torch.int64, 16, "float8_e4m3fn", torch.float8_e5m2, "complex64", "torch.bfloat16"]
)
def test_dtype_must_be_auto_or_a_loadable_dtype(standin_hub: dict[str, Path], dtype: object) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^dtype=.* is not a dtype load_model can load") as caught:
        load_model(DENSE_ID, dtype=dtype, device_map="cpu")  # type: ignore[arg-type]
    assert "bfloat16" in caught.value.fix and "\n" not in str(caught.value)


def test_dtype_by_name_loads(standin_hub: dict[str, Path]) -> None:
    model, _ = load_model(DENSE_ID, dtype="float32", device_map="cpu")
    assert model.dtype == torch.float32


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [("auto", "auto"), ("bfloat16", torch.bfloat16), ("half", torch.float16), (torch.float32, torch.float32),
     ("float64", torch.float64)],
)
def test_loadable_dtypes_are_accepted_by_dtype_or_name(dtype: object, expected: object) -> None:
    from qwen_docs_helpers.loading import _check_dtype

    assert _check_dtype(dtype) == expected


@pytest.mark.parametrize(
    ("keywords", "fix"),
    [({"torch_dtype": "auto"}, "pass dtype= instead"),
     ({"torch_dtype": torch.bfloat16}, "pass dtype= instead"),
     ({"quantization_config": object()}, "pass the BitsAndBytesConfig as quantization="),
     ({"load_in_4bit": True}, "pass quantization='nf4'"),
     ({"load_in_8bit": True}, "pass quantization='int8'"),
     ({"trust_remote_code": True}, "never runs a checkpoint's own code"),
     ({"attention_implementation": "sdpa"}, "did you mean attn_implementation=?"),
     ({"device": "cpu"}, "call AutoModelForCausalLM.from_pretrained"),
     ({"max_memory": {0: "10GiB"}}, "call AutoModelForCausalLM.from_pretrained")],
)
def test_from_pretrained_options_say_what_to_pass_before_anything_loads(tmp_path: Path, keywords: dict[str, object],
                                                                         fix: str) -> None:
    # A folder that does not exist: loading anything first would raise ModelNotAvailableError instead.
    with pytest.raises(UnknownArgumentError) as caught:
        load_model(tmp_path / "missing", **keywords)  # type: ignore[arg-type]
    error = caught.value
    assert isinstance(error, TypeError) and isinstance(error, InvalidArgumentError)
    assert error.problem == f"load_model() does not take {next(iter(keywords))}="
    assert fix in error.fix and "\n" not in str(error)


def test_several_unknown_keywords_are_named_together(tmp_path: Path) -> None:
    with pytest.raises(UnknownArgumentError) as caught:
        load_model(tmp_path / "missing", torch_dtype="auto", max_memory={}, cache_dir="x")  # type: ignore[call-arg]
    error = caught.value
    assert error.problem == "load_model() does not take torch_dtype=, max_memory= or cache_dir="
    assert error.fix.startswith("torch_dtype is transformers 4's name for dtype")
    assert error.fix.count("call AutoModelForCausalLM.from_pretrained") == 1  # said once for both


def test_the_signature_and_docstring_are_load_models_own() -> None:
    import inspect

    assert list(inspect.signature(load_model).parameters) == [
        "model_id", "dtype", "device_map", "attn_implementation", "strict_attention", "quantization", "revision"]
    assert load_model.__doc__ and "UnknownArgumentError" in load_model.__doc__


# --- what is not a checkpoint, or needs code, or a device torch lacks ------------------------------------------


def test_an_empty_id_a_file_and_a_folder_without_config_are_refused_in_one_line(
    standin_hub: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^the model id is empty: point at the folder save_pretrained"):
        load_model("")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ModelNotAvailableError, match=r"model.safetensors is a file, not a checkpoint folder: point"):
        load_model(weights)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotAvailableError, match=r"empty has no config.json, so it is not a checkpoint") as caught:
        load_model(tmp_path / "empty")
    assert "save_pretrained" in caught.value.fix and "\n" not in str(caught.value)


def test_a_path_under_home_is_expanded(standin_hub: dict[str, Path], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotAvailableError, match=r"empty has no config.json, so it is not a checkpoint"):
        load_model("~/empty")


def _edited_copy(snapshot: Path, target: Path, **changes: object) -> Path:
    """A copy of a stand-in whose config.json has ``changes``."""
    shutil.copytree(snapshot, target)
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, **changes}))
    return target


def test_a_checkpoint_with_custom_code_is_refused_without_running_it(standin_hub: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    folder = _edited_copy(standin_hub[DENSE_ID], tmp_path / "custom", model_type="custom_thing",
                          auto_map={"AutoConfig": "configuration_custom.CustomConfig"})
    (folder / "configuration_custom.py").write_text("raise SystemExit('checkpoint code ran')\n")
    with pytest.raises(InvalidArgumentError, match=r"custom needs its own Python code to load") as caught:
        load_model(folder, device_map="cpu")
    assert caught.value.fix.startswith("review that code")
    assert "load_model never runs code" in caught.value.problem and "\n" not in str(caught.value)


def test_an_unknown_model_type_says_transformers_does_not_know_it(standin_hub: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    folder = _edited_copy(standin_hub[DENSE_ID], tmp_path / "unknown", model_type="qwen9")
    with pytest.raises(InvalidArgumentError, match=r"has model_type 'qwen9', which transformers .* does not know"):
        load_model(folder, device_map="cpu")


@pytest.mark.parametrize("device_map", ["cuda", "cuda:0", {"": "cuda"}, torch.device("cuda"), 0, {"": 0}])
def test_cuda_without_cuda_is_refused_in_one_line(standin_hub: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                  device_map: object) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InvalidArgumentError, match=r"^device_map=.* asks for CUDA, but ") as caught:
        load_model(DENSE_ID, device_map=device_map)  # type: ignore[arg-type]
    assert "device_map='cpu'" in caught.value.fix and "\n" not in str(caught.value)


# --- typos, and stand-ins in the private cache ---------------------------------------------------------------


def test_a_typo_of_a_known_id_is_named_without_download_advice(standin_hub: dict[str, Path]) -> None:
    with pytest.raises(ModelNotAvailableError) as caught:
        load_model("Qwen/Qwen2-7B-Instrct")
    assert caught.value.fix == "did you mean Qwen/Qwen2-7B-Instruct? (check the spelling)"
    assert "hf download" not in str(caught.value)


def test_a_typo_online_is_named_too(standin_hub: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from qwen_docs_helpers import loading

    def not_found(*args: object, **kwargs: object) -> None:
        raise OSError("Qwen/Qwen2-7B-Instrct is not a local folder and is not a valid model identifier")

    monkeypatch.setattr(loading, "is_offline_mode", lambda: False)
    monkeypatch.setattr(loading.AutoConfig, "from_pretrained", not_found)
    with pytest.raises(ModelNotAvailableError, match=r"^Qwen/Qwen2-7B-Instrct could not be loaded: did you mean "
                                                     r"Qwen/Qwen2-7B-Instruct\?"):
        load_model("Qwen/Qwen2-7B-Instrct")


def _elsewhere(monkeypatch: pytest.MonkeyPatch, hub_cache: Path, tmp_path: Path) -> str:
    """Stand-ins in the private cache (`qwen-docs standins`), while the hub cache in use is another, empty one;
    the line to export."""
    from huggingface_hub import constants

    monkeypatch.setenv("QWEN_DOCS_CACHE", str(hub_cache.parent))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "user-hub"))
    return f"export HF_HUB_CACHE={hub_cache} HF_HUB_OFFLINE=1"


def test_offline_a_private_standin_gives_the_export_line(standin_hub: dict[str, Path], hub_cache: Path,
                                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    export = _elsewhere(monkeypatch, hub_cache, tmp_path)
    with pytest.raises(ModelNotAvailableError) as caught:
        load_model(DENSE_ID)
    assert "(standin weights) in its private cache" in caught.value.problem
    assert caught.value.fix == f"run `{export}` (the line `qwen-docs standins` prints), then start Python again"


def test_online_without_a_hub_a_private_standin_gives_the_export_line_at_once(
    standin_hub: dict[str, Path], hub_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from qwen_docs_helpers import loading

    def retry_for_25_s(*args: object, **kwargs: object) -> None:
        raise AssertionError("from_pretrained was called: huggingface_hub would retry the hub for ~25 s")

    export = _elsewhere(monkeypatch, hub_cache, tmp_path)
    monkeypatch.setattr(loading, "is_offline_mode", lambda: False)
    monkeypatch.setattr(loading, "_hub_reachable", lambda: False)
    monkeypatch.setattr(loading.AutoConfig, "from_pretrained", retry_for_25_s)
    with pytest.raises(ModelNotAvailableError) as caught:
        load_model(DENSE_ID)
    assert export in caught.value.fix and "\n" not in str(caught.value)
    # With a hub to download from, or the private cache in use (HF_HUB_CACHE exported), nothing is refused.
    monkeypatch.setattr(loading, "_hub_reachable", lambda: True)
    assert loading._unreachable_but_private(DENSE_ID, None) is None
    monkeypatch.setattr(loading, "_hub_reachable", lambda: False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    assert loading._unreachable_but_private(DENSE_ID, None) is None


def test_hub_reachable_makes_one_request_without_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    import http.server
    import threading
    import time

    from huggingface_hub import constants

    from qwen_docs_helpers.loading import _hub_reachable

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # get_session refuses every request offline
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # answers 501
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    try:
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        assert _hub_reachable()  # any answer, even an error status, is a reachable hub
    finally:
        thread.join(5)
        server.server_close()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")  # closed: refused
    started = time.monotonic()
    assert not _hub_reachable()
    assert time.monotonic() - started < 2  # refused at once: huggingface_hub's retries would wait seconds


def test_a_revision_pins_the_model_and_the_tokenizer(standin_hub: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    """A newer download moved refs/main: the commit a stamp names still loads the old files, both of them."""
    from huggingface_hub import constants

    from qwen_docs_helpers.standins import repo_folder_name

    old = standin_hub[DENSE_ID]
    repo = tmp_path / "hub" / repo_folder_name(DENSE_ID)
    shutil.copytree(old.parents[1], repo, symlinks=True)
    new = repo / "snapshots" / ("1" * 40)
    shutil.copytree(repo / "snapshots" / old.name, new)
    changes = (("config.json", "rms_norm_eps", 0.125), ("tokenizer_config.json", "model_max_length", 123))
    for name, key, value in changes:
        values = json.loads((new / name).read_text())
        values[key] = value
        (new / name).write_text(json.dumps(values))
    (repo / "refs" / "main").write_text(new.name)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))

    latest, latest_tokenizer = load_model(DENSE_ID)
    pinned, pinned_tokenizer = load_model(DENSE_ID, revision=old.name)
    assert (latest.config.rms_norm_eps, latest_tokenizer.model_max_length) == (0.125, 123)
    assert pinned.config.rms_norm_eps != 0.125 and pinned_tokenizer.model_max_length != 123
    assert pinned_tokenizer.padding_side == "left"


def test_a_revision_the_cache_lacks_offline_names_the_ones_it_holds(standin_hub: dict[str, Path]) -> None:
    commit = standin_hub[DENSE_ID].name
    with pytest.raises(ModelNotAvailableError) as caught:
        load_model(DENSE_ID, revision="v2.0")
    error = caught.value
    assert error.problem == (f"{DENSE_ID} is in the Hugging Face cache, but not at revision 'v2.0', and "
                             "HF_HUB_OFFLINE=1 forbids downloading it")
    assert error.fix == (f"pass one it holds ('main', '{commit}'), or run `hf download {DENSE_ID} --revision v2.0` "
                         "on a machine with hub access and copy the cache here")
    # only the hub expands an abbreviated commit: offline, the error gives it in full
    with pytest.raises(ModelNotAvailableError) as caught:
        load_model(DENSE_ID, revision=commit[:7])
    assert caught.value.fix == f"offline, a commit must be given in full: pass revision={commit!r}"
    assert "\n" not in str(caught.value)


def test_a_cached_revision_that_fails_to_load_is_not_called_missing(standin_hub: dict[str, Path]) -> None:
    from qwen_docs_helpers import loading

    commit = standin_hub[DENSE_ID].name
    assert loading._revision_not_cached(DENSE_ID, commit) is None
    assert loading._revision_not_cached(DENSE_ID, "main") is None
    assert loading._revision_not_cached(DENSE_ID, "v2.0") is not None


def test_a_revision_of_an_uncached_id_offline_says_to_download_that_revision(standin_hub: dict[str, Path]) -> None:
    with pytest.raises(ModelNotAvailableError) as caught:
        load_model("Qwen/Qwen2-0.5B-Not-Here", revision="abc1234")
    assert "hf download Qwen/Qwen2-0.5B-Not-Here --revision abc1234" in caught.value.fix


@pytest.mark.parametrize("revision", ["", "  ", 3])
def test_an_empty_or_non_text_revision_is_refused(standin_hub: dict[str, Path], revision: object) -> None:
    with pytest.raises(InvalidArgumentError, match=r"is not a branch, tag or commit name: pass a commit hash"):
        load_model(DENSE_ID, revision=revision)  # type: ignore[arg-type]


def test_a_revision_for_a_local_folder_is_refused(standin_hub: dict[str, Path]) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        load_model(standin_hub[DENSE_ID], revision="main")
    assert "holds one version of the files" in caught.value.problem
    assert caught.value.fix == "drop revision=, or pass the hub id to load that revision from the hub cache"


def test_a_private_standin_is_offered_only_at_its_own_revision(standin_hub: dict[str, Path], hub_cache: Path,
                                                              monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from qwen_docs_helpers import loading

    _elsewhere(monkeypatch, hub_cache, tmp_path)
    commit = standin_hub[DENSE_ID].name
    assert loading._private_standin(DENSE_ID, commit) == "standin"
    assert loading._private_standin(DENSE_ID, "main") == "standin"
    assert loading._private_standin(DENSE_ID, "f" * 40) is None  # exporting its cache would not help
