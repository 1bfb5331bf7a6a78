"""The GPT itself: one model for every architecture gptviz runs (GPT-2, Llama, Qwen, Mistral,
Gemma 2 and 3, GPT-NeoX, Phi-3, OLMo-2).

Read top to bottom like the book: norms, rotary embedding, the attention primitive, attention,
MLP, block, GPT. Architectures differ only in the features their GPTConfig names: the norm
(LayerNorm or RMSNorm, Gemma's 1 + w), where position enters (a learned table added to the
input, or rotary turning all or part of q and k), the MLP (GELU, SwiGLU, GeGLU), biases, q/k
norms (per head or over the whole projection), norms before and/or after each sublayer,
sequential or parallel sublayers, an embedding scale, the attention scale, soft-capped scores
and logits, and sliding-window layers.

Nothing is ever stored on the modules during a forward pass: what a caller wants to keep
(a trace, a KV cache) or change (interventions: heads knocked out, activations patched in)
is passed in as an argument, so one model serves many threads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptviz.config import GPTConfig, Rope
from gptviz.edits import Interventions, LayerEdit

if TYPE_CHECKING:
    from gptviz.tokenizer import Tokenizer


class Norm(nn.Module):
    """A norm over the last dim, in the steps every explanation reads (the norm maths, written once):

        centre      x - mean(x) (LayerNorm), or x itself (RMSNorm)
        statistic   mean(centre²): the variance (LayerNorm) or the mean of squares (RMSNorm)
        scale       1 / sqrt(statistic + eps)
        normalized  centre · scale
        out         normalized · gain (+ bias), gain = offset + weight (Gemma stores weight - 1: offset 1)

    Shapes: x (..., n) -> centre, normalized (..., n); statistic, scale (..., 1).
    """

    centred: bool

    def __init__(self, size: int, eps: float, offset: float = 0.0):
        super().__init__()
        self.eps, self.offset = eps, offset
        self.weight = nn.Parameter(torch.ones(size))

    def centre(self, x: Tensor) -> Tensor:
        return x - x.mean(-1, keepdim=True) if self.centred else x

    def statistic(self, x: Tensor) -> Tensor:
        return self.centre(x).pow(2).mean(-1, keepdim=True)

    def scale(self, x: Tensor) -> Tensor:
        return torch.rsqrt(self.statistic(x) + self.eps)

    def normalized(self, x: Tensor) -> Tensor:
        return self.centre(x) * self.scale(x)

    @property
    def gain(self) -> Tensor:
        """(n,) what the normalized vector is multiplied by: offset + weight."""
        return self.offset + self.weight

    def forward(self, x: Tensor) -> Tensor:
        out = self.normalized(x) * self.gain
        return out if self.bias is None else out + self.bias


class LayerNorm(Norm):
    """GPT-2's norm: (x - mean) / sqrt(var + eps) * weight + bias. The forward runs PyTorch's fused
    kernel of the same maths (tests check it equals the steps)."""

    centred = True

    def __init__(self, size: int, eps: float):
        super().__init__(size, eps)
        self.bias = nn.Parameter(torch.zeros(size))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class RMSNorm(Norm):
    """Llama's norm: x / sqrt(mean(x^2) + eps) * (offset + weight); no mean subtracted, no bias.

    offset is 0 except for Gemma, whose checkpoints store weight - 1.
    """

    centred = False

    def __init__(self, size: int, eps: float, offset: float = 0.0):
        super().__init__(size, eps, offset)
        self.register_parameter("bias", None)


def make_norm(config: GPTConfig, size: int | None = None) -> Norm:
    """The config's norm over the last dim (size: d_model unless given, e.g. d_head for q/k norms)."""
    size = size or config.d_model
    if config.norm == "layernorm":
        return LayerNorm(size, config.norm_eps)
    return RMSNorm(size, config.norm_eps, config.norm_offset)


def rotary_frequencies(rope: Rope, d_head: int) -> Tensor:
    """(hs/2,) turns per position of each dimension pair: theta^(-2i/hs), rescaled as rope says."""
    inv_freq = 1.0 / (rope.theta ** (torch.arange(0, d_head, 2, dtype=torch.int64).float() / d_head))
    if rope.scaling == "linear":
        return inv_freq / rope.factor
    if rope.scaling == "llama3":
        wavelen = 2 * math.pi / inv_freq
        low_wavelen = rope.original_context / rope.low_freq_factor  # longer waves: divided by factor
        high_wavelen = rope.original_context / rope.high_freq_factor  # shorter waves: kept
        scaled = torch.where(wavelen > low_wavelen, inv_freq / rope.factor, inv_freq)
        smooth = ((rope.original_context / wavelen - rope.low_freq_factor)
                  / (rope.high_freq_factor - rope.low_freq_factor))
        blended = (1 - smooth) * scaled / rope.factor + smooth * scaled
        between = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return torch.where(between, blended, scaled)
    return inv_freq


def rotary_cos_sin(positions: Tensor, rotary_dims: int, rope: Rope) -> tuple[Tensor, Tensor]:
    """cos and sin of the rotation angles, each (T, r) for the r = rotary_dims turned dimensions
    of a head (d_head unless the rotary is partial): pair i turns by position · frequency i."""
    angles = positions.float()[:, None] * rotary_frequencies(rope, rotary_dims)[None, :]  # (T, r/2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, r)
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate q or k (B, nh, T, hs) by position: the first r = cos.shape[-1] dimensions of each head
    turn, the first half of them paired with the second half; the other hs - r pass unchanged
    (partial rotary, GPT-NeoX)."""
    r = cos.shape[-1]
    if r < x.shape[-1]:
        return torch.cat((apply_rotary(x[..., :r], cos, sin), x[..., r:]), dim=-1)
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos + rotated * sin


@dataclass
class LayerKV:
    """One layer's cached keys and values, each (B, n_kv, T_past, hs)."""

    k: Tensor | None = None
    v: Tensor | None = None

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.k is not None:
            k = torch.cat((self.k, k), dim=2)
            v = torch.cat((self.v, v), dim=2)
        self.k, self.v = k, v
        return k, v


@dataclass
class KVCache:
    """Keys and values of every layer for the tokens seen so far (owned by one caller)."""

    layers: list[LayerKV]

    @classmethod
    def empty(cls, n_layer: int) -> "KVCache":
        return cls([LayerKV() for _ in range(n_layer)])

    @property
    def length(self) -> int:
        first = self.layers[0].k
        return 0 if first is None else first.shape[2]


@dataclass
class ForwardRecord:
    """What one forward pass keeps for a trace (filled in by the forward, owned by the caller).

    resid: n_layer + 1 tensors (B, T, C): block inputs, then the last block's output.
    resid_mid: per layer (B, T, C), the residual stream after attention's shortcut.
    q: per layer (B, nh, T, hs); k, v: per layer (B, n_kv, T_all, hs), after rotary.
    mlp_in: per layer (B, T, C), only where an MLP reads its own stream (edge runs, gptviz.edge_run).
    """

    embed: Tensor | None = None
    pos_embed: Tensor | None = None
    resid: list[Tensor] = field(default_factory=list)
    resid_mid: list[Tensor] = field(default_factory=list)
    q: list[Tensor] = field(default_factory=list)
    k: list[Tensor] = field(default_factory=list)
    v: list[Tensor] = field(default_factory=list)
    mlp_in: list[Tensor] = field(default_factory=list)


# ---- the attention primitive: every mask, score and pattern in gptviz comes from here ----


def attention_mask(
    t_query: int, t_key: int, window: int | None = None, *, query_pos: Tensor | None = None,
    key_pos: Tensor | None = None,
) -> Tensor:
    """(T_q, T_k) bool, True where a query may attend: query i reads keys j <= i, and with a
    sliding window only the `window` most recent of them: i - window < j <= i.

    Positions default to the last T_q of 0..T_k-1 for queries and 0..T_k-1 for keys; give
    query_pos (T_q,) and key_pos (T_k,) for a part of a bigger matrix.
    """
    if query_pos is None:
        query_pos = torch.arange(t_key - t_query, t_key)
    if key_pos is None:
        key_pos = torch.arange(t_key)
    query_pos, key_pos = query_pos[:, None], key_pos[None, :]  # (T_q, 1), (1, T_k)
    allowed = key_pos <= query_pos
    if window is not None:
        allowed &= key_pos > query_pos - window
    return allowed


def soft_cap(x: Tensor, cap: float | None) -> Tensor:
    """tanh(x / cap) · cap: x squashed smoothly into (-cap, cap), nearly unchanged where |x| << cap
    (Gemma 2's attention scores and logits); x itself for cap None."""
    return x if cap is None else torch.tanh(x / cap) * cap


def attention_scores(q: Tensor, k: Tensor) -> Tensor:
    """Raw scores q·kᵀ for every head: q (..., nh, T_q, hs), k (..., n_kv, T_k, hs) -> (..., nh, T_q, T_k)."""
    n_rep = q.shape[-3] // k.shape[-3]
    if n_rep > 1:
        k = k.repeat_interleave(n_rep, dim=-3)  # query head h reads key head h // n_rep
    return q @ k.transpose(-1, -2)


def masked_scores(
    raw_scores: Tensor, scale: float, window: int | None = None, *, softcap: float | None = None,
    query_pos: Tensor | None = None, key_pos: Tensor | None = None,
) -> Tensor:
    """raw (..., T_q, T_k) -> soft_cap(scores × scale, softcap), -inf where attention_mask forbids
    (a new tensor)."""
    t_query, t_key = raw_scores.shape[-2:]
    mask = attention_mask(t_query, t_key, window, query_pos=query_pos, key_pos=key_pos)
    capped = soft_cap(raw_scores * scale, softcap)
    return capped.masked_fill_(~mask, float("-inf"))  # in place: one T×T copy fewer


def attention_pattern(
    raw_scores: Tensor, scale: float, window: int | None = None, *, softcap: float | None = None,
    query_pos: Tensor | None = None,
) -> Tensor:
    """softmax(mask(soft_cap(scores · scale))) over keys: (..., T_q, T_k) -> same shape, rows sum to 1.

    The same maths the fused kernel (attend) runs; tests check the two agree.
    """
    return torch.softmax(masked_scores(raw_scores, scale, window, softcap=softcap, query_pos=query_pos), dim=-1)


def attend(q: Tensor, k: Tensor, v: Tensor, scale: float, window: int | None = None,
           softcap: float | None = None, dropout: float = 0.0) -> Tensor:
    """Context vectors softmax(mask(soft_cap(q·kᵀ · scale))) · v.

    q (B, nh, T, hs); k, v (B, n_kv, T_k, hs), the last T of T_k positions querying -> (B, nh, T, hs).
    PyTorch's fused kernel runs it unless the scores are soft-capped, which no fused kernel does:
    then the pattern is computed (attention_pattern) and applied to v. The plain causal cases
    skip building a mask. `dropout` drops attention weights (training only; the fused kernel's).
    """
    if softcap is not None:
        pattern = attention_pattern(attention_scores(q, k), scale, window, softcap=softcap)  # (B, nh, T, T_k)
        return pattern @ v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)  # (B, nh, T, hs)
    T, t_key = q.shape[2], k.shape[2]
    mask, is_causal = None, False
    if window is not None and t_key > window:
        mask = attention_mask(T, t_key, window)
    elif T == t_key:
        is_causal = True
    elif T > 1:
        mask = attention_mask(T, t_key)
    # T == 1 without a window in play: one new token sees every cached key
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale, enable_gqa=q.shape[1] != k.shape[1],
        dropout_p=dropout,
    )


# ---- the block ---------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with grouped-query heads (n_kv <= nh).

    One fused projection gives q, k, v; each query head h reads key/value head h // n_rep.
    q and k may be normed (qk_norm: each head's alone, or the whole projection at once) before
    rotary turns them. `window` is this layer's sliding window (None: the whole past); `softcap`
    squashes the scaled scores before the mask (None: not).
    """

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.n_head, self.n_kv_head, self.d_head = config.n_head, config.n_kv_head, config.d_head
        self.scale, self.window, self.softcap = config.scale, config.window(layer), config.attn_softcap
        self.dropout = config.dropout  # on the attention weights, in training mode only
        qkv_out = (config.n_head + 2 * config.n_kv_head) * config.d_head
        self.qkv = nn.Linear(config.d_model, qkv_out, bias=config.qkv_bias)
        self.out_proj = nn.Linear(config.n_head * config.d_head, config.d_model, bias=config.out_bias)
        self.qk_norm_scope = config.qk_norm_scope if config.qk_norm else None
        whole = config.qk_norm_scope == "projection"
        q_size, k_size = (config.n_head, config.n_kv_head) if whole else (1, 1)
        self.q_norm = make_norm(config, q_size * config.d_head) if config.qk_norm else nn.Identity()
        self.k_norm = make_norm(config, k_size * config.d_head) if config.qk_norm else nn.Identity()

    def project(self, x: Tensor, rotary: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, C) -> q (B, nh, T, hs), k and v (B, n_kv, T, hs); rotary turns q and k."""
        return self.into_heads(*self.qkv(x).split(self.sizes, dim=-1), rotary)

    @property
    def sizes(self) -> list[int]:
        """The fused projection's parts: [nh·hs query rows, n_kv·hs key rows, n_kv·hs value rows]."""
        return [self.n_head * self.d_head, self.n_kv_head * self.d_head, self.n_kv_head * self.d_head]

    def project_each(self, xq: Tensor, xk: Tensor, xv: Tensor,
                     rotary: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor, Tensor]:
        """Each head's q, k, v from its own input (edge runs: every input reads its own mix of the
        stream): xq (B, nh, T, C) one per query head, xk and xv (B, n_kv, T, C) one per key/value head
        -> q (B, nh, T, hs), k and v (B, n_kv, T, hs), as `project` (norms, rotary) continues.

        A q/k norm over the whole projection (OLMo-2) normalizes each input's whole projection, of
        which its head keeps its own part: a head's q or k depends on its own input alone."""
        C = xq.shape[-1]
        biases = self.qkv.bias.split(self.sizes) if self.qkv.bias is not None else (None,) * 3
        norms = (self.q_norm, self.k_norm, None) if self.qk_norm_scope == "projection" else (None,) * 3
        parts = []
        for x, w, b, norm in zip((xq, xk, xv), self.qkv.weight.split(self.sizes), biases, norms):
            B, n, T, _ = x.shape
            if norm is None:
                out = torch.einsum("bntc,ndc->btnd", x, w.view(n, self.d_head, C))  # (B, T, n, hs)
                out = out.reshape(B, T, n * self.d_head)  # (B, T, n·hs)
                parts.append(out if b is None else out + b)
                continue
            whole = F.linear(x, w, b)  # (B, n, T, n·hs): each input's whole projection
            whole = norm(whole).view(B, n, T, n, self.d_head)
            own = whole[:, torch.arange(n), :, torch.arange(n)]  # (n, B, T, hs): input i's head i
            parts.append(own.permute(1, 2, 0, 3).reshape(B, T, n * self.d_head))
        return self.into_heads(*parts, rotary, normed=self.qk_norm_scope == "projection")

    def into_heads(self, q: Tensor, k: Tensor, v: Tensor, rotary: tuple[Tensor, Tensor] | None,
                   normed: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """The projections q (B, T, nh·hs), k and v (B, T, n_kv·hs) -> per head q (B, nh, T, hs),
        k and v (B, n_kv, T, hs): q/k norms (those over the whole projection unless already `normed`),
        then rotary turns q and k."""
        B, T, _ = q.shape
        if self.qk_norm_scope == "projection" and not normed:  # one norm over all heads' q, one over all k (OLMo-2)
            q, k = self.q_norm(q), self.k_norm(k)  # (B, T, nh·hs), (B, T, n_kv·hs)
        q = q.view(B, T, self.n_head, self.d_head)  # (B, T, nh, hs)
        k = k.view(B, T, self.n_kv_head, self.d_head)  # (B, T, n_kv, hs)
        if self.qk_norm_scope == "head":  # each head's q and k normed alone (Qwen3, Gemma 3)
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, nh, T, hs), (B, n_kv, T, hs)
        v = v.view(B, T, self.n_kv_head, self.d_head).transpose(1, 2)  # (B, n_kv, T, hs)
        if rotary is not None:  # q and k become new tensors; a copy of v lets the fused output go
            q, k, v = apply_rotary(q, *rotary), apply_rotary(k, *rotary), v.contiguous()
        return q, k, v

    def head_outputs(self, z: Tensor) -> Tensor:
        """Context vectors z (..., nh, T, hs) -> what each head writes, z_h · W_O[h]: (..., nh, T, C)
        (their sum plus out_proj's bias is attention's output)."""
        w_o = self.out_proj.weight.view(-1, self.n_head, self.d_head).to(z.dtype)  # (C, nh, hs)
        return torch.einsum("...htd,chd->...htc", z, w_o)

    def forward(
        self,
        x: Tensor,
        rotary: tuple[Tensor, Tensor] | None,
        cache: LayerKV | None = None,
        record: ForwardRecord | None = None,
        edit: LayerEdit | None = None,
    ) -> Tensor:
        """x (B, T, C) -> attention output (B, T, C), via PyTorch's fused kernel; `edit` changes
        the context vectors z and the output (interventions)."""
        B, T, _ = x.shape
        q, k, v = self.project(x, rotary)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, n_kv, T_past + T, hs)
        if record is not None:
            record.q.append(q)
            record.k.append(k)
            record.v.append(v)
        dropout = self.dropout if self.training else 0.0
        z = attend(q, k, v, self.scale, self.window, self.softcap, dropout)  # (B, nh, T, hs): the context vectors
        if edit is None:
            return self.out_proj(z.transpose(1, 2).reshape(B, T, self.n_head * self.d_head))
        z = edit.edit_z(z)  # heads knocked out or patched
        return edit.edit_attn_out(self.out_proj(z.transpose(1, 2).reshape(B, T, self.n_head * self.d_head)))


GELUS = {"tanh": lambda x: F.gelu(x, approximate="tanh"), "exact": F.gelu}


def activation(config: GPTConfig) -> Callable[[Tensor], Tensor]:
    """The MLP's activation: SiLU for "swiglu", else the GELU config.gelu names (tanh or exact)."""
    return F.silu if config.mlp == "swiglu" else GELUS[config.gelu]


class MLP(nn.Module):
    """Position-wise feed-forward. "gelu": act(x W_in) W_out (GPT-2: tanh GELU, GPT-NeoX: exact);
    "swiglu" / "geglu": (act(x W_gate) * (x W_up)) W_out with SiLU / GELU."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.gated = config.mlp != "gelu"
        self.act = activation(config)
        self.fc_in = nn.Linear(config.d_model, (2 if self.gated else 1) * config.d_mlp, bias=config.mlp_bias)
        self.fc_out = nn.Linear(config.d_mlp, config.d_model, bias=config.mlp_bias)

    def expand(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """x (B, T, C) -> the pre-activation (B, T, d_mlp) (x W_in, or the gate x W_gate) and the
        up projection x W_up (B, T, d_mlp) (None without a gate)."""
        if not self.gated:
            return self.fc_in(x), None
        # fc_in stores the gate and up projections as one weight; two matmuls on its halves are
        # faster on CPU than one on the whole and give contiguous outputs.
        w_gate, w_up = self.fc_in.weight.chunk(2, dim=0)  # each (d_mlp, C)
        b_gate, b_up = self.fc_in.bias.chunk(2) if self.fc_in.bias is not None else (None, None)
        return F.linear(x, w_gate, b_gate), F.linear(x, w_up, b_up)

    def hidden(self, x: Tensor) -> Tensor:
        """x (B, T, C) -> hidden activation (B, T, d_mlp): act(pre), times up when gated."""
        pre, up = self.expand(x)
        return self.act(pre) if up is None else self.act(pre) * up

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_out(self.hidden(x))


@dataclass(frozen=True)
class Branch:
    """One sublayer as the block runs it: `name` (the block's module, "attn" or "mlp"), the residual
    stream it reads (`reads`: "resid_pre", the block's input, or "resid_mid", after attention's
    shortcut), the norm modules before and after it (None: none), and what it adds to the stream
    (`writes`, a trace stage: "attn_out" or "mlp_out")."""

    name: str
    reads: str
    norm_before: str | None
    norm_after: str | None
    writes: str


@dataclass(frozen=True)
class BlockStructure:
    """What a block is made of, in the order it runs: attention, then the MLP, each a Branch;
    parallel: both read the block's input and their outputs are added together."""

    parallel: bool
    branches: tuple[Branch, ...]

    def norms(self) -> dict[str, tuple[str, str]]:
        """The block's norms in the order they run: module name -> (branch name, "before" or "after")."""
        return {name: (b.name, where) for b in self.branches
                for name, where in ((b.norm_before, "before"), (b.norm_after, "after")) if name is not None}


def block_structure(config: GPTConfig) -> BlockStructure:
    """The block the config describes: norms before each sublayer with pre_norms, after it with
    post_norms; the MLP reads the stream after attention, or the block's input when parallel."""
    pre = config.pre_norms
    post = config.post_norms
    return BlockStructure(config.parallel_residual, (
        Branch("attn", "resid_pre", "norm1" if pre else None, "post_attn_norm" if post else None, "attn_out"),
        Branch("mlp", "resid_pre" if config.parallel_residual else "resid_mid", "norm2" if pre else None,
               "post_mlp_norm" if post else None, "mlp_out"),
    ))


class TransformerBlock(nn.Module):
    """mid = x + post_attn_norm(attn(norm1(x))); out = mid + post_mlp_norm(mlp(norm2(m))), where the
    MLP reads m = mid (sequential, the book's block) or m = x (parallel_residual: both sublayers
    read the block's input, GPT-NeoX).

    The shortcut connections. `structure` declares which norms the block has and where (Gemma:
    before and after each sublayer; OLMo-2: only after); a norm it lacks is the identity here.
    """

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.structure = block_structure(config)
        present = self.structure.norms()
        norm = lambda name: make_norm(config) if name in present else nn.Identity()
        self.norm1 = norm("norm1")
        self.attn = CausalSelfAttention(config, layer)
        self.post_attn_norm = norm("post_attn_norm")
        self.norm2 = norm("norm2")
        self.mlp = MLP(config)
        self.post_mlp_norm = norm("post_mlp_norm")
        self.dropout = config.dropout

    def drop(self, x: Tensor) -> Tensor:
        """A sublayer's output with dropout (the book's drop_shortcut), in training mode only."""
        return F.dropout(x, self.dropout, True) if self.training and self.dropout else x

    def forward(
        self,
        x: Tensor,
        rotary: tuple[Tensor, Tensor] | None,
        cache: LayerKV | None = None,
        record: ForwardRecord | None = None,
        edit: LayerEdit | None = None,
    ) -> Tensor:
        mid = x + self.drop(self.post_attn_norm(self.attn(self.norm1(x), rotary, cache, record, edit)))  # (B, T, C)
        if record is not None:
            record.resid_mid.append(mid)
        mlp_in = x if self.structure.parallel else mid  # parallel: the MLP reads the block's input, as attention did
        if edit is None:
            x = mid + self.drop(self.post_mlp_norm(self.mlp(self.norm2(mlp_in))))  # (B, T, C)
        else:  # interventions: the MLP's output knocked out or patched, then the residual stream
            x = edit.edit_resid_post(mid + self.post_mlp_norm(edit.edit_mlp_out(self.mlp(self.norm2(mlp_in)))))
        if record is not None:
            record.resid.append(x)
        return x


class GPT(nn.Module):
    """Token ids (B, T) -> logits (B, T, vocab). Carries its tokenizer (None for a bare model)."""

    def __init__(self, config: GPTConfig, tokenizer: "Tokenizer | None" = None):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        if config.positional == "learned":
            self.pos_emb = nn.Embedding(config.n_ctx, config.d_model)
        self.blocks = nn.ModuleList(TransformerBlock(config, i) for i in range(config.n_layer))
        self.final_norm = make_norm(config)
        if not config.tie_embeddings:
            self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def unembed_weight(self) -> Tensor:
        """(vocab, C): the output head's weight (the token embedding when tied)."""
        return self.tok_emb.weight if self.config.tie_embeddings else self.lm_head.weight

    def unembed(self, x: Tensor) -> Tensor:
        """Final-normed residual (..., C) -> the output head's logits (..., vocab): linear, before any soft-cap."""
        return F.linear(x, self.unembed_weight)

    def cap_logits(self, logits: Tensor) -> Tensor:
        """The output head's logits (...) -> the model's: soft_cap(logits, final_softcap) (Gemma 2), or
        unchanged."""
        return soft_cap(logits, self.config.final_softcap)

    def readout(self, x: Tensor) -> Tensor:
        """Final-normed residual (..., C) -> the model's logits (..., vocab): unembed, then cap_logits."""
        return self.cap_logits(self.unembed(x))

    def embed(self, idx: Tensor) -> Tensor:
        """Token ids (B, T) -> token embeddings (B, T, C), times embed_scale."""
        x = self.tok_emb(idx)
        return x * self.config.embed_scale if self.config.embed_scale != 1.0 else x

    def rotary(self, positions: Tensor) -> list[tuple[Tensor, Tensor] | None]:
        """Per layer, the (cos, sin) of rotary at these positions (T,), or None without rotary."""
        if self.config.positional != "rotary":
            return [None] * self.config.n_layer
        ropes = [self.config.rope_for(i) for i in range(self.config.n_layer)]
        tables = {rope: rotary_cos_sin(positions, self.config.rotary_dims, rope) for rope in set(ropes)}
        return [tables[rope] for rope in ropes]

    def forward(
        self, idx: Tensor, cache: KVCache | None = None, record: ForwardRecord | None = None,
        edits: Interventions | None = None, last_only: bool = False,
    ) -> Tensor:
        """Token ids (B, T) -> logits (B, T, vocab), or (B, 1, vocab) for the last position only
        (`last_only`: a trace keeps the rest as the final stream, not as T × vocab numbers). `cache`
        holds earlier tokens' keys and values, `record` keeps what a trace needs, `edits` changes the
        run (not together with a cache)."""
        B, T = idx.shape
        past = cache.length if cache is not None else 0
        if past + T > self.config.n_ctx:
            raise ValueError(
                f"{past + T} tokens do not fit this model's context of {self.config.n_ctx}: shorten the prompt."
            )
        if edits is not None and cache is not None:
            raise ValueError("Interventions need the whole sequence in one pass: run it without a KV cache.")
        positions = torch.arange(past, past + T)
        x = self.embed(idx)  # (B, T, C)
        if record is not None:
            record.embed = x
        if self.config.positional == "learned":  # position: a learned vector added to each token's input
            pos = self.pos_emb(positions)  # (T, C)
            if record is not None:
                record.pos_embed = pos
            x = x + pos
        if self.training and self.config.dropout:  # the book's drop_emb (training only)
            x = F.dropout(x, self.config.dropout, True)
        # rotary: position enters attention by turning q and k (per layer: Gemma's differ)
        if edits is not None and edits.embed is not None:
            x = torch.where(edits.embed[0][..., None], edits.embed[1], x)  # patched block-0 input
        if record is not None:
            record.resid.append(x)
        for i, (block, rotary) in enumerate(zip(self.blocks, self.rotary(positions))):
            edit = edits.layer(i) if edits is not None else None
            x = block(x, rotary, cache.layers[i] if cache is not None else None, record, edit)
        if last_only:
            x = x[:, -1:]  # (B, 1, C)
        return self.readout(self.final_norm(x))  # (B, T or 1, vocab)

    def forward_from(
        self, layer: int, x: Tensor, edits: Interventions | None = None, positions: Tensor | None = None,
        joining: dict[int, Tensor] | None = None, progress: Callable[[int, int], None] | None = None,
    ) -> Tensor:
        """Run blocks layer, layer + 1, ... on the residual stream x (B, T, C) entering block `layer`
        (layer = n_layer: none) and return the final-normed stream (B', P, C) at `positions` (P,)
        (default: the last one). `unembed` it for logits, or project it on a few tokens' rows.

        joining {j: (B_j, T, C)}: more copies entering at block j > layer, appended to the batch
        (B' = B + Σ B_j; block j's edit then covers every copy present at block j). So reruns
        that start at different layers share one pass: each block's weights are read once for all.
        progress(blocks done, blocks to run) after each block. Positions 0..T-1, as in forward.
        """
        B, T, _ = x.shape
        if not 0 <= layer <= self.config.n_layer:
            raise ValueError(f"Layer {layer} does not exist: run from 0–{self.config.n_layer}.")
        joining = joining or {}
        if any(not layer < j < self.config.n_layer for j in joining):
            raise ValueError(f"Copies can join at blocks {layer + 1}–{self.config.n_layer - 1}, not {sorted(joining)}.")
        rotary = self.rotary(torch.arange(T))
        last = self.config.n_layer - 1
        for i in range(layer, self.config.n_layer):
            if i in joining:
                x = torch.cat((x, joining[i]))  # (B + ..., T, C)
            edit = edits.layer(i) if edits is not None else None
            if i == last and positions is None and edit is None and T > 1:
                x = self._last_position(x, rotary[i])  # (B', 1, C): only the position read out
            else:
                x = self.blocks[i](x, rotary[i], None, None, edit)
            if progress is not None:
                progress(i + 1 - layer, self.config.n_layer - layer)
        x = x[:, -1:] if positions is None else x[:, positions]  # (B', P, C)
        return self.final_norm(x)

    def _last_position(self, x: Tensor, rotary: tuple[Tensor, Tensor] | None) -> Tensor:
        """The last block's output at the last position only, (B, 1, C) from x (B, T, C): the keys
        and values of the earlier positions as a KV cache, one query (what generation does)."""
        block = self.blocks[-1]
        before = now = None
        if rotary is not None:
            before, now = (rotary[0][:-1], rotary[1][:-1]), (rotary[0][-1:], rotary[1][-1:])
        _, k, v = block.attn.project(block.norm1(x[:, :-1]), before)  # (B, n_kv, T - 1, hs)
        return block(x[:, -1:], now, LayerKV(k, v))
