"""What attention heads do, in numbers: per-head scores, pattern similarity, one query's sum.

Every score is a mean over query rows of a per-row quantity, so it can be computed on a
few rows of a pattern at a time. `head_stats` walks the layers one by one and the query
rows in chunks, recomputing each chunk of patterns from the trace's q and k with the
model's own maths (`attention_scores`, `attention_pattern`) and reducing it at once: at
SmolLM2's full context (T = 8192) one layer's patterns alone are 2.4 GB, so they are never
held whole (and never memoised on the shared trace).

Shapes: nh heads, T tokens; a chunk of patterns is (nh, c, K): c query rows starting at
query position `start`, keys 0..K-1 (K >= start + c; keys after a query get weight 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from gptviz.model import attention_pattern, attention_scores
from gptviz.trace import Trace

LN2 = math.log(2.0)
CHUNK_ELEMENTS = 2**23  # pattern entries computed at once (32 MB of float32)


# ---- patterns, a chunk of query rows at a time ---------------------------------------------
def pattern_rows(trace: Trace, layer: int, start: int, stop: int, heads: Sequence[int] | None = None) -> Tensor:
    """(nh, stop - start, stop) attention of queries start..stop-1 over keys 0..stop-1.

    The same maths as `trace.patterns(layer)[:, start:stop, :stop]`, without building (or
    memoising) the whole (nh, T, T) tensor. `heads` picks query heads (default: all).
    """
    T = trace.n_tokens
    if not 0 <= start < stop <= T:
        raise ValueError(f"Query rows {start}..{stop - 1} are not inside 0..{T - 1}.")
    q = trace.q(layer)  # (nh, T, hs)
    k = trace.k(layer)  # (n_kv, T, hs)
    d_head = trace.model.config.d_head
    with torch.inference_mode():
        if heads is None:
            raw = attention_scores(q[:, start:stop], k[:, :stop])  # (nh, c, stop)
        else:
            qs = q[list(heads), start:stop]  # (n, c, hs)
            ks = torch.stack([k[trace.kv_head(h), :stop] for h in heads])  # (n, stop, hs)
            raw = qs @ ks.transpose(-1, -2)  # (n, c, stop)
        return attention_pattern(raw, d_head)


def iter_pattern_chunks(
    trace: Trace, layer: int, heads: Sequence[int] | None = None, max_elements: int = CHUNK_ELEMENTS
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start, rows) over all query rows of one layer; rows (n, c, T) float32 numpy.

    Keys after each chunk's last query are zero-padded so every chunk has T columns.
    """
    T = trace.n_tokens
    n = trace.n_head if heads is None else len(heads)
    step = max(1, max_elements // max(1, n * T))
    for start in range(0, T, step):
        stop = min(T, start + step)
        rows = pattern_rows(trace, layer, start, stop, heads).numpy()  # (n, c, stop)
        if stop < T:
            rows = np.pad(rows, ((0, 0), (0, 0), (0, T - stop)))
        yield start, rows


# ---- per-row quantities (one value per head and query row; NaN where undefined) -------------
def _check_rows(p: np.ndarray, start: int) -> np.ndarray:
    p = np.asarray(p, dtype=np.float32)
    if p.ndim != 3:
        raise ValueError(f"Pattern rows must be (heads, queries, keys), got shape {p.shape}.")
    if start < 0 or start + p.shape[1] > p.shape[2]:
        raise ValueError(
            f"Rows for queries {start}..{start + p.shape[1] - 1} need at least {start + p.shape[1]} key columns, "
            f"got {p.shape[2]}."
        )
    return p


def entropy_rows(p: np.ndarray) -> np.ndarray:
    """(..., c, K) attention rows -> (..., c) entropy in bits: -Σ_j p_j log2 p_j.

    A row uniform over n keys has entropy log2(n); a row on one key has 0.
    """
    p = np.asarray(p, dtype=np.float64)
    logs = np.log(np.where(p > 0, p, 1.0))
    return -(p * logs).sum(axis=-1) / LN2


def previous_token_rows(p: np.ndarray, start: int = 0) -> np.ndarray:
    """(nh, c, K) rows -> (nh, c): attention from query i to key i-1 (NaN for i = 0)."""
    p = _check_rows(p, start)
    nh, c, _ = p.shape
    out = np.full((nh, c), np.nan)
    i = np.arange(start, start + c)
    ok = i >= 1
    out[:, ok] = p[:, np.flatnonzero(ok), i[ok] - 1]
    return out


def first_token_rows(p: np.ndarray, start: int = 0) -> np.ndarray:
    """(nh, c, K) rows -> (nh, c): attention from query i to key 0 (NaN for i = 0, which has no choice)."""
    p = _check_rows(p, start)
    out = p[:, :, 0].astype(np.float64)
    if start == 0 and p.shape[1]:
        out[:, 0] = np.nan
    return out


def duplicate_token_rows(p: np.ndarray, ids: Sequence[int], start: int = 0) -> np.ndarray:
    """(nh, c, K) rows -> (nh, c): attention from query i to earlier keys j < i with ids[j] == ids[i].

    NaN for a query whose token did not occur before.
    """
    p = _check_rows(p, start)
    ids = np.asarray(ids)
    nh, c, K = p.shape
    if len(ids) < start + c:
        raise ValueError(f"ids has {len(ids)} tokens; rows need at least {start + c}.")
    i = np.arange(start, start + c)
    keys = ids[:K] if len(ids) >= K else np.pad(ids, (0, K - len(ids)), constant_values=-1)
    same = (keys[None, :] == ids[i][:, None]) & (np.arange(K)[None, :] < i[:, None])  # (c, K)
    out = np.einsum("hck,ck->hc", p, same.astype(np.float32), dtype=np.float64)
    out[:, ~same.any(axis=1)] = np.nan
    return out


def mean_over_rows(values: np.ndarray) -> np.ndarray:
    """(..., rows) -> (...): mean of the defined (non-NaN) values; NaN where none is defined."""
    values = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(values)
    count = ok.sum(axis=-1)
    total = np.where(ok, values, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# ---- per-head scores of whole patterns (nh, T, T) ---------------------------------------------
def entropy_scores(patterns: np.ndarray) -> np.ndarray:
    """(nh, T, T) -> (nh,) mean entropy (bits) over all query rows; lower = more focused."""
    return entropy_rows(_check_rows(patterns, 0)).mean(axis=-1)


def previous_token_scores(patterns: np.ndarray) -> np.ndarray:
    """(nh, T, T) -> (nh,) mean attention from position i to i-1 over i >= 1 (NaN when T = 1)."""
    return mean_over_rows(previous_token_rows(patterns))


def first_token_scores(patterns: np.ndarray) -> np.ndarray:
    """(nh, T, T) -> (nh,) mean attention to position 0 ("attention sink") over queries i >= 1."""
    return mean_over_rows(first_token_rows(patterns))


def duplicate_token_scores(patterns: np.ndarray, ids: Sequence[int]) -> np.ndarray:
    """(nh, T, T) -> (nh,) mean attention to earlier copies of the query's own token, over the
    queries that have one (NaN if no token repeats)."""
    return mean_over_rows(duplicate_token_rows(patterns, ids))


def induction_scores(patterns: np.ndarray, period: int) -> np.ndarray:
    """(nh, T, T) of a sequence whose last 2·period tokens are one block repeated -> (nh,).

    Mean attention from each query i in the second copy (the last `period` positions) to
    key i - period + 1: the token after the previous occurrence of the query's token.
    An induction head predicts "what came next last time" and scores near 1.
    """
    p = _check_rows(patterns, 0)
    T = p.shape[1]
    if period < 1 or 2 * period > T:
        raise ValueError(f"A repeat of period {period} needs at least {2 * period} tokens, got {T}.")
    i = np.arange(T - period, T)
    return p[:, i, i - period + 1].astype(np.float64).mean(axis=-1)


# ---- downsampling ---------------------------------------------------------------------------
def bin_edges(n_items: int, n_bins: int) -> np.ndarray:
    """(min(n_bins, n_items) + 1,) edges splitting range(n_items) into near-equal, non-empty blocks."""
    if n_items < 1 or n_bins < 1:
        raise ValueError(f"Need at least one item and one bin, got {n_items} items, {n_bins} bins.")
    n_bins = min(n_bins, n_items)
    return np.linspace(0, n_items, n_bins + 1).round().astype(np.int64)


def block_sums(x: np.ndarray, row_edges: np.ndarray, col_edges: np.ndarray) -> np.ndarray:
    """(..., R, C) -> (..., len(row_edges)-1, len(col_edges)-1) sums over blocks."""
    x = np.add.reduceat(x, row_edges[:-1], axis=-2)
    return np.add.reduceat(x, col_edges[:-1], axis=-1)


def block_mean(pattern: np.ndarray, size: int) -> np.ndarray:
    """(..., T, T) -> (..., n, n), n = min(size, T): the mean of each block of the pattern
    (future keys count as 0). Blocks split 0..T-1 into n near-equal runs."""
    pattern = np.asarray(pattern, dtype=np.float64)
    if pattern.ndim < 2 or pattern.shape[-1] != pattern.shape[-2]:
        raise ValueError(f"A pattern must be square (..., T, T), got shape {pattern.shape}.")
    edges = bin_edges(pattern.shape[-1], size)
    widths = np.diff(edges).astype(np.float64)
    return block_sums(pattern, edges, edges) / np.outer(widths, widths)


def block_max(pattern: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(Tq, Tk) -> ((nq, nk) block maxima, nq, nk <= size; (row_edges, col_edges)).

    Max-pooling keeps a sharp single-key attention visible after downsampling.
    """
    pattern = np.asarray(pattern)
    if pattern.ndim != 2:
        raise ValueError(f"block_max takes one (T_q, T_k) matrix, got shape {pattern.shape}.")
    rows, cols = bin_edges(pattern.shape[0], size), bin_edges(pattern.shape[1], size)
    pooled = np.maximum.reduceat(np.maximum.reduceat(pattern, rows[:-1], axis=0), cols[:-1], axis=1)
    return pooled, (rows, cols)


# ---- Jensen–Shannon divergence ----------------------------------------------------------------
def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """JS divergence in bits between distributions along the last axis (broadcast): in [0, 1].

    JS(P, Q) = H(M) - (H(P) + H(Q)) / 2 with M = (P + Q) / 2; symmetric, 0 iff P = Q.
    """
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    m = (p + q) / 2
    return np.clip(entropy_rows(m) - (entropy_rows(p) + entropy_rows(q)) / 2, 0.0, 1.0)


def js_divergence_matrix(dists: np.ndarray, block: int = 8) -> np.ndarray:
    """(N, R, K) N heads' attention rows (R query rows, K keys or key blocks) -> (N, N).

    Entry (a, b) is the mean over the R rows of JS(row of head a, row of head b) in bits.
    Computed in blocks of `block` heads against all heads (memory ~ block·N·R·K floats).
    """
    d = torch.as_tensor(np.asarray(dists, dtype=np.float32))
    if d.ndim != 3:
        raise ValueError(f"dists must be (heads, rows, keys), got shape {tuple(d.shape)}.")
    N, R, _ = d.shape
    out = np.zeros((N, N), dtype=np.float64)
    if R == 0:
        return out
    with torch.inference_mode():
        h = torch.special.entr(d).sum(-1) / LN2  # (N, R) entropy of each row
        for a in range(0, N, block):
            m = (d[a : a + block, None] + d[None]) / 2  # (b, N, R, K)
            hm = torch.special.entr(m).sum(-1) / LN2  # (b, N, R)
            js = hm - (h[a : a + block, None] + h[None]) / 2
            out[a : a + block] = js.clamp(0.0, 1.0).mean(-1).double().numpy()
    out = (out + out.T) / 2
    np.fill_diagonal(out, 0.0)
    return out


# ---- everything at once, one layer and chunk of rows at a time ---------------------------------
@dataclass(frozen=True)
class HeadStats:
    """Per-head numbers for all layers (L layers, nh heads, N = L·nh).

    tiles (L, nh, n, n): each pattern's block means (n = min(tile, T));
    entropy, previous_token, first_token, duplicate_token (L, nh) (NaN where undefined);
    js_rows (N, R, K): each head's attention on R sampled query rows (js_positions (R,)),
    keys summed into K blocks (js_key_edges (K+1,)), for `js_divergence_matrix`.
    """

    tiles: np.ndarray
    entropy: np.ndarray
    previous_token: np.ndarray
    first_token: np.ndarray
    duplicate_token: np.ndarray
    js_rows: np.ndarray
    js_positions: np.ndarray
    js_key_edges: np.ndarray

    @property
    def n_layer(self) -> int:
        return self.tiles.shape[0]

    @property
    def n_head(self) -> int:
        return self.tiles.shape[1]


def sampled_rows(n_tokens: int, max_rows: int) -> np.ndarray:
    """Up to max_rows query positions evenly spaced over 1..T-1 (position 0 has no choice)."""
    if n_tokens < 2:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.linspace(1, n_tokens - 1, min(max_rows, n_tokens - 1)).round().astype(np.int64))


def head_stats(
    trace: Trace, tile: int = 32, js_rows: int = 256, js_bins: int = 64, max_elements: int = CHUNK_ELEMENTS
) -> HeadStats:
    """Scores of every head of every layer, from one pass over the patterns (see module doc)."""
    T, L, nh = trace.n_tokens, trace.n_layer, trace.n_head
    ids = np.asarray(trace.ids)
    edges = bin_edges(T, tile)
    widths = np.diff(edges).astype(np.float64)
    n = len(widths)
    positions = sampled_rows(T, js_rows)
    key_edges = bin_edges(T, js_bins)
    tiles = np.zeros((L, nh, n, n))
    per_row = {name: np.zeros((L, nh, T)) for name in ("entropy", "previous", "first", "duplicate")}
    js = np.zeros((L, nh, len(positions), len(key_edges) - 1), dtype=np.float32)
    for layer in range(L):
        col_sums = np.zeros((nh, T, n))  # each query row's attention summed per key block
        for start, p in iter_pattern_chunks(trace, layer, max_elements=max_elements):
            c = p.shape[1]
            rows = slice(start, start + c)
            col_sums[:, rows] = np.add.reduceat(p, edges[:-1], axis=-1)
            per_row["entropy"][layer, :, rows] = entropy_rows(p)
            per_row["previous"][layer, :, rows] = previous_token_rows(p, start)
            per_row["first"][layer, :, rows] = first_token_rows(p, start)
            per_row["duplicate"][layer, :, rows] = duplicate_token_rows(p, ids, start)
            picked = positions[(positions >= start) & (positions < start + c)]
            if len(picked):
                js[layer, :, np.searchsorted(positions, picked)] = np.add.reduceat(
                    p[:, picked - start], key_edges[:-1], axis=-1
                ).transpose(1, 0, 2)
        tiles[layer] = np.add.reduceat(col_sums, edges[:-1], axis=1) / np.outer(widths, widths)
    return HeadStats(
        tiles=tiles,
        entropy=per_row["entropy"].mean(axis=-1),
        previous_token=mean_over_rows(per_row["previous"]),
        first_token=mean_over_rows(per_row["first"]),
        duplicate_token=mean_over_rows(per_row["duplicate"]),
        js_rows=js.reshape(L * nh, len(positions), -1),
        js_positions=positions,
        js_key_edges=key_edges,
    )


# ---- induction: a fresh trace of a repeated random sequence ------------------------------------
def repeated_random_ids(tokenizer, vocab_size: int, period: int = 30, seed: int = 0) -> list[int]:
    """[first] + r + r: r is `period` random token ids from the middle 90% of the vocabulary
    (clear of special and byte tokens), seeded; first is the BOS (or end-of-text) token."""
    n = min(tokenizer.n_vocab, vocab_size)
    low, high = n // 20, n - n // 20
    specials = {tokenizer.bos_id, tokenizer.eos_id} - {None}
    rng = np.random.default_rng(seed)
    block = [int(i) for i in rng.integers(low, high, size=period * 2) if int(i) not in specials][:period]
    first = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id
    if first is None:
        first = block[0]
    return [int(first)] + block + block


def induction_head_scores(induction_trace: Trace, period: int) -> np.ndarray:
    """(L, nh) induction score of every head on a trace of [first] + r + r (len(r) = period)."""
    T = induction_trace.n_tokens
    return np.stack(
        [induction_scores(pattern_rows(induction_trace, layer, 0, T).numpy(), period)
         for layer in range(induction_trace.n_layer)]
    )


# ---- one query's attention, step by step -------------------------------------------------------
@dataclass(frozen=True)
class QueryBreakdown:
    """How query position `position` of one head builds its context vector (hs = d_head).

    q (hs,); keys (n_shown, hs) and values (n_shown, hs) of the shown key positions
    `shown` (all keys 0..position when few, else the `top` keys with the largest weights,
    in order); raw, scaled, weights (position + 1,) over all keys; weighted (n_shown, hs)
    = weights[shown, None] * values; rest (hs,) = the weighted values of the keys not shown,
    summed; z (hs,) = weighted.sum(0) + rest = Σ_j weights[j] v_j.
    """

    position: int
    q: np.ndarray
    shown: np.ndarray
    keys: np.ndarray
    values: np.ndarray
    raw: np.ndarray
    scaled: np.ndarray
    weights: np.ndarray
    weighted: np.ndarray
    rest: np.ndarray
    z: np.ndarray


def query_breakdown(trace: Trace, layer: int, head: int, position: int, top: int = 32) -> QueryBreakdown:
    """One query's q, the keys it is compared with, its weights, and the weighted sum of values."""
    T = trace.n_tokens
    if not 0 <= position < T:
        raise ValueError(f"Position {position} is outside the prompt's 0..{T - 1}.")
    kv = trace.kv_head(head)
    with torch.inference_mode():
        q = trace.q(layer)[head, position].double().numpy()  # (hs,)
        k = trace.k(layer)[kv, : position + 1].double().numpy()  # (position + 1, hs)
        v = trace.v(layer)[kv, : position + 1].double().numpy()  # (position + 1, hs)
    raw = k @ q  # (position + 1,)
    scaled = raw / math.sqrt(q.shape[0])
    weights = np.exp(scaled - scaled.max())
    weights /= weights.sum()
    if position + 1 <= top:
        shown = np.arange(position + 1)
    else:
        shown = np.sort(np.argsort(-weights, kind="stable")[:top])
    weighted_all = weights[:, None] * v  # (position + 1, hs)
    weighted = weighted_all[shown]
    z = weighted_all.sum(axis=0)
    return QueryBreakdown(
        position=position, q=q, shown=shown, keys=k[shown], values=v[shown], raw=raw, scaled=scaled,
        weights=weights, weighted=weighted, rest=z - weighted.sum(axis=0), z=z,
    )


def stage_window(trace: Trace, layer: int, head: int, start: int, stop: int) -> dict[str, np.ndarray]:
    """The four stages of one head on queries and keys start..stop-1: each (w, w) numpy.

    "raw" q·kᵀ, "scaled" ÷ √hs, "masked" (-inf above the diagonal), "softmax" (the pattern;
    the softmax runs over all keys 0..i, so a window not starting at 0 shows rows summing to < 1).
    """
    T = trace.n_tokens
    if not 0 <= start < stop <= T:
        raise ValueError(f"Window {start}..{stop - 1} is not inside 0..{T - 1}.")
    with torch.inference_mode():
        q = trace.q(layer)[head, start:stop]  # (w, hs)
        k = trace.k(layer)[trace.kv_head(head), start:stop]  # (w, hs)
        raw = q @ k.T  # (w, w)
        scaled = raw / math.sqrt(q.shape[-1])
        future = torch.ones_like(scaled, dtype=torch.bool).triu(1)
        masked = scaled.masked_fill(future, float("-inf"))
        pattern = pattern_rows(trace, layer, start, stop, [head])[0, :, start:stop]
    return {"raw": raw.numpy(), "scaled": scaled.numpy(), "masked": masked.numpy(), "softmax": pattern.numpy()}
