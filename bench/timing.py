"""The timing harness, shared by bench.py and the TransformerLens peer (imports only torch).

Cases run round-robin, the order rotated every round, so a burst of load from elsewhere on
the machine hits every case alike; a case's ratio is the median over rounds of its time
divided by the baseline's time in the same round.
"""
from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass
class Case:
    """run(state) is timed; setup() (untimed) makes its state, e.g. a fresh KV cache."""

    run: Callable
    setup: Callable = lambda: None


FLUSH_BYTES = 64 * 2**20  # more than any last-level cache here: every timed run starts with cold CPU caches
_flush_buffer: list[torch.Tensor] = []


def flush_cpu_caches() -> None:
    """Write and read a buffer larger than the CPU caches, so a case's setup (e.g. copying a KV
    cache) does not leave its data hot for the timed run."""
    if not _flush_buffer:
        _flush_buffer.append(torch.empty(FLUSH_BYTES // 4))
    _flush_buffer[0].fill_(1.0)
    _flush_buffer[0].sum()


@dataclass
class Timing:
    """Seconds per round of one case: wall clock and this process's CPU time."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def time_cases(named: dict[str, Case], repeats: int, warmup: int = 1) -> dict[str, Timing]:
    """Run every case `warmup` times, then `repeats` rounds of all cases in a rotated order.
    Only Case.run is timed, on cold CPU caches; its result is dropped outside the timed region."""
    names = list(named)
    timings = {name: Timing() for name in names}
    with torch.inference_mode():
        for _ in range(warmup):
            for case in named.values():
                case.run(case.setup())
        for r in range(repeats):
            for name in names[r % len(names):] + names[: r % len(names)]:
                case = named[name]
                state = case.setup()
                gc.collect()
                flush_cpu_caches()
                c0, w0 = time.process_time(), time.perf_counter()
                out = case.run(state)
                w1, c1 = time.perf_counter(), time.process_time()
                del out, state
                timings[name].wall.append(w1 - w0)
                timings[name].cpu.append(c1 - c0)
    return timings


def summarise(timings: dict[str, Timing], baseline: str) -> dict[str, dict[str, float]]:
    """Per case: median ms (wall, CPU) and the median over rounds of its ratio to the baseline."""
    base = timings[baseline]
    return {
        name: {
            "ms": statistics.median(t.wall) * 1e3,
            "cpu_ms": statistics.median(t.cpu) * 1e3,
            "ratio": statistics.median(a / b for a, b in zip(t.wall, base.wall)),
            "cpu_ratio": statistics.median(a / b for a, b in zip(t.cpu, base.cpu)),
            "n": len(t.wall),
        }
        for name, t in timings.items()
    }


def combine(timings: dict[str, Timing], parts: tuple[str, ...]) -> Timing:
    """A case made of others run one after another: per-round sums."""
    return Timing(wall=[sum(x) for x in zip(*(timings[p].wall for p in parts))],
                  cpu=[sum(x) for x in zip(*(timings[p].cpu for p in parts))])
