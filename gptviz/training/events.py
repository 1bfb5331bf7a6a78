"""What a training run reports, one small value per event (sent from the training worker to the page)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Progress:
    """After each step: the batch's loss, tokens per second so far, and the seconds left at that rate."""

    step: int
    max_iters: int
    loss: float
    tokens_per_s: float
    seconds_left: float


@dataclass(frozen=True)
class Evaluation:
    """Mean train and validation loss; for the induction task, the loss on the first copy and on the repeat."""

    step: int
    train: float
    val: float
    first_half: float | None = None
    repeat_half: float | None = None


@dataclass(frozen=True)
class Sample:
    step: int
    text: str


@dataclass(frozen=True)
class HeadSnapshot:
    """The heads at one step, on one probe sequence (random tokens repeated twice): patterns (L, nh, T, T),
    previous-token and induction scores (L, nh), the position table's cosine similarity (n_ctx, n_ctx)."""

    step: int
    ids: list[int]
    tokens: list[str]
    patterns: np.ndarray
    previous_token: np.ndarray
    induction: np.ndarray
    position_cosine: np.ndarray


@dataclass(frozen=True)
class Checkpoint:
    """The model at `step`, saved as a Hugging Face GPT-2 directory at `path`."""

    step: int
    path: str


@dataclass(frozen=True)
class Finished:
    """The run ended: at max_iters, or `stopped` by the user (it can resume)."""

    step: int
    stopped: bool


@dataclass(frozen=True)
class Failed:
    """The run could not go on; `message` says why."""

    message: str


Event = Progress | Evaluation | Sample | HeadSnapshot | Checkpoint | Finished | Failed
