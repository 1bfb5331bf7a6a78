"""Sliding-window (local) layers on every view: head scores, pooled patterns, figures, costs, pages.

Random Gemma 3 (local and global layers) and Mistral (every layer local) models from
tests/test_fidelity.py, read at T longer than their windows. References are written here with
loops and numpy masks (key j hidden from query i when j > i or j <= i - w), independent of
gptviz's attention primitive.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

import gptviz
from gptviz.analysis import heads as H
from gptviz.analysis import scaling
from gptviz.plots import attention as PA
from gptviz.plots import heads as PH
from gptviz.plots import scale as PS
from gptviz.ui.navigation import BY_KEY
from numerics import assert_close
from test_fidelity import ARCH_CASES, save_random

APP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "app.py")
T_LONG = 40  # longer than both windows (Gemma case: 6, Mistral case: 9)


@pytest.fixture(scope="module", params=["gemma3", "mistral"])
def local_model(request, tmp_path_factory):
    config_class, kwargs, _ = ARCH_CASES[request.param]
    path = save_random(tmp_path_factory.mktemp("local") / f"tiny-{request.param}", config_class, 7, **kwargs)
    model = gptviz.load_model(str(path))
    assert model.config.has_sliding_layers and T_LONG > model.config.sliding_window
    return model


@pytest.fixture(scope="module")
def local_trace(local_model):
    ids = torch.randint(0, 500, (T_LONG,), generator=torch.Generator().manual_seed(1)).tolist()
    ids[20:26] = ids[2:8]  # some repeated tokens, some within a window of their copy, some not
    return gptviz.trace(local_model, ids)


def hidden(T: int, window: int | None, rows=None, cols=None) -> np.ndarray:
    """(r, c) bool: key j is hidden from query i (future, or outside the window)."""
    i = np.arange(T)[:, None] if rows is None else np.asarray(rows)[:, None]
    j = np.arange(T)[None, :] if cols is None else np.asarray(cols)[None, :]
    return (j > i) | ((j <= i - window) if window else False)


# ---- scores ------------------------------------------------------------------------------------
def loop_scores(p: np.ndarray, ids: list[int], window: int | None) -> dict[str, np.ndarray]:
    """The four prompt scores of one layer (nh, T, T), by loops over the keys each query sees."""
    nh, T, _ = p.shape
    sees = lambda i, j: j <= i and (window is None or j > i - window)
    out = {}
    for name, key_of in (("previous_token", lambda i: i - 1), ("first_token", lambda i: 0)):
        rows = [i for i in range(1, T) if sees(i, key_of(i))]
        out[name] = np.array([np.mean([p[h, i, key_of(i)] for i in rows]) if rows else np.nan for h in range(nh)])
    dup = [(i, [j for j in range(i) if ids[j] == ids[i] and sees(i, j)]) for i in range(T)]
    dup = [(i, js) for i, js in dup if js]
    out["duplicate_token"] = np.array([np.mean([p[h, i, js].sum() for i, js in dup]) if dup else np.nan
                                       for h in range(nh)])
    ent = -np.where(p > 0, p * np.log2(np.where(p > 0, p, 1)), 0).sum(-1)
    out["entropy"] = ent.mean(-1)
    return out


def test_head_scores_count_only_the_keys_a_local_layer_sees(local_trace):
    tr, config = local_trace, local_trace.model.config
    stats = H.head_stats(tr, tile=8, max_elements=5 * tr.n_head * tr.n_tokens)
    assert set(stats.scores) == {s.key for s in H.HEAD_SCORES if s.rows is not None}
    for layer in range(tr.n_layer):
        p = tr.patterns(layer).double().numpy()
        window = config.window(layer)
        assert np.all(p[:, hidden(tr.n_tokens, window)] == 0)  # the trace's pattern is the layer's own
        for key, expected in loop_scores(p, tr.ids, window).items():
            got = stats.scores[key][layer]
            np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=f"{key} L{layer}")  # no such key
            seen = ~np.isnan(expected)
            # float32 patterns, averaged in tiles (a float32 result) vs by loops in float64
            assert_close(np.float32(got[seen]), expected[seen], ulps=16, what=f"{key} L{layer}")
        if window:  # counting the hidden rows as 0 would pull the sink score down
            naive = p[:, 1:, 0].mean(-1)
            assert (stats.scores["first_token"][layer] > naive + 1e-6).all()


def test_induction_is_undefined_where_the_window_is_too_short(local_model):
    config = local_model.config
    local = np.array([config.window(layer) is not None for layer in range(config.n_layer)])
    far, _ = H.induction_experiment(local_model, period=config.sliding_window + 1, seed=0)
    assert np.isnan(far[local]).all() and np.isfinite(far[~local]).all()
    near, ids = H.induction_experiment(local_model, period=config.sliding_window, seed=0)
    assert np.isfinite(near).all()
    tr = gptviz.trace(local_model, ids)
    period = config.sliding_window
    for layer in range(config.n_layer):
        p = tr.patterns(layer).numpy()
        i = np.arange(len(ids) - period, len(ids))
        assert_close(near[layer], p[:, i, i - period + 1].mean(-1), ulps=16)  # same mean, another order


def test_pooled_pattern_hides_the_keys_outside_the_window(local_trace):
    tr = local_trace
    layer = tr.model.config.layer_types.index("sliding")
    full = np.where(hidden(tr.n_tokens, tr.window(layer)), np.nan, tr.attention(layer, 0).numpy())
    same, _ = H.pooled_pattern(tr, layer, 0, 1000)
    np.testing.assert_array_equal(np.isnan(same), np.isnan(full))  # NaN where a key is hidden
    seen = ~np.isnan(full)
    assert_close(same[seen], full[seen], ulps=8)  # the same pattern, in tiles
    pooled, edges = H.pooled_pattern(tr, layer, 0, 7, max_elements=3 * tr.n_tokens)
    expected = H.block_max(full, 7)[0]
    np.testing.assert_array_equal(np.isnan(pooled), np.isnan(expected))
    seen = ~np.isnan(expected)
    assert_close(pooled[seen], expected[seen], ulps=8)  # the same maxima, in tiles
    assert np.isnan(pooled[-1, 0])  # the newest queries see nothing of the first block


# ---- figures -------------------------------------------------------------------------------------
def overlay(fig) -> list:
    return [t for t in fig.data if t.name == "outside the window"]


def test_heatmap_draws_the_window_apart_from_the_future(local_trace):
    tr = local_trace
    T = tr.n_tokens
    layer = tr.model.config.layer_types.index("sliding")
    w = tr.window(layer)
    pattern = tr.attention(layer, 0).numpy()
    fig = PA.pattern_heatmap(pattern, tr.tokens, window=w)
    main, (band,) = fig.data[0], overlay(fig)
    mask = hidden(T, w) & ~hidden(T, None)
    np.testing.assert_array_equal(~np.isnan(np.asarray(band.z, dtype=float)), mask)
    np.testing.assert_array_equal(np.isnan(np.asarray(main.z, dtype=float)), hidden(T, w))
    assert f"outside the sliding window of {w} tokens" in band.hovertemplate
    assert len(PA.pattern_heatmap(pattern, tr.tokens).data) == 1  # no window, no band
    with pytest.raises(ValueError, match="number of keys"):
        PA.pattern_heatmap(pattern, tr.tokens, window=True)
    start, key_start = 25, 10  # a window of queries 25.., keys 10..: the band moves with it
    part = PA.pattern_heatmap(pattern[start:, key_start:], tr.tokens, query_start=start, key_start=key_start, window=w)
    expected = (hidden(T, w) & ~hidden(T, None))[start:, key_start:]
    np.testing.assert_array_equal(~np.isnan(np.asarray(overlay(part)[0].z, dtype=float)), expected)
    pooled = PA.pattern_heatmap(pattern, tr.tokens, window=w, max_cells=8)
    (band,) = overlay(pooled)
    edges = H.bin_edges(T, 8)
    z = np.asarray(band.z, dtype=float)
    assert z.shape == (8, 8) and not np.isnan(z[-1, 0]) and np.isnan(z[0, -1]) and np.isnan(z[3, 3])
    assert edges[1] - 1 <= edges[-2] - w  # the bottom-left block holds only hidden keys


def test_mask_stage_and_weights_show_the_window(local_trace):
    tr = local_trace
    layer = tr.model.config.layer_types.index("sliding")
    w, start, size = tr.window(layer), 4, 24
    stages = H.stage_window(tr, layer, 0, start, start + size)
    rows = np.arange(start, start + size)
    outside = hidden(tr.n_tokens, w, rows, rows) & ~hidden(tr.n_tokens, None, rows, rows)
    assert np.isneginf(stages["masked"][outside]).all() and (stages["softmax"][outside] == 0).all()
    fig = PA.stages_figure(stages, tr.tokens, start, window=w)
    assert "beyond the window" in fig.layout.annotations[2].text
    bands = overlay(fig)
    assert [b.xaxis for b in bands] == ["x3", "x4"]  # the masked and softmax panels
    for band in bands:
        np.testing.assert_array_equal(~np.isnan(np.asarray(band.z, dtype=float)), outside)
    assert not overlay(PA.stages_figure(stages, tr.tokens, start))
    b = H.query_breakdown(tr, layer, 0, tr.n_tokens - 1)
    assert np.all(b.weights[: tr.n_tokens - w] == 0)
    assert_close(b.weights[tr.n_tokens - w:].sum(), 1.0, ulps=16)  # a softmax over the window, summed
    assert list(b.shown) == list(range(tr.n_tokens - w, tr.n_tokens))  # the keys it meets: its window
    assert_close(b.z, tr.z(layer)[0, -1], ulps=16)  # the same weighted sum of values, another order
    assert_close(b.rest, 0.0, atol=1e-12)  # exactly zero by construction: the hidden keys' weights are 0
    (shade,) = PA.weights_figure(b, tr.tokens, window=w).layout.shapes
    assert (shade.x0, shade.x1) == (-0.5, tr.n_tokens - w - 0.5)
    assert not PA.weights_figure(H.query_breakdown(tr, layer, 0, w - 1), tr.tokens, window=w).layout.shapes


def test_overview_and_score_maps_mark_local_layers(local_trace):
    tr, config = local_trace, local_trace.model.config
    stats = H.head_stats(tr, tile=8)
    windows = [config.window(layer) for layer in range(config.n_layer)]
    fig = PA.overview_figure(stats.tiles, windows=windows)
    kinds = ["local" if t == "sliding" else "global" for t in config.layer_types]
    assert list(fig.layout.xaxis.ticktext) == [f"L{i}<br>{k}" for i, k in enumerate(kinds)]
    assert len(fig.layout.shapes) == kinds.count("local")
    assert f"local (window {config.sliding_window})" in fig.data[1].text[0] or kinds[0] == "global"
    assert list(PA.overview_figure(stats.tiles).layout.xaxis.ticktext) == [f"L{i}" for i in range(config.n_layer)]
    heat = PH.layer_head_heatmap(stats.entropy, windows=windows)
    assert list(heat.layout.yaxis.ticktext) == [f"L{i} {k}" for i, k in enumerate(kinds)]
    pooled = [H.pooled_pattern(tr, layer, 0, 1000)[0] for layer in range(config.n_layer)]
    compare = PH.compare_patterns_figure([np.nan_to_num(p) for p in pooled], [f"L{i}" for i in range(len(pooled))],
                                         tr.tokens, windows=windows)
    assert len(overlay(compare)) == kinds.count("local")


def test_dropout_view_of_a_local_layer_shows_the_window(local_trace):
    from gptviz.analysis import block
    from gptviz.plots import block as PB

    tr = local_trace
    layer = tr.model.config.layer_types.index("sliding")
    w, n = tr.window(layer), 30
    pattern = H.pattern_window(tr, layer, 0, 0, n)
    view = block.dropout_view(pattern, 0.2, 0)
    fig = PB.dropout_figure(pattern, view.dropped, tr.tokens[:n], 0.2, w)
    outside = hidden(n, w) & ~hidden(n, None)
    bands = overlay(fig)
    assert len(bands) == 2 and outside.any()
    for band in bands:
        np.testing.assert_array_equal(~np.isnan(np.asarray(band.z, dtype=float)), outside)
    assert np.isnan(np.asarray(fig.data[0].z, dtype=float)[outside]).all()


# ---- costs -----------------------------------------------------------------------------------------
def test_attention_costs_count_each_layer_with_its_window(local_model):
    config = local_model.config
    sizes = [4, config.sliding_window, 32]
    frame = scaling.analytic_costs(config, sizes)
    d = config.n_head * config.d_head
    for T, row in zip(sizes, frame.itertuples()):
        per_layer = [4 * T * (T if kind == "full" else min(T, config.sliding_window)) * d
                     for kind in config.layer_types]
        assert row.attention_flops_model == sum(per_layer)
        assert row.attention_flops_local_layer == 4 * T * min(T, config.sliding_window) * d
        assert row.attention_flops_layer == 4 * T * T * d
    measured = scaling.measure_scaling(local_model, [16, 32], budget_s=60)
    assert (measured["attention_local_fused_s"] > 0).all()
    names = [t.name for t in PS.time_figure(measured).data]
    assert PS.LOCAL_TIME_SERIES["attention_local_fused_s"] in names
    assert any("local layer" in t.name for t in PS.flops_figure(frame).data)


def test_costs_of_a_model_without_windows_are_unchanged(tiny_llama):
    frame = scaling.analytic_costs(tiny_llama.config, [8, 64])
    assert "attention_flops_local_layer" not in frame.columns
    assert (frame["attention_flops_model"] == frame["attention_flops_layer"] * tiny_llama.config.n_layer).all()


# ---- pages ----------------------------------------------------------------------------------------
@pytest.fixture()
def gemma_app(app_env, tmp_path, monkeypatch):
    config_class, kwargs, _ = ARCH_CASES["gemma3"]
    path = save_random(tmp_path / "tiny-gemma3", config_class, 7, **kwargs)
    monkeypatch.setenv("GPTVIZ_MODEL_DIRS", os.environ["GPTVIZ_MODEL_DIRS"] + os.pathsep + str(path))
    monkeypatch.setenv("GPTVIZ_DEFAULT_MODEL", "local: tiny-gemma3")
    return "local: tiny-gemma3"


def page(key: str, prompt: str, layer: int = 0) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page(BY_KEY[key].file)
    at.session_state["prompt"] = prompt
    at.session_state["layer"] = layer
    return at.run()


PROMPT = "The cat sat on the mat because the cat was tired, and then the dog sat on the cat."


def chart_specs(at: AppTest) -> dict[str, str]:
    return {c.key: c.proto.spec for c in at.get("plotly_chart")}


def test_attention_page_explains_and_draws_the_window(gemma_app):
    at = page("attention", PROMPT, layer=0)
    assert not at.exception, at.exception
    notes = " ".join(at.markdown.values)
    assert "Sliding window" in notes and "Layer 0 is local" in notes and "a window of 6 keys" in notes
    assert any("(a local layer)" in h.value for h in at.subheader)
    assert "outside the window" in chart_specs(at)["attn_pattern"]
    at.session_state["attention_tab"] = "Step by step"
    assert "beyond the window" in chart_specs(at.run())["attn_stages"]
    at.session_state["attention_tab"] = "All heads"
    overview = json.loads(chart_specs(at.run())["attn_overview"])
    assert overview["layout"]["xaxis"]["ticktext"][:2] == ["L0<br>local", "L1<br>global"]
    at.session_state["attention_tab"] = "Pattern"
    at.session_state["layer"] = 1  # the global layer
    at.run()
    assert not at.exception and "Layer 1 is global" in " ".join(at.markdown.values)
    assert "outside the window" not in chart_specs(at)["attn_pattern"]


def test_pooled_view_and_full_resolution_window_show_the_window(gemma_app, monkeypatch):
    monkeypatch.setattr(PA, "MAX_CELLS", 8)  # make this prompt count as long
    at = page("attention", PROMPT, layer=0)
    assert not at.exception, at.exception
    assert any("blocks" in c.value for c in at.caption)
    assert "outside the window" in chart_specs(at)["attn_pattern"]  # max-pooled blocks
    at.toggle(key="attn_window").set_value(True).run()
    assert not at.exception, at.exception
    assert "outside the window" in chart_specs(at)["attn_pattern"]  # one cell per token


@pytest.mark.parametrize("path,text", [("compare_heads", "In a local layer only the queries i < 6"),
                                       ("attention_at_scale", "Local layers.")])
def test_other_pages_with_local_layers(gemma_app, path, text):
    at = page(path, PROMPT)
    if path == "compare_heads":
        at.session_state["compare_heads_tab"] = "Scores"
        at.run()
    assert not at.exception, at.exception
    assert text in " ".join(at.markdown.values)
