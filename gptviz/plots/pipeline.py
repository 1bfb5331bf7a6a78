"""The model's pipeline as a diagram of labelled boxes, and the top next tokens as bars.

Pure figure builders: a config and a token count (or arrays and token strings) in, a
plotly figure out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from gptviz import features
from gptviz.config import GPTConfig
from gptviz.plots.common import show_whitespace


@dataclass(frozen=True)
class Stage:
    """One box of the pipeline diagram.

    key: a stable name (TransformerLens-style hook where there is one); title and shape are
    drawn in the box, detail is the hover text; row is its place top to bottom; side places
    it right of the main column; kind "box" or "add" (a ⊕ node).
    """

    key: str
    title: str
    shape: str
    detail: str
    row: int
    side: bool = False
    kind: str = "box"


def _shape(*dims: int) -> str:
    return "(" + ", ".join(f"{d:,}" for d in dims) + ")"


def pipeline_stages(config: GPTConfig, n_tokens: int) -> list[Stage]:
    """The stages a prompt of n_tokens (T) goes through in this model, with their real shapes."""
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be >= 1, not {n_tokens}.")
    T, C, V = n_tokens, config.d_model, config.vocab_size
    nh, n_kv, hs, d_mlp, n = config.n_head, config.n_kv_head, config.d_head, config.d_mlp, config.n_layer
    learned = config.positional == "learned"
    norm, norm_formula = features.norm_name(config), features.norm_formula(config)
    kv = f", {n_kv} key/value heads (grouped-query: {config.n_rep} query heads share one)" if n_kv != nh else ""
    mlp_act, mlp_formula, scale = features.mlp_name(config), features.mlp_formula(config), features.scale_text(config)
    window = f"; {features.window_text(config)}" if config.has_sliding_layers else ""
    stages = [
        Stage("ids", "Prompt tokens", f"ids {_shape(T)}", f"{T} token ids from the tokenizer (vocabulary {V:,})", 0),
        Stage("hook_embed", "Token embedding", f"{_shape(T, C)}",
              f"wte[ids]: each id picks one row of the {_shape(V, C)} table", 1),
    ]
    if learned:
        stages += [
            Stage("hook_pos_embed", "Position embedding", f"{_shape(T, C)}",
                  f"wpe[0..{T - 1}]: one learned row per position of the {_shape(config.n_ctx, C)} table", 1,
                  side=True),
            Stage("blocks.0.hook_resid_pre", "⊕ token + position", f"x₀ {_shape(T, C)}",
                  "x₀ = token embedding + position embedding: the residual stream entering block 0", 2,
                  kind="add"),
        ]
    else:
        stages.append(
            Stage("rotary", "Position: rotary (RoPE)", f"rotates q, k (θ = {config.rope.theta:g})",
                  "No position vector is added: inside attention q and k are rotated by an angle that "
                  "grows with the position, so q·k depends on the tokens' distance", 4, side=True)
        )
    stages += [
        Stage("ln1", f"{norm} 1", f"{_shape(T, C)}", f"{norm}: {norm_formula}", 3),
        Stage("attn", f"Causal multi-head attention: {nh} heads × {hs}" + (f", {n_kv} kv heads" if n_kv != nh else ""),
              f"q {_shape(nh, T, hs)}, k v {_shape(n_kv, T, hs)}<br>pattern {_shape(nh, T, T)} → out {_shape(T, C)}",
              f"softmax(mask(q·kᵀ {scale})) · v per head{kv}{window}; heads concatenated, then W_O", 4),
        Stage("hook_resid_mid", "⊕ shortcut", f"{_shape(T, C)}",
              "x + attention(norm(x)): the residual stream after attention", 5,
              kind="add"),
        Stage("ln2", f"{norm} 2", f"{_shape(T, C)}", f"{norm}: {norm_formula}", 6),
        Stage("mlp", f"MLP {C} → {d_mlp:,} → {C} ({mlp_act})", f"hidden {_shape(T, d_mlp)} → {_shape(T, C)}",
              f"{mlp_formula}, for each token on its own", 7),
        Stage("hook_resid_post", "⊕ shortcut", f"{_shape(T, C)}",
              f"x + MLP(norm(x)): the block's output, the next block's input (× {n} blocks)", 8, kind="add"),
        Stage("ln_final", f"Final {norm}", f"{_shape(T, C)}", f"{norm} of the last block's output", 9),
        Stage("logits", "Unembedding → logits", f"{_shape(T, V)}",
              "logits = final-normed x · W_Uᵀ" + (" (W_U is the token embedding: tied)" * config.tie_embeddings), 10),
        Stage("probs", "softmax → next-token probabilities", f"{_shape(T, V)}",
              f"softmax over the {V:,} tokens at every position; the last row predicts the next token", 11),
    ]
    return stages


MAIN_X, SIDE_X, LANE_X = 5.0, 11.1, 1.0
BOX_W, SIDE_W, BOX_H = 6.4, 3.6, 0.7
TALL_H = 0.86  # boxes with two lines of shapes
INK = "#1f2937"
X_RANGE = (0.0, 13.0)
BLOCK_ROWS = (3, 8)


def _height(stage: Stage) -> float:
    return TALL_H if "<br>" in stage.shape else BOX_H


def pipeline_figure(config: GPTConfig, n_tokens: int) -> go.Figure:
    """The pipeline of `config` for a prompt of n_tokens as boxes and arrows, top to bottom.

    Boxes carry each stage's title and real shape; hovering a box shows its formula.
    fig.data[0] holds one invisible marker per stage (text = titles, hovertext = details).
    """
    stages = pipeline_stages(config, n_tokens)
    fig = go.Figure()
    shapes, notes = [], []

    def arrow(x0: float, y0: float, x1: float, y1: float, dash: bool = False) -> None:
        notes.append(dict(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y", text="",
                          showarrow=True, arrowhead=2, arrowsize=1.2, arrowwidth=1.5,
                          arrowcolor="#888" if dash else "#444"))

    def line(x0: float, y0: float, x1: float, y1: float) -> None:
        shapes.append(dict(type="line", x0=x0, y0=y0, x1=x1, y1=y1, line=dict(color="#444", width=1.5)))

    top, bottom = BLOCK_ROWS
    shapes.append(dict(type="rect", x0=0.3, x1=9.0, y0=top - 0.55, y1=bottom + 0.5, layer="below",
                       line=dict(color="#9aa", dash="dash"), fillcolor="rgba(120,160,200,0.07)"))
    notes.append(dict(x=8.62, y=(top + bottom) / 2, xref="x", yref="y", showarrow=False, textangle=-90,
                      text=f"<b>× {config.n_layer} transformer blocks</b> (layers 0–{config.n_layer - 1})",
                      font=dict(size=12, color="#365")))
    main = [s for s in stages if not s.side]
    for s in stages:
        x, w = (SIDE_X, SIDE_W) if s.side else (MAIN_X, BOX_W)
        if s.kind == "add":
            fill, border = "#fff4d6", "#c9a227"
        elif s.side:
            fill, border = "#eef6e8", "#6a9a4a"
        else:
            fill, border = "#e8f0fb", "#4a72b0"
        h = _height(s)
        shapes.append(dict(type="rect", x0=x - w / 2, x1=x + w / 2, y0=s.row - h / 2, y1=s.row + h / 2,
                           line=dict(color=border), fillcolor=fill, layer="below"))
        notes.append(dict(x=x, y=s.row, xref="x", yref="y", showarrow=False, font=dict(size=12, color=INK),
                          text=f"<b>{s.title}</b><br><span style='font-family:monospace'>{s.shape}</span>"))
    for a, b in zip(main, main[1:]):
        arrow(MAIN_X, a.row + _height(a) / 2, MAIN_X, b.row - _height(b) / 2)
    for s in stages:
        if not s.side:
            continue
        if s.key == "hook_pos_embed":  # into the ⊕ below the token embedding
            arrow(SIDE_X, s.row + BOX_H / 2, MAIN_X + BOX_W / 2, s.row + 1)
        else:  # rotary: into attention, from the side
            arrow(SIDE_X - SIDE_W / 2, s.row, MAIN_X + BOX_W / 2, s.row, dash=True)
    for start, end in ((top - 0.5, top + 2), (top + 2.5, bottom)):  # the shortcut (residual) connections
        line(MAIN_X, start, LANE_X, start)
        line(LANE_X, start, LANE_X, end)
        arrow(LANE_X, end, MAIN_X - BOX_W / 2, end)
    notes.append(dict(x=LANE_X - 0.15, y=top + 1, xref="x", yref="y", showarrow=False, textangle=-90,
                      text="shortcut", font=dict(size=11, color="#666")))
    notes.append(dict(x=LANE_X - 0.15, y=top + 4, xref="x", yref="y", showarrow=False, textangle=-90,
                      text="shortcut", font=dict(size=11, color="#666")))
    fig.add_trace(go.Scatter(
        x=np.asarray([SIDE_X if s.side else MAIN_X for s in stages]), y=np.asarray([s.row for s in stages]),
        mode="markers", marker=dict(size=40, opacity=0), text=[s.title for s in stages],
        hovertext=[f"{s.title}<br>{s.detail}" for s in stages], hoverinfo="text", showlegend=False,
    ))
    fig.update_layout(
        shapes=shapes, annotations=notes, height=840, margin=dict(l=10, r=10, t=40, b=10),
        title=f"{config.name or config.arch} reading {n_tokens} token{'s' * (n_tokens != 1)}",
        plot_bgcolor="white", hovermode="closest",
    )
    fig.update_xaxes(range=list(X_RANGE), visible=False, fixedrange=True)
    fig.update_yaxes(range=[11.6, -0.6], visible=False, fixedrange=True)
    return fig


def top_tokens_figure(tokens: Sequence[str], probs: np.ndarray, ids: Sequence[int] | None = None,
                      title: str = "") -> go.Figure:
    """Horizontal bars of next-token probabilities, most likely on top.

    tokens (k,) display strings, probs (k,) in [0, 1]; ids (k,) for the hover text.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 1 or len(tokens) != probs.shape[0]:
        raise ValueError(f"tokens ({len(tokens)}) and probs {probs.shape} must be the same length.")
    if ids is not None and len(ids) != len(tokens):
        raise ValueError(f"ids ({len(ids)}) and tokens ({len(tokens)}) must be the same length.")
    labels = [f"{r + 1}. {show_whitespace(t)}" for r, t in enumerate(tokens)]
    custom = np.asarray(ids if ids is not None else np.full(len(tokens), -1), dtype=np.int64)
    fig = go.Figure(go.Bar(
        x=probs, y=labels, orientation="h", customdata=custom, text=[f"{p:.1%}" for p in probs],
        textposition="auto", marker_color="#4a72b0",
        hovertemplate="%{y}<br>id %{customdata}<br>p = %{x:.4f}<extra></extra>",
    ))
    fig.update_layout(title=title, xaxis_title="probability", height=120 + 28 * len(tokens),
                      margin=dict(l=10, r=10, t=40, b=10))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(range=[0, max(1e-9, float(probs.max(initial=0))) * 1.1])
    return fig
