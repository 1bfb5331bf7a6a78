"""The Inside a block page and the Overview's "this model vs the book's GPT-2" table in AppTest,
and the figure builders of gptviz/plots/block.py."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from gptviz.plots import block as plots
from gptviz.ui.navigation import BY_KEY, tab_labels
from numerics import assert_close
from page_helpers import APP, chart, open_tab, run_ok

TAB = "inside_block_tab"
PROMPT = "When Mary and John went to the store, John gave a drink to Mary"
LONG_PROMPT = "the cat sat on the mat and " * 40  # ~280 tokens: past both tiny models' context (128 and 160)
PROMPTS = ["Hello", "A", "  \n", "", "naïve café 🤖 → 東京 ✨", LONG_PROMPT]
CHARTS = {"block_norm_steps", "block_norm_depth", "block_qkv", "block_concat", "block_attn_out", "block_head_shares",
          "block_head_norms", "block_shortcut_bars", "block_writes", "block_activation", "block_neurons",
          "block_neuron_logits", "block_mlp_out", "block_sinusoid", "block_sinusoid_sim", "block_dropout"}
LEARNED_CHARTS = {"block_learned", "block_learned_sim"}
ROTARY_CHARTS = {"block_rotary", "block_rotary_waves", "block_offsets"}


def start(model: str | None = None, prompt: str | None = PROMPT, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    at.switch_page(BY_KEY["inside_block"].file)
    if prompt is not None:
        at.session_state["prompt"] = prompt
    at.run()
    if model is not None:
        at.selectbox(key="model").set_value(model).run()
    assert not at.exception, at.exception
    return at


def figure(at: AppTest, key: str) -> dict:
    return chart(at, key)


def chart_keys(at: AppTest) -> set[str]:
    return {c.key for c in at.get("plotly_chart")}


def downloads(at: AppTest) -> set[str]:
    return {b.proto.label for b in at.get("download_button")}


def every_tab(at: AppTest) -> dict[str, list]:
    """Open each tab in turn: what each drew (chart keys, subheaders, expanders, markdown, captions,
    metrics, download labels), merged; the first tab is open again at the end."""
    seen: dict[str, list] = {"charts": [], "subheaders": [], "expanders": [], "markdown": [], "captions": [],
                             "metrics": [], "downloads": []}
    for label in tab_labels("inside_block"):
        open_tab(at, TAB, label)
        seen["charts"] += [c.key for c in at.get("plotly_chart")]
        seen["subheaders"] += [h.value for h in at.subheader]
        seen["expanders"] += [e.label for e in at.expander]
        seen["markdown"] += [m.value for m in at.markdown]
        seen["captions"] += [c.value for c in at.caption]
        seen["metrics"] += [(m.label, m.value) for m in at.metric]
        seen["downloads"] += [b.proto.label for b in at.get("download_button") if "view" not in b.proto.label]
    open_tab(at, TAB, tab_labels("inside_block")[0])
    return seen


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_page_shows_every_step(app_env, family):
    at = start(app_env[family])
    assert chart_keys(at) == {"block_norm_steps", "block_norm_depth"}  # lazy tabs: the open one only
    seen = every_tab(at)
    expected = CHARTS | (LEARNED_CHARTS if family == "gpt2" else ROTARY_CHARTS)
    assert set(seen["charts"]) == expected
    assert len(set(seen["downloads"])) == len(expected) - 1  # the two bar charts are in other CSVs; + the norm table
    assert [t.value for t in at.title] == ["Inside a block"]
    headings = seen["subheaders"]
    assert headings[:6] == ["1. The norm before attention", "2. Attention: q, k, v in, the output projection out",
                            "3. The shortcut: what each sublayer adds to the residual stream",
                            "4. The feed-forward network (MLP)", "5. Positions", "6. Dropout (training only)"]
    assert " ".join(seen["expanders"]).count("What am I looking at?") == 6
    text = " ".join(seen["markdown"])
    assert ("RMSNorm" in text) == (family == "llama")
    # the checks the page prints are tiny: its steps are the model's own numbers
    captions = " ".join(seen["captions"])
    for phrase in ("model's own norm1(x)| over these tokens: ", "the model's|: ", "out_proj(concat)|: "):
        value = float(captions.split(phrase)[1].split()[0].rstrip("."))
        assert value < 1e-5, (phrase, value)
    metrics = dict(seen["metrics"])
    assert float(metrics["MLP from this token's vector alone vs the model's"]) < 1e-5
    assert float(metrics["attention from this token's vector alone vs the model's"]) > 1e-4
    # the concatenated heads: one row per token, nh · hs columns, nh - 1 head boundaries
    open_tab(at, TAB, "Attention")
    concat = figure(at, "block_concat")
    n_head = 3 if family == "gpt2" else 6
    assert len([s for s in concat["layout"]["shapes"] if s.get("type") == "line"]) == n_head - 1
    assert len(concat["layout"]["xaxis"]["ticktext"]) == n_head


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_page_runs_for_many_prompts(app_env, family):
    at = start(app_env[family])
    for prompt in PROMPTS:
        at.session_state["prompt"] = prompt
        run_ok(at)
        if prompt.strip():
            assert CHARTS <= set(every_tab(at)["charts"]), prompt
        else:
            assert any("empty" in info.value for info in at.info), prompt
    assert any("left out" in w.value for w in at.warning) or not at.warning


@pytest.mark.parametrize("case", ["gemma3", "qwen3", "qwen2-sliding"])
def test_page_on_other_architectures(app_env, case, tmp_path, monkeypatch):
    """Post norms and two ropes (Gemma 3), nh·hs ≠ d_model and q/k norms (Qwen3), sliding windows (Qwen2)."""
    from test_fidelity import ARCH_CASES, save_random

    config_class, kwargs, _ = ARCH_CASES[case]
    path = save_random(tmp_path / case, config_class, 0, **kwargs)
    monkeypatch.setenv("GPTVIZ_MODEL_DIRS", str(path))
    at = start(f"local: {case}", layer="0")
    assert CHARTS | ROTARY_CHARTS == set(every_tab(at)["charts"])
    places = at.radio(key="norm").options
    assert len(places) == (4 if case == "gemma3" else 2)
    if case == "gemma3":
        for which in ("post_attn_norm", "post_mlp_norm"):
            at.radio(key="norm").set_value(which)
            run_ok(at)
            assert which in figure(at, "block_norm_steps")["layout"]["title"]["text"]
    open_tab(at, TAB, "Attention")
    captions = " ".join(c.value for c in at.caption)
    assert float(captions.split("out_proj(concat)|: ")[1].split()[0].rstrip(".")) < 1e-5
    for layer in range(3):
        at.number_input(key="layer").set_value(layer)
        run_ok(at)


def test_widgets_change_the_figures_and_the_url(app_env):
    at = start(app_env["llama"])
    norm = json.dumps(figure(at, "block_norm_steps"))
    at.radio(key="norm").set_value("norm2")
    run_ok(at)
    assert json.dumps(figure(at, "block_norm_steps")) != norm and at.query_params["norm"] == "norm2"

    open_tab(at, TAB, "Shortcut")
    writes = figure(at, "block_writes")
    at.number_input(key="layer").set_value(1)
    run_ok(at)
    assert figure(at, "block_writes") != writes  # the focus frame moved to layer 1

    open_tab(at, TAB, "MLP")
    logits = figure(at, "block_neuron_logits")
    at.number_input(key="neuron").set_value(7)
    run_ok(at)
    assert figure(at, "block_neuron_logits") != logits and at.query_params["neuron"] == "7"
    assert "Neuron 7 over the prompt" in " ".join(m.value for m in at.markdown)

    open_tab(at, TAB, "Dropout")
    dropout = figure(at, "block_dropout")
    at.slider(key="dropout_p").set_value(0.5)
    run_ok(at)
    after = figure(at, "block_dropout")
    assert after != dropout and at.query_params["dropout_p"] == "0.5"
    at.number_input(key="dropout_seed").set_value(3)
    run_ok(at)
    assert figure(at, "block_dropout") != after and at.query_params["dropout_seed"] == "3"

    open_tab(at, TAB, "Positions")
    at.slider(key="n_positions").set_value(16)
    run_ok(at)
    assert np.asarray(figure(at, "block_sinusoid")["data"][0]["y"]).shape == (16,)
    assert at.query_params["n_positions"] == "16"

    open_tab(at, TAB, "Shortcut")
    bars = figure(at, "block_shortcut_bars")
    at.slider(key="_position_pick").set_value(2)
    run_ok(at)
    assert figure(at, "block_shortcut_bars") != bars and at.query_params["position"] == "2"
    assert at.query_params[TAB] == "Shortcut"


def test_settings_come_back_from_the_url(app_env):
    at = start(app_env["llama"], norm="norm2", neuron="11", n_positions="24", dropout_p="0.3", dropout_seed="5",
               position="4", layer="1", inside_block_tab="MLP")
    state = at.session_state
    assert (state["norm"], state["neuron"], state["n_positions"], state["dropout_p"], state["dropout_seed"]) == (
        "norm2", 11, 24, 0.3, 5)
    assert "Neuron 11 over the prompt" in " ".join(m.value for m in at.markdown)
    open_tab(at, TAB, "Norm")
    assert "layer 1" in figure(at, "block_norm_steps")["layout"]["title"]["text"]


@pytest.mark.parametrize("params", [
    dict(norm="post_mlp_norm", neuron="-5", n_positions="abc", dropout_p="nan", dropout_seed="-1"),
    dict(norm="", neuron="999999", n_positions="999999", dropout_p="7", dropout_seed="99999999999"),
])
def test_garbage_url_values_are_clamped(app_env, params):
    at = start(**params)
    every_tab(at)
    state = at.session_state
    assert state["norm"] == "norm1"
    assert 0 <= state["neuron"] < 192 and 8 <= state["n_positions"] <= 128  # the tiny GPT-2: d_mlp 192, 128 positions
    assert 0.0 <= state["dropout_p"] <= 0.9 and 0 <= state["dropout_seed"] < 2**31
    assert not at.error


def test_overview_compares_with_the_book(app_env):
    for family in ("gpt2", "llama"):
        at = AppTest.from_file(APP, default_timeout=180)
        at.run()
        at.selectbox(key="model").set_value(app_env[family]).run()
        assert not at.exception, at.exception
        (table,) = [m.value for m in at.markdown if m.value.startswith("| component | the book's GPT-2")]
        rows = table.splitlines()[2:]
        assert len(rows) == 15  # 14 components and the weights
        assert "](./inside_block?" in table and "inside_block_tab=MLP#ffn)" in table and "model=local" in table
        norm_row = next(r for r in rows if r.startswith("| norm |"))
        assert ("**RMSNorm" in norm_row) == (family == "llama") and "LayerNorm" in norm_row
        assert "F32" in table and "Overview" in table
        assert "Download model_vs_book_gpt2 as CSV" in downloads(at)


# ---- the figure builders --------------------------------------------------------------------------------
def test_vector_steps_figure():
    fig = plots.vector_steps_figure({"x": np.arange(5.0), "y": np.ones(5), "k": np.zeros(3)}, title="t")
    assert [len(t.y) for t in fig.data] == [5, 5, 3] and [t.name for t in fig.data] == ["x", "y", "k"]
    with pytest.raises(ValueError):
        plots.vector_steps_figure({})


def test_heads_matrix_and_shares_figures():
    fig = plots.heads_matrix_figure(np.zeros((4, 12)), ["a", "b", "c", "d"], 3, start=10, highlight=11)
    assert fig.data[0].z.shape == (4, 12) and list(fig.data[0].y) == ["10·a", "11·b", "12·c", "13·d"]
    assert [s.x0 for s in fig.layout.shapes if s.type == "line"] == [3.5, 7.5]
    assert [s for s in fig.layout.shapes if s.type == "rect"][0].y0 == 0.5
    with pytest.raises(ValueError, match="equal"):
        plots.heads_matrix_figure(np.zeros((4, 10)), ["a", "b", "c", "d"], 3)
    shares = plots.head_shares_figure(np.ones((4, 2)), ["H0", "H1", "H2", "bias"], ["a", "b"], norms=np.ones((4, 2)))
    assert shares.data[0].z.shape == (4, 2) and shares.data[0].customdata.shape == (4, 2)


def test_writes_figure():
    rng = np.random.default_rng(0)
    writes = {name: rng.uniform(0.1, 100, size=(3, 5)) for name in ("resid_pre", "attn_out", "resid_mid", "mlp_out")}
    fig = plots.writes_figure(writes, list("abcde"), start=2, focus=(1, 4))
    assert len(fig.data) == 3 and all(t.z.shape == (3, 5) for t in fig.data)
    assert_close(fig.data[0].customdata[..., 0], writes["resid_pre"], ulps=8)  # the values, stored as float32
    # a log10 ratio, back: the figure's float rounding of z, times ln(10)·|z| (|z| < 3)
    assert_close(10 ** fig.data[1].z, writes["attn_out"] / writes["resid_pre"], rtol=1e-5)
    assert len(fig.layout.shapes) == 3 and fig.layout.shapes[0].x0 == 1.5
    with pytest.raises(ValueError):
        plots.writes_figure(writes, list("abc"))


def test_mlp_figures():
    fig = plots.activation_figure(np.linspace(-1, 1, 9), np.linspace(-1, 1, 9), np.zeros(4), np.ones(4), name="SiLU")
    assert len(fig.data[0].x) == 9 and len(fig.data[1].x) == 4 and fig.data[0].name == "SiLU"
    neurons = plots.neurons_figure(np.arange(6.0).reshape(3, 2), [40, 7], ["a", "b", "c"], start=5, selected=7)
    assert neurons.data[0].z.shape == (3, 2) and list(neurons.data[0].x) == ["n40", "n7"]
    assert neurons.data[1].customdata.tolist() == [[40, 5], [7, 5], [40, 6], [7, 6], [40, 7], [7, 7]]
    assert plots.neuron_pick({"customdata": [7, 5]}, 50) == 7
    assert plots.neuron_pick({"customdata": {"0": 7, "1": 5}}, 50) == 7  # as Streamlit's selection event sends it
    assert plots.neuron_pick({"customdata": [70, 5]}, 50) is None and plots.neuron_pick({}, 50) is None
    text = plots.activation_text_html(["a", " <b>"], np.array([1.0, -0.5]))
    assert "&lt;b&gt;" in text and "rgba(220,38,38,1.00)" in text and "rgba(37,99,235,0.50)" in text
    frame = pd.DataFrame({"token": ["x", "y"], "id": [1, 2], "effect": [2.0, 1.0]})
    effect = plots.logit_effect_figure(frame, frame.assign(effect=[-2.0, -1.0]))
    assert [len(t.x) for t in effect.data] == [2, 2]


def test_position_and_dropout_figures():
    assert plots.position_heatmap(np.zeros((10, 6))).data[0].z.shape == (10, 6)
    assert plots.position_similarity_figure(np.eye(4)).data[0].z.shape == (4, 4)
    fig = plots.offset_figure(np.zeros((5, 5)), np.zeros((2, 7)), [0, 100])
    assert fig.data[0].z.shape == (5, 5) and [t.name for t in fig.data[1:]] == ["key at 0", "key at 100"]
    pattern = np.tril(np.full((3, 3), 1 / 3))
    dropped = pattern.copy()
    dropped[2, 0] = 0.0
    fig = plots.dropout_figure(pattern, dropped, ["a", "b", "c"], 0.1)
    assert np.isnan(fig.data[1].z[2, 0]) and not np.isnan(fig.data[0].z[2, 0]) and np.isnan(fig.data[0].z[0, 2])
    assert_close(fig.data[0].zmax, 1 / 0.9)  # 1 / (1 - p), float64 rounding
