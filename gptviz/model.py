"""The GPT itself: one model for the GPT-2 and Llama (SmolLM2) families.

Read top to bottom like the book: norms, rotary embedding, attention, MLP, block, GPT.
The two families differ in four visible places: the norm (LayerNorm vs RMSNorm), where
position enters (learned table added to the input vs rotary embedding of q and k), the
MLP (GELU vs SwiGLU), and biases (GPT-2 has them, Llama does not).

Nothing is ever stored on the modules during a forward pass: what a caller wants to keep
(a trace, a KV cache) is passed in as an argument, so one model serves many threads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptviz.config import GPTConfig


class LayerNorm(nn.Module):
    """GPT-2's norm: (x - mean) / sqrt(var + eps) * weight + bias over the last dim."""

    def __init__(self, d_model: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """Llama's norm: x / sqrt(mean(x^2) + eps) * weight (no mean subtraction, no bias)."""

    def __init__(self, d_model: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: Tensor) -> Tensor:
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps))


def make_norm(config: GPTConfig) -> nn.Module:
    if config.family == "gpt2":
        return LayerNorm(config.d_model, config.norm_eps)
    return RMSNorm(config.d_model, config.norm_eps)


def rotary_cos_sin(positions: Tensor, d_head: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos and sin of the rotation angles, each (T, hs): pair i turns by pos / theta^(2i/hs)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, d_head, 2, dtype=torch.int64).float() / d_head))
    angles = positions.float()[:, None] * inv_freq[None, :]  # (T, hs/2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, hs)
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate q or k (B, nh, T, hs) by position: first half of hs pairs with the second half."""
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
    """

    embed: Tensor | None = None
    pos_embed: Tensor | None = None
    resid: list[Tensor] = field(default_factory=list)
    resid_mid: list[Tensor] = field(default_factory=list)
    q: list[Tensor] = field(default_factory=list)
    k: list[Tensor] = field(default_factory=list)
    v: list[Tensor] = field(default_factory=list)


def causal_mask(t_query: int, t_key: int) -> Tensor:
    """(T_q, T_k) bool, True where a query may attend: keys up to its own position."""
    past = t_key - t_query
    return torch.ones(t_query, t_key, dtype=torch.bool).tril(diagonal=past)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with grouped-query heads (n_kv <= nh).

    One fused projection gives q, k, v; each query head h reads key/value head h // n_rep.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.d_head = config.n_head, config.n_kv_head, config.d_head
        bias = config.family == "gpt2"
        qkv_out = (config.n_head + 2 * config.n_kv_head) * config.d_head
        self.qkv = nn.Linear(config.d_model, qkv_out, bias=bias)
        self.out_proj = nn.Linear(config.d_model, config.d_model, bias=bias)

    def project(self, x: Tensor, rotary: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, C) -> q (B, nh, T, hs), k and v (B, n_kv, T, hs); rotary turns q and k."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split(
            [self.n_head * self.d_head, self.n_kv_head * self.d_head, self.n_kv_head * self.d_head], dim=-1
        )
        q = q.view(B, T, self.n_head, self.d_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_kv_head, self.d_head).transpose(1, 2)  # (B, n_kv, T, hs)
        v = v.view(B, T, self.n_kv_head, self.d_head).transpose(1, 2)  # (B, n_kv, T, hs)
        if rotary is not None:  # q and k become new tensors; a copy of v lets the fused output go
            q, k, v = apply_rotary(q, *rotary), apply_rotary(k, *rotary), v.contiguous()
        return q, k, v

    def forward(
        self,
        x: Tensor,
        rotary: tuple[Tensor, Tensor] | None,
        cache: LayerKV | None = None,
        record: ForwardRecord | None = None,
    ) -> Tensor:
        """x (B, T, C) -> attention output (B, T, C), via PyTorch's fused kernel."""
        B, T, C = x.shape
        q, k, v = self.project(x, rotary)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, n_kv, T_past + T, hs)
        if record is not None:
            record.q.append(q)
            record.k.append(k)
            record.v.append(v)
        t_key = k.shape[2]
        if t_key == T:
            mask, is_causal = None, True
        elif T == 1:
            mask, is_causal = None, False  # one new token sees every cached key
        else:
            mask, is_causal = causal_mask(T, t_key), False
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=self.n_kv_head != self.n_head
        )  # (B, nh, T, hs): the context vectors
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.out_proj(y)


def attention_scores(q: Tensor, k: Tensor) -> Tensor:
    """Raw scores q·kᵀ for every head: q (nh, T_q, hs), k (n_kv, T_k, hs) -> (nh, T_q, T_k)."""
    n_rep = q.shape[0] // k.shape[0]
    if n_rep > 1:
        k = k.repeat_interleave(n_rep, dim=0)  # query head h reads key head h // n_rep
    return q @ k.transpose(-1, -2)


def attention_pattern(raw_scores: Tensor, d_head: int) -> Tensor:
    """softmax(mask(scores / sqrt(hs))) over keys: (..., T_q, T_k) -> same shape, rows sum to 1.

    The same maths the fused kernel runs; tests check the two agree.
    """
    t_query, t_key = raw_scores.shape[-2:]
    scaled = raw_scores / math.sqrt(d_head)
    scaled.masked_fill_(~causal_mask(t_query, t_key), float("-inf"))  # in place: scaled is ours, one T×T copy fewer
    return torch.softmax(scaled, dim=-1)


class MLP(nn.Module):
    """Position-wise feed-forward: GPT-2 uses GELU(tanh), Llama uses SwiGLU (gate * up)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.family = config.family
        gated = config.family == "llama"
        bias = config.family == "gpt2"
        self.fc_in = nn.Linear(config.d_model, (2 if gated else 1) * config.d_mlp, bias=bias)
        self.fc_out = nn.Linear(config.d_mlp, config.d_model, bias=bias)

    def hidden(self, x: Tensor) -> Tensor:
        """x (B, T, C) -> hidden activation (B, T, d_mlp)."""
        if self.family == "gpt2":
            return F.gelu(self.fc_in(x), approximate="tanh")
        # SwiGLU. fc_in stores the gate and up projections as one weight; two matmuls on its halves
        # are faster on CPU than one on the whole and give contiguous outputs.
        w_gate, w_up = self.fc_in.weight.chunk(2, dim=0)  # each (d_mlp, C)
        return F.silu(F.linear(x, w_gate)) * F.linear(x, w_up)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_out(self.hidden(x))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then + mlp(norm2(x)) (the shortcut connections)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.norm1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.norm2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(
        self,
        x: Tensor,
        rotary: tuple[Tensor, Tensor] | None,
        cache: LayerKV | None = None,
        record: ForwardRecord | None = None,
    ) -> Tensor:
        x = x + self.attn(self.norm1(x), rotary, cache, record)  # (B, T, C)
        if record is not None:
            record.resid_mid.append(x)
        x = x + self.mlp(self.norm2(x))  # (B, T, C)
        if record is not None:
            record.resid.append(x)
        return x


class GPT(nn.Module):
    """Token ids (B, T) -> logits (B, T, vocab). Output head tied to the token embedding."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        if config.family == "gpt2":
            self.pos_emb = nn.Embedding(config.n_ctx, config.d_model)
        self.blocks = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_layer))
        self.final_norm = make_norm(config)
        if not config.tie_embeddings:
            self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)

    @property
    def unembed_weight(self) -> Tensor:
        """(vocab, C): the output head's weight (the token embedding when tied)."""
        return self.tok_emb.weight if self.config.tie_embeddings else self.lm_head.weight

    def unembed(self, x: Tensor) -> Tensor:
        """Final-normed residual (..., C) -> logits (..., vocab)."""
        return F.linear(x, self.unembed_weight)

    def forward(
        self, idx: Tensor, cache: KVCache | None = None, record: ForwardRecord | None = None
    ) -> Tensor:
        B, T = idx.shape
        past = cache.length if cache is not None else 0
        if past + T > self.config.n_ctx:
            raise ValueError(
                f"{past + T} tokens do not fit this model's context of {self.config.n_ctx}: shorten the prompt."
            )
        positions = torch.arange(past, past + T)
        x = self.tok_emb(idx)  # (B, T, C)
        if record is not None:
            record.embed = x
        rotary = None
        if self.config.family == "gpt2":  # position: a learned vector added to each token's input
            pos = self.pos_emb(positions)  # (T, C)
            if record is not None:
                record.pos_embed = pos
            x = x + pos
        else:  # llama: position enters attention by rotating q and k
            rotary = rotary_cos_sin(positions, self.config.d_head, self.config.rope_theta)
        if record is not None:
            record.resid.append(x)
        for i, block in enumerate(self.blocks):
            x = block(x, rotary, cache.layers[i] if cache is not None else None, record)
        return self.unembed(self.final_norm(x))  # (B, T, vocab)
