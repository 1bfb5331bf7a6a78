"""Safety: nothing is ever unpickled, and the app loads only model directories configured by
whoever started it (GPTVIZ_MODEL_DIRS / --model-dir), never a path that came from the browser."""
from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import gptviz
from gptviz import ui
from gptviz.ui.store import model_registry

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
SCANNED = ["app.py", "gptviz", "pages", "bench"]

UNPICKLERS = {  # fully qualified callables that unpickle (or may, by default)
    "torch.load", "torch.serialization.load", "pickle.load", "pickle.loads", "pickle.Unpickler",
    "_pickle.load", "_pickle.loads", "cPickle.load", "cPickle.loads", "pandas.read_pickle",
    "dill.load", "dill.loads", "cloudpickle.load", "cloudpickle.loads", "shelve.open", "marshal.load",
    "marshal.loads",
}
PICKLE_MODULES = {"joblib", "dill", "cloudpickle", "shelve"}  # importing these at all is refused
TORCH_LOADS = {"torch.load", "torch.serialization.load"}  # allowed only as torch.load(..., weights_only=True)
# The one module that reads pickles itself: nanoGPT's meta.pkl, with an Unpickler that refuses every class and
# function (tests/test_own_models.py shows a malicious file refused and never run).
PICKLE_READER = "gptviz/weights/safe_pickle.py"


def python_files() -> list[Path]:
    """The project's own Python files (virtual environments and other hidden folders left out)."""
    files = []
    for entry in SCANNED:
        path = ROOT / entry
        candidates = [path] if path.is_file() else sorted(path.rglob("*.py"))
        for p in candidates:
            parts = p.relative_to(ROOT).parts
            if not any(part.startswith(".") or part in ("site-packages", "venv") for part in parts):
                files.append(p)
    return files


def unpickling_calls(source: str, filename: str = "<snippet>") -> list[str]:
    """Every place in `source` that unpickles: "file:line: what"."""
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}  # local name -> what it refers to, e.g. "np" -> "numpy"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[(a.asname or a.name).split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                if a.name.split(".")[0] in PICKLE_MODULES:
                    found.append(f"{filename}:{node.lineno}: import {a.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            if node.module.split(".")[0] in PICKLE_MODULES:
                found.append(f"{filename}:{node.lineno}: from {node.module} import")

    def qualified(func: ast.expr) -> str:
        parts = []
        while isinstance(func, ast.Attribute):
            parts.append(func.attr)
            func = func.value
        if not isinstance(func, ast.Name):
            return ""
        parts.append(aliases.get(func.id, func.id))
        return ".".join(reversed(parts))

    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = qualified(node.func)
        keywords = {k.arg: k.value for k in node.keywords}
        if name in TORCH_LOADS:
            flag = keywords.get("weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                found.append(f"{filename}:{node.lineno}: {name} without weights_only=True")
        elif name in UNPICKLERS and filename != PICKLE_READER:
            found.append(f"{filename}:{node.lineno}: {name}")
        elif name in ("numpy.load", "numpy.lib.npyio.load") and "allow_pickle" in keywords:
            flag = keywords["allow_pickle"]
            if not (isinstance(flag, ast.Constant) and flag.value is False):
                found.append(f"{filename}:{node.lineno}: {name}(allow_pickle=...)")
        elif name.endswith("cache_data") and "persist" in keywords:  # a disk cache is read back with pickle
            found.append(f"{filename}:{node.lineno}: {name}(persist=...)")
    return found


@pytest.mark.parametrize("snippet", [
    "import torch\ntorch.load('w.pt')",
    "import torch as T\nT.load(f, weights_only=False)",
    "import torch\ntorch.load(f, weights_only=flag)",
    "from torch import load\nload('x')",
    "from torch import serialization\nserialization.load('x')",
    "import pickle\npickle.loads(b'')",
    "import pickle as p\np.Unpickler(f).load()",
    "from pickle import load as read\nread(f)",
    "import numpy as np\nnp.load('a.npy', allow_pickle=True)",
    "import numpy\nnumpy.load('a.npy', allow_pickle=flag)",
    "import joblib",
    "from joblib import load",
    "import pandas as pd\npd.read_pickle('x')",
    "import streamlit as st\n@st.cache_data(persist='disk')\ndef f(): pass",
])
def test_the_scan_finds_each_way_to_unpickle(snippet):
    assert unpickling_calls(snippet), snippet


@pytest.mark.parametrize("snippet", [
    "import numpy as np\nnp.load('a.npz')\nnp.load(b, allow_pickle=False)",
    "import json\njson.loads('{}')",
    "from safetensors import safe_open\nsafe_open('m.safetensors', framework='pt')",
    "import torch\ntorch.save(x, 'out.pt')",
    "import torch as T\nT.load(f, weights_only=True)",
    "import streamlit as st\n@st.cache_data(max_entries=4)\ndef f(): pass",
])
def test_the_scan_leaves_safe_calls_alone(snippet):
    assert unpickling_calls(snippet) == []


def test_no_pickle_loading_anywhere_in_the_project():
    files = python_files()
    names = {str(p.relative_to(ROOT)) for p in files}
    assert {"app.py", "gptviz/weights/gguf.py", "gptviz/ui/store.py", "pages/attention.py", "bench/bench.py"} <= names
    assert not any(".venv" in name for name in names)
    found = [hit for p in files for hit in unpickling_calls(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))]
    assert found == []


# ---- model choices come from the command line or the environment only ---------------------
def test_model_dirs_come_only_from_the_environment_and_command_line(monkeypatch, tmp_path):
    monkeypatch.setenv("GPTVIZ_MODEL_DIRS", os.pathsep.join([str(tmp_path / "a"), "", str(tmp_path / "b")]))
    monkeypatch.setattr(sys, "argv", ["app.py", "--model-dir", str(tmp_path / "c"), "--other", "x"])
    assert ui.local_model_dirs() == {"local: c": str(tmp_path / "c"), "local: a": str(tmp_path / "a"),
                                     "local: b": str(tmp_path / "b")}
    assert ui.model_choices() == [*gptviz.MODEL_NAMES, "local: c", "local: a", "local: b"]


@pytest.mark.parametrize("asked", [
    "/etc", "../x", "/etc/passwd", "~", "local: etc", "local: ../tiny-gpt2", "gpt2-huge", "", "tiny-gpt2",
    "PATH_OF_TINY_GPT2",
])
def test_a_model_path_in_the_url_falls_back_to_the_default(app_env, tiny_gpt2_dir, monkeypatch, asked):
    asked = asked.replace("PATH_OF_TINY_GPT2", str(tiny_gpt2_dir))  # a configured dir, but spelled as a path
    sources = []
    load = gptviz.load_model
    monkeypatch.setattr(gptviz.loading, "load_model", lambda source, progress=None: (
        sources.append(source), load(source, progress=progress))[1])
    model_registry.clear()  # an empty registry: every load is seen
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["model"] = asked
    at.run()
    assert not at.exception and not at.error
    assert at.selectbox(key="model").value == app_env["gpt2"]
    assert at.selectbox(key="model").options == ui.model_choices()
    assert sources == [str(tiny_gpt2_dir)]  # only the configured default was ever opened
    assert at.query_params["model"] == app_env["gpt2"]  # the address bar is corrected too


def test_a_configured_model_in_the_url_is_used(app_env, tiny_llama_dir):
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["model"] = app_env["llama"]
    at.run()
    assert not at.exception and at.selectbox(key="model").value == app_env["llama"]
