"""Choosing the next token: temperature, top-k, top-p over the full vocabulary, and generation.

Pure functions over logits; randomness comes only from a seeded torch.Generator, so the
same seed, prompt and settings give the same tokens. Each function also returns the
filtered, renormalised distribution, so a page can plot exactly what was sampled from.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from gptviz.model import GPT, KVCache


@dataclass(frozen=True)
class SamplingSettings:
    """temperature 0 = greedy; top_k 0 = off; top_p 1.0 = off (0 keeps only the top token)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not (self.temperature >= 0 and self.temperature != float("inf")):
            raise ValueError(f"Temperature must be a finite number >= 0, not {self.temperature}.")
        if self.top_k < 0:
            raise ValueError(f"top-k must be >= 0 (0 turns it off), not {self.top_k}.")
        if not 0.0 <= self.top_p <= 1.0:
            raise ValueError(f"top-p must be between 0 and 1, not {self.top_p}.")


@dataclass(frozen=True)
class NextTokenDistribution:
    """All (vocab,): probs = softmax(logits / temperature); kept = survives top-k and top-p;
    filtered = probs renormalised over the kept tokens (what sampling draws from)."""

    logits: Tensor
    probs: Tensor
    kept: Tensor
    filtered: Tensor


def next_token_distribution(logits: Tensor, settings: SamplingSettings = SamplingSettings()) -> NextTokenDistribution:
    """logits (vocab,) -> the distribution after temperature, then top-k, then top-p."""
    logits = logits.float()
    if settings.temperature == 0:  # greedy: all mass on the most likely token
        probs = torch.zeros_like(logits)
        probs[int(torch.argmax(logits))] = 1.0
    else:
        probs = torch.softmax(logits / settings.temperature, dim=-1)
    kept = probs > 0 if settings.temperature == 0 else torch.ones_like(probs, dtype=torch.bool)
    if settings.top_k and settings.top_k < logits.numel():
        kth = torch.topk(probs, settings.top_k).values[-1]
        kept &= probs >= kth
    if settings.top_p < 1.0:
        sorted_probs, order = torch.sort(torch.where(kept, probs, 0.0), descending=True)
        before = torch.cumsum(sorted_probs, dim=0) - sorted_probs  # mass of the tokens ranked above
        keep_sorted = before < settings.top_p * sorted_probs.sum()
        keep_sorted[0] = True  # the top token always survives
        nucleus = torch.zeros_like(kept)
        nucleus[order[keep_sorted]] = True
        kept &= nucleus
    filtered = torch.where(kept, probs, 0.0)
    filtered = filtered / filtered.sum()
    return NextTokenDistribution(logits=logits, probs=probs, kept=kept, filtered=filtered)


def make_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def sample_token(dist: NextTokenDistribution, generator: torch.Generator) -> int:
    """Draw one token id from the filtered distribution."""
    return int(torch.multinomial(dist.filtered, 1, generator=generator))


def greedy_token(logits: Tensor) -> int:
    """The most likely next token (argmax of the logits)."""
    return int(torch.argmax(logits))


def top_tokens(logits: Tensor, k: int, chunk: int = 128) -> tuple[Tensor, Tensor, Tensor]:
    """The k most likely next tokens: logits (..., vocab) -> (ids, logits, probabilities), each (..., k),
    most likely first; probability = softmax over the whole vocabulary at temperature 1 (float64).

    p = exp(logit − logsumexp(row)) in float64, computed a chunk of rows at a time, so a long
    trace's (T, vocab) probabilities never exist in memory at once. Every "top next tokens" in
    gptviz (pages, export, command line) comes from here.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, not {k}.")
    rows = logits.float().reshape(-1, logits.shape[-1])  # (N, vocab)
    k = min(int(k), rows.shape[-1])
    ids, values, probs = [], [], []
    with torch.inference_mode():
        for part in rows.split(chunk):
            top = torch.topk(part, k, dim=-1)
            ids.append(top.indices)
            values.append(top.values)
            probs.append((top.values.double() - torch.logsumexp(part.double(), dim=-1, keepdim=True)).exp())
    shape = (*logits.shape[:-1], k)
    return torch.cat(ids).reshape(shape), torch.cat(values).reshape(shape), torch.cat(probs).reshape(shape)


def token_rank(probs: Tensor, token_id: int) -> int:
    """1-based rank of token_id in probs (vocab,): 1 = most likely."""
    return int((probs > probs[token_id]).sum()) + 1


@dataclass(frozen=True)
class Step:
    """One generated token: its id, its probability before and after filtering, its rank."""

    token_id: int
    prob: float
    filtered_prob: float
    rank: int
    logits: Tensor  # (vocab,) the logits it was chosen from


def choose(logits: Tensor, settings: SamplingSettings, generator: torch.Generator) -> Step:
    """Pick the next token from logits (vocab,) under settings (temperature 0 = greedy)."""
    dist = next_token_distribution(logits, settings)
    token = greedy_token(logits) if settings.temperature == 0 else sample_token(dist, generator)
    plain = torch.softmax(dist.logits, dim=-1)
    return Step(
        token_id=token,
        prob=float(plain[token]),
        filtered_prob=float(dist.filtered[token]),
        rank=token_rank(plain, token),
        logits=logits,
    )


@torch.inference_mode()
def generate(
    model: GPT,
    ids: Sequence[int],
    max_new_tokens: int,
    settings: SamplingSettings = SamplingSettings(),
    seed: int = 0,
    use_cache: bool = True,
) -> list[Step]:
    """Generate up to max_new_tokens after ids (stops at the context length).

    With use_cache the prompt runs once and each step feeds only the new token (KV cache);
    without it every step recomputes the whole sequence. Both give the same tokens.
    """
    if not ids:
        raise ValueError("Generation needs at least one prompt token.")
    generator = make_generator(seed)
    ids = list(ids)
    steps: list[Step] = []
    cache = KVCache.empty(model.config.n_layer) if use_cache else None
    feed = ids
    for _ in range(max(0, min(max_new_tokens, model.config.n_ctx - len(ids)))):
        if use_cache:
            logits = model(torch.tensor([feed]), cache=cache)[0, -1]
        else:
            logits = model(torch.tensor([ids]))[0, -1]
        step = choose(logits, settings, generator)
        steps.append(step)
        ids.append(step.token_id)
        feed = [step.token_id]
    return steps
