"""Figures of the Circuit page: the graph of heads and MLPs that carries a prediction, how faithful the
circuit is as it grows, and which edges the weights allow against which this prompt uses.

An edge runs from a sender (the embeddings, a head, an MLP) to a receiver input (a head's q, a kv head's
k or v, an MLP's input, the logits); its score is the change of the metric when that edge reads the
corrupted run instead of the clean one (negative: the edge carries the prediction)."""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gptviz.labels import MLP, component_label
from gptviz.plots.common import show_whitespace

NODE_TRACE = "nodes"  # the clickable circuit nodes; customdata [label] ("L3H1", "L3 MLP", "embed", "logits")
EDGE_COLUMNS = ("sender", "receiver", "sender_layer", "sender_head", "receiver_layer", "receiver_head", "input",
                "score")
INPUTS = ("q", "k", "v", "mlp", "logits")
QKV = ("q", "k", "v")
DASH = {"q": "solid", "k": "dash", "v": "dot", "mlp": "solid", "logits": "solid"}
LANDING = {"q": -0.22, "k": 0.0, "v": 0.22}  # x offset from the head's centre where a q / k / v edge lands
SIGN_COLOURS = {True: "#b2182b", False: "#2166ac"}  # score < 0 (red, as RdBu elsewhere) / score > 0
SIGN_NAMES = {True: "supports the prediction (score < 0)", False: "works against it (score > 0)"}
KIND_COLOURS = {"q": "#4c78a8", "k": "#f58518", "v": "#54a24b"}
WIDTHS = (0.8, 1.7, 3.0, 4.8)  # line width per bin of |score| / max |score|
MLP_RISE = 0.45  # a layer's MLP row sits this far above its heads' row (the MLP reads after attention)
MLP_ZIGZAG = 0.7  # odd layers' MLPs sit this much further right: MLP → MLP edges do not run along one line
MAX_NODE_LABELS = 40  # more circuit nodes than this: no text labels (hover still names them)
MARGIN = dict(l=10, r=10, t=40, b=10)
TOP_LEGEND = dict(orientation="h", yanchor="bottom", y=1.0, xanchor="center", x=0.5)  # between title and tools


def _check_columns(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """ValueError naming the columns `frame` lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks the columns {missing}; it needs {list(columns)}.")


def column_width(n_head: int) -> float:
    """The x distance between two positions' columns when nodes are split by position."""
    return n_head + 2.5


def _positions(layer: np.ndarray, head: np.ndarray, n_layer: int, n_head: int,
               position: np.ndarray | int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of nodes (layer, head) at token `position`, each (N,): head -1 is the layer's MLP, layer -1 the
    embeddings, layer n_layer the logits. Heads sit at x = head on row y = layer + 1, the MLP to their right
    a bit higher (odd layers' a little further right, MLP_ZIGZAG); embeddings (y = 0) and logits
    (y = n_layer + 1) centred under and over the heads. Split by
    position, each position's nodes form a column of their own, column_width(n_head) apart."""
    layer, head = np.asarray(layer), np.asarray(head)
    ends = (layer < 0) | (layer >= n_layer)
    mlp_x = n_head + 0.5 + MLP_ZIGZAG * (layer % 2)
    x = np.where(head >= 0, head, np.where(ends, (n_head - 1) / 2, mlp_x)).astype(np.float64)
    y = np.where(layer < 0, 0.0, np.where(head >= 0, layer + 1.0, layer + 1.0 + MLP_RISE))
    return x + np.asarray(position) * column_width(n_head), np.where(layer >= n_layer, n_layer + 1.0, y)


def _edge_positions(edges: pd.DataFrame) -> np.ndarray | int:
    """Each edge's token position (E,), or 0 for edges not split by position."""
    return edges["position"].to_numpy() if "position" in edges.columns else 0


def _label(layer: int, head: int, n_layer: int) -> str:
    """The component label of node (layer, head): "embed", "logits", "L3H1" or "L3 MLP"."""
    if layer < 0:
        return "embed"
    if layer >= n_layer:
        return "logits"
    return component_label((layer, MLP if head < 0 else head))


def _check_edges(edges: pd.DataFrame, n_layer: int, n_head: int, n_kv_head: int) -> None:
    """ValueError for missing columns, unknown inputs, scores that are not finite, or components this model
    does not have."""
    _check_columns(edges, EDGE_COLUMNS, "edges")
    if n_kv_head < 1 or n_head % n_kv_head:
        raise ValueError(f"n_head {n_head} must be a multiple of n_kv_head {n_kv_head} (grouped-query attention).")
    unknown = sorted(set(edges["input"]) - set(INPUTS))
    if unknown:
        raise ValueError(f"edges name inputs {unknown}; an input is one of {list(INPUTS)}.")
    if not np.isfinite(edges["score"].to_numpy(dtype=np.float64)).all():
        raise ValueError("edges have scores that are NaN or infinite: drop those edges or score them again.")
    sl, sh, rl, rh, inp = (edges[c] for c in ("sender_layer", "sender_head", "receiver_layer", "receiver_head",
                                              "input"))
    kv = inp.isin(("k", "v"))
    bad = (~sl.between(-1, n_layer - 1) | ~sh.between(-1, n_head - 1) | ((sl < 0) & (sh != -1))
           | ~rl.between(0, n_layer) | ((inp == "logits") != (rl == n_layer))
           | ((inp == "q") & ~rh.between(0, n_head - 1)) | (kv & ~rh.between(0, n_kv_head - 1)))
    if bad.any():
        row = edges[bad].iloc[0]
        raise ValueError(f"{int(bad.sum())} edges name components this model lacks (n_layer {n_layer}, n_head "
                         f"{n_head}, n_kv_head {n_kv_head}), e.g. {row['sender']} → {row['receiver']}: build the "
                         f"edges for this model.")


def _landings(edges: pd.DataFrame, n_layer: int, n_head: int, n_kv_head: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) where each edge ends, each (E,): q left of the head's centre, k at it, v right of it; a kv
    head's k / v at the midpoint of the query heads g*r .. g*r+r-1 that read it (r = n_head // n_kv_head)."""
    r = n_head // n_kv_head
    inp = edges["input"].to_numpy()
    rh = edges["receiver_head"].to_numpy()
    kv = np.isin(inp, ("k", "v"))
    head = np.where(inp == "q", rh, np.where(kv, rh * r, -1))
    x, y = _positions(edges["receiver_layer"].to_numpy(), head, n_layer, n_head, _edge_positions(edges))
    x = x + np.where(kv, (r - 1) / 2, 0.0) + edges["input"].map(LANDING).fillna(0.0).to_numpy()
    return x, y


def _circuit_nodes(edges: pd.DataFrame, n_layer: int, n_head: int, n_kv_head: int) -> list[tuple[int, int, int]]:
    """The circuit's nodes (layer, head, position; head -1 for an MLP, position 0 when not split), bottom to
    top, left to right: every sender, and every component whose input receives an edge (a kv head's k / v:
    each query head that reads it)."""
    r = n_head // n_kv_head
    position = np.broadcast_to(_edge_positions(edges), (len(edges),)).astype(int)
    nodes = set(zip(edges["sender_layer"].astype(int), edges["sender_head"].astype(int), position))
    for layer, head, inp, t in zip(edges["receiver_layer"].astype(int), edges["receiver_head"].astype(int),
                                   edges["input"], position):
        if inp in ("k", "v"):
            nodes.update((layer, head * r + j, t) for j in range(r))
        else:
            nodes.add((layer, head if inp == "q" else -1, t))
    return sorted(nodes, key=lambda n: (n[0], n[1] < 0, n[1], n[2]))


def _reading_back(nodes: list[tuple[int, int, int]], edges: pd.DataFrame, n_layer: int, n_head: int) -> go.Scatter:
    """Split by position: a head reads keys and values at earlier positions (and its own) and writes at the
    query's: a faint line from each of its nodes that receives to each later node of it that sends."""
    senders = set(zip(edges["sender_layer"].astype(int), edges["sender_head"].astype(int), edges["position"]))
    pairs = [(a, b) for a in nodes for b in senders
             if a[0] == b[0] and a[1] == b[1] >= 0 and 0 <= a[0] < n_layer and a[2] < b[2]]
    layer = np.array([a[0] for a, _ in pairs], dtype=int)
    head = np.array([a[1] for a, _ in pairs], dtype=int)
    x0, y0 = _positions(layer, head, n_layer, n_head, np.array([a[2] for a, _ in pairs], dtype=int))
    x1, y1 = _positions(layer, head, n_layer, n_head, np.array([b[2] for _, b in pairs], dtype=int))
    x, y = _segments(x0, y0, x1, y1)
    return go.Scatter(x=x, y=y, mode="lines", name="attention reads back (same head, earlier position)",
                      line=dict(color="rgba(120,120,120,0.5)", width=1, dash="dot"), hoverinfo="skip")


def _segments(x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Line segments (x0, y0) → (x1, y1), each (E,), as one (3E,) x and y with NaN gaps between them."""
    gap = np.full_like(x0, np.nan)
    return np.stack([x0, x1, gap], axis=1).ravel(), np.stack([y0, y1, gap], axis=1).ravel()


def _skeleton(n_layer: int, n_head: int, title: str, tokens: Sequence[str] | None = None,
              covered: set[tuple[int, int, int]] = frozenset()) -> go.Figure:
    """Every head and MLP as a faint grey dot, the embeddings and logits, and the layer axis; split by
    position (tokens given), one column per token, named on the x axis. No dot where a node of the circuit
    (`covered`: (layer, head, column)) is drawn: a click at the node's centre must reach the node."""
    n_columns = 1 if tokens is None else len(tokens)
    columns, layers, heads = np.meshgrid(np.arange(n_columns), np.arange(n_layer), np.arange(-1, n_head),
                                         indexing="ij")
    layer = np.concatenate([[-1] * n_columns, layers.ravel(), [n_layer] * n_columns])
    head = np.concatenate([[-1] * n_columns, heads.ravel(), [-1] * n_columns])
    column = np.concatenate([np.arange(n_columns), columns.ravel(), np.arange(n_columns)])
    free = np.array([(int(a), int(b), int(t)) not in covered for a, b, t in zip(layer, head, column)], dtype=bool)
    layer, head, column = layer[free], head[free], column[free]
    x, y = _positions(layer, head, n_layer, n_head, column)
    names = np.array([_label(int(a), int(b), n_layer) + ("" if tokens is None else f" @{t}")
                      for a, b, t in zip(layer, head, column)], dtype=object)
    fig = go.Figure(go.Scatter(x=x, y=y, mode="markers", name="model", hovertext=names, showlegend=False,
                               marker=dict(size=5, color="rgba(150,150,150,0.35)"),
                               hovertemplate="%{hovertext}<extra></extra>"))
    ticks = np.concatenate([[0.0], np.arange(n_layer) + 1 + MLP_RISE / 2, [n_layer + 1.0]])
    fig.update_yaxes(tickvals=ticks, ticktext=["embed", *(f"L{l}" for l in range(n_layer)), "logits"],
                     showgrid=False, zeroline=False, range=[-0.6, n_layer + 1.6])
    if tokens is None:
        fig.update_xaxes(visible=False, range=[-1.0, n_head + 1.5 + MLP_ZIGZAG])
    else:
        width = column_width(n_head)
        fig.update_xaxes(range=[-1.0, n_columns * width - 1.0], tickvals=np.arange(n_columns) * width + n_head / 2,
                         ticktext=[f"{t}·{show_whitespace(tok)}" for t, tok in enumerate(tokens)], showgrid=False,
                         side="top", tickangle=-45)
    margin = MARGIN if tokens is None else {**MARGIN, "t": 130}  # split: the title above the token names
    fig.update_layout(title=title, height=min(1100, 300 + 22 * n_layer), margin=margin, plot_bgcolor="white",
                      hovermode="closest", legend=dict(orientation="h", yanchor="top", y=-0.01, x=0))
    return fig


def _edge_traces(edges: pd.DataFrame, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray,
                 y1: np.ndarray) -> list[go.Scatter]:
    """One line trace per (input, sign, width bin) holding all its edges, and one trace of invisible
    markers at the edge midpoints that names each edge on hover."""
    score = edges["score"].to_numpy(dtype=np.float64)
    size = np.abs(score)
    bins = np.minimum((len(WIDTHS) * size / max(size.max(), 1e-12)).astype(int), len(WIDTHS) - 1)
    inp = edges["input"].to_numpy()
    traces = []
    for kind in INPUTS:
        for negative in (True, False):
            for b, width in enumerate(WIDTHS):
                pick = (inp == kind) & ((score < 0) == negative) & (bins == b)
                if pick.any():
                    x, y = _segments(x0[pick], y0[pick], x1[pick], y1[pick])
                    traces.append(go.Scatter(
                        x=x, y=y, mode="lines", name=f"{kind} edges", legendgroup=kind, showlegend=False,
                        line=dict(color=SIGN_COLOURS[negative], width=width, dash=DASH[kind]), opacity=0.75,
                        hoverinfo="skip"))
    where = (" @" + edges["position"].astype(str)) if "position" in edges.columns else ""
    text = (edges["sender"] + " → " + edges["receiver"] + " (" + edges["input"] + ")" + where + ": "
            + edges["score"].map("{:.4g}".format)).to_numpy(dtype=object)
    traces.append(go.Scatter(x=(x0 + x1) / 2, y=(y0 + y1) / 2, mode="markers", name="edges", hovertext=text,
                             showlegend=False, marker=dict(size=8, color="rgba(0,0,0,0)"),
                             hovertemplate="%{hovertext}<extra></extra>"))
    return traces


def _legend_traces() -> list[go.Scatter]:
    """Legend entries, no data: the line style of q / k / v edges (a click hides that kind) and the
    two colours."""
    styles = [go.Scatter(x=[None], y=[None], mode="lines", name=f"{kind} input ({DASH[kind]})", legendgroup=kind,
                         line=dict(color="#555", dash=DASH[kind])) for kind in QKV]
    colours = [go.Scatter(x=[None], y=[None], mode="lines", name=SIGN_NAMES[negative],
                          line=dict(color=SIGN_COLOURS[negative], width=3)) for negative in (True, False)]
    return styles + colours


def _node_trace(nodes: list[tuple[int, int, int]], n_layer: int, n_head: int,
                node_scores: dict[str, float] | None, split: bool = False) -> go.Scatter:
    """The circuit's nodes, big and coloured (by kind, or by node_scores on a diverging scale), text-labelled
    when there are at most MAX_NODE_LABELS (more: the MAX_NODE_LABELS of largest |node score| only, none
    without scores); customdata [label] (split by position: [label, position]) is what a click sends back."""
    layer = np.array([n[0] for n in nodes])
    head = np.array([n[1] for n in nodes])
    column = np.array([n[2] for n in nodes])
    x, y = _positions(layer, head, n_layer, n_head, column)
    labels = np.array([_label(a, b, n_layer) for a, b, _ in nodes], dtype=object)
    ends = (layer < 0) | (layer >= n_layer)
    symbol = np.where(ends, "diamond", np.where(head >= 0, "circle", "square"))
    labelled = len(nodes) <= MAX_NODE_LABELS
    marker = dict(size=13 if labelled else 9, symbol=symbol, line=dict(color="#333", width=1))
    hover = labels
    if node_scores is None:
        marker["color"] = np.where(ends, "#555555", np.where(head >= 0, "#f2a541", "#6a9f58"))
    else:
        keys = [f"{label} @{t}" if split else label for label, t in zip(labels, column)]
        score = np.array([node_scores.get(key, np.nan) for key in keys], dtype=np.float64)
        m = float(np.nanmax(np.abs(score), initial=0.0)) or 1.0
        marker.update(color=np.nan_to_num(score), colorscale="RdBu", cmin=-m, cmax=m,
                      colorbar=dict(title="node score", len=0.6, y=0.6))
        hover = np.array([f"{label}: {s:.4g}" if np.isfinite(s) else f"{label}: no score"
                          for label, s in zip(labels, score)], dtype=object)
    if split:
        hover = np.array([f"{h} @{t}" for h, t in zip(hover, column)], dtype=object)
    text = labels
    if not labelled and node_scores is not None:  # name the nodes that carry the most
        strongest = np.argsort(-np.abs(np.nan_to_num(score)), kind="stable")[:MAX_NODE_LABELS]
        text = np.where(np.isin(np.arange(len(labels)), strongest), labels, "")
        labelled = True
    data = np.stack([labels, column.astype(object)], axis=1) if split else labels[:, None]
    return go.Scatter(x=x, y=y, mode="markers+text" if labelled else "markers",
                      name=NODE_TRACE, text=text, textposition="middle left", textfont=dict(size=10),
                      customdata=data, hovertext=hover, marker=marker, showlegend=False,
                      hovertemplate="%{hovertext}<extra>click to open</extra>")


def circuit_graph(edges: pd.DataFrame, n_layer: int, n_head: int, n_kv_head: int, *, title: str = "",
                  node_scores: dict[str, float] | None = None, tokens: Sequence[str] | None = None) -> go.Figure:
    """The circuit as a graph laid out by layer: embeddings at the bottom, logits on top, a layer's heads on
    one row (x = head) and its MLP just above them to the right; every component of the model as a faint
    grey dot. edges (E rows, columns EDGE_COLUMNS) are line segments sender → receiver input: q / k / v
    solid / dashed / dotted and landing left of / at / right of the head's centre, red where the score is
    negative (the edge carries the prediction) and blue where positive, wider for larger |score| (four
    widths). One trace per (input, sign, width), so a thousand edges stay quick to draw. The trace named
    NODE_TRACE holds the circuit's nodes with customdata [label]. No edges: the empty model and a note.
    node_scores (label -> score) colours the circuit's nodes.

    Split by position (tokens given, edges with a "position" column): one column of nodes per token, an
    edge inside its position's column, node_scores keyed "L3H1 @5", customdata [label, position], and a
    faint line where a head reads keys and values at an earlier position than it writes."""
    _check_edges(edges, n_layer, n_head, n_kv_head)
    split = tokens is not None
    if split:
        _check_columns(edges, ("position",), "edges split by position")
    if edges.empty:
        fig = _skeleton(n_layer, n_head, title, tokens)
        fig.add_annotation(text="No edge passes the threshold: lower it to see a circuit.", xref="paper",
                           yref="paper", x=0.5, y=0.5, showarrow=False, font=dict(size=15))
        return fig
    nodes = _circuit_nodes(edges, n_layer, n_head, n_kv_head)
    fig = _skeleton(n_layer, n_head, title, tokens, covered=set(nodes))
    x0, y0 = _positions(edges["sender_layer"].to_numpy(), edges["sender_head"].to_numpy(), n_layer, n_head,
                        _edge_positions(edges))
    x1, y1 = _landings(edges, n_layer, n_head, n_kv_head)
    if split:
        fig.add_trace(_reading_back(nodes, edges, n_layer, n_head))
    fig.add_traces(_edge_traces(edges, x0, y0, x1, y1))
    fig.add_trace(_node_trace(nodes, n_layer, n_head, node_scores, split))
    fig.add_traces(_legend_traces())
    return fig


def faithfulness_curve(curve: pd.DataFrame, chosen: int | None = None, *, title: str = "") -> go.Figure:
    """How much of the clean–corrupted gap the circuit alone ("circuit") and everything but the circuit
    ("complement") reproduce as the circuit keeps n edges: curve (rows, columns n, circuit, complement;
    fractions, 1.0 = 100 %) on a log n axis, dotted lines at 0 % and 100 %, and the chosen n (one of
    curve's n) marked with its two values."""
    _check_columns(curve, ("n", "circuit", "complement"), "curve")
    curve = curve.sort_values("n")
    n = curve["n"].to_numpy(dtype=np.float64)
    if (n <= 0).any():
        raise ValueError("curve's n (edges kept) must be positive: the n axis is logarithmic.")
    if chosen is not None and chosen not in set(n):
        raise ValueError(f"chosen n = {chosen} is not on the curve: pick one of its n values or add that row.")
    fig = go.Figure()
    for column, colour in (("circuit", "#b2182b"), ("complement", "#7f7f7f")):
        fig.add_trace(go.Scatter(x=n, y=curve[column].to_numpy(dtype=np.float64), mode="lines+markers",
                                 name=column, line=dict(color=colour),
                                 hovertemplate=f"{column}: %{{y:.1%}} with %{{x}} edges<extra></extra>"))
    for level in (0.0, 1.0):
        fig.add_hline(y=level, line=dict(color="#999", dash="dot", width=1))
    if chosen is not None:
        row = curve[curve["n"] == chosen].iloc[0]
        values = curve[["circuit", "complement"]].to_numpy(dtype=np.float64)
        low, high = min(0.0, float(np.nanmin(values))), max(1.0, float(np.nanmax(values)))
        note = f"n = {chosen}: circuit {row['circuit']:.0%}, complement {row['complement']:.0%}"
        fig.add_trace(go.Scatter(x=np.array([chosen, chosen], dtype=np.float64), y=np.array([low, high]),
                                 mode="lines+text", name="chosen", text=np.array(["", note], dtype=object),
                                 textposition="bottom right", line=dict(color="black", dash="dash", width=1),
                                 showlegend=False, hoverinfo="skip"))
    fig.update_xaxes(type="log", title_text="edges kept (n)")
    fig.update_yaxes(tickformat=".0%", title_text="share of the clean–corrupted gap")
    fig.update_layout(title=title, height=360, margin=MARGIN, legend=TOP_LEGEND)
    return fig


def composition_vs_usage(frame: pd.DataFrame, *, title: str = "", baseline: float | None = None) -> go.Figure:
    """One point per edge of frame (rows, columns sender, receiver, input "q"|"k"|"v", composition in
    [0, 1], score): x = composition (what the weights allow), y = |score| (what this prompt uses), one
    trace per input kind. Points high on the right: allowed and used; low on the right: allowed, unused.
    baseline: what random matrices of these shapes score, drawn as a dotted line."""
    _check_columns(frame, ("sender", "receiver", "input", "composition", "score"), "frame")
    unknown = sorted(set(frame["input"]) - set(QKV))
    if unknown:
        raise ValueError(f"frame names inputs {unknown}; composition is measured for {list(QKV)} only.")
    fig = go.Figure()
    for kind in QKV:
        part = frame[frame["input"] == kind]
        if part.empty:
            continue
        names = np.stack([part["sender"].to_numpy(dtype=object), part["receiver"].to_numpy(dtype=object),
                          part["score"].to_numpy(dtype=np.float64)], axis=1)
        fig.add_trace(go.Scatter(
            x=part["composition"].to_numpy(dtype=np.float64), y=np.abs(part["score"].to_numpy(dtype=np.float64)),
            mode="markers", name=f"{kind} composition", customdata=names,
            marker=dict(size=7, color=KIND_COLOURS[kind], opacity=0.8),
            hovertemplate=("%{customdata[0]} → %{customdata[1]} (" + kind + ")<br>composition %{x:.3f}"
                           "<br>score %{customdata[2]:.4g}<extra></extra>")))
    if baseline is not None:
        fig.add_vline(x=baseline, line=dict(color="#999", dash="dot", width=1), annotation_text="random matrices",
                      annotation_position="top right")
    fig.update_xaxes(title_text="composition: how much the weights allow it (0–1)", rangemode="tozero")
    fig.update_yaxes(title_text="|edge score|: how much this prompt uses it")
    # a long title fills the top: the legend goes below the x axis title
    fig.update_layout(title=title, height=420, margin=MARGIN,
                      legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="center", x=0.5))
    return fig


def head_reads_figure(allowed: np.ndarray, used: np.ndarray, head: str) -> go.Figure:
    """One head's inputs from every head of the earlier layers: allowed (3, L, nh) composition from the weights
    (top row, 0–1) and used (3, L, nh) this prompt's edge scores (bottom row, red where the edge carries the
    prediction), columns q, k, v; rows of each map are layers 0..L-1, columns heads."""
    if allowed.shape != used.shape or allowed.ndim != 3 or allowed.shape[0] != 3:
        raise ValueError(f"allowed and used need the same shape (3, layers, heads), not {allowed.shape} and "
                         f"{used.shape}.")
    L, nh = allowed.shape[1:]
    fig = make_subplots(rows=2, cols=3, shared_yaxes=True, horizontal_spacing=0.03, vertical_spacing=0.08,
                        subplot_titles=[f"{kind}-composition into {head}" for kind in QKV]
                        + [f"this prompt's edges into {head}'s {kind}" for kind in QKV])
    layers, heads = [f"L{l}" for l in range(L)], [f"H{h}" for h in range(nh)]
    bound = float(np.nanmax(np.abs(used), initial=0.0)) or 1.0
    top = float(np.nanmax(allowed, initial=0.0)) or 1.0
    for col, kind in enumerate(QKV, start=1):
        fig.add_trace(go.Heatmap(z=allowed[col - 1].astype(np.float32), x=heads, y=layers, colorscale="Purples",
                                 zmin=0, zmax=top, showscale=col == 3,
                                 colorbar=dict(title="composition", len=0.45, y=0.78),
                                 hovertemplate=f"%{{y}}%{{x}} → {head} ({kind}): composition %{{z:.3f}}"
                                               "<extra></extra>"),
                      row=1, col=col)
        fig.add_trace(go.Heatmap(z=used[col - 1].astype(np.float32), x=heads, y=layers, colorscale="RdBu", zmid=0,
                                 zmin=-bound, zmax=bound, showscale=col == 3,
                                 colorbar=dict(title="edge score", len=0.45, y=0.22),
                                 hovertemplate=f"%{{y}}%{{x}} → {head} ({kind}): score %{{z:.4g}}<extra></extra>"),
                      row=2, col=col)
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    fig.update_layout(height=min(1000, 260 + 28 * L), margin=MARGIN)
    return fig
