"""The Circuit page's figures: where nodes sit, where q / k / v edges land (grouped-query attention too),
which traces carry what, clicks read back, a thousand edges in few traces, and bad input."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gptviz.labels import component_label
from gptviz.plots import circuit as plots
from gptviz.plots.common import picked_customdata
from numerics import assert_close

N_LAYER, N_HEAD, N_KV_HEAD = 3, 4, 2  # r = 2: kv head g is read by query heads 2g and 2g + 1


def name(layer: int, head: int) -> str:
    return "embed" if layer < 0 else component_label((layer, "mlp" if head < 0 else head))


def edge(sender: tuple[int, int], receiver: tuple[int, int], inp: str, score: float) -> dict:
    """One row of an edges frame: sender (layer, head | -1), receiver (layer, head | -1)."""
    (sl, sh), (rl, rh) = sender, receiver
    receiver_name = {"q": f"L{rl}H{rh} q", "k": f"L{rl}KV{rh} k", "v": f"L{rl}KV{rh} v", "mlp": f"L{rl} MLP",
                     "logits": "logits"}[inp]
    return dict(sender=name(sl, sh), receiver=receiver_name, sender_layer=sl, sender_head=sh, receiver_layer=rl,
                receiver_head=rh, input=inp, score=score)


EDGES = pd.DataFrame([
    edge((-1, -1), (0, 1), "q", -1.0),   # embed → L0H1 q
    edge((0, 1), (1, 1), "k", -0.5),     # L0H1 → kv head 1 of layer 1 (read by L1H2, L1H3)
    edge((0, 1), (1, 1), "v", 0.3),
    edge((1, 3), (2, -1), "mlp", -0.8),  # L1H3 → L2 MLP
    edge((2, -1), (3, -1), "logits", -2.0),
    edge((0, -1), (1, 0), "q", 0.1),     # L0 MLP → L1H0 q
])


def line_segments(fig) -> dict[tuple, tuple]:
    """(x0, y0, x1, y1) rounded -> (dash, colour, width) of every drawn edge."""
    out = {}
    for trace in fig.data:
        if trace.mode == "lines" and trace.x is not None and len(trace.x) > 1:
            xy = np.stack([np.asarray(trace.x, dtype=float), np.asarray(trace.y, dtype=float)], axis=1)
            assert np.isnan(xy[2::3]).all()  # segments separated by gaps
            for a, b in zip(xy[0::3], xy[1::3]):
                out[tuple(np.round([*a, *b], 3))] = (trace.line.dash, trace.line.color, trace.line.width)
    return out


def trace(fig, trace_name: str):
    return next(t for t in fig.data if t.name == trace_name)


def test_nodes_sit_by_layer_and_are_the_circuits_components():
    fig = plots.circuit_graph(EDGES, N_LAYER, N_HEAD, N_KV_HEAD, title="circuit")
    nodes = trace(fig, plots.NODE_TRACE)
    labels = [row[0] for row in nodes.customdata]
    assert labels == ["embed", "L0H1", "L0 MLP", "L1H0", "L1H2", "L1H3", "L2 MLP", "logits"]
    assert list(nodes.text) == labels and "text" in nodes.mode  # few nodes: labelled
    at = {label: (x, y) for label, x, y in zip(labels, nodes.x, nodes.y)}
    rise = plots.MLP_RISE
    assert at["embed"] == (1.5, 0.0) and at["logits"] == (1.5, 4.0)  # centred under / over the heads
    assert at["L0H1"] == (1.0, 1.0) and at["L1H0"] == (0.0, 2.0) and at["L1H3"] == (3.0, 2.0)
    assert at["L0 MLP"] == (4.5, 1.0 + rise) and at["L2 MLP"] == (4.5, 3.0 + rise)  # right of the heads, above
    model_at = dict(zip(trace(fig, "model").hovertext, zip(trace(fig, "model").x, trace(fig, "model").y)))
    assert_close(model_at["L1 MLP"], (4.5 + plots.MLP_ZIGZAG, 2.0 + rise), ulps=8)  # odd layers: zigzag
    model = trace(fig, "model")  # every head and MLP, the embeddings and the logits, but where a node is
    assert len(model.x) == N_LAYER * (N_HEAD + 1) + 2 - len(labels) and model.marker.size < nodes.marker.size
    assert list(fig.layout.yaxis.ticktext) == ["embed", "L0", "L1", "L2", "logits"]
    assert fig.layout.height == 300 + 22 * N_LAYER and fig.layout.title.text == "circuit"


def test_a_click_at_a_nodes_centre_reaches_the_node():
    """No grey model dot under a circuit node (plotly would pick the dot, which focuses nothing), split or not."""
    for fig in (plots.circuit_graph(EDGES, N_LAYER, N_HEAD, N_KV_HEAD),
                plots.circuit_graph(SPLIT_EDGES, N_LAYER, N_HEAD, N_KV_HEAD, tokens=TOKENS)):
        nodes, model = trace(fig, plots.NODE_TRACE), trace(fig, "model")
        assert not set(zip(nodes.x, nodes.y)) & set(zip(model.x, model.y))


def test_a_click_on_a_node_reads_back_its_label():
    nodes = trace(plots.circuit_graph(EDGES, N_LAYER, N_HEAD, N_KV_HEAD), plots.NODE_TRACE)
    assert picked_customdata({"customdata": list(nodes.customdata[5])}) == ["L1H3"]
    assert picked_customdata({"customdata": {"0": nodes.customdata[6][0]}}) == ["L2 MLP"]  # Streamlit's form


def test_edges_land_by_input_kind_and_kv_group():
    fig = plots.circuit_graph(EDGES, N_LAYER, N_HEAD, N_KV_HEAD)
    q, k, v = (plots.LANDING[kind] for kind in "qkv")
    red, blue = plots.SIGN_COLOURS[True], plots.SIGN_COLOURS[False]
    w = plots.WIDTHS  # bins of |score| / max |score| (2.0) in quarters
    rise = plots.MLP_RISE
    assert line_segments(fig) == {
        (1.5, 0.0, round(1 + q, 3), 1.0): ("solid", red, w[2]),              # embed → L0H1 q: left of centre
        (1.0, 1.0, 2.5 + k, 2.0): ("dash", red, w[1]),                      # k: midpoint of L1H2, L1H3
        (1.0, 1.0, 2.5 + v, 2.0): ("dot", blue, w[0]),                      # v: right of that midpoint
        (3.0, 2.0, 4.5, 3.0 + rise): ("solid", red, w[1]),                  # L1H3 → L2 MLP
        (4.5, round(3.0 + rise, 3), 1.5, 4.0): ("solid", red, w[3]),        # L2 MLP → logits: the widest
        (4.5, round(1.0 + rise, 3), round(0 + q, 3), 2.0): ("solid", blue, w[0]),
    }
    hover = trace(fig, "edges")
    assert len(hover.x) == len(EDGES) and hover.hovertext[1] == "L0H1 → L1KV1 k (k): -0.5"
    assert_close((hover.x[0], hover.y[0]), ((1.5 + 1 + q) / 2, 0.5), ulps=8)  # the same float64 midpoint
    legend = [t.name for t in fig.data if t.showlegend is not False]
    assert legend == ["q input (solid)", "k input (dash)", "v input (dot)", plots.SIGN_NAMES[True],
                      plots.SIGN_NAMES[False]]


def test_without_grouped_query_attention_kv_edges_land_on_their_head():
    edges = pd.DataFrame([edge((0, 0), (1, 3), "k", -1.0), edge((0, 0), (1, 3), "v", -1.0)])
    fig = plots.circuit_graph(edges, N_LAYER, N_HEAD, N_HEAD)
    assert {seg[2] for seg in line_segments(fig)} == {3.0 + plots.LANDING["k"], 3.0 + plots.LANDING["v"]}
    assert [row[0] for row in trace(fig, plots.NODE_TRACE).customdata] == ["L0H0", "L1H3"]


def test_node_scores_colour_the_nodes():
    scores = {"L0H1": -3.0, "L2 MLP": 1.5}
    nodes = trace(plots.circuit_graph(EDGES, N_LAYER, N_HEAD, N_KV_HEAD, node_scores=scores), plots.NODE_TRACE)
    assert nodes.marker.cmin == -3.0 and nodes.marker.cmax == 3.0
    assert list(nodes.marker.color[:3]) == [0.0, -3.0, 0.0]  # embed, L0H1, L0 MLP
    assert nodes.hovertext[1] == "L0H1: -3" and nodes.hovertext[0] == "embed: no score"


def random_edges(n: int, n_layer: int, n_head: int, n_kv_head: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        rl = int(rng.integers(0, n_layer + 1))
        sl = int(rng.integers(-1, rl)) if rl > 0 else -1
        sh = -1 if sl < 0 else int(rng.integers(-1, n_head))
        inp = "logits" if rl == n_layer else str(rng.choice(["q", "k", "v", "mlp"]))
        rh = {"q": n_head, "k": n_kv_head, "v": n_kv_head}.get(inp)
        rows.append(edge((sl, sh), (rl, int(rng.integers(0, rh)) if rh else -1), inp, float(rng.normal())))
    return pd.DataFrame(rows)


def test_a_thousand_edges_stay_a_few_traces():
    edges = random_edges(1000, 12, 12, 4)
    fig = plots.circuit_graph(edges, 12, 12, 4)
    assert len(fig.data) <= 5 * 2 * len(plots.WIDTHS) + 8  # (input, sign, width) + context, hover, nodes, legend
    assert sum(len(t.x) // 3 for t in fig.data if t.mode == "lines" and len(t.x) > 1) == 1000
    nodes = trace(fig, plots.NODE_TRACE)
    assert nodes.mode == "markers" and len(nodes.x) > plots.MAX_NODE_LABELS  # too many to label
    assert fig.layout.height == 300 + 22 * 12
    scores = {label: float(i) for i, label in enumerate(nodes.customdata[:, 0])}  # with scores: the strongest named
    named = [t for t in trace(plots.circuit_graph(edges, 12, 12, 4, node_scores=scores), plots.NODE_TRACE).text if t]
    assert sorted(named, key=scores.get) == sorted(scores, key=scores.get)[-plots.MAX_NODE_LABELS:]


def test_no_edges_gives_the_empty_model_and_a_note():
    fig = plots.circuit_graph(EDGES.iloc[:0], N_LAYER, N_HEAD, N_KV_HEAD)
    assert [t.name for t in fig.data] == ["model"]
    note = fig.layout.annotations[0]
    assert "No edge passes the threshold" in note.text and (note.x, note.y) == (0.5, 0.5)


def test_bad_edges_raise_a_value_error_that_says_what_is_wrong():
    with pytest.raises(ValueError, match=r"lacks the columns \['receiver_head', 'score'\]"):
        plots.circuit_graph(EDGES.drop(columns=["score", "receiver_head"]), N_LAYER, N_HEAD, N_KV_HEAD)
    with pytest.raises(ValueError, match="inputs \\['o'\\]"):
        plots.circuit_graph(EDGES.assign(input="o"), N_LAYER, N_HEAD, N_KV_HEAD)
    with pytest.raises(ValueError, match="2 edges name components this model lacks.*e.g. L0H1 → L1KV1 k"):  # 1 kv head
        plots.circuit_graph(EDGES, N_LAYER, N_HEAD, 1)
    with pytest.raises(ValueError, match="NaN or infinite"):
        plots.circuit_graph(EDGES.assign(score=[0, 1, np.nan, 0, 0, 0]), N_LAYER, N_HEAD, N_KV_HEAD)
    with pytest.raises(ValueError, match="multiple of n_kv_head"):
        plots.circuit_graph(EDGES, N_LAYER, N_HEAD, 3)


CURVE = pd.DataFrame({"n": [1000, 10, 100, 30], "circuit": [1.0, 0.2, 0.9, 0.6],
                      "complement": [0.0, 0.95, 0.05, 0.4]})


def test_faithfulness_curve_marks_the_chosen_circuit():
    fig = plots.faithfulness_curve(CURVE, 100, title="faithfulness")
    circuit, complement, chosen = fig.data
    assert (circuit.name, complement.name, chosen.name) == ("circuit", "complement", "chosen")
    assert list(circuit.x) == [10, 30, 100, 1000] and list(circuit.y) == [0.2, 0.6, 0.9, 1.0]  # sorted by n
    assert "markers" in circuit.mode and "markers" in complement.mode
    assert list(chosen.x) == [100, 100] and chosen.text[1] == "n = 100: circuit 90%, complement 5%"
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.tickformat == ".0%"
    assert sorted(s.y0 for s in fig.layout.shapes) == [0.0, 1.0] and fig.layout.shapes[0].line.dash == "dot"
    assert len(plots.faithfulness_curve(CURVE).data) == 2
    with pytest.raises(ValueError, match="not on the curve"):
        plots.faithfulness_curve(CURVE, 50)
    with pytest.raises(ValueError, match="logarithmic"):
        plots.faithfulness_curve(CURVE.assign(n=[0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"\['complement'\]"):
        plots.faithfulness_curve(CURVE.drop(columns="complement"))


def test_composition_vs_usage_one_trace_per_input_kind():
    frame = pd.DataFrame({"sender": ["L0H1", "L0H2", "L1H0", "L0H3"], "receiver": ["L1H0 q", "L1KV0 k", "L2KV1 v",
                                                                                   "L2H1 q"],
                          "input": ["q", "k", "v", "q"], "composition": [0.9, 0.1, 0.5, 0.2],
                          "score": [-0.7, 0.2, -0.05, 0.0]})
    fig = plots.composition_vs_usage(frame, title="t")
    assert [t.name for t in fig.data] == ["q composition", "k composition", "v composition"]
    assert list(fig.data[0].x) == [0.9, 0.2] and list(fig.data[0].y) == [0.7, 0.0]  # y = |score|
    assert list(fig.data[0].customdata[0]) == ["L0H1", "L1H0 q", -0.7]
    assert "weights allow" in fig.layout.xaxis.title.text and "prompt uses" in fig.layout.yaxis.title.text
    assert [t.name for t in plots.composition_vs_usage(frame[frame.input == "q"]).data] == ["q composition"]
    with pytest.raises(ValueError, match="mlp"):
        plots.composition_vs_usage(frame.assign(input="mlp"))
    with pytest.raises(ValueError, match=r"\['composition'\]"):
        plots.composition_vs_usage(frame.drop(columns="composition"))


TOKENS = ["a", " b", " c", " d"]
SPLIT_EDGES = pd.DataFrame([
    {**edge((0, 1), (1, 1), "k", -0.5), "position": 1},      # L0H1 @1 → key of kv head 1 @1
    {**edge((1, 3), (2, -1), "mlp", -0.8), "position": 3},   # L1H3 @3 (reads that key back) → L2 MLP @3
    {**edge((2, -1), (3, -1), "logits", -2.0), "position": 3},
])


def test_split_by_position_puts_each_token_in_its_column():
    tokens, split = TOKENS, SPLIT_EDGES
    fig = plots.circuit_graph(split, N_LAYER, N_HEAD, N_KV_HEAD, tokens=tokens, node_scores={"L1H3 @3": -0.8})
    width = plots.column_width(N_HEAD)
    (nodes,) = [t for t in fig.data if t.name == plots.NODE_TRACE]
    where = {(d[0], int(d[1])): (x, y) for d, x, y in zip(nodes.customdata, nodes.x, nodes.y)}
    # the same float64 sums
    assert_close(where[("L1H3", 3)], (3 + 3 * width, 2.0), ulps=8)
    assert_close(where[("L0H1", 1)], (1 + 1 * width, 1.0), ulps=8)
    assert_close(where[("logits", 3)], ((N_HEAD - 1) / 2 + 3 * width, N_LAYER + 1.0), ulps=8)
    assert ("L1H2", 1) in where and ("L1H3", 1) in where  # the key's kv group at position 1
    (back,) = [t for t in fig.data if t.name.startswith("attention reads back")]
    segments = {tuple(np.round(back.x[i:i + 2], 6)) for i in range(0, len(back.x), 3)}
    assert segments == {(3 + 1 * width, 3 + 3 * width)}  # L1H3 reads at 1, writes at 3
    assert list(fig.layout.xaxis.ticktext) == ["0·a", "1·␣b", "2·␣c", "3·␣d"]
    assert fig.layout.margin.t > plots.MARGIN["t"]  # room for the title above the token names
    hover = [t for t in fig.data if t.name == "edges"][0].hovertext
    assert "L0H1 → L1KV1 k (k) @1: -0.5" in hover
    with pytest.raises(ValueError, match="position"):
        plots.circuit_graph(split.drop(columns="position"), N_LAYER, N_HEAD, N_KV_HEAD, tokens=tokens)


def test_head_reads_figure_puts_weights_over_this_prompt():
    allowed = np.random.default_rng(0).random((3, 2, N_HEAD))
    used = np.random.default_rng(1).normal(size=(3, 2, N_HEAD))
    fig = plots.head_reads_figure(allowed, used, "L2H1")
    assert len(fig.data) == 6 and [t.colorscale[0][1] for t in fig.data[:2]] != [None, None]
    assert_close(np.asarray(fig.data[0].z), allowed[0], ulps=8)  # copied into the figure
    assert_close(np.asarray(fig.data[5].z), used[2], ulps=8)
    assert fig.layout.annotations[0].text == "q-composition into L2H1"
    with pytest.raises(ValueError, match="same shape"):
        plots.head_reads_figure(allowed, used[:2], "L2H1")
