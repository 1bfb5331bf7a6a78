"""Shared pieces of the figure builders: readable token labels and a fast heatmap."""
from __future__ import annotations

import unicodedata
from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

MODEBAR_PX = 32  # plotly's toolbar, at a figure's top right on hover: titles there need a top margin below it
INVISIBLE_CATEGORIES = ("Zs", "Zl", "Zp", "Cc", "Cf", "Co", "Cn")  # spaces, controls, format (zero-width), unassigned


class _Visible(dict):
    """str.translate's table for show_whitespace, filled in as characters are met."""

    def __missing__(self, code: int) -> str:
        char = chr(code)
        self[code] = f"⟨U+{code:04X}⟩" if unicodedata.category(char) in INVISIBLE_CATEGORIES else char
        return self[code]


VISIBLE_WHITESPACE = _Visible({ord(" "): "␣", ord("\n"): "↵", ord("\t"): "⇥", ord("\r"): "␍", 0xA0: "⍽"})


def show_whitespace(token: str) -> str:
    """A token with every character that prints as nothing made visible: a space ␣, a newline ↵, a tab
    ⇥, a carriage return ␍, a no-break space ⍽, and any other space, control or zero-width character
    as its code point, e.g. ⟨U+200B⟩."""
    return token.translate(VISIBLE_WHITESPACE)


TITLE_PX = 34  # the band title_above_axis takes at a figure's top
PANELS_TOP_PX = MODEBAR_PX + 28  # top margin of a figure whose first row of panel titles is its top line


def title_above_axis(text: str) -> dict:
    """The title of a figure whose x axis is on top: in a band of TITLE_PX at the figure's very top, so
    its top margin must be TITLE_PX + what the axis needs (tick labels, axis title); then the title
    never prints over them, whatever the width."""
    return dict(text=text, yref="container", y=1.0, yanchor="top", pad=dict(t=8))


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
