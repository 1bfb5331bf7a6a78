"""The Train page in AppTest: the form and its estimate, a run of the induction preset watched to its end,
its checkpoints in the model picker (and every page opening one), the downloads."""
from __future__ import annotations

import time

import pytest

from gptviz.ui.navigation import PAGES
from page_helpers import open_page, run_ok


def wait_for_end(at, timeout_s: float = 180):
    """Rerun the page until the session's run has ended (the live section polls the worker's events)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = at.session_state["_train_jobs"][-1]
        if not job.active:
            return run_ok(at), job
        time.sleep(0.5)
        run_ok(at)
    raise AssertionError("the training did not end in time")


@pytest.fixture()
def trained(app_env, tmp_path, monkeypatch):
    """The induction preset, 60 steps, trained from the page."""
    monkeypatch.setenv("GPTVIZ_CACHE", str(tmp_path))
    at = open_page("train")
    at.selectbox(key="train_preset").set_value("induction")
    run_ok(at)
    at.number_input(key="train_iters").set_value(60)
    run_ok(at)
    assert any("parameters" in c.value and "steps" in c.value for c in at.caption), [c.value for c in at.caption]
    at.button(key="train_start").click()
    run_ok(at)
    return wait_for_end(at)


def test_a_run_is_watched_and_its_checkpoints_join_the_picker(trained):
    at, job = trained
    assert job.state == "finished", job.message
    keys = {c.key for c in at.get("plotly_chart")}
    assert {"train_loss_chart", "train_induction_chart", "train_prev_chart", "train_pattern_chart",
            "train_positions_chart"} <= keys
    picker = at.selectbox(key="model").options
    labels = [f"induction @ step {s} ({job.id})" for s in (0, 6, 12)]  # checkpoints every 10% of the steps
    assert all(label in picker for label in labels), picker
    assert at.selectbox(key="train_ckpt").options[-1] == f"induction @ step 60 ({job.id})"
    assert "Hugging Face folder (.zip)" in {b.proto.label for b in at.get("download_button")}
    # attention only: the book's GPTModel always has an MLP, so that download is refused, with the reason
    assert any("book's GPTModel cannot hold this model" in c.value for c in at.caption)


def test_every_page_opens_a_trained_checkpoint(trained):
    at, job = trained
    at.button(key="train_open").click()
    run_ok(at)
    assert at.session_state["model"] == f"induction @ step 60 ({job.id})"
    at.text_area(key="prompt").set_value("abcdefabcdef")  # the induction tokens: the base64 alphabet
    run_ok(at)
    for page in PAGES:
        at.switch_page(page.file)
        run_ok(at)
        assert not at.error, (page.key, [e.value for e in at.error])


def test_a_preset_from_a_link_fills_the_form(app_env):
    """?train_preset=induction gives the induction preset's model (2 layers, attention only), and a field the
    link sets (the steps) keeps the link's value."""
    at = open_page("train", params={"train_preset": "induction", "train_iters": "400"})
    assert at.number_input(key="train_n_layer").value == 2 and at.checkbox(key="train_attn_only").value
    assert at.number_input(key="train_d_model").value == 64 and at.number_input(key="train_iters").value == 400
    at.selectbox(key="train_preset").set_value("shakespeare-char")
    run_ok(at)
    assert at.number_input(key="train_n_layer").value == 4 and not at.checkbox(key="train_attn_only").value
