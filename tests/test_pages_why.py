"""AppTest of the Why this token? page on both tiny models: picking target and contrast, the maps,
a knock-out set shown on every page, activation patching, long and bad input; and its entry
points on Next token and Attention."""
from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from gptviz.ui.navigation import BY_KEY
from page_helpers import APP, data, open_tab, run_ok, spec
from test_pages_attention_heads import LONG_PROMPT, start

PROMPT = "When Mary and John went to the store, John gave a drink to"
SWAPPED = "When John and Mary went to the store, Mary gave a drink to"
MAPS = ["why_dla_map", "why_dla_layers", "why_ablation_map"]


def z_shape(trace: dict) -> tuple[int, ...]:
    """A heatmap's z shape, whether plotly sent it as a list or as a typed array."""
    z = trace["z"]
    if isinstance(z, dict):
        return tuple(int(n) for n in z["shape"].split(","))
    return np.shape(z)


def values(array) -> np.ndarray:
    """A plotly array as numpy, whether sent as a list or as a typed array (dtype + base64 bytes)."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"])
    return np.asarray(array)


def param(at: AppTest, key: str) -> str:
    """A URL parameter's value (AppTest may hold it as a one-item list)."""
    value = at.query_params[key]
    return value[0] if isinstance(value, list) else value


def texts(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown) + "\n".join(c.value for c in at.caption)


def metric(at: AppTest, label_start: str) -> str:
    (found,) = [m.value for m in at.metric if m.label.startswith(label_start)]
    return found


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_page_shows_the_maps_for_both_families(app_env, family):
    at = start("why", app_env[family], PROMPT)
    assert at.title[0].value == "Why this token?"
    assert [c.key for c in at.get("plotly_chart")] == ["why_dla_map", "why_dla_layers"]  # direct attribution at once
    L, nh = (3, 3) if family == "gpt2" else (2, 6)
    assert z_shape(data(at, "why_dla_map")[0]) == (L, nh)
    assert float(metric(at, "Difference")) < 1e-4  # the shares add up to the logit
    assert metric(at, "Metric: log-probability")
    open_tab(at, "why_tab", "Ablation map")
    heads, mlps = [t for t in data(at, "why_ablation_map") if t["type"] == "heatmap"]
    assert z_shape(heads) == (L, nh) and z_shape(mlps) == (L, 1) and mlps["x"] == ["MLP"]
    assert "Knocking out these heads hurts" in texts(at) or "No single head" in texts(at)
    assert [b.label for b in at.get("download_button") if "ablation_map" in b.label]
    assert len(at.expander) >= 3  # a "What am I looking at?" note per section


def test_target_and_contrast_picking(app_env):
    at = open_tab(start("why", app_env["gpt2"], PROMPT), "why_tab", "Ablation map")
    ablation = spec(at, "why_ablation_map")
    at.text_input(key="why_target").set_value("Mary")
    run_ok(at)
    radio = at.radio(key="why_target_pick")
    labels = [o.split("  (")[0] for o in radio.options]  # "␣Mary  (rank 4,950, p = …)"
    assert sorted(labels) == ["Mary", "␣Mary"]  # with and without the leading space, likelier first
    assert radio.value == labels[0].replace("␣", " ")
    other = labels[1].replace("␣", " ")
    radio.set_value(other)
    run_ok(at)
    assert at.session_state["why_target_pick"] == other and spec(at, "why_ablation_map") != ablation
    at.text_input(key="why_contrast").set_value(" John")
    run_ok(at)
    assert metric(at, "Metric: logit difference")
    assert any(m.label.startswith("Contrast") for m in at.metric)
    at.text_input(key="why_contrast").set_value(other)
    run_ok(at)
    at.radio(key="why_contrast_pick").set_value(other)
    run_ok(at)  # the contrast is the target itself
    assert any("contrast is the target" in w.value for w in at.warning)
    at.text_input(key="why_target").set_value("Supercalifragilistic")
    run_ok(at)
    assert any("tokens for this tokenizer" in c.value for c in at.caption)


def test_maps_are_computed_once_per_view_metric_and_kind(app_env, monkeypatch):
    """The ablation map reruns the model 300 times on SmolLM2: computed once per (run, metric, ablation)
    and reused when only the display changes (another tab, the gradient toggle, another page and back)."""
    from gptviz.analysis import attribution

    calls = []
    real = attribution.ablation_map
    monkeypatch.setattr(attribution, "ablation_map", lambda *a, **k: calls.append(a[1:3]) or real(*a, **k))
    at = open_tab(start("why", app_env["gpt2"], PROMPT), "why_tab", "Ablation map")
    at.toggle(key="why_gradient").set_value(True)
    run_ok(at)
    open_tab(at, "why_tab", "Direct attribution")
    open_tab(at, "why_tab", "Ablation map")
    at.switch_page(BY_KEY["attention"].file)
    run_ok(at)
    at.switch_page(BY_KEY["why"].file)
    run_ok(at)
    assert len(calls) == 1
    at.radio(key="ablation").set_value("mean")
    run_ok(at)
    assert len(calls) == 2 and calls[1][1] == "mean"


def test_ablation_kind_and_gradient_estimate(app_env):
    at = open_tab(start("why", app_env["llama"], PROMPT), "why_tab", "Ablation map")
    zero = spec(at, "why_ablation_map")
    at.radio(key="ablation").set_value("mean")
    run_ok(at)
    assert spec(at, "why_ablation_map") != zero
    at.toggle(key="why_gradient").set_value(True)
    run_ok(at)
    keys = [c.key for c in at.get("plotly_chart")]
    assert "why_gradient_map" in keys and "why_agreement" in keys
    points = data(at, "why_agreement")[1]
    assert len(values(points["x"])) == len(values(points["y"])) == 2 * 6 + 2  # every head and MLP
    assert -1 <= float(metric(at, "Correlation over heads")) <= 1


def test_knock_out_set_before_after_and_every_page(app_env):
    at = open_tab(start("why", app_env["gpt2"], PROMPT), "why_tab", "Knock out a set")
    assert any("set is empty" in i.value for i in at.info)
    at.session_state["layer"], at.session_state["head"] = 1, 2
    run_ok(at)
    at.button(key="why_add_head").click()
    run_ok(at)
    at.button(key="why_add_mlp").click()
    run_ok(at)
    assert at.text_input(key="knockout").value == "L1H2, L1 MLP" and param(at, "knockout") == "L1H2, L1 MLP"
    assert "why_compare" in [c.key for c in at.get("plotly_chart")]
    assert float(metric(at, "KL(before")) > 0
    before, after = data(at, "why_compare")
    assert before["name"] == "before" and len(before["y"]) == len(after["y"]) >= 10
    at.text_input(key="knockout").set_value("L0H0")
    run_ok(at)
    at.toggle(key="knockout_view").set_value(True)
    run_ok(at)
    assert param(at, "knockout_view") == "true"
    at.switch_page(BY_KEY["next_token"].file)
    run_ok(at)
    assert any("Knocked-out run" in w.value and "L0H0" in w.value for w in at.main.warning)
    at.button(key="knockout_off").click()
    run_ok(at)
    assert not any("Knocked-out run" in w.value for w in at.main.warning)
    assert at.session_state["knockout"] == "L0H0"  # the set stays; only the switch went off


def test_typed_head_names_knock_out_exactly_one_head(app_env):
    """"L1H2" knocks out head 2 of layer 1 and nothing else (a multiselect once took every fuzzy match)."""
    at = open_tab(start("why", app_env["gpt2"], PROMPT), "why_tab", "Knock out a set")
    at.text_input(key="knockout").set_value("L1H2")
    run_ok(at)
    assert at.session_state["knockout"] == "L1H2"
    assert "L1H2 knocked out" in json.loads(spec(at, "why_compare"))["layout"]["title"]["text"]
    at.text_input(key="knockout").set_value("L1H2, L1H22, L1 mlp")
    run_ok(at)
    assert at.session_state["knockout"] == "L1H2, L1 MLP, L1H22"
    assert any("`L1H22`" in w.value for w in at.warning)


def test_knocked_out_run_from_a_link(app_env):
    """Everything lives in the URL: a link with a knock-out set and the switch on shows that run."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update({"model": app_env["llama"], "knockout": "L1H5,L0 MLP,junk,L9H9", "knockout_view": "true",
                            "ablation": "half", "why_target": "Mary", "prompt": PROMPT})
    at.run()
    at.switch_page(BY_KEY["logit_lens"].file)
    run_ok(at)
    assert any("L1H5, L0 MLP knocked out (zero ablation)" in w.value for w in at.main.warning)
    at.switch_page(BY_KEY["why"].file)
    run_ok(at)
    assert at.session_state["ablation"] == "zero"  # "half" is not an ablation: left out
    assert at.text_input(key="why_target").value == "Mary"
    # this page explains the plain run, and its banner says so (not "this page shows the knocked-out run")
    assert any("This page explains the plain run" in i.value for i in at.main.info)
    assert not any("this page shows the run with" in w.value for w in at.main.warning)
    open_tab(at, "why_tab", "Knock out a set")
    assert any("`junk`" in w.value and "`L9H9`" in w.value for w in at.warning)


def test_patching_with_a_name_swap_and_bad_corruptions(app_env):
    at = open_tab(start("why", app_env["llama"], PROMPT), "why_tab", "Patching")
    assert any("Suggest a name swap" in i.value for i in at.info)
    at.button(key="why_swap").click()
    run_ok(at)
    assert at.text_area(key="corrupt").value == SWAPPED
    keys = [c.key for c in at.get("plotly_chart")]
    for site in ("resid", "z", "attn_out", "mlp_out"):
        assert f"why_patch_{site}" in keys
    resid = data(at, "why_patch_resid")[0]
    T = len(resid["x"])
    assert z_shape(resid) == (2 + 1, T) and resid["y"][0] == "embed"
    assert z_shape(data(at, "why_patch_z")[0]) == (2, 6)
    at.text_area(key="corrupt").set_value("When Mary went to the store")
    run_ok(at)
    assert any("different lengths" in e.value for e in at.error)
    assert any(list(d.value.columns) == ["clean", "corrupted"] for d in at.dataframe)
    at.text_area(key="corrupt").set_value(PROMPT)
    run_ok(at)
    assert any("no gap" in w.value for w in at.warning)
    at.session_state["prompt"] = "the cat sat on the mat"
    run_ok(at)
    at.button(key="why_swap").click()
    run_ok(at)
    assert any("No two names" in i.value for i in at.info)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_long_empty_and_short_prompts(app_env, family):
    at = open_tab(start("why", app_env[family], LONG_PROMPT), "why_tab", "Ablation map")
    assert any("left out" in w.value for w in at.warning)
    assert "why_ablation_map" not in [c.key for c in at.get("plotly_chart")]  # long: waits for the switch
    at.toggle(key="why_compute").set_value(True)
    run_ok(at)
    assert "why_ablation_map" in [c.key for c in at.get("plotly_chart")]
    at.session_state["prompt"] = "   "
    run_ok(at)
    assert any("empty" in i.value for i in at.info)
    at.session_state["prompt"] = "Hi there"
    run_ok(at)
    assert "why_ablation_map" in [c.key for c in at.get("plotly_chart")]
    at.number_input(key="_position_pick").set_value(0)
    run_ok(at)
    assert "after token 0" in texts(at)


def test_entry_points_on_next_token_and_attention(app_env):
    at = start("next_token", app_env["gpt2"], PROMPT)
    (link,) = [p for p in at.get("page_link") if "Which heads" in p.proto.label]
    assert link.proto.page.endswith("why")
    at.session_state["why_target"] = at.session_state["why_target_pick"] = " Mary"
    run_ok(at)
    (link,) = [p for p in at.get("page_link") if "Which heads" in p.proto.label]
    assert "␣Mary" in link.proto.label
    at.switch_page(BY_KEY["why"].file)
    run_ok(at)
    assert metric(at, "Target") == "␣Mary"
    at.switch_page(BY_KEY["attention"].file)
    run_ok(at)
    assert [p for p in at.get("page_link") if "Why this token" in p.proto.label]
    assert json.loads(spec(at, "attn_pattern"))  # the page itself is unchanged


def test_a_corrupted_prompt_is_cut_like_the_clean_one():
    """A long prompt cut to the context keeps the BOS its tokenizer puts first; so does the corrupted one."""
    from types import SimpleNamespace

    from gptviz.ui.question import cut_like_clean

    bos_model = SimpleNamespace(tokenizer=SimpleNamespace(add_bos=True))
    v = SimpleNamespace(model=bos_model, prompt_ids=(1, 12, 13), generated=(7,))  # clean [1, 10, 11, 12, 13] cut
    assert cut_like_clean(v, [1, 20, 21, 22, 23]) == (1, 22, 23, 7)
    plain = SimpleNamespace(model=SimpleNamespace(tokenizer=SimpleNamespace(add_bos=False)), prompt_ids=(12, 13),
                            generated=())
    assert cut_like_clean(plain, [20, 21, 22, 23]) == (22, 23)
