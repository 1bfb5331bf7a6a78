"""What a training run is: the model (the book's GPT-2 block at a chosen size), the data, the optimizer
and the schedule, as one frozen value; the presets; the model's GPTConfig and initial weights.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Literal

import torch
from torch import nn

from gptviz.config import GPTConfig
from gptviz.model import GPT

Corpus = Literal["shakespeare", "text", "induction"]


@dataclass(frozen=True)
class TrainSettings:
    """One training run.

    Model: the book's GPT-2 block (learned positions, LayerNorm, GELU MLP of 4·d_model, dropout) with
    n_layer blocks of n_head heads, d_model wide, reading n_ctx tokens; attention_only drops the MLPs
    (d_mlp = 0: each block is attention alone). Data: corpus "shakespeare" (the plays), "text" (`text`),
    tokenized by "char" or "gpt2"; or "induction" (random tokens from `vocab`, repeated twice, filling
    n_ctx). Optimizer: AdamW (betas 0.9, beta2), lr warmed up for `warmup` steps, then cosine-decayed to
    min_lr at max_iters (nanoGPT's schedule; min_lr = lr keeps it constant); gradients clipped at grad_clip.
    Every eval_interval steps: train and val loss over eval_iters batches; every sample_interval a sample;
    every checkpoint_interval a checkpoint (also at the end).
    """

    name: str = "my model"
    corpus: Corpus = "shakespeare"
    text: str = ""
    tokenizer: Literal["char", "gpt2"] = "char"
    vocab: int = 64
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    n_ctx: int = 64
    attention_only: bool = False
    dropout: float = 0.0
    tie_embeddings: bool = True
    batch_size: int = 12
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 100
    weight_decay: float = 0.1
    beta2: float = 0.99
    grad_clip: float = 1.0
    max_iters: int = 2000
    eval_interval: int = 250
    eval_iters: int = 20
    sample_interval: int = 500
    checkpoint_interval: int = 500
    seed: int = 1337

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} must be a multiple of n_head={self.n_head}.")
        if self.corpus == "induction" and self.n_ctx % 2:
            raise ValueError(f"The induction task repeats half the context: n_ctx={self.n_ctx} must be even.")
        for name in ("n_layer", "n_head", "d_model", "n_ctx", "batch_size", "max_iters", "eval_interval",
                     "eval_iters", "sample_interval", "checkpoint_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}.")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}.")
        if self.corpus == "text" and not self.text.strip():
            raise ValueError("Paste or upload a text to train on.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainSettings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


PRESETS: dict[str, TrainSettings] = {
    # nanoGPT's config/train_shakespeare_char.py with its CPU "baby GPT" overrides (README): 4 layers,
    # 4 heads, 128 dims, context 64, batch 12, lr 1e-3 decayed to 1e-4 over 2,000 iterations, no dropout.
    "shakespeare-char": TrainSettings(name="shakespeare-char"),
    # A 2-layer attention-only transformer on a random block repeated to fill the context (Olsson et al.
    # 2022): the loss on the repeats stays near ln 64 until a previous-token head (layer 0) and an
    # induction head (layer 1) form together, then falls towards 0. Adam, constant lr 1e-3.
    "induction": TrainSettings(
        name="induction", corpus="induction", vocab=64, n_layer=2, n_head=4, d_model=64, n_ctx=48,
        attention_only=True, tie_embeddings=False, batch_size=32, lr=1e-3, min_lr=1e-3, warmup=0, weight_decay=0.0,
        beta2=0.999, grad_clip=0.0, max_iters=1000, eval_interval=10, eval_iters=4, sample_interval=200,
        checkpoint_interval=100,
    ),
    # The book's GPT-2 block with its dropout, small enough for a CPU, on GPT-2's BPE.
    "book-gpt2-bpe": TrainSettings(
        name="book GPT (BPE)", tokenizer="gpt2", n_layer=4, n_head=4, d_model=128, n_ctx=128, dropout=0.1,
        tie_embeddings=False, batch_size=8, lr=4e-4, min_lr=4e-5, max_iters=1000, eval_interval=100,
        sample_interval=250, checkpoint_interval=250,
    ),
}


def gpt_config(settings: TrainSettings, vocab_size: int) -> GPTConfig:
    """The book's GPT-2 block at the settings' size; attention_only: d_mlp 0 and no MLP bias, so each MLP
    adds exactly 0 (the block is attention alone)."""
    return GPTConfig(
        arch="gpt2", vocab_size=vocab_size, n_ctx=settings.n_ctx, d_model=settings.d_model, n_layer=settings.n_layer,
        n_head=settings.n_head, n_kv_head=settings.n_head, d_mlp=0 if settings.attention_only else 4 * settings.d_model,
        norm_eps=1e-5, norm="layernorm", positional="learned", mlp="gelu", gelu="tanh", qkv_bias=True, out_bias=True,
        mlp_bias=not settings.attention_only, tie_embeddings=settings.tie_embeddings, dropout=settings.dropout,
        name=settings.name,
    )


def init_weights(model: GPT, gen: torch.Generator) -> None:
    """nanoGPT's initialisation: every weight N(0, 0.02), biases 0, norms 1; the projections that write
    into the residual stream (attention's out_proj, the MLP's fc_out) N(0, 0.02 / sqrt(2·n_layer))."""
    std_out = 0.02 / math.sqrt(2 * model.config.n_layer)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                std = std_out if name.endswith(("out_proj", "fc_out")) else 0.02
                module.weight.normal_(0.0, std, generator=gen)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()


def vocab_size_for(settings: TrainSettings, n_vocab: int) -> int:
    """The embedding rows: the tokenizer's vocabulary (the induction task's `vocab`)."""
    return settings.vocab if settings.corpus == "induction" else n_vocab


def n_params(config: GPTConfig) -> int:
    """Parameters of GPT(config), the position table included and a tied head counted once."""
    with torch.device("meta"):
        return sum(p.numel() for p in GPT(config).parameters())


def train_flops_per_step(settings: TrainSettings, config: GPTConfig) -> float:
    """Multiply-adds × 2 of one step, forward and backward (≈ 3× forward): 6·N·tokens for the weights
    (N without the embedding tables, which are looked up, not multiplied, but with the output head) plus
    attention's scores and weighted sum, 12·L·T·T·d per sequence (Kaplan et al. 2020, nanoGPT's estimate)."""
    tokens = settings.batch_size * settings.n_ctx
    matmul = n_params(config) - config.vocab_size * config.d_model - config.n_ctx * config.d_model
    matmul += config.vocab_size * config.d_model  # the output head multiplies, tied or not
    attention = 12 * config.n_layer * settings.n_ctx * settings.n_ctx * config.d_model * settings.batch_size / 2
    return 6 * matmul * tokens + attention
