"""Figures of the logit lens: the top token at every layer and position, and one token's rise."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gptviz.plots.common import heatmap, show_whitespace

TEXT_CELLS_MAX_COLS = 40  # write the top token in the cells up to this many positions


def position_labels(tokens: Sequence[str], start: int = 0) -> list[str]:
    """Unique axis labels "position·token" for a window of tokens starting at `start`."""
    return [f"{start + i}·{show_whitespace(tok)}" for i, tok in enumerate(tokens)]


def lens_heatmap(
    top_probs: np.ndarray,
    top_tokens: Sequence[Sequence[str]],
    x_labels: Sequence[str],
    y_labels: Sequence[str],
    *,
    show_text: bool | None = None,
    title: str = "",
) -> go.Figure:
    """top_probs (rows, W) coloured 0..1; top_tokens (rows, W) the top token of each cell, shown
    on hover and, when show_text (default: W <= TEXT_CELLS_MAX_COLS), written in the cells.

    Rows are layers (y_labels, top to bottom), columns positions (x_labels).
    """
    probs = np.asarray(top_probs, dtype=np.float32)
    text = np.asarray([[show_whitespace(t) for t in row] for row in top_tokens], dtype=object)
    if probs.ndim != 2 or text.shape != probs.shape:
        raise ValueError(f"top_probs {probs.shape} and top_tokens {text.shape} must have the same 2-D shape.")
    fig = heatmap(
        probs, x_labels, y_labels, title=title, x_title="position (the prediction for the token after it)",
        y_title="residual stream read out", colorscale="Viridis", zmin=0.0, zmax=1.0,
        hovertemplate="%{y}<br>position %{x}<br>top token: %{text}<br>p = %{z:.3f}<extra></extra>",
    )
    if show_text is None:
        show_text = probs.shape[1] <= TEXT_CELLS_MAX_COLS
    fig.update_traces(text=text, texttemplate="%{text}" if show_text else None, textfont_size=10,
                      colorbar_title="p(top)")
    fig.update_layout(height=max(320, 22 * probs.shape[0] + 140))
    return fig


def target_by_layer_figure(probs: np.ndarray, ranks: np.ndarray, row_names: Sequence[str], token: str) -> go.Figure:
    """probs (rows,) and ranks (rows,) of one token read out at each layer (row_names), stacked:
    the probability on top (0..1), the rank below on a log axis with rank 1 at the top."""
    probs = np.asarray(probs, dtype=np.float32)
    ranks = np.asarray(ranks, dtype=np.int64)
    if probs.ndim != 1 or probs.shape != ranks.shape or probs.shape[0] != len(row_names):
        raise ValueError(f"probs {probs.shape}, ranks {ranks.shape} and {len(row_names)} row names must match.")
    label = show_whitespace(token)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.55, 0.45])
    fig.add_trace(go.Scatter(
        x=list(row_names), y=probs, mode="lines+markers", name=f"p({label})", customdata=ranks,
        hovertemplate="%{x}<br>p = %{y:.4g}<br>rank %{customdata:,}<extra></extra>",
    ), row=1, col=1)
    fig.add_trace(go.Scatter(
        x=list(row_names), y=ranks, mode="lines+markers", name="rank",
        hovertemplate="%{x}<br>rank %{y:,}<extra></extra>",
    ), row=2, col=1)
    top_rank = max(10, int(ranks.max(initial=1)))
    ticks = [10**k for k in range(int(np.ceil(np.log10(top_rank))) + 1)]
    fig.update_yaxes(title_text="probability", range=[0, 1.02], row=1, col=1)
    # an explicit reversed range (top rank 1 at the top): autorange on a reversed log axis drops the tick labels
    fig.update_yaxes(title_text="rank (1 = top)", type="log", range=[np.log10(ticks[-1] * 1.5), np.log10(0.7)],
                     tickvals=ticks, ticktext=[f"{t:,}" for t in ticks], row=2, col=1)
    fig.update_xaxes(type="category", row=1, col=1)
    fig.update_xaxes(type="category", title_text="residual stream read out", row=2, col=1)
    fig.update_layout(title=f"“{label}” layer by layer", showlegend=False, height=520,
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig
