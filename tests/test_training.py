"""Training: the data, the loop (the book's block learning, stop and resume exactly), saving in GPT-2's
layout that transformers opens, the worker queue, and an induction head forming."""
from __future__ import annotations

import json
import math
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

import gptviz
from gptviz.training.curves import milestones, phase_change
from gptviz.training.data import DataError, RepeatData, TextData, shakespeare_text, text_tokenizer
from gptviz.training.events import Checkpoint, Evaluation, Finished, HeadSnapshot, Progress, Sample
from gptviz.training.loop import lr_at, new_run, resume, train
from gptviz.training.settings import PRESETS, TrainSettings, gpt_config, n_params
from gptviz.training.worker import TrainingJob, TrainingQueue
from numerics import assert_close

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 60
TINY = TrainSettings(name="tiny", corpus="text", text=TEXT, n_layer=2, n_head=2, d_model=32, n_ctx=16, batch_size=4,
                     max_iters=12, eval_interval=4, eval_iters=2, sample_interval=6, checkpoint_interval=6, warmup=2,
                     lr=1e-2, min_lr=1e-3)


def collect(run, directory, **kwargs):
    events = []
    train(run, directory, events.append, **kwargs)
    return events


def test_repeat_data_blocks_and_halves():
    data = RepeatData(vocab=64, n_ctx=48)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        x, y, period = data.batch_with_period(8, gen)
        assert x.shape == y.shape == (8, 48) and 12 <= period <= 24
        assert torch.equal(y[:, :-1], x[:, 1:])  # y is x shifted by one
        assert torch.equal(x[:, period:], x[:, :48 - period])  # the block repeats with its period
        first, repeat = data.halves(period)
        # every repeat target is the token after the previous copy of its input: induction predicts it
        for t in range(repeat.start, repeat.stop):
            assert torch.equal(y[:, t], x[:, t - period + 1])
        assert first.stop == period - 1


def test_text_data_split_and_batches():
    tok = text_tokenizer(TEXT, "char")
    data = TextData.from_text(TEXT, tok, n_ctx=16)
    assert len(data.val) == int(len(TEXT) * 0.1) and len(data.train) + len(data.val) == len(TEXT)
    x, y = data.batch("train", 5, 16, torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (5, 16) and torch.equal(x[:, 1:], y[:, :-1])
    with pytest.raises(DataError, match="longer text"):
        TextData.from_text("hear me speak", tok, n_ctx=16)


def test_shakespeare_ships_offline():
    text = shakespeare_text()
    assert len(text) > 4_000_000 and "To be, or not to be" in text


def test_lr_schedule_warms_up_then_decays_to_min():
    s = replace(TINY, lr=1e-3, min_lr=1e-4, warmup=10, max_iters=110)
    assert lr_at(0, s) < lr_at(9, s) < s.lr
    assert_close(lr_at(10, s), s.lr, rtol=1e-12)  # the cosine starts at lr
    assert_close(lr_at(60, s), (s.lr + s.min_lr) / 2, rtol=1e-12)  # half-way: the mean
    assert_close(lr_at(110, s), s.min_lr, rtol=1e-12)


def test_model_is_the_books_block():
    config = gpt_config(PRESETS["shakespeare-char"], 65)
    assert (config.norm, config.positional, config.mlp, config.d_mlp) == ("layernorm", "learned", "gelu", 4 * 128)
    # nanoGPT's baby GPT: 0.80M parameters with the 65-character vocabulary, tied head, and biases
    assert n_params(config) == 65 * 128 + 64 * 128 + 4 * (12 * 128 * 128 + 13 * 128) + 2 * 128
    only = gpt_config(PRESETS["induction"], 64)
    assert only.d_mlp == 0 and not only.mlp_bias


def test_training_lowers_the_loss_and_reports(tmp_path):
    run = new_run(TINY)
    events = collect(run, tmp_path)
    evals = [e for e in events if isinstance(e, Evaluation)]
    assert [e.step for e in evals] == [0, 4, 8, 12]
    assert_close(evals[0].val, math.log(run.tokenizer.n_vocab), rtol=0.1)  # an untrained model: near guessing
    assert evals[-1].train < evals[0].train - 0.5
    assert [e.step for e in events if isinstance(e, Checkpoint)] == [0, 6, 12]
    assert [e.step for e in events if isinstance(e, Sample)] == [6, 12]
    assert [e.step for e in events if isinstance(e, Progress)] == list(range(1, 13))
    snap = next(e for e in events if isinstance(e, HeadSnapshot))
    T = len(snap.ids)
    assert snap.patterns.shape == (2, 2, T, T) and snap.position_cosine.shape == (16, 16)
    assert_close(snap.patterns.sum(-1), np.ones((2, 2, T)), ulps=16)  # rows of a softmax
    assert isinstance(events[-1], Finished) and not events[-1].stopped


def test_stop_and_resume_continue_exactly(tmp_path):
    """10 steps straight equal 4 steps, a stop, and a resume from the saved state (same batches,
    same weights): the generator and the optimizer are part of the state."""
    straight = new_run(replace(TINY, max_iters=10))
    collect(straight, tmp_path / "a")
    first = new_run(replace(TINY, max_iters=10))
    stops = iter([False, False, False, True])
    events = collect(first, tmp_path / "b", should_stop=lambda: next(stops, True))
    assert isinstance(events[-1], Finished) and events[-1].stopped and first.step == 4
    again = resume(tmp_path / "b")
    assert again.step == 4
    collect(again, tmp_path / "b")
    for (name, a), b in zip(straight.model.state_dict().items(), again.model.state_dict().values()):
        assert_close(b, a, ulps=0, what=name)  # the same steps, the same arithmetic


@pytest.mark.parametrize("tied, attention_only", [(True, False), (False, True)])
def test_checkpoints_open_in_transformers_and_gptviz(tmp_path, tied, attention_only):
    import transformers

    run = new_run(replace(TINY, tie_embeddings=tied, attention_only=attention_only, max_iters=4))
    events = collect(run, tmp_path)
    path = [e for e in events if isinstance(e, Checkpoint)][-1].path
    config = json.loads((tmp_path / "step-4" / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["tie_word_embeddings"] == tied
    ids = torch.tensor([run.tokenizer.encode("Before we proce")])  # 15 tokens of a context of 16
    run.model.eval()
    with torch.no_grad():
        ours = run.model(ids)[0]
        hf = transformers.GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()
        theirs = hf(ids).logits[0]
    assert_close(theirs, ours, rtol=1e-5, ulps=64)  # transformers' kernels, float32
    loaded = gptviz.load_model(path)
    assert loaded.tokenizer.decode(loaded.tokenizer.encode("hear me speak")) == "hear me speak"
    assert_close(gptviz.trace(loaded, ids[0].tolist()).logits, ours, ulps=16)  # the same model, read back


def test_queue_runs_one_at_a_time_stops_and_forgets_closed_sessions(tmp_path):
    queue = TrainingQueue(max_running=1)
    slow = replace(TINY, max_iters=10_000, eval_interval=10_000, sample_interval=10_000, checkpoint_interval=10_000)
    open_session = [True]
    first = queue.submit(TrainingJob(slow, tmp_path / "first", alive=lambda: open_session[0]))
    second = queue.submit(TrainingJob(replace(TINY, max_iters=3), tmp_path / "second"))
    assert first.state == "running" and second.state == "queued" and queue.position(second) == 1
    deadline = time.monotonic() + 120
    while (first.progress is None or first.progress.step < 3) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert first.progress is not None and second.state == "queued"  # still waiting its turn
    open_session[0] = False  # the first job's session closed: its training stops (saved, resumable)
    while (first.active or second.active) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert first.state == "stopped" and first.checkpoints, first.message
    assert second.state == "finished" and [c.step for c in second.checkpoints] == [0, 3]


def test_failures_reach_the_page(tmp_path):
    queue = TrainingQueue()
    job = queue.submit(TrainingJob(replace(TINY, text="too short"), tmp_path))
    deadline = time.monotonic() + 60
    while job.active and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job.state == "failed" and "longer text" in job.message


def test_an_induction_head_forms(tmp_path):
    """The induction preset: the repeats' loss stays near ln 64, then falls (the phase change) as a
    layer-1 head learns to attend to the token after the previous copy, beside a layer-0 previous-token head."""
    run = new_run(replace(PRESETS["induction"], max_iters=600, eval_interval=20))
    events = collect(run, tmp_path)
    evals = [e for e in events if isinstance(e, Evaluation)]
    snaps = [e for e in events if isinstance(e, HeadSnapshot)]
    assert_close(evals[0].repeat_half, math.log(64), rtol=0.04)  # untrained: guessing
    assert evals[-1].repeat_half < 1.0
    assert_close(evals[-1].first_half, math.log(64), rtol=0.08)  # the first block stays unpredictable
    phase = phase_change(evals)
    assert phase is not None and 100 <= phase <= 550
    assert snaps[0].induction[1].max() < 0.2 and snaps[-1].induction[1].max() > 0.5
    assert snaps[-1].previous_token[0].max() > 0.3
    assert milestones([s.step for s in snaps], phase)[0] == 0


def test_phase_change_needs_a_real_fall():
    flat = [Evaluation(step=i * 10, train=4, val=4, first_half=4.1, repeat_half=4.1 - 0.01 * i) for i in range(10)]
    assert phase_change(flat) is None
    falls = [Evaluation(step=i * 10, train=4, val=4, first_half=4.1, repeat_half=4.1 if i < 5 else 0.5)
             for i in range(10)]
    assert phase_change(falls) in (40, 50)


def test_the_books_gptmodel_loads_a_trained_model(tmp_path):
    from llms_from_scratch.ch04 import GPTModel

    from gptviz.weights.book import book_cfg, state_dict_bytes, to_book_state_dict

    run = new_run(replace(TINY, tie_embeddings=False, dropout=0.1, max_iters=3))
    collect(run, tmp_path)
    run.model.eval()
    book = GPTModel(book_cfg(run.model))
    path = tmp_path / "model.pth"
    path.write_bytes(state_dict_bytes(to_book_state_dict(run.model)))
    book.load_state_dict(torch.load(path, weights_only=True))  # strict: every name and shape the book's
    book.eval()
    ids = torch.tensor([run.tokenizer.encode("Before we proce")])
    with torch.no_grad():
        assert_close(book(ids), run.model(ids), rtol=1e-5, ulps=64)  # the book's hand-written attention and GELU
    with pytest.raises(ValueError, match="attention-only"):
        book_cfg(new_run(replace(TINY, attention_only=True)).model)
