"""Figures of "Why this token?": per-head maps with an MLP column, layer × position maps, the
exact and gradient ablation maps against each other, and a run before and after a knock-out."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gptviz.plots.common import cell_markers, heatmap, picked_customdata, show_whitespace

DIVERGING = "RdBu"  # red: the component pushes the metric down; blue: up


def _limit(*arrays: np.ndarray) -> float:
    """A symmetric colour range that holds every finite value (at least 1e-6)."""
    finite = [np.abs(a[np.isfinite(a)]).max() for a in arrays if np.isfinite(a).any()]
    return float(max(finite + [1e-6]))


def component_map(heads: np.ndarray, mlps: np.ndarray | None, title: str, value_name: str, *,
                  focus: tuple[int, int] | None = None, limit: float | None = None) -> go.Figure:
    """heads (L, nh) as a layer × head heatmap and, beside it, mlps (L,) as one "MLP" column, each
    on its own diverging colour scale centred on 0 (an MLP can move the metric ten times more than
    any head; NaN cells blank). Trace 0 is the heads, trace 1 the MLPs; transparent markers over the
    cells make them clickable (component_pick reads a click back). `focus` (layer, head) gets a black
    frame; `limit` fixes the heads' colour range ±limit."""
    heads = np.asarray(heads, dtype=np.float64)
    if heads.ndim != 2 or 0 in heads.shape:
        raise ValueError(f"heads must be (layers, heads), got shape {heads.shape}.")
    L, nh = heads.shape
    show_mlp = mlps is not None and not np.isnan(np.asarray(mlps, dtype=np.float64)).all()
    if show_mlp and np.shape(mlps) != (L,):
        raise ValueError(f"mlps must be ({L},), one per layer, got {np.shape(mlps)}.")
    m = limit or _limit(heads)
    fig = make_subplots(rows=1, cols=2 if show_mlp else 1, shared_yaxes=True, horizontal_spacing=0.02,
                        column_widths=[nh, max(1.0, nh / 8)] if show_mlp else None)
    fig.add_trace(go.Heatmap(
        z=heads.astype(np.float32), x=np.arange(nh), y=np.arange(L), coloraxis="coloraxis",
        hovertemplate="L%{y}H%{x}: %{z:.4g} " + value_name + "<extra></extra>",
    ), row=1, col=1)
    if show_mlp:
        fig.add_trace(go.Heatmap(
            z=np.asarray(mlps, dtype=np.float32)[:, None], x=["MLP"], y=np.arange(L), coloraxis="coloraxis2",
            hovertemplate="L%{y} MLP: %{z:.4g} " + value_name + "<extra></extra>",
        ), row=1, col=2)
    layers, heads_ = np.meshgrid(np.arange(L), np.arange(nh), indexing="ij")
    hover = "L%{customdata[0]}H%{customdata[1]}: %{customdata[2]:.4g} " + value_name + "<extra></extra>"
    fig.add_trace(cell_markers(heads_.ravel(), layers.ravel(), np.stack([layers.ravel(), heads_.ravel(),
                                                                         heads.ravel()], axis=1), hover), row=1, col=1)
    if show_mlp:
        hover = "L%{customdata[0]} MLP: %{customdata[2]:.4g} " + value_name + "<extra></extra>"
        mlp_data = np.stack([np.arange(L), np.full(L, -1), np.asarray(mlps, dtype=np.float64)], axis=1)
        fig.add_trace(cell_markers(["MLP"] * L, np.arange(L), mlp_data, hover, name="MLPs"), row=1, col=2)
    if focus is not None and 0 <= focus[0] < L and 0 <= focus[1] < nh:
        fig.add_shape(type="rect", x0=focus[1] - 0.5, x1=focus[1] + 0.5, y0=focus[0] - 0.5, y1=focus[0] + 0.5,
                      line=dict(color="black", width=2), row=1, col=1)
    fig.update_xaxes(title_text="head", tickvals=np.arange(nh) if nh <= 32 else None, showgrid=False, row=1, col=1)
    fig.update_yaxes(tickvals=np.arange(L) if L <= 48 else None, autorange="reversed", showgrid=False)
    fig.update_yaxes(title_text="layer", row=1, col=1)
    fig.update_layout(title=title, height=min(900, 160 + 22 * L), margin=dict(l=10, r=10, t=40, b=10),
                      coloraxis=dict(colorscale=DIVERGING, cmin=-m, cmax=m,
                                     colorbar=dict(title="heads", x=1.02, len=0.9)))
    if show_mlp:
        m2 = _limit(np.asarray(mlps, dtype=np.float64))
        fig.update_layout(coloraxis2=dict(colorscale=DIVERGING, cmin=-m2, cmax=m2,
                                          colorbar=dict(title="MLPs", x=1.16, len=0.9)),
                          margin=dict(l=10, r=60, t=40, b=10))
    return fig


def component_pick(point: Mapping, n_layer: int, n_head: int) -> tuple[int, int | str] | None:
    """(layer, head) or (layer, "mlp") of a clicked component_map cell (a selection point whose
    customdata is [layer, head or -1 for the MLP, value]), or None if it is not a cell of the map."""
    data = picked_customdata(point)
    try:
        layer, head = int(data[0]), int(data[1])
    except (TypeError, IndexError, ValueError):
        return None
    if not 0 <= layer < n_layer:
        return None
    if head == -1:
        return layer, "mlp"
    return (layer, head) if 0 <= head < n_head else None


def position_map(values: np.ndarray, rows: Sequence[str], columns: Sequence[str], title: str,
                 value_name: str = "restored") -> go.Figure:
    """values (rows, cols), e.g. the fraction restored by patching (layer × position or head),
    on a diverging scale centred on 0 that holds ±1 and every value."""
    values = np.asarray(values, dtype=np.float64)
    m = max(1.0, _limit(values))
    fig = heatmap(values, [show_whitespace(c) for c in columns], list(rows), title=title, colorscale=DIVERGING,
                  zmin=-m, zmax=m, hovertemplate=f"%{{y}}, %{{x}}: %{{z:.3f}} {value_name}<extra></extra>")
    fig.update_layout(height=min(900, 160 + 20 * len(rows)))
    fig.data[0].update(colorbar_title=value_name)
    labels = [show_whitespace(c) for c in columns]
    r, c = np.meshgrid(np.arange(len(rows)), np.arange(len(columns)), indexing="ij")
    fig.add_trace(cell_markers(np.asarray(labels, dtype=object)[c.ravel()], np.asarray(rows, dtype=object)[r.ravel()],
                               np.stack([r.ravel(), c.ravel(), values.ravel()], axis=1),
                               f"%{{y}}, %{{x}}: %{{customdata[2]:.3f}} {value_name}<extra></extra>"))
    return fig


def map_pick(point: Mapping, n_rows: int, n_cols: int) -> tuple[int, int] | None:
    """(row, column) of a clicked position_map cell (its customdata [row, column, value]), or None."""
    data = picked_customdata(point)
    try:
        row, col = int(data[0]), int(data[1])
    except (TypeError, IndexError, ValueError):
        return None
    return (row, col) if 0 <= row < n_rows and 0 <= col < n_cols else None


def layer_parts_figure(parts: Mapping[str, np.ndarray], labels: Sequence[str], value_name: str) -> go.Figure:
    """Grouped bars per row label (e.g. embeddings, L0, L1, ...): one bar series per parts entry
    (name -> (len(labels),), NaN for none)."""
    fig = go.Figure()
    for name, values in parts.items():
        values = np.asarray(values, dtype=np.float32)
        if values.shape != (len(labels),):
            raise ValueError(f"{name}: {values.shape}, expected ({len(labels)},).")
        fig.add_trace(go.Bar(x=list(labels), y=values, name=name,
                             hovertemplate="%{x} " + name + ": %{y:.4g}<extra></extra>"))
    fig.update_layout(barmode="relative", yaxis_title=value_name, height=320, margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(orientation="h", y=1.12))
    fig.update_xaxes(type="category")
    return fig


def agreement_figure(exact: np.ndarray, estimate: np.ndarray, labels: Sequence[str], value_name: str) -> go.Figure:
    """Scatter of the exact effect (x) against its gradient estimate (y), one point per component
    (labels), with the line y = x: points on it are estimated exactly."""
    exact, estimate = np.asarray(exact, dtype=np.float64), np.asarray(estimate, dtype=np.float64)
    if exact.shape != estimate.shape or exact.shape != (len(labels),):
        raise ValueError(f"exact {exact.shape}, estimate {estimate.shape} and {len(labels)} labels must agree.")
    ok = np.isfinite(exact) & np.isfinite(estimate)
    lo = float(min(exact[ok].min(initial=0), estimate[ok].min(initial=0)))
    hi = float(max(exact[ok].max(initial=0), estimate[ok].max(initial=0)))
    fig = go.Figure([
        go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(color="#999", dash="dash"), name="estimate = exact",
                   hoverinfo="skip"),
        go.Scatter(x=exact[ok], y=estimate[ok], mode="markers", text=np.asarray(labels, dtype=object)[ok],
                   name="component", marker=dict(size=6, color="#4c78a8"),
                   hovertemplate="%{text}<br>exact %{x:.4g}<br>estimate %{y:.4g}<extra></extra>"),
    ])
    fig.update_layout(xaxis_title=f"exact change of the {value_name}", yaxis_title="gradient estimate", height=380,
                      margin=dict(l=10, r=10, t=30, b=10), showlegend=False)
    return fig


def compare_figure(tokens: Sequence[str], before: np.ndarray, after: np.ndarray, title: str = "") -> go.Figure:
    """Horizontal bars of each token's probability before and after a knock-out (most likely on top)."""
    before, after = np.asarray(before, dtype=np.float32), np.asarray(after, dtype=np.float32)
    n = len(tokens)
    if before.shape != (n,) or after.shape != (n,):
        raise ValueError(f"before {before.shape} and after {after.shape} must both be ({n},), one per token.")
    labels = [f"{i + 1}. {show_whitespace(t)}" for i, t in enumerate(tokens)]
    fig = go.Figure([
        go.Bar(y=labels, x=before, orientation="h", name="before", marker_color="#4c78a8",
               hovertemplate="%{y}<br>before: %{x:.4f}<extra></extra>"),
        go.Bar(y=labels, x=after, orientation="h", name="after knock-out", marker_color="#e4572e",
               hovertemplate="%{y}<br>after: %{x:.4f}<extra></extra>"),
    ])
    fig.update_layout(title=title, barmode="group", xaxis_title="probability", height=max(300, 40 * n + 120),
                      margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", yanchor="top", y=-0.08 * 300 / max(300, 40 * n + 120)))
    fig.update_yaxes(autorange="reversed", type="category")
    return fig
