"""Edge scores and circuits (gptviz.analysis.circuit): the scores are the gradient of edge runs (checked
against autograd through per-edge weights, and against exact single-edge runs as the source shrinks to
the clean run), integrated gradients add up to the whole change, pruning keeps exactly what reaches the
logits, and a circuit's faithfulness is 1 for the whole model and 0 for nothing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import gptviz
from gptviz.analysis import circuit as cc
from gptviz.analysis.attribution import Metric
from gptviz.edge_run import SenderOutputs
from gptviz.edges import EMBED, LOGITS, EdgeGraph
from gptviz.labels import MLP
from numerics import assert_close
from test_attribution import logit_ulps
from test_edges import prompts

CASES = ("gpt2", "llama-gqa", "gemma3", "gpt_neox", "olmo2")


def question(model, seed=0):
    clean_ids, corrupted_ids = prompts(model, n=10, seed=seed)
    clean, corrupted = gptviz.trace(model, clean_ids), gptviz.trace(model, corrupted_ids)
    top = clean.last_logits.topk(2).indices.tolist()
    return clean, corrupted, Metric(top[0], top[1])


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_scores_are_the_gradient_of_edge_runs(models, name, alpha):
    """Every edge's score from the receivers' input gradients equals autograd through a weight per edge."""
    model = models[name]
    clean, corrupted, metric = question(model)
    setup = cc.Setup.of(clean, metric, corrupted)
    graph = setup.graph
    mix = torch.full((1, graph.n_senders, graph.n_receivers), alpha, requires_grad=True)
    with torch.enable_grad():
        (expected,) = torch.autograd.grad(setup.metric_of(mix)[0], mix)
    steps = 1 if alpha == 0 else None
    if steps == 1:
        got = cc.edge_scores(clean, metric, corrupted).scores
    else:  # one integrated-gradients step sits at α = 0.5: compare the chunk scores at α directly
        probes = torch.zeros(1, graph.n_receivers, clean.n_tokens, model.config.d_model, requires_grad=True)
        chunks = []
        with torch.enable_grad():
            (grads,) = torch.autograd.grad(setup.metric_of(alpha, probes=probes, chunks=chunks)[0], probes)
        got = cc._chunk_scores(graph, chunks, grads[0], alpha, False).numpy()
    valid = graph.valid().numpy()
    expected = expected[0].double().numpy()[valid]
    assert np.abs(expected).max() > 1e-4
    # two float32 backward passes (got: a float32 result), summed in other orders: ulps of the largest score,
    # generous as the sums' terms can outgrow the scores (measured up to 45 ulps)
    assert_close(np.float32(got[valid]), expected, ulps=256)


@pytest.mark.parametrize("name", ("gpt2", "llama-gqa", "gemma3"))
def test_scores_are_the_first_order_change_of_single_edge_runs(models, name):
    """With the source shrunk towards the clean run (clean + ε·(corrupted − clean)), cutting one edge
    changes the metric by its score, to first order: the relative error falls with ε."""
    model = models[name]
    clean, corrupted, metric = question(model, seed=4)
    a, b = clean.sender_outputs(), corrupted.sender_outputs()
    graph = EdgeGraph.of(model.config)
    errors = []
    for eps in (1e-1, 1e-2):
        lerp = lambda x, y: x + eps * (y - x)
        near = SenderOutputs(lerp(a.embed, b.embed), tuple(map(lerp, a.heads, b.heads)),
                             tuple(map(lerp, a.mlps, b.mlps)))
        scores = cc.edge_scores(clean, metric, near)
        top = scores.top(12)
        pairs = top.nonzero().tolist()
        cuts = torch.zeros(len(pairs), graph.n_senders, graph.n_receivers, dtype=torch.bool)
        for i, (s, r) in enumerate(pairs):
            cuts[i, s, r] = True
        exact = cc.Setup.of(clean, metric, near).runs(cuts) - scores.clean
        estimate = np.array([scores.scores[s, r] for s, r in pairs])
        errors.append(np.abs(exact - estimate).max() / np.abs(estimate).max())
    assert errors[1] < errors[0] / 4 and errors[1] < 0.05, errors


@pytest.mark.parametrize("name", ("gpt2", "gemma3"))
def test_integrated_gradients_add_up_to_the_whole_change(models, name):
    model = models[name]
    clean, corrupted, metric = question(model, seed=5)
    ig = cc.edge_scores(clean, metric, corrupted, "ig", steps=16)
    eap = cc.edge_scores(clean, metric, corrupted)
    whole = ig.source - ig.clean
    assert_close(ig.total, whole, rtol=0.02)  # an approximation: 16 integrated-gradients steps
    assert abs(ig.total - whole) < abs(eap.total - whole)
    source = gptviz.trace(model, corrupted.ids)
    expected = source.last_logits[metric.target] - source.last_logits[metric.contrast]  # float32
    # the same float32 forward, its metric read another way
    assert_close(ig.source, expected, ulps=logit_ulps(source, expected, 8))


def test_scores_split_by_position_add_up(models):
    model = models["llama-gqa"]
    clean, corrupted, metric = question(model, seed=6)
    split = cc.edge_scores(clean, metric, "mean", by_position=True)
    whole = cc.edge_scores(clean, metric, "mean")
    assert split.per_position.shape == whole.scores.shape + (clean.n_tokens,)
    # the same products, summed over positions in another order
    assert_close(np.nansum(split.per_position, -1)[graph_valid(model)], whole.scores[graph_valid(model)], ulps=64)


def graph_valid(model) -> np.ndarray:
    return EdgeGraph.of(model.config).valid().numpy()


@pytest.mark.parametrize("name", CASES)
def test_whole_model_is_faithful_and_nothing_is_not(models, name):
    model = models[name]
    clean, corrupted, metric = question(model, seed=7)
    scores = cc.edge_scores(clean, metric, "zero")  # a wide gap on a random model
    n = scores.graph.n_edges
    curve = cc.faithfulness_curve(clean, metric, "zero", scores, [0, 5, n])
    assert abs(scores.gap) > 1e-4
    nothing, everything = curve.iloc[0], curve.iloc[-1]
    # the same float32 runs, batched another way: 64 ulps of the logits' size
    ulps = logit_ulps(clean, [scores.source, scores.clean])
    assert_close([nothing.circuit_metric, everything.complement_metric, everything.circuit_metric,
                  nothing.complement_metric], np.float32([scores.source] * 2 + [scores.clean] * 2), ulps=ulps)
    # as shares of the gap, 0 and 1 by construction, up to that rounding over the gap
    share = ulps * np.finfo(np.float32).eps * max(abs(scores.source), abs(scores.clean)) / abs(scores.gap)
    assert_close(nothing.circuit, 0.0, atol=share)
    assert_close(everything.circuit, 1.0, rtol=share)
    assert curve.kept.tolist()[-1] == n  # every edge reaches the logits when every edge is kept
    assert cc.curve_sizes(n)[-1] == n and cc.curve_sizes(n)[:2] == (10, 20)


def test_pruning_keeps_what_reaches_the_logits(tiny_llama):
    graph = EdgeGraph.of(tiny_llama.config)  # 2 layers, 6 heads, 2 key/value heads (groups of 3)
    keep = torch.zeros(graph.n_senders, graph.n_receivers, dtype=torch.bool)

    def add(sender, receiver):
        keep[graph.sender_index(sender), graph.receiver_index(receiver)] = True

    add(EMBED, (0, 1, "q"))          # L0H1 reaches the logits through L1's key/value head 1 (heads 3–5)
    add((0, 1), (1, 1, "k"))
    add((1, 4), LOGITS)
    add(EMBED, (0, 0, "k"))          # key/value head 0 serves L0H0–2, L0H1 among them: it stays
    add(EMBED, (0, 1, "v"))          # key/value head 1 serves L0H3–5, none of which reaches the logits
    add((0, 3), (0, MLP))            # L0 MLP writes nowhere kept
    add((0, MLP), (1, 0, "q"))       # L1H0 writes nowhere kept
    pruned = cc.prune(graph, keep)
    kept = {(graph.sender_label(graph.sender(s)), graph.receiver_label(graph.receiver(r)))
            for s, r in pruned.nonzero().tolist()}
    assert kept == {("embed", "L0H1 q"), ("embed", "L0KV0 k"), ("L0H1", "L1KV1 k"), ("L1H4", "logits")}


def test_circuit_file_round_trip(models):
    model = models["gpt2"]
    clean, corrupted, metric = question(model, seed=8)
    scores = cc.edge_scores(clean, metric, corrupted)
    keep = scores.circuit(20)
    data = cc.read_circuit_json(cc.circuit_json(scores, keep, {"prompt": "x", "n": 20}))
    assert data["settings"] == {"prompt": "x", "n": 20}
    frame = scores.frame(keep)
    assert [(e["sender"], e["receiver"]) for e in data["edges"]] == list(zip(frame.sender, frame.receiver))
    with pytest.raises(ValueError, match="not a circuit file"):
        cc.read_circuit_json("{}")
    with pytest.raises(ValueError, match="not JSON"):
        cc.read_circuit_json("garbage")


def test_frame_names_each_edge(models):
    model = models["llama-gqa"]
    clean, corrupted, metric = question(model, seed=9)
    frame = cc.edge_scores(clean, metric, corrupted).frame()
    assert list(frame.columns) == list(cc.FRAME_COLUMNS)
    assert len(frame) == EdgeGraph.of(model.config).n_edges
    assert (frame.score.abs().diff().dropna() <= 1e-12).all()  # largest |score| first
    row = frame[(frame.sender == "L0 MLP") & (frame.receiver == "L1KV1 v")].iloc[0]
    assert (row.sender_layer, row.sender_head, row.receiver_layer, row.receiver_head, row.input) == (0, -1, 1, 1, "v")


def test_pruning_by_position_follows_attention_back(tiny_llama):
    graph = EdgeGraph.of(tiny_llama.config)
    T, last = 5, 4
    keep = torch.zeros(graph.n_senders, graph.n_receivers, T, dtype=torch.bool)

    def add(sender, receiver, t):
        keep[graph.sender_index(sender), graph.receiver_index(receiver), t] = True

    add((1, 4), LOGITS, last)               # L1H4 writes the prediction at the last position
    add((0, 1), (1, 1, "k"), 2)             # its key at position 2 is read by the query at 4: kept
    add((0, 2), (1, 4, "q"), 2)             # its query at position 2 writes nothing kept at 2: dropped
    add(EMBED, (0, 1, "v"), 2)              # kv head 1 (L0H3–5) at 2 is read by L0H3's query at 4: kept
    add(EMBED, (0, 0, "v"), 1)              # kv head 0 (L0H0–2) at 1 is read by L0H1's query at 2: kept
    add(EMBED, (0, 0, "k"), 3)              # … at 3 only by queries at 3 and 4, whose outputs go nowhere: dropped
    add((0, 3), (1, 1, "v"), 4)             # a value at 4 read by L1H4's query at 4: kept
    add((1, 3), LOGITS, 1)                  # the logits at another position than the metric's: dropped
    pruned = cc.prune(graph, keep, last)
    kept = {(graph.sender_label(graph.sender(s)), graph.receiver_label(graph.receiver(r)), t)
            for s, r, t in pruned.nonzero().tolist()}
    assert kept == {("L1H4", "logits", 4), ("L0H1", "L1KV1 k", 2), ("embed", "L0KV1 v", 2), ("embed", "L0KV0 v", 1),
                    ("L0H3", "L1KV1 v", 4)}


def test_circuits_split_by_position_run_faithfully(models):
    model = models["gpt2"]
    clean, corrupted, metric = question(model, seed=10)
    scores = cc.edge_scores(clean, metric, "zero", by_position=True)
    total = int(scores.valid(True).sum())
    assert total == scores.graph.n_edges * clean.n_tokens
    curve = cc.faithfulness_curve(clean, metric, "zero", scores, [0, 50, total], split=True)
    # the same float32 runs, batched another way: 64 ulps of the logits' size
    assert_close([curve.circuit_metric.iloc[0], curve.circuit_metric.iloc[-1]],
                 np.float32([scores.source, scores.clean]), ulps=logit_ulps(clean, [scores.source, scores.clean]))
    frame = scores.frame(scores.circuit(50, split=True), split=True)
    assert len(frame) == curve.kept.iloc[1] and frame.position.between(0, clean.n_tokens - 1).all()
    assert (frame[frame.receiver == "logits"].position == clean.n_tokens - 1).all()
    with pytest.raises(ValueError, match="not split by position"):
        cc.edge_scores(clean, metric, "zero").top(5, split=True)


def test_what_a_head_can_read_and_what_it_reads(models):
    """head_reads: composition from the weights into a head's q, k, v, next to this prompt's edge scores into the
    same inputs (the key/value head's under grouped-query attention)."""
    from gptviz.analysis.composition import composition_scores

    model = models["llama-gqa"]  # 6 query heads, 2 key/value heads
    clean, corrupted, metric = question(model, seed=11)
    scores = cc.edge_scores(clean, metric, corrupted)
    comp = composition_scores(model)
    allowed, used = cc.head_reads(scores, comp, 1, 4)
    assert allowed.shape == used.shape == (3, 1, 6)
    np.testing.assert_array_equal(allowed[0], comp.q[1, 4, :1])
    g = scores.graph
    assert used[2, 0, 5] == scores.scores[g.sender_index((0, 5)), g.receiver_index((1, 1, "v"))]  # head 4 reads kv 1
    assert used[0, 0, 2] == scores.scores[g.sender_index((0, 2)), g.receiver_index((1, 4, "q"))]
    with pytest.raises(ValueError, match="not in this model"):
        cc.head_reads(scores, comp, 2, 0)
