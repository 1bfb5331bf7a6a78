"""Shared fixtures: tiny random models of both families, saved in HF format by transformers."""
from __future__ import annotations

import os
import random
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch


def _seed_everything(name: str) -> None:
    """Seed torch, numpy and random from a stable hash of a test's or fixture's name: what it draws
    never depends on what ran before it (the order, -k, a rerun of one test)."""
    seed = zlib.crc32(name.encode("utf-8", "surrogatepass"))  # a parametrized id may hold a lone surrogate
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    """Every fixture, whatever its scope, starts from its own seed (a session fixture is built by
    whichever test needs it first)."""
    _seed_everything(f"fixture:{fixturedef.argname}:{getattr(request, 'param', '')}")
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Every test body starts from its own seed, after its fixtures ran."""
    _seed_everything(item.nodeid)
    return (yield)


def pytest_addoption(parser):
    parser.addoption("--order", default="normal",
                     help="normal, reverse, or shuffle:SEED: the order to run the tests in (the suite passes in any)")
    parser.addoption("--threads", type=int, default=None,
                     help="torch.set_num_threads(N) for the whole run (results must hold at any thread count)")


def pytest_configure(config):
    if config.getoption("--threads"):
        torch.set_num_threads(config.getoption("--threads"))


def pytest_collection_modifyitems(config, items):
    order = config.getoption("--order")
    if order == "reverse":
        items.reverse()
    elif order.startswith("shuffle:"):
        random.Random(int(order.split(":", 1)[1])).shuffle(items)
    elif order != "normal":
        raise pytest.UsageError(f"--order must be normal, reverse or shuffle:SEED, not {order!r}")


TINY_GPT2 = dict(n_embd=48, n_layer=3, n_head=3, vocab_size=50257, n_positions=128)
TINY_LLAMA = dict(
    hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
    intermediate_size=96, vocab_size=50257, max_position_embeddings=160, tie_word_embeddings=True,
    rope_theta=10000.0,
)


def save_tiny_gpt2(path: Path, seed: int = 0, **overrides) -> Path:
    import transformers

    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**TINY_GPT2, **overrides}))
    model.save_pretrained(path)
    return path


def save_tiny_llama(path: Path, seed: int = 0, **overrides) -> Path:
    import transformers

    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**TINY_LLAMA, **overrides}))
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    return save_tiny_gpt2(tmp_path_factory.mktemp("models") / "tiny-gpt2")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_gpt2_dir):
    import gptviz

    return gptviz.load_model(str(tiny_gpt2_dir))


@pytest.fixture(scope="session")
def tiny_llama(tiny_llama_dir):
    import gptviz

    return gptviz.load_model(str(tiny_llama_dir))


@pytest.fixture()
def app_env(tiny_gpt2_dir, tiny_llama_dir, monkeypatch):
    """Environment for AppTest: the two tiny models in the picker, the GPT-2 one by default,
    and every run routed through app.py's st.navigation, as in the served app (AppTest would
    otherwise run page files on their own, because the pages/ folder looks like an old-style
    multipage app)."""
    import streamlit.testing.v1.app_test as app_test
    from streamlit.runtime.pages_manager import PagesManager

    class NavigationPagesManager(PagesManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            PagesManager.uses_pages_directory = False

    monkeypatch.setattr(app_test, "PagesManager", NavigationPagesManager)
    monkeypatch.setenv("GPTVIZ_MODEL_DIRS", os.pathsep.join([str(tiny_gpt2_dir), str(tiny_llama_dir)]))
    monkeypatch.setenv("GPTVIZ_DEFAULT_MODEL", "local: tiny-gpt2")
    return {"gpt2": "local: tiny-gpt2", "llama": "local: tiny-llama"}


@pytest.fixture(scope="session")
def smollm2_hf(tmp_path_factory):
    """transformers' own reading of the shipped SmolLM2 GGUF (fp32, eager attention; ~20 s)."""
    from transformers import AutoModelForCausalLM

    from gptviz.packages import smollm2_gguf_path

    folder = tmp_path_factory.mktemp("hf-gguf")
    (folder / "model.gguf").symlink_to(smollm2_gguf_path())
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file="model.gguf", torch_dtype=torch.float32, attn_implementation="eager"
    )
    return model.eval()


@pytest.fixture(scope="session")
def gemma3_hf(tmp_path_factory):
    """transformers' own reading of the Gemma 3 270M GGUF (fp32, eager attention; ~2 min, ~3 GB peak)."""
    from transformers import AutoModelForCausalLM

    from gptviz.packages import gemma3_gguf_path

    folder = tmp_path_factory.mktemp("hf-gemma3")
    (folder / "model.gguf").symlink_to(gemma3_gguf_path())
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file="model.gguf", dtype=torch.float32, attn_implementation="eager"
    )
    return model.eval()


@pytest.fixture(scope="session")
def models(tiny_gpt2, tiny_llama, tmp_path_factory):
    """Random models of every kind of block edge runs meet: GPT-2, Llama with grouped-query attention, sliding
    windows (Mistral), post norms (Gemma 2 and 3), parallel blocks (GPT-NeoX), norms only after (OLMo-2), q/k/v
    biases (Llama), per-head q/k norms (Qwen3), fused checkpoint projections and partial rotary (Phi-3)."""
    import gptviz
    from test_fidelity import ARCH_CASES, save_random

    out = {"gpt2": tiny_gpt2, "llama-gqa": tiny_llama}
    for name in ("mistral", "gemma3", "gpt_neox", "olmo2", "gemma2", "llama-bias", "qwen3", "phi3"):
        path = save_random(tmp_path_factory.mktemp(name) / "m", ARCH_CASES[name][0], 5, **ARCH_CASES[name][1])
        out[name] = gptviz.load_model(str(path))
    return out


@pytest.fixture()
def downloaded(monkeypatch):
    """What a download button of an AppTest session would give: its bytes from the media store."""
    import streamlit.testing.v1.app_test as app_test
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    stores = []

    class Kept(MemoryMediaFileStorage):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            stores.append(self)

    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", Kept)
    return lambda button: stores[-1].get_file(button.proto.url.rsplit("/", 1)[1].split(".")[0]).content
