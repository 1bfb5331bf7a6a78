"""AppTest of the Attention and Compare heads pages on the two tiny models."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import gptviz.plots.attention

APP = str(Path(__file__).parent.parent / "app.py")
LONG_PROMPT = "the cat sat on the mat and " * 40  # ~280 tokens: past both tiny models' context (128 and 160)
PROMPTS = ["Hello", "A", "  \n", "", "naïve café 🤖 → 東京 ✨", LONG_PROMPT]


def start(page: str, model: str | None = None, prompt: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page(f"pages/{page}.py")
    if prompt is not None:
        at.session_state["prompt"] = prompt
    at.run()
    if model is not None:
        at.selectbox(key="model").set_value(model).run()
    assert not at.exception, at.exception
    return at


def spec(at: AppTest, key: str) -> str:
    """The figure JSON of the chart drawn with `key`."""
    matches = [c for c in at.get("plotly_chart") if c.key == key]
    assert len(matches) == 1, [c.key for c in at.get("plotly_chart")]
    return matches[0].proto.spec


def data(at: AppTest, key: str) -> list[dict]:
    return json.loads(spec(at, key))["data"]


def run_ok(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("model", ["gpt2", "llama"])
@pytest.mark.parametrize("page", ["attention", "compare_heads"])
def test_pages_run_for_many_prompts(app_env, model, page):
    at = start(page, app_env[model])
    for prompt in PROMPTS:
        at.session_state["prompt"] = prompt
        run_ok(at)
        if prompt.strip():
            assert at.get("plotly_chart"), prompt
            assert at.get("download_button"), prompt
        else:
            assert any("empty" in info.value for info in at.info), prompt


def test_attention_widgets_change_the_figures(app_env):
    at = start("attention", app_env["llama"], "When Mary and John went to the store, John gave a drink to Mary")
    pattern, lines = spec(at, "attn_pattern"), spec(at, "attn_lines")
    at.toggle(key="attn_boost").set_value(True)
    run_ok(at)
    assert spec(at, "attn_pattern") != pattern  # new colours, same weights:
    assert data(at, "attn_pattern")[0]["z"] == json.loads(pattern)["data"][0]["z"]
    pattern = spec(at, "attn_pattern")
    at.number_input(key="layer").set_value(1)
    run_ok(at)
    assert spec(at, "attn_pattern") != pattern and spec(at, "attn_lines") != lines
    assert "layer 1, head 0" in at.subheader[0].value
    pattern = spec(at, "attn_pattern")
    at.number_input(key="head").set_value(5)  # tiny llama: 6 query heads sharing 2 key/value heads
    run_ok(at)
    assert spec(at, "attn_pattern") != pattern
    weights = spec(at, "attn_weights")
    at.slider(key="position").set_value(3)
    run_ok(at)
    assert spec(at, "attn_weights") != weights
    assert len(data(at, "attn_weights")[0]["x"]) == 4  # keys 0..3
    assert float(at.metric[0].value) < 1e-4  # the rebuilt z equals the model's
    stages = spec(at, "attn_stages")
    at.select_slider(key="attn_stage_size").set_value(8)
    run_ok(at)
    assert spec(at, "attn_stages") != stages and len(data(at, "attn_stages")[0]["x"]) == 8
    stages = spec(at, "attn_stages")
    at.slider(key="attn_stage_start").set_value(4)
    run_ok(at)
    assert spec(at, "attn_stages") != stages and data(at, "attn_stages")[0]["x"][0].startswith("4·")
    overview = spec(at, "attn_overview")
    at.selectbox(key="attn_pick_layer").set_value(0)
    run_ok(at)
    at.selectbox(key="attn_pick_head").set_value(2)
    run_ok(at)
    assert (at.session_state["layer"], at.session_state["head"]) == (0, 2)
    assert at.number_input(key="head").value == 2 and "layer 0, head 2" in at.subheader[0].value
    assert spec(at, "attn_overview") != overview  # the red focus frame moved
    assert data(at, "attn_overview")[2]["x"] == [0] and data(at, "attn_overview")[2]["y"] == [2]


def test_attention_long_prompt_windows_and_position_clamp(app_env, monkeypatch):
    at = start("attention", app_env["gpt2"], LONG_PROMPT)
    assert any("left out" in w.value for w in at.warning)  # the prompt was cut to the context
    lines = spec(at, "attn_lines")
    assert len([t for t in data(at, "attn_lines") if t["mode"] == "markers+text"][0]["text"]) == 64
    at.slider(key="attn_lines_start").set_value(3)
    run_ok(at)
    assert spec(at, "attn_lines") != lines
    at.slider(key="position").set_value(120)
    run_ok(at)
    at.session_state["prompt"] = "Hi there"  # 2 tokens: the remembered position 120 must be clamped
    run_ok(at)
    assert at.session_state["position"] == 1
    assert len(data(at, "attn_weights")[0]["x"]) == 2
    at.session_state["prompt"] = "Hi"  # 1 token: no slider at all
    run_ok(at)
    assert at.session_state["position"] == 0


def test_attention_pooled_view_and_full_resolution_window(app_env, monkeypatch):
    monkeypatch.setattr(gptviz.plots.attention, "MAX_CELLS", 32)  # make 128 tokens count as "long"
    at = start("attention", app_env["gpt2"], LONG_PROMPT)
    assert any("blocks" in c.value for c in at.caption)
    pooled = data(at, "attn_pattern")[0]
    assert len(pooled["x"]) == 32 and "max weight" in pooled["hovertemplate"]
    at.toggle(key="attn_window").set_value(True)
    run_ok(at)
    at.number_input(key="attn_win_end").set_value(100)
    run_ok(at)
    at.number_input(key="attn_win_start").set_value(90)
    run_ok(at)
    window = data(at, "attn_pattern")[0]
    assert window["y"][0].startswith("90·") and len(window["y"]) == 10 and len(window["x"]) == 100


def test_compare_heads_widgets_change_the_figures(app_env):
    at = start("compare_heads", app_env["gpt2"], "the cat and the dog and the cat")
    chosen = at.multiselect(key="cmp_heads").value
    assert len(chosen) == 3  # tiny gpt2 has 3 layers: one head from each
    patterns = spec(at, "cmp_patterns")
    assert len(data(at, "cmp_patterns")) == 3
    at.multiselect(key="cmp_heads").set_value(["L0H1", "L2H2"])
    run_ok(at)
    assert spec(at, "cmp_patterns") != patterns and len(data(at, "cmp_patterns")) == 2
    assert "L0H1" in spec(at, "cmp_patterns")
    patterns = spec(at, "cmp_patterns")
    at.toggle(key="cmp_boost").set_value(True)
    run_ok(at)
    assert spec(at, "cmp_patterns") != patterns
    similarity = data(at, "cmp_similarity")[0]
    assert len(similarity["x"]) == 9 and " vs " in similarity["hovertemplate"]
    induction = spec(at, "cmp_score_3")
    at.slider(key="cmp_period").set_value(10)
    run_ok(at)
    assert spec(at, "cmp_score_3") != induction
    induction = spec(at, "cmp_score_3")
    at.number_input(key="cmp_seed").set_value(7)
    run_ok(at)
    assert spec(at, "cmp_score_3") != induction
    at.multiselect(key="cmp_heads").set_value([])
    run_ok(at)
    assert any("Pick at least one head" in info.value for info in at.info)


def test_compare_heads_without_repeated_tokens_and_model_switch(app_env):
    at = start("compare_heads", app_env["gpt2"], "One two three")
    assert any("occurs twice" in info.value for info in at.info)
    at.multiselect(key="cmp_heads").set_value(["L2H2"])
    run_ok(at)
    at.selectbox(key="model").set_value(app_env["llama"])  # 2 layers × 6 heads: L2H2 no longer exists
    run_ok(at)
    assert at.multiselect(key="cmp_heads").value and all(h.startswith(("L0", "L1")) for h in
                                                          at.multiselect(key="cmp_heads").value)
    assert len(data(at, "cmp_similarity")[0]["x"]) == 12
