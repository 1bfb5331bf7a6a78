"""The training loop, as the book's train_model_simple and nanoGPT's train.py write it: a batch, the
loss, backward, a clipped AdamW step; its evaluation, samples, head snapshots and checkpoints each one
small function. What happens is reported as events (gptviz/training/events.py) to one callback.
"""
from __future__ import annotations

import math
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gptviz.analysis.heads import induction_scores, previous_token_scores
from gptviz.model import GPT
from gptviz.sampling import SamplingSettings, choose
from gptviz.tokenizer import Tokenizer, char_tokenizer
from gptviz.trace import trace
from gptviz.training.data import RepeatData, TextData, shakespeare_text, text_tokenizer
from gptviz.training.events import Checkpoint, Evaluation, Event, Finished, HeadSnapshot, Progress, Sample
from gptviz.training.settings import TrainSettings, gpt_config, init_weights, vocab_size_for
from gptviz.weights.save import save_hf_dir

STATE_FILE = "train_state.pt"  # model, optimizer, step and generator: what resuming needs
SAMPLE_TOKENS = 200
PROBE_MAX_TOKENS = 64  # the snapshot's patterns: (L, nh, T, T) on at most this many tokens


def induction_tokenizer(vocab: int) -> Tokenizer:
    """Names for the induction task's abstract tokens: the base64 alphabet (0-9, A-Z, a-z, +, /), then
    Latin letters beyond it, so a prompt on any page can be typed."""
    alphabet = string.digits + string.ascii_uppercase + string.ascii_lowercase + "+/"
    chars = [alphabet[i] if i < len(alphabet) else chr(0x100 + i) for i in range(vocab)]
    return char_tokenizer(chars, name=f"{vocab} random tokens")


@dataclass
class Run:
    """Everything a run holds while it trains: its settings, data, model and optimizer, the step it
    is at, the tokens it has seen, and the generator every random draw (batches, dropout, samples) uses."""

    settings: TrainSettings
    data: TextData | RepeatData
    tokenizer: Tokenizer
    model: GPT
    optimizer: torch.optim.Optimizer
    gen: torch.Generator
    step: int = 0
    tokens_seen: int = 0


def prepare_data(settings: TrainSettings) -> tuple[TextData | RepeatData, Tokenizer]:
    if settings.corpus == "induction":
        return RepeatData(settings.vocab, settings.n_ctx), induction_tokenizer(settings.vocab)
    text = shakespeare_text() if settings.corpus == "shakespeare" else settings.text
    tokenizer = text_tokenizer(text, settings.tokenizer)
    return TextData.from_text(text, tokenizer, settings.n_ctx), tokenizer


def new_run(settings: TrainSettings) -> Run:
    """A fresh model (nanoGPT's initialisation, seeded) and AdamW (weight decay on matrices only)."""
    data, tokenizer = prepare_data(settings)
    gen = torch.Generator().manual_seed(settings.seed)
    model = GPT(gpt_config(settings, vocab_size_for(settings, tokenizer.n_vocab)), tokenizer)
    init_weights(model, gen)
    return Run(settings, data, tokenizer, model, make_optimizer(model, settings), gen)


def make_optimizer(model: GPT, settings: TrainSettings) -> torch.optim.AdamW:
    """AdamW; weights of 2 or more dims decay, biases, norms and nothing else do not (nanoGPT)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": settings.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=settings.lr, betas=(0.9, settings.beta2))


def lr_at(step: int, s: TrainSettings) -> float:
    """Linear warmup for s.warmup steps, then cosine from lr down to min_lr at max_iters (nanoGPT)."""
    if step < s.warmup:
        return s.lr * (step + 1) / (s.warmup + 1)
    progress = min(1.0, (step - s.warmup) / max(1, s.max_iters - s.warmup))
    return s.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (s.lr - s.min_lr)


def token_losses(model: GPT, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every next-token prediction: x, y (B, T) -> (B, T)."""
    logits = model(x)  # (B, T, vocab)
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y)


def train_step(run: Run) -> float:
    """One optimizer step on one batch; the batch's mean loss."""
    s = run.settings
    run.model.train()
    for group in run.optimizer.param_groups:
        group["lr"] = lr_at(run.step, s)
    x, y = run.data.batch("train", s.batch_size, s.n_ctx, run.gen)
    if s.dropout:  # dropout draws from the global generator: seed it from the run's own stream
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=run.gen)))
    loss = token_losses(run.model, x, y).mean()
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if s.grad_clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), s.grad_clip)
    run.optimizer.step()
    run.step += 1
    run.tokens_seen += x.numel()
    return loss.item()


@torch.no_grad()
def evaluate(run: Run) -> Evaluation:
    """Mean loss over eval_iters batches of each split (nanoGPT's estimate_loss), in eval mode; for the
    induction task also the loss on the first copy and on the repeat (its predictable part)."""
    s = run.settings
    run.model.eval()
    means, halves = {}, {}
    for split in ("train", "val"):
        batches = (run.data.batch(split, s.batch_size, s.n_ctx, run.gen) for _ in range(s.eval_iters))
        means[split] = float(torch.stack([token_losses(run.model, x, y).mean() for x, y in batches]).mean())
    if isinstance(run.data, RepeatData):
        first, repeat = [], []
        for _ in range(s.eval_iters):
            x, y, period = run.data.batch_with_period(s.batch_size, run.gen)
            losses = token_losses(run.model, x, y)  # (B, T)
            before, after = run.data.halves(period)
            first.append(losses[:, before].mean())
            repeat.append(losses[:, after].mean())
        halves = {"first_half": float(torch.stack(first).mean()), "repeat_half": float(torch.stack(repeat).mean())}
    return Evaluation(step=run.step, train=means["train"], val=means["val"], **halves)


@torch.no_grad()
def sample(run: Run, n_tokens: int = SAMPLE_TOKENS) -> Sample:
    """n_tokens sampled at temperature 0.8 with top-k 200 (nanoGPT's sample.py), each step reading the
    last n_ctx tokens (the book's generate), starting from a newline (or token 0)."""
    run.model.eval()
    first = run.tokenizer.encode("\n") if isinstance(run.data, TextData) else [0]
    ids = list(first)
    settings = SamplingSettings(temperature=0.8, top_k=200)
    for _ in range(n_tokens):
        logits = run.model(torch.tensor([ids[-run.settings.n_ctx:]]))[0, -1]
        ids.append(choose(logits, settings, run.gen).token_id)
    return Sample(step=run.step, text=run.tokenizer.decode(ids[len(first):]))


def probe_ids(run: Run) -> tuple[list[int], int]:
    """(ids, period): the sequence every head snapshot reads, the same at every step: distinct tokens
    (the induction task's, or ones the text model has seen) repeated twice, so previous-token and
    induction heads both show; period = 3/8 of the context (at most PROBE_MAX_TOKENS tokens in all)."""
    gen = torch.Generator().manual_seed(run.settings.seed + 1)
    pool = torch.arange(run.tokenizer.n_vocab) if isinstance(run.data, RepeatData) else torch.unique(run.data.val)
    period = min(len(pool), 3 * min(PROBE_MAX_TOKENS, run.settings.n_ctx) // 8)
    block = pool[torch.randperm(len(pool), generator=gen)[:period]].tolist()
    return block + block, period


@torch.no_grad()
def snapshot(run: Run) -> HeadSnapshot:
    """Every head's pattern on the probe sequence (L, nh, T, T), its previous-token and induction
    scores (L, nh), and the learned position table's cosine similarity (n_ctx, n_ctx)."""
    run.model.eval()
    ids, period = probe_ids(run)
    tr = trace(run.model, ids)
    patterns = torch.stack([tr.patterns(layer) for layer in range(tr.n_layer)])  # (L, nh, T, T)
    pos = F.normalize(run.model.pos_emb.weight, dim=-1)  # (n_ctx, C)
    return HeadSnapshot(
        step=run.step, ids=ids, tokens=run.tokenizer.token_strings(ids), patterns=patterns.numpy(),
        previous_token=np.stack([previous_token_scores(p) for p in patterns]),
        induction=np.stack([induction_scores(p, period) for p in patterns]),
        position_cosine=(pos @ pos.T).numpy(),
    )


def save_state(run: Run, directory: Path) -> None:
    """What resuming needs, as tensors and plain values (torch.load(weights_only=True) reads it back)."""
    torch.save({"settings": run.settings.to_dict(), "model": run.model.state_dict(),
                "optimizer": run.optimizer.state_dict(), "step": run.step, "tokens_seen": run.tokens_seen,
                "generator": run.gen.get_state()}, directory / STATE_FILE)


def checkpoint(run: Run, directory: Path) -> Checkpoint:
    """The model at this step as a Hugging Face GPT-2 directory (config.json, model.safetensors, its
    tokenizer) under directory/step-N, and the state to resume from in directory."""
    path = directory / f"step-{run.step}"
    save_hf_dir(run.model, path)
    save_state(run, directory)
    return Checkpoint(step=run.step, path=str(path))


def resume(directory: Path) -> Run:
    """The run saved in directory, ready to continue where it stopped."""
    state = torch.load(directory / STATE_FILE, weights_only=True)
    run = new_run(TrainSettings.from_dict(state["settings"]))
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.gen.set_state(state["generator"])
    run.step, run.tokens_seen = state["step"], state["tokens_seen"]
    return run


def train(run: Run, directory: Path, report: Callable[[Event], None],
          should_stop: Callable[[], bool] = lambda: False, max_iters: int | None = None) -> Run:
    """Train until max_iters (the settings' unless given) or until should_stop() says so; report every
    step's progress, and evaluations, samples, snapshots and checkpoints at their intervals (a snapshot
    with each evaluation; all of them, and a checkpoint, at the first and the last step)."""
    s = run.settings
    end = max_iters or s.max_iters
    directory.mkdir(parents=True, exist_ok=True)
    if run.step == 0:
        report(evaluate(run))
        report(snapshot(run))
        report(checkpoint(run, directory))
    started, start_step = time.perf_counter(), run.step
    while run.step < end:
        loss = train_step(run)
        elapsed = time.perf_counter() - started
        rate = (run.step - start_step) / elapsed
        report(Progress(step=run.step, max_iters=end, loss=loss, tokens_per_s=rate * s.batch_size * s.n_ctx,
                        seconds_left=(end - run.step) / rate))
        last = run.step == end
        if run.step % s.eval_interval == 0 or last:
            report(evaluate(run))
            report(snapshot(run))
        if run.step % s.sample_interval == 0 or last:
            report(sample(run))
        saved = run.step % s.checkpoint_interval == 0 or last
        if saved:
            report(checkpoint(run, directory))
        if should_stop() and not last:
            if not saved:
                report(checkpoint(run, directory))
            report(Finished(step=run.step, stopped=True))
            return run
    report(Finished(step=run.step, stopped=False))
    return run
