"""End to end in a real headless Chromium: start the app, type a prompt, see the attention
heatmap, sample a token and see it appended; screenshot every page on the way.

Screenshots go to $GPTVIZ_SCREENSHOTS (README's come from `GPTVIZ_SCREENSHOTS=docs/screenshots`).
"""
from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from app_server import serve
from gptviz.ui.navigation import PAGES as NAV_PAGES

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
PROMPT = "The quick brown fox jumps over the lazy dog. The quick brown fox"
PAGES = [page.key for page in NAV_PAGES if page.key != "why"]  # Why this token? has a test of its own
PAGE_TITLES = {page.key: page.title for page in NAV_PAGES}


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """The app on the offline default model, served on loopback for this module."""
    with serve(dict(os.environ), tmp_path_factory.mktemp("app") / "streamlit.log", start_timeout_s=90) as (url, _):
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(app_url, browser):
    tab = browser.new_page(viewport={"width": 1400, "height": 2000})
    yield tab
    tab.close()


IDLE_JS = """() => !document.querySelector('[data-testid="stStatusWidget"]')
    && !document.querySelector('[data-testid="stSpinner"]')
    && !document.querySelector('[data-stale="true"]')
    && !document.querySelector('[data-testid="stSkeleton"]')"""


def settle(page: Page, timeout_ms: int = 90_000) -> None:
    """Wait until the script run finished: no running indicator, spinner, skeleton or stale
    element from the previous run, twice in a row (a rerun may start right after a run)."""
    for _ in range(2):
        page.wait_for_timeout(400)
        page.wait_for_function(IDLE_JS, timeout=timeout_ms)
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)


def open_page(page: Page, name: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(PAGE_TITLES[name], exact=True).click()
    if name != PAGES[0]:  # the default page lives at /
        page.wait_for_url(f"**/{name}**")
    settle(page)


def open_tab(page: Page, label: str) -> None:
    page.get_by_role("tab", name=label, exact=True).click()
    settle(page)


def shoot(page: Page, name: str, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(directory / f"{name}.png"))


def test_type_prompt_see_attention_sample_token(app_url, page, tmp_path):
    shots = Path(os.environ.get("GPTVIZ_SCREENSHOTS", tmp_path))
    page.goto(app_url, wait_until="networkidle")
    settle(page, timeout_ms=180_000)  # the first start may convert the GGUF

    prompt = page.locator('[data-testid="stTextArea"] textarea').first
    prompt.fill(PROMPT)
    prompt.press("Control+Enter")
    settle(page)

    open_page(page, "attention")
    heatmap = page.locator(".js-plotly-plot").first
    expect(heatmap).to_be_visible()
    expect(page.locator(".js-plotly-plot text", has_text="brown").first).to_be_attached()
    shoot(page, "attention", shots)

    # the position rule: a prompt edited on Attention, then Next token explains the new last token
    prompt.fill(PROMPT + " jumps")
    prompt.press("Control+Enter")
    settle(page)
    open_page(page, "next_token")
    expect(page.locator("body")).to_contain_text("the last token (the position follows the end of the text)")
    expect(page.locator('[data-testid="stCaptionContainer"]', has_text="the last token").first).to_contain_text(
        "␣jumps")
    sidebar = page.locator('[data-testid="stSidebar"]')
    expect(sidebar).not_to_contain_text("generated token")
    page.get_by_role("button", name="Sample 1 token").click()
    settle(page)
    expect(sidebar).to_contain_text("1 generated token appended")
    shoot(page, "next_token", shots)

    open_page(page, "inside_block")  # a tab per step: the norm first, dropout last
    for tab, title in (("Norm", "norm1 of layer 0"), ("Attention", "The 9 heads' context vectors"),
                       ("Positions", "the same q and k at different positions"),
                       ("Dropout", "training view: dropout"), ("MLP", "hidden activations: tokens × neurons")):
        open_tab(page, tab)
        expect(page.locator(".js-plotly-plot text", has_text=title).first).to_be_attached()
    shoot(page, "inside_block", shots)
    neurons = page.locator(".js-plotly-plot").filter(has=page.locator("text", has_text="hidden activations")).first
    neurons.scroll_into_view_if_needed()
    names, x, y = neurons.evaluate("""el => {  // the centre of cell (token 0, neuron 1) on the page
        const xa = el._fullLayout.xaxis, ya = el._fullLayout.yaxis, box = el.getBoundingClientRect();
        return [el.data[0].x, box.left + xa._offset + xa.l2p(1), box.top + ya._offset + ya.l2p(0)]; }""")
    page.mouse.move(x - 3, y - 3)
    page.mouse.move(x, y)
    page.mouse.click(x, y)  # picks that neuron
    settle(page)
    expect(page.locator("body")).to_contain_text(f"Neuron {names[1][1:]} over the prompt")

    open_page(page, "tokens")
    expect(page.locator("body")).to_contain_text("generated")
    for name in PAGES:
        if name not in ("attention", "next_token", "inside_block"):
            open_page(page, name)
            shoot(page, name, shots)
    assert {p.stem for p in shots.glob("*.png")} >= set(PAGES)


LOCAL_PROMPT = "The quick brown fox jumps over the lazy dog. " * 6  # ~60 tokens: past the 16-token window


def test_local_attention_and_the_repo_box(browser, tmp_path_factory, tmp_path):
    """A model with sliding-window layers (a random Gemma 3, window 16): the heatmap draws the window and
    the overview marks local layers; the repo-id box refuses what GPTVIZ_ALLOW_MODELS does not allow."""
    from test_fidelity import SMALL, save_random

    shots = Path(os.environ.get("GPTVIZ_SCREENSHOTS", tmp_path))
    gemma = dict(SMALL, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=1,
                 head_dim=16, sliding_window=16, max_position_embeddings=512,
                 layer_types=["sliding_attention", "full_attention"] * 2)
    folder = save_random(tmp_path_factory.mktemp("models") / "tiny-gemma3", "Gemma3TextConfig", 3, **gemma)
    env = dict(os.environ, GPTVIZ_MODEL_DIRS=str(folder), GPTVIZ_DEFAULT_MODEL="local: tiny-gemma3",
               HF_HUB_OFFLINE="1", GPTVIZ_ALLOW_MODELS="Qwen/Qwen2.5-0.5B*")
    with serve(env, tmp_path / "streamlit.log", start_timeout_s=90) as (url, _):
        page = browser.new_page(viewport={"width": 1400, "height": 2000})
        page.goto(url, wait_until="networkidle")
        settle(page)
        prompt = page.locator('[data-testid="stTextArea"] textarea').first
        prompt.fill(LOCAL_PROMPT)
        prompt.press("Control+Enter")
        settle(page)
        open_page(page, "attention")
        expect(page.locator("h3", has_text="(a local layer)")).to_be_visible()
        shoot(page, "attention_local", shots)
        open_tab(page, "All heads")
        expect(page.locator(".js-plotly-plot text", has_text="global").first).to_be_attached()  # overview ticks
        box = page.get_by_placeholder("owner/name, e.g. Qwen/Qwen2.5-0.5B")
        box.fill("someone/huge-model")
        box.press("Enter")
        settle(page)
        sidebar = page.locator('[data-testid="stSidebar"]')
        expect(sidebar).to_contain_text("someone/huge-model is not allowed on this server")
        box.fill("Qwen/Qwen2.5-0.5B")
        box.press("Enter")
        settle(page)
        expect(sidebar).to_contain_text("Qwen/Qwen2.5-0.5B is not downloaded yet")
        assert "model=Qwen%2FQwen2.5-0.5B" in page.url
        page.close()


WHY_PROMPT = "When Mary and John went to the store, John gave a drink to"


def click_cell(page: Page, chart, x: float, y: float) -> None:
    """Click the centre of the heatmap cell at data (x, y) of a plotly chart's first axes."""
    chart.scroll_into_view_if_needed()
    px, py = chart.evaluate("""(el, [x, y]) => {
        const xa = el._fullLayout.xaxis, ya = el._fullLayout.yaxis, box = el.getBoundingClientRect();
        return [box.left + xa._offset + xa.l2p(x), box.top + ya._offset + ya.l2p(y)]; }""", [x, y])
    page.mouse.move(px - 3, py - 3)
    page.mouse.move(px, py)
    page.mouse.click(px, py)


def test_why_this_token_names_heads_and_knocks_one_out(app_url, page, tmp_path):
    """On SmolLM2 with the Mary/John prompt and " John" as the contrast: the page names the heads whose
    knock-out hurts " Mary" most; clicking a cell of the ablation map focuses that head, one button
    knocks it out (the prediction before and after), and the switch shows that run on another page."""
    shots = Path(os.environ.get("GPTVIZ_SCREENSHOTS", tmp_path))
    page.goto(f"{app_url}/?" + urllib.parse.urlencode({"prompt": WHY_PROMPT, "why_contrast": "John"}),
              wait_until="networkidle")
    settle(page, timeout_ms=180_000)
    page.locator('[data-testid="stSidebarNav"]').get_by_text(PAGE_TITLES["why"], exact=True).click()
    page.wait_for_url("**/why**")
    settle(page)
    expect(page.locator(".js-plotly-plot text", has_text="Direct share").first).to_be_attached()  # at once
    open_tab(page, "Ablation map")
    settle(page, timeout_ms=300_000)  # the ablation map: 300 reruns of SmolLM2
    body = page.locator("body")
    expect(body).to_contain_text("hurts ␣Mary most: L23H3")
    shoot(page, "why", shots)
    ablation = page.locator(".js-plotly-plot").filter(
        has=page.locator("text", has_text="when one component is knocked out")).first
    ablation.scroll_into_view_if_needed()
    named = page.locator("p", has_text="hurts ␣Mary most").first
    top, bottom = ablation.bounding_box(), named.bounding_box()
    page.screenshot(path=str(shots / "why_ablation_map.png"),
                    clip={"x": top["x"] - 10, "y": top["y"] - 10, "width": top["width"] + 20,
                          "height": bottom["y"] + bottom["height"] - top["y"] + 20})
    click_cell(page, ablation, 5, 1)  # head 5 of layer 1: it becomes the head in focus
    settle(page, timeout_ms=120_000)
    open_tab(page, "Knock out a set")
    knock = page.get_by_role("button", name="Knock out L1H5 (the head in focus)")
    knock.click()
    settle(page, timeout_ms=120_000)
    expect(body).to_contain_text("KL(before ‖ after)")
    expect(page.locator(".js-plotly-plot text", has_text="L1H5 knocked out").first).to_be_attached()
    page.get_by_text("Show this knocked-out run on every page").click()
    settle(page)
    open_page(page, "next_token")
    main = page.locator('[data-testid="stMain"]')
    expect(main).to_contain_text("L1H5 knocked out (zero ablation)")  # a banner where people look
    page.get_by_role("button", name="Show the plain run").click()
    settle(page)
    expect(main).not_to_contain_text("Knocked-out run")


def test_circuit_graph_click_focuses_a_head(app_url, page, tmp_path):
    """On SmolLM2, the name-swap circuit: L23H3 → logits among its edges; a click on the L23H3 node focuses that
    head on every page (the link and the Attention page follow)."""
    shots = Path(os.environ.get("GPTVIZ_SCREENSHOTS", tmp_path))
    params = {"prompt": WHY_PROMPT, "why_target": "Mary", "why_contrast": "John",
              "corrupt": WHY_PROMPT.replace("Mary", "@").replace("John", "Mary").replace("@", "John")}
    page.goto(f"{app_url}/circuit?" + urllib.parse.urlencode(params), wait_until="networkidle")
    settle(page, timeout_ms=180_000)
    main = page.locator('[data-testid="stMain"]')
    expect(main).to_contain_text("Faithfulness: the circuit alone")
    graph = page.locator(".js-plotly-plot").filter(has=page.locator("text", has_text="connected to the logits")).first
    graph.scroll_into_view_if_needed()
    shoot(page, "circuit_name_swap", shots)
    box = graph.bounding_box()
    page.screenshot(path=str(shots / "circuit_graph.png"),
                    clip={"x": box["x"] - 10, "y": box["y"] - 10, "width": box["width"] + 20,
                          "height": box["height"] + 20})
    click_cell(page, graph, 3, 24)  # L23H3: heads sit at x = head on row y = layer + 1
    settle(page, timeout_ms=120_000)
    expect(main).to_contain_text("L23H3 is focused on every page")
    assert "layer=23" in page.url and "head=3" in page.url
    open_page(page, "attention")
    expect(page.get_by_role("button", name="Download attention_L23H3 as CSV")).to_be_attached()
    open_page(page, "circuit")
    page.get_by_text("Split nodes by position").click()
    settle(page, timeout_ms=120_000)
    graph = page.locator(".js-plotly-plot").filter(has=page.locator("text", has_text="by position")).first
    expect(graph.locator("text", has_text="13·␣to").first).to_be_attached()  # a column per token
    graph.scroll_into_view_if_needed()
    box = graph.bounding_box()
    page.screenshot(path=str(shots / "circuit_by_position.png"),
                    clip={"x": box["x"] - 10, "y": box["y"] - 10, "width": box["width"] + 20,
                          "height": box["height"] + 20})
