"""AppTest of the Attention and Compare heads pages on the two tiny models."""
from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

import gptviz.plots.attention
from page_helpers import data, open_page, open_tab, run_ok, spec

LONG_PROMPT = "the cat sat on the mat and " * 40  # ~280 tokens: past both tiny models' context (128 and 160)
PROMPTS = ["Hello", "A", "  \n", "", "naïve café 🤖 → 東京 ✨", LONG_PROMPT]


def start(page: str, model: str | None = None, prompt: str | None = None) -> AppTest:
    return open_page(page, model, prompt)


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
    pattern = spec(at, "attn_pattern")
    assert [c.key for c in at.get("plotly_chart")] == ["attn_pattern"]  # lazy tabs: only the open one is drawn
    at.toggle(key="attn_boost").set_value(True)
    run_ok(at)
    assert spec(at, "attn_pattern") != pattern  # new colours, same weights:
    assert data(at, "attn_pattern")[0]["z"] == json.loads(pattern)["data"][0]["z"]
    pattern = spec(at, "attn_pattern")
    at.number_input(key="layer").set_value(1)
    run_ok(at)
    assert spec(at, "attn_pattern") != pattern
    assert "layer 1, head 0" in at.subheader[0].value
    pattern = spec(at, "attn_pattern")
    at.number_input(key="head").set_value(5)  # tiny llama: 6 query heads sharing 2 key/value heads
    run_ok(at)
    assert spec(at, "attn_pattern") != pattern
    open_tab(at, "attention_tab", "Lines")
    lines = spec(at, "attn_lines")
    open_tab(at, "attention_tab", "One query")
    weights = spec(at, "attn_weights")
    assert len(data(at, "attn_weights")[0]["x"]) == at.session_state["_position_pick"] + 1  # the last token
    at.slider(key="_position_pick").set_value(3)
    run_ok(at)
    assert spec(at, "attn_weights") != weights and at.session_state["position"] == 3
    assert len(data(at, "attn_weights")[0]["x"]) == 4  # keys 0..3
    assert any("token 3" in c.value and "picked" in c.value for c in at.caption)
    assert float(at.metric[0].value) < 1e-4  # the rebuilt z equals the model's
    open_tab(at, "attention_tab", "Lines")
    assert spec(at, "attn_lines") != lines  # the picked query's lines are highlighted
    open_tab(at, "attention_tab", "Step by step")
    stages = spec(at, "attn_stages")
    at.select_slider(key="attn_stage_size").set_value(8)
    run_ok(at)
    assert spec(at, "attn_stages") != stages and len(data(at, "attn_stages")[0]["x"]) == 8
    stages = spec(at, "attn_stages")
    at.slider(key="attn_stage_start").set_value(4)
    run_ok(at)
    assert spec(at, "attn_stages") != stages and data(at, "attn_stages")[0]["x"][0].startswith("4·")
    assert any("rotary" in m.value for m in at.markdown)
    open_tab(at, "attention_tab", "All heads")
    overview = spec(at, "attn_overview")
    at.selectbox(key="attn_pick_layer").set_value(0)
    run_ok(at)
    at.selectbox(key="attn_pick_head").set_value(2)
    run_ok(at)
    assert (at.session_state["layer"], at.session_state["head"]) == (0, 2)
    assert at.number_input(key="head").value == 2
    assert spec(at, "attn_overview") != overview  # the red focus frame moved
    assert data(at, "attn_overview")[2]["x"] == [0] and data(at, "attn_overview")[2]["y"] == [2]
    assert at.query_params["attention_tab"] == "All heads" and at.query_params["position"] == "3"


def test_attention_long_prompt_windows_and_position_clamp(app_env, monkeypatch):
    at = start("attention", app_env["gpt2"], LONG_PROMPT)
    assert any("left out" in w.value for w in at.warning)  # the prompt was cut to the context
    open_tab(at, "attention_tab", "Lines")
    lines = spec(at, "attn_lines")
    assert len([t for t in data(at, "attn_lines") if t["mode"] == "markers+text"][0]["text"]) == 64
    at.slider(key="attn_lines_start").set_value(3)
    run_ok(at)
    assert spec(at, "attn_lines") != lines
    open_tab(at, "attention_tab", "One query")
    at.slider(key="_position_pick").set_value(120)
    run_ok(at)
    at.session_state["position"] = 120  # picked, then the prompt shrinks (a link could say so too)
    at.session_state["prompt"] = "Hi there"
    run_ok(at)
    assert at.session_state["_position_pick"] == 1
    assert len(data(at, "attn_weights")[0]["x"]) == 2
    at.session_state["prompt"] = "Hi"  # 1 token: no slider at all
    run_ok(at)
    assert not at.slider and any("token 0" in c.value for c in at.caption)


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
    assert at.text_input(key="cmp_heads").value == "L0H0, L1H1, L2H2"  # tiny gpt2, 3 layers: one head each
    patterns = spec(at, "cmp_patterns")
    assert len(data(at, "cmp_patterns")) == 3
    at.text_input(key="cmp_heads").set_value("L0H1, l2h2")
    run_ok(at)
    assert at.text_input(key="cmp_heads").value == "L0H1, L2H2"  # written back in canonical form
    assert spec(at, "cmp_patterns") != patterns and len(data(at, "cmp_patterns")) == 2
    assert "L0H1" in spec(at, "cmp_patterns")
    patterns = spec(at, "cmp_patterns")
    at.toggle(key="cmp_boost").set_value(True)
    run_ok(at)
    assert spec(at, "cmp_patterns") != patterns
    assert [c.key for c in at.get("plotly_chart")] == ["cmp_patterns"]  # lazy tabs: only the open one
    open_tab(at, "compare_heads_tab", "Similarity")
    similarity = data(at, "cmp_similarity")[0]
    assert len(similarity["x"]) == 9 and " vs " in similarity["hovertemplate"]
    open_tab(at, "compare_heads_tab", "Scores")
    induction = spec(at, "cmp_score_3")
    at.slider(key="cmp_period").set_value(10)
    run_ok(at)
    assert spec(at, "cmp_score_3") != induction
    induction = spec(at, "cmp_score_3")
    at.number_input(key="cmp_seed").set_value(7)
    run_ok(at)
    assert spec(at, "cmp_score_3") != induction
    open_tab(at, "compare_heads_tab", "Side by side")
    at.text_input(key="cmp_heads").set_value("")
    run_ok(at)
    assert any("at least one head" in info.value for info in at.info)
    assert at.query_params["cmp_period"] == "10" and at.query_params["cmp_boost"] == "true"


def test_compare_heads_names_are_exact(app_env):
    """"L1H2" is one head, never every head whose name contains it; what is not a head is named."""
    at = start("compare_heads", app_env["gpt2"], "the cat and the dog")
    at.text_input(key="cmp_heads").set_value("L1H2, L1H, L9H0, L2 MLP, L1H2")
    run_ok(at)
    assert at.text_input(key="cmp_heads").value == "L1H2, L1H, L9H0, L2 MLP"
    assert len([t for t in data(at, "cmp_patterns") if t["type"] == "heatmap"]) == 1
    (warning,) = [w.value for w in at.warning if "left out" in w.value]
    assert "`L1H`" in warning and "`L9H0`" in warning and "`L2 MLP`" in warning


def test_compare_heads_without_repeated_tokens_and_model_switch(app_env):
    at = start("compare_heads", app_env["gpt2"], "One two three")
    at.text_input(key="cmp_heads").set_value("L2H2")
    run_ok(at)
    at.selectbox(key="model").set_value(app_env["llama"])  # 2 layers × 6 heads: L2H2 no longer exists
    run_ok(at)
    assert any("`L2H2`" in w.value for w in at.warning) and any("at least one head" in i.value for i in at.info)
    open_tab(at, "compare_heads_tab", "Scores")
    assert any("occurs twice" in info.value for info in at.info)
    open_tab(at, "compare_heads_tab", "Similarity")
    assert len(data(at, "cmp_similarity")[0]["x"]) == 12
