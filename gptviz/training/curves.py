"""What the curves of a run say: where the phase change is, which snapshots to show."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gptviz.training.events import Evaluation

MIN_DROP = 1.0  # nats: a fall of the repeat's loss smaller than this is no phase change


def phase_change(evaluations: Sequence[Evaluation]) -> int | None:
    """The step at which the loss on the repeats falls fastest (the induction phase change), or None before
    it has fallen MIN_DROP nats from its start. The fall is measured over a window of 3 evaluations, so
    one noisy evaluation does not decide it; the step is the window's middle."""
    losses = np.array([e.repeat_half for e in evaluations if e.repeat_half is not None], dtype=float)
    steps = [e.step for e in evaluations if e.repeat_half is not None]
    if len(losses) < 4 or losses[0] - losses.min() < MIN_DROP:
        return None
    drops = losses[:-2] - losses[2:]  # fall over each window of 3 evaluations
    return steps[int(np.argmax(drops)) + 1]


def milestones(steps: Sequence[int], phase: int | None, count: int = 4) -> list[int]:
    """Up to `count` of `steps` to show side by side: the first, just before and after the phase change
    (if there is one), the last; else evenly spaced."""
    steps = sorted(steps)
    if len(steps) <= count:
        return steps
    if phase is not None:
        before = max((s for s in steps if s < phase), default=steps[0])
        after = min((s for s in steps if s > phase), default=steps[-1])
        chosen = sorted({steps[0], before, after, steps[-1]})
        if len(chosen) < count:  # fill in the middle of the biggest gap
            extra = [s for s in steps if s not in chosen]
            chosen = sorted(set(chosen) | set(extra[len(extra) // 2: len(extra) // 2 + count - len(chosen)]))
        return chosen
    picks = np.linspace(0, len(steps) - 1, count).round().astype(int)
    return [steps[i] for i in sorted(set(picks))]
