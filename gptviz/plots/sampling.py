"""Figures of the next-token distribution: the top tokens, and what sampling settings do to them."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from gptviz.plots.common import show_whitespace

ACTUAL_COLOUR = "#e4572e"
BAR_COLOUR = "#4c78a8"


def rank_labels(tokens: Sequence[str]) -> list[str]:
    """Unique bar labels "rank. token" (whitespace made visible)."""
    return [f"{i + 1}. {show_whitespace(t)}" for i, t in enumerate(tokens)]


def top_tokens_figure(tokens: Sequence[str], probs: np.ndarray, logits: np.ndarray, actual: np.ndarray | None = None,
                      title: str = "") -> go.Figure:
    """Horizontal bars of the top tokens' probabilities, most likely on top.

    tokens (n,), probs (n,), logits (n,) (shown on hover); actual (n,) bool marks the token that
    really comes next (drawn in another colour).
    """
    probs = np.asarray(probs, dtype=np.float32)
    logits = np.asarray(logits, dtype=np.float32)
    n = len(tokens)
    if probs.shape != (n,) or logits.shape != (n,):
        raise ValueError(f"probs {probs.shape} and logits {logits.shape} must both be ({n},), one per token.")
    actual = np.zeros(n, dtype=bool) if actual is None else np.asarray(actual, dtype=bool)
    if actual.shape != (n,):
        raise ValueError(f"actual has shape {actual.shape}, expected ({n},).")
    colours = np.where(actual, ACTUAL_COLOUR, BAR_COLOUR)
    fig = go.Figure(go.Bar(
        x=probs, y=rank_labels(tokens), orientation="h", marker_color=colours, customdata=logits,
        text=[f"{p:.1%}" for p in probs], textposition="outside",
        hovertemplate="%{y}<br>p = %{x:.4f}<br>logit = %{customdata:.3f}<extra></extra>",
    ))
    fig.update_layout(title=title, xaxis_title="probability", height=max(300, 24 * n + 120),
                      margin=dict(l=10, r=40, t=40, b=10))
    fig.update_xaxes(range=[0, min(1.0, float(probs.max(initial=0)) * 1.25 + 1e-3)])
    fig.update_yaxes(autorange="reversed", type="category")
    return fig


def distribution_figure(tokens: Sequence[str], original: np.ndarray, tempered: np.ndarray, filtered: np.ndarray,
                        kept: np.ndarray, temperature: float, log_scale: bool = False) -> go.Figure:
    """Grouped bars per token: softmax at T = 1, after temperature, after top-k/top-p and
    renormalising. All (n,); kept (n,) bool, dropped tokens' labels get a ✗. log_scale: a
    logarithmic probability axis (dropped tokens, at 0, then have no bar)."""
    arrays = [np.asarray(a, dtype=np.float32) for a in (original, tempered, filtered)]
    kept = np.asarray(kept, dtype=bool)
    n = len(tokens)
    if any(a.shape != (n,) for a in arrays) or kept.shape != (n,):
        raise ValueError(f"original, tempered, filtered and kept must all be ({n},), one per token.")
    labels = [label if k else f"{label} ✗" for label, k in zip(rank_labels(tokens), kept)]
    fig = go.Figure()
    names = ["softmax(z), T = 1", f"softmax(z / {temperature:g})", "after top-k / top-p, renormalised"]
    colours = ["#bab0ac", "#72b7b2", "#4c78a8"]
    for values, name, colour in zip(arrays, names, colours):
        fig.add_trace(go.Bar(x=labels, y=values, name=name, marker_color=colour,
                             hovertemplate="%{x}<br>" + name + ": %{y:.4f}<extra></extra>"))
    fig.update_layout(barmode="group", yaxis_title="probability", legend=dict(orientation="h", y=1.12),
                      margin=dict(l=10, r=10, t=40, b=10), height=440)
    if log_scale:
        fig.update_yaxes(type="log", exponentformat="power")
    fig.update_xaxes(type="category", tickangle=-45)
    return fig
