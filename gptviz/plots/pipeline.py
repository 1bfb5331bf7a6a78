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
from gptviz.model import block_structure
from gptviz.plots.common import show_whitespace


@dataclass(frozen=True)
class Stage:
    """One box of the pipeline diagram.

    key: a stable name (TransformerLens-style hook where there is one); title and shape are
    drawn in the box, detail is the hover text; row is its place top to bottom; col its column:
    "main", "left" / "right" (a parallel block's two branches side by side) or "side" (beside the
    main column: position inputs); kind "box" or "add" (a ⊕ node).
    """

    key: str
    title: str
    shape: str
    detail: str
    row: int
    col: str = "main"
    kind: str = "box"

    @property
    def side(self) -> bool:
        return self.col == "side"


def _shape(*dims: int) -> str:
    return "(" + ", ".join(f"{d:,}" for d in dims) + ")"


def _block_stages(config: GPTConfig, T: int, top: int) -> list[Stage]:
    """The stages of one block from its declared structure (model.block_structure), from row `top`:
    each sublayer with the norms before and after it, then its ⊕; a parallel block's two sublayers
    side by side, joined by one ⊕."""
    C, nh, n_kv, hs, d_mlp = config.d_model, config.n_head, config.n_kv_head, config.d_head, config.d_mlp
    norm, norm_formula = features.norm_name(config), features.norm_formula(config)
    kv = f", {n_kv} key/value heads (grouped-query: {config.n_rep} query heads share one)" if n_kv != nh else ""
    mlp_act, mlp_formula, scale = features.mlp_name(config), features.mlp_formula(config), features.scale_text(config)
    window = f"; {features.window_text(config)}" if config.has_sliding_layers else ""
    cap = f"; scores soft-capped: {features.softcap_text(config.attn_softcap)}" if config.attn_softcap else ""
    structure = block_structure(config)
    bodies = {
        "attn": (f"Causal multi-head attention: {nh} heads × {hs}" + (f", {n_kv} kv heads" if n_kv != nh else ""),
                 f"q {_shape(nh, T, hs)}, k v {_shape(n_kv, T, hs)}<br>pattern {_shape(nh, T, T)} → out {_shape(T, C)}",
                 f"softmax(mask(q·kᵀ {scale})) · v per head{kv}{window}{cap}; heads concatenated, then W_O"),
        "mlp": (f"MLP {C} → {d_mlp:,} → {C} ({mlp_act})", f"hidden {_shape(T, d_mlp)} → {_shape(T, C)}",
                f"{mlp_formula}, for each token on its own"),
    }
    norm_places = {name: features.NORM_PLACES[place] for name, place in structure.norms().items()}

    def norm_stage(name: str, row: int, col: str) -> Stage:
        number = "1" if name in ("norm1", "post_attn_norm") else "2"
        post = " (post)" if name.startswith("post") else ""
        return Stage(features.NORM_NAMES[name], f"{norm} {number}{post}", _shape(T, C),
                     f"{norm} {norm_places[name]}: {norm_formula}", row, col)

    def column(branch, col: str, row: int) -> list[Stage]:  # norm before, the sublayer, norm after
        parts = [("norm", branch.norm_before), ("body", branch.name), ("norm", branch.norm_after)]
        boxes = [p for p in parts if p[1] is not None]
        return [norm_stage(name, row + i, col) if kind == "norm" else Stage(name, *bodies[name], row + i, col)
                for i, (kind, name) in enumerate(boxes)]

    stages: list[Stage] = []
    if structure.parallel:  # both sublayers read x: side by side, one ⊕ adds both
        # attention on the right, where rotary comes in from the side
        attn, mlp = column(structure.branches[0], "right", top), column(structure.branches[1], "left", top)
        row = max(s.row for s in attn + mlp) + 1
        return attn + mlp + [Stage(
            "hook_resid_post", "⊕ shortcut", _shape(T, C),
            f"x + attention(norm(x)) + MLP(norm(x)): both read the block's input x, in parallel; the block's "
            f"output, the next block's input (× {config.n_layer} blocks)", row, kind="add")]
    adds = (("hook_resid_mid", "x + attention(norm(x)): the residual stream after attention"),
            ("hook_resid_post", f"x + MLP(norm(x)): the block's output, the next block's input "
                                f"(× {config.n_layer} blocks)"))
    row = top
    for branch, (key, detail) in zip(structure.branches, adds):
        stages += column(branch, "main", row)
        row = stages[-1].row + 1
        stages.append(Stage(key, "⊕ shortcut", _shape(T, C), detail, row, kind="add"))
        row += 1
    return stages


def pipeline_stages(config: GPTConfig, n_tokens: int) -> list[Stage]:
    """The stages a prompt of n_tokens (T) goes through in this model, with their real shapes; the
    block is drawn as the model declares it (its norms, sequential or parallel sublayers)."""
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be >= 1, not {n_tokens}.")
    T, C, V = n_tokens, config.d_model, config.vocab_size
    norm = features.norm_name(config)
    learned = config.positional == "learned"
    stages = [
        Stage("ids", "Prompt tokens", f"ids {_shape(T)}", f"{T} token ids from the tokenizer (vocabulary {V:,})", 0),
        Stage("hook_embed", "Token embedding", f"{_shape(T, C)}",
              f"wte[ids]: each id picks one row of the {_shape(V, C)} table", 1),
    ]
    if learned:
        stages += [
            Stage("hook_pos_embed", "Position embedding", f"{_shape(T, C)}",
                  f"wpe[0..{T - 1}]: one learned row per position of the {_shape(config.n_ctx, C)} table", 1,
                  col="side"),
            Stage("blocks.0.hook_resid_pre", "⊕ token + position", f"x₀ {_shape(T, C)}",
                  "x₀ = token embedding + position embedding: the residual stream entering block 0", 2,
                  kind="add"),
        ]
    block = _block_stages(config, T, BLOCK_TOP)
    if not learned:
        attn_row = next(s.row for s in block if s.key == "attn")
        part = (f" on {config.rotary_dims} of each head's {config.d_head} dimensions"
                if config.rotary_dims < config.d_head else "")
        stages.append(
            Stage("rotary", "Position: rotary (RoPE)", f"rotates q, k (θ = {config.rope.theta:g})",
                  f"No position vector is added: inside attention q and k are rotated{part} by an angle that "
                  "grows with the position, so q·k depends on the tokens' distance", attn_row, col="side")
        )
    last = block[-1].row
    final_cap = (f"; then soft-capped: {features.softcap_text(config.final_softcap)}"
                 if config.final_softcap is not None else "")
    stages += block + [
        Stage("ln_final", f"Final {norm}", f"{_shape(T, C)}", f"{norm} of the last block's output", last + 1),
        Stage("logits", "Unembedding → logits", f"{_shape(T, V)}",
              "logits = final-normed x · W_Uᵀ" + (" (W_U is the token embedding: tied)" * config.tie_embeddings)
              + final_cap, last + 2),
        Stage("probs", "softmax → next-token probabilities", f"{_shape(T, V)}",
              f"softmax over the {V:,} tokens at every position; the last row predicts the next token", last + 3),
    ]
    return stages


BLOCK_TOP = 3  # the first row of the block
COLUMNS = {"main": (5.0, 6.4), "left": (3.3, 3.0), "right": (6.6, 3.0), "side": (11.1, 3.6)}  # x, width
MAIN_X, LANE_X = COLUMNS["main"][0], 1.0
BOX_H = 0.7
TALL_H = 0.86  # boxes with two lines of shapes
INK = "#1f2937"
X_RANGE = (0.0, 13.0)


def _height(stage: Stage) -> float:
    return TALL_H if "<br>" in stage.shape else BOX_H


def pipeline_figure(config: GPTConfig, n_tokens: int) -> go.Figure:
    """The pipeline of `config` for a prompt of n_tokens as boxes and arrows, top to bottom.

    Boxes carry each stage's title and real shape; hovering a box shows its formula. The block
    is drawn from its declared structure: norms where the model has them, a parallel block's
    attention and MLP side by side. fig.data[0] holds one invisible marker per stage (text =
    titles, hovertext = details).
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

    in_block = [s for s in stages if s.row >= BLOCK_TOP and s.key not in ("ln_final", "logits", "probs", "rotary")]
    top, bottom = BLOCK_TOP, max(s.row for s in in_block)
    shapes.append(dict(type="rect", x0=0.3, x1=9.0, y0=top - 0.55, y1=bottom + 0.5, layer="below",
                       line=dict(color="#9aa", dash="dash"), fillcolor="rgba(120,160,200,0.07)"))
    notes.append(dict(x=8.62, y=(top + bottom) / 2, xref="x", yref="y", showarrow=False, textangle=-90,
                      text=f"<b>× {config.n_layer} {'blocks' if bottom - top < 4 else 'transformer blocks'}</b>"
                           f" (layers 0–{config.n_layer - 1})",
                      font=dict(size=12, color="#365")))
    for s in stages:
        x, w = COLUMNS[s.col]
        if s.kind == "add":
            fill, border = "#fff4d6", "#c9a227"
        elif s.side:
            fill, border = "#eef6e8", "#6a9a4a"
        else:
            fill, border = "#e8f0fb", "#4a72b0"
        h = _height(s)
        shapes.append(dict(type="rect", x0=x - w / 2, x1=x + w / 2, y0=s.row - h / 2, y1=s.row + h / 2,
                           line=dict(color=border), fillcolor=fill, layer="below"))
        size = 12 if s.col in ("main", "side") else 10
        notes.append(dict(x=x, y=s.row, xref="x", yref="y", showarrow=False, font=dict(size=size, color=INK),
                          text=f"<b>{s.title}</b><br><span style='font-family:monospace'>{s.shape}</span>"))
    # the flow: each column's boxes top to bottom; a split into both columns and a join after them
    flow = [s for s in stages if not s.side]
    for a, b in zip(flow, flow[1:]):
        if a.col == b.col or "main" in (a.col, b.col):
            xa, xb = COLUMNS[a.col][0], COLUMNS[b.col][0]
            if a.row == b.row:  # side by side: both fed from the box above the pair
                continue
            arrow(xa, a.row + _height(a) / 2, xb, b.row - _height(b) / 2)
    by_col = {col: [s for s in flow if s.col == col] for col in ("left", "right")}
    if by_col["left"]:
        above = max((s for s in flow if s.col == "main" and s.row < by_col["left"][0].row), key=lambda s: s.row)
        join = next(s for s in flow if s.col == "main" and s.row > by_col["left"][-1].row)
        for col in ("left", "right"):
            first, last = by_col[col][0], by_col[col][-1]
            arrow(MAIN_X, above.row + _height(above) / 2, COLUMNS[col][0], first.row - _height(first) / 2)
            arrow(COLUMNS[col][0], last.row + _height(last) / 2, MAIN_X, join.row - _height(join) / 2)
    for s in stages:
        if not s.side:
            continue
        x, w = COLUMNS["side"]
        if s.key == "hook_pos_embed":  # into the ⊕ below the token embedding
            arrow(x, s.row + BOX_H / 2, MAIN_X + COLUMNS["main"][1] / 2, s.row + 1)
        else:  # rotary: into attention, from the side
            target = next(t for t in flow if t.key == "attn")
            tx, tw = COLUMNS[target.col]
            arrow(x - w / 2, s.row, tx + tw / 2, s.row, dash=True)
    # the shortcut (residual) connections: from where the stream enters a sublayer to its ⊕
    start = top - 0.5
    for add in (s for s in in_block if s.kind == "add"):
        line(MAIN_X, start, LANE_X, start)
        line(LANE_X, start, LANE_X, add.row)
        arrow(LANE_X, add.row, MAIN_X - COLUMNS["main"][1] / 2, add.row)
        notes.append(dict(x=LANE_X - 0.15, y=(start + add.row) / 2, xref="x", yref="y", showarrow=False,
                          textangle=-90, text="shortcut", font=dict(size=11, color="#666")))
        start = add.row + 0.5
    fig.add_trace(go.Scatter(
        x=np.asarray([COLUMNS[s.col][0] for s in stages]), y=np.asarray([s.row for s in stages]),
        mode="markers", marker=dict(size=40, opacity=0), text=[s.title for s in stages],
        hovertext=[f"{s.title}<br>{s.detail}" for s in stages], hoverinfo="text", showlegend=False,
    ))
    last = max(s.row for s in stages)
    fig.update_layout(
        shapes=shapes, annotations=notes, height=int(70 * (last + 1)), margin=dict(l=10, r=10, t=40, b=10),
        title=f"{config.name or config.arch} reading {n_tokens} token{'s' * (n_tokens != 1)}",
        plot_bgcolor="white", hovermode="closest",
    )
    fig.update_xaxes(range=list(X_RANGE), visible=False, fixedrange=True)
    fig.update_yaxes(range=[last + 0.6, -0.6], visible=False, fixedrange=True)
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
