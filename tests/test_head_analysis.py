"""Head analysis and attention figures: scores on hand-made patterns, agreement with the trace."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import gptviz
from gptviz.analysis import heads as H
from gptviz.plots import attention as PA
from gptviz.plots import heads as PH
from gptviz.plots.common import token_labels
from numerics import assert_close

PROMPT = "The cat sat on the mat. The cat sat on the mat again, said the cat 🐈."


# ---- hand-made patterns -------------------------------------------------------------------
def previous_token_pattern(T: int) -> np.ndarray:
    """(1, T, T): every token attends fully to the one before it (token 0 to itself)."""
    p = np.zeros((1, T, T))
    p[0, 0, 0] = 1.0
    p[0, np.arange(1, T), np.arange(T - 1)] = 1.0
    return p


def uniform_prefix_pattern(T: int) -> np.ndarray:
    """(1, T, T): token i spreads its attention evenly over tokens 0..i."""
    return (np.tril(np.ones((T, T))) / np.arange(1, T + 1)[:, None])[None]


def random_causal_patterns(nh: int, T: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(nh, T, T)) * 2
    scores[:, np.triu(np.ones((T, T), dtype=bool), 1)] = -np.inf
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_previous_token_pattern_scores():
    T = 12
    p = previous_token_pattern(T)
    # float64 maths on a hand-made pattern: rounding only
    assert_close(H.previous_token_scores(p)[0], 1.0)
    assert_close(H.first_token_scores(p)[0], 1 / (T - 1))  # only token 1 looks at token 0
    assert_close(H.entropy_scores(p)[0], 0.0, atol=1e-12)  # exactly zero by construction
    assert np.isnan(H.previous_token_rows(p)[0, 0])


def test_uniform_prefix_entropy_is_log2_of_prefix_length():
    T = 9
    p = uniform_prefix_pattern(T)
    # float64 maths on a hand-made pattern: rounding only
    assert_close(H.entropy_rows(p)[0], np.log2(np.arange(1, T + 1)))
    assert_close(H.entropy_scores(p)[0], np.log2(np.arange(1, T + 1)).mean())
    expected = np.mean(1 / np.arange(2, T + 1))
    assert_close(H.previous_token_scores(p)[0], expected)
    assert_close(H.first_token_scores(p)[0], expected)


def test_single_token_scores_are_undefined_not_errors():
    p = np.ones((2, 1, 1))
    assert np.isnan(H.previous_token_scores(p)).all()
    assert np.isnan(H.first_token_scores(p)).all()
    assert np.isnan(H.duplicate_token_scores(p, [7])).all()
    assert_close(H.entropy_scores(p), [0.0, 0.0], atol=1e-12)  # exactly zero by construction


def test_duplicate_token_scores_match_a_loop():
    ids = [5, 7, 5, 9, 7, 5, 1, 5]
    p = random_causal_patterns(3, len(ids), seed=1)
    expected = np.zeros(3)
    rows = 0
    for i in range(len(ids)):
        earlier = [j for j in range(i) if ids[j] == ids[i]]
        if earlier:
            expected += p[:, i, earlier].sum(-1)
            rows += 1
    assert_close(H.duplicate_token_scores(p, ids), expected / rows)  # float64, another summation order
    assert np.isnan(H.duplicate_token_scores(p, list(range(len(ids))))).all()  # no token repeats


def test_duplicate_token_pattern_scores_one():
    ids = [3, 4, 3, 4, 3]
    p = np.zeros((1, 5, 5))
    p[0, [0, 1], [0, 1]] = 1.0
    for i, j in ((2, 0), (3, 1), (4, 2)):
        p[0, i, j] = 1.0
    assert_close(H.duplicate_token_scores(p, ids)[0], 1.0)  # float64 maths on a hand-made pattern


def test_induction_pattern_scores_one_and_previous_token_pattern_zero():
    R = 4
    T = 1 + 2 * R
    p = np.zeros((1, T, T))
    p[0, np.arange(T), np.arange(T)] = 1.0
    for i in range(R + 1, T):  # second copy: look at the token after the previous occurrence
        p[0, i, i] = 0.0
        p[0, i, i - R + 1] = 1.0
    assert_close(H.induction_scores(p, R)[0], 1.0)  # float64 maths on a hand-made pattern
    assert_close(H.induction_scores(previous_token_pattern(T), R)[0], 0.0, atol=1e-12)  # exactly zero
    with pytest.raises(ValueError):
        H.induction_scores(p, T)


def test_js_divergence_properties():
    rng = np.random.default_rng(0)
    d = rng.dirichlet(np.ones(6) * 0.5, size=(5, 7)).astype(np.float32)  # 5 heads, 7 rows, 6 keys
    js = H.js_divergence_matrix(d, block=2)
    assert js.shape == (5, 5)
    assert_close(js, js.T, ulps=0)  # symmetric by construction: exactly
    assert_close(np.diag(js), 0.0)  # exactly zero by construction (no atol)
    assert (js >= 0).all() and (js <= 1.0 + 1e-9).all()
    direct = np.array([[H.js_divergence(d[a], d[b]).mean() for b in range(5)] for a in range(5)])
    np.fill_diagonal(direct, 0.0)
    assert_close(js, direct, rtol=1e-5)  # float32 kernel (float64 result) vs float64 maths on the same rows
    assert_close(H.js_divergence([1, 0], [0, 1]), 1.0)  # disjoint: the maximum, 1 bit (float64 rounding)
    assert_close(H.js_divergence([0.3, 0.7], [0.3, 0.7]), 0.0, atol=1e-12)  # exactly zero by construction
    m = np.array([0.75, 0.25])
    expected = -(m * np.log2(m)).sum() - (1.0 + 0.0) / 2  # H(M) - (H(P) + H(Q)) / 2
    assert_close(H.js_divergence([0.5, 0.5], [1.0, 0.0]), expected)  # float64, another summation order


def test_js_cells_partition_rows():
    T = 200
    positions = np.array([0, 5, 63, 64, 120, 199])
    cells = H.js_cells(T, positions)
    n_cells = 1 + H.JS_NEAR + H.JS_FAR
    assert cells.shape == (len(positions), T) and cells.min() >= 0 and cells.max() < n_cells
    np.testing.assert_array_equal(cells[1, :6], np.arange(6))  # short rows keep every key
    row = cells[-1, :200]  # i = 199: key 0, the 31 nearest keys, 32 far blocks, each non-empty
    assert row[0] == 0 and set(row) == set(range(n_cells))
    assert len(set(row[199 - H.JS_NEAR + 1 :])) == H.JS_NEAR
    p = torch.as_tensor(random_causal_patterns(2, T)[:, positions].astype(np.float32))
    sums = H.cell_sums(p, cells, n_cells)
    assert_close(sums.sum(-1), 1.0, ulps=64)  # float32 rows of 200 keys sum to 1: rounding only


def test_block_mean_equals_hand_block_means():
    rng = np.random.default_rng(0)
    x = rng.random((10, 10))
    out = H.block_mean(x, 4)
    edges = [0, 2, 5, 8, 10]  # np.linspace(0, 10, 5).round()
    expected = np.array([[x[a:b, c:d].mean() for c, d in zip(edges[:-1], edges[1:])]
                         for a, b in zip(edges[:-1], edges[1:])])
    assert_close(out, expected)  # float64, another summation order
    assert_close(H.block_mean(x, 32), x)  # T <= size: unchanged


def test_block_max_ignores_nan():
    x = np.array([[1.0, np.nan, np.nan, np.nan], [0.2, 0.8, np.nan, np.nan],
                  [0.1, 0.1, 0.8, np.nan], [0.7, 0.1, 0.1, 0.1]])
    pooled, rows, cols = H.block_max(x, 2)
    np.testing.assert_array_equal(rows, [0, 2, 4])
    expected = np.array([[1.0, np.nan], [0.7, 0.8]])
    np.testing.assert_array_equal(np.isnan(pooled), np.isnan(expected))  # all-NaN blocks stay NaN
    assert_close(pooled[~np.isnan(expected)], expected[~np.isnan(expected)])  # float32 copies of the values


# ---- against the trace ------------------------------------------------------------------------
@pytest.fixture(params=["gpt2", "llama"])
def tiny_trace(request, tiny_gpt2, tiny_llama):
    model = tiny_gpt2 if request.param == "gpt2" else tiny_llama
    return gptviz.trace(model, PROMPT)


def test_pattern_at_equals_trace_patterns(tiny_trace):
    T = tiny_trace.n_tokens
    for layer in range(tiny_trace.n_layer):
        full = tiny_trace.patterns(layer)
        rows = np.array([0, 3, T - 1])
        # the same maths on fewer rows, another summation order
        assert_close(H.pattern_at(tiny_trace, layer, rows), full[:, rows], ulps=16)
        assert_close(H.pattern_at(tiny_trace, layer, rows, [1, 0])[0], full[1, rows], ulps=16)
    with pytest.raises(ValueError):
        H.pattern_at(tiny_trace, 0, [T])


def test_head_stats_equal_direct_computation(tiny_trace):
    tr = tiny_trace
    T = tr.n_tokens
    stats = H.head_stats(tr, tile=8, max_elements=3 * tr.n_head * T)  # small chunks: exercise the chunking
    assert len(stats.positions) == T
    for layer in range(tr.n_layer):
        p = tr.patterns(layer).numpy()
        # float64 scores of float32 pattern rows recomputed in chunks: float32 rounding of the rows
        assert_close(stats.tiles[layer], H.block_mean(p, 8), rtol=1e-6)
        assert_close(stats.entropy[layer], H.entropy_scores(p), rtol=1e-6)
        assert_close(stats.scores["previous_token"][layer], H.previous_token_scores(p), rtol=1e-6)
        assert_close(stats.scores["first_token"][layer], H.first_token_scores(p), rtol=1e-6)
        assert_close(stats.scores["duplicate_token"][layer], H.duplicate_token_scores(p, tr.ids), rtol=1e-6)
        sums = stats.js_rows.reshape(tr.n_layer, tr.n_head, len(stats.js_positions), -1)[layer]
        assert_close(sums.sum(-1), 1.0, ulps=64)  # float32 pattern rows sum to 1: rounding only
    assert stats.js_rows.shape[0] == tr.n_layer * tr.n_head


def test_head_stats_on_sampled_rows(tiny_trace):
    tr = tiny_trace
    stats = H.head_stats(tr, tile=4, max_rows=8, js_rows=5)
    pos = stats.positions
    assert len(pos) == 8 and pos[0] == 0 and pos[-1] == tr.n_tokens - 1
    assert len(stats.js_positions) == 5 and set(stats.js_positions) <= set(pos)
    p = tr.patterns(1).numpy()[:, pos]
    # float64 scores of float32 pattern rows recomputed in chunks: float32 rounding of the rows
    assert_close(stats.entropy[1], H.entropy_rows(p).mean(-1), rtol=1e-6)
    assert_close(stats.scores["previous_token"][1], H.mean_over_rows(H.previous_token_rows(p, pos)), rtol=1e-6)


def test_query_breakdown_rebuilds_the_context_vector(tiny_trace):
    tr = tiny_trace
    layer, head, pos = tr.n_layer - 1, tr.n_head - 1, tr.n_tokens - 3
    b = H.query_breakdown(tr, layer, head, pos)
    z = tr.z(layer)[head, pos].numpy()
    # float64 maths on the trace's float32 q, k, v vs the model's float32 kernel: float32 rounding
    assert_close(b.z, z, ulps=32)
    assert_close(b.weighted.sum(0) + b.rest, z, ulps=32)
    assert_close(b.weights, tr.attention(layer, head)[pos, : pos + 1], ulps=32)
    assert_close(b.raw, tr.scores(layer, head, "raw")[pos, : pos + 1], ulps=32)
    assert_close(H.context_vector(tr, layer, head, pos), z, ulps=32)  # the same maths, another order
    few = H.query_breakdown(tr, layer, head, pos, top=3)  # only the 3 heaviest keys shown, the rest summed
    assert len(few.shown) == 3
    assert set(few.shown) == set(np.argsort(-few.weights)[:3])
    assert_close(few.weighted.sum(0) + few.rest, z, ulps=32)  # float64 sum of the same parts
    with pytest.raises(ValueError):
        H.query_breakdown(tr, layer, head, tr.n_tokens)


def test_stage_window_matches_trace_scores(tiny_trace):
    tr = tiny_trace
    a, b = 2, 9
    st = H.stage_window(tr, 1, 1, a, b)
    # the same float32 maths on a window of rows: another summation order
    assert_close(st["raw"], tr.scores(1, 1, "raw")[a:b, a:b], ulps=16)
    assert_close(st["scaled"], tr.scores(1, 1, "scaled")[a:b, a:b], ulps=16)
    assert np.isneginf(st["masked"][np.triu_indices(b - a, 1)]).all()
    assert_close(st["softmax"], tr.attention(1, 1)[a:b, a:b], ulps=16)


def test_pooled_pattern_equals_block_max(tiny_trace):
    tr = tiny_trace
    T = tr.n_tokens
    full = tr.attention(0, 2).numpy()
    masked = np.where(np.triu(np.ones((T, T), dtype=bool), 1), np.nan, full)
    pooled, edges = H.pooled_pattern(tr, 0, 2, 5, max_elements=3 * T)
    expected, rows, _ = H.block_max(masked, 5)
    np.testing.assert_array_equal(edges, rows)
    # pattern rows recomputed in chunks: the same float32 maths, another summation order
    np.testing.assert_array_equal(np.isnan(pooled), np.isnan(expected))  # the future stays NaN
    assert_close(pooled[~np.isnan(expected)], expected[~np.isnan(expected)], ulps=16)
    same, _ = H.pooled_pattern(tr, 0, 2, 1000)
    np.testing.assert_array_equal(np.isnan(same), np.isnan(masked))
    assert_close(same[~np.isnan(masked)], masked[~np.isnan(masked)], ulps=16)


def test_induction_experiment(tiny_gpt2):
    scores, ids = H.induction_experiment(tiny_gpt2, period=6, seed=3)
    assert len(ids) == 13 and ids[1:7] == ids[7:] and len(set(ids[1:7])) == 6
    assert ids[0] == tiny_gpt2.tokenizer.eos_id  # GPT-2 has no BOS: <|endoftext|> starts the sequence
    assert H.induction_experiment(tiny_gpt2, period=6, seed=3)[1] == ids  # seeded
    assert H.induction_experiment(tiny_gpt2, period=6, seed=4)[1] != ids
    tr = gptviz.trace(tiny_gpt2, ids)
    expected = np.stack([H.induction_scores(tr.patterns(l).numpy(), 6) for l in range(tr.n_layer)])
    assert_close(scores, expected, rtol=1e-6)  # float64 scores of float32 patterns of another trace of the ids
    with pytest.raises(ValueError):
        H.induction_experiment(tiny_gpt2, period=tiny_gpt2.config.n_ctx)


# ---- figures ----------------------------------------------------------------------------------
def fake_tokens(T: int) -> list[str]:
    return [f" t{i % 50}" for i in range(T)]


def test_pattern_heatmap_full_resolution():
    T = 20
    p = random_causal_patterns(1, T)[0]
    fig = PA.pattern_heatmap(p, fake_tokens(T))
    z = np.asarray(fig.data[0].z)
    assert z.shape == (T, T)
    assert np.isnan(z[np.triu_indices(T, 1)]).all()
    assert_close(z[np.tril_indices(T)], p[np.tril_indices(T)], ulps=1)  # the float64 pattern, stored as float32
    assert list(fig.data[0].x) == token_labels(fake_tokens(T)) == list(fig.data[0].y)
    assert "weight" in fig.data[0].hovertemplate and "query" in fig.data[0].hovertemplate
    window = PA.pattern_heatmap(p[5:9, 2:9], fake_tokens(T), query_start=5, key_start=2)
    assert list(window.data[0].y) == token_labels(fake_tokens(T))[5:9]
    assert np.isnan(np.asarray(window.data[0].z)[0, 4])  # query 5, key 6: the future
    with pytest.raises(ValueError):
        PA.pattern_heatmap(p, fake_tokens(T - 1))


def test_weight_colorscale_stretches_small_weights():
    linear, boosted = PA.weight_colorscale(1.0), PA.weight_colorscale(0.3)
    assert linear[0][1] == boosted[0][1] and linear[-1][1] == boosted[-1][1]  # same ends
    assert [t for t, _ in boosted] == [t for t, _ in linear]
    assert boosted[1][1] != linear[1][1]  # weight 0.05 gets a darker colour
    with pytest.raises(ValueError):
        PA.weight_colorscale(0.0)


def test_pattern_heatmap_downsamples_long_prompts():
    T = 40
    p = random_causal_patterns(1, T)[0]
    fig = PA.pattern_heatmap(p, fake_tokens(T), max_cells=16)
    z = np.asarray(fig.data[0].z)
    masked = np.where(np.triu(np.ones((T, T), dtype=bool), 1), np.nan, p)
    expected = H.block_max(masked, 16)[0]
    np.testing.assert_array_equal(np.isnan(z), np.isnan(expected))
    assert_close(z[~np.isnan(expected)], expected[~np.isnan(expected)], ulps=0)  # the same block maxima
    assert len(fig.data[0].x) == 16 and "–" in fig.data[0].x[0] and "max weight" in fig.data[0].hovertemplate


def test_pattern_heatmap_build_time_at_1024():
    T = 1024
    p = random_causal_patterns(1, T)[0].astype(np.float32)
    tokens = fake_tokens(T)
    PA.pattern_heatmap(p[:8, :8], tokens).to_json()  # plotly's validators load on first use
    t0 = time.perf_counter()
    fig = PA.pattern_heatmap(p, tokens)
    fig.to_json()
    full = time.perf_counter() - t0
    masked = np.where(np.triu(np.ones((T, T), dtype=bool), 1), np.nan, p)
    pooled, edges, _ = H.block_max(masked, PA.MAX_CELLS)
    t0 = time.perf_counter()
    PA.pattern_heatmap(pooled, tokens, edges=(edges, edges)).to_json()
    pre = time.perf_counter() - t0
    print(f"\nattention heatmap T=1024 build+to_json: {full:.3f} s from the full pattern, "
          f"{pre:.3f} s from the pooled one")
    assert np.asarray(fig.data[0].z).shape == (PA.MAX_CELLS, PA.MAX_CELLS)


def test_overview_figure_tiles_and_pick():
    L, nh, n = 30, 9, 32
    rng = np.random.default_rng(0)
    tiles = rng.random((L, nh, n, n))
    PA.overview_figure(tiles[:1, :1]).to_json()
    t0 = time.perf_counter()
    fig = PA.overview_figure(tiles, focus=(3, 4), hover_values=rng.random((L, nh)))
    fig.to_json()
    print(f"\noverview of {L * nh} heads build+to_json: {time.perf_counter() - t0:.3f} s")
    image = np.asarray(fig.data[0].z)
    assert image.shape == (nh * (n + 1) - 1, L * (n + 1) - 1)
    l, h = 7, 5  # layer 7 is the 8th column of tiles, head 5 the 6th row
    tile = image[h * (n + 1) : h * (n + 1) + n, l * (n + 1) : l * (n + 1) + n]
    assert_close(tile, tiles[l, h] / tiles[l, h].max(), ulps=1)  # the float64 tile, stored as float32
    assert np.isnan(image[n, :]).all()  # a blank line between heads
    heads_trace = fig.data[1]
    assert len(heads_trace.x) == L * nh
    x, y = float(np.asarray(fig.data[0].x)[l * (n + 1) + 3]), float(np.asarray(fig.data[0].y)[h * (n + 1) + 30])
    assert PA.overview_pick({"x": x, "y": y}, L, nh) == (l, h)  # any cell of the tile maps to its head
    assert PA.overview_pick({"x": heads_trace.x[11], "y": heads_trace.y[11]}, L, nh) == (11 // nh, 11 % nh)
    assert PA.overview_pick({"x": L + 1, "y": 0}, L, nh) is None
    assert fig.data[2].x == (3,) and fig.data[2].y == (4,)


def test_overview_tile_of_a_trace_is_the_block_mean(tiny_gpt2):
    tr = gptviz.trace(tiny_gpt2, PROMPT)
    stats = H.head_stats(tr, tile=6)
    fig = PA.overview_figure(stats.tiles)
    n = stats.tiles.shape[-1]
    image = np.asarray(fig.data[0].z)
    tile = H.block_mean(tr.patterns(2).numpy()[1], 6)
    # tiles of float32 pattern rows recomputed in chunks, normalized and stored as float32
    assert_close(image[1 * (n + 1) : 1 * (n + 1) + n, 2 * (n + 1) : 2 * (n + 1) + n], tile / tile.max(), ulps=16)


def test_lines_figure_one_trace_per_bucket():
    w = 30
    p = random_causal_patterns(1, w, seed=2)[0]
    fig = PA.lines_figure(p, fake_tokens(100), start=10, highlight=15, n_buckets=6, min_weight=0.05)
    lines = [t for t in fig.data if t.mode == "lines"]
    assert len(fig.data) <= 2 * 6 + 2
    blue = [t for t in lines if t.line.color == "#1f77b4"]
    n_segments = sum(int(np.isnan(np.asarray(t.y, dtype=float)).sum()) for t in blue)
    assert n_segments == int((p[np.tril_indices(w)] >= 0.05).sum())
    orange = [t for t in lines if t.line.color == "#ff7f0e"]
    assert sum(int(np.isnan(np.asarray(t.y, dtype=float)).sum()) for t in orange) == int((p[5] >= 0.05).sum())
    labels = [t for t in fig.data if t.mode == "markers+text"]
    assert list(labels[0].text) == token_labels(fake_tokens(100))[10:40]
    with pytest.raises(ValueError):
        PA.lines_figure(random_causal_patterns(1, 65)[0], fake_tokens(65))


def test_stages_figure_has_four_colour_scales():
    w = 6
    stages = {"raw": np.random.default_rng(0).normal(size=(w, w))}
    stages["scaled"] = stages["raw"] / 4
    stages["masked"] = np.where(np.triu(np.ones((w, w), dtype=bool), 1), -np.inf, stages["scaled"])
    stages["softmax"] = random_causal_patterns(1, w)[0]
    fig = PA.stages_figure(stages, fake_tokens(w))
    assert len(fig.data) == 4 and len({t.coloraxis for t in fig.data}) == 4
    masked = np.asarray(fig.data[2].z)
    assert np.isnan(masked[np.triu_indices(w, 1)]).all() and np.isfinite(masked[np.tril_indices(w)]).all()
    with pytest.raises(ValueError):
        PA.stages_figure({"raw": stages["raw"]}, fake_tokens(w))


def test_query_figures(tiny_llama):
    tr = gptviz.trace(tiny_llama, PROMPT)
    b = H.query_breakdown(tr, 1, 4, 10, top=4)
    fig = PA.weighted_sum_figure(b, tr.tokens)
    rows = np.asarray(fig.data[0].z)
    assert rows.shape == (5, tiny_llama.config.d_head)  # 4 shown keys + the rest
    assert_close(rows.sum(0), np.asarray(fig.data[1].z)[0], ulps=16)  # float64 sum of the same parts, another order
    bars = PA.weights_figure(b, tr.tokens)
    assert_close(np.asarray(bars.data[0].y), b.weights, ulps=1)  # the float64 weights, stored as float32
    vectors = PA.query_vectors_figure(b, tr.tokens)
    assert np.asarray(vectors.data[1].z).shape == (4, tiny_llama.config.d_head)


def test_heads_figures():
    L, nh = 4, 3
    values = np.arange(L * nh, dtype=float).reshape(L, nh)
    values[0, 0] = np.nan
    fig = PH.layer_head_heatmap(values, "x", "weight", focus=(1, 2))
    assert np.asarray(fig.data[0].z).shape == (L, nh) and "L%{y}H%{x}" in fig.data[0].hovertemplate
    js = np.random.default_rng(0).random((L * nh, L * nh))
    sim = PH.similarity_figure(js, L, nh)
    assert list(sim.data[0].x) == PH.head_labels(L, nh) and " vs " in sim.data[0].hovertemplate
    with pytest.raises(ValueError):
        PH.similarity_figure(js, L, nh + 1)
    T = 10
    pats = [random_causal_patterns(1, T, seed=s)[0] for s in range(3)]
    cmp = PH.compare_patterns_figure(pats, ["L0H0", "L1H1", "L3H2"], fake_tokens(T))
    assert len(cmp.data) == 3 and {t.coloraxis for t in cmp.data} == {"coloraxis"}
    assert [a.text for a in cmp.layout.annotations] == ["L0H0", "L1H1", "L3H2"]
    edges = H.bin_edges(T, 4)
    pooled = [H.block_max(p, 4)[0] for p in pats]
    cmp = PH.compare_patterns_figure(pooled, ["a", "b", "c"], fake_tokens(T), edges)
    assert np.asarray(cmp.data[0].z).shape == (4, 4) and len(cmp.data[0].x) == 4
