"""What the model predicts, read out of a trace: the next-token distribution and the logit lens.

The model's prediction after token t is softmax(readout(final_norm(resid[-1][t]))), readout being
the output head and, on models that soft-cap their logits (Gemma 2), the cap. The
same read-out applied to the residual stream entering every block is the logit lens: what
the model "would say" if it stopped after that many layers. The last row of the lens is
the model's own prediction.

The next-token tables (top tokens, the effect of temperature / top-k / top-p, the steps
generated so far) live here too: they are the last row of the lens, looked at closely.
Everything returns numpy or pandas; nothing here imports streamlit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from gptviz.sampling import (
    SamplingSettings,
    choose,
    make_generator,
    next_token_distribution,
    token_rank,
    top_tokens,
)
from gptviz.trace import Trace

LENS_CHUNK = 512  # cells read out at once: a (chunk, vocab) float32 block, ~100 MB for SmolLM2


# ---- the logit lens -------------------------------------------------------------------------
def lens_row_names(n_layer: int) -> list[str]:
    """Names of the n_layer + 1 lens rows: the residual stream entering each block, then the final one."""
    return [f"resid_pre {layer}" for layer in range(n_layer)] + [f"resid_post {n_layer - 1} (final)"]


def lens_logits(trace: Trace, resid: Tensor) -> Tensor:
    """A residual stream (..., C) read out as logits (..., vocab): readout(final_norm(resid)), the
    output head and the model's final soft-cap (if any), as the model reads its last stream."""
    model = trace.model
    with torch.inference_mode():
        return model.readout(model.final_norm(resid))


def logit_lens_top(trace: Trace, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The top token and its probability at every layer and position in [start, stop).

    Returns top_ids (n_layer + 1, W) int64 and top_probs (n_layer + 1, W) float32, W = stop - start.
    Row l < n_layer reads the residual stream entering block l; the last row reads the final
    residual stream (the model's own prediction). Read out LENS_CHUNK (layer, position) cells at
    a time, several layers together when the window is short (one pass over the output head
    serves them all), keeping only the top-1 of each cell: never an (n_layer, T, vocab) tensor.
    """
    T = trace.n_tokens
    stop = T if stop is None else stop
    if not 0 <= start < stop <= T:
        raise ValueError(f"Positions [{start}, {stop}) are not inside the sequence of {T} tokens.")
    width, rows = stop - start, len(trace.resid_stream)
    top_ids = np.zeros(rows * width, dtype=np.int64)  # flat (row, position)
    top_probs = np.zeros(rows * width, dtype=np.float32)
    layers_together = max(1, LENS_CHUNK // width)
    for first in range(0, rows, layers_together):
        group = trace.resid_stream[first : first + layers_together]
        x = torch.cat([resid[start:stop] for resid in group])  # (len(group) * W, C)
        offset = first * width
        for lo in range(0, x.shape[0], LENS_CHUNK):
            logits = lens_logits(trace, x[lo : lo + LENS_CHUNK]).float()  # (chunk, vocab)
            best, ids = logits.max(dim=-1)  # (chunk,)
            probs = torch.exp(best - torch.logsumexp(logits, dim=-1))  # softmax value of the top token
            top_ids[offset + lo : offset + lo + len(ids)] = ids.numpy()
            top_probs[offset + lo : offset + lo + len(ids)] = probs.numpy()
    return top_ids.reshape(rows, width), top_probs.reshape(rows, width)


def readout_at(trace: Trace, position: int) -> Tensor:
    """(n_layer + 1, vocab) next-token probabilities at `position` read out at every layer."""
    position = _position(trace, position)
    resid = torch.stack([r[position] for r in trace.resid_stream])  # (n_layer + 1, C)
    with torch.inference_mode():
        return torch.softmax(lens_logits(trace, resid).float(), dim=-1)


def _target(probs: Tensor, token_id: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 <= token_id < probs.shape[-1]:
        raise ValueError(f"Token id {token_id} is outside the vocabulary of {probs.shape[-1]}.")
    target = probs[:, token_id]  # (n_layer + 1,)
    ranks = (probs > target[:, None]).sum(dim=-1) + 1
    return target.numpy().astype(np.float32), ranks.numpy().astype(np.int64)


def target_prob_by_layer(trace: Trace, token_id: int, position: int) -> tuple[np.ndarray, np.ndarray]:
    """Probability and 1-based rank of token_id at `position`, read out at every layer.

    Returns probs (n_layer + 1,) float32 and ranks (n_layer + 1,) int64 (rank 1 = top token).
    """
    return _target(readout_at(trace, position), token_id)


def target_table(trace: Trace, token_id: int, position: int) -> pd.DataFrame:
    """Layer by layer at `position`: the target token's probability and rank, and the top token
    with its probability (so the two can be compared: where the target is rank 1 they agree)."""
    probs = readout_at(trace, position)  # (n_layer + 1, vocab)
    target, ranks = _target(probs, token_id)
    top_p, top_i = probs.max(dim=-1)
    return pd.DataFrame({
        "layer": lens_row_names(len(target) - 1),
        "target probability": target,
        "target rank": ranks,
        "top token": trace.model.tokenizer.token_strings(top_i.tolist()),
        "top id": top_i.numpy(),
        "top probability": top_p.numpy(),
    })


def top_token_strings(trace: Trace, top_ids: np.ndarray) -> np.ndarray:
    """Display strings of an array of token ids, same shape (object dtype)."""
    ids = np.asarray(top_ids)
    strings = trace.model.tokenizer.token_strings(ids.ravel().tolist())
    return np.asarray(strings, dtype=object).reshape(ids.shape)


def lens_frame(trace: Trace, top_ids: np.ndarray, top_probs: np.ndarray, start: int = 0) -> pd.DataFrame:
    """The lens as one long table: row name, position, token there, top token, its probability."""
    rows, width = top_ids.shape
    names = lens_row_names(rows - 1)
    top_tokens = trace.model.tokenizer.token_strings(top_ids.ravel().tolist())
    return pd.DataFrame({
        "layer": np.repeat(names, width),
        "position": np.tile(np.arange(start, start + width), rows),
        "token": np.tile(np.asarray(trace.tokens[start : start + width], dtype=object), rows),
        "top_token": top_tokens,
        "top_id": top_ids.ravel(),
        "top_prob": top_probs.ravel(),
    })


def first_token(trace: Trace, text: str) -> tuple[int, int]:
    """(id of the first token of text, number of tokens text has); ValueError for empty text."""
    ids = trace.model.tokenizer.encode(text)
    if not ids:
        raise ValueError("The target is empty: type a word (with its leading space, e.g. ' Paris').")
    return ids[0], len(ids)


# ---- the next-token distribution ---------------------------------------------------------------
def top_next_tokens(trace: Trace, position: int, n: int) -> pd.DataFrame:
    """The n most likely tokens after the token at `position`: rank, token, id, probability, logit,
    and whether it is the token that actually comes next in the sequence."""
    position = _position(trace, position)
    top_i, top_logits, top_p = top_tokens(trace.logits_at(position), max(1, int(n)))  # each (n,)
    ids = top_i.numpy()
    actual = trace.ids[position + 1] if position + 1 < trace.n_tokens else -1
    return pd.DataFrame({
        "rank": np.arange(1, len(ids) + 1),
        "token": trace.model.tokenizer.token_strings(ids.tolist()),
        "id": ids,
        "probability": top_p.numpy().astype(np.float64),
        "logit": top_logits.numpy().astype(np.float64),
        "actual next": ids == actual,
    })


def actual_next(trace: Trace, position: int) -> dict | None:
    """The token that really follows `position` (None at the last position): id, token, prob, rank."""
    position = _position(trace, position)
    if position + 1 >= trace.n_tokens:
        return None
    token_id = trace.ids[position + 1]
    probs = torch.softmax(trace.logits_at(position).float(), dim=-1)
    return {"id": token_id, "token": trace.tokens[position + 1], "probability": float(probs[token_id]),
            "rank": token_rank(probs, token_id)}


@dataclass(frozen=True)
class FilterSummary:
    """What temperature, top-k and top-p did to the distribution at one position."""

    vocab: int
    n_kept: int  # tokens that survive top-k and top-p
    kept_mass: float  # probability (after temperature) of the kept tokens, before renormalising
    entropy_before: float  # nats, softmax(z) at T = 1
    entropy_after: float  # nats, the distribution sampled from


def sampling_table(
    trace: Trace, position: int, settings: SamplingSettings, n: int
) -> tuple[pd.DataFrame, FilterSummary]:
    """Over the full vocabulary at `position`: the original softmax (T = 1), after temperature,
    after the top-k / top-p filter and renormalising, for the n tokens most likely at T = 1
    (temperature keeps the order, and the filters keep a top slice of it)."""
    position = _position(trace, position)
    logits = trace.logits_at(position).float()  # (vocab,)
    dist = next_token_distribution(logits, settings)
    original = torch.softmax(logits, dim=-1)
    top_i, _, top_p = top_tokens(logits, max(1, int(n)))
    n = len(top_i)
    summary = FilterSummary(
        vocab=original.numel(),
        n_kept=int(dist.kept.sum()),
        kept_mass=float(dist.probs[dist.kept].sum()),
        entropy_before=_entropy(original),
        entropy_after=_entropy(dist.filtered),
    )
    frame = pd.DataFrame({
        "rank": np.arange(1, n + 1),
        "token": trace.model.tokenizer.token_strings(top_i.tolist()),
        "id": top_i.numpy(),
        "original (T=1)": top_p.numpy(),
        "after temperature": dist.probs[top_i].numpy(),
        "kept": dist.kept[top_i].numpy(),
        "after filter": dist.filtered[top_i].numpy(),
    })
    return frame, summary


def _entropy(p: Tensor) -> float:
    nz = p[p > 0]
    return float(-(nz * nz.log()).sum())


# ---- stepping: one token at a time -------------------------------------------------------------
def pick_next(trace: Trace, settings: SamplingSettings, seed: int, step_index: int) -> int:
    """The next token after the whole trace: sampled with make_generator(seed + step_index)
    (temperature 0: the greedy token), so a seed, a prompt and settings give the same tokens."""
    return choose(trace.last_logits, settings, make_generator(seed + step_index)).token_id


def steps_table(trace: Trace, n_prompt: int, settings: Sequence[SamplingSettings]) -> pd.DataFrame:
    """One row per generated token (the trace's tokens after the first n_prompt), recomputed
    from the trace: step i was chosen from the logits at position n_prompt + i - 1, under
    settings[i]. Columns: step, token, id, probability (T = 1), filtered probability, rank."""
    n_gen = trace.n_tokens - n_prompt
    if n_prompt < 1 or n_gen < 0 or len(settings) != n_gen:
        raise ValueError(f"Need one setting per generated token ({n_gen}), got {len(settings)}.")
    rows = []
    for i in range(n_gen):
        logits = trace.logits_at(n_prompt + i - 1).float()
        token_id = trace.ids[n_prompt + i]
        plain = torch.softmax(logits, dim=-1)
        filtered = next_token_distribution(logits, settings[i]).filtered
        rows.append({
            "step": i + 1, "token": trace.tokens[n_prompt + i], "id": token_id,
            "probability": float(plain[token_id]), "filtered probability": float(filtered[token_id]),
            "rank": token_rank(plain, token_id),
        })
    columns = ["step", "token", "id", "probability", "filtered probability", "rank"]
    return pd.DataFrame(rows, columns=columns)


def _position(trace: Trace, position: int) -> int:
    T = trace.n_tokens
    if not -T <= position < T:
        raise ValueError(f"Position {position} is outside the sequence of {T} tokens (0–{T - 1}).")
    return position % T
