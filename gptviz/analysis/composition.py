"""How much each head reads what an earlier head writes, from the weights alone: the Q-, K- and
V-composition scores of Elhage et al. (2021), "A Mathematical Framework for Transformer Circuits".

Row-vector convention, x (1, C). Head h of a layer reads its query rows W_Q^h (C, hs) and the key
and value rows W_K^g, W_V^g (C, hs) of the key/value head it shares, g = h // (nh / n_kv); it writes
through its slice W_O^h (hs, C) of out_proj. Its two circuits are C×C matrices of rank <= hs:

    W_QK^h = W_Q^h W_K^gᵀ (what a query reads, against what a key offers)
    W_OV^h = W_V^g W_O^h  (what the head moves from a source token into the residual stream)

An earlier head e writes W_OV^e into the stream; a later head h (a later layer) reads it through
its queries, keys or values:

    Q-composition  ‖W_OV^e W_QK^h‖_F  / (‖W_OV^e‖_F ‖W_QK^h‖_F)
    K-composition  ‖W_OV^e W_QK^hᵀ‖_F / (‖W_OV^e‖_F ‖W_QK^h‖_F)
    V-composition  ‖W_OV^e W_OV^h‖_F  / (‖W_OV^e‖_F ‖W_OV^h‖_F)

each in [0, 1], the way TransformerLens's `all_composition_scores` computes them (left: the earlier
head's OV; right: the later head's QK, QKᵀ or OV). A score means something only against what random
matrices of the same shapes give (`Composition.baseline`).

Folded into the weights, as TransformerLens's fold_ln does: each layer's pre-attention norm gain
(norm1: rows of W_Q, W_K, W_V times the gain) and, where the block has one (Gemma 2 and 3, OLMo-2),
the post-attention norm gain (post_attn_norm: columns of W_O times the gain). The norms' scaling
by 1/rms, biases, rotary and q/k norms are not part of the weights' circuit: TransformerLens's scores
leave them out the same way. LayerNorm's centring is not folded in either (TransformerLens's
center_weights would also take the mean direction out of W_Q, W_K and W_V).

Cost: C×C products per pair of heads are never built. Each matrix is kept as two thin factors
X Yᵀ (C×hs each), the thin QR of one factor reduces it to (hs, C) or (C, hs) with the same
Frobenius norms of products, and ‖A B‖_F² = ⟨AᵀA, B Bᵀ⟩ is a dot product of two C×C Gram
matrices, each built once per head: one matmul over the Gram matrices' upper triangles then
scores every pair at once (C²/2 per pair instead of hs²·C), a block of rows at a time. All in float64.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from gptviz.config import GPTConfig
from gptviz.model import GPT, Norm, TransformerBlock

Input = Literal["q", "k", "v"]
INPUTS: tuple[Input, ...] = ("q", "k", "v")
CHUNK_ELEMENTS = 2**24  # Gram-matrix entries held at once (128 MB of float64)
BASELINE_HEADS = 32  # random earlier and later heads: 32 × 32 pairs estimate the baseline
BASELINE_SEED = 0


@dataclass(frozen=True, eq=False)
class Composition:
    """Q-, K- and V-composition scores of every later head with every earlier head.

    q, k, v: (L, nh, L, nh) indexed [later_layer, later_head, earlier_layer, earlier_head], NaN where
    earlier_layer >= later_layer. baseline: the mean score of random Gaussian heads of the model's
    shapes (the same for q, k and v). n_kv_head: key/value heads, each shared by nh / n_kv query heads.
    """

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    baseline: float
    n_kv_head: int

    def scores(self, input: Input) -> np.ndarray:
        """(L, nh, L, nh) scores of the later heads' queries, keys or values."""
        return getattr(self, _check_input(input))

    def frame(self, kv_heads: bool = False) -> pd.DataFrame:
        """Long form, one row per (earlier head, later head, input): columns sender_layer, sender_head,
        receiver_layer, receiver_head, input ("q", "k" or "v"), composition; only pairs with the
        sender in an earlier layer.

        kv_heads: k and v rows per key/value head of the later layer (receiver_head is its index,
        the score the max over the query heads sharing it); q rows stay per query head.
        """
        parts = []
        for name in INPUTS:
            scores = self.scores(name)
            if kv_heads and name != "q":
                n_layer, n_head = scores.shape[:2]
                grouped = scores.reshape(n_layer, self.n_kv_head, n_head // self.n_kv_head, n_layer, n_head)
                scores = grouped.max(axis=2)  # (L, n_kv, L, nh); NaN cells are NaN for the whole group
            later_layer, later_head, earlier_layer, earlier_head = np.nonzero(~np.isnan(scores))
            parts.append(pd.DataFrame({
                "sender_layer": earlier_layer, "sender_head": earlier_head,
                "receiver_layer": later_layer, "receiver_head": later_head, "input": name,
                "composition": scores[later_layer, later_head, earlier_layer, earlier_head],
            }))
        return pd.concat(parts, ignore_index=True)

    def top(self, n: int, input: Input | None = None) -> pd.DataFrame:
        """The n highest scores (of one input, or of all three) as rows of `frame()`, highest first."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"Ask for at least one score: n must be a positive integer, not {n!r}.")
        frame = self.frame()
        if input is not None:
            frame = frame[frame["input"] == _check_input(input)]
        return frame.nlargest(n, "composition").reset_index(drop=True)


def _check_input(input: str) -> Input:
    """input itself if it names one of INPUTS; ValueError listing them if not."""
    if input not in INPUTS:
        raise ValueError(f"Unknown input {input!r}: use one of {INPUTS}.")
    return input


def composition_scores(model: GPT) -> Composition:
    """Q-, K- and V-composition of every head with every head of an earlier layer, from the weights."""
    config = model.config
    L, nh = config.n_layer, config.n_head
    senders, receivers = _factors(model)
    scores = _scores(senders, receivers.flatten(0, 1)).view(L, nh, 3, L, nh)  # [earlier, input, later]
    scores = scores.permute(2, 3, 4, 0, 1).numpy()  # (3, L_later, nh, L_earlier, nh)
    later, earlier = np.arange(L)[:, None, None, None], np.arange(L)[None, None, :, None]
    scores = np.where(earlier < later, scores, np.nan)
    return Composition(*scores, baseline=_random_baseline(config.d_model, config.d_head),
                       n_kv_head=config.n_kv_head)


def _factors(model: GPT) -> tuple[Tensor, Tensor]:
    """Thin factors of every head's circuits (heads layer by layer, n = L·nh, k = min(C, hs)), float64:
    senders (n, k, C), left factors of the OV circuits; receivers (3, n, C, k), right factors of QK,
    QKᵀ and OV. Built a layer at a time, so only one layer's weights are ever held in float64."""
    config = model.config
    nh, k, C = config.n_head, min(config.d_model, config.d_head), config.d_model
    senders = torch.empty(config.n_layer * nh, k, C, dtype=torch.float64)
    receivers = torch.empty(3, config.n_layer * nh, C, k, dtype=torch.float64)
    for layer, block in enumerate(model.blocks):
        heads = slice(layer * nh, (layer + 1) * nh)
        w_q, w_k, w_v, w_o = _head_weights(config, block)
        senders[heads] = _left_factor(w_v, w_o)
        receivers[:, heads] = torch.stack((_right_factor(w_q, w_k), _right_factor(w_k, w_q), _right_factor(w_v, w_o)))
    return senders, receivers


def _head_weights(config: GPTConfig, block: TransformerBlock) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One layer's W_Q of each head, W_K and W_V of the key/value head it reads, and W_Oᵀ, each
    (nh, C, hs), float64, norm gains folded in: rows of W_Q, W_K, W_V times norm1's gain, W_O's
    output columns times post_attn_norm's."""
    nh, n_kv, hs, C = config.n_head, config.n_kv_head, config.d_head, config.d_model
    with torch.no_grad():
        w_in = block.attn.qkv.weight.to("cpu", torch.float64) * _gain(block.norm1, C)[None, :]  # (out, C)
        w_out = block.attn.out_proj.weight.to("cpu", torch.float64) * _gain(block.post_attn_norm, C)[:, None]
    q, k, v = w_in.split([nh * hs, n_kv * hs, n_kv * hs])
    w_q = q.view(nh, hs, C).mT  # (nh, C, hs)
    w_k = k.view(n_kv, hs, C).mT.repeat_interleave(config.n_rep, dim=0)  # (nh, C, hs): head h reads h // n_rep
    w_v = v.view(n_kv, hs, C).mT.repeat_interleave(config.n_rep, dim=0)  # (nh, C, hs)
    w_o = w_out.view(C, nh, hs).transpose(0, 1)  # (nh, C, hs): W_O^h transposed
    return w_q, w_k, w_v, w_o


def _gain(norm: nn.Module, size: int) -> Tensor:
    """(size,) float64 gain of a norm, ones for a norm the block lacks (nn.Identity)."""
    if isinstance(norm, Norm):
        return norm.gain.to("cpu", torch.float64)
    return torch.ones(size, dtype=torch.float64)


def _r(w: Tensor) -> Tensor:
    """R of the thin QR of w (..., C, hs) -> (..., k, hs), k = min(C, hs): ‖w M‖_F = ‖R M‖_F for any M."""
    return torch.linalg.qr(w, mode="r")[1]


def _left_factor(x: Tensor, y: Tensor) -> Tensor:
    """A = x yᵀ (x, y (..., C, hs)) as F = R(x) yᵀ (..., k, C): ‖A M‖_F = ‖F M‖_F for every M (C, ·)."""
    return _r(x) @ y.mT


def _right_factor(x: Tensor, y: Tensor) -> Tensor:
    """B = x yᵀ (x, y (..., C, hs)) as G = x R(y)ᵀ (..., C, k): ‖M B‖_F = ‖M G‖_F for every M (·, C)."""
    return x @ _r(y).mT


def _scores(senders: Tensor, receivers: Tensor) -> Tensor:
    """Composition ‖A_i B_j‖_F / (‖A_i‖_F ‖B_j‖_F) of every pair, from left factors (N, k, C) and
    right factors (M, C, k) -> (N, M)."""
    norms = lambda factors: factors.flatten(1).norm(dim=1)  # (n,) Frobenius norms
    return _product_norms(senders, receivers) / (norms(senders)[:, None] * norms(receivers)[None, :])


def _product_norms(left: Tensor, right: Tensor) -> Tensor:
    """‖left_i right_j‖_F for every pair: left (N, k, C), right (M, C, k) -> (N, M).

    ‖A B‖_F² = ⟨AᵀA, B Bᵀ⟩: both C×C Gram matrices are symmetric, so their upper triangles (the
    off-diagonal entries counted twice) are dotted, CHUNK_ELEMENTS Gram entries at a time.
    """
    n_left, n_right, C = left.shape[0], right.shape[0], left.shape[-1]
    rows = max(1, CHUNK_ELEMENTS // ((n_left + n_right) * C))
    squared = left.new_zeros(n_left, n_right)
    for a in range(0, C, rows):
        b = min(a + rows, C)
        i, j = torch.arange(a, b)[:, None], torch.arange(a, C)[None, :]
        weight = ((j > i) * 2 + (j == i)).to(left.dtype)  # (r, C - a): the upper triangle, off-diagonal twice
        gram_left = left[:, :, a:b].mT @ left[:, :, a:]  # (N, r, C - a): rows a..b of AᵀA, columns a..
        gram_right = right[:, a:b] @ right[:, a:].mT  # (M, r, C - a): rows a..b of B Bᵀ
        squared += (gram_left * weight).flatten(1) @ gram_right.flatten(1).T  # (N, M)
    return squared.clamp_(min=0).sqrt_()


def _random_baseline(d_model: int, d_head: int, heads: int = BASELINE_HEADS, seed: int = BASELINE_SEED) -> float:
    """The mean composition score of random heads: every factor (C, hs) Gaussian, `heads` earlier
    and `heads` later ones, all pairs. Gaussian factors look the same in every rotation, so the
    baseline is the same for Q-, K- and V-composition."""
    generator = torch.Generator().manual_seed(seed)
    x, y, u, w = torch.randn(4, heads, d_model, d_head, generator=generator, dtype=torch.float64)
    senders, receivers = _left_factor(x, y), _right_factor(u, w)
    return float(_scores(senders, receivers).mean())
