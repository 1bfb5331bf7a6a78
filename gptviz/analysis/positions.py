"""How position enters a transformer: GPT-2's learned table, the sinusoidal encoding of
"Attention is all you need", and rotary embedding (RoPE), which turns q and k so that q·k
depends only on how far apart two tokens are.

The sinusoidal table is a pure function of (n_positions, d_model). The rotary views call the
model's own rotary functions (rotary_frequencies, rotary_cos_sin, apply_rotary) with the rope
of the chosen layer (Gemma 3's sliding-window layers use a different one). Shapes: N positions,
C = d_model, hs = d_head, hs/2 rotated dimension pairs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from gptviz.analysis.embeddings import cosine_similarity, position_table
from gptviz.model import GPT, apply_rotary, rotary_cos_sin, rotary_frequencies

SINUSOID_BASE = 10000.0


def sinusoidal_table(n_positions: int, d_model: int, base: float = SINUSOID_BASE) -> np.ndarray:
    """(N, C) float64 sinusoidal position encoding (Vaswani et al. 2017, section 3.5):
    PE[pos, 2i] = sin(pos / base^(2i / C)), PE[pos, 2i + 1] = cos(pos / base^(2i / C)).
    An odd C ends with a sine column."""
    if n_positions < 1 or d_model < 1:
        raise ValueError(f"Need at least one position and one dimension, got N={n_positions}, C={d_model}.")
    positions = np.arange(n_positions, dtype=np.float64)[:, None]  # (N, 1)
    even = np.arange(0, d_model, 2, dtype=np.float64)  # 2i, (ceil(C/2),)
    angles = positions / base ** (even / d_model)  # (N, ceil(C/2))
    table = np.empty((n_positions, d_model))
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles[:, : d_model // 2])
    return table


def learned_positions(model: GPT, n_positions: int) -> np.ndarray | None:
    """(N, C) the first N rows of the learned position table (None for a model without one)."""
    table = position_table(model)
    return None if table is None else table[:n_positions]


def position_similarity(table: np.ndarray) -> np.ndarray:
    """(N, N) cosine similarity between the position vectors (rows) of a table."""
    return cosine_similarity(table)


# ---- rotary ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RotaryTable:
    """The rotation rotary applies in one layer, for positions 0..N-1.

    r = the turned dimensions of a head (config.rotary_dims: hs, or a fraction of it with partial rotary, whose
    other dimensions are never turned). frequencies (r/2,) radians per position of each dimension pair;
    wavelengths (r/2,) = 2π / frequency, in positions; angles (N, r/2) = position · frequency; cos (N, r/2) the
    model's cos table (its first half: pair i joins dimensions i and i + r/2).
    """

    frequencies: np.ndarray
    wavelengths: np.ndarray
    angles: np.ndarray
    cos: np.ndarray


def rotary_table(model: GPT, layer: int, n_positions: int) -> RotaryTable:
    """Rotary's angles in block `layer` for positions 0..n_positions-1 (ValueError without rotary)."""
    cfg = model.config
    if cfg.positional != "rotary":
        raise ValueError(f"{cfg.name or 'This model'} has no rotary embedding: its positions are a learned table.")
    rope = cfg.rope_for(layer)
    freq = rotary_frequencies(rope, cfg.rotary_dims).double()  # (r/2,)
    positions = torch.arange(n_positions)
    cos, _ = rotary_cos_sin(positions, cfg.rotary_dims, rope)  # (N, r)
    return RotaryTable(frequencies=freq.numpy(), wavelengths=(2 * math.pi / freq).numpy(),
                       angles=(positions.double()[:, None] * freq[None, :]).numpy(),
                       cos=cos[:, : cfg.rotary_dims // 2].numpy())


def _rotated(model: GPT, layer: int, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """x (hs,) placed at each of `positions` (P,) -> (P, hs), turned by the layer's rotary."""
    cos, sin = rotary_cos_sin(positions, model.config.rotary_dims, model.config.rope_for(layer))  # (P, r)
    return apply_rotary(x.float()[None, :].expand(len(positions), -1), cos, sin)


def rotary_scores(model: GPT, layer: int, q: np.ndarray, k: np.ndarray, query_positions: Sequence[int],
                  key_positions: Sequence[int]) -> np.ndarray:
    """(P_q, P_k) raw scores q·k with the same pre-rotary q (hs,) and k (hs,) placed at every query and
    key position: rotary turns q by its position and k by its, so the score depends only on the offset."""
    if model.config.positional != "rotary":
        raise ValueError(f"{model.config.name or 'This model'} has no rotary embedding.")
    hs = model.config.d_head
    q_t, k_t = torch.as_tensor(np.asarray(q)), torch.as_tensor(np.asarray(k))
    if q_t.shape != (hs,) or k_t.shape != (hs,):
        raise ValueError(f"q and k must each be one head's vector of {hs} numbers, got {tuple(q_t.shape)}, "
                         f"{tuple(k_t.shape)}.")
    with torch.inference_mode():
        qs = _rotated(model, layer, q_t, torch.as_tensor(list(query_positions)))  # (P_q, hs)
        ks = _rotated(model, layer, k_t, torch.as_tensor(list(key_positions)))  # (P_k, hs)
        return (qs @ ks.T).numpy()


def scores_by_offset(model: GPT, layer: int, q: np.ndarray, k: np.ndarray, key_starts: Sequence[int],
                     n_offsets: int) -> np.ndarray:
    """(len(key_starts), n_offsets) the score of q at position s + d with k at position s, for each start s
    and offset d = 0..n_offsets-1: with rotary every row is the same curve."""
    return np.stack([rotary_scores(model, layer, q, k, [s + d for d in range(n_offsets)], [s])[:, 0]
                     for s in key_starts])
