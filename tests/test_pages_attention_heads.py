"""AppTest of the Attention and Compare heads pages on the two tiny models."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).parent.parent / "app.py")
LONG_PROMPT = "the cat sat on the mat and " * 40  # well past both tiny models' context (128 and 160)
PROMPTS = ["Hello", "A", "  \n", "", "naïve café 🤖 → 東京 ✨", LONG_PROMPT]


def start(page: str, model: str | None = None, prompt: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page(f"pages/{page}.py")
    if model is not None:
        at.selectbox(key="model").set_value(model)
    if prompt is not None:
        at.session_state["prompt"] = prompt
    at.run()
    assert not at.exception, at.exception
    return at


def charts(at: AppTest) -> dict[str, dict]:
    """Each drawn plotly chart's figure JSON, by its element id order."""
    return {i: json.loads(c.proto.spec) for i, c in enumerate(at.get("plotly_chart"))}


def figure(at: AppTest, title_part: str | None = None, index: int = 0) -> str:
    return at.get("plotly_chart")[index].proto.spec


@pytest.mark.parametrize("model", ["gpt2", "llama"])
@pytest.mark.parametrize("page", ["attention", "compare_heads"])
def test_pages_run_for_many_prompts(app_env, model, page):
    at = start(page, app_env[model])
    for prompt in PROMPTS:
        at.session_state["prompt"] = prompt
        at.run()
        assert not at.exception, (prompt, at.exception)
        if prompt.strip():
            assert at.get("plotly_chart"), prompt
        else:
            assert any("empty" in info.value for info in at.info), prompt
