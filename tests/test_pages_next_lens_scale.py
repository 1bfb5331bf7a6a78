"""Next token, Logit lens and Attention at scale in AppTest: both tiny models, awkward prompts,
and every widget changing what is shown."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import page_helpers as pages
from conftest import save_tiny_gpt2
from gptviz.ui.navigation import BY_KEY
from page_helpers import open_tab

LONG = "The quick brown fox jumps over the lazy dog. " * 20  # 200 tokens: over both tiny contexts
PROMPTS = ["Hi", "", "  \n", "ünïcödé 🤗🤗 ok\n\n\tend", LONG]
TITLES = {key: BY_KEY[key].title for key in ("next_token", "logit_lens", "attention_at_scale")}


@pytest.fixture(scope="module")
def long_gpt2_dir(tmp_path_factory) -> Path:
    """A tiny GPT-2 with a 600-token context, to reach the logit lens's window mode."""
    return save_tiny_gpt2(tmp_path_factory.mktemp("models") / "tiny-gpt2-long", n_positions=600)


def open_page(stem: str, model_label: str | None = None, **state) -> AppTest:
    at = pages.open_page(stem, model_label)
    for key, value in state.items():
        at.session_state[key] = value
    return rerun(at)


def rerun(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    return at


def specs(at: AppTest) -> list[str]:
    return [chart.proto.spec for chart in at.get("plotly_chart")]


def frame_with(at: AppTest, column: str) -> pd.DataFrame:
    (found,) = [df.value for df in at.dataframe if column in df.value.columns]
    return found


def metric(at: AppTest, label_start: str) -> str:
    (found,) = [m.value for m in at.metric if m.label.startswith(label_start)]
    return found


@pytest.mark.parametrize("stem", list(TITLES))
@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_page_handles_many_prompts(app_env, stem, which):
    at = open_page(stem, app_env[which])
    for prompt in PROMPTS:
        at.text_area(key="prompt").set_value(prompt)
        rerun(at)
        assert at.title[0].value == TITLES[stem], prompt
        if not prompt.strip():
            assert "empty" in at.info[0].value
            continue
        assert not at.error
        assert at.get("plotly_chart"), prompt
        if prompt == LONG:
            assert any("left out" in w.value for w in at.warning)


def test_position_is_clamped_when_the_prompt_shrinks(app_env):
    at = open_page("next_token", prompt=LONG)
    at.number_input(key="_position_pick").set_value(60)
    rerun(at)
    assert at.session_state["position"] == 60 and any("token 60" in c.value for c in at.caption)
    at.session_state["position"] = 60  # a picked position the shorter prompt does not have
    at.session_state["prompt"] = "Hi there"
    rerun(at)
    pick = at.number_input(key="_position_pick")
    assert pick.value == pick.max == 1
    at.switch_page(BY_KEY["logit_lens"].file)
    rerun(at)
    assert at.number_input(key="_position_pick").value <= 1


def test_the_position_follows_the_last_token_until_picked(app_env):
    """Edit the prompt on one page, open another: it explains the new last token, and says which."""
    at = open_page("attention", prompt="The cat sat on the mat")
    open_tab(at, "attention_tab", "One query")
    at.text_area(key="prompt").set_value("The cat sat on the mat and then it slept")
    rerun(at)
    at.switch_page(BY_KEY["next_token"].file)
    rerun(at)
    T = len(at.session_state["prompt"].split())  # tiny GPT-2's BPE: one token per word here
    assert at.number_input(key="_position_pick").value == T - 1 and "position" not in at.session_state
    assert any(f"token {T - 1} `␣slept`" in c.value and "the last token" in c.value for c in at.caption)
    at.number_input(key="_position_pick").set_value(2)  # picked: it stays, named as picked
    rerun(at)
    at.switch_page(BY_KEY["why"].file)
    rerun(at)
    assert any("token 2 `␣sat`" in c.value and "picked" in c.value for c in at.caption)
    at.button(key="_position_follow").click()
    rerun(at)
    assert at.number_input(key="_position_pick").value == T - 1


def test_next_token_widgets_change_the_view(app_env):
    at = open_page("next_token")
    top, dist = specs(at)
    last = at.number_input(key="_position_pick").value
    assert last == at.number_input(key="_position_pick").max  # starts at the last token
    at.number_input(key="_position_pick").set_value(2)
    rerun(at)
    assert specs(at)[0] != top
    assert any("Really next" in m.value for m in at.markdown)

    at.number_input(key="n_top").set_value(5)
    rerun(at)
    assert len(json.loads(specs(at)[0])["data"][0]["y"]) == 5
    assert len(frame_with(at, "kept")) == 5

    dist = specs(at)[1]
    at.slider(key="temperature").set_value(2.5)
    rerun(at)
    assert specs(at)[1] != dist
    assert bits(metric(at, "Entropy sampled")) > bits(metric(at, "Entropy at T = 1"))

    assert metric(at, "Tokens kept") == "50,257"
    at.slider(key="top_p").set_value(0.3)
    rerun(at)
    kept = int(metric(at, "Tokens kept").replace(",", ""))
    assert 1 <= kept < 50257 and float(metric(at, "Mass kept")) >= 0.3 - 1e-6

    at.checkbox(key="dist_log").check()
    rerun(at)
    assert json.loads(specs(at)[1])["layout"]["yaxis"]["type"] == "log"
    assert {k: at.query_params[k] for k in ("n_top", "dist_log", "top_p")} == {"n_top": "5", "dist_log": "true",
                                                                             "top_p": "0.3"}


def bits(text: str) -> float:
    assert text.endswith(" bits") and not text.startswith("-"), text
    return float(text.removesuffix(" bits"))


def test_seed_changes_the_sampled_token(app_env):
    tokens = []
    for seed in (1, 2):
        at = open_page("next_token")
        at.number_input(key="seed").set_value(seed)
        rerun(at)
        at.button(key="sample_next").click()
        rerun(at)
        tokens.append(at.session_state["gen"])
        assert any(m.value.startswith("Generated `") for m in at.success)
    assert tokens[0] != tokens[1]


def test_generate_n_tokens_at_once_equals_one_at_a_time(app_env):
    at = open_page("next_token")
    at.number_input(key="n_generate").set_value(4)
    rerun(at)
    at.button(key="sample_next").click()
    rerun(at)
    four = at.session_state["gen"]
    assert len(four.split(",")) == 4
    one = open_page("next_token")
    for _ in range(4):
        one.button(key="sample_next").click()
        rerun(one)
    assert one.session_state["gen"] == four  # seed + step: the same tokens either way


def test_generated_token_reaches_the_sidebar_and_other_pages(app_env):
    at = open_page("next_token")
    at.button(key="greedy_next").click()
    rerun(at)
    generated = int(at.session_state["gen"])
    assert any("1 generated token appended" in c.value for c in at.sidebar.caption)
    steps = frame_with(at, "filtered probability")
    assert steps["id"].tolist() == [generated] and steps["rank"].tolist() == [1]
    assert any("generated token(s), highlighted" in c.value for c in at.caption)
    at.switch_page(BY_KEY["tokens"].file)
    rerun(at)
    tokens = frame_with(at, "id")
    assert tokens["id"].iloc[-1] == generated
    at.switch_page(BY_KEY["logit_lens"].file)
    rerun(at)
    heatmap = json.loads(specs(at)[0])
    assert len(heatmap["data"][0]["x"]) == len(tokens)  # the lens covers prompt + generated


def test_context_full_disables_sampling(app_env):
    at = open_page("next_token", prompt=LONG)  # longer than the context: generating slides the window
    assert not at.button(key="sample_next").disabled
    at.number_input(key="max_tokens").set_value(3)
    rerun(at)
    for _ in range(2):  # then generated tokens fill all but one place of the 3-token view
        at.button(key="greedy_next").click()
        rerun(at)
    assert at.button(key="sample_next").disabled and at.button(key="greedy_next").disabled
    assert any("view is full" in w.value for w in at.warning)


def test_logit_lens_widgets_change_the_view(app_env):
    at = open_page("logit_lens", app_env["llama"])
    heatmap = json.loads(specs(at)[0])
    assert heatmap["data"][0]["texttemplate"] == "%{text}"  # short prompt: tokens in the cells
    assert len(heatmap["data"][0]["y"]) == 3  # 2 layers + the final stream
    table = frame_with(at, "target rank")
    assert table["target rank"].iloc[-1] == 1  # default target: the top prediction at the last position

    at.number_input(key="_position_pick").set_value(1)
    rerun(at)
    moved = frame_with(at, "target rank")
    assert not moved["target probability"].equals(table["target probability"])

    at.text_input(key="lens_target").set_value("xylophonists")
    rerun(at)
    assert any("is 4 tokens" in c.value for c in at.caption) or any("tokens for this" in c.value for c in at.caption)
    (pick,) = at.radio  # with and without its leading space, with their ranks
    assert len(pick.options) == 2 and all("rank" in o for o in pick.options)
    target = frame_with(at, "target rank")
    assert not target["target probability"].equals(moved["target probability"])

    at.text_input(key="lens_target").set_value(" the")
    rerun(at)
    assert not frame_with(at, "target rank")["target probability"].equals(target["target probability"])
    assert at.query_params["lens_target"] == " the"


def test_logit_lens_window_for_long_sequences(app_env, long_gpt2_dir, monkeypatch):
    monkeypatch.setenv("GPTVIZ_MODEL_DIRS", os.pathsep.join([os.environ["GPTVIZ_MODEL_DIRS"], str(long_gpt2_dir)]))
    prompt = ("one two three four five " * 60).strip()  # 300 tokens
    at = open_page("logit_lens", "local: tiny-gpt2-long", prompt=prompt)
    assert any("a window of 64" in c.value for c in at.caption)
    x = json.loads(specs(at)[0])["data"][0]["x"]
    assert len(x) == 64 and x[-1].startswith("299·")
    at.slider(key="lens_start").set_value(0)
    rerun(at)
    assert json.loads(specs(at)[0])["data"][0]["x"][0].startswith("0·")
    at.selectbox(key="lens_width").set_value(32)
    rerun(at)
    assert len(json.loads(specs(at)[0])["data"][0]["x"]) == 32
    assert frame_with(at, "target rank")["target rank"].iloc[-1] == 1


def test_attention_at_scale_measures_within_a_tiny_budget(app_env):
    at = open_page("attention_at_scale")
    computed = specs(at)
    assert len(computed) == 2 and any("Press **Measure**" in i.value for i in at.info)
    at.number_input(key="scale_budget").set_value(1)
    at.button(key="measure").click()
    rerun(at)
    table = frame_with(at, "attention_fused_s")
    assert 1 <= len(table) and table["T"].tolist() == [16, 32, 64, 128][: len(table)]
    assert (table[["attention_fused_s", "rest_of_layer_s", "forward_s"]] > 0).all().all()
    assert (table["pattern_bytes_layer"] == 3 * table["T"] ** 2 * 4).all()
    assert at.success or any("Stopped at" in w.value for w in at.warning)
    time_fig = json.loads(specs(at)[2])
    assert time_fig["layout"]["xaxis"]["type"] == "log" and len(time_fig["data"]) == 6
    assert any("Measured:" in m.value for m in at.markdown)

    rerun(at)  # cached: the same table again without pressing
    assert frame_with(at, "attention_fused_s").equals(table)
    at.selectbox(key="model").set_value(app_env["llama"])
    rerun(at)
    assert any("Press **Measure**" in i.value for i in at.info)
    assert specs(at) != computed  # the llama's shapes give other numbers
