"""Next token, Logit lens and Attention at scale in AppTest: both tiny models, awkward prompts,
and every widget changing what is shown."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from conftest import save_tiny_gpt2

APP = Path(__file__).resolve().parents[1] / "app.py"
LONG = "The quick brown fox jumps over the lazy dog. " * 20  # 200 tokens: over both tiny contexts
PROMPTS = ["Hi", "", "  \n", "ünïcödé 🤗🤗 ok\n\n\tend", LONG]
TITLES = {"next_token": "Next token", "logit_lens": "Logit lens", "attention_at_scale": "Attention at scale"}


@pytest.fixture(scope="module")
def long_gpt2_dir(tmp_path_factory) -> Path:
    """A tiny GPT-2 with a 600-token context, to reach the logit lens's window mode."""
    return save_tiny_gpt2(tmp_path_factory.mktemp("models") / "tiny-gpt2-long", n_positions=600)


def open_page(stem: str, model_label: str | None = None, **state) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.switch_page(f"pages/{stem}.py")
    at.run()
    if model_label is not None:
        at.selectbox(key="model").set_value(model_label)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


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
    at.number_input(key="position").set_value(60)
    rerun(at)
    at.text_area(key="prompt").set_value("Hi there")
    rerun(at)
    assert at.number_input(key="position").value == at.number_input(key="position").max
    at.switch_page("pages/logit_lens.py")
    rerun(at)
    assert at.number_input(key="position").value <= 1


def test_next_token_widgets_change_the_view(app_env):
    at = open_page("next_token")
    top, dist = specs(at)
    last = at.number_input(key="position").value
    assert last == at.number_input(key="position").max  # starts at the last token
    at.number_input(key="position").set_value(2)
    rerun(at)
    assert specs(at)[0] != top
    assert any("really next" in m.value for m in at.markdown)

    at.number_input(key="n_top").set_value(5)
    rerun(at)
    assert len(json.loads(specs(at)[0])["data"][0]["y"]) == 5
    assert len(frame_with(at, "kept")) == 5

    dist = specs(at)[1]
    at.slider(key="temperature").set_value(2.5)
    rerun(at)
    assert specs(at)[1] != dist
    assert float(metric(at, "Entropy sampled")) > float(metric(at, "Entropy at T = 1"))

    assert metric(at, "Tokens kept") == "50,257"
    at.slider(key="top_p").set_value(0.3)
    rerun(at)
    kept = int(metric(at, "Tokens kept").replace(",", ""))
    assert 1 <= kept < 50257 and float(metric(at, "Mass kept")) >= 0.3 - 1e-6

    at.checkbox(key="dist_log").check()
    rerun(at)
    assert json.loads(specs(at)[1])["layout"]["yaxis"]["type"] == "log"


def test_seed_changes_the_sampled_token(app_env):
    tokens = []
    for seed in (1, 2):
        at = open_page("next_token")
        at.number_input(key="seed").set_value(seed)
        rerun(at)
        at.button(key="sample_next").click()
        rerun(at)
        tokens.append(at.session_state["gen"])
    assert tokens[0] != tokens[1]


def test_generated_token_reaches_the_sidebar_and_other_pages(app_env):
    at = open_page("next_token")
    at.button(key="greedy_next").click()
    rerun(at)
    generated = int(at.session_state["gen"])
    assert any("1 generated token appended" in c.value for c in at.sidebar.caption)
    steps = frame_with(at, "filtered probability")
    assert steps["id"].tolist() == [generated] and steps["rank"].tolist() == [1]
    assert any("generated token(s), highlighted" in c.value for c in at.caption)
    at.switch_page("pages/tokens.py")
    rerun(at)
    tokens = frame_with(at, "id")
    assert tokens["id"].iloc[-1] == generated
    at.switch_page("pages/logit_lens.py")
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
    assert any("context is full" in w.value for w in at.warning)


def test_logit_lens_widgets_change_the_view(app_env):
    at = open_page("logit_lens", app_env["llama"])
    heatmap = json.loads(specs(at)[0])
    assert heatmap["data"][0]["texttemplate"] == "%{text}"  # short prompt: tokens in the cells
    assert len(heatmap["data"][0]["y"]) == 3  # 2 layers + the final stream
    table = frame_with(at, "target rank")
    assert table["target rank"].iloc[-1] == 1  # default target: the top prediction at the last position

    at.number_input(key="position").set_value(1)
    rerun(at)
    moved = frame_with(at, "target rank")
    assert not moved["target probability"].equals(table["target probability"])

    at.text_input(key="lens_target").set_value(" xylophonists")
    rerun(at)
    assert any("is 4 tokens" in i.value for i in at.info)
    target = frame_with(at, "target rank")
    assert not target["target probability"].equals(moved["target probability"])

    at.text_input(key="lens_target").set_value(" the")
    rerun(at)
    assert not at.info
    assert not frame_with(at, "target rank")["target probability"].equals(target["target probability"])


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
