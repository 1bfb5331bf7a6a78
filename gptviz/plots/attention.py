"""Figures of one attention head: its pattern, its stages (raw → scaled → soft-capped, where the
model caps → masked → softmax), one query's weighted sum, bertviz-style lines, and the overview
of every head. Arrays and token strings in, figures out.

Masked cells come from the model's attention primitive (`gptviz.model.attention_mask`): keys
after the query are left blank, keys a sliding window hides are drawn in WINDOW_COLOUR."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from gptviz.analysis.heads import QueryBreakdown, block_max
from gptviz.model import attention_mask
from gptviz.plots.common import PANELS_TOP_PX, heatmap, show_whitespace, token_labels

MAX_CELLS = 512  # a heatmap side longer than this is max-pooled
MAX_LINES_TOKENS = 64
STAGE_TITLES = {  # in the model's order; "softcapped" only on models that soft-cap their scores
    "raw": "q·kᵀ",
    "scaled": "÷ √d_head",
    "softcapped": "soft-cap: tanh(s / c) · c",
    "masked": "mask the future",
    "softmax": "softmax",
}
OPTIONAL_STAGES = ("softcapped",)
WINDOW_COLOUR = "#f6c28b"  # keys outside a sliding window: masked like the future, but drawn apart from it


def weight_colorscale(gamma: float = 1.0) -> list:
    """Blues with colour position = weight ** gamma: gamma < 1 makes faint weights visible
    while the colour bar and hovers keep the real weights."""
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}.")
    stops = np.linspace(0.0, 1.0, 21)
    return [[float(t), c] for t, c in zip(stops, sample_colorscale("Blues", list(stops ** gamma)))]


def range_labels(edges: np.ndarray, tokens: Sequence[str], start: int = 0) -> list[str]:
    """Axis labels for blocks [edges[b], edges[b+1]) of positions start + …: "i·tok" for a
    one-token block, "a–b" (positions) for a longer one."""
    labels = []
    for a, b in zip(edges[:-1], edges[1:]):
        a, b = int(a), int(b)
        labels.append(f"{start + a}·{show_whitespace(tokens[a])}" if b - a == 1 else f"{start + a}–{start + b - 1}")
    return labels


def future_mask(n_rows: int, n_cols: int, row_start: int = 0, col_start: int = 0) -> np.ndarray:
    """(n_rows, n_cols) bool, True where key position col_start + j is after query row_start + i."""
    return masked_blocks(np.arange(n_rows + 1), np.arange(n_cols + 1), None, row_start, col_start)[0]


def masked_blocks(
    row_edges: np.ndarray, col_edges: np.ndarray, window: int | None, row_start: int = 0, col_start: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Which blocks of a pattern the mask hides: (future, outside_window), each (n, m) bool for the
    blocks of queries row_start + [row_edges[a], row_edges[a+1]) and keys col_start + [col_edges[b], ...).

    future: every key of the block is after every query of it; outside_window: the block holds a key
    that a sliding window of `window` keys hides from some query of it (key <= query - window).
    With one-cell blocks (edges 0, 1, 2, ...) these are the causal and the window part of
    `attention_mask`, which decides them: at the block's newest query and oldest key.
    """
    if window is not None and (isinstance(window, bool) or int(window) < 1):
        raise ValueError(f"A sliding window is a number of keys >= 1 (or None for none), not {window!r}.")
    newest_query = torch.as_tensor(row_start + np.asarray(row_edges)[1:] - 1, dtype=torch.int64)
    oldest_key = torch.as_tensor(col_start + np.asarray(col_edges)[:-1], dtype=torch.int64)
    causal = attention_mask(len(newest_query), len(oldest_key), query_pos=newest_query, key_pos=oldest_key)
    seen = attention_mask(len(newest_query), len(oldest_key), window, query_pos=newest_query, key_pos=oldest_key)
    return (~causal).numpy(), (causal & ~seen).numpy()


def window_overlay(outside: np.ndarray, x: Sequence[str], y: Sequence[str], window: int) -> go.Heatmap:
    """A one-colour heatmap over the cells (or blocks) a sliding window hides: outside (R, C) bool,
    labelled like the pattern it covers."""
    z = np.where(outside, 1.0, np.nan).astype(np.float32)
    return go.Heatmap(
        z=z, x=list(x), y=list(y), colorscale=[[0.0, WINDOW_COLOUR], [1.0, WINDOW_COLOUR]], zmin=0, zmax=1,
        showscale=False, name="outside the window",
        hovertemplate=f"query: %{{y}}<br>key: %{{x}}<br>outside the sliding window of {window} tokens: "
                      f"masked, weight 0<extra></extra>",
    )


def pattern_heatmap(
    pattern: np.ndarray,
    tokens: Sequence[str],
    *,
    query_start: int = 0,
    key_start: int = 0,
    edges: tuple[np.ndarray, np.ndarray] | None = None,
    max_cells: int = MAX_CELLS,
    title: str = "",
    gamma: float = 1.0,
    window: int | None = None,
) -> go.Figure:
    """Attention weights as a heatmap, query tokens as rows, key tokens as columns; future keys blank,
    keys outside a sliding window of `window` keys (None: no window) in WINDOW_COLOUR.
    gamma < 1 stretches the colours of small weights (see `weight_colorscale`).

    pattern (R, C): query rows query_start.., key columns key_start.. of `tokens` (the whole
    prompt's tokens). A side longer than max_cells is max-pooled into blocks. Or pass an
    already pooled matrix with edges = (row_edges, col_edges) (positions from query_start /
    key_start, e.g. from `analysis.heads.pooled_pattern`). Pooled hovers say "max weight"
    and show position ranges.
    """
    pattern = np.asarray(pattern, dtype=np.float32)
    if pattern.ndim != 2 or 0 in pattern.shape:
        raise ValueError(f"pattern must be a non-empty (queries, keys) matrix, got shape {pattern.shape}.")
    if edges is None:
        R, C = pattern.shape
        if query_start + R > len(tokens) or key_start + C > len(tokens):
            raise ValueError(f"A ({R}, {C}) window at ({query_start}, {key_start}) does not fit {len(tokens)} tokens.")
        future, outside = masked_blocks(np.arange(R + 1), np.arange(C + 1), window, query_start, key_start)
        z = np.where(future | outside, np.nan, pattern)
        if R > max_cells or C > max_cells:
            z, row_edges, col_edges = block_max(z, max_cells)
            edges = (row_edges, col_edges)
    else:
        row_edges, col_edges = (np.asarray(e) for e in edges)
        if pattern.shape != (len(row_edges) - 1, len(col_edges) - 1):
            raise ValueError(f"A pooled pattern of shape {pattern.shape} needs {pattern.shape[0] + 1} row and "
                             f"{pattern.shape[1] + 1} column edges, got {len(row_edges)} and {len(col_edges)}.")
        if query_start + row_edges[-1] > len(tokens) or key_start + col_edges[-1] > len(tokens):
            raise ValueError(f"The pooled blocks reach past the {len(tokens)} tokens.")
        z = pattern
    if edges is not None:
        y = range_labels(edges[0], tokens[query_start:], query_start)
        x = range_labels(edges[1], tokens[key_start:], key_start)
        hover = "queries: %{y}<br>keys: %{x}<br>max weight: %{z:.3f}<extra></extra>"
    else:
        labels = token_labels(tokens)
        y, x = labels[query_start : query_start + z.shape[0]], labels[key_start : key_start + z.shape[1]]
        hover = "query: %{y}<br>key: %{x}<br>weight: %{z:.3f}<extra></extra>"
    fig = heatmap(z, x, y, title=title, x_title="key token (attended to)", y_title="query token (attending)",
                  zmin=0.0, zmax=1.0, hovertemplate=hover)
    fig.update_traces(colorbar_title="weight", colorscale=weight_colorscale(gamma))
    if window is not None:
        cells = edges if edges is not None else (np.arange(z.shape[0] + 1), np.arange(z.shape[1] + 1))
        outside = masked_blocks(*cells, window, query_start, key_start)[1] & np.isnan(z)
        if outside.any():
            fig.add_trace(window_overlay(outside, x, y, window))
    fig.update_layout(height=int(np.clip(200 + 14 * len(y), 320, 800)), plot_bgcolor="#f4f4f4")
    if max(len(x), len(y)) > 48:
        fig.update_xaxes(showticklabels=len(x) <= 128, tickfont_size=8)
        fig.update_yaxes(showticklabels=len(y) <= 128, tickfont_size=8)
    return fig


def stages_figure(
    stages: Mapping[str, np.ndarray], tokens: Sequence[str], start: int = 0, window: int | None = None
) -> go.Figure:
    """(w, w) heatmaps side by side, raw → scaled (→ soft-capped) → masked → softmax, numbered, each
    with its own colour scale. stages: "raw", "scaled", optionally "softcapped", "masked" (-inf above
    the diagonal, drawn blank; with a sliding window of `window` keys, -inf also for older keys, drawn
    in WINDOW_COLOUR in the last two panels), "softmax" (what analysis.heads.stage_window returns);
    the panels show positions start..start+w-1 of `tokens`."""
    required = [name for name in STAGE_TITLES if name not in OPTIONAL_STAGES]
    if not set(required) <= set(stages) <= set(STAGE_TITLES):
        raise ValueError(f"stages needs the keys {required} (and optionally {list(OPTIONAL_STAGES)}), "
                         f"got {list(stages)}.")
    shapes = {np.asarray(s).shape for s in stages.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2 or len(set(next(iter(shapes)))) != 1:
        raise ValueError(f"Every stage must be the same square (w, w) matrix, got shapes {shapes}.")
    w = next(iter(shapes))[0]
    if start + w > len(tokens):
        raise ValueError(f"A window of {w} tokens at {start} does not fit {len(tokens)} tokens.")
    labels = token_labels(tokens)[start : start + w]
    small = w > 24  # too many tokens for tick labels
    names = [name for name in STAGE_TITLES if name in stages]
    titles = dict(STAGE_TITLES, masked="mask the future and beyond the window") if window else STAGE_TITLES
    outside = masked_blocks(np.arange(w + 1), np.arange(w + 1), window, start, start)[1] if window else None
    n = len(names)
    fig = make_subplots(rows=1, cols=n, subplot_titles=[f"{i}. {titles[k]}" for i, k in enumerate(names, start=1)],
                        horizontal_spacing=0.035)
    for i, name in enumerate(names, start=1):
        z = np.asarray(stages[name], dtype=np.float32)
        z = np.where(np.isfinite(z), z, np.nan)
        finite = z[np.isfinite(z)]
        if name == "softmax":
            lo, hi, scale = 0.0, 1.0, "Blues"
        else:
            bound = float(np.abs(finite).max()) if finite.size else 1.0
            lo, hi, scale = -bound, bound, "RdBu_r"
        axis = "coloraxis" if i == 1 else f"coloraxis{i}"
        if outside is not None and name in ("masked", "softmax"):
            z = np.where(outside, np.nan, z)
        fig.add_trace(go.Heatmap(
            z=z, x=labels, y=labels, coloraxis=axis,
            hovertemplate="query: %{y}<br>key: %{x}<br>value: %{z:.3f}<extra>" + name + "</extra>",
        ), row=1, col=i)
        if outside is not None and outside.any() and name in ("masked", "softmax"):
            fig.add_trace(window_overlay(outside, labels, labels, window), row=1, col=i)
        fig.update_layout({axis: dict(
            colorscale=scale, cmin=lo, cmax=hi,
            colorbar=dict(orientation="h", x=(i - 0.5) / n, xanchor="center", y=-0.02 if small else -0.3,
                          yanchor="top", len=0.2, thickness=10),
        )})
    fig.update_xaxes(type="category", showticklabels=not small, tickfont_size=8)
    fig.update_yaxes(type="category", autorange="reversed", showticklabels=False, tickfont_size=8)
    fig.update_yaxes(showticklabels=not small, row=1, col=1)
    fig.update_layout(height=440 if small else 500, margin=dict(l=10, r=10, t=PANELS_TOP_PX, b=40 if small else 110),
                      plot_bgcolor="#f4f4f4")
    return fig


def _vector_rows(fig: go.Figure, z: np.ndarray, y: Sequence[str], row: int, coloraxis: str, name: str) -> None:
    fig.add_trace(go.Heatmap(
        z=np.asarray(z, dtype=np.float32), x=np.arange(z.shape[1]), y=list(y), coloraxis=coloraxis,
        hovertemplate="%{y}<br>dim %{x}: %{z:.4f}<extra>" + name + "</extra>",
    ), row=row, col=1)
    fig.update_yaxes(type="category", autorange="reversed", row=row, col=1)


def _shown_labels(b: QueryBreakdown, tokens: Sequence[str]) -> list[str]:
    labels = token_labels(tokens)
    return [labels[j] for j in b.shown]


def query_vectors_figure(b: QueryBreakdown, tokens: Sequence[str]) -> go.Figure:
    """The query vector q (hs,) on top of the keys it meets (n_shown, hs), one colour scale."""
    labels = _shown_labels(b, tokens)
    n = len(labels)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.03, row_heights=[1.0, max(1.0, n)])
    _vector_rows(fig, b.q[None, :], [f"q @ {token_labels(tokens)[b.position]}"], 1, "coloraxis", "q")
    _vector_rows(fig, b.keys, labels, 2, "coloraxis", "k")
    bound = float(max(np.abs(b.q).max(), np.abs(b.keys).max(), 1e-9))
    fig.update_layout(coloraxis=dict(colorscale="RdBu_r", cmin=-bound, cmax=bound), height=min(900, 200 + 16 * n),
                      margin=dict(l=10, r=10, t=40, b=10), title="query q (top row) and the keys k it meets")
    fig.update_xaxes(title_text="dimension of the head (0..d_head-1)", row=2, col=1)
    return fig


def weights_figure(
    b: QueryBreakdown, tokens: Sequence[str], max_labelled: int = 256, window: int | None = None
) -> go.Figure:
    """The attention weights of one query over keys 0..position, as bars (sum = 1); keys a sliding
    window of `window` keys hides are shaded in WINDOW_COLOUR."""
    n = len(b.weights)
    if n <= max_labelled:
        x = token_labels(tokens)[:n]
        fig = go.Figure(go.Bar(x=x, y=b.weights.astype(np.float32),
                               hovertemplate="key %{x}<br>weight %{y:.4f}<extra></extra>"))
        fig.update_xaxes(type="category", tickangle=-60, showticklabels=n <= 96)
    else:
        fig = go.Figure(go.Bar(x=np.arange(n), y=b.weights.astype(np.float32),
                               hovertemplate="key position %{x}<br>weight %{y:.4f}<extra></extra>"))
        fig.update_xaxes(title_text="key position")
    fig.update_layout(title=f"weights of query {token_labels(tokens)[b.position]} (softmax of its scores)",
                      yaxis_title="weight", height=320, margin=dict(l=10, r=10, t=40, b=10))
    hidden = int(masked_blocks(np.array([b.position, b.position + 1]), np.arange(n + 1), window)[1].sum())
    if hidden:  # keys 0..hidden-1 are outside the window: a band behind the bars
        fig.add_vrect(x0=-0.5, x1=hidden - 0.5, fillcolor=WINDOW_COLOUR, opacity=0.5, layer="below", line_width=0,
                      annotation_text=f"outside the window ({window} keys)", annotation_position="top left")
    return fig


def weighted_sum_figure(b: QueryBreakdown, tokens: Sequence[str]) -> go.Figure:
    """Rows weight_j · v_j of the shown keys (+ one row for the rest, if any) above their sum z."""
    labels = [f"{w:.3f} × v[{lab}]" for w, lab in zip(b.weights[b.shown], _shown_labels(b, tokens))]
    rows = b.weighted
    n_rest = len(b.weights) - len(b.shown)
    if n_rest:
        labels.append(f"the other {n_rest} keys (weight {b.weights.sum() - b.weights[b.shown].sum():.3f})")
        rows = np.vstack([rows, b.rest[None, :]])
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.03,
                        row_heights=[max(1.0, len(labels)), 1.0])
    _vector_rows(fig, rows, labels, 1, "coloraxis", "weight·v")
    _vector_rows(fig, b.z[None, :], [f"z @ {token_labels(tokens)[b.position]}"], 2, "coloraxis", "z")
    bound = float(max(np.abs(rows).max(), np.abs(b.z).max(), 1e-9))
    fig.update_layout(coloraxis=dict(colorscale="RdBu_r", cmin=-bound, cmax=bound),
                      height=min(900, 220 + 16 * len(labels)), margin=dict(l=10, r=10, t=40, b=10),
                      title="weighted values a_j·v_j (rows) and their sum z (bottom row)")
    fig.update_xaxes(title_text="dimension of the head (0..d_head-1)", row=2, col=1)
    return fig


def lines_figure(
    pattern: np.ndarray,
    tokens: Sequence[str],
    start: int = 0,
    highlight: int | None = None,
    n_buckets: int = 8,
    min_weight: float = 0.01,
) -> go.Figure:
    """bertviz-style lines: queries on the left, keys on the right, a line per (query, key)
    with weight >= min_weight, opacity and width growing with the weight.

    pattern (w, w): queries and keys start..start+w-1 (w <= 64). Lines are grouped into
    n_buckets weight buckets, one scatter trace each (segments separated by NaN); the
    lines of query position `highlight` are drawn again on top in orange.
    """
    pattern = np.asarray(pattern, dtype=np.float32)
    if pattern.ndim != 2 or pattern.shape[0] != pattern.shape[1]:
        raise ValueError(f"pattern must be a square (w, w) window, got shape {pattern.shape}.")
    w = pattern.shape[0]
    if w > MAX_LINES_TOKENS:
        raise ValueError(f"The lines view draws at most {MAX_LINES_TOKENS} tokens, got {w}: pick a window.")
    if start + w > len(tokens):
        raise ValueError(f"A window of {w} tokens at {start} does not fit {len(tokens)} tokens.")
    labels = token_labels(tokens)[start : start + w]
    q_idx, k_idx = np.nonzero((pattern >= min_weight) & ~future_mask(w, w))
    weights = pattern[q_idx, k_idx]
    bucket = np.minimum((weights * n_buckets).astype(int), n_buckets - 1)
    fig = go.Figure()

    def add_lines(sel: np.ndarray, level: int, color: str, name: str) -> None:
        qs, ks = q_idx[sel], k_idx[sel]
        x = np.tile(np.array([0.0, 1.0, np.nan]), len(qs))
        y = np.column_stack([-qs, -ks, np.full(len(qs), np.nan)]).astype(np.float32).ravel()
        level_weight = (level + 1) / n_buckets
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="lines", hoverinfo="skip", showlegend=False, name=name,
            line=dict(color=color, width=0.5 + 3.5 * level_weight), opacity=0.15 + 0.85 * level_weight,
        ))

    for level in range(n_buckets):
        sel = bucket == level
        if sel.any():
            add_lines(sel, level, "#1f77b4", f"weight ≥ {level / n_buckets:.2f}")
    if highlight is not None and start <= highlight < start + w:
        for level in range(n_buckets):
            sel = (bucket == level) & (q_idx == highlight - start)
            if sel.any():
                add_lines(sel, level, "#ff7f0e", f"query {highlight}")
    ys = -np.arange(w, dtype=np.float32)
    for x, side, anchor in ((0.0, "query", "middle left"), (1.0, "key", "middle right")):
        fig.add_trace(go.Scatter(
            x=np.full(w, x), y=ys, mode="markers+text", text=labels, textposition=anchor,
            marker=dict(size=5, color="#555"), showlegend=False, name=side,
            hovertemplate=side + " %{text}<extra></extra>",
        ))
    fig.update_xaxes(visible=False, range=[-0.7, 1.7])
    fig.update_yaxes(visible=False, range=[-w + 0.3, 0.7])
    fig.update_layout(height=max(260, 22 * w + 60), margin=dict(l=10, r=10, t=40, b=10), plot_bgcolor="white",
                      title="queries (left) → keys (right); thicker, darker = more attention")
    return fig


def layer_ticks(windows: Sequence[int | None] | None, n_layer: int, sep: str = "<br>") -> list[str]:
    """"L3" per layer, marked "local" (sliding window) or "global" when the model has local layers."""
    if windows is None or all(w is None for w in windows):
        return [f"L{layer}" for layer in range(n_layer)]
    if len(windows) != n_layer:
        raise ValueError(f"Give one window per layer: {len(windows)} for {n_layer} layers.")
    return [f"L{layer}{sep}{'local' if w else 'global'}" for layer, w in enumerate(windows)]


def overview_figure(
    tiles: np.ndarray, focus: tuple[int, int] | None = None, hover_values: np.ndarray | None = None,
    value_name: str = "entropy (bits)", windows: Sequence[int | None] | None = None,
) -> go.Figure:
    """Every head's pattern as one small tile: tiles (L, nh, n, n) block means -> one heatmap
    with a column of tiles per layer (left to right) and a row per head (top to bottom), each
    tile scaled to its own maximum, one blank pixel between tiles.

    Coordinates are in layer (x) and head (y) units: a cell of layer l, head h lies within
    0.5 of (l, h). A transparent marker at each tile centre makes heads clickable (plotly
    selects points, not heatmap cells); `focus` (layer, head) gets a red frame.
    hover_values (L, nh), if given, shows in the hover as value_name. windows: per layer its sliding
    window (None: global); local layers are marked on the axis, in the hover and by an orange band.
    """
    tiles = np.asarray(tiles, dtype=np.float32)
    if tiles.ndim != 4 or tiles.shape[2] != tiles.shape[3] or 0 in tiles.shape:
        raise ValueError(f"tiles must be (layers, heads, n, n), got shape {tiles.shape}.")
    L, nh, n, _ = tiles.shape
    values = np.zeros((L, nh)) if hover_values is None else np.asarray(hover_values, dtype=np.float64)
    if values.shape != (L, nh):
        raise ValueError(f"hover_values must be ({L}, {nh}), got {values.shape}.")
    peak = tiles.max(axis=(2, 3), keepdims=True)
    scaled = tiles / np.where(peak > 0, peak, 1.0)
    image = np.full((nh, n + 1, L, n + 1), np.nan, dtype=np.float32)  # (head, query, layer, key)
    image[:, :n, :, :n] = scaled.transpose(1, 2, 0, 3)
    image = image.reshape(nh * (n + 1), L * (n + 1))[:-1, :-1]
    coords = lambda count: ((np.arange(count * (n + 1) - 1) - (n - 1) / 2) / (n + 1)).astype(np.float32)
    fig = go.Figure(go.Heatmap(z=image, x=coords(L), y=coords(nh), colorscale="Blues", zmin=0, zmax=1,
                               hoverinfo="skip", showscale=False))
    layers, heads = np.meshgrid(np.arange(L), np.arange(nh), indexing="ij")
    tile_px = float(np.clip(1000 / L, 24, 64))
    fig.add_trace(go.Scatter(
        x=layers.ravel().astype(np.float32), y=heads.ravel().astype(np.float32), mode="markers",
        marker=dict(symbol="square", size=tile_px * 0.8, color="rgba(0,0,0,0)"),
        customdata=np.stack([layers.ravel(), heads.ravel(), values.ravel()], axis=1),
        text=np.repeat(_layer_kinds(windows, L), nh).tolist(),
        hovertemplate=("L%{customdata[0]}H%{customdata[1]}%{text}" +
                       ("" if hover_values is None else f"<br>{value_name}: %{{customdata[2]:.3f}}") +
                       "<br>click to focus on this head<extra></extra>"),
        selected=dict(marker=dict(color="rgba(255,127,14,0.35)")), unselected=dict(marker=dict(opacity=1)),
        showlegend=False, name="heads",
    ))
    if focus is not None:
        fig.add_trace(go.Scatter(
            x=[focus[0]], y=[focus[1]], mode="markers", hoverinfo="skip", showlegend=False, name="focus",
            marker=dict(symbol="square-open", size=tile_px * 1.05, color="red", line=dict(width=2)),
        ))
    top = -0.55  # the axis' upper end; with local layers, room above the tiles for their band
    for layer, w in enumerate(windows or []):
        if w:
            top = -0.8
            fig.add_shape(type="rect", x0=layer - 0.45, x1=layer + 0.45, y0=-0.78, y1=-0.56, line_width=0,
                          fillcolor=WINDOW_COLOUR)
    fig.update_xaxes(tickvals=np.arange(L), ticktext=layer_ticks(windows, L), side="top", title_text="layer",
                     range=[-0.55, L - 0.45], showgrid=False, zeroline=False, constrain="domain")
    fig.update_yaxes(tickvals=np.arange(nh), ticktext=[f"H{h}" for h in range(nh)], title_text="head",
                     range=[nh - 0.45, top], showgrid=False, zeroline=False, scaleanchor="x", scaleratio=1,
                     constrain="domain")
    fig.update_layout(height=int(90 + tile_px * nh), margin=dict(l=10, r=10, t=50, b=10), plot_bgcolor="white",
                      hovermode="closest", hoverdistance=int(tile_px), clickmode="event+select", dragmode=False)
    return fig


def _layer_kinds(windows: Sequence[int | None] | None, n_layer: int) -> list[str]:
    """Per layer a hover suffix: " · local (window w)" / " · global", or "" without local layers."""
    if windows is None or all(w is None for w in windows):
        return [""] * n_layer
    return [f" · local (window {w})" if w else " · global" for w in windows]


def overview_pick(point: Mapping, n_layer: int, n_head: int) -> tuple[int, int] | None:
    """(layer, head) of a selected overview point (a dict with "x" and "y"), or None if outside."""
    try:
        layer, head = int(round(float(point["x"]))), int(round(float(point["y"])))
    except (KeyError, TypeError, ValueError):
        return None
    if 0 <= layer < n_layer and 0 <= head < n_head:
        return layer, head
    return None
