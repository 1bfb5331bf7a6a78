"""Figures of attention's cost against context length: time, memory and operation counts, log-log."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

TIME_SERIES = {  # column -> legend name
    "attention_fused_s": "attention, fused kernel (what the model runs)",
    "attention_eager_s": "attention, eager (materialises the (nh, T, T) pattern)",
    "rest_of_layer_s": "rest of the layer (norms, projections, MLP)",
    "forward_s": "whole forward pass",
}
LOCAL_TIME_SERIES = {  # drawn when the table has them (models with sliding-window layers)
    "attention_local_fused_s": "attention of a local layer, fused kernel (the window as a mask)",
}


def _check(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    missing = [c for c in ["T", *columns] if c not in frame.columns]
    if missing or frame.empty:
        raise ValueError(f"The table needs rows and the columns T, {', '.join(columns)} (missing: {missing}).")
    return frame["T"].to_numpy(dtype=np.float64)


def _reference(T: np.ndarray, anchor_T: float, anchor_y: float, power: int, name: str) -> go.Scatter:
    return go.Scatter(x=T, y=anchor_y * (T / anchor_T) ** power, mode="lines", name=name,
                      line=dict(dash="dash", color="#999999" if power == 1 else "#555555", width=1),
                      hoverinfo="skip")


def _log_log(fig: go.Figure, y_title: str, title: str) -> go.Figure:
    """Log axes; x ticks at the powers of two drawn, y ticks at powers of ten."""
    xs = sorted({float(x) for trace in fig.data if trace.x is not None for x in trace.x})
    shown = [x for x in xs if x > 0 and float(x).is_integer() and (int(x) & (int(x) - 1)) == 0] or xs
    fig.update_layout(title=title, legend=dict(orientation="h", y=-0.2), margin=dict(l=10, r=10, t=40, b=10),
                      height=480)
    fig.update_xaxes(type="log", title="context length T (tokens)", tickvals=shown,
                     ticktext=[f"{int(x):,}" for x in shown])
    fig.update_yaxes(type="log", title=y_title, dtick=1)
    return fig


def time_figure(frame: pd.DataFrame) -> go.Figure:
    """Measured seconds against T (the columns of TIME_SERIES), with reference slopes ∝ T
    (through the rest of the layer at the largest T) and ∝ T² (through fused attention there)."""
    T = _check(frame, list(TIME_SERIES))
    fig = go.Figure()
    series = TIME_SERIES | {c: name for c, name in LOCAL_TIME_SERIES.items() if c in frame.columns}
    for column, name in series.items():
        y = frame[column].to_numpy(dtype=np.float64)
        fig.add_trace(go.Scatter(x=T, y=y, mode="lines+markers", name=name,
                                 hovertemplate="T = %{x}<br>%{y:.3g} s<extra>" + column + "</extra>"))
    last = len(T) - 1
    fig.add_trace(_reference(T, T[last], float(frame["rest_of_layer_s"].iloc[last]), 1, "∝ T (reference)"))
    fig.add_trace(_reference(T, T[last], float(frame["attention_fused_s"].iloc[last]), 2, "∝ T² (reference)"))
    fig.update_yaxes(exponentformat="SI", ticksuffix="s")
    return _log_log(fig, "seconds (best of a few runs)", "Time against context length (measured)")


def memory_figure(frame: pd.DataFrame) -> go.Figure:
    """Bytes against T: the (nh, T, T) float32 patterns of one layer and of all layers (computed),
    and, if measured, the peak memory PyTorch held during one layer's attention, eager and fused."""
    T = _check(frame, ["pattern_bytes_layer", "pattern_bytes_model"])
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=T, y=frame["pattern_bytes_layer"].to_numpy(dtype=np.float64), mode="lines+markers",
                             name="one layer's pattern, nh·T²·4 bytes (computed)"))
    fig.add_trace(go.Scatter(x=T, y=frame["pattern_bytes_model"].to_numpy(dtype=np.float64), mode="lines+markers",
                             name="all layers' patterns (computed)"))
    for column, name, symbol in (("peak_bytes_eager", "peak during eager attention, one layer (measured)", "x"),
                                 ("peak_bytes_fused", "peak during fused attention, one layer (measured)", "circle")):
        if column in frame.columns:
            fig.add_trace(go.Scatter(x=T, y=frame[column].to_numpy(dtype=np.float64), mode="markers+lines",
                                     marker=dict(size=9, symbol=symbol), line=dict(dash="dot"), name=name))
    fig.update_yaxes(tickformat=".2s", ticksuffix="B")
    return _log_log(fig, "bytes", "Memory of attention")


def flops_figure(frame: pd.DataFrame, crossover: float | None = None) -> go.Figure:
    """One layer's operation counts against T (computed): attention 4·T²·d, the rest T·(per token),
    and a local layer's attention if the table has it; a vertical line at the crossover T where a
    global layer's attention equals the rest, if given."""
    T = _check(frame, ["attention_flops_layer", "rest_flops_layer"])
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=T, y=frame["attention_flops_layer"].to_numpy(dtype=np.float64), mode="lines+markers",
                             name="attention: q·kᵀ and pattern·v, 4·T²·d"))
    fig.add_trace(go.Scatter(x=T, y=frame["rest_flops_layer"].to_numpy(dtype=np.float64), mode="lines+markers",
                             name="projections + MLP, ∝ T·d²"))
    if "attention_flops_local_layer" in frame.columns:
        fig.add_trace(go.Scatter(x=T, y=frame["attention_flops_local_layer"].to_numpy(dtype=np.float64),
                                 mode="lines+markers", line=dict(dash="dash"),
                                 name="attention of a local layer: 4·T·min(T, w)·d (if the kernel skips the mask)"))
    if crossover is not None and crossover > 0:  # a trace, not add_vline: shapes and log axes disagree
        span = frame[["attention_flops_layer", "rest_flops_layer"]].to_numpy(dtype=np.float64)
        fig.add_trace(go.Scatter(x=[crossover, crossover], y=[span.min(), span.max()], mode="lines",
                                 line=dict(dash="dot", color="#555555"), name=f"equal at T ≈ {crossover:,.0f}"))
    return _log_log(fig, "FLOPs per layer", "Operations per layer (computed)")
