"""The app layer's promises, on every page and every setting: a knocked-out view is that run's own
numbers (never a plain run's cached ones), every setting survives a link, a view file reopens the
view, and the page registry is what app.py routes."""
from __future__ import annotations

import json

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from gptviz.ui.navigation import PAGES, tab_labels
from gptviz.ui.settings import BY_KEY, SETTINGS, URL_TEXT_LIMIT
from page_helpers import APP, charts, open_page, open_tab, run_ok

KNOCK_OUT = {"knockout": "L0H1, L0 MLP", "layer": "2", "head": "1", "emb_vectors": "residual after layer 1",
             "prompt": "When Mary and John went to the store, John gave a drink to"}
# what a knock-out does not change (or, on Why and Circuit, never shows)
SAME_AS_PLAIN = {"tokens", "attention_at_scale", "why", "circuit", "train", ("embeddings", "Input vectors"),
                 ("embeddings", "Position table"), ("inside_block", "Positions")}
EXPLAINS_PLAIN = {"why", "circuit"}


def page_tabs() -> list[tuple[str, str | None]]:
    return [(page.key, label) for page in PAGES for label in (tab_labels(page.key) or [None])]


def drawn(at: AppTest) -> dict[str, str]:
    """Every chart and every table of the page: what a user sees."""
    tables = {f"table{i}": d.value.to_json() for i, d in enumerate(at.dataframe)}
    return charts(at) | tables | {f"metric{i}": f"{m.label}={m.value}" for i, m in enumerate(at.metric)}


def fresh(page: str, tab: str | None, params: dict, model: str) -> AppTest:
    st.cache_resource.clear()  # a new server: nothing computed for another run can be served
    st.cache_data.clear()
    at = open_page(page, params={"model": model, **params})
    return open_tab(at, f"{page}_tab", tab) if tab else at


@pytest.mark.parametrize("page, tab", page_tabs(), ids=[f"{p}-{t}" for p, t in page_tabs()])
def test_the_knock_out_switch_draws_the_knocked_out_run(app_env, page, tab):
    """Switching the knock-out view on in a session draws exactly what a fresh session that starts with
    it draws, and, where the knock-out changes the numbers, not what the plain run drew."""
    at = fresh(page, tab, KNOCK_OUT, app_env["gpt2"])
    plain = drawn(at)
    at.session_state["knockout_view"] = True
    switched = drawn(run_ok(at))
    if page in EXPLAINS_PLAIN:  # these pages explain the plain run, and their banner says so
        assert any("This page explains the plain run" in i.value for i in at.main.info)
    else:
        assert any("Knocked-out run" in w.value for w in at.main.warning)
    started = fresh(page, tab, KNOCK_OUT | {"knockout_view": "true"}, app_env["gpt2"])
    assert drawn(started) == switched
    if page not in SAME_AS_PLAIN and (page, tab) not in SAME_AS_PLAIN:
        assert switched != plain and set(switched) == set(plain)


URL_SETTINGS = [s for s in SETTINGS if s.url]
PAGE_FILES = {page.key: page.file for page in PAGES}


@pytest.mark.parametrize("setting", URL_SETTINGS, ids=[s.key for s in URL_SETTINGS])
def test_every_setting_survives_a_link(app_env, setting):
    """Set it on its page, read the address bar, open a fresh session at that address: the same
    setting, the same page drawn."""
    page = "overview" if setting.where == "sidebar" else setting.where
    example = app_env["llama"] if setting.key == "model" else setting.example
    at = open_page(page)
    at.session_state[setting.key] = example
    run_ok(at)
    params = dict(at.query_params.items())
    assert params[setting.key] == setting.dump(example)
    again = open_page(page, params=params)
    assert again.session_state[setting.key] == example
    assert drawn(again) == drawn(at)


def test_every_setting_is_declared_once_with_a_valid_example():
    assert len(BY_KEY) == len(SETTINGS)
    for setting in SETTINGS:
        assert setting.example != setting.default, setting.key
        assert setting.check(setting.example) == setting.example, setting.key
        assert setting.parse(setting.dump(setting.example)) == setting.example, setting.key
        assert setting.where == "sidebar" or setting.where in PAGE_FILES, setting.key


def test_a_prompt_too_long_for_a_link_says_so_and_a_view_file_brings_it_back(app_env, downloaded):
    long_prompt = "The cat sat on the mat. " * 120  # 2,880 characters
    at = open_page("next_token", app_env["gpt2"], long_prompt)
    at.session_state["temperature"] = 0.5
    at.session_state["position"] = 3
    run_ok(at)
    assert "prompt" not in at.query_params and at.query_params["temperature"] == "0.5"
    assert any("too long for a link" in i.value for i in at.main.info)
    (button,) = [b for b in at.get("download_button") if b.proto.label.startswith("Download this view")]
    data = downloaded(button)
    content = json.loads(data)
    assert content["settings"]["prompt"] == long_prompt and len(long_prompt) > URL_TEXT_LIMIT
    assert content["settings"]["temperature"] == 0.5 and content["settings"]["position"] == 3
    shown = drawn(at)

    other = open_page("next_token", app_env["llama"], "Something else")
    other.file_uploader(key="view_file_upload").upload("view.json", data, "application/json")
    run_ok(other)
    assert other.session_state["prompt"] == long_prompt and other.session_state["model"] == app_env["gpt2"]
    assert any("Opened the view file view.json" in m.value for m in other.main.success)
    assert drawn(other) == shown


def test_a_file_that_is_not_a_view_says_so(app_env):
    at = open_page("tokens", app_env["gpt2"], "Keep this text")
    for data in (b"\xff\xfe not json", b'{"settings": {}}', b'{"gptviz_view": 1, "settings": [1], "ids": []}'):
        at.file_uploader(key="view_file_upload").upload("bad.json", data, "application/json")
        run_ok(at)
        assert any("view file" in e.value for e in at.error) and at.session_state["prompt"] == "Keep this text"
    values = {"prompt": "Hello", "temperature": "hot", "nonsense": 1, "layer": 1}
    at.file_uploader(key="view_file_upload").upload("odd.json", json.dumps(
        {"gptviz_view": 1, "settings": values, "ids": [1]}).encode(), "application/json")
    run_ok(at)
    assert at.session_state["prompt"] == "Hello" and at.session_state["temperature"] == 1.0
    (note,) = [m.value for m in at.main.success]
    assert "temperature" in note and "nonsense" in note and "token ids differ" in note


def test_app_routes_the_page_registry(app_env):
    at = AppTest.from_file(APP, default_timeout=120)
    run_ok(at)
    for page in PAGES:
        at.switch_page(page.file)
        run_ok(at)
        assert [t.value for t in at.title] == [page.title]


NEW_ARCHITECTURES = ["gpt_neox", "gemma2", "phi3", "olmo2"]


@pytest.mark.parametrize("case", NEW_ARCHITECTURES)
def test_every_page_and_tab_on_the_newer_architectures(app_env, case, tmp_path, monkeypatch):
    """Parallel branches and partial rotary (Pythia), soft-capped scores and logits (Gemma 2), fused
    projections (Phi-3), norms after the sublayers (OLMo-2): every page and tab draws, and the Attention
    page shows a soft-cap stage exactly where the model has one."""
    from test_fidelity import ARCH_CASES, save_random

    config_class, kwargs, _ = ARCH_CASES[case]
    monkeypatch.setenv("GPTVIZ_MODEL_DIRS", str(save_random(tmp_path / case, config_class, 0, **kwargs)))
    for page, tab in page_tabs():
        at = open_page(page, f"local: {case}", "When Mary and John went to the store, John gave a drink to")
        if tab:
            open_tab(at, f"{page}_tab", tab)
        assert not at.error, (page, tab, [e.value for e in at.error])
        if (page, tab) == ("inside_block", "Norm"):
            text = " ".join(m.value for m in at.markdown)
            assert ("**parallel**" in text) == (case == "gpt_neox") and "This model's block: `" in text
        if (page, tab) == ("attention", "Step by step"):
            titles = " ".join(a["text"] for a in json.loads(charts(at)["attn_stages"])["layout"]["annotations"])
            assert ("soft-cap" in titles) == (case == "gemma2"), titles
