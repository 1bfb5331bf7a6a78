"""What attention heads do, in numbers: per-head scores, pattern similarity, one query's sum.

Every score is a mean over query rows of a per-row quantity, so it can be computed a few
rows of a pattern at a time; the scores are one registry, HEAD_SCORES, that `head_stats` and the
Compare heads page loop over. `head_stats` walks the layers one by one and the query rows in
chunks, recomputing each chunk of patterns from the trace's q and k with the model's maths
(scores × scale, keys the layer's mask hides set to -inf, softmax) and reducing it at once: at
SmolLM2's full context (T = 8192) one layer's patterns alone are 2.4 GB, so they are never
held whole, and never memoised on the shared trace. For long prompts the rows are an even
sample of query positions (`query_positions`).

Shapes: nh heads, T tokens; rows of patterns are (nh, r, K): r query positions
(`positions`), keys 0..K-1 (keys after a query, or outside a sliding-window layer's window,
have weight 0). A score whose key a query cannot see is undefined (NaN) for that row, not 0:
in a local layer of window w, query i >= w cannot see the first token at all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from gptviz.model import attention_mask, attention_pattern, masked_scores, soft_cap
from gptviz.trace import Trace
from gptviz.trace import trace as run_trace

LN2 = math.log(2.0)
CHUNK_ELEMENTS = 2**23  # pattern entries computed at once (32 MB of float32)
MAX_ROWS = 256  # query rows used for scores and tiles when the prompt is longer
JS_ROWS = 128  # query rows compared for head similarity
JS_NEAR, JS_FAR = 31, 32  # JS cells: key 0, the 31 keys nearest the query, 32 blocks of the rest


# ---- patterns, some query rows at a time ----------------------------------------------------
def query_positions(n_tokens: int, max_rows: int = MAX_ROWS) -> np.ndarray:
    """All positions 0..T-1 when T <= max_rows, else max_rows positions evenly spaced (first and last kept)."""
    if n_tokens < 1 or max_rows < 1:
        raise ValueError(f"Need at least one token and one row, got T={n_tokens}, max_rows={max_rows}.")
    if n_tokens <= max_rows:
        return np.arange(n_tokens)
    return np.unique(np.linspace(0, n_tokens - 1, max_rows).round().astype(np.int64))


def pattern_at(trace: Trace, layer: int, positions: Sequence[int], heads: Sequence[int] | None = None) -> Tensor:
    """(n, r, T) attention of the queries at `positions` over all keys, for query heads `heads`
    (default all nh): softmax(mask(q·kᵀ · scale)) with the model's mask (causal, sliding window).

    Equals `trace.patterns(layer)[heads][:, positions]` without building (or memoising) it.
    """
    T = trace.n_tokens
    pos = torch.as_tensor(np.asarray(positions, dtype=np.int64))
    if pos.ndim != 1 or (len(pos) and not (0 <= int(pos.min()) and int(pos.max()) < T)):
        raise ValueError(f"Query positions must be a list of positions inside 0..{T - 1}.")
    heads = list(range(trace.n_head)) if heads is None else [int(h) for h in heads]
    for h in heads:
        trace.kv_head(h)  # raises ValueError for a head that does not exist
    with torch.inference_mode():
        q = trace.q(layer)[heads][:, pos]  # (n, r, hs)
        k = trace.k(layer)[[trace.kv_head(h) for h in heads]]  # (n, T, hs)
        raw = q @ k.transpose(-1, -2)  # (n, r, T) q·kᵀ
        config = trace.model.config
        return attention_pattern(raw, config.scale, trace.window(layer), softcap=config.attn_softcap, query_pos=pos)


def iter_pattern_rows(
    trace: Trace, layer: int, positions: Sequence[int], heads: Sequence[int] | None = None,
    max_elements: int = CHUNK_ELEMENTS,
) -> Iterator[tuple[np.ndarray, Tensor]]:
    """Yield (positions chunk (c,), rows (n, c, T)) covering `positions` in order, a bounded chunk at a time."""
    positions = np.asarray(positions, dtype=np.int64)
    n = trace.n_head if heads is None else len(heads)
    step = max(1, max_elements // max(1, n * trace.n_tokens))
    for a in range(0, len(positions), step):
        chunk = positions[a : a + step]
        yield chunk, pattern_at(trace, layer, chunk, heads)


# ---- per-row quantities (one value per head and query row; NaN where undefined) ---------------
def _rows(p, positions) -> tuple[Tensor, Tensor]:
    p = torch.as_tensor(p)
    if p.ndim != 3:
        raise ValueError(f"Pattern rows must be (heads, queries, keys), got shape {tuple(p.shape)}.")
    r, K = p.shape[1], p.shape[2]
    pos = torch.arange(r) if positions is None else torch.as_tensor(np.asarray(positions, dtype=np.int64))
    if pos.shape != (r,):
        raise ValueError(f"positions has {tuple(pos.shape)} entries for {r} rows.")
    if r and (int(pos.min()) < 0 or int(pos.max()) >= K):
        raise ValueError(f"Query positions must lie inside the {K} key columns.")
    return p, pos


def entropy_rows(p) -> np.ndarray:
    """(..., K) attention rows -> (...) entropy in bits, -Σ_j p_j log2 p_j (0·log 0 = 0).

    A row uniform over n keys has entropy log2(n); a row on a single key has 0.
    """
    p = torch.as_tensor(p)
    with torch.inference_mode():
        return (torch.special.entr(p).sum(-1) / LN2).double().numpy()


def visible_keys(positions, n_keys: int, window: int | None = None) -> Tensor:
    """(r, K) bool: which keys 0..K-1 the queries at `positions` may attend to (the model's mask:
    causal, and with a sliding window only the `window` most recent)."""
    pos = torch.as_tensor(np.asarray(positions, dtype=np.int64))
    return attention_mask(len(pos), n_keys, window, query_pos=pos, key_pos=torch.arange(n_keys))


def _key_rows(p: Tensor, pos: Tensor, keys: Tensor, window: int | None, visible_from: int) -> np.ndarray:
    """(nh, r) attention of each query row to its key keys[row]; NaN where the query is before
    `visible_from` or cannot see that key."""
    out = p[:, torch.arange(len(pos)), keys.clamp_min(0)].double().numpy().copy()  # never write into p
    seen = visible_keys(pos, p.shape[2], window)[torch.arange(len(pos)), keys.clamp_min(0)].numpy()
    out[:, (pos.numpy() < visible_from) | ~seen] = np.nan
    return out


def previous_token_rows(p, positions: Sequence[int] | None = None, window: int | None = None) -> np.ndarray:
    """(nh, r, K) rows of queries `positions` (default 0..r-1) -> (nh, r): attention from
    query i to key i-1 (NaN for i = 0, and where a window of 1 hides it)."""
    p, pos = _rows(p, positions)
    return _key_rows(p, pos, pos - 1, window, 1)


def first_token_rows(p, positions: Sequence[int] | None = None, window: int | None = None) -> np.ndarray:
    """(nh, r, K) -> (nh, r): attention from query i to key 0 (NaN for i = 0, which has no choice,
    and for queries whose sliding window no longer reaches key 0, i >= window)."""
    p, pos = _rows(p, positions)
    return _key_rows(p, pos, torch.zeros_like(pos), window, 1)


def duplicate_pairs(
    ids: Sequence[int], positions: Sequence[int], n_keys: int, window: int | None = None
) -> tuple[Tensor, Tensor, np.ndarray]:
    """For query rows at `positions`: (row, key) index pairs of the earlier keys j < i the query
    can see (inside its window) with ids[j] == ids[i], and (r,) bool "has such a copy"."""
    ids = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    pos = torch.as_tensor(np.asarray(positions, dtype=np.int64))
    if len(ids) < n_keys:
        raise ValueError(f"ids has {len(ids)} tokens but the rows have {n_keys} keys.")
    earlier = visible_keys(pos, n_keys, window) & (torch.arange(n_keys)[None, :] < pos[:, None])  # (r, K)
    same = (ids[None, :n_keys] == ids[pos][:, None]) & earlier
    rows, keys = torch.nonzero(same, as_tuple=True)
    return rows, keys, same.any(dim=1).numpy()


def duplicate_token_rows(
    p, ids: Sequence[int], positions: Sequence[int] | None = None, window: int | None = None,
) -> np.ndarray:
    """(nh, r, K) -> (nh, r): total attention from query i to the earlier keys j < i it can see
    that hold the same token id (ids[j] == ids[i]); NaN for a query with no such copy."""
    p, pos = _rows(p, positions)
    rows, keys, has = duplicate_pairs(ids, pos, p.shape[2], window)
    with torch.inference_mode():
        out = torch.zeros(p.shape[0], len(pos), dtype=torch.float64)
        out.index_add_(1, rows, p[:, rows, keys].double())
    out = out.numpy()
    out[:, ~has] = np.nan
    return out


def mean_over_rows(values: np.ndarray) -> np.ndarray:
    """(..., rows) -> (...): mean of the defined (non-NaN) values; NaN where none is defined."""
    values = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(values)
    count = ok.sum(axis=-1)
    total = np.where(ok, values, 0.0).sum(axis=-1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# ---- per-head scores of whole patterns (nh, T, T) ------------------------------------------------
def entropy_scores(patterns) -> np.ndarray:
    """(nh, T, T) -> (nh,) mean entropy (bits) over all query rows; lower = more focused."""
    return entropy_rows(_rows(patterns, None)[0]).mean(axis=-1)


def previous_token_scores(patterns, window: int | None = None) -> np.ndarray:
    """(nh, T, T) -> (nh,) mean attention from position i to i-1 over i >= 1 (NaN when T = 1)."""
    return mean_over_rows(previous_token_rows(patterns, window=window))


def first_token_scores(patterns, window: int | None = None) -> np.ndarray:
    """(nh, T, T) -> (nh,) mean attention to position 0 (the "attention sink") over the queries
    i >= 1 that can see it."""
    return mean_over_rows(first_token_rows(patterns, window=window))


def duplicate_token_scores(patterns, ids: Sequence[int], window: int | None = None) -> np.ndarray:
    """(nh, T, T) -> (nh,) mean attention to earlier copies of the query's own token, over the
    queries that have one in sight (NaN if none has)."""
    return mean_over_rows(duplicate_token_rows(patterns, ids, window=window))


def induction_scores(patterns, period: int, window: int | None = None) -> np.ndarray:
    """(nh, T, T) of a sequence whose last 2·period tokens are one block repeated -> (nh,).

    Mean attention from each query i in the second copy (the last `period` positions) to
    key i - period + 1: the token after the previous occurrence of the query's token.
    An induction head ("what came next last time?") scores near 1. NaN in a sliding-window
    layer whose window (w <= period - 1 keys back) hides that token.
    """
    p = _rows(patterns, None)[0]
    T = p.shape[1]
    if period < 1 or 2 * period > T:
        raise ValueError(f"A repeat of period {period} needs at least {2 * period} tokens, got {T}.")
    i = torch.arange(T - period, T)
    return mean_over_rows(_key_rows(p[:, i], i, i - period + 1, window, 0))


# ---- downsampling ------------------------------------------------------------------------------
def bin_edges(n_items: int, n_bins: int) -> np.ndarray:
    """(min(n_bins, n_items) + 1,) edges splitting range(n_items) into near-equal, non-empty blocks."""
    if n_items < 1 or n_bins < 1:
        raise ValueError(f"Need at least one item and one bin, got {n_items} items, {n_bins} bins.")
    n_bins = min(n_bins, n_items)
    return np.linspace(0, n_items, n_bins + 1).round().astype(np.int64)


def block_mean(pattern, size: int) -> np.ndarray:
    """(..., T, T) -> (..., n, n), n = min(size, T): the mean of each block of the pattern
    (future keys count as 0). Blocks split 0..T-1 into n near-equal runs."""
    pattern = np.asarray(pattern, dtype=np.float64)
    if pattern.ndim < 2 or pattern.shape[-1] != pattern.shape[-2]:
        raise ValueError(f"A pattern must be square (..., T, T), got shape {pattern.shape}.")
    edges = bin_edges(pattern.shape[-1], size)
    widths = np.diff(edges).astype(np.float64)
    sums = np.add.reduceat(np.add.reduceat(pattern, edges[:-1], axis=-2), edges[:-1], axis=-1)
    return sums / np.outer(widths, widths)


def block_max(
    matrix, size: int, *, row_edges: np.ndarray | None = None, col_edges: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(R, C) -> ((nr, nc) block maxima, row edges, column edges); nr, nc <= size unless edges are given.

    NaN entries (e.g. masked future keys) are ignored; a block of only NaN stays NaN.
    Max-pooling keeps a sharp one-key attention visible after downsampling.
    """
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"block_max takes one (rows, cols) matrix, got shape {matrix.shape}.")
    rows = bin_edges(matrix.shape[0], size) if row_edges is None else np.asarray(row_edges)
    cols = bin_edges(matrix.shape[1], size) if col_edges is None else np.asarray(col_edges)
    filled = np.where(np.isnan(matrix), -np.inf, matrix)
    pooled = np.maximum.reduceat(np.maximum.reduceat(filled, rows[:-1], axis=0), cols[:-1], axis=1)
    return np.where(np.isneginf(pooled), np.nan, pooled), rows, cols


def pooled_pattern(
    trace: Trace, layer: int, head: int, size: int, max_elements: int = CHUNK_ELEMENTS
) -> tuple[np.ndarray, np.ndarray]:
    """One head's (T, T) pattern max-pooled into (n, n) blocks, n = min(size, T); a block of
    only masked keys stays NaN. Returns (pooled, edges (n+1,)).

    Keys the layer's mask hides (after the query, or outside a sliding window) are NaN too.
    Computed a few row blocks at a time, so even T = 8192 never builds the whole pattern.
    With T <= size it is the pattern itself (masked keys NaN).
    """
    T = trace.n_tokens
    edges = bin_edges(T, size)
    n = len(edges) - 1
    out = np.full((n, n), np.nan, dtype=np.float32)
    bins_per_chunk = max(1, max_elements // max(1, T * int(np.diff(edges).max())))
    for b0 in range(0, n, bins_per_chunk):
        b1 = min(n, b0 + bins_per_chunk)
        positions = np.arange(edges[b0], edges[b1])
        rows = pattern_at(trace, layer, positions, [head])[0].numpy()  # (c, T)
        rows = np.where(visible_keys(positions, T, trace.window(layer)).numpy(), rows, np.nan)
        out[b0:b1] = block_max(rows, T, row_edges=edges[b0 : b1 + 1] - edges[b0], col_edges=edges)[0]
    return out, edges


def pattern_window(trace: Trace, layer: int, head: int, start: int, stop: int, key_start: int = 0) -> np.ndarray:
    """(stop - start, stop - key_start) one head's weights of queries start..stop-1 over keys
    key_start..stop-1, at full resolution (keys after a query are 0)."""
    T = trace.n_tokens
    if not 0 <= key_start <= start < stop <= T:
        raise ValueError(f"Window queries {start}..{stop - 1}, keys from {key_start}, must lie inside 0..{T - 1}.")
    return pattern_at(trace, layer, np.arange(start, stop), [head])[0, :, key_start:stop].numpy()


# ---- Jensen–Shannon divergence ------------------------------------------------------------------
def js_divergence(p, q) -> np.ndarray:
    """JS divergence in bits between distributions along the last axis (broadcast), in [0, 1].

    JS(P, Q) = H(M) - (H(P) + H(Q)) / 2 with M = (P + Q) / 2: symmetric, 0 iff P = Q.
    """
    p, q = torch.as_tensor(np.asarray(p, dtype=np.float64)), torch.as_tensor(np.asarray(q, dtype=np.float64))
    js = entropy_rows((p + q) / 2) - (entropy_rows(p) + entropy_rows(q)) / 2
    return np.clip(js, 0.0, 1.0)


def js_divergence_matrix(dists, block: int = 8) -> np.ndarray:
    """(N, R, K) N heads' attention rows (the same R query rows; K keys or key cells) -> (N, N).

    Entry (a, b) is the mean over the R rows of JS(row of head a, row of head b), in bits.
    Blocks of `block` heads are compared with the heads after them (memory ~ block·N·R·K).
    """
    d = torch.as_tensor(np.asarray(dists, dtype=np.float32))
    if d.ndim != 3:
        raise ValueError(f"dists must be (heads, rows, keys), got shape {tuple(d.shape)}.")
    N, R, _ = d.shape
    out = np.zeros((N, N), dtype=np.float64)
    if R == 0:
        return out
    with torch.inference_mode():
        h = torch.special.entr(d).sum(-1)  # (N, R) entropy of each row, in nats
        for a in range(0, N, block):
            b = min(N, a + block)
            m = (d[a:b, None] + d[None, a:]) / 2  # (b - a, N - a, R, K)
            js = torch.special.entr(m).sum(-1) - (h[a:b, None] + h[None, a:]) / 2  # (b - a, N - a, R)
            out[a:b, a:] = (js / LN2).clamp(0.0, 1.0).mean(-1).double().numpy()
    upper = np.triu(out, 1)
    return upper + upper.T


def js_cells(n_keys: int, positions: Sequence[int], near: int = JS_NEAR, far: int = JS_FAR) -> np.ndarray:
    """(r, n_keys) cell of each key for each query row, for comparing rows on 1 + near + far cells.

    A query at i with at most 1 + near + far keys keeps every key as its own cell. Otherwise:
    cell 0 = key 0 (the attention sink), cells 1..near = keys i, i-1, ..., i-near+1, and the
    keys 1..i-near in `far` equal blocks. Keys after the query (weight 0) go to cell 0.
    Summing attention into cells can only lower a JS divergence, never raise it.
    """
    n_cells = 1 + near + far
    i = np.asarray(positions, dtype=np.int64)[:, None]  # (r, 1)
    j = np.arange(n_keys)[None, :]  # (1, K)
    span = np.maximum(i - near, 1)  # keys 1..i-near are the far ones
    far_cell = 1 + near + np.minimum((j - 1) * far // span, far - 1)
    cells = np.where(j > i - near, 1 + i - j, far_cell)
    cells = np.where(j == 0, 0, cells)
    cells = np.where(i + 1 <= n_cells, j, cells)
    return np.where(j > i, 0, cells)


def cell_sums(p: Tensor, cells: np.ndarray, n_cells: int) -> Tensor:
    """(n, r, K) rows, (r, K) cell ids -> (n, r, n_cells) attention summed per cell."""
    n, r, K = p.shape
    index = torch.as_tensor(cells + n_cells * np.arange(r)[:, None]).reshape(-1)  # (r·K,)
    out = torch.zeros(n, r * n_cells, dtype=p.dtype)
    return out.index_add_(1, index, p.reshape(n, r * K)).reshape(n, r, n_cells)


# ---- the head scores: one registry -----------------------------------------------------------------
RowScore = Callable[[Tensor, np.ndarray, np.ndarray, "int | None"], np.ndarray]


@dataclass(frozen=True)
class HeadScore:
    """One per-head score. rows(p (nh, c, T), positions (c,), ids (T,), window) -> (nh, c), NaN
    where undefined, is averaged over the query rows of the prompt; None for a score computed
    by its own experiment (induction). explanation: one markdown bullet; "{window_note}" in it
    is replaced by a note on sliding-window layers when the model has them. rank_highest: the
    page names the highest-scoring head (False when low is the notable end). undefined: why
    no head has a value, when none has."""

    key: str
    name: str
    unit: str
    colorscale: str
    zmin: float
    zmax: float | None
    explanation: str
    rows: RowScore | None = None
    rank_highest: bool = True
    undefined: str = "no query of this prompt has the key it needs in sight"


HEAD_SCORES: tuple[HeadScore, ...] = (
    HeadScore(
        "previous_token", "previous token", "weight", "Blues", 0.0, 1.0,
        "**previous token**: mean of a_(i, i−1), the weight from each token to the one just before it (i ≥ 1).",
        lambda p, pos, ids, window: previous_token_rows(p, pos, window),
        undefined="a one-token prompt has no previous token",
    ),
    HeadScore(
        "first_token", "first token", "weight", "Blues", 0.0, 1.0,
        "**first token** (attention sink): mean of a_(i, 0), the weight on position 0, over queries i ≥ 1. "
        "Many heads park unneeded attention there.{window_note}",
        lambda p, pos, ids, window: first_token_rows(p, pos, window),
        undefined="a one-token prompt has nothing before its first token",
    ),
    HeadScore(
        "duplicate_token", "duplicate token", "weight", "Blues", 0.0, 1.0,
        "**duplicate token**: mean over the tokens that occurred before of Σ a_(i, j) over the earlier "
        "positions j holding the same token; blank if no token of the prompt repeats.",
        lambda p, pos, ids, window: duplicate_token_rows(p, ids, pos, window),
        undefined="no token of this prompt occurs twice",
    ),
    HeadScore(
        "induction", "induction", "weight", "Blues", 0.0, 1.0,
        "**induction**: on a separate input, a first token then R = {period} random tokens repeated twice "
        "({length} tokens, seed {seed}): mean over each position i of the second copy of a_(i, i−R+1), the "
        "weight on the token that *followed* the previous occurrence of token i. Induction heads copy "
        "\"what came next last time\" and score near 1; blank in a local layer whose window is R or less.",
    ),
    HeadScore(
        "entropy", "entropy (bits)", "bits", "Viridis_r", 0.0, None,
        "**entropy**: mean of −Σ_j a_(i, j) log₂ a_(i, j) in bits (0 = one token; lower = more focused; at most "
        "log₂ of the number of keys the query sees: i + 1, or the window w in a local layer).",
        lambda p, pos, ids, window: entropy_rows(p),
        rank_highest=False,
    ),
)
SCORES_BY_KEY = {score.key: score for score in HEAD_SCORES}


# ---- everything at once, one layer and chunk of rows at a time -----------------------------------
@dataclass(frozen=True)
class HeadStats:
    """Per-head numbers for all layers (L layers, nh heads, N = L·nh heads, head index l·nh + h).

    tiles (L, nh, n, n): each pattern's block means (n = min(tile, T));
    scores: key -> (L, nh) for every HEAD_SCORES entry with rows (NaN where undefined);
    positions (r,): the query rows the means are over (all of them unless T > max_rows);
    js_rows (N, R, 1 + near + far): each head's attention on the R query rows js_positions,
    summed into cells (`js_cells`), for `js_divergence_matrix`.
    """

    tiles: np.ndarray
    scores: dict[str, np.ndarray]
    positions: np.ndarray
    js_rows: np.ndarray
    js_positions: np.ndarray

    @property
    def n_layer(self) -> int:
        return self.tiles.shape[0]

    @property
    def n_head(self) -> int:
        return self.tiles.shape[1]

    @property
    def entropy(self) -> np.ndarray:
        """(L, nh) mean attention entropy in bits."""
        return self.scores["entropy"]


def head_stats(
    trace: Trace, tile: int = 32, max_rows: int = MAX_ROWS, js_rows: int = JS_ROWS,
    max_elements: int = CHUNK_ELEMENTS,
) -> HeadStats:
    """Scores (HEAD_SCORES), overview tiles and similarity rows of every head, from one pass over
    the patterns of the query rows `query_positions(T, max_rows)` (see the module doc); each
    layer's scores use its own mask (sliding window or not)."""
    T, L, nh = trace.n_tokens, trace.n_layer, trace.n_head
    if max_rows < 2 * tile:
        raise ValueError(f"max_rows={max_rows} leaves some of the {tile} tile rows without a query row.")
    ids = np.asarray(trace.ids)
    positions = query_positions(T, max_rows)
    js_positions = positions[positions > 0]
    js_positions = js_positions[np.unique(np.linspace(0, len(js_positions) - 1, min(js_rows, len(js_positions)))
                                          .round().astype(np.int64))] if len(js_positions) else js_positions
    n_cells = 1 + JS_NEAR + JS_FAR
    edges = bin_edges(T, tile)
    widths = np.diff(edges).astype(np.float64)
    row_bin = np.searchsorted(edges, positions, side="right") - 1  # (r,) tile row of each query row
    rows_per_bin = np.bincount(row_bin, minlength=len(widths))
    tiles = np.zeros((L, nh, len(widths), len(widths)))
    per_row_scores = [score for score in HEAD_SCORES if score.rows is not None]
    per_row = {score.key: np.zeros((L, nh, len(positions))) for score in per_row_scores}
    js = np.zeros((L, nh, len(js_positions), n_cells), dtype=np.float32)
    for layer in range(L):
        window = trace.window(layer)
        done = 0
        for chunk, p in iter_pattern_rows(trace, layer, positions, max_elements=max_elements):
            rows = slice(done, done + len(chunk))
            done += len(chunk)
            col_sums = np.add.reduceat(p.numpy(), edges[:-1], axis=-1) / widths  # (nh, c, n) block-column means
            np.add.at(tiles[layer], (slice(None), row_bin[rows]), col_sums)
            for score in per_row_scores:
                per_row[score.key][layer, :, rows] = score.rows(p, chunk, ids, window)
            take = np.isin(chunk, js_positions)
            if take.any():
                at = np.searchsorted(js_positions, chunk[take])
                js[layer][:, at] = cell_sums(p[:, take], js_cells(T, chunk[take]), n_cells).numpy()
        tiles[layer] /= rows_per_bin[None, :, None]
    return HeadStats(
        tiles=tiles,
        scores={key: mean_over_rows(values) for key, values in per_row.items()},
        positions=positions,
        js_rows=js.reshape(L * nh, len(js_positions), n_cells),
        js_positions=js_positions,
    )


# ---- induction: a fresh trace of a repeated random sequence ------------------------------------
def repeated_random_ids(tokenizer, vocab_size: int, period: int = 30, seed: int = 0) -> list[int]:
    """[first] + r + r: r is `period` random token ids from the middle 90% of the vocabulary
    (clear of special and byte tokens), distinct, seeded; first is the BOS (or end-of-text) token."""
    if period < 1:
        raise ValueError(f"The repeated block needs at least one token, got period={period}.")
    n = min(tokenizer.n_vocab, vocab_size)
    specials = [i for i in (tokenizer.bos_id, tokenizer.eos_id) if i is not None]
    pool = np.setdiff1d(np.arange(n // 20, n - n // 20), specials)
    if len(pool) < period:
        raise ValueError(f"A vocabulary of {n} tokens is too small for {period} distinct random tokens.")
    block = [int(i) for i in np.random.default_rng(seed).choice(pool, size=period, replace=False)]
    first = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id
    if first is None:
        first = block[0]
    return [int(first)] + block + block


def induction_head_scores(induction_trace: Trace, period: int) -> np.ndarray:
    """(L, nh) induction score of every head on a trace of [first] + r + r (len(r) = period);
    NaN for the heads of a sliding-window layer whose window does not reach back `period` - 1 tokens."""
    T = induction_trace.n_tokens
    return np.stack(
        [induction_scores(pattern_at(induction_trace, layer, np.arange(T)), period, induction_trace.window(layer))
         for layer in range(induction_trace.n_layer)]
    )


def induction_experiment(model, period: int = 30, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Run the model on [first] + r + r (r: `period` random tokens, seeded) and score every
    head: ((L, nh) induction scores, the ids). ValueError if 2·period + 1 exceeds the context."""
    if 2 * period + 1 > model.config.n_ctx:
        raise ValueError(f"2·{period} + 1 tokens do not fit the context of {model.config.n_ctx}: use a shorter period.")
    ids = repeated_random_ids(model.tokenizer, model.config.vocab_size, period, seed)
    return induction_head_scores(run_trace(model, ids), period), ids


# ---- one query's attention, step by step -------------------------------------------------------
@dataclass(frozen=True)
class QueryBreakdown:
    """How query position `position` of one head builds its context vector (hs = d_head).

    q (hs,); keys (n_shown, hs) and values (n_shown, hs) of the shown key positions
    `shown` (all keys the query sees, 0..position or its sliding window, when few, else the
    `top` of them with the largest weights, in order); raw, scaled, weights (position + 1,) over
    all keys, and softcapped (position + 1,): tanh(scaled / c) · c on a model that soft-caps (else
    None), what the mask and softmax then take; weighted (n_shown, hs) = weights[shown, None] * values;
    rest (hs,) = the weighted values of the keys not shown, summed; z (hs,) = weighted.sum(0) + rest
    = Σ_j weights[j] v_j.
    """

    position: int
    q: np.ndarray
    shown: np.ndarray
    keys: np.ndarray
    values: np.ndarray
    raw: np.ndarray
    scaled: np.ndarray
    softcapped: np.ndarray | None
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
    config = trace.model.config
    raw = k @ q  # (position + 1,)
    scaled = raw * config.scale
    softcapped = None
    if config.attn_softcap is not None:
        softcapped = soft_cap(torch.from_numpy(scaled), config.attn_softcap).numpy()
    masked = masked_scores(torch.from_numpy(raw)[None], config.scale, trace.window(layer),
                           softcap=config.attn_softcap)[0]
    weights = torch.softmax(masked, dim=-1).numpy()  # 0 outside a sliding window
    seen = np.flatnonzero(visible_keys([position], position + 1, trace.window(layer))[0].numpy())  # keys in sight
    if len(seen) <= top:
        shown = seen
    else:
        shown = np.sort(seen[np.argsort(-weights[seen], kind="stable")[:top]])
    weighted_all = weights[:, None] * v  # (position + 1, hs)
    weighted = weighted_all[shown]
    z = weighted_all.sum(axis=0)
    return QueryBreakdown(
        position=position, q=q, shown=shown, keys=k[shown], values=v[shown], raw=raw, scaled=scaled,
        softcapped=softcapped, weights=weights, weighted=weighted, rest=z - weighted.sum(axis=0), z=z,
    )


def context_vector(trace: Trace, layer: int, head: int, position: int) -> np.ndarray:
    """(hs,) one head's context vector at one position, Σ_j a_j v_j, from the pattern row and
    the values (the same numbers as trace.z(layer)[head, position], without building the
    layer's (nh, T, T) patterns)."""
    if not 0 <= position < trace.n_tokens:
        raise ValueError(f"Position {position} is outside the prompt's 0..{trace.n_tokens - 1}.")
    weights = pattern_at(trace, layer, [position], [head])[0, 0]  # (T,)
    with torch.inference_mode():
        return (weights @ trace.v(layer)[trace.kv_head(head)]).numpy()  # (hs,)


def stage_window(trace: Trace, layer: int, head: int, start: int, stop: int) -> dict[str, np.ndarray]:
    """The stages of one head on queries and keys start..stop-1, in the model's order: each (w, w) numpy.

    "raw" q·kᵀ, "scaled" × scale, "softcapped" tanh(scaled / c) · c (only on a model that soft-caps its
    scores), "masked" (-inf after the query or outside its window), "softmax" (the pattern; the softmax
    runs over all keys 0..i, so a window not starting at 0 shows rows summing to < 1).
    """
    T = trace.n_tokens
    if not 0 <= start < stop <= T:
        raise ValueError(f"Window {start}..{stop - 1} is not inside 0..{T - 1}.")
    with torch.inference_mode():
        q = trace.q(layer)[head, start:stop]  # (w, hs)
        k = trace.k(layer)[trace.kv_head(head), start:stop]  # (w, hs)
        raw = q @ k.T  # (w, w)
        config, positions = trace.model.config, torch.arange(start, stop)
        stages = {"raw": raw, "scaled": raw * config.scale}
        if config.attn_softcap is not None:
            stages["softcapped"] = soft_cap(stages["scaled"], config.attn_softcap)
        stages["masked"] = masked_scores(raw, config.scale, trace.window(layer), softcap=config.attn_softcap,
                                         query_pos=positions, key_pos=positions)
        stages["softmax"] = pattern_at(trace, layer, np.arange(start, stop), [head])[0, :, start:stop]
    return {name: stage.numpy() for name, stage in stages.items()}
