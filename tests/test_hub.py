"""Any hub repo of a supported architecture: download into the HF cache, offline, refusals, the app's picker.

No network: tests/fake_hub.py serves repos made here with save_pretrained on loopback, and
huggingface_hub's own download and cache code runs against it.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants as hf_constants
from streamlit.testing.v1 import AppTest

import gptviz
from fake_hub import FakeHub
from gptviz.weights import WeightsError, cached_repos, download, hub, is_cached, repo_allowed
from test_fidelity import ARCH_CASES, save_random

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
QWEN = "tester/tiny-qwen2"
SHARDED = "tester/tiny-mistral-sharded"


def save_tokenizer(path: Path) -> int:
    """A small byte-level BPE tokenizer.json (trained here) in `path`; returns its vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>"], show_progress=False)
    tok.train_from_iterator(["The cat sat on the mat.", "When Mary and John went to the store"] * 50, trainer)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    return tok.get_vocab_size()


@pytest.fixture(scope="module")
def repos(tmp_path_factory) -> dict[str, Path]:
    """Folders as they are on the hub: a Qwen2 with a tokenizer, a sharded Mistral, a BERT, a .bin-only model."""
    root = tmp_path_factory.mktemp("hub-repos")
    config_class, kwargs, _ = ARCH_CASES["qwen2"]
    qwen = save_random(root / "qwen", config_class, 1, **kwargs)
    save_tokenizer(qwen)
    config_class, kwargs, _ = ARCH_CASES["mistral"]
    sharded = root / "mistral"
    torch.manual_seed(2)
    import transformers

    model = transformers.AutoModelForCausalLM.from_config(getattr(transformers, config_class)(**kwargs))
    model.save_pretrained(sharded, max_shard_size="2MB")
    assert (sharded / "model.safetensors.index.json").is_file() and not (sharded / "model.safetensors").exists()
    bert = root / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    (bert / "model.safetensors").write_bytes(b"never fetched")
    pickled = root / "pickled"
    shutil.copytree(qwen, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    return {QWEN: qwen, SHARDED: sharded, "tester/bert": bert, "tester/pickled": pickled}


@pytest.fixture()
def hub_env(repos, tmp_path, monkeypatch):
    """The fake hub as huggingface_hub's endpoint, an empty HF cache, online."""
    with FakeHub(repos, gated=("tester/gated",)) as fake:
        monkeypatch.setattr(hf_constants, "ENDPOINT", fake.url)
        monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            fake.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield fake


def go_offline(monkeypatch) -> None:
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def logits(model, ids=(5, 9, 200, 3, 77, 1000, 42)) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([list(ids)]))[0]


# ---- the core: gptviz.load_model("owner/name") ----------------------------------------------------
def test_repo_id_downloads_once_then_loads_offline(hub_env, repos, monkeypatch):
    seen = []
    path = download(QWEN, progress=lambda done, total: seen.append((done, total)))
    assert path.parent.name == "snapshots" or path.parent.parent.name.startswith("models--tester--tiny-qwen2")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (path / name).is_file(), name
    size = (repos[QWEN] / "model.safetensors").stat().st_size
    assert seen[-1] == (size, size) and all(b[0] >= a[0] for a, b in zip(seen, seen[1:]))
    assert hub_env.files_requested("GET")[0] == "config.json"  # the architecture is known before the weights
    assert "special_tokens_map.json" in hub_env.files_requested("HEAD")  # optional: asked for, absent
    assert is_cached(QWEN) and cached_repos() == [QWEN]

    go_offline(monkeypatch)
    n_requests = len(hub_env.requests)
    model = gptviz.load_model(QWEN)
    assert len(hub_env.requests) == n_requests  # nothing asked of the hub once cached
    assert model.name == QWEN and model.config.arch == "qwen2" and model.tokenizer.name == QWEN
    vocab = json.loads((repos[QWEN] / "tokenizer.json").read_text())["model"]["vocab"]
    assert model.tokenizer.n_vocab == len(vocab) < 50257  # the repo's tokenizer, not GPT-2's fallback
    assert torch.equal(logits(model), logits(gptviz.load_model(str(repos[QWEN]))))  # the same weights: exactly


def test_sharded_weights_and_progress_over_all_shards(hub_env, repos):
    seen = []
    model = gptviz.load_model(SHARDED, progress=lambda done, total: seen.append((done, total)))
    shards = sorted(p for p in repos[SHARDED].glob("model-*.safetensors"))
    total = sum(p.stat().st_size for p in shards)
    assert len(shards) >= 2 and {t for _, t in seen} == {total} and seen[-1] == (total, total)
    assert all(b[0] >= a[0] for a, b in zip(seen, seen[1:]))
    assert sorted(f for f in hub_env.files_requested("GET") if f.startswith("model-")) == [p.name for p in shards]
    assert torch.equal(logits(model), logits(gptviz.load_model(str(repos[SHARDED]))))  # the same weights: exactly


def test_unsupported_architecture_is_refused_before_the_weights(hub_env):
    with pytest.raises(WeightsError, match=r"tester/bert cannot run in gptviz.*model_type='bert'.*gptviz runs") as e:
        gptviz.load_model("tester/bert")
    assert "llama" in str(e.value) and "gemma3_text" in str(e.value)
    assert hub_env.files_requested("GET") == ["config.json"]
    assert not is_cached("tester/bert") and cached_repos() == []


@pytest.mark.parametrize("repo,message", [
    ("tester/pickled", "no safetensors weights.*never unpickles"),
    ("tester/gated", "gated: accept its licence"),
    ("tester/missing", "not found on the Hugging Face hub"),
])
def test_repos_gptviz_cannot_use_say_why(hub_env, repo, message):
    with pytest.raises(WeightsError, match=message):
        download(repo)
    assert "pytorch_model.bin" not in hub_env.files_requested("GET")


def test_not_cached_and_offline_fails_at_once(hub_env, monkeypatch):
    go_offline(monkeypatch)
    start = time.perf_counter()
    with pytest.raises(WeightsError, match="not in the Hugging Face cache.*HF_HUB_OFFLINE"):
        gptviz.load_model(QWEN)
    assert time.perf_counter() - start < 1 and hub_env.requests == []


def test_unreachable_hub_fails_fast(hub_env, monkeypatch):
    monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}")
    start = time.perf_counter()
    with pytest.raises(WeightsError, match="the hub cannot be reached"):
        download(QWEN)
    assert time.perf_counter() - start < hub.HUB_PROBE_TIMEOUT_S + 2


def test_repo_ids_and_the_allow_list():
    assert hub.is_repo_id("Qwen/Qwen2.5-0.5B") and hub.is_repo_id("google/gemma-3-270m-it")
    for bad in ("gpt2", "a/b/c", "/etc/passwd", "../x", "a--b/c", "owner/", "local: tiny", "a/b.."):
        assert not hub.is_repo_id(bad), bad
    patterns = "openai-community/gpt2*, Qwen/Qwen2.5-0.5B*"
    assert repo_allowed("gpt2-xl", patterns) and repo_allowed("Qwen/Qwen2.5-0.5B-Instruct", patterns)
    assert not repo_allowed("Qwen/Qwen2.5-7B", patterns) and not repo_allowed("qwen/qwen2.5-0.5B", patterns)
    assert not repo_allowed("Qwen/Qwen2.5-0.5B", "") and not repo_allowed("../etc", "*")
    with pytest.raises(WeightsError, match="owner/name"):
        hub.repo_id("not a repo")


# ---- the app: picker, repo box, allow-list, URL ------------------------------------------------------
@pytest.fixture()
def app_hub(app_env, hub_env, monkeypatch):
    monkeypatch.setenv("GPTVIZ_ALLOW_MODELS", "tester/tiny-*")
    return app_env


def tokens_page(query: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in (query or {}).items():
        at.query_params[key] = value
    at.run()
    at.switch_page("pages/tokens.py")
    return at.run()


def test_app_refuses_repos_outside_the_allow_list(app_hub, hub_env):
    at = tokens_page()
    at.text_input(key="hub_repo").input("tester/bert").run()
    assert not at.exception
    (error,) = at.error.values
    assert "tester/bert is not allowed on this server" in error and "GPTVIZ_ALLOW_MODELS" in error
    assert at.session_state["model"] == app_hub["gpt2"] and hub_env.requests == []
    at.text_input(key="hub_repo").input("no repo id").run()
    assert "not a Hugging Face repo id" in at.error.values[0]
    at = tokens_page({"model": "tester/bert"})  # nor through a link
    assert at.session_state["model"] == app_hub["gpt2"] and hub_env.requests == []


def test_app_downloads_an_allowed_repo_with_progress_then_offers_it_cached(app_hub, hub_env, monkeypatch):
    at = tokens_page()
    assert QWEN not in at.selectbox(key="model").options
    at.text_input(key="hub_repo").input(QWEN).run()
    assert not at.exception and at.session_state["model"] == QWEN
    assert any(f"**{QWEN}** is not downloaded yet" in m.value for m in at.info)
    assert hub_env.requests == []  # picking downloads nothing
    assert at.query_params["model"] in (QWEN, [QWEN])
    at.button(key="download").click().run()
    assert not at.exception and not at.error and is_cached(QWEN)
    assert at.session_state["_active_model"] == QWEN  # the page now shows the downloaded model
    go_offline(monkeypatch)
    at = tokens_page({"model": QWEN})  # a copied link, offline: the cached repo is offered and loads
    assert not at.exception and not at.error and at.session_state["model"] == QWEN
    assert QWEN in at.selectbox(key="model").options
    monkeypatch.setenv("GPTVIZ_ALLOW_MODELS", "")
    at = tokens_page({"model": QWEN})
    assert QWEN not in at.selectbox(key="model").options and at.session_state["model"] == app_hub["gpt2"]


def test_app_offline_uncached_repo_says_so(app_hub, hub_env, monkeypatch):
    go_offline(monkeypatch)
    at = tokens_page({"model": SHARDED})
    assert not at.exception and at.session_state["model"] == SHARDED
    assert any(f"**{app_hub['gpt2']}** is shown" in i.value for i in at.main.info)
    at.button(key="download").click().run()
    (error,) = at.error.values
    assert "not in the Hugging Face cache" in error and "HF_HUB_OFFLINE" in error and hub_env.requests == []
