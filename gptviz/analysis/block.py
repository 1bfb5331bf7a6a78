"""Inside one transformer block, step by step, with the model's own modules and the trace's numbers.

A block is x → x + post_attn_norm(attn(norm1(x))) → + post_mlp_norm(mlp(norm2(·))), the MLP reading
the stream after attention or, in a parallel block, the block's input; which norms exist and where
is the block's own declaration (block.structure). This module takes each step apart for a learner:
the norm's mean, variance (or mean square), normalised vector, gain and bias; the projections
to q, k, v for one token; the heads' context vectors concatenated and multiplied by W_O, and the
same output as a sum of per-head contributions; what each sublayer writes into the residual
stream, layer by layer; the MLP's expansion, activation and contraction, one neuron's activations
and output direction; the MLP recomputed from one token's vector alone; dropout as training
would apply it. Every function calls the model's own modules (norm1, attn.qkv, attn.project,
attn.out_proj, mlp.expand, mlp.act, mlp.fc_out, the post norms) and tests compare each step
with the model's own output.

Position-wise steps (norms, the MLP) run on a window of positions [start, stop): a token's
result does not depend on the others, so a window is exact. Shapes: T tokens, W = stop - start,
C = d_model, nh heads of hs = d_head, n_kv key/value heads, d_mlp hidden units.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from gptviz.features import NORM_PLACES
from gptviz.model import LayerNorm, Norm
from gptviz.trace import Trace

TOP_NEURONS = 32  # neurons in the tokens × neurons view
CURVE_POINTS = 401


def _position(trace: Trace, position: int) -> int:
    if not 0 <= position < trace.n_tokens:
        raise ValueError(f"Position {position} is outside the prompt's 0..{trace.n_tokens - 1}.")
    return position


def _np(x: Tensor) -> np.ndarray:
    return x.detach().float().numpy()


# ---- the norms ----------------------------------------------------------------------------------
def norm_places(trace: Trace) -> dict[str, str]:
    """The norms a block of this model has, in the order they run: module name -> where it sits
    (read from the block's declared structure)."""
    return {name: NORM_PLACES[place] for name, place in trace.model.blocks[0].structure.norms().items()}


def norm_module(trace: Trace, layer: int, which: str) -> nn.Module:
    """Block `layer`'s norm named `which` (a key of norm_places)."""
    if which not in norm_places(trace):
        raise ValueError(f"This model's blocks have no norm {which!r}: use one of {list(norm_places(trace))}.")
    return getattr(trace.model.blocks[trace._layer(layer)], which)


def norm_input(trace: Trace, layer: int, which: str, start: int = 0, stop: int | None = None) -> Tensor:
    """(W, C) what norm `which` of block `layer` reads at positions [start, stop): the stream its
    sublayer reads (a norm before it), or the sublayer's raw output (a post norm); Trace.norm_in."""
    return trace.norm_in(layer, which, start, stop)


@dataclass(frozen=True)
class NormSteps:
    """A norm taken apart over W vectors of size n (float64, computed from the model's float32 input
    by the norm's own steps, gptviz.model.Norm).

    centred: LayerNorm subtracts the mean (RMSNorm does not); mean (W,) the input's mean either way;
    var (W,): the variance (LayerNorm) or the mean of squares (RMSNorm): the norm's statistic;
    denom (W,) = √(var + eps): the standard deviation or the root mean square; normalized (W, n) =
    (x − mean) / denom or x / denom; gain (n,) = offset + weight (the γ applied); bias (n,) β or None;
    out (W, n) = normalized · gain (+ bias); model_out (W, n) the norm module's own output on x (out
    equals it to float32 rounding).
    """

    centred: bool
    eps: float
    offset: float
    x: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    denom: np.ndarray
    normalized: np.ndarray
    gain: np.ndarray
    bias: np.ndarray | None
    out: np.ndarray
    model_out: np.ndarray

    @property
    def kind(self) -> str:
        return "layernorm" if self.centred else "rmsnorm"

    @property
    def difference(self) -> float:
        """Largest |out − model_out|: the steps rebuild the model's norm."""
        return float(np.abs(self.out - self.model_out).max(initial=0.0))


def norm_steps(norm: nn.Module, x: Tensor) -> NormSteps:
    """The model's LayerNorm or RMSNorm applied to x (W, n) one step at a time (its own centre,
    statistic, scale, gain and bias, in float64); `out` equals norm(x)."""
    if not isinstance(norm, Norm):
        raise ValueError(f"norm_steps takes the model's LayerNorm or RMSNorm, not {type(norm).__name__}.")
    xd = x.detach().double()
    with torch.inference_mode():
        var = norm.statistic(xd)[..., 0]  # (W,)
        normalized = norm.normalized(xd)  # (W, n)
        gain = norm.gain.detach().double()  # (n,)
        bias = None if norm.bias is None else norm.bias.detach().double()
        out = normalized * gain + (bias if bias is not None else 0.0)
        model_out = norm(x.detach())
    return NormSteps(
        centred=norm.centred, eps=float(norm.eps), offset=float(norm.offset), x=xd.numpy(), mean=xd.mean(-1).numpy(),
        var=var.numpy(), denom=(var + norm.eps).sqrt().numpy(), normalized=normalized.numpy(), gain=gain.numpy(),
        bias=None if bias is None else bias.numpy(), out=out.numpy(), model_out=_np(model_out),
    )


def norm_table(steps: NormSteps, tokens: list[str], start: int = 0) -> pd.DataFrame:
    """One row per vector: its mean, standard deviation or RMS and L2 norm before the norm and after."""
    spread = "std" if steps.centred else "rms"

    def stats(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mean = v.mean(-1)
        other = v.std(-1) if steps.centred else np.sqrt((v**2).mean(-1))
        return mean, other, np.linalg.norm(v, axis=-1)

    (m0, s0, n0), (m1, s1, _), (m2, s2, n2) = stats(steps.x), stats(steps.normalized), stats(steps.out)
    return pd.DataFrame({
        "position": np.arange(start, start + len(tokens)), "token": tokens,
        "mean before": m0, f"{spread} before": s0, "‖x‖ before": n0,
        "mean normalised": m1, f"{spread} normalised": s1,
        "mean after (× γ" + (" + β)" if steps.bias is not None else ")"): m2, f"{spread} after": s2,
        "‖x‖ after": n2,
    })


def norm_scale_by_layer(trace: Trace, position: int, start: int = 0, stop: int | None = None) -> pd.DataFrame:
    """Layer by layer, the L2 norm of the residual stream entering each block and of what attention
    reads from it (norm1's output; the stream itself in a block without norms before its sublayers):
    at `position`, and the median over positions [start, stop). Rows "L0".. are the blocks' inputs; the
    last row, "final", is the last block's output and the final norm (what the output head reads)."""
    position = _position(trace, position)
    start, stop = trace.span(start, stop)
    model, rows = trace.model, []
    with torch.inference_mode():
        for layer in range(trace.n_layer + 1):
            resid = trace.resid_stream[layer][start:stop]  # (W, C)
            at = trace.resid_stream[layer][position : position + 1]
            if layer < trace.n_layer:
                normed, normed_at = (trace.sublayer_in(layer, "attn", start, stop),
                                     trace.sublayer_in(layer, "attn", position, position + 1))
            else:
                normed, normed_at = model.final_norm(resid), model.final_norm(at)
            rows.append((
                f"L{layer}" if layer < trace.n_layer else "final",
                float(at.norm()), float(normed_at.norm()),
                float(resid.norm(dim=-1).median()), float(normed.norm(dim=-1).median()),
            ))
    return pd.DataFrame(rows, columns=["residual stream", "‖x‖ at the token", "‖norm(x)‖ at the token",
                                       "median ‖x‖", "median ‖norm(x)‖"])


# ---- attention: q, k, v for one token, and the output projection -------------------------------
@dataclass(frozen=True)
class QKVSteps:
    """One token's projections in block `layer` (hs = d_head).

    x (C,) the norm1 output; q_lin (nh, hs), k_lin (n_kv, hs), v (n_kv, hs) = x · W_q, W_k, W_v (+ bias),
    split into heads; q_pre, k_pre after the q/k norms (equal to q_lin, k_lin without them); q, k after
    rotary at the token's position (equal to q_pre, k_pre with learned positions): the model's q and k.
    weight_shapes: "W_q", "W_k", "W_v" -> (C, columns) as x · W multiplies them; difference: the largest
    |q, k, v − the trace's q, k, v at the position| (from the whole prompt's forward pass).
    """

    position: int
    x: np.ndarray
    q_lin: np.ndarray
    k_lin: np.ndarray
    v: np.ndarray
    q_pre: np.ndarray
    k_pre: np.ndarray
    q: np.ndarray
    k: np.ndarray
    weight_shapes: dict[str, tuple[int, int]]
    difference: float


def qkv_steps(trace: Trace, layer: int, position: int) -> QKVSteps:
    """Token `position`'s q, k, v in block `layer`, from its own norm1 output alone (projections and
    rotary act on each token separately, so this equals the trace's q, k, v at that position)."""
    position = _position(trace, position)
    cfg, block = trace.model.config, trace.model.blocks[trace._layer(layer)]
    nh, n_kv, hs = cfg.n_head, cfg.n_kv_head, cfg.d_head
    with torch.inference_mode():
        x = trace.sublayer_in(layer, "attn", position, position + 1)[None]  # (1, 1, C)
        q_lin, k_lin, v = block.attn.qkv(x)[0, 0].split([nh * hs, n_kv * hs, n_kv * hs])
        q_pre, k_pre, _ = block.attn.project(x, None)  # after the q/k norms, before rotary
        rotary = trace.model.rotary(torch.tensor([position]))[trace._layer(layer)]
        q, k, _ = block.attn.project(x, rotary)  # (1, nh, 1, hs), (1, n_kv, 1, hs)
    return QKVSteps(
        position=position, x=_np(x[0, 0]), q_lin=_np(q_lin.view(nh, hs)), k_lin=_np(k_lin.view(n_kv, hs)),
        v=_np(v.view(n_kv, hs)), q_pre=_np(q_pre[0, :, 0]), k_pre=_np(k_pre[0, :, 0]), q=_np(q[0, :, 0]),
        k=_np(k[0, :, 0]),
        weight_shapes={"W_q": (cfg.d_model, nh * hs), "W_k": (cfg.d_model, n_kv * hs), "W_v": (cfg.d_model, n_kv * hs)},
        difference=max(float((q[0, :, 0] - trace.q(layer)[:, position]).abs().max()),
                       float((k[0, :, 0] - trace.k(layer)[:, position]).abs().max()),
                       float((v.view(n_kv, hs) - trace.v(layer)[:, position]).abs().max())),
    )


def merged_heads(trace: Trace, layer: int, start: int = 0, stop: int | None = None) -> Tensor:
    """(W, nh·hs) the heads' context vectors (trace.z) concatenated: columns h·hs .. (h+1)·hs - 1 are head h."""
    z = trace.z(layer, start, stop)
    return z.transpose(0, 1).reshape(z.shape[1], -1)


@dataclass(frozen=True)
class AttentionOutput:
    """Block `layer`'s attention output at positions [start, stop), whole and head by head.

    merged (W, nh·hs) concatenated context vectors; out (W, C) = merged · W_Oᵀ (+ b): out_proj's output;
    written (W, C) what joins the residual stream (out, through the post-attention norm if any);
    bias (C,) or None; head_parts (nh, W, C) = z_h · W_O[:, h·hs:(h+1)·hs]ᵀ (their sum plus the bias is
    out); head_norms (nh, W) ‖head_parts‖; head_shares (nh, W) each head's signed share of out along
    out's own direction, part·out / ‖out‖² (with bias_share (W,) they sum to 1).
    """

    start: int
    merged: np.ndarray
    out: np.ndarray
    written: np.ndarray
    bias: np.ndarray | None
    head_parts: np.ndarray
    head_norms: np.ndarray
    head_shares: np.ndarray
    bias_share: np.ndarray | None

    @property
    def head_sum_difference(self) -> float:
        """Largest |Σ_h head_parts (+ bias) − out|: the per-head split adds up to the output."""
        summed = self.head_parts.sum(0) + (self.bias if self.bias is not None else 0.0)
        return float(np.abs(summed - self.out).max(initial=0.0))


def attention_output(trace: Trace, layer: int, start: int = 0, stop: int | None = None) -> AttentionOutput:
    """The output projection of block `layer` over positions [start, stop), and its per-head split."""
    start, stop = trace.span(start, stop)
    block = trace.model.blocks[trace._layer(layer)]
    with torch.inference_mode():
        z = trace.z(layer, start, stop)  # (nh, W, hs)
        merged = z.transpose(0, 1).reshape(z.shape[1], -1)  # (W, nh·hs)
        out = block.attn.out_proj(merged)  # (W, C)
        written = block.post_attn_norm(out)
        parts = block.attn.head_outputs(z)  # (nh, W, C)
        bias = block.attn.out_proj.bias
        sq = out.double().pow(2).sum(-1).clamp_min(1e-30)  # (W,)
        shares = (parts.double() * out.double()).sum(-1) / sq  # (nh, W)
        bias_share = None if bias is None else (out.double() @ bias.double()) / sq
    return AttentionOutput(
        start=start, merged=_np(merged), out=_np(out), written=_np(written),
        bias=None if bias is None else _np(bias), head_parts=_np(parts), head_norms=_np(parts.norm(dim=-1)),
        head_shares=shares.numpy(), bias_share=None if bias_share is None else bias_share.numpy(),
    )


# ---- the shortcut: what each sublayer writes into the residual stream ---------------------------
WRITE_ROWS = ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")


def residual_writes(trace: Trace, layer: int, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
    """L2 norms (W,) at positions [start, stop) of block `layer`'s residual stream and what its sublayers
    write into it: resid_pre, attn_out (attention's write), resid_mid = resid_pre + attn_out, mlp_out
    (the MLP's write), resid_post = resid_mid + mlp_out. Kept on the trace per (layer, window)."""
    start, stop = trace.span(start, stop)
    layer = trace._layer(layer)

    def compute() -> dict[str, np.ndarray]:
        vectors = {"resid_pre": trace.resid_pre(layer)[start:stop],
                   "attn_out": trace.attn_out(layer, start, stop),
                   "resid_mid": trace.resid_mid(layer)[start:stop],
                   "mlp_out": _mlp_tensors(trace, layer, start, stop)["written"],
                   "resid_post": trace.resid_post(layer)[start:stop]}
        return {name: _np(vectors[name].norm(dim=-1)) for name in WRITE_ROWS}

    return trace._memoized(("block_writes", layer, start, stop), compute)


def all_residual_writes(
    trace: Trace, start: int = 0, stop: int | None = None, progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """residual_writes of every layer stacked: name -> (n_layer, W); progress(done, n_layer) per layer."""
    per_layer = []
    for layer in range(trace.n_layer):
        per_layer.append(residual_writes(trace, layer, start, stop))
        if progress is not None:
            progress(layer + 1, trace.n_layer)
    return {name: np.stack([w[name] for w in per_layer]) for name in WRITE_ROWS}


# ---- the MLP ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MLPSteps:
    """Block `layer`'s MLP at positions [start, stop), float32 numpy.

    x (W, C) the norm2 output; pre (W, d_mlp) the pre-activation x · W_in (+ b), or the gate x · W_gate;
    up (W, d_mlp) x · W_up for a gated MLP, else None; act (W, d_mlp) = act(pre); hidden (W, d_mlp) =
    act · up (gated) or act: the neurons' activations; out (W, C) = hidden · W_outᵀ (+ b); written (W, C):
    out through the post-MLP norm if any, what joins the residual stream.
    """

    start: int
    x: np.ndarray
    pre: np.ndarray
    up: np.ndarray | None
    act: np.ndarray
    hidden: np.ndarray
    out: np.ndarray
    written: np.ndarray


def _mlp_tensors(trace: Trace, layer: int, start: int, stop: int | None) -> dict[str, Tensor | None]:
    start, stop = trace.span(start, stop)
    block = trace.model.blocks[trace._layer(layer)]
    with torch.inference_mode():
        x = trace.sublayer_in(layer, "mlp", start, stop)
        pre, up = block.mlp.expand(x)
        act = block.mlp.act(pre)
        hidden = act if up is None else act * up
        out = trace.mlp_module_out(layer, start, stop)  # a knocked-out MLP: its output as that run had it
        return dict(x=x, pre=pre, up=up, act=act, hidden=hidden, out=out, written=block.post_mlp_norm(out))


def mlp_steps(trace: Trace, layer: int, start: int = 0, stop: int | None = None) -> MLPSteps:
    """The MLP of block `layer` step by step on the residual stream it reads (Trace.mlp_in) at [start, stop)."""
    parts = _mlp_tensors(trace, layer, start, stop)
    return MLPSteps(start=start, **{name: None if t is None else _np(t) for name, t in parts.items()})


def top_neurons(hidden: Tensor | np.ndarray, k: int = TOP_NEURONS) -> np.ndarray:
    """The k neurons (columns of hidden (W, d_mlp)) with the largest |activation| anywhere in the window,
    largest first."""
    h = torch.as_tensor(hidden)
    if h.ndim != 2:
        raise ValueError(f"hidden must be (tokens, neurons), got shape {tuple(h.shape)}.")
    k = min(k, h.shape[1])
    return torch.topk(h.abs().amax(dim=0), k).indices.numpy()


def activation_curve(trace: Trace, layer: int, low: float, high: float, n: int = CURVE_POINTS
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The MLP's activation function (the model's own: GELU or SiLU) on n points of [low, high]."""
    if not high > low:
        raise ValueError(f"The curve needs low < high, got [{low}, {high}].")
    x = torch.linspace(low, high, n)
    with torch.inference_mode():
        return x.numpy(), _np(trace.model.blocks[trace._layer(layer)].mlp.act(x))


def neuron_direction(trace: Trace, layer: int, neuron: int) -> Tensor:
    """(C,) what neuron `neuron` of block `layer` adds to the MLP output per unit of activation: column
    `neuron` of W_out."""
    d_mlp = trace.model.config.d_mlp
    if not 0 <= neuron < d_mlp:
        raise ValueError(f"Neuron {neuron} does not exist: the MLP has neurons 0–{d_mlp - 1}.")
    return trace.model.blocks[trace._layer(layer)].mlp.fc_out.weight[:, neuron]


def neuron_logit_effect(trace: Trace, layer: int, neuron: int, k: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tokens neuron `neuron`'s output direction promotes and suppresses: (top k, bottom k) tables of
    token, id, effect, where effect = W_U · (γ_final ⊙ d) for the direction d (centred first when the final
    norm is a LayerNorm): the logit change per unit of activation, the final norm's per-token scale left out."""
    model = trace.model
    with torch.inference_mode():
        d = neuron_direction(trace, layer, neuron)
        final = model.final_norm
        if isinstance(final, LayerNorm):
            d = d - d.mean()
        gain = final.weight + getattr(final, "offset", 0.0)
        effect = model.unembed(d * gain).float()  # (vocab,)
        k = min(k, effect.shape[0])
        top, bottom = torch.topk(effect, k), torch.topk(-effect, k)

    def frame(ids: Tensor, values: Tensor) -> pd.DataFrame:
        ids_list = ids.tolist()
        return pd.DataFrame({"token": model.tokenizer.token_strings(ids_list), "id": np.asarray(ids_list, np.int64),
                             "effect": values.numpy().astype(np.float64)})

    return frame(top.indices, top.values), frame(bottom.indices, -bottom.values)


@dataclass(frozen=True)
class OneTokenCheck:
    """Each sublayer recomputed from token `position`'s vector alone (a sequence of one, at its position)
    against the model's output there: the MLP reads one token at a time, so mlp_alone equals mlp_model;
    attention mixes tokens, so attn_alone (the token attending only to itself) differs from attn_model
    except at position 0. All (C,)."""

    position: int
    mlp_alone: np.ndarray
    mlp_model: np.ndarray
    attn_alone: np.ndarray
    attn_model: np.ndarray

    @property
    def mlp_difference(self) -> float:
        return float(np.abs(self.mlp_alone - self.mlp_model).max())

    @property
    def attn_difference(self) -> float:
        return float(np.abs(self.attn_alone - self.attn_model).max())


def one_token_check(trace: Trace, layer: int, position: int) -> OneTokenCheck:
    """Block `layer`'s two sublayers run on token `position`'s own vector only (see OneTokenCheck)."""
    position = _position(trace, position)
    block = trace.model.blocks[trace._layer(layer)]
    with torch.inference_mode():
        mlp_in = trace.mlp_in(layer, position, position + 1)[None]  # (1, 1, C)
        mlp_alone = block.post_mlp_norm(block.mlp(block.norm2(mlp_in)))[0, 0]
        pre = trace.resid_pre(layer)[None, position : position + 1]
        rotary = trace.model.rotary(torch.tensor([position]))[trace._layer(layer)]
        attn_alone = block.post_attn_norm(block.attn(block.norm1(pre), rotary))[0, 0]
        mlp_model = trace.mlp_out(layer)[position]
        attn_model = trace.attn_out(layer)[position]
    return OneTokenCheck(position=position, mlp_alone=_np(mlp_alone), mlp_model=_np(mlp_model),
                         attn_alone=_np(attn_alone), attn_model=_np(attn_model))


# ---- dropout, as training would apply it --------------------------------------------------------
@dataclass(frozen=True)
class DropoutView:
    """An attention pattern (W, W) with a sampled dropout mask: mask (W, W) bool (kept entries);
    dropped = pattern · mask / (1 − p), what training would use; row_sums (W,) of dropped (no longer 1)."""

    p: float
    seed: int
    mask: np.ndarray
    dropped: np.ndarray
    row_sums: np.ndarray


def dropout_view(pattern: Tensor | np.ndarray, p: float, seed: int) -> DropoutView:
    """Inverted dropout on attention weights, as nn.Dropout applies it in training (the model never does:
    dropout is off at inference): each weight is zeroed with probability p, the kept ones are divided by
    1 − p so every weight keeps its expected value. Seeded: the same (p, seed) gives the same mask."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"The dropout rate p must be in [0, 1), not {p}.")
    pattern = torch.as_tensor(pattern, dtype=torch.float32)
    generator = torch.Generator().manual_seed(int(seed))
    keep = torch.rand(pattern.shape, generator=generator) >= p
    dropped = pattern * keep / (1.0 - p)
    return DropoutView(p=float(p), seed=int(seed), mask=keep.numpy(), dropped=dropped.numpy(),
                       row_sums=dropped.sum(-1).numpy())
