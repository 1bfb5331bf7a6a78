"""How long a run will take on this machine, before it starts: its FLOPs per step over this machine's rate,
measured once per process as the median of a few steps of nanoGPT's baby GPT (within ~30% of the measured
time from the induction preset's 0.1M parameters to the baby GPT's 0.8M, one thread)."""
from __future__ import annotations

import functools
import statistics
import time

import torch

from gptviz.model import GPT
from gptviz.training.data import RepeatData
from gptviz.training.loop import Run, make_optimizer, train_step
from gptviz.training.settings import PRESETS, TrainSettings, gpt_config, train_flops_per_step

CALIBRATION_STEPS = 5


def _seconds_per_step(settings: TrainSettings, vocab_size: int) -> float:
    """Median time of CALIBRATION_STEPS steps (after one warm-up) on random tokens, at the settings' shape."""
    gen = torch.Generator().manual_seed(0)
    model = GPT(gpt_config(settings, vocab_size))
    run = Run(settings, RepeatData(vocab_size, settings.n_ctx), None, model, make_optimizer(model, settings), gen)
    train_step(run)
    times = []
    for _ in range(CALIBRATION_STEPS):
        started = time.perf_counter()
        train_step(run)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@functools.cache
def machine_flops() -> float:
    """FLOP/s of a training step here: nanoGPT's baby GPT (65 characters), timed."""
    settings = PRESETS["shakespeare-char"]
    return train_flops_per_step(settings, gpt_config(settings, 65)) / _seconds_per_step(settings, 65)


def estimate_seconds(settings: TrainSettings, vocab_size: int) -> float:
    """Seconds for the whole run: every step, and every evaluation's 2·eval_iters forward passes (≈ 1/3 of
    a step each)."""
    step = train_flops_per_step(settings, gpt_config(settings, vocab_size)) / machine_flops()
    evals = settings.max_iters // settings.eval_interval + 1
    return settings.max_iters * step + evals * 2 * settings.eval_iters * step / 3
