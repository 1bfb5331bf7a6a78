"""Shared pieces of the figure builders: readable token labels and a fast heatmap."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

VISIBLE_WHITESPACE = str.maketrans({" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"})


def show_whitespace(token: str) -> str:
    """A token with spaces, newlines and tabs drawn as visible marks (␣ ↵ ⇥)."""
    return token.translate(VISIBLE_WHITESPACE)


def token_labels(tokens: Sequence[str]) -> list[str]:
    """Unique axis labels "i·token" (plotly merges equal category labels otherwise)."""
    return [f"{i}·{show_whitespace(tok)}" for i, tok in enumerate(tokens)]


def heatmap(
    z: np.ndarray,
    x_labels: Sequence[str],
    y_labels: Sequence[str],
    *,
    title: str = "",
    x_title: str = "",
    y_title: str = "",
    colorscale: str = "Blues",
    zmin: float | None = None,
    zmax: float | None = None,
    hovertemplate: str | None = None,
    zmid: float | None = None,
) -> go.Figure:
    """z (rows, cols) as a heatmap; rows labelled y_labels top to bottom, cols x_labels.

    z travels as a typed numpy array (plotly encodes it in binary), never a Python list.
    """
    z = np.asarray(z, dtype=np.float32)
    if z.ndim != 2 or z.shape != (len(y_labels), len(x_labels)):
        raise ValueError(f"z has shape {z.shape}, labels give ({len(y_labels)}, {len(x_labels)}).")
    fig = go.Figure(
        go.Heatmap(
            z=z, x=list(x_labels), y=list(y_labels), colorscale=colorscale, zmin=zmin, zmax=zmax, zmid=zmid,
            hovertemplate=hovertemplate or "row: %{y}<br>column: %{x}<br>value: %{z:.4g}<extra></extra>",
        )
    )
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, margin=dict(l=10, r=10, t=40, b=10))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return fig


def cell_markers(x: Sequence, y: Sequence, customdata: np.ndarray, hovertemplate: str, size: float = 14,
                 name: str = "cells") -> go.Scatter:
    """Transparent square markers at heatmap cell centres (x, y), one per cell: plotly selects points,
    not heatmap cells, so these make the cells clickable through Streamlit's on_select. Each click
    sends back the cell's customdata row (read it with picked_customdata)."""
    return go.Scatter(x=list(x), y=list(y), mode="markers", customdata=np.asarray(customdata), name=name,
                      marker=dict(symbol="square", size=size, color="rgba(0,0,0,0)"), hovertemplate=hovertemplate,
                      showlegend=False, selected=dict(marker=dict(color="rgba(255,127,14,0.35)")),
                      unselected=dict(marker=dict(opacity=1)))


def picked_customdata(point: Mapping) -> list | None:
    """The customdata of a clicked point as a list (Streamlit sends [a, b] as {"0": a, "1": b}), or None."""
    data = point.get("customdata") if isinstance(point, Mapping) else None
    if isinstance(data, Mapping):
        return [data[k] for k in sorted(data, key=int)]
    return list(data) if isinstance(data, (list, tuple)) else None
