"""Figures comparing attention heads: per-head score maps, patterns side by side, similarity."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gptviz.labels import head_label
from gptviz.plots.attention import layer_ticks, masked_blocks, range_labels, weight_colorscale, window_overlay
from gptviz.plots.common import PANELS_TOP_PX, cell_markers, token_labels

MAX_COMPARE_CELLS = 128  # each compared pattern is max-pooled to at most this many cells a side


def head_labels(n_layer: int, n_head: int) -> list[str]:
    """["L0H0", "L0H1", ...]: the heads in order layer·n_head + head."""
    return [head_label(l, h) for l in range(n_layer) for h in range(n_head)]


def layer_head_heatmap(
    values: np.ndarray,
    title: str = "",
    value_name: str = "score",
    *,
    colorscale: str = "Viridis",
    zmin: float | None = None,
    zmax: float | None = None,
    focus: tuple[int, int] | None = None,
    windows: Sequence[int | None] | None = None,
    clickable: bool = False,
    marked: Sequence[tuple[int, int]] = (),
) -> go.Figure:
    """values (n_layer, n_head) as a heatmap with layers as rows; NaN cells blank.
    Hover: "L3H2: 0.123 <value_name>". `focus` (layer, head) gets a red frame; `marked` heads (e.g. the
    heads compared) a ring. windows: per layer its sliding window (None: global); with local layers
    the rows are labelled local / global. clickable: transparent markers over the cells (customdata
    [layer, head, value], read back with plots.attribution.component_pick)."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"values must be (layers, heads), got shape {values.shape}.")
    L, nh = values.shape
    fig = go.Figure(go.Heatmap(
        z=values, x=np.arange(nh), y=np.arange(L), colorscale=colorscale, zmin=zmin, zmax=zmax,
        colorbar_title=value_name, hovertemplate="L%{y}H%{x}: %{z:.3f} " + value_name + "<extra></extra>",
    ))
    if marked:
        fig.add_trace(go.Scatter(x=[h for _, h in marked], y=[layer for layer, _ in marked], mode="markers",
                                 name="marked", showlegend=False, hoverinfo="skip",
                                 marker=dict(symbol="circle-open", size=12, color="black",
                                             line=dict(width=2, color="black"))))
    if clickable:
        layers, heads_ = np.meshgrid(np.arange(L), np.arange(nh), indexing="ij")
        fig.add_trace(cell_markers(heads_.ravel(), layers.ravel(),
                                   np.stack([layers.ravel(), heads_.ravel(), values.ravel()], axis=1),
                                   "L%{customdata[0]}H%{customdata[1]}: %{customdata[2]:.3f} " + value_name
                                   + "<extra></extra>"))
    if focus is not None:
        fig.add_shape(type="rect", x0=focus[1] - 0.5, x1=focus[1] + 0.5, y0=focus[0] - 0.5, y1=focus[0] + 0.5,
                      line=dict(color="red", width=2))
    fig.update_xaxes(title_text="head", tickvals=np.arange(nh) if nh <= 32 else None, showgrid=False)
    fig.update_yaxes(title_text="layer", tickvals=np.arange(L) if L <= 48 else None, autorange="reversed",
                     showgrid=False)
    if windows is not None and any(windows) and L <= 48:
        fig.update_yaxes(ticktext=layer_ticks(windows, L, sep=" "))
    fig.update_layout(title=title, height=min(900, 160 + 22 * L), margin=dict(l=10, r=10, t=40, b=10))
    return fig


def compare_patterns_figure(
    patterns: Sequence[np.ndarray],
    titles: Sequence[str],
    tokens: Sequence[str],
    edges: np.ndarray | None = None,
    *,
    cols: int = 4,
    gamma: float = 1.0,
    windows: Sequence[int | None] | None = None,
) -> go.Figure:
    """Several heads' patterns side by side on one shared colour scale (0..1); future keys blank,
    keys outside a head's sliding window (windows: one per pattern, None for global) in orange.
    gamma < 1 stretches the colours of small weights (`weight_colorscale`).

    patterns: (T, T) each, or each already max-pooled to (n, n) with the shared block
    `edges` (n+1,) (from `analysis.heads.pooled_pattern`); hovers then show position ranges.
    """
    if not patterns or len(patterns) != len(titles):
        raise ValueError(f"Give one title per pattern and at least one pattern ({len(patterns)} patterns, "
                         f"{len(titles)} titles).")
    T = len(tokens)
    n = T if edges is None else len(edges) - 1
    if edges is not None and edges[-1] != T:
        raise ValueError(f"The block edges end at {edges[-1]}, not at the {T} tokens.")
    for p in patterns:
        if np.shape(p) != (n, n):
            raise ValueError(f"Every pattern must be ({n}, {n}), got {np.shape(p)}.")
    windows = [None] * len(patterns) if windows is None else list(windows)
    if len(windows) != len(patterns):
        raise ValueError(f"Give one window per pattern ({len(windows)} windows, {len(patterns)} patterns).")
    cells = np.arange(n + 1) if edges is None else np.asarray(edges)
    labels = token_labels(tokens) if edges is None else range_labels(edges, tokens)
    what = "weight" if edges is None else "max weight"
    cols = max(1, min(cols, len(patterns)))
    rows = math.ceil(len(patterns) / cols)
    ticks = n <= 24  # token labels under each panel: the next row's titles need room below them
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(titles), horizontal_spacing=0.03,
                        vertical_spacing=(0.22 if ticks else 0.1) / rows * 2 if rows > 1 else 0.0)
    for i, (p, window) in enumerate(zip(patterns, windows)):
        future, outside = masked_blocks(cells, cells, window)
        z = np.asarray(p, dtype=np.float32)
        if edges is None:
            z = np.where(future | outside, np.nan, z)
        at = dict(row=i // cols + 1, col=i % cols + 1)
        fig.add_trace(go.Heatmap(
            z=z, x=labels, y=labels, coloraxis="coloraxis",
            hovertemplate=f"{titles[i]}<br>query: %{{y}}<br>key: %{{x}}<br>{what}: %{{z:.3f}}<extra></extra>",
        ), **at)
        if window is not None and (outside & np.isnan(z)).any():
            fig.add_trace(window_overlay(outside & np.isnan(z), labels, labels, window), **at)
    fig.update_xaxes(type="category", showticklabels=ticks, tickfont_size=8)
    fig.update_yaxes(type="category", autorange="reversed", showticklabels=False, tickfont_size=8)
    fig.update_yaxes(showticklabels=ticks, col=1)
    fig.update_annotations(font_size=12, yshift=4)  # the panel titles
    fig.update_layout(coloraxis=dict(colorscale=weight_colorscale(gamma), cmin=0.0, cmax=1.0, colorbar_title="weight"),
                      height=80 + rows * (340 if ticks else 300), margin=dict(l=10, r=10, t=PANELS_TOP_PX, b=10),
                      plot_bgcolor="#f4f4f4")
    return fig


def similarity_figure(js: np.ndarray, n_layer: int, n_head: int, title: str = "") -> go.Figure:
    """(N, N) mean JS divergence between heads (N = n_layer·n_head, order L0H0, L0H1, …).
    Hover "L3H2 vs L5H1: 0.120 bits"; ticks at each layer's first head."""
    js = np.asarray(js, dtype=np.float32)
    N = n_layer * n_head
    if js.shape != (N, N):
        raise ValueError(f"js must be ({N}, {N}) for {n_layer} layers × {n_head} heads, got {js.shape}.")
    labels = head_labels(n_layer, n_head)
    fig = go.Figure(go.Heatmap(
        z=js, x=labels, y=labels, colorscale="Viridis_r", zmin=0.0, zmax=1.0, colorbar_title="JS (bits)",
        hovertemplate="%{y} vs %{x}: %{z:.3f} bits<extra></extra>",
    ))
    step = max(1, math.ceil(n_layer / 30))
    ticks = [head_label(l, 0) for l in range(0, n_layer, step)]
    fig.update_xaxes(type="category", tickvals=ticks, ticktext=[t[:-2] for t in ticks], tickfont_size=9,
                     title_text="head (grouped by layer)")
    fig.update_yaxes(type="category", tickvals=ticks, ticktext=[t[:-2] for t in ticks], tickfont_size=9,
                     autorange="reversed")
    fig.update_layout(title=title, height=min(900, max(420, 160 + 3 * N)), margin=dict(l=10, r=10, t=40, b=10))
    return fig
