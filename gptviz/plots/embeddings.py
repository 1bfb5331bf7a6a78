"""Figures of the model's input vectors: embedding heatmaps, norms, cosine similarity, PCA.

Pure builders: numpy arrays and token strings in, a plotly figure out; numbers travel as
typed numpy arrays (binary in the figure JSON), never as long Python lists.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from gptviz.plots.common import heatmap, show_whitespace, token_labels

BAR_MAX_TOKENS = 256  # above this, per-token bars become lines over positions
TEXT_MAX_POINTS = 60  # scatter points get text labels up to this many


def embedding_heatmap(matrix: np.ndarray, tokens: Sequence[str], *, title: str = "", first_position: int = 0
                      ) -> go.Figure:
    """matrix (T, C): one row per token, one column per dimension, diverging colours around 0.

    tokens (T,) label the rows "position·token", counting from first_position.
    """
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(tokens):
        raise ValueError(f"matrix has shape {matrix.shape}; it needs one row per token ({len(tokens)}).")
    labels = [f"{first_position + i}·{show_whitespace(t)}" for i, t in enumerate(tokens)]
    bound = float(np.abs(matrix).max(initial=0.0)) or 1.0
    fig = heatmap(matrix, [str(d) for d in range(matrix.shape[1])], labels, title=title, x_title="dimension",
                  y_title="token", colorscale="RdBu_r", zmin=-bound, zmax=bound, zmid=0.0,
                  hovertemplate="token %{y}<br>dim %{x}<br>value %{z:.4f}<extra></extra>")
    fig.update_layout(height=min(900, 160 + 18 * matrix.shape[0]))
    return fig


def norms_figure(norms: np.ndarray, names: Sequence[str], tokens: Sequence[str]) -> go.Figure:
    """norms (T, k): one bar series per name (k of them), one group per token.

    Above BAR_MAX_TOKENS tokens the series are lines over the position (no token labels).
    """
    norms = np.asarray(norms, dtype=np.float64)
    if norms.ndim != 2 or norms.shape != (len(tokens), len(names)):
        raise ValueError(f"norms has shape {norms.shape}; expected ({len(tokens)}, {len(names)}).")
    fig = go.Figure()
    if len(tokens) <= BAR_MAX_TOKENS:
        labels = token_labels(tokens)
        for j, name in enumerate(names):
            fig.add_trace(go.Bar(x=labels, y=norms[:, j], name=name,
                                 hovertemplate="%{x}<br>|x| = %{y:.4f}<extra>" + name + "</extra>"))
        fig.update_layout(barmode="group")
        fig.update_xaxes(type="category", title="token")
    else:
        positions = np.arange(len(tokens))
        for j, name in enumerate(names):
            fig.add_trace(go.Scatter(x=positions, y=norms[:, j], name=name, mode="lines"))
        fig.update_xaxes(title="position")
    fig.update_layout(title="L2 norm of each token's vector", yaxis_title="‖x‖₂", height=380,
                      margin=dict(l=10, r=10, t=70, b=10),
                      legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1.0, xanchor="right"))
    return fig


def cosine_heatmap(sim: np.ndarray, tokens: Sequence[str], *, title: str = "", first_position: int = 0
                   ) -> go.Figure:
    """sim (T, T) cosine similarities in [-1, 1] between tokens, diverging colours around 0."""
    sim = np.asarray(sim, dtype=np.float32)
    if sim.shape != (len(tokens), len(tokens)):
        raise ValueError(f"sim has shape {sim.shape}; expected ({len(tokens)}, {len(tokens)}).")
    labels = [f"{first_position + i}·{show_whitespace(t)}" for i, t in enumerate(tokens)]
    fig = heatmap(sim, labels, labels, title=title, x_title="token", y_title="token", colorscale="RdBu_r",
                  zmin=-1.0, zmax=1.0, zmid=0.0,
                  hovertemplate="%{y} vs %{x}<br>cos = %{z:.3f}<extra></extra>")
    fig.update_layout(height=min(800, 220 + 16 * len(tokens)))
    return fig


def pca_scatter(coords: np.ndarray, explained: np.ndarray, tokens: Sequence[str] | None = None, *,
                title: str = "", color_title: str = "position", lines: bool = False) -> go.Figure:
    """coords (N, 2) points in the first two principal components, coloured by index (position).

    explained (≥2,) variance shares for the axis titles; tokens (N,) name the points in the hover
    ("3·␣John") and, when N <= TEXT_MAX_POINTS, next to them (point_texts). lines joins consecutive points.
    """
    coords = np.asarray(coords, dtype=np.float32)
    explained = np.asarray(explained, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"coords must be (N, 2), got {coords.shape}.")
    if tokens is not None and len(tokens) != coords.shape[0]:
        raise ValueError(f"tokens ({len(tokens)}) must match the points ({coords.shape[0]}).")
    n = coords.shape[0]
    show_text = tokens is not None and n <= TEXT_MAX_POINTS
    shares = list(explained[:2]) + [0.0] * (2 - min(2, len(explained)))
    fig = go.Figure(go.Scatter(
        x=coords[:, 0], y=coords[:, 1], mode=("lines+" if lines else "") + ("markers+text" if show_text else "markers"),
        text=point_texts(coords, tokens) if show_text else None, textposition="top center",
        hovertext=token_labels(tokens) if tokens is not None else None,
        marker=dict(color=np.arange(n), colorscale="Viridis", size=9 if n <= 300 else 5,
                    colorbar=dict(title=color_title), showscale=True),
        line=dict(color="rgba(120,120,120,0.4)", width=1),
        hovertemplate=("%{hovertext}<br>" if tokens is not None else "point %{marker.color}<br>")
        + "PC1 %{x:.3f}<br>PC2 %{y:.3f}<extra></extra>",
    ))
    fig.update_layout(title=title, xaxis_title=f"PC1 ({shares[0]:.1%} of variance)",
                      yaxis_title=f"PC2 ({shares[1]:.1%} of variance)", height=480,
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


def point_texts(coords: np.ndarray, tokens: Sequence[str], same_place: float = 0.005) -> list[str]:
    """The text drawn by each of the (N, 2) points: its token, with its position where the token comes
    more than once. Points closer than `same_place` of the plot's extent (a repeated token's identical
    embedding) share one text on the first of them, e.g. "␣John (3, 10)", so no two print over each other."""
    coords = np.asarray(coords, dtype=np.float64)
    extent = np.ptp(coords, axis=0) if len(coords) else np.zeros(2)
    cells = np.round(coords / (np.maximum(extent, 1e-12) * same_place))
    counts = {t: list(tokens).count(t) for t in set(tokens)}
    places: dict[tuple, list[int]] = {}
    for i, cell in enumerate(map(tuple, cells)):
        places.setdefault(cell, []).append(i)
    texts = [""] * len(tokens)
    for members in places.values():
        names = {tokens[i] for i in members}
        if len(names) == 1 and counts[tokens[members[0]]] > 1:
            texts[members[0]] = f"{show_whitespace(tokens[members[0]])} ({', '.join(map(str, members))})"
        else:
            texts[members[0]] = ", ".join(show_whitespace(tokens[i]) + (f" ({i})" if counts[tokens[i]] > 1 else "")
                                          for i in members)
    return texts
