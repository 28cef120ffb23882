"""Stand-in checkpoints: the real tokenizer, the hub layout, real weights first, and safe writes."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest
from hub_fixtures import SMALL_ID, make_real_snapshot

from qwen_docs_helpers import standins
from qwen_docs_helpers.errors import InvalidArgumentError
from qwen_docs_helpers.published import published_generation_config
from qwen_docs_helpers.standins import (
    STANDIN_MARKER,
    find_real_snapshot,
    prepare_hub,
    repo_folder_name,
    resolve,
)

SEED_PROMPT = [{"role": "user", "content": "Give me a short introduction to large language model."}]


def tree_digest(root: Path) -> dict[str, str]:
    """Every file below ``root`` with a hash of its content, to prove a folder was not touched."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def quiet(_: str) -> None:
    return None


def test_standin_tokenizer_is_the_real_qwen2_tokenizer(standin_hub: dict[str, Path]) -> None:
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    from transformers import AutoTokenizer

    from qwen_docs_helpers.tokenizer import tiktoken_ranks_path

    tokenizer = AutoTokenizer.from_pretrained("Qwen/Qwen2-7B-Instruct")
    ids = tokenizer.apply_chat_template(SEED_PROMPT, add_generation_prompt=True, return_dict=False)
    assert len(ids) == 29 and ids[-3:] == [151644, 77091, 198]  # ...<|im_start|>assistant\n
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [151643, 151644, 151645]
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|endoftext|>")

    pattern = (
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
        r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
    )
    reference = tiktoken.Encoding(
        "qwen", pat_str=pattern, mergeable_ranks=load_tiktoken_bpe(str(tiktoken_ranks_path())), special_tokens={}
    )
    text = Path(standins.__file__).read_text() + "\n大型语言模型是一种人工智能。 12345 café naïve 😀\r\n\tend"
    assert tokenizer.encode(text) == reference.encode(text)
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_standin_has_real_architecture_generation_config_and_marker(standin_hub: dict[str, Path]) -> None:
    snapshot = standin_hub["Qwen/Qwen2-7B-Instruct"]
    config = json.loads((snapshot / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"]
    assert config["vocab_size"] == 152064 and config["num_key_value_heads"] < config["num_attention_heads"]
    assert config[STANDIN_MARKER]["of"] == "Qwen/Qwen2-7B-Instruct"
    generation = json.loads((snapshot / "generation_config.json").read_text())
    for key, value in published_generation_config("Qwen/Qwen2-7B-Instruct").items():
        assert generation[key] == value
    assert (snapshot / "model.safetensors").is_file()
    assert not list(snapshot.glob("*.bin"))
    moe = json.loads((standin_hub["Qwen/Qwen1.5-MoE-A2.7B-Chat"] / "config.json").read_text())
    assert moe["architectures"] == ["Qwen2MoeForCausalLM"] and moe["num_experts"] > moe["num_experts_per_tok"] > 1


def test_unchanged_snippet_loads_the_standin_offline(standin_hub: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained("Qwen/Qwen2-7B-Instruct", dtype="auto")
    assert standins.is_standin(model.config)
    assert str(model.dtype) == "torch.bfloat16"


def test_every_benign_word_is_one_token_with_its_space() -> None:
    tokenizer = standins._shared_tokenizer()
    words = standins.benign_words()
    ids = standins.benign_token_ids(tokenizer)
    assert len(words) >= 200 and len(ids) == len(words) + 2  # the words, "," and "."
    assert sorted(tokenizer.decode([i]) for i in ids) == sorted([f" {word}" for word in words] + [",", "."])


def test_benign_ids_refuse_a_tokenizer_without_the_words() -> None:
    class TinyVocab:
        def get_vocab(self) -> dict[str, int]:
            return {"\u0120water": 0, ",": 1, ".": 2}

    with pytest.raises(InvalidArgumentError, match=r"not one token of this tokenizer: .*apple"):
        standins.benign_token_ids(TinyVocab())


@pytest.mark.parametrize(
    "model_id", ["Qwen/Qwen2-7B-Instruct", "Qwen/Qwen2-1.5B-Instruct", "Qwen/Qwen1.5-MoE-A2.7B-Chat"]
)
def test_standin_output_is_drawn_from_benign_words_only(tmp_path: Path, model_id: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    standins.write_standin_snapshot(model_id, tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype="auto")
    benign = torch.zeros(model.config.vocab_size, dtype=torch.bool)
    benign[standins.benign_token_ids(tokenizer)] = True
    replies = set()
    torch.manual_seed(0)
    for prompt in ("Give me a short introduction to large language models.", "写一首关于春天的诗", "2+2=?"):
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        start = inputs["input_ids"].shape[1]
        # greedy, the checkpoint's own sampling settings, and sampling from the whole vocabulary
        for options in ({"do_sample": False}, {}, {"do_sample": True, "top_k": 0, "top_p": 1.0, "temperature": 1.0}):
            out = model.generate(**inputs, max_new_tokens=24, output_logits=True, return_dict_in_generate=True,
                                 **options)
            new = out.sequences[0, start:]
            assert benign[new].all(), (options, tokenizer.decode(new))
            for logits in out.logits:
                assert logits[0].float().softmax(-1)[~benign].sum() < 1e-4
            replies.add(tokenizer.decode(new))
    assert len(replies) >= 6  # noise that depends on the prompt and the settings, not one fixed string


def test_favouring_benign_tokens_refuses_tied_output_rows() -> None:
    import torch
    from transformers import AutoModelForCausalLM

    config = standins.standin_config("Qwen/Qwen2-1.5B-Instruct")
    assert config.tie_word_embeddings is False  # the published config ties them; the stand-in must not
    config.tie_word_embeddings = True
    tied = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    before = tied.lm_head.weight.detach().clone()
    with pytest.raises(InvalidArgumentError, match="ties its output rows"):
        standins.favour_benign_tokens(tied, [0, 1])
    assert torch.equal(tied.lm_head.weight, before)


def test_prepare_is_idempotent_and_force_rebuilds(tmp_path: Path) -> None:
    empty_user_cache = tmp_path / "user-hub"
    old_umask = os.umask(0o022)
    try:
        first = prepare_hub([SMALL_ID], cache_dir=tmp_path / "c", real_cache=empty_user_cache, progress=quiet)
    finally:
        os.umask(old_umask)
    entry = standins.hub_dir(tmp_path / "c") / repo_folder_name(SMALL_ID)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o755  # like the rest of the cache, not mkdtemp's 0700
    assert stat.S_IMODE(first[0].snapshot.stat().st_mode) == 0o755
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in first[0].snapshot.iterdir()}
    assert set(modes.values()) == {0o644}, modes  # the weights too, not safetensors' 0600 temporary file
    weights = first[0].snapshot / "model.safetensors"
    inode = weights.stat().st_ino
    lines: list[str] = []
    again = prepare_hub([SMALL_ID], cache_dir=tmp_path / "c", real_cache=empty_user_cache, progress=lines.append)
    assert again == first and weights.stat().st_ino == inode
    assert lines == [f"[1/1] {SMALL_ID}: stand-in up to date"]
    prepare_hub([SMALL_ID], cache_dir=tmp_path / "c", real_cache=empty_user_cache, force=True, progress=quiet)
    assert weights.stat().st_ino != inode
    assert not empty_user_cache.exists()  # the user's cache is never created or written


def test_stale_standin_version_is_rebuilt(tmp_path: Path) -> None:
    (entry,) = prepare_hub([SMALL_ID], cache_dir=tmp_path, real_cache=tmp_path / "none", progress=quiet)
    config_path = entry.snapshot / "config.json"
    config = json.loads(config_path.read_text())
    config[STANDIN_MARKER]["version"] = -1
    config_path.write_text(json.dumps(config))
    assert resolve(SMALL_ID, tmp_path) is None
    (rebuilt,) = prepare_hub([SMALL_ID], cache_dir=tmp_path, real_cache=tmp_path / "none", progress=quiet)
    assert (
        json.loads((rebuilt.snapshot / "config.json").read_text())[STANDIN_MARKER]["version"]
        == standins.STANDIN_VERSION
    )


def test_real_weights_win_and_the_user_cache_is_only_read(tmp_path: Path) -> None:
    user_cache = tmp_path / "user-hub"
    real = make_real_snapshot(user_cache, SMALL_ID)
    before = tree_digest(user_cache)
    (entry,) = prepare_hub([SMALL_ID], cache_dir=tmp_path / "c", real_cache=user_cache, progress=quiet)
    assert entry.weights == "real"
    assert entry.snapshot.resolve() == real.resolve()
    assert tree_digest(user_cache) == before
    # a stand-in made earlier is replaced once real weights appear, and vice versa with use_real=False
    (standin,) = prepare_hub(
        [SMALL_ID], cache_dir=tmp_path / "c", real_cache=user_cache, use_real=False, progress=quiet
    )
    assert standin.weights == "standin" and tree_digest(user_cache) == before
    (again,) = prepare_hub([SMALL_ID], cache_dir=tmp_path / "c", real_cache=user_cache, progress=quiet)
    assert again.weights == "real" and tree_digest(user_cache) == before


def test_pickled_weights_are_never_taken_as_real(tmp_path: Path) -> None:
    user_cache = tmp_path / "user-hub"
    make_real_snapshot(user_cache, SMALL_ID, safetensors=False)
    assert find_real_snapshot(SMALL_ID, user_cache) is None
    (entry,) = prepare_hub([SMALL_ID], cache_dir=tmp_path / "c", real_cache=user_cache, progress=quiet)
    assert entry.weights == "standin"


def test_interrupted_write_leaves_nothing_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = standins.write_standin_snapshot

    def write_then_die(model_id: str, target: Path, tokenizer: object | None = None) -> None:
        real_write(model_id, target, tokenizer)
        (target / "model.safetensors").write_bytes(b"truncated")
        raise KeyboardInterrupt  # as if the build were killed mid-write

    monkeypatch.setattr(standins, "write_standin_snapshot", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        prepare_hub([SMALL_ID], cache_dir=tmp_path, real_cache=tmp_path / "none", progress=quiet)
    assert resolve(SMALL_ID, tmp_path) is None
    assert not (standins.hub_dir(tmp_path) / repo_folder_name(SMALL_ID)).exists()
    assert [p.name for p in standins.hub_dir(tmp_path).iterdir() if p.name.startswith(".staging")] == []
    monkeypatch.setattr(standins, "write_standin_snapshot", real_write)
    (entry,) = prepare_hub([SMALL_ID], cache_dir=tmp_path, real_cache=tmp_path / "none", progress=quiet)
    assert entry.weights == "standin"
    from safetensors import safe_open

    with safe_open(entry.snapshot / "model.safetensors", "pt") as weights:
        assert len(list(weights.keys())) > 0


def test_half_written_entry_from_an_older_crash_is_rebuilt(tmp_path: Path) -> None:
    repo = standins.hub_dir(tmp_path) / repo_folder_name(SMALL_ID)
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "snapshots" / "abc" / "config.json").write_text("{}")  # no refs/main, no weights
    assert resolve(SMALL_ID, tmp_path) is None
    (entry,) = prepare_hub([SMALL_ID], cache_dir=tmp_path, real_cache=tmp_path / "none", progress=quiet)
    assert entry.weights == "standin" and entry.snapshot.name != "abc"


def _prepare_in_child(cache_dir: str) -> str:
    (entry,) = prepare_hub([SMALL_ID], cache_dir=Path(cache_dir), real_cache=Path(cache_dir) / "none", progress=quiet)
    return str(entry.snapshot)


def test_two_concurrent_creations_give_one_valid_entry(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        snapshots = pool.map(_prepare_in_child, [str(tmp_path)] * 2)
    assert snapshots[0] == snapshots[1]
    entry = resolve(SMALL_ID, tmp_path)
    assert entry is not None and str(entry.snapshot) == snapshots[0]
    leftovers = [p.name for p in standins.hub_dir(tmp_path).iterdir() if p.name.startswith(".staging")]
    assert leftovers == []


def test_unknown_model_id_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^Qwen/Nope has no stand-in recipe: add its config.json and "
                       r"generation_config.json to src/qwen_docs_helpers/data/published_configs.json in a checkout "
                       r"of qwen-docs \(see its README\); ids with one: Qwen/") as error:
        prepare_hub(["Qwen/Nope"], cache_dir=tmp_path, progress=quiet)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "hub").exists()  # refused before anything was written


@pytest.mark.parametrize(("model_id", "typo_of"), [
    ("Qwen/Qwen2-7B-Instrct", "Qwen/Qwen2-7B-Instruct"),
    ("qwen/qwen2-7b-instruct", "Qwen/Qwen2-7B-Instruct"),
    ("Qwen/Qwen1.5-MoE-A2.7B-Chta", "Qwen/Qwen1.5-MoE-A2.7B-Chat"),
    ("Qwen/Qwen2-7B-Instruct", None),  # known
    ("Qwen/Qwen2-0.5B-Instruct", None),  # another size: a real model, not a typo
    ("Qwen/Qwen2-72B-Instruct", None),
    ("Qwen/Qwen2-7B-Instruct-AWQ", None),  # a variant on the hub
    ("someone/not-a-qwen-model", None),
])
def test_likely_typos_of_known_ids(model_id: str, typo_of: str | None) -> None:
    from qwen_docs_helpers.published import likely_typo_of

    assert likely_typo_of(model_id) == typo_of


def test_default_cache_is_the_checkouts_not_the_users(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Inside a checkout, from any of its folders: the .cache/qwen-docs the site build uses (confdir's parent)."""
    monkeypatch.delenv("QWEN_DOCS_CACHE", raising=False)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "conf.py").write_text("")
    (tmp_path / "src" / "qwen_docs_helpers").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "src")
    assert standins.default_cache_dir() == tmp_path.resolve() / ".cache" / "qwen-docs"
    assert standins.default_cache_dir(tmp_path / "docs") == tmp_path.resolve() / ".cache" / "qwen-docs"
    assert standins.hub_dir() != standins.user_hub_cache()
    monkeypatch.setenv("QWEN_DOCS_CACHE", os.fspath(tmp_path / "elsewhere"))
    assert standins.default_cache_dir() == (tmp_path / "elsewhere").resolve()
    assert standins.default_cache_dir(tmp_path / "docs") == (tmp_path / "elsewhere").resolve()


def test_default_cache_outside_a_checkout_is_the_users_cache_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Not the current directory, wherever the command happens to run (it would litter folders with .cache/)."""
    monkeypatch.delenv("QWEN_DOCS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", os.fspath(tmp_path / "xdg"))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "conf.py").write_text("")  # some other Sphinx project: not a qwen-docs checkout
    monkeypatch.chdir(tmp_path)
    assert standins.default_cache_dir() == (tmp_path / "xdg" / "qwen-docs").resolve()
    assert not (tmp_path / "xdg").exists()  # only named, not created


def test_private_cache_in_the_users_hub_cache_is_refused_and_nothing_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `qwen-docs standins --cache-dir $HF_HOME`: the private hub would be the user's real one.
    home = tmp_path / "hf-home"
    make_real_snapshot(home / "hub", SMALL_ID)
    before = tree_digest(home / "hub")
    monkeypatch.setenv("HF_HOME", os.fspath(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(InvalidArgumentError, match="is your own Hugging Face hub cache") as error:
        prepare_hub([SMALL_ID], cache_dir=home, progress=quiet)
    assert "\n" not in str(error.value)
    assert tree_digest(home / "hub") == before and not (home / "hub" / ".lock").exists()


def test_exporting_the_printed_hub_cache_keeps_the_real_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home, private = tmp_path / "hf-home", tmp_path / "private"
    real = make_real_snapshot(home / "hub", SMALL_ID)
    before = tree_digest(home / "hub")
    monkeypatch.setenv("HF_HOME", os.fspath(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    (first,) = prepare_hub([SMALL_ID], cache_dir=private, progress=quiet)
    monkeypatch.setenv("HF_HUB_CACHE", os.fspath(standins.hub_dir(private)))  # as `qwen-docs standins` advises
    (again,) = prepare_hub([SMALL_ID], cache_dir=private, progress=quiet)
    assert first.weights == again.weights == "real" and again.snapshot.resolve() == real.resolve()
    assert standins.user_hub_cache(standins.hub_dir(private)) == home / "hub"
    assert tree_digest(home / "hub") == before


def test_weights_the_tool_did_not_write_are_never_replaced(tmp_path: Path) -> None:
    # e.g. `hf download` run while HF_HUB_CACHE pointed at the private cache
    real = make_real_snapshot(standins.hub_dir(tmp_path), SMALL_ID)
    before = tree_digest(standins.hub_dir(tmp_path) / repo_folder_name(SMALL_ID))
    (kept,) = prepare_hub([SMALL_ID], cache_dir=tmp_path, real_cache=tmp_path / "none", force=True, progress=quiet)
    assert kept.weights == "real" and kept.snapshot == real
    with pytest.raises(InvalidArgumentError, match="qwen-docs did not write") as error:
        prepare_hub([SMALL_ID], cache_dir=tmp_path, real_cache=tmp_path / "none", use_real=False, progress=quiet)
    assert "\n" not in str(error.value)
    assert tree_digest(standins.hub_dir(tmp_path) / repo_folder_name(SMALL_ID)) == before
    assert not standins.replaceable(real.parents[1])


def corrupt(path: Path, text: str = "{ not json") -> None:
    path.write_text(text)


@pytest.mark.parametrize("damage", ["config", "index", "ref"])
def test_a_damaged_private_standin_is_rebuilt(tmp_path: Path, damage: str) -> None:
    (entry,) = prepare_hub([SMALL_ID], cache_dir=tmp_path, real_cache=tmp_path / "none", progress=quiet)
    if damage == "config":
        corrupt(entry.snapshot / "config.json")
    elif damage == "index":
        corrupt(entry.snapshot / "model.safetensors.index.json", '{"metadata": {}}')  # no weight_map
    else:
        corrupt(entry.snapshot.parents[1] / "refs" / "main", "../../../etc")
    with pytest.raises(InvalidArgumentError, match=r"cannot be read") as error:
        resolve(SMALL_ID, tmp_path)
    assert "\n" not in str(error.value) and str(entry.snapshot.parents[1]) in str(error.value)
    lines: list[str] = []
    (rebuilt,) = prepare_hub([SMALL_ID], cache_dir=tmp_path, real_cache=tmp_path / "none", progress=lines.append)
    assert rebuilt.weights == "standin" and resolve(SMALL_ID, tmp_path) == rebuilt
    assert "cannot be read" in lines[0] and "replacing" in lines[0]


def test_a_damaged_file_in_the_users_cache_is_named_and_left_alone(tmp_path: Path) -> None:
    user_cache = tmp_path / "user-hub"
    real = make_real_snapshot(user_cache, SMALL_ID)
    corrupt(real / "config.json")
    before = tree_digest(user_cache)
    with pytest.raises(InvalidArgumentError, match="cannot be read") as error:
        prepare_hub([SMALL_ID], cache_dir=tmp_path / "c", real_cache=user_cache, progress=quiet)
    message = str(error.value)
    assert "\n" not in message and str(real / "config.json") in message
    assert "download it again" in message and "--no-real" in message
    assert tree_digest(user_cache) == before
    (entry,) = prepare_hub([SMALL_ID], cache_dir=tmp_path / "c", real_cache=user_cache, use_real=False, progress=quiet)
    assert entry.weights == "standin" and tree_digest(user_cache) == before


def test_a_damaged_entry_the_tool_did_not_write_is_named_and_kept(tmp_path: Path) -> None:
    real = make_real_snapshot(standins.hub_dir(tmp_path), SMALL_ID)
    corrupt(real / "config.json")
    before = tree_digest(real.parents[1])
    with pytest.raises(InvalidArgumentError, match="did not write") as error:
        prepare_hub([SMALL_ID], cache_dir=tmp_path, real_cache=tmp_path / "none", force=True, progress=quiet)
    assert "\n" not in str(error.value) and str(real / "config.json") in str(error.value)
    assert tree_digest(real.parents[1]) == before
