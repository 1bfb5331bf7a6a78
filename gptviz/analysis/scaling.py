"""How the cost of self-attention grows with the context length T, for a loaded model.

Per layer, attention compares every token with every earlier one: q·kᵀ and pattern·v are
each T²·d multiply-adds, 2·T²·d FLOPs (d = n_head · d_head), and the pattern is an (nh, T, T)
matrix.
The projections and the MLP cost a fixed amount per token, O(T·d²). So attention's share
grows with T, and past some length it dominates. A sliding-window (local) layer compares each
token with at most w keys: T·min(T, w) pairs, linear in T beyond w, if the kernel skips what
the mask hides (PyTorch's CPU kernel computes the whole T × T grid and masks it).

`analytic_costs` computes sizes and operation counts; `measure_scaling` times the parts of
one layer and a whole forward pass on random inputs of the model's own shapes, with the
model's own modules. Pure: no streamlit; a progress callback reports each size.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.profiler import ProfilerActivity, profile

from gptviz.config import GPTConfig
from gptviz.model import GPT, attend, attention_pattern, attention_scores

log = logging.getLogger(__name__)

FLOAT_BYTES = 4  # the patterns are float32
MAX_EAGER_BYTES = 256 << 20  # skip the eager path when one layer's (nh, T, T) pattern is bigger (it holds ~4)
Progress = Callable[[int, int, str], None]  # (sizes done, sizes in all, message)


def context_sizes(n_ctx: int, smallest: int = 16) -> list[int]:
    """Powers of two from `smallest` below n_ctx, then n_ctx itself: 16, 32, ..., n_ctx."""
    if n_ctx < 1:
        raise ValueError(f"n_ctx must be at least 1, not {n_ctx}.")
    sizes = []
    size = smallest
    while size < n_ctx:
        sizes.append(size)
        size *= 2
    return sizes + [n_ctx]


def rest_flops_per_token(config: GPTConfig) -> int:
    """Multiply-add FLOPs (2 per multiply-add) of one layer's projections and MLP for one token."""
    d, hs = config.d_model, config.d_head
    qkv = 2 * d * (config.n_head + 2 * config.n_kv_head) * hs
    out = 2 * config.n_head * hs * d
    mlp = 2 * d * config.d_mlp * (2 if config.mlp == "gelu" else 3)  # gated: gate, up, down
    return qkv + out + mlp


def attention_flops(config: GPTConfig, T: int, window: int | None = None) -> int:
    """FLOPs of one layer's q·kᵀ and pattern·v over its (T, K) grid, K = T, or min(T, window) keys
    per query in a sliding-window layer: 2 · 2·T·K·d."""
    keys = T if window is None else min(T, window)
    return 4 * T * keys * config.n_head * config.d_head


def crossover_length(config: GPTConfig) -> float:
    """The T where one layer's attention FLOPs (4·T²·d) equal its projections and MLP (T · per token)."""
    return rest_flops_per_token(config) / (4 * config.n_head * config.d_head)


def analytic_costs(config: GPTConfig, sizes: list[int]) -> pd.DataFrame:
    """Computed (not measured) per T: pattern bytes per layer (nh·T·T·4) and for all layers,
    one global layer's FLOPs for attention and for the rest (projections + MLP), and attention's
    FLOPs summed over all layers, each with its own window (`attention_flops`). A model with
    sliding-window layers also gets attention_flops_local_layer: one local layer's."""
    T = np.asarray(sizes, dtype=np.int64)
    per_layer = config.n_head * T * T * FLOAT_BYTES
    flops = lambda window: np.array([attention_flops(config, int(t), window) for t in T], dtype=np.int64)
    frame = pd.DataFrame({
        "T": T,
        "pattern_bytes_layer": per_layer,
        "pattern_bytes_model": per_layer * config.n_layer,
        "attention_flops_layer": flops(None),
        "rest_flops_layer": T * rest_flops_per_token(config),
        "attention_flops_model": sum(flops(config.window(layer)) for layer in range(config.n_layer)),
    })
    if config.has_sliding_layers:
        frame["attention_flops_local_layer"] = flops(config.sliding_window)
    return frame


def peak_allocated(fn: Callable[[], object]) -> int:
    """Peak bytes PyTorch allocates on the CPU while fn runs (torch.profiler with profile_memory:
    each op's allocations and frees, replayed in time order). Counts every thread's tensors."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def best_time(fn: Callable[[], object], min_total: float = 0.2, max_repeats: int = 10) -> float:
    """Seconds of one call of fn: the fastest of up to max_repeats calls (stops after min_total s), after
    one untimed call that warms up (allocations, kernel selection, caches)."""
    fn()
    times: list[float] = []
    while len(times) < max_repeats and sum(times) < min_total:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@torch.inference_mode()
def measure_size(model: GPT, T: int, generator: torch.Generator, max_eager_bytes: int = MAX_EAGER_BYTES) -> dict:
    """Time one layer's parts and one forward pass at context length T (random inputs, batch 1),
    and the peak memory PyTorch allocates for one layer's attention, fused and eager. Attention
    is timed as in a global layer; a model with sliding-window layers also gets
    attention_local_fused_s, the fused kernel with its window's mask."""
    config = model.config
    nh, n_kv, hs, C = config.n_head, config.n_kv_head, config.d_head, config.d_model
    block = model.blocks[0]
    q = torch.randn(1, nh, T, hs, generator=generator)  # (B, nh, T, hs)
    k = torch.randn(1, n_kv, T, hs, generator=generator)  # (B, n_kv, T, hs)
    v = torch.randn(1, n_kv, T, hs, generator=generator)
    x = torch.randn(1, T, C, generator=generator)  # (B, T, C) a layer's input
    y = torch.randn(1, T, nh * hs, generator=generator)  # (B, T, nh·hs) the heads' merged context vectors
    rotary = model.rotary(torch.arange(T))[0]
    idx = torch.randint(0, config.vocab_size, (1, T), generator=generator)

    def fused(window: int | None = None) -> torch.Tensor:  # what the model runs (fused unless it soft-caps)
        return attend(q, k, v, config.scale, window, config.attn_softcap)

    def eager() -> torch.Tensor:  # the textbook path: the (nh, T, T) pattern is materialised
        pattern = attention_pattern(attention_scores(q[0], k[0]), config.scale, softcap=config.attn_softcap)
        return pattern @ v[0].repeat_interleave(nh // n_kv, dim=0)  # (nh, T, hs)

    def rest() -> torch.Tensor:  # everything else in the layer: norms, projections, MLP
        block.attn.project(block.norm1(x), rotary)
        h = x + block.post_attn_norm(block.attn.out_proj(y))
        return h + block.post_mlp_norm(block.mlp(block.norm2(h)))

    row = {"T": T, "attention_fused_s": best_time(fused), "attention_eager_s": math.nan,
           "rest_of_layer_s": best_time(rest), "peak_bytes_fused": float(peak_allocated(fused)),
           "peak_bytes_eager": math.nan}
    if config.has_sliding_layers:
        row["attention_local_fused_s"] = best_time(lambda: fused(config.sliding_window))
    if nh * T * T * FLOAT_BYTES <= max_eager_bytes:
        row["attention_eager_s"] = best_time(eager)
        row["peak_bytes_eager"] = float(peak_allocated(eager))
    row["forward_s"] = best_time(lambda: model(idx), max_repeats=3)
    return row


def estimate_cost(sizes: list[int], costs: list[float], T: int) -> float:
    """Seconds the next size T should take: the last cost scaled by (T / T_last)^p, p the growth
    seen between the last two sizes, kept within [1, 2] (linear to quadratic); p = 2 at first."""
    if not sizes:
        return 0.0
    power = 2.0
    if len(sizes) > 1 and costs[-2] > 0 and sizes[-1] > sizes[-2]:
        power = min(2.0, max(1.0, math.log(costs[-1] / costs[-2]) / math.log(sizes[-1] / sizes[-2])))
    return costs[-1] * (T / sizes[-1]) ** power


def measure_scaling(
    model: GPT,
    sizes: list[int],
    budget_s: float = 60.0,
    progress: Progress | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Measure attention's cost at each context length in `sizes` (ascending), within budget_s.

    The first size always runs; a later one runs only if the time so far plus an estimate of
    its cost (estimate_cost) fits the budget. Returns one row per measured size, the columns
    of `analytic_costs` plus, measured, in seconds:
    attention_fused_s (scores + softmax + weighted sum, one layer, all heads, the model's fused
    kernel), attention_eager_s (the same with the (nh, T, T) pattern materialised; NaN when
    that is over MAX_EAGER_BYTES), attention_local_fused_s (models with sliding-window layers only:
    the fused kernel with the window's mask), rest_of_layer_s (norms, projections, MLP of one layer),
    forward_s (the whole model); and, measured in bytes, peak_bytes_fused and peak_bytes_eager
    (the most memory PyTorch held at once during one layer's attention, see peak_allocated).
    df.attrs: budget_s, elapsed_s, stopped_before (first T not measured, or None), threads.
    """
    if not sizes or any(T < 1 or T > model.config.n_ctx for T in sizes):
        raise ValueError(f"Context sizes must be between 1 and n_ctx={model.config.n_ctx}, got {sizes}.")
    sizes = sorted(set(int(T) for T in sizes))
    generator = torch.Generator().manual_seed(seed)
    rows: list[dict] = []
    costs: list[float] = []
    start = time.perf_counter()
    stopped_before = None
    for i, T in enumerate(sizes):
        elapsed = time.perf_counter() - start
        estimate = estimate_cost([row["T"] for row in rows], costs, T)
        if rows and elapsed + estimate > budget_s:
            stopped_before = T
            log.info("Scaling run stopped before T=%d (%.1f s used, next ~%.1f s)", T, elapsed, estimate)
            break
        if progress is not None:
            progress(i, len(sizes), f"Measuring T = {T:,}…")
        size_start = time.perf_counter()
        rows.append(measure_size(model, T, generator))
        costs.append(time.perf_counter() - size_start)
    if progress is not None:
        progress(len(rows), len(sizes), "Done" if stopped_before is None else f"Stopped before T = {stopped_before:,}")
    measured = pd.DataFrame(rows)
    frame = analytic_costs(model.config, [row["T"] for row in rows]).merge(measured, on="T")
    frame.attrs.update(budget_s=float(budget_s), elapsed_s=time.perf_counter() - start,
                       stopped_before=stopped_before, threads=torch.get_num_threads())
    return frame
