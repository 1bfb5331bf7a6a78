"""Training speed and quality (issue 21): gptviz's training step next to the book's own loop, and the
shakespeare-char preset's validation loss at 2,000 steps (nanoGPT reports 1.88).

Throughput: the book's GPTModel (llms-from-scratch ch04) trained by its train_model_simple (ch05) and
gptviz's model trained by its train_step, on the same shape and batch (nanoGPT's baby GPT: 4 layers,
4 heads, 128 dims, context 64, batch 12, 65 tokens, no dropout; AdamW lr 1e-3), one torch thread, the
same random batches. Rounds alternate which goes first; a ratio is the median of per-round ratios
(tokens/s of gptviz over the book's), measured for the bare step (zero_grad, loss, backward, step) and
for the whole train_model_simple (its evaluation at step 0 and its sample at the epoch's end included).

    .venv/bin/python -m bench.train_bench            # throughput (~1 min) and the 2,000-step run (~3 min)
    .venv/bin/python -m bench.train_bench --quick    # throughput only, fewer rounds
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gptviz.model import GPT  # noqa: E402
from gptviz.training.data import RepeatData  # noqa: E402
from gptviz.training.loop import Run, make_optimizer, new_run, train, train_step  # noqa: E402
from gptviz.training.settings import PRESETS, gpt_config, init_weights  # noqa: E402

VOCAB = 65


class _IdsTokenizer:
    """What the book's generate_and_print_sample needs of a tokenizer, for random-token data."""

    def encode(self, text, allowed_special=None):
        return [i % VOCAB for i in range(len(text))]

    def decode(self, ids):
        return " ".join(map(str, ids))


def batches(n: int, settings, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    data = RepeatData(VOCAB, settings.n_ctx)
    return [data.batch("train", settings.batch_size, settings.n_ctx, gen) for _ in range(n)]


def book_model(settings):
    from llms_from_scratch.ch04 import GPTModel

    torch.manual_seed(0)
    cfg = dict(vocab_size=VOCAB, context_length=settings.n_ctx, emb_dim=settings.d_model, n_heads=settings.n_head,
               n_layers=settings.n_layer, drop_rate=0.0, qkv_bias=True)
    model = GPTModel(cfg)
    return model, torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)


def book_steps(model, optimizer, data) -> float:
    """The inner loop of train_model_simple, step by step (ch05's calc_loss_batch)."""
    from llms_from_scratch.ch05 import calc_loss_batch

    model.train()
    started = time.perf_counter()
    for x, y in data:
        optimizer.zero_grad()
        loss = calc_loss_batch(x, y, model, "cpu")
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def book_whole(model, optimizer, data) -> float:
    """train_model_simple itself, one epoch over `data` (evaluates once, at step 0, and samples at the end)."""
    from llms_from_scratch.ch05 import train_model_simple

    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        train_model_simple(model, data, data[:1], optimizer, "cpu", num_epochs=1, eval_freq=10**9, eval_iter=1,
                           start_context="Every effort", tokenizer=_IdsTokenizer())
    return time.perf_counter() - started


def ours(settings):
    gen = torch.Generator().manual_seed(0)
    model = GPT(gpt_config(settings, VOCAB))
    init_weights(model, gen)
    return Run(settings, None, None, model, make_optimizer(model, settings), gen)


def our_steps(run: Run, data) -> float:
    feed = iter(data)
    run.data = type("Fixed", (), {"batch": lambda self, *a: next(feed)})()
    started = time.perf_counter()
    for _ in data:
        train_step(run)
    return time.perf_counter() - started


def throughput(rounds: int, steps: int) -> dict:
    settings = PRESETS["shakespeare-char"]
    book, book_opt = book_model(settings)
    run = ours(settings)
    tokens = steps * settings.batch_size * settings.n_ctx
    ratios = {"step": [], "train_model_simple": []}
    rates = {"gptviz": [], "book step": [], "book train_model_simple": []}
    for r in range(rounds + 1):  # round 0 warms up
        data = batches(steps, settings, seed=r)
        order = [("gptviz", lambda: our_steps(run, data)), ("book step", lambda: book_steps(book, book_opt, data)),
                 ("book train_model_simple", lambda: book_whole(book, book_opt, data))]
        seconds = dict((name, fn()) for name, fn in (order if r % 2 else order[::-1]))
        if r == 0:
            continue
        for name, s in seconds.items():
            rates[name].append(tokens / s)
        ratios["step"].append(seconds["book step"] / seconds["gptviz"])
        ratios["train_model_simple"].append(seconds["book train_model_simple"] / seconds["gptviz"])
    return {"tokens_per_s": {k: statistics.median(v) for k, v in rates.items()},
            "ratio": {k: statistics.median(v) for k, v in ratios.items()}, "rounds": rounds, "steps": steps}


def shakespeare_run() -> dict:
    """The preset as the Train page runs it: val loss at every evaluation, and the wall time."""
    run = new_run(PRESETS["shakespeare-char"])
    evals = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        train(run, Path(directory), lambda e: evals.append(e) if type(e).__name__ == "Evaluation" else None)
    return {"val": [(e.step, round(e.val, 4)) for e in evals], "seconds": time.perf_counter() - started,
            "vocab": run.tokenizer.n_vocab}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = throughput(rounds=3 if args.quick else 7, steps=10 if args.quick else 30)
    print(f"## Training throughput (nanoGPT's baby GPT shape, batch 12 × 64 tokens, {args.threads} thread)\n")
    print("| loop | tokens/s (median) | gptviz ÷ book |")
    print("|---|---|---|")
    print(f"| gptviz train_step | {result['tokens_per_s']['gptviz']:,.0f} | |")
    print(f"| book: its step (calc_loss_batch, backward, AdamW) | {result['tokens_per_s']['book step']:,.0f} | "
          f"{result['ratio']['step']:.2f}× |")
    print(f"| book: train_model_simple | {result['tokens_per_s']['book train_model_simple']:,.0f} | "
          f"{result['ratio']['train_model_simple']:.2f}× |")
    print(f"\n({result['rounds']} rounds of {result['steps']} steps; ratio = median over rounds of the book's "
          "time over gptviz's, same batches)")
    if not args.quick:
        run = shakespeare_run()
        print(f"\n## shakespeare-char preset: validation loss (vocabulary {run['vocab']} characters), "
              f"{run['seconds'] / 60:.1f} min\n")
        print("| step | " + " | ".join(str(s) for s, _ in run["val"]) + " |")
        print("|---" * (len(run["val"]) + 1) + "|")
        print("| val loss | " + " | ".join(f"{v:.3f}" for _, v in run["val"]) + " |")


if __name__ == "__main__":
    main()
