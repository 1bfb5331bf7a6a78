"""Circuits on the real SmolLM2 (gptviz.analysis.circuit): " Mary" against " John" after "When Mary and
John went to the store, John gave a drink to", the name-swapped prompt as the source (same 14 tokens).

Pinned with margins (measured values in the comments): the whole model's circuit is the clean run and
the empty one the source run; edge scores follow exact single-edge runs on a sample of edges, except the
embeddings → L0 MLP edge, which first order gets wrong; larger circuits restore more; L23H3 → logits
leads the edges."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import gptviz
from gptviz.analysis import circuit as cc
from gptviz.analysis.attribution import Metric, metric_value
from gptviz.edges import EMBED, LOGITS
from numerics import assert_close

PROMPT = "When Mary and John went to the store, John gave a drink to"
SWAPPED = "When John and Mary went to the store, Mary gave a drink to"
SIZES = (50, 200)


@pytest.fixture(scope="module")
def question():
    """(clean trace, metric logit(" Mary") − logit(" John"), source trace): the arguments edge runs take."""
    model = gptviz.load_model("smollm2-135m")
    clean, source = gptviz.trace(model, PROMPT), gptviz.trace(model, SWAPPED)
    assert clean.n_tokens == source.n_tokens == 14
    return clean, Metric(model.tokenizer.encode(" Mary")[0], model.tokenizer.encode(" John")[0]), source


@pytest.fixture(scope="module")
def scores(question) -> dict[str, cc.EdgeScores]:
    return {"eap": cc.edge_scores(*question), "ig": cc.edge_scores(*question, "ig", steps=5)}


@pytest.fixture(scope="module")
def curves(question, scores):
    """Per method: the faithfulness curve at 0, SIZES and every edge."""
    return {method: cc.faithfulness_curve(*question, s, (0,) + SIZES + (s.graph.n_edges,))
            for method, s in scores.items()}


@pytest.fixture(scope="module")
def sample(question, scores):
    """The top 40 edges by |EAP| and 40 other random ones: flat indices (80,) into (n_senders, n_receivers)
    and the exact change of the metric when each alone is cut (80,)."""
    eap = scores["eap"]
    graph = eap.graph
    top = np.argsort(-np.nan_to_num(np.abs(eap.scores), nan=-1.0).ravel(), kind="stable")[:40]
    others = np.setdiff1d(np.flatnonzero(graph.valid().numpy().ravel()), top)
    flat = np.concatenate([top, np.random.default_rng(0).choice(others, 40, replace=False)])
    cuts = torch.zeros(len(flat), graph.n_senders * graph.n_receivers, dtype=torch.bool)
    cuts[torch.arange(len(flat)), torch.from_numpy(flat)] = True
    exact = cc.Setup.of(*question).runs(cuts.view(-1, graph.n_senders, graph.n_receivers)) - eap.clean
    return flat, exact


def test_the_whole_model_restores_everything_and_nothing_nothing(question, scores, curves):
    clean, metric, source = question
    for method, curve in curves.items():
        nothing, everything = curve.iloc[0], curve.iloc[-1]
        # the same float32 runs, batched another way: ulps of the larger metric
        expected = np.float32([metric_value(clean, metric), metric_value(source, metric)])
        assert_close([everything.circuit_metric, nothing.circuit_metric], expected, ulps=64, what=method)
        # as shares of the gap, 0 and 1 by construction, up to that rounding over the gap
        share = 64 * np.finfo(np.float32).eps * np.abs(expected).max() / abs(scores[method].gap)
        assert_close(nothing.circuit, 0.0, atol=share, what=method)
        assert_close(everything.circuit, 1.0, rtol=share, what=method)
    assert scores["eap"].gap > 12  # 6.12 − (−6.47)


def test_a_larger_circuit_restores_more(curves):
    """Faithfulness of 50 / 200 edges: EAP 0.36 / 0.46, IG 0.50 / 0.66; their complements stay near 0 (≤ 0.03)."""
    for method, curve in curves.items():
        by_n = curve.set_index("n")
        assert by_n.circuit[200] > by_n.circuit[50] + 0.05, method
        assert by_n.circuit[50] > 0.25, method
        assert (by_n.complement[list(SIZES)].abs() < 0.1).all(), method
    for n in SIZES:  # integrated gradients choose the more faithful circuits
        assert curves["ig"].set_index("n").circuit[n] > curves["eap"].set_index("n").circuit[n] + 0.08


def test_scores_follow_single_edge_runs(scores, sample):
    """Pearson r with the exact single-edge change over the sample: EAP 0.96 without the embeddings → L0 MLP
    edge (0.28 with it), IG 0.94 (0.84 without); rank correlation EAP 0.84, IG 0.77."""
    flat, exact = sample
    graph = scores["eap"].graph
    sink = graph.sender_index(EMBED) * graph.n_receivers + graph.receiver_index((0, "mlp"))
    rest = flat != sink
    eap, ig = (s.scores.ravel()[flat] for s in (scores["eap"], scores["ig"]))
    assert np.corrcoef(eap[rest], exact[rest])[0, 1] > 0.85
    assert np.corrcoef(ig, exact)[0, 1] > 0.75 and np.corrcoef(ig[rest], exact[rest])[0, 1] > 0.65
    rank = lambda x: np.argsort(np.argsort(x))
    assert np.corrcoef(rank(eap), rank(exact))[0, 1] > 0.65 and np.corrcoef(rank(ig), rank(exact))[0, 1] > 0.6
    # The embeddings' edge into MLP 0 (SmolLM2's attention-sink maker) is far from linear: cutting it alone
    # costs −11.6; first order gives the wrong sign (+2.85), the integrated path the right one (−3.3).
    i = int(np.flatnonzero(flat == sink)[0])
    assert exact[i] < -8 and eap[i] > 1 and ig[i] < -1


def test_l23h3_into_the_logits_leads(scores):
    """L23H3 → logits is EAP's first edge (−5.40; its exact single-edge change −5.44) and IG's second (−1.60,
    after embed → L0 MLP)."""
    for method, s in scores.items():
        top = s.frame().head(5)
        assert ("L23H3", LOGITS) in set(zip(top.sender, top.receiver)), method
    assert tuple(scores["eap"].frame().iloc[0][["sender", "receiver"]]) == ("L23H3", LOGITS)
