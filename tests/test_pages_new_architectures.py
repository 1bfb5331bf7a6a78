"""Every page renders on each architecture added with issue 15 (random GPT-NeoX, Gemma 2, Phi-3 and
OLMo-2 models saved to directories), and the Attention page's stages show the soft-cap exactly on
the model that soft-caps its scores (Gemma 2)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from test_fidelity import ARCH_CASES, save_random

ROOT = Path(__file__).parent.parent
APP = str(ROOT / "app.py")
PAGES = sorted(p.stem for p in (ROOT / "pages").glob("*.py"))
NEW = ("gpt_neox", "gemma2", "phi3", "olmo2")


@pytest.fixture(scope="module")
def new_model_dirs(tmp_path_factory) -> dict[str, Path]:
    return {name: save_random(tmp_path_factory.mktemp("pages") / f"tiny-{name}", ARCH_CASES[name][0], 17,
                              **ARCH_CASES[name][1]) for name in NEW}


@pytest.mark.parametrize("name", NEW)
def test_every_page_renders(app_env, monkeypatch, new_model_dirs, name):
    monkeypatch.setenv("GPTVIZ_MODEL_DIRS", os.pathsep.join(str(p) for p in new_model_dirs.values()))
    monkeypatch.setenv("GPTVIZ_DEFAULT_MODEL", f"local: tiny-{name}")
    for page in PAGES:
        at = AppTest.from_file(APP, default_timeout=240)
        at.run()
        at.switch_page(f"pages/{page}.py")
        at.run()
        assert not at.exception, (page, at.exception)
        assert not at.error, (page, [e.value for e in at.error])
        charts = " ".join(chart.proto.spec for chart in at.get("plotly_chart"))
        if page == "attention":
            titles = [a.get("text", "") for c in at.get("plotly_chart")
                      for a in json.loads(c.proto.spec).get("layout", {}).get("annotations", [])]
            assert any(t.endswith("softmax") for t in titles)  # the stages figure is drawn
            assert any("soft-cap" in t for t in titles) == (name == "gemma2")
        if page == "overview":
            assert ("LayerNorm 1" in charts and "LayerNorm 2" in charts) == (name == "gpt_neox")
            assert ("RMSNorm 1 (post)" in charts) == (name in ("gemma2", "olmo2"))
