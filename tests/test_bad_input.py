"""Bad input, table-driven: every awkward prompt goes through the core (`gptviz.trace`) and
through every page of the app; then widget values at and past their bounds, and garbage URLs.

A new case is one line in CASES. The core either traces it or raises a ValueError whose
message says what to do; a page never shows an exception, keeps the prompt exactly as typed,
and says why when it cannot draw the prompt (empty, too long for the context, or characters
the model's vocabulary lacks).
"""
from __future__ import annotations

import math
import os
import unicodedata
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

import gptviz
from conftest import save_tiny_gpt2
from gptviz import ui
from gptviz.sampling import SamplingSettings, next_token_distribution
from gptviz.tokenizer import TokenizerError
from gptviz.ui import view_state
from gptviz.ui.navigation import PAGES as NAV_PAGES
from gptviz.ui.settings import DEFAULT_PROMPT, URL_TEXT_LIMIT

APP = Path(__file__).resolve().parents[1] / "app.py"
SMOLLM2 = "smollm2-135m"

PLANES = "A \U0001F600 \U00020000 \U00030000 \U000E0001 \U000F0000 \U00100000"  # 0, 1, 2, 3, 14, 15, 16
MEGABYTE = ("Lorem ipsum dolor sit amet, 12345 ünïcödé 🤗 naïve café.\n" * 20_000)[:1_000_000]
CASES = [  # (id, prompt): one line per case
    ("empty", ""),
    ("whitespace", " \t\n  \r\n \u3000"),
    ("1MB", MEGABYTE),
    ("over_context", "The quick brown fox jumps over the lazy dog. " * 30),  # 300 tokens; tiny n_ctx 128/160
    ("control_chars", "".join(map(chr, range(0x20))) + "\x7f"),
    ("nul", "\x00"),
    ("surrogates", "a\ud800b \udfff c\ud83d\ude00"),  # two lone halves and one pair
    ("zero_width_bidi", "a\u200bb\u200c\u200d\u2060\ufeff \u202eevil\u202c \u200fRTL\u200e \u2066iso\u2069"),
    ("combining", "e\u0301\u0302\u0303 Z\u0335\u0321" + "\u0300" * 50),
    ("emoji_zwj", "👨\u200d👩\u200d👧\u200d👦 🏳️\u200d🌈 🧑🏽\u200d💻"),
    ("every_plane", PLANES),
    ("special_gpt2", "<|endoftext|> after the end <|endoftext|>"),
    ("special_chatml", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
    ("smollm2_unencodable", "end of\x04transmission, ack\x06, dc3\x13"),
]
SUBSET = ["empty", "1MB", "over_context", "control_chars", "special_chatml", "smollm2_unencodable"]
ALL_CASES_PAGES = ["attention", "next_token"]


def case(case_id: str) -> str:
    return dict(CASES)[case_id]


PAGES = {page.key: (page.file, page.title) for page in NAV_PAGES}


def as_sent_by_browser(text: str) -> str:
    """What the browser sends for `text`: Streamlit's protocol carries UTF-8, so a lone UTF-16
    surrogate arrives as U+FFFD (a pair is joined)."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def missing_chars(model, text: str) -> set[str]:
    """Characters with a UTF-8 byte that has no token of its own in the model's vocabulary."""
    missing = set()
    for b in range(256):
        try:
            model.tokenizer.encoding.encode_single_token(bytes([b]))
        except KeyError:
            missing.add(b)
    return {c for c in as_sent_by_browser(text) if missing & set(c.encode())}


@pytest.fixture(scope="module")
def smollm2():
    return gptviz.load_model(SMOLLM2)


def test_the_table_covers_what_it_claims():
    ids = [case_id for case_id, _ in CASES]
    assert len(ids) == len(set(ids)) and set(SUBSET) <= set(ids)
    assert {ord(c) for c in case("control_chars")} == set(range(0x20)) | {0x7F}
    planes = {ord(c) >> 16 for c in PLANES if not c.isspace()}
    assert planes == {0, 1, 2, 3, 14, 15, 16}  # every plane that has assigned characters
    assert all(unicodedata.category(c) != "Cn" for c in PLANES)
    assert len(MEGABYTE) == 1_000_000
    assert set(PAGES) == {"overview", "tokens", "embeddings", "attention", "inside_block", "next_token",
                          "compare_heads", "logit_lens", "attention_at_scale", "why", "circuit", "train"}


# ---- (a) the core ---------------------------------------------------------------------------
@pytest.mark.parametrize("case_id, text", CASES, ids=[c for c, _ in CASES])
@pytest.mark.parametrize("which", ["tiny_gpt2", "tiny_llama", SMOLLM2])
def test_core_traces_or_says_why(which, case_id, text, request):
    model = request.getfixturevalue("smollm2" if which == SMOLLM2 else which)
    if case_id == "1MB" and which == SMOLLM2:
        text = text[:60_000]  # past SmolLM2's 8192-token context; the full megabyte is the tokenizer's test
    fixed = as_sent_by_browser(text)
    lacking = missing_chars(model, text)
    try:
        tr = gptviz.trace(model, text)
    except ValueError as err:  # TokenizerError is a ValueError; any other exception fails the test
        message = str(err)
        if lacking:
            assert isinstance(err, TokenizerError) and f"U+{ord(min(lacking)):04X}" in message, message
        elif not text:
            assert "empty" in message
        else:
            n = len(model.tokenizer.encode(text))
            assert n > model.config.n_ctx and f"context of {model.config.n_ctx}" in message, message
        assert "shorten" in message or "remove" in message or "type some text" in message, message
        return
    assert not lacking and text
    assert 0 < tr.n_tokens <= model.config.n_ctx
    assert model.tokenizer.decode(tr.ids) == fixed
    assert tr.logits.shape == (tr.n_tokens, model.config.vocab_size) and torch.isfinite(tr.logits).all()


def test_special_looking_text_is_plain_unless_allowed(tiny_gpt2, smollm2):
    plain = gptviz.trace(tiny_gpt2, case("special_gpt2"))
    assert 50256 not in plain.ids and "".join(plain.tokens) == case("special_gpt2")
    assert gptviz.trace(tiny_gpt2, case("special_gpt2"), allow_special=True).ids.count(50256) == 2
    chatml = case("special_chatml")
    start = smollm2.tokenizer.encoding.encode_single_token("<|im_start|>")
    assert start not in gptviz.trace(smollm2, chatml).ids
    assert gptviz.trace(smollm2, chatml, allow_special=True).ids.count(start) == 2


# ---- (b) every page -------------------------------------------------------------------------
def open_app(stem: str, **query) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    at.switch_page(PAGES[stem][0])
    at.run()
    assert not at.exception, at.exception
    return at


def expected_message(model, text: str) -> tuple[str, str] | None:
    """(kind, words) of the message a page must show for this prompt, or None: it draws it."""
    if not text.strip():
        return "info", "empty"
    if missing_chars(model, text):
        return "error", "cannot be tokenized"
    if len(model.tokenizer.encode(as_sent_by_browser(text))) > ui.max_tokens(model):
        return "warning", "left out"
    return None


def check_cases(at: AppTest, stem: str, model, case_ids: list[str]) -> list[str]:
    """Type each case into the prompt box; return what went wrong (empty: all fine)."""
    problems = []
    for case_id in case_ids:
        typed = as_sent_by_browser(case(case_id))
        at.text_area(key="prompt").set_value(typed).run()
        where = f"{stem}/{case_id}"
        if at.exception:
            problems.append(f"{where}: exception {at.exception[0].message}")
            continue
        if at.session_state["prompt"] != typed:
            problems.append(f"{where}: the prompt in session state is not what was typed")
        in_url = at.query_params.get("prompt")
        if in_url != (None if len(typed) > URL_TEXT_LIMIT or typed == DEFAULT_PROMPT else typed):  # long: out
            problems.append(f"{where}: the address bar holds {str(in_url)[:40]!r}…")
        if [t.value for t in at.title] != [PAGES[stem][1]]:
            problems.append(f"{where}: title {[t.value for t in at.title]}")
        expected = expected_message(model, typed)
        if expected is None:
            if at.error:
                problems.append(f"{where}: unexpected error {at.error[0].value}")
        else:
            kind, words = expected
            shown = [m.value for m in getattr(at, kind)]
            if not any(words in m for m in shown):
                problems.append(f"{where}: expected a {kind} with {words!r}, got {shown}")
    return problems


@pytest.mark.parametrize("stem", ALL_CASES_PAGES)
@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_every_case_on_two_pages(app_env, tiny_gpt2, tiny_llama, stem, which):
    at = open_app(stem)
    at.selectbox(key="model").set_value(app_env[which]).run()
    model = tiny_gpt2 if which == "gpt2" else tiny_llama
    assert check_cases(at, stem, model, [c for c, _ in CASES]) == []


@pytest.mark.parametrize("stem", [s for s in PAGES if s not in ALL_CASES_PAGES])
def test_representative_cases_on_every_other_page(app_env, tiny_gpt2, stem):
    at = open_app(stem)
    assert check_cases(at, stem, tiny_gpt2, SUBSET) == []


@pytest.fixture()
def smollm2_in_app(app_env, smollm2, monkeypatch):
    """The app's registry gets the module's SmolLM2 instead of loading a second copy."""
    load = gptviz.load_model
    monkeypatch.setattr(gptviz.loading, "load_model", lambda source, progress=None: (
        smollm2 if source == SMOLLM2 else load(source, progress=progress)))
    return app_env


def test_smollm2_shows_which_characters_it_lacks_on_every_page(smollm2_in_app, smollm2):
    problems = []
    for stem in PAGES:
        at = open_app(stem, model=SMOLLM2)
        assert at.selectbox(key="model").value == SMOLLM2
        problems += check_cases(at, stem, smollm2, ["smollm2_unencodable", "control_chars", "special_chatml"])
    assert problems == []
    at.text_area(key="prompt").set_value(case("smollm2_unencodable")).run()
    (error,) = at.error
    assert "U+0004, U+0006, U+0013" in error.value and "remove them" in error.value


def test_a_megabyte_on_smollm2_is_cut_to_what_the_pages_show(smollm2_in_app, monkeypatch):
    """A server may read fewer tokens than SmolLM2's 8,192 (GPTVIZ_MAX_TOKENS; kept small here for the
    suite's time): a megabyte is cut to the last 1,024 tokens, and the page says so."""
    monkeypatch.setattr(view_state, "MAX_VIEW_TOKENS", 1024)
    at = open_app("tokens", model=SMOLLM2)
    at.text_area(key="prompt").set_value(MEGABYTE).run()
    assert not at.exception, at.exception
    assert at.session_state["prompt"] == MEGABYTE
    (warning,) = [w.value for w in at.warning]
    assert "sidebar's limit" in warning and "shows the last 1,024" in warning, warning


def test_the_view_limit_applies_to_every_model(app_env, monkeypatch):
    monkeypatch.setattr(view_state, "MAX_VIEW_TOKENS", 40)
    at = open_app("next_token")
    at.text_area(key="prompt").set_value(case("over_context")).run()
    (cut,) = [w.value for w in at.warning]
    assert "sidebar's limit is 40 tokens" in cut and "shows the last 40" in cut, cut
    at.number_input(key="max_tokens").set_value(60).run()  # the reader raises the limit
    assert not at.exception and "shows the last 60" in at.warning[0].value
    at.button(key="greedy_next").click().run()  # one generated token: the prompt window slides by one
    assert not at.exception and "shows the last 59" in at.warning[0].value


# ---- widget values at and past their bounds -------------------------------------------------
@pytest.mark.parametrize("temperature, top_k, top_p", [
    (0.0, 0, 1.0), (5.0, 0, 1.0), (1.0, 1, 1.0), (1.0, 50257, 1.0), (1.0, 0, 0.0), (0.7, 40, 0.9),
])
def test_sampling_settings_at_their_bounds(app_env, tiny_gpt2, temperature, top_k, top_p):
    at = open_app("next_token")
    at.slider(key="temperature").set_value(temperature)
    at.number_input(key="top_k").set_value(top_k)
    at.slider(key="top_p").set_value(top_p).run()
    assert not at.exception, at.exception
    at.button(key="sample_next").click().run()
    assert not at.exception, at.exception
    (token,) = ui_generated(at)
    assert 0 <= token < tiny_gpt2.config.vocab_size
    settings = SamplingSettings(temperature, top_k, top_p)
    logits = gptviz.trace(tiny_gpt2, at.session_state["prompt"]).logits[-1]
    kept = next_token_distribution(logits, settings).kept
    assert kept[token]
    if temperature == 0 or top_k == 1 or top_p == 0:
        assert token == int(logits.argmax())  # one token survives: the greedy one


def ui_generated(at: AppTest) -> list[int]:
    """The generated tokens in the session (a garbage list, e.g. from a link, counts as none)."""
    try:
        return [int(part) for part in at.session_state["gen"].split(",") if part.strip()]
    except ValueError:
        return []


def test_step_back_past_the_start(app_env):
    at = open_app("next_token")
    at.button(key="back_step").click().run()
    assert not at.exception and any("Nothing to take back" in m.value for m in at.info)
    at.button(key="greedy_next").click().run()
    assert len(ui_generated(at)) == 1
    for _ in range(2):
        at.button(key="back_step").click().run()
        assert not at.exception, at.exception
    assert ui_generated(at) == [] and any("Nothing to take back" in m.value for m in at.info)


@pytest.fixture(scope="module")
def deep_gpt2_dir(tmp_path_factory) -> Path:
    """A tiny GPT-2 as deep and wide as SmolLM2 (30 layers, 9 heads), to switch away from."""
    return save_tiny_gpt2(tmp_path_factory.mktemp("models") / "deep-gpt2", n_layer=30, n_head=9, n_embd=36)


def test_layer_and_head_of_a_bigger_model_are_clamped(app_env, deep_gpt2_dir, monkeypatch):
    monkeypatch.setenv("GPTVIZ_MODEL_DIRS", os.environ["GPTVIZ_MODEL_DIRS"] + os.pathsep + str(deep_gpt2_dir))
    for stem in PAGES:
        at = open_app(stem)
        at.selectbox(key="model").set_value("local: deep-gpt2").run()
        at.number_input(key="layer").set_value(29)
        at.number_input(key="head").set_value(8).run()
        assert not at.exception, (stem, at.exception)
        at.selectbox(key="model").set_value(app_env["llama"]).run()  # 2 layers, 6 heads
        assert not at.exception, (stem, at.exception)
        assert (at.number_input(key="layer").value, at.number_input(key="head").value) == (1, 5), stem
        assert [t.value for t in at.title] == [PAGES[stem][1]]


GARBAGE_URLS = {
    "nonsense": dict(layer="abc", head="-4", seed="1e30", temperature="warm", top_k="1.5", top_p="lots",
                     position="-3", gen="a,b,,", foo="bar"),
    "huge": dict(layer="29", head="8", temperature="1e308", top_k="99999999", top_p="2", seed="99999999999",
                 position="100000", gen="99999999,7"),
    "not_finite": dict(temperature="nan", top_p="nan", seed="-1"),
    "infinite": dict(temperature="inf", top_p="-inf"),
    "too_many_generated": dict(gen=",".join(["11"] * 500)),  # more than the whole context
}


@pytest.mark.parametrize("params", GARBAGE_URLS.values(), ids=GARBAGE_URLS)
@pytest.mark.parametrize("stem", ["next_token", "attention", "tokens"])
def test_garbage_url_params(app_env, tiny_gpt2, stem, params):
    at = open_app(stem, **params)
    assert [t.value for t in at.title] == [PAGES[stem][1]]
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="model").value == app_env["gpt2"]
    layer, head = at.number_input(key="layer").value, at.number_input(key="head").value
    assert 0 <= layer < tiny_gpt2.config.n_layer and 0 <= head < tiny_gpt2.config.n_head
    if len(ui_generated(at)) >= tiny_gpt2.config.n_ctx:
        assert any("generated tokens fit" in w.value for w in at.warning)
    if stem == "next_token":
        for key in ("temperature", "top_p"):
            value = at.slider(key=key).value
            assert math.isfinite(value) and value >= 0, (key, value)
        assert 0 <= at.number_input(key="top_k").value <= tiny_gpt2.config.vocab_size
        assert 0 <= at.number_input(key="seed").value < 2**31
        button = at.button(key="back_step" if at.button(key="sample_next").disabled else "sample_next")
        button.click().run()
        assert not at.exception, at.exception


def test_a_link_says_what_it_left_out_or_changed(app_env):
    """A link's values out of range are clamped and its nonsense is left out, each said on the page: the
    registry's bounds and types at once, the model's and the prompt's limits where a page fits them."""
    at = AppTest.from_file(str(APP), default_timeout=120)  # the link opens the Overview
    for key, value in dict(temperature="50", top_p="lots", n_top="0", foo="bar", train_text="x", layer="29",
                           position="100000", gen="11,99999999", embed="true").items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["temperature"] == 5.0 and at.session_state["n_top"] == 1
    assert "top_p" not in at.query_params and "foo" not in at.query_params
    (note,) = [w.value for w in at.main.warning if "this link" in w.value]
    for said in ("`temperature=50` is out of range (0.0–5.0): 5.0 is used", "`n_top=0` is out of range (1–100)",
                 "`top_p` is left out: 'lots' is not a number", "`foo` is left out: not a gptviz setting",
                 "`train_text` is left out: a link does not set it"):
        assert said in note, note
    assert "embed" not in note  # Streamlit's own
    assert any("`layer=29` is out of range here (0–2): 2 is used" in w.value for w in at.sidebar.warning)
    assert any("Left out 1 generated token ids" in w.value for w in at.main.warning)
    at.switch_page(PAGES["next_token"][0]).run()  # a page that fits the position to the prompt says so there
    assert not at.exception, at.exception
    assert any("`position=100000` is past the end of the text" in w.value for w in at.main.warning)
    at.run()
    assert not [w.value for w in at.warning if "link" in w.value]  # said once
