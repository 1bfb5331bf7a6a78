"""Figures of a training run: losses over steps, head scores over steps, a head's pattern and the position
table's similarity at chosen steps. Pure: numbers in, a figure out."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gptviz.plots.common import token_labels


def _mark_phase(fig: go.Figure, phase: int | None) -> None:
    if phase is not None:
        fig.add_vline(x=phase, line_dash="dash", line_color="#dc2626", annotation_text=f"phase change ≈ step {phase}",
                      annotation_position="top right")


def loss_figure(steps: Sequence[int], curves: dict[str, Sequence[float]], *, floor: float | None = None,
                phase: int | None = None, title: str = "Loss") -> go.Figure:
    """One line per named curve over steps (nats); `floor`: a dotted line (ln vocab: guessing)."""
    fig = go.Figure()
    for name, values in curves.items():
        if len(values) != len(steps):
            raise ValueError(f"{name}: {len(values)} values for {len(steps)} steps.")
        fig.add_trace(go.Scatter(x=list(steps), y=np.asarray(values, dtype=float), mode="lines+markers", name=name,
                                 marker_size=4, hovertemplate="step %{x}<br>%{y:.3f} nats<extra>" + name + "</extra>"))
    if floor is not None:
        fig.add_hline(y=floor, line_dash="dot", line_color="#6b7280",
                      annotation_text=f"ln vocab = {floor:.2f} (guessing)", annotation_position="bottom left")
    _mark_phase(fig, phase)
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="cross-entropy (nats)", legend_orientation="h",
                      legend_y=-0.25, margin=dict(l=10, r=10, t=50, b=10), height=360)
    return fig


def head_scores_figure(steps: Sequence[int], scores: np.ndarray, *, title: str, phase: int | None = None,
                       highlight: tuple[int, int] | None = None) -> go.Figure:
    """scores (S, L, nh) over steps: a line per head "L{l}H{h}", coloured by layer; `highlight` drawn thick."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 3 or scores.shape[0] != len(steps):
        raise ValueError(f"scores must be (steps, layers, heads) with {len(steps)} steps, not {scores.shape}.")
    palette = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2")
    fig = go.Figure()
    for layer in range(scores.shape[1]):
        for head in range(scores.shape[2]):
            thick = highlight == (layer, head)
            fig.add_trace(go.Scatter(
                x=list(steps), y=scores[:, layer, head], mode="lines", name=f"L{layer}H{head}",
                line=dict(color=palette[layer % len(palette)], width=4 if thick else 1.5),
                opacity=1.0 if thick or highlight is None else 0.6,
                hovertemplate="step %{x}<br>%{y:.2f}<extra>L" + f"{layer}H{head}</extra>"))
    _mark_phase(fig, phase)
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="score", yaxis_range=[0, 1.02],
                      margin=dict(l=10, r=10, t=50, b=10), height=320)
    return fig


def snapshots_figure(matrices: Sequence[np.ndarray], steps: Sequence[int], tokens: Sequence[str] | None, *,
                     title: str, colorscale: str = "Blues", zmin: float = 0.0, zmax: float = 1.0) -> go.Figure:
    """The same (T, T) matrix at several steps side by side, one colour scale (a head's pattern, or
    the position table's cosine similarity with tokens None: positions)."""
    if len(matrices) != len(steps) or not matrices:
        raise ValueError(f"{len(matrices)} matrices for {len(steps)} steps.")
    T = matrices[0].shape[0]
    labels = token_labels(tokens) if tokens is not None else [str(i) for i in range(T)]
    fig = make_subplots(rows=1, cols=len(steps), subplot_titles=[f"step {s}" for s in steps],
                        horizontal_spacing=0.03)
    for i, m in enumerate(matrices):
        fig.add_trace(go.Heatmap(z=np.asarray(m, dtype=np.float32), x=labels, y=labels, colorscale=colorscale,
                                 zmin=zmin, zmax=zmax, showscale=i == len(matrices) - 1,
                                 hovertemplate="query %{y}<br>key %{x}<br>%{z:.3f}<extra></extra>"),
                      row=1, col=i + 1)
        fig.update_yaxes(autorange="reversed", showticklabels=i == 0, row=1, col=i + 1)
        fig.update_xaxes(showticklabels=False, row=1, col=i + 1)
    fig.update_layout(title=title, height=330, margin=dict(l=10, r=10, t=70, b=10))
    return fig
