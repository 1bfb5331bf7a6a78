"""AppTest of the Circuit page: on both tiny models and both offline models, its graph, faithfulness, composition
and edge table; a node click focuses the head everywhere and offers it for the knock-out set; the settings and the
circuit file round trip."""
from __future__ import annotations

import json

import pytest

from gptviz.plots.circuit import NODE_TRACE
from page_helpers import chart, open_page, open_tab, run_ok
from test_pages_why import PROMPT, SWAPPED, metric, param

TABS = ["Graph", "Faithfulness", "Weights vs prompt", "Edges"]


def start(model: str, prompt: str = PROMPT, corrupt: str = SWAPPED, source: str = "zero", **state):
    """The page on `model`; a name swap on a random tiny model leaves almost no gap, so those cut to zero."""
    at = open_page("circuit", model, prompt)
    at.session_state["corrupt"] = corrupt
    at.session_state["circuit_source"] = source
    for key, value in state.items():
        at.session_state[key] = value
    return run_ok(at)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_every_tab_on_both_tiny_families(app_env, family):
    at = start(app_env[family])
    assert at.title[0].value == "Circuit"
    assert "circuit_graph" in [c.key for c in at.get("plotly_chart")]
    nodes = [t for t in chart(at, "circuit_graph")["data"] if t.get("name") == NODE_TRACE]
    assert nodes and nodes[0]["customdata"]
    assert metric(at, "Faithfulness: the circuit alone").endswith("%")
    for tab, key in zip(TABS[1:], ["circuit_curve", "circuit_composition", None]):
        open_tab(at, "circuit_tab", tab)
        if key is not None:
            assert key in [c.key for c in at.get("plotly_chart")], tab
        if tab == "Weights vs prompt":  # the head in focus: layer 0 reads no head; layer 1 does
            assert any("reads only the embeddings" in i.value for i in at.info)
            at.session_state["layer"] = 1
            run_ok(at)
            assert "circuit_head_reads" in [c.key for c in at.get("plotly_chart")]
    assert at.dataframe  # the edge table
    assert param(at, "circuit_tab") == "Edges"


def test_every_source_and_method(app_env):
    at = start(app_env["llama"])
    for source in ["mean", "zero"]:
        at.session_state["circuit_source"] = source
        run_ok(at)
        assert "circuit_graph" in [c.key for c in at.get("plotly_chart")], source
    at.session_state["circuit_steps"] = 3  # integrated gradients by default
    run_ok(at)
    assert at.number_input(key="circuit_steps").value == 3 and param(at, "circuit_steps") == "3"
    at.session_state["circuit_method"] = "eap"
    run_ok(at)
    assert param(at, "circuit_method") == "eap"
    assert "circuit_steps" not in [n.key for n in at.number_input]  # one pass: no steps to pick


def test_a_corrupted_prompt_of_another_length_says_so(app_env):
    at = start(app_env["gpt2"], corrupt="Mary went home", source="corrupted")
    assert any("different lengths" in e.value for e in at.error)
    assert "circuit_graph" not in [c.key for c in at.get("plotly_chart")]


def test_a_picked_node_goes_into_the_knock_out_set_and_out_again(app_env):
    """(The click itself, which focuses the head, is in the browser test.)"""
    at = start(app_env["llama"])
    at.session_state["_circuit_picked"] = "L1H4"
    run_ok(at)
    at.button(key="circuit_knockout").click()
    run_ok(at)
    assert at.session_state["knockout"] == "L1H4"
    assert "Take L1H4 out of" in at.button(key="circuit_knockout").label
    at.button(key="circuit_knockout").click()
    run_ok(at)
    assert at.session_state["knockout"] == ""


def test_size_snaps_and_lives_in_the_url(app_env):
    at = start(app_env["gpt2"], circuit_n=37)
    assert at.session_state["circuit_n"] == 30
    assert param(at, "circuit_n") == "30"


@pytest.mark.parametrize("model", ["smollm2-135m", "gemma3-270m"])
def test_the_name_swap_circuit_on_the_offline_models(model):
    at = open_page("circuit", model, PROMPT, timeout=600)
    # a first visit: the name swap suggested, and its graph drawn at once
    assert at.session_state["corrupt"] == SWAPPED and "circuit_graph" in [c.key for c in at.get("plotly_chart")]
    at.session_state["why_target"] = "Mary"
    at.session_state["why_contrast"] = "John"
    at.session_state["corrupt"] = SWAPPED
    run_ok(at)
    assert "circuit_graph" in [c.key for c in at.get("plotly_chart")]
    assert float(metric(at, "Metric: logit difference")) > 1  # " Mary" over " John"
    circuit, complement = (float(metric(at, label).rstrip("%")) for label in
                           ("Faithfulness: the circuit alone", "The complement"))
    assert circuit > complement
    labels = [t for t in chart(at, "circuit_graph")["data"] if t.get("name") == NODE_TRACE][0]["customdata"]
    assert "logits" in json.dumps(labels)
    open_tab(at, "circuit_tab", "Weights vs prompt")
    assert "circuit_composition" in [c.key for c in at.get("plotly_chart")]


def test_nodes_split_by_position(app_env):
    at = start(app_env["llama"], circuit_split=True, circuit_n=50)
    graph = chart(at, "circuit_graph")
    nodes = [t for t in graph["data"] if t.get("name") == NODE_TRACE][0]
    assert all(len(row) == 2 for row in nodes["customdata"])  # [label, position]
    assert graph["layout"]["xaxis"]["ticktext"][0].startswith("0·")
    assert "by position" in graph["layout"]["title"]["text"]
    open_tab(at, "circuit_tab", "Faithfulness")
    assert "circuit_curve" in [c.key for c in at.get("plotly_chart")]
    at.session_state["prompt"] = " ".join(["word"] * 30)  # past the split's limit: one node per component
    run_ok(at)
    assert any("split by position for prompts of up to" in c.value for c in at.caption)


def test_a_saved_circuit_file_reopens_the_same_graph(app_env, downloaded):
    at = start(app_env["llama"], circuit_n=20, circuit_method="eap")
    graph = chart(at, "circuit_graph")
    (button,) = [b for b in at.get("download_button") if b.proto.label.startswith("Save this circuit")]
    data = downloaded(button)
    saved = json.loads(data)
    assert saved["settings"]["circuit_n"] == 20 and saved["edges"]
    other = start(app_env["llama"], prompt="Something else entirely", circuit_n=500, circuit_split=True)
    other.file_uploader(key="circuit_upload").set_value(("circuit.json", data, "application/json"))
    run_ok(other)
    assert any("its settings are this view's" in s.value and "are the same" in s.value for s in other.success)
    assert other.session_state["circuit_n"] == 20 and not other.session_state["circuit_split"]
    assert chart(other, "circuit_graph")["data"] == graph["data"]
    other.file_uploader(key="circuit_upload").set_value(("bad.json", b"{}", "application/json"))
    run_ok(other)
    assert any("not a circuit file" in e.value for e in other.error)


@pytest.mark.parametrize("case", ["gpt_neox", "gemma2", "phi3", "olmo2", "mistral", "qwen3"])
def test_every_tab_on_every_architecture(app_env, case, tmp_path, monkeypatch):
    """Parallel blocks, soft-caps and post norms, fused projections, norms only after, sliding windows, per-head
    q/k norms: the graph (whole and split by position), the curve, composition and the table all draw."""
    from test_fidelity import ARCH_CASES, save_random

    config_class, kwargs, _ = ARCH_CASES[case]
    monkeypatch.setenv("GPTVIZ_MODEL_DIRS", str(save_random(tmp_path / case, config_class, 0, **kwargs)))
    at = start(f"local: {case}")
    for tab, key in zip(TABS, ["circuit_graph", "circuit_curve", "circuit_composition", None]):
        open_tab(at, "circuit_tab", tab)
        assert not at.error, (tab, [e.value for e in at.error])
        assert key is None or key in [c.key for c in at.get("plotly_chart")], tab
    open_tab(at, "circuit_tab", "Graph")
    at.session_state["circuit_split"] = True
    run_ok(at)
    assert "by position" in chart(at, "circuit_graph")["layout"]["title"]["text"]


def test_percentages_never_read_minus_zero():
    from gptviz.ui import percent

    assert (percent(-0.0001), percent(0.554), percent(1.0), percent(-0.2)) == ("0%", "55%", "100%", "-20%")


def test_a_first_visit_draws_a_graph_at_once(app_env):
    """No corrupted prompt yet: a prompt with two names gets a name swap suggested (and says so); one without
    gets the mean source (and says so) and its graph."""
    at = open_page("circuit", app_env["gpt2"], PROMPT)
    assert at.session_state["corrupt"] == SWAPPED  # (its graph: on the offline models, below; a random tiny
    assert any("name swap" in i.value and SWAPPED in i.value for i in at.info)  # model's swap leaves no gap)
    plain = open_page("circuit", app_env["gpt2"], "the cat sat on the mat and then the dog sat on it")
    assert any("**mean** source" in i.value for i in plain.info)
    assert "circuit_graph" in [c.key for c in plain.get("plotly_chart")]


def test_converge_raises_the_steps_until_the_scores_add_up(app_env):
    at = start(app_env["llama"], circuit_steps=1)
    assert any("with **1 steps**" in c.value for c in at.caption)
    at.session_state["circuit_converge"] = True
    run_ok(at)
    (note,) = [c.value for c in at.caption if "Integrated gradients with" in c.value]
    assert "Within 2%: converged." in note and "**1 steps**" not in note, note
    assert param(at, "circuit_converge") == "true"


def test_a_circuit_file_of_another_model_says_what_it_left_out(app_env, downloaded):
    at = start(app_env["llama"], circuit_n=20, circuit_method="eap")
    (button,) = [b for b in at.get("download_button") if b.proto.label.startswith("Save this circuit")]
    saved = json.loads(downloaded(button))
    saved["edges"].append({"sender": "L99H99", "receiver": "L100H0 q", "score": -1.0})
    at.file_uploader(key="circuit_upload").set_value(("foreign.json", json.dumps(saved).encode(), "application/json"))
    run_ok(at)
    assert any("L99H99 → L100H0 q" in w.value and "left out" in w.value for w in at.warning)
