"""Figures of the inside of a block: a vector through the norm's steps, the heads concatenated and
their shares of the output, what each sublayer writes into the residual stream, the MLP's activation
function and neurons, positions (learned, sinusoidal, rotary) and dropout.

Pure builders: numpy arrays and token strings in, a plotly figure (or an HTML string) out; numbers
travel as float32 numpy arrays (binary in the figure JSON).
"""
from __future__ import annotations

import html
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gptviz.plots.attention import masked_blocks, weight_colorscale, window_overlay
from gptviz.plots.common import TITLE_PX, heatmap, show_whitespace, title_above_axis
from gptviz.plots.lens import position_labels

STEP_COLOURS = ("#4a72b0", "#c9a227", "#2f8f5b", "#8c5bb0", "#b05b5b", "#1f2937")


def _f32(x, ndim: int, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} dimensions, got shape {x.shape}.")
    return x


def _bound(x: np.ndarray) -> float:
    finite = np.abs(x[np.isfinite(x)])
    return float(finite.max(initial=0.0)) or 1.0


# ---- one vector through a sequence of steps ---------------------------------------------------------
def vector_steps_figure(rows: Mapping[str, np.ndarray], title: str = "") -> go.Figure:
    """One panel per step (rows: name -> (n,) vector, top to bottom), sharing the dimension axis when
    the vectors have one length; each panel has its own y scale, so a small normalised vector is as
    readable as a large input."""
    if not rows:
        raise ValueError("vector_steps_figure needs at least one row.")
    vectors = {name: _f32(v, 1, name) for name, v in rows.items()}
    same = len({v.shape[0] for v in vectors.values()}) == 1
    fig = make_subplots(rows=len(vectors), cols=1, shared_xaxes=same, vertical_spacing=0.03 if same else 0.06,
                        subplot_titles=list(vectors))
    for i, (name, v) in enumerate(vectors.items()):
        dims = np.arange(v.shape[0], dtype=np.int32)
        fig.add_trace(go.Bar(x=dims, y=v, name=name, marker_color=STEP_COLOURS[i % len(STEP_COLOURS)],
                             marker_line_width=0, showlegend=False,
                             hovertemplate="dim %{x}<br>%{y:.4f}<extra>" + html.escape(name) + "</extra>"),
                      row=i + 1, col=1)
    fig.update_xaxes(title_text="dimension", row=len(vectors), col=1)
    fig.update_layout(title=title, height=110 + 130 * len(vectors), margin=dict(l=10, r=10, t=60, b=10),
                      bargap=0)
    for annotation in fig.layout.annotations:  # subplot titles left-aligned, small
        annotation.update(x=0.0, xanchor="left", font=dict(size=12))
    return fig


def lines_figure(x_labels: Sequence[str], series: Mapping[str, np.ndarray], *, title: str = "", x_title: str = "",
                 y_title: str = "", log_y: bool = False) -> go.Figure:
    """One line per series (name -> (n,) values) over n labelled x positions."""
    fig = go.Figure()
    for name, values in series.items():
        values = _f32(values, 1, name)
        if values.shape[0] != len(x_labels):
            raise ValueError(f"{name} has {values.shape[0]} values for {len(x_labels)} labels.")
        fig.add_trace(go.Scatter(x=list(x_labels), y=values, mode="lines+markers", name=name,
                                 hovertemplate="%{x}<br>%{y:.4g}<extra>" + html.escape(name) + "</extra>"))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, height=380,
                      margin=dict(l=10, r=10, t=70, b=10),
                      legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1.0, xanchor="right"))
    fig.update_xaxes(type="category")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


# ---- attention's output ---------------------------------------------------------------------------
def heads_matrix_figure(matrix: np.ndarray, tokens: Sequence[str], n_head: int, *, start: int = 0,
                        title: str = "", highlight: int | None = None) -> go.Figure:
    """matrix (W, nh·hs): the heads' context vectors concatenated, one row per token, head h in columns
    h·hs .. (h+1)·hs − 1, with the boundaries between heads drawn and each head labelled on top.
    `highlight` (a position) frames that token's row."""
    matrix = _f32(matrix, 2, "matrix")
    if matrix.shape[0] != len(tokens) or matrix.shape[1] % n_head:
        raise ValueError(f"matrix {matrix.shape} needs one row per token ({len(tokens)}) and nh = {n_head} equal "
                         "column blocks.")
    W, width = matrix.shape
    hs = width // n_head
    bound = _bound(matrix)
    labels = position_labels(tokens, start)
    columns = [f"H{h}·{d}" for h in range(n_head) for d in range(hs)]  # head and dimension, in the hover
    fig = go.Figure(go.Heatmap(
        z=matrix, x=columns, y=labels, colorscale="RdBu_r", zmin=-bound, zmax=bound,
        hovertemplate="token %{y}<br>head·dimension %{x}<br>%{z:.4f}<extra></extra>",
    ))
    for h in range(1, n_head):  # category axis: column c spans c - 0.5 .. c + 0.5
        fig.add_vline(x=h * hs - 0.5, line=dict(color="#111", width=1))
    step = max(1, n_head // 16)
    fig.update_xaxes(type="category", tickvals=[columns[h * hs + hs // 2] for h in range(0, n_head, step)],
                     ticktext=[f"H{h}" for h in range(0, n_head, step)], side="top", title_text=None)
    if highlight is not None and start <= highlight < start + W:
        fig.add_shape(type="rect", x0=-0.5, x1=width - 0.5, y0=highlight - start - 0.5, y1=highlight - start + 0.5,
                      line=dict(color="#f59e0b", width=2), yref="y", xref="x")
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_layout(title=title_above_axis(title), height=min(900, 170 + 16 * W),
                      margin=dict(l=10, r=10, t=TITLE_PX + 30, b=10))  # the H0, H1, … ticks
    return fig


def head_shares_figure(shares: np.ndarray, row_labels: Sequence[str], tokens: Sequence[str], *, start: int = 0,
                       norms: np.ndarray | None = None, title: str = "") -> go.Figure:
    """shares (rows, W): each head's (and the bias's) signed share of attention's output per token, on a
    diverging scale; norms (rows, W), if given, ‖contribution‖ in the hover."""
    shares = _f32(shares, 2, "shares")
    if shares.shape != (len(row_labels), len(tokens)):
        raise ValueError(f"shares {shares.shape} must be ({len(row_labels)}, {len(tokens)}).")
    bound = max(1.0, _bound(shares))
    fig = heatmap(shares, position_labels(tokens, start), row_labels, title=title, x_title="token",
                  y_title="contribution", colorscale="RdBu_r", zmin=-bound, zmax=bound, zmid=0.0)
    if norms is not None:
        norms = _f32(norms, 2, "norms")
        fig.update_traces(customdata=norms, hovertemplate="%{y} at %{x}<br>share %{z:.3f}<br>‖z_h·W_O,hᵀ‖ = "
                                                          "%{customdata:.4g}<extra></extra>")
    fig.update_layout(height=max(260, 120 + 24 * shares.shape[0]))
    return fig


# ---- the residual stream ---------------------------------------------------------------------------
def _log_colours(values: np.ndarray) -> tuple[np.ndarray, list[float], list[str]]:
    """log10 of positive values (for colour), with colorbar ticks at powers of ten labelled in plain numbers."""
    positive = values[values > 0]
    floor = float(positive.min()) if positive.size else 1.0
    logs = np.log10(np.maximum(values, floor)).astype(np.float32)
    low, high = int(np.floor(logs.min(initial=0.0))), int(np.ceil(logs.max(initial=0.0)))
    ticks = list(range(low, high + 1))
    return logs, [float(t) for t in ticks], [f"{10.0 ** t:g}" for t in ticks]


def writes_figure(writes: Mapping[str, np.ndarray], tokens: Sequence[str], *, start: int = 0,
                  focus: tuple[int, int] | None = None) -> go.Figure:
    """Three layer × token panels from residual_writes arrays (each (L, W)): the residual stream's norm
    entering each block, and what attention and the MLP write into it, each relative to the stream it
    is added to (‖attn_out‖ / ‖resid_pre‖, ‖mlp_out‖ / ‖resid_mid‖). Colours are on a log scale (a few
    tokens, such as the first, often have streams hundreds of times larger than the rest); the hover
    shows the values and absolute norms. `focus` (layer, position) is framed in every panel."""
    needed = ("resid_pre", "attn_out", "resid_mid", "mlp_out")
    arrays = {name: _f32(writes[name], 2, name) for name in needed}
    L, W = arrays["resid_pre"].shape
    if any(a.shape != (L, W) for a in arrays.values()) or W != len(tokens):
        raise ValueError(f"Every array must be (layers, {len(tokens)} tokens), got "
                         f"{ {k: a.shape for k, a in arrays.items()} }.")
    ratio = lambda a, b: np.divide(a, b, out=np.zeros_like(a), where=b > 0)
    panels = [
        ("‖residual stream‖ entering the block", arrays["resid_pre"], arrays["resid_pre"], "Viridis", "‖x‖"),
        ("attention's write ÷ ‖residual‖", ratio(arrays["attn_out"], arrays["resid_pre"]), arrays["attn_out"],
         "Oranges", "ratio"),
        ("MLP's write ÷ ‖residual‖", ratio(arrays["mlp_out"], arrays["resid_mid"]), arrays["mlp_out"], "Purples",
         "ratio"),
    ]
    labels = position_labels(tokens, start)
    spacing = 0.09
    width = (1 - 2 * spacing) / 3
    fig = make_subplots(rows=1, cols=3, shared_yaxes=True, horizontal_spacing=spacing,
                        subplot_titles=[p[0] for p in panels])
    layers = [f"L{l}" for l in range(L)]
    for i, (name, values, absolute, scale, unit) in enumerate(panels):
        logs, tickvals, ticktext = _log_colours(values)
        fig.add_trace(go.Heatmap(
            z=logs, x=labels, y=layers, customdata=np.stack([values, absolute], axis=-1), colorscale=scale,
            colorbar=dict(x=i * (width + spacing) + width + 0.005, xanchor="left", len=0.9, thickness=10,
                          title=unit, tickvals=tickvals, ticktext=ticktext),
            hovertemplate=f"{html.escape(name)}<br>%{{y}}, token %{{x}}<br>%{{customdata[0]:.3g}} "
                          "(norm %{customdata[1]:.4g})<extra></extra>",
        ), row=1, col=i + 1)
        if focus is not None and start <= focus[1] < start + W:
            fig.add_shape(type="rect", x0=focus[1] - start - 0.5, x1=focus[1] - start + 0.5, y0=focus[0] - 0.5,
                          y1=focus[0] + 0.5, line=dict(color="red", width=2), row=1, col=i + 1)
    fig.update_yaxes(autorange="reversed", type="category", title_text="layer", row=1, col=1)
    fig.update_xaxes(type="category", showticklabels=W <= 48)
    fig.update_layout(height=min(900, 200 + 18 * L), margin=dict(l=10, r=10, t=60, b=10))
    for annotation in fig.layout.annotations:
        annotation.update(font=dict(size=12))
    return fig


def bars_figure(labels: Sequence[str], values: np.ndarray, *, title: str = "", y_title: str = "",
                colours: Sequence[str] | None = None) -> go.Figure:
    """Plain bars: one value per label."""
    values = _f32(values, 1, "values")
    if values.shape[0] != len(labels):
        raise ValueError(f"{values.shape[0]} values for {len(labels)} labels.")
    fig = go.Figure(go.Bar(x=list(labels), y=values, marker_color=list(colours) if colours else "#4a72b0",
                           text=[f"{v:.3g}" for v in values], textposition="outside",
                           hovertemplate="%{x}<br>%{y:.4g}<extra></extra>"))
    fig.update_layout(title=title, yaxis_title=y_title, height=340, margin=dict(l=10, r=10, t=50, b=10))
    fig.update_xaxes(type="category")
    fig.update_yaxes(range=[min(0.0, float(values.min(initial=0)) * 1.2), float(values.max(initial=0)) * 1.2 or 1.0])
    return fig


# ---- the MLP ------------------------------------------------------------------------------------------
def activation_figure(curve_x: np.ndarray, curve_y: np.ndarray, pre: np.ndarray, act: np.ndarray, *,
                      name: str, title: str = "") -> go.Figure:
    """The activation function (curve_x, curve_y) as a line, one token's pre-activations pre (d_mlp,) and
    their activations act (d_mlp,) as points on it."""
    curve_x, curve_y = _f32(curve_x, 1, "curve_x"), _f32(curve_y, 1, "curve_y")
    pre, act = _f32(pre, 1, "pre"), _f32(act, 1, "act")
    if pre.shape != act.shape or curve_x.shape != curve_y.shape:
        raise ValueError("pre and act, and the curve's x and y, must have the same lengths.")
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=curve_x, y=curve_y, mode="lines", name=name, line=dict(color="#444", width=2),
                             hoverinfo="skip"))
    fig.add_trace(go.Scattergl(x=pre, y=act, mode="markers", name="this token's neurons",
                               marker=dict(color="#f59e0b", size=5, opacity=0.6),
                               customdata=np.arange(pre.shape[0], dtype=np.int32),
                               hovertemplate="neuron %{customdata}<br>in %{x:.3f} → out %{y:.3f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="pre-activation", yaxis_title=f"{name}(pre-activation)", height=380,
                      margin=dict(l=10, r=10, t=60, b=10),  # the legend in the empty top left, clear of the title
                      legend=dict(x=0.01, xanchor="left", y=0.99, yanchor="top", bgcolor="rgba(255,255,255,0.7)"))
    return fig


def neurons_figure(hidden: np.ndarray, neurons: Sequence[int], tokens: Sequence[str], *, start: int = 0,
                   selected: int | None = None, title: str = "") -> go.Figure:
    """hidden (W, k): tokens (rows) × the k neurons `neurons` (columns), diverging colours around 0.
    Every cell carries a transparent marker whose customdata is [neuron, position]: clicking a cell
    selects its neuron (plotly selects points, not heatmap cells). `selected` is framed."""
    hidden = _f32(hidden, 2, "hidden")
    if hidden.shape != (len(tokens), len(neurons)):
        raise ValueError(f"hidden {hidden.shape} must be ({len(tokens)} tokens, {len(neurons)} neurons).")
    W, k = hidden.shape
    bound = _bound(hidden)
    xs = [f"n{n}" for n in neurons]
    labels = position_labels(tokens, start)
    fig = go.Figure(go.Heatmap(z=hidden, x=xs, y=labels, colorscale="RdBu_r", zmin=-bound, zmax=bound,
                               hoverinfo="skip", colorbar_title="activation"))
    cols, rows = np.meshgrid(np.arange(k), np.arange(W))
    fig.add_trace(go.Scatter(
        x=np.asarray(xs, dtype=object)[cols.ravel()], y=np.asarray(labels, dtype=object)[rows.ravel()], mode="markers",
        marker=dict(symbol="square", size=12, color="rgba(0,0,0,0)"), showlegend=False, name="neurons",
        customdata=np.stack([np.asarray(neurons)[cols.ravel()], rows.ravel() + start], axis=1).astype(np.int32),
        text=[f"{v:.4g}" for v in hidden.ravel()],
        hovertemplate="neuron %{customdata[0]}<br>token %{y}<br>activation %{text}<br>click to pick this neuron"
                      "<extra></extra>",
        selected=dict(marker=dict(color="rgba(255,127,14,0.3)")), unselected=dict(marker=dict(opacity=1)),
    ))
    if selected is not None and selected in list(neurons):
        col = list(neurons).index(selected)
        fig.add_shape(type="rect", x0=col - 0.5, x1=col + 0.5, y0=-0.5, y1=W - 0.5, line=dict(color="#f59e0b", width=2))
    fig.update_xaxes(type="category", side="top", title_text="neuron", range=[-0.5, k - 0.5])  # no marker padding
    fig.update_yaxes(type="category", range=[W - 0.5, -0.5])
    fig.update_layout(title=title_above_axis(title), height=min(900, 190 + 16 * W),
                      margin=dict(l=10, r=10, t=TITLE_PX + 80, b=10),  # upright neuron ticks, the axis title
                      hovermode="closest", clickmode="event+select", dragmode=False, plot_bgcolor="white")
    return fig


def neuron_pick(point: Mapping, d_mlp: int) -> int | None:
    """The neuron of a selected neurons_figure point (its customdata [neuron, position], which Streamlit's
    selection event sends as {"0": neuron, "1": position}), or None."""
    try:
        data = point["customdata"]
        neuron = int(data["0"] if isinstance(data, Mapping) else data[0])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return neuron if 0 <= neuron < d_mlp else None


def activation_text_html(tokens: Sequence[str], values: np.ndarray, *, start: int = 0) -> str:
    """The tokens as text, each on a background coloured by its value (red positive, blue negative,
    scaled to the largest |value|), the value in the hover."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(tokens),):
        raise ValueError(f"values {values.shape} must have one value per token ({len(tokens)}).")
    bound = float(np.abs(values).max(initial=0.0)) or 1.0
    parts = []
    for i, (token, value) in enumerate(zip(tokens, values)):
        alpha = min(1.0, abs(value) / bound)
        colour = f"rgba(220,38,38,{alpha:.2f})" if value >= 0 else f"rgba(37,99,235,{alpha:.2f})"
        title = html.escape(f"position {start + i}: {value:.4g}")
        text = html.escape(show_whitespace(token)).replace("↵", "↵<br>")
        parts.append(f'<span title="{title}" style="background:{colour};padding:1px 2px;border-radius:3px;'
                     f'font-family:monospace;white-space:pre-wrap;color:#111">{text}</span>')
    return "<div style='line-height:1.9'>" + "".join(parts) + "</div>"


def logit_effect_figure(promoted: pd.DataFrame, suppressed: pd.DataFrame, title: str = "") -> go.Figure:
    """Two bar panels of (token, effect) tables: the tokens a direction promotes and those it suppresses."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.18, subplot_titles=["promotes", "suppresses"])
    for col, frame, colour in ((1, promoted, "#dc2626"), (2, suppressed, "#2563eb")):
        labels = [f"{show_whitespace(t)} ({i})" for t, i in zip(frame["token"], frame["id"])]
        fig.add_trace(go.Bar(x=frame["effect"].to_numpy(np.float32), y=labels, orientation="h", marker_color=colour,
                             showlegend=False, hovertemplate="%{y}<br>logit change %{x:.4g}<extra></extra>"),
                      row=1, col=col)
        fig.update_yaxes(autorange="reversed", type="category", row=1, col=col)
    fig.update_layout(title=title, height=140 + 24 * max(len(promoted), len(suppressed)),
                      margin=dict(l=10, r=10, t=70, b=10))
    return fig


# ---- positions ----------------------------------------------------------------------------------------
def position_heatmap(table: np.ndarray, *, title: str = "", x_title: str = "dimension",
                     colorscale: str = "RdBu_r") -> go.Figure:
    """table (N, n): one row per position (0 at the top), one column per dimension (or rotary pair)."""
    table = _f32(table, 2, "table")
    N, n = table.shape
    bound = _bound(table)
    fig = heatmap(table, [str(d) for d in range(n)], [str(p) for p in range(N)], title=title, x_title=x_title,
                  y_title="position", colorscale=colorscale, zmin=-bound, zmax=bound, zmid=0.0,
                  hovertemplate="position %{y}<br>" + x_title + " %{x}<br>%{z:.4f}<extra></extra>")
    fig.update_layout(height=min(700, 200 + 3 * N))
    fig.update_yaxes(showticklabels=N <= 64)
    fig.update_xaxes(showticklabels=n <= 64)
    return fig


def position_similarity_figure(sim: np.ndarray, title: str = "") -> go.Figure:
    """sim (N, N): cosine similarity between the vectors of positions i and j."""
    sim = _f32(sim, 2, "sim")
    N = sim.shape[0]
    if sim.shape != (N, N):
        raise ValueError(f"sim must be square, got {sim.shape}.")
    labels = [str(p) for p in range(N)]
    fig = heatmap(sim, labels, labels, title=title, x_title="position", y_title="position", colorscale="RdBu_r",
                  zmin=-1.0, zmax=1.0, zmid=0.0,
                  hovertemplate="positions %{y} and %{x}<br>cos = %{z:.3f}<extra></extra>")
    fig.update_layout(height=460)
    fig.update_xaxes(showticklabels=N <= 64)
    fig.update_yaxes(showticklabels=N <= 64)
    return fig


def offset_figure(grid: np.ndarray, by_offset: np.ndarray, key_starts: Sequence[int], title: str = "") -> go.Figure:
    """Left: grid (N, N) q·k with the same q at query position i (rows) and the same k at key position j
    (columns), future keys included: constant along diagonals. Right: by_offset (S, D) the score against
    the offset i − j for keys at each of key_starts (S,): the curves lie on top of each other."""
    grid, by_offset = _f32(grid, 2, "grid"), _f32(by_offset, 2, "by_offset")
    if by_offset.shape[0] != len(key_starts):
        raise ValueError(f"by_offset has {by_offset.shape[0]} rows for {len(key_starts)} key positions.")
    N = grid.shape[0]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.18,  # colour bar room
                        subplot_titles=["q at position i · k at position j", "score against the offset i − j"])
    bound = _bound(grid)
    fig.add_trace(go.Heatmap(z=grid, x=np.arange(N, dtype=np.int32), y=np.arange(N, dtype=np.int32),
                             colorscale="RdBu_r", zmin=-bound, zmax=bound, colorbar=dict(x=0.385, thickness=10),
                             hovertemplate="query at %{y}, key at %{x}<br>q·k = %{z:.4f}<extra></extra>"), row=1, col=1)
    fig.update_yaxes(autorange="reversed", title_text="query position i", row=1, col=1)
    fig.update_xaxes(title_text="key position j", row=1, col=1)
    offsets = np.arange(by_offset.shape[1], dtype=np.int32)
    dashes = ("solid", "dash", "dot", "dashdot")
    for s, (start, row) in enumerate(zip(key_starts, by_offset)):
        fig.add_trace(go.Scatter(x=offsets, y=row, mode="lines", name=f"key at {start}",
                                 line=dict(dash=dashes[s % len(dashes)], width=3 - s * 0.6),
                                 hovertemplate=f"key at {start}, query at {start} + %{{x}}<br>q·k = %{{y:.5f}}"
                                               "<extra></extra>"), row=1, col=2)
    fig.update_xaxes(title_text="offset i − j (tokens)", row=1, col=2)
    fig.update_layout(title=title, height=460, margin=dict(l=10, r=10, t=80, b=10),  # legend under its panel
                      legend=dict(orientation="h", y=-0.2, yanchor="top", x=1.0, xanchor="right"))
    return fig


# ---- dropout ------------------------------------------------------------------------------------------
def dropout_figure(
    pattern: np.ndarray, dropped: np.ndarray, tokens: Sequence[str], p: float, window: int | None = None
) -> go.Figure:
    """Side by side: the pattern (W, W) the model uses and the same with a sampled dropout mask and the
    1/(1−p) rescaling (what training would see); dropped entries are blank, future keys too, and keys
    outside a sliding window of `window` keys are drawn in the window colour."""
    pattern, dropped = _f32(pattern, 2, "pattern"), _f32(dropped, 2, "dropped")
    W = len(tokens)
    if pattern.shape != (W, W) or dropped.shape != (W, W):
        raise ValueError(f"pattern {pattern.shape} and dropped {dropped.shape} must both be ({W}, {W}).")
    labels = position_labels(tokens)
    future, outside = masked_blocks(np.arange(W + 1), np.arange(W + 1), window)
    future = future | outside
    shown = np.where(future | (dropped == 0), np.nan, dropped).astype(np.float32)
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.05,
                        subplot_titles=["inference: the model's pattern", f"training view: dropout p = {p:g}"])
    zmax = float(1.0 / (1.0 - p)) if p < 1 else 1.0
    for col, z in ((1, np.where(future, np.nan, pattern).astype(np.float32)), (2, shown)):
        fig.add_trace(go.Heatmap(z=z, x=labels, y=labels, colorscale=weight_colorscale(), zmin=0.0, zmax=zmax,
                                 showscale=col == 2, colorbar=dict(thickness=10, title="weight"),
                                 hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.3f}<extra></extra>"),
                      row=1, col=col)
        if outside.any():
            fig.add_trace(window_overlay(outside, labels, labels, window), row=1, col=col)
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category", showticklabels=W <= 32)
    fig.update_layout(height=min(800, 220 + 14 * W), margin=dict(l=10, r=10, t=60, b=10), plot_bgcolor="white")
    return fig
