"""Broken model files and no network, in the app: a clear message that names the file (or says
what to do), no exception, and the model that worked before stays usable.

The core-level cases (truncated files, a read-only cache, a full disk during GGUF conversion)
are in test_weights.py and test_tokenizer.py; here the same failures are driven through AppTest.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants
from streamlit.testing.v1 import AppTest

import gptviz
from gptviz.tokenizer import TokenizerError, tokenizer_from_hf_dir
from gptviz.ui.navigation import BY_KEY

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PROMPT = "The cat sat on the mat because the mat was warm"


def break_truncated(path: Path) -> Path:
    file = path / "model.safetensors"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    return file


def break_config(path: Path) -> Path:
    file = path / "config.json"
    file.write_text(json.dumps(json.loads(file.read_text()) | {"n_embd": 60}))
    return path / "model.safetensors"  # the message names the weights that do not fit the config


def break_tokenizer_syntax(path: Path) -> Path:
    file = path / "tokenizer.json"
    file.write_text('{"model": {"type": "BPE", "vocab": {"a": 0')
    return file


def break_tokenizer_structure(path: Path) -> Path:
    file = path / "tokenizer.json"
    file.write_text(json.dumps({"model": {"type": "BPE"}, "pre_tokenizer": {"type": "ByteLevel"}}))  # no vocab
    return file


BREAKS = {  # directory name -> (source model, how it is broken)
    "cut-weights": ("gpt2", break_truncated),
    "wrong-config": ("gpt2", break_config),
    "bad-tokenizer-json": ("llama", break_tokenizer_syntax),
    "tokenizer-without-vocab": ("llama", break_tokenizer_structure),
}


@pytest.fixture(scope="module")
def broken_dirs(tiny_gpt2_dir, tiny_llama_dir, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """name -> (model directory, the file the message must name)."""
    root = tmp_path_factory.mktemp("broken")
    out = {}
    for name, (source, damage) in BREAKS.items():
        path = shutil.copytree(tiny_gpt2_dir if source == "gpt2" else tiny_llama_dir, root / name)
        out[name] = (path, damage(path))
    return out


@pytest.mark.parametrize("name", ["bad-tokenizer-json", "tokenizer-without-vocab"])
def test_malformed_tokenizer_json_names_the_file(broken_dirs, name):
    path, file = broken_dirs[name]
    with pytest.raises(TokenizerError) as err:
        tokenizer_from_hf_dir(path)
    assert str(file) in str(err.value) and "re-download" in str(err.value)


def test_broken_model_dirs_show_the_file_and_keep_the_last_model(app_env, broken_dirs, monkeypatch):
    dirs = os.environ["GPTVIZ_MODEL_DIRS"].split(os.pathsep) + [str(path) for path, _ in broken_dirs.values()]
    monkeypatch.setenv("GPTVIZ_MODEL_DIRS", os.pathsep.join(dirs))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page(BY_KEY["attention"].file)
    at.session_state["prompt"] = PROMPT
    at.run()
    healthy = [c.proto.spec for c in at.get("plotly_chart")]
    assert healthy and not at.error and not at.exception
    for name, (_, file) in broken_dirs.items():
        at.selectbox(key="model").set_value(f"local: {name}").run()
        assert not at.exception, (name, at.exception)
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and str(file) in errors[0] and f"Could not load local: {name}" in errors[0], errors
        assert any(f"**{app_env['gpt2']}** is shown" in i.value for i in at.main.info), name
        assert [c.proto.spec for c in at.get("plotly_chart")] == healthy, name  # same model, same views
        at.text_area(key="prompt").set_value(PROMPT + " again").run()  # the page still works
        assert not at.exception and len(at.error) == 1
        at.text_area(key="prompt").set_value(PROMPT).run()
    at.selectbox(key="model").set_value(app_env["llama"]).run()  # a good model loads after the bad ones
    assert not at.exception and not at.error
    assert [c.proto.spec for c in at.get("plotly_chart")] != healthy


@pytest.fixture()
def offline_hub(app_env, tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 and an empty Hugging Face cache, as huggingface_hub sees them now."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    return app_env


def test_offline_uncached_gpt2_says_so_fast_and_the_app_keeps_working(offline_hub):
    assert "gpt2-medium" in gptviz.MODEL_NAMES
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page(BY_KEY["tokens"].file)
    at.session_state["prompt"] = PROMPT
    at.run()
    tokens_before = at.markdown.values
    start = time.perf_counter()
    at.selectbox(key="model").set_value("gpt2-medium").run()
    pick_s = time.perf_counter() - start
    assert not at.exception, at.exception
    assert any("gpt2-medium** is not downloaded yet" in m.value for m in at.info)
    assert any(f"**{offline_hub['gpt2']}** is shown" in i.value for i in at.main.info)
    assert at.markdown.values == tokens_before  # the offline model still shows the prompt
    start = time.perf_counter()
    at.button(key="download").click().run()
    download_s = time.perf_counter() - start
    assert not at.exception, at.exception
    (error,) = [e.value for e in at.error]
    assert "not in the Hugging Face cache" in error and "HF_HUB_OFFLINE" in error and "smollm2-135m" in error
    assert pick_s < 10 and download_s < 10, (pick_s, download_s)  # the hub's own retries take ~25 s
    at.text_area(key="prompt").set_value("Still working offline").run()
    assert not at.exception and any("offline" in m for m in at.markdown.values)
    at.selectbox(key="model").set_value(offline_hub["llama"]).run()
    assert not at.exception and not at.error and not at.info
