"""Logit lens, next-token tables and attention scaling: real numbers against direct computations,
figure shapes, and the Next token page's sampling behaviour in AppTest."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

import gptviz
from gptviz.analysis import lens, scaling
from gptviz.config import GPTConfig
from gptviz.plots import lens as lens_plots
from gptviz.plots import sampling as sampling_plots
from gptviz.plots import scale as scale_plots
from gptviz.sampling import SamplingSettings
from numerics import assert_close

APP = Path(__file__).resolve().parents[1] / "app.py"
PROMPT = "The cat sat on the mat because the cat was tired and"


@pytest.fixture(params=["gpt2", "llama"])
def model(request, tiny_gpt2, tiny_llama):
    return tiny_gpt2 if request.param == "gpt2" else tiny_llama


@pytest.fixture()
def tr(model):
    return gptviz.trace(model, PROMPT)


# ---- logit lens ------------------------------------------------------------------------------------
def test_lens_last_row_is_the_models_own_prediction(tr):
    top_ids, top_probs = lens.logit_lens_top(tr)
    L, T = tr.n_layer, tr.n_tokens
    assert top_ids.shape == top_probs.shape == (L + 1, T)
    for t in range(T):
        probs = tr.probs_at(t)
        assert top_ids[-1, t] == int(torch.argmax(probs))
        # the lens reads the final stream itself: the model's maths, another matmul and softmax
        assert_close(top_probs[-1, t], probs.max(), ulps=64)


def test_lens_rows_read_each_residual_stream(tr):
    model = tr.model
    top_ids, top_probs = lens.logit_lens_top(tr)
    for layer in range(tr.n_layer):
        x = tr.resid_pre(layer)  # (T, C)
        with torch.inference_mode():
            logits = model.final_norm(x) @ model.unembed_weight.T  # (T, vocab)
        probs = torch.softmax(logits, dim=-1)
        np.testing.assert_array_equal(top_ids[layer], probs.argmax(-1).numpy())
        assert_close(top_probs[layer], probs.max(-1).values, ulps=64)  # the same maths, chunked
    assert 0 < top_probs.min() and top_probs.max() <= 1


def test_lens_window_and_chunks_match_the_full_lens(tr, monkeypatch):
    full_ids, full_probs = lens.logit_lens_top(tr)
    ids, probs = lens.logit_lens_top(tr, 3, 9)
    np.testing.assert_array_equal(ids, full_ids[:, 3:9])
    # same maths, a window of rows: a softmax over the whole vocabulary, summed in another order
    assert_close(probs, full_probs[:, 3:9], ulps=64)
    # 5: several chunks per layer, the last one partial; 13 and 25: two layers read out together
    for chunk, (start, stop) in [(5, (0, None)), (13, (3, 9)), (25, (0, None))]:
        monkeypatch.setattr(lens, "LENS_CHUNK", chunk)
        chunked_ids, chunked_probs = lens.logit_lens_top(tr, start, stop)
        np.testing.assert_array_equal(chunked_ids, full_ids[:, start:stop])
        assert_close(chunked_probs, full_probs[:, start:stop], ulps=64)  # same maths, other chunks
    with pytest.raises(ValueError, match="not inside"):
        lens.logit_lens_top(tr, 5, 5)
    with pytest.raises(ValueError, match="not inside"):
        lens.logit_lens_top(tr, 0, tr.n_tokens + 1)


def test_target_prob_is_consistent_with_the_top_table(tr):
    position = tr.n_tokens - 3
    top_ids, top_probs = lens.logit_lens_top(tr)
    final_top = int(top_ids[-1, position])
    probs, ranks = lens.target_prob_by_layer(tr, final_top, position)
    assert probs.shape == ranks.shape == (tr.n_layer + 1,)
    assert ranks[-1] == 1
    assert_close(probs[-1], top_probs[-1, position], ulps=64)  # same maths, one row vs all
    assert_close(probs[-1], tr.probs_at(position)[final_top], ulps=64)  # the lens vs the model's own
    table = lens.target_table(tr, final_top, position)
    assert len(table) == tr.n_layer + 1
    np.testing.assert_array_equal(table["top id"].to_numpy(), top_ids[:, position])
    assert_close(table["top probability"].to_numpy(), top_probs[:, position], ulps=64)  # same maths, one row
    at_top = table["target rank"] == 1
    np.testing.assert_array_equal(table.loc[at_top, "top id"].to_numpy(), final_top)
    # the same probability read twice
    assert_close(table.loc[at_top, "target probability"], table.loc[at_top, "top probability"], ulps=8)
    assert (table.loc[~at_top, "target probability"] < table.loc[~at_top, "top probability"]).all()


def test_target_rank_by_hand(tr):
    token_id, position = 1234, 2
    probs, ranks = lens.target_prob_by_layer(tr, token_id, position)
    model = tr.model
    for row, resid in enumerate(tr.resid_stream):
        with torch.inference_mode():
            p = torch.softmax(model.unembed(model.final_norm(resid[position])), dim=-1)
        assert_close(probs[row], p[token_id], ulps=64)  # same maths, one row by hand
        assert ranks[row] == int((p > p[token_id]).sum()) + 1
    with pytest.raises(ValueError, match="outside the vocabulary"):
        lens.target_prob_by_layer(tr, tr.model.config.vocab_size, 0)
    with pytest.raises(ValueError, match="outside the sequence"):
        lens.target_prob_by_layer(tr, 0, tr.n_tokens)


def test_first_token_of_a_multi_token_target(tr):
    ids = tr.model.tokenizer.encode(" xylophonists")
    assert len(ids) > 1
    assert lens.first_token(tr, " xylophonists") == (ids[0], len(ids))
    with pytest.raises(ValueError, match="empty"):
        lens.first_token(tr, "")


def test_lens_frame_is_long_form(tr):
    top_ids, top_probs = lens.logit_lens_top(tr, 2, 6)
    frame = lens.lens_frame(tr, top_ids, top_probs, 2)
    assert len(frame) == (tr.n_layer + 1) * 4
    assert frame["position"].iloc[:4].tolist() == [2, 3, 4, 5]
    assert frame["top_id"].iloc[-1] == top_ids[-1, -1]
    assert frame["token"].iloc[0] == tr.tokens[2]


# ---- next-token tables -----------------------------------------------------------------------------
def test_top_next_tokens_match_the_probabilities(tr):
    position = 4
    top = lens.top_next_tokens(tr, position, 10)
    probs = tr.probs_at(position)
    values, ids = torch.topk(probs, 10)
    np.testing.assert_array_equal(top["id"].to_numpy(), ids.numpy())
    assert_close(top["probability"].to_numpy(), values, ulps=8)  # the trace's own probabilities
    assert_close(top["logit"].to_numpy(), tr.logits[position][ids], ulps=8)  # and logits
    assert top["actual next"].sum() == int(tr.ids[position + 1] in ids.tolist())
    actual = lens.actual_next(tr, position)
    assert actual["id"] == tr.ids[position + 1]
    assert_close(actual["probability"], probs[tr.ids[position + 1]], ulps=8)  # the trace's own probability
    assert lens.actual_next(tr, -1) is None
    assert not lens.top_next_tokens(tr, -1, 5)["actual next"].any()


def test_sampling_table_filters_over_the_full_vocabulary(tr):
    V = tr.model.config.vocab_size
    plain, summary = lens.sampling_table(tr, -1, SamplingSettings(), 15)
    assert summary.n_kept == V
    assert_close(summary.kept_mass, 1.0, rtol=1e-5)  # a float32 sum of V probabilities
    assert_close(plain["after filter"], plain["original (T=1)"], rtol=1e-5)  # divided by that sum

    top1, summary = lens.sampling_table(tr, -1, SamplingSettings(top_k=1), 15)
    assert summary.n_kept == 1 and top1["kept"].sum() == 1
    assert_close(top1["after filter"].iloc[0], 1.0, ulps=8)  # p / p

    greedy, summary = lens.sampling_table(tr, -1, SamplingSettings(temperature=0.0), 15)
    assert summary.n_kept == 1
    assert_close(greedy["after filter"].iloc[0], 1.0, ulps=8)  # p / p

    settings = SamplingSettings(temperature=0.7, top_k=40, top_p=0.5)
    table, summary = lens.sampling_table(tr, -1, settings, 15)
    tempered = torch.softmax(tr.logits[-1] / 0.7, dim=-1)
    assert_close(table["after temperature"], tempered[table["id"].tolist()], ulps=16)  # same maths by hand
    sorted_p = torch.sort(tempered, descending=True).values
    kept_by_hand = int(((torch.cumsum(sorted_p[:40], 0) - sorted_p[:40]) < 0.5 * sorted_p[:40].sum()).sum())
    assert summary.n_kept == kept_by_hand
    # a float32 sum in another order, as Python floats
    assert_close(summary.kept_mass, float(sorted_p[:kept_by_hand].sum()), rtol=1e-5)
    kept = table[table["kept"]]
    assert_close(kept["after filter"], kept["after temperature"] / summary.kept_mass, ulps=16)  # same maths
    assert (table.loc[~table["kept"], "after filter"] == 0).all()


def test_steps_table_recomputes_generate(model):
    settings = SamplingSettings(temperature=0.9, top_k=50)
    prompt = model.tokenizer.encode(PROMPT)
    steps = gptviz.generate(model, prompt, 4, settings, seed=3)
    tr = gptviz.trace(model, prompt + [s.token_id for s in steps])
    table = lens.steps_table(tr, len(prompt), [settings] * 4)
    assert table["id"].tolist() == [s.token_id for s in steps]
    # generate's forward of a growing prefix vs one forward of the whole text (float32, as floats)
    assert_close(table["probability"], [s.prob for s in steps], rtol=1e-4)
    assert_close(table["filtered probability"], [s.filtered_prob for s in steps], rtol=1e-4)
    assert table["rank"].tolist() == [s.rank for s in steps]
    with pytest.raises(ValueError, match="one setting per generated token"):
        lens.steps_table(tr, len(prompt), [settings])
    assert lens.steps_table(gptviz.trace(model, prompt), len(prompt), []).empty


def test_pick_next_is_reproducible_and_greedy_at_zero(tr):
    settings = SamplingSettings(temperature=1.5)
    picks = [lens.pick_next(tr, settings, seed=11, step_index=i) for i in range(6)]
    assert picks == [lens.pick_next(tr, settings, seed=11, step_index=i) for i in range(6)]
    assert len(set(picks)) > 1  # different steps draw differently (near-uniform random model)
    assert lens.pick_next(tr, SamplingSettings(temperature=0.0), 5, 0) == int(torch.argmax(tr.logits[-1]))
    assert lens.pick_next(tr, SamplingSettings(top_k=1), 5, 0) == int(torch.argmax(tr.logits[-1]))


# ---- attention scaling -----------------------------------------------------------------------------
def test_context_sizes():
    assert scaling.context_sizes(128) == [16, 32, 64, 128]
    assert scaling.context_sizes(160) == [16, 32, 64, 128, 160]
    assert scaling.context_sizes(8192)[-2:] == [4096, 8192]
    assert scaling.context_sizes(10) == [10]
    with pytest.raises(ValueError):
        scaling.context_sizes(0)


def test_crossover_by_hand():
    gpt2_small = GPTConfig("gpt2", 50257, 1024, 768, 12, 12, 12, 3072, 1e-5, mlp="gelu")
    # per token: qkv 2·d·3d + out 2·d² + MLP 2·2·d·4d = 24·d²; attention 4·T²·d -> equal at T = 6·d
    assert scaling.rest_flops_per_token(gpt2_small) == 24 * 768**2
    assert scaling.crossover_length(gpt2_small) == 6 * 768
    smollm = GPTConfig("llama", 49152, 8192, 576, 30, 9, 3, 1536, 1e-5)
    by_hand = 2 * 576 * (576 + 2 * 192) + 2 * 576 * 576 + 3 * 2 * 576 * 1536
    assert scaling.rest_flops_per_token(smollm) == by_hand
    assert_close(scaling.crossover_length(smollm), by_hand / (4 * 576), ulps=8)  # the same division
    frame = scaling.analytic_costs(smollm, [16, 8192])
    assert frame["pattern_bytes_layer"].tolist() == [9 * 16 * 16 * 4, 9 * 8192 * 8192 * 4]
    assert frame["pattern_bytes_model"].iloc[-1] == 30 * 9 * 8192 * 8192 * 4
    assert frame["attention_flops_layer"].iloc[0] == 4 * 16 * 16 * 576


def test_measure_scaling_within_budget(model):
    calls = []
    sizes = scaling.context_sizes(model.config.n_ctx)
    frame = scaling.measure_scaling(model, sizes, budget_s=120, progress=lambda *a: calls.append(a))
    nh, L = model.config.n_head, model.config.n_layer
    assert frame["T"].tolist() == sizes
    for column in ("attention_fused_s", "attention_eager_s", "rest_of_layer_s", "forward_s"):
        assert (frame[column] > 0).all(), column
    assert frame["pattern_bytes_layer"].tolist() == [nh * T * T * 4 for T in sizes]
    assert frame["pattern_bytes_model"].tolist() == [L * nh * T * T * 4 for T in sizes]
    assert frame.attrs["stopped_before"] is None
    assert [c[0] for c in calls] == list(range(len(sizes))) + [len(sizes)]
    assert frame.equals(pd.read_pickle(_pickled(frame))) and pd.read_pickle(_pickled(frame)).attrs == frame.attrs


def _pickled(frame: pd.DataFrame):
    import io

    buffer = io.BytesIO()
    frame.to_pickle(buffer)
    buffer.seek(0)
    return buffer


def test_measure_scaling_stops_at_the_budget(tiny_gpt2):
    frame = scaling.measure_scaling(tiny_gpt2, [16, 32, 64], budget_s=1e-9)
    assert frame["T"].tolist() == [16]  # the first size always runs
    assert frame.attrs["stopped_before"] == 32
    assert frame["forward_s"].iloc[0] > 0
    with pytest.raises(ValueError, match="between 1 and n_ctx"):
        scaling.measure_scaling(tiny_gpt2, [tiny_gpt2.config.n_ctx + 1])


def test_eager_path_skipped_when_too_big(tiny_gpt2):
    row = scaling.measure_size(tiny_gpt2, 32, torch.Generator().manual_seed(0), max_eager_bytes=100)
    assert np.isnan(row["attention_eager_s"]) and np.isnan(row["peak_bytes_eager"])
    assert row["attention_fused_s"] > 0 and row["peak_bytes_fused"] > 0


def test_peak_memory_of_attention(tiny_llama):
    nh, T = tiny_llama.config.n_head, 160
    row = scaling.measure_size(tiny_llama, T, torch.Generator().manual_seed(0))
    pattern = nh * T * T * 4
    # eager: the raw scores, the scaled and the masked ones and the softmax are each (nh, T, T)
    assert 2 * pattern <= row["peak_bytes_eager"] <= 6 * pattern
    assert row["peak_bytes_fused"] < pattern  # tiles: never the whole pattern
    assert scaling.peak_allocated(lambda: torch.zeros(1000, 250)) == 1000 * 250 * 4


def test_estimate_cost():
    assert scaling.estimate_cost([], [], 16) == 0.0
    # float64 powers of exact ratios: a few ulps
    assert_close(scaling.estimate_cost([16], [1.0], 32), 4.0, ulps=8)  # quadratic until seen
    assert_close(scaling.estimate_cost([16, 32], [1.0, 2.0], 64), 4.0, ulps=8)  # linear so far
    assert_close(scaling.estimate_cost([16, 32], [1.0, 1.0], 64), 2.0, ulps=8)  # at least linear
    assert_close(scaling.estimate_cost([16, 32], [1.0, 8.0], 64), 32.0, ulps=8)  # at most quadratic


# ---- figures ---------------------------------------------------------------------------------------
def test_lens_heatmap_shapes_and_text():
    probs = np.random.default_rng(0).random((4, 5))
    tokens = [[f"t{r}{c}" for c in range(5)] for r in range(4)]
    fig = lens_plots.lens_heatmap(probs, tokens, lens_plots.position_labels(list("abcde"), 10), lens.lens_row_names(3))
    (trace,) = fig.data
    assert np.asarray(trace.z).shape == (4, 5)
    assert list(trace.x)[0] == "10·a" and list(trace.y)[-1] == "resid_post 2 (final)"
    assert trace.texttemplate == "%{text}" and trace.text[1][2] == "t12"
    wide = lens_plots.lens_heatmap(np.zeros((2, 50)), [["x"] * 50] * 2, [str(i) for i in range(50)], ["a", "b"])
    assert wide.data[0].texttemplate is None
    with pytest.raises(ValueError, match="same 2-D shape"):
        lens_plots.lens_heatmap(probs, tokens[:2], list("abcde"), list("abcd"))


def test_lens_heatmap_builds_fast_for_a_full_window():
    rng = np.random.default_rng(0)
    rows, width = 31, 256
    tokens = [[f" tok{r}_{c}" for c in range(width)] for r in range(rows)]
    start = time.perf_counter()
    fig = lens_plots.lens_heatmap(rng.random((rows, width)), tokens, [f"{i}·x" for i in range(width)],
                                  [f"r{i}" for i in range(rows)])
    fig.to_json()
    assert time.perf_counter() - start < 0.5


def test_target_figure():
    fig = lens_plots.target_by_layer_figure(np.array([0.1, 0.5, 0.9]), np.array([30, 2, 1]), ["a", "b", "c"], " Paris")
    assert len(fig.data) == 2
    assert_close(fig.data[0].y, [0.1, 0.5, 0.9], ulps=8) and list(fig.data[1].y) == [30, 2, 1]  # copied
    assert "␣Paris" in fig.layout.title.text
    assert fig.data[1].yaxis == "y2" and fig.layout.yaxis2.type == "log"
    assert list(fig.layout.yaxis2.tickvals) == [1, 10, 100]  # up to rank 30
    with pytest.raises(ValueError):
        lens_plots.target_by_layer_figure(np.zeros(3), np.zeros(2), ["a", "b", "c"], "x")


def test_sampling_figures(tr):
    top = lens.top_next_tokens(tr, 3, 8)
    fig = sampling_plots.top_tokens_figure(top["token"].tolist(), top["probability"].to_numpy(),
                                           top["logit"].to_numpy(), np.arange(8) == 2)
    (bars,) = fig.data
    assert len(bars.y) == 8 and list(bars.marker.color).count(sampling_plots.ACTUAL_COLOUR) == 1
    assert list(bars.marker.color)[2] == sampling_plots.ACTUAL_COLOUR
    table, _ = lens.sampling_table(tr, -1, SamplingSettings(temperature=2.0, top_k=3), 8)
    fig = sampling_plots.distribution_figure(table["token"].tolist(), table["original (T=1)"].to_numpy(),
                                             table["after temperature"].to_numpy(), table["after filter"].to_numpy(),
                                             table["kept"].to_numpy(), 2.0, log_scale=True)
    assert len(fig.data) == 3 and all(len(bar.y) == 8 for bar in fig.data)
    assert sum("✗" in label for label in fig.data[0].x) == 5
    assert fig.layout.yaxis.type == "log"
    with pytest.raises(ValueError):
        sampling_plots.top_tokens_figure(["a"], np.zeros(2), np.zeros(2))


def test_scale_figures():
    frame = scaling.analytic_costs(GPTConfig("gpt2", 100, 64, 48, 3, 3, 3, 192, 1e-5, mlp="gelu"), [16, 32, 64])
    for column, value in (("attention_fused_s", 1.0), ("attention_eager_s", 2.0), ("rest_of_layer_s", 3.0),
                          ("forward_s", 4.0), ("peak_bytes_fused", 10.0), ("peak_bytes_eager", 100.0)):
        frame[column] = value * frame["T"] / 16
    fig = scale_plots.time_figure(frame)
    assert len(fig.data) == 6 and fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    ref_t, ref_t2 = fig.data[4], fig.data[5]
    # float64 reference lines through the last point: a few ulps
    assert_close(ref_t2.y[-1], frame["attention_fused_s"].iloc[-1], ulps=8)
    assert_close(ref_t2.y[0] / ref_t2.y[-1], (16 / 64) ** 2, ulps=8)
    assert_close(ref_t.y[0] / ref_t.y[-1], 16 / 64, ulps=8)
    assert list(fig.layout.xaxis.tickvals) == [16, 32, 64] and fig.layout.yaxis.dtick == 1
    memory = scale_plots.memory_figure(frame)
    assert [trace.name.endswith("(measured)") for trace in memory.data] == [False, False, True, True]
    assert list(memory.data[0].y) == frame["pattern_bytes_layer"].tolist()
    assert list(memory.data[2].y) == frame["peak_bytes_eager"].tolist()
    assert len(scale_plots.memory_figure(frame.drop(columns=["peak_bytes_fused", "peak_bytes_eager"])).data) == 2
    flops = scale_plots.flops_figure(frame, crossover=40.0)
    assert len(flops.data) == 3 and list(flops.data[2].x) == [40.0, 40.0]
    with pytest.raises(ValueError, match="columns"):
        scale_plots.time_figure(frame.drop(columns="forward_s"))


# ---- the Next token page's sampling, in AppTest ------------------------------------------------------
def open_next_token(**state) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.switch_page("pages/next_token.py")
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def frame_with(at: AppTest, column: str) -> pd.DataFrame:
    """The page's one table that has `column`."""
    (found,) = [df.value for df in at.dataframe if column in df.value.columns]
    return found


def click(at: AppTest, key: str) -> AppTest:
    at.button(key=key).click()
    at.run()
    assert not at.exception, at.exception
    return at


def test_same_seed_gives_the_same_tokens(app_env):
    runs = []
    for _ in range(2):
        at = open_next_token(seed=7, temperature=1.3)
        for _ in range(3):
            click(at, "sample_next")
        runs.append(at.session_state["gen"])
        assert len(runs[-1].split(",")) == 3
    assert runs[0] == runs[1]
    other = open_next_token(seed=8, temperature=1.3)
    for _ in range(3):
        click(other, "sample_next")
    assert other.session_state["gen"] != runs[0]


def test_back_one_step(app_env):
    at = open_next_token()
    click(at, "back_step")
    assert at.session_state["gen"] == ""
    assert any("Nothing to take back" in info.value for info in at.info)
    click(at, "greedy_next")
    click(at, "greedy_next")
    assert len(at.session_state["gen"].split(",")) == 2
    first = at.session_state["gen"].split(",")[0]
    click(at, "back_step")
    assert at.session_state["gen"] == first
    click(at, "back_step")
    click(at, "back_step")
    assert at.session_state["gen"] == ""


def test_temperature_zero_samples_the_greedy_token(app_env, tiny_gpt2):
    at = open_next_token(temperature=0.0, seed=5)
    click(at, "sample_next")
    greedy = int(torch.argmax(gptviz.trace(tiny_gpt2, at.session_state["prompt"]).logits[-1]))
    assert at.session_state["gen"] == str(greedy)
    steps = frame_with(at, "filtered probability")
    assert steps["rank"].tolist() == [1]
    assert_close(steps["filtered probability"].iloc[0], 1.0, ulps=8)  # p / p


def test_top_k_one_keeps_exactly_one(app_env):
    at = open_next_token()
    at.number_input(key="top_k").set_value(1)
    at.run()
    assert at.metric[0].value == "1"
    table = frame_with(at, "kept")
    assert table["kept"].sum() == 1
    assert_close(table["after filter"].iloc[0], 1.0, ulps=8)  # p / p
    spec = json.loads(at.get("plotly_chart")[1].proto.spec)
    assert sum("✗" in label for label in spec["data"][0]["x"]) == len(table) - 1
