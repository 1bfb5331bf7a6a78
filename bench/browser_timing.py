"""What a person waits for in the app, measured in a real headless Chromium (playwright).

Starts `streamlit run app.py` on port 8650 and measures, from the browser's side:
- cold start: process spawned -> the default page fully rendered on the default model
  (the model is loaded on this first view);
- prompt edit (warm): a new 64-token prompt committed on the Attention page -> the heatmap
  repainted (its image changed) -> the page settled; the same with one other CPU-bound process
  running (a class's server is never idle);
- a layer change in the sidebar, a sampling step on Next token -> settled;
- page switch with the trace cached, to every page: first figure drawn, page settled;
- Circuit: a new question (the name-swap prompt, integrated gradients) -> the graph drawn, and a step
  of the N slider -> the graph redrawn (the new circuit and its complement run);
- prompt edits and page switches while another session trains a model on the Train page (its worker
  process, one torch thread).

"Rendered" means: Streamlit's script state is notRunning, no stale element, no spinner, the
page's title is there, every plotly chart has drawn its SVG; then two animation frames.

    .venv/bin/python bench/browser_timing.py [--repeats 3] [--port 8650] [--json out.json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gptviz.ui.navigation import PAGES  # noqa: E402  (after the path, when run as a script)

REPO = Path(__file__).resolve().parents[1]
# every page with a figure at once (Tokens and Train have none; Circuit waits for its question: measured apart)
PAGE_TITLES = [page.title for page in PAGES if page.key not in ("tokens", "circuit", "train")]
NAME_SWAP = ("When Mary and John went to the store, John gave a drink to",
             "When John and Mary went to the store, Mary gave a drink to")
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
PROMPT_TOKENS = 64
SOURCE_TEXT = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
    "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. Locally "
    "nicknamed the Iron Lady, it was constructed as the centrepiece of the 1889 World's Fair, and to crown the "
    "centennial anniversary of the French Revolution. Although initially criticised by some of France's leading "
    "artists and intellectuals for its design, it has since become a global cultural icon of France and one of "
    "the most recognisable structures in the world. The tower received 5,889,000 visitors in 2022. The Eiffel "
    "Tower is the most visited monument with an entrance fee in the world. It was the tallest man-made structure "
    "in the world until the Chrysler Building in New York City was finished in 1930."
)

RENDERED_JS = """(title) => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  if (document.querySelector('[data-stale="true"], [data-testid="stSpinner"], [data-testid="stStatusWidget"]'))
    return false;
  const h1 = document.querySelector('h1');
  if (title && !(h1 && h1.textContent.includes(title))) return false;
  return [...document.querySelectorAll('.js-plotly-plot')].every(p => p._fullLayout && p.querySelector('.main-svg'));
}"""

HEATMAP_JS = """() => {
  const plot = document.querySelector('.st-key-attn_pattern .js-plotly-plot') ||
               document.querySelector('.js-plotly-plot');
  if (!plot || !plot._fullLayout) return null;
  const image = plot.querySelector('g.hm image');
  const rows = plot.data && plot.data[0] && plot.data[0].y ? plot.data[0].y.length : -1;
  return rows + ':' + (image ? image.getAttribute('href').length + ':' + image.getAttribute('href').slice(-64) : '');
}"""

TWO_FRAMES_JS = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))"


def prompts(n: int, length: int = PROMPT_TOKENS) -> list[str]:
    """n different prompts of `length` tokens for the app's default model (windows of one text)."""
    import gptviz
    from gptviz.loading import SMOLLM2
    from gptviz.packages import smollm2_gguf_path
    from gptviz.tokenizer import gpt2_tokenizer, tokenizer_from_gguf

    name = os.environ.get("GPTVIZ_DEFAULT_MODEL") or gptviz.default_model_name()
    tokenizer = tokenizer_from_gguf(smollm2_gguf_path()) if name == SMOLLM2 else gpt2_tokenizer()
    ids = tokenizer.encode(SOURCE_TEXT * 2)
    out = []
    for start in range(0, 16 * n, 16):
        window = ids[start : start + length]
        text = tokenizer.decode(window)
        while len(tokenizer.encode(text)) > length:  # decoding then encoding may merge differently
            window = window[:-1]
            text = tokenizer.decode(window)
        out.append(text)
    return out


def wait_rendered(page, title: str | None = None, timeout_ms: int = 300_000) -> None:
    page.wait_for_function(RENDERED_JS, arg=title, timeout=timeout_ms, polling="raf")
    page.evaluate(TWO_FRAMES_JS)


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("the app did not start (see its log)")
            time.sleep(0.05)


def open_nav(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()


def timed(results: dict, name: str, action) -> None:
    start = time.perf_counter()
    action()
    results.setdefault(name, []).append(time.perf_counter() - start)


def edit_prompt(page, prompt, text: str, results: dict, label: str) -> None:
    """Commit a new prompt on Attention: time to the heatmap repainted, and to the page settled."""
    before = page.evaluate(f"({HEATMAP_JS})()")
    prompt.fill(text)
    start = time.perf_counter()
    prompt.press("Control+Enter")
    page.wait_for_function(f"(b) => ({HEATMAP_JS})() !== b", arg=before, timeout=300_000, polling="raf")
    page.evaluate(TWO_FRAMES_JS)
    results.setdefault(f"prompt edit -> heatmap repainted{label}", []).append(time.perf_counter() - start)
    wait_rendered(page, "Attention")
    results.setdefault(f"prompt edit -> page settled{label}", []).append(time.perf_counter() - start)


def change_layer(page) -> None:
    """Layer 0 <-> 1 on the Attention page: until its pattern's heading names the new layer, settled."""
    box = page.locator('[data-testid="stSidebar"] input[aria-label="Layer"]')
    layer = 1 - int(box.input_value() or 0) % 2
    box.fill(str(layer))
    box.press("Enter")
    page.wait_for_function("(l) => [...document.querySelectorAll('h3')].some(h => h.textContent.includes("
                           "`pattern of layer ${l},`))", arg=layer, timeout=300_000, polling="raf")
    wait_rendered(page, "Attention")


def sample_step(page) -> None:
    """Sample one token on Next token: until the sidebar counts it, settled."""
    page.get_by_role("button", name="Sample 1 token").click()
    page.wait_for_function("() => document.querySelector('[data-testid=\"stSidebar\"]').textContent"
                           ".includes('1 generated token appended')", timeout=300_000, polling="raf")
    wait_rendered(page, "Next token")


def switch(page, title: str, results: dict, visit: str) -> None:
    """Open a page from the navigation (its trace cached): first figure drawn, page settled."""
    start = time.perf_counter()
    open_nav(page, title)
    page.wait_for_function("(t) => { const h = document.querySelector('h1'); return h && h.textContent.includes(t) "
                           "&& document.querySelector('.element-container:not([data-stale=true]) .js-plotly-plot "
                           ".main-svg') }", arg=title,
                           timeout=300_000, polling="raf")
    first = time.perf_counter() - start
    wait_rendered(page, title)
    results.setdefault(f"switch to {title} ({visit}): first figure", []).append(first)
    results.setdefault(f"switch to {title} ({visit}): settled", []).append(time.perf_counter() - start)


GRAPH_TITLE_JS = "() => document.querySelector('.js-plotly-plot .gtitle')?.textContent ?? null"


def circuit(page, url: str, repeats: int, results: dict) -> None:
    """Circuit on the name swap: a new question each time (the steps differ, so the scores are computed
    afresh) until the graph is drawn; then steps of the N slider until the graph's title changes."""
    import urllib.parse

    for steps in range(5, 5 + repeats):
        query = {"prompt": NAME_SWAP[0], "corrupt": NAME_SWAP[1], "why_target": "Mary", "why_contrast": "John",
                 "circuit_steps": steps}
        start = time.perf_counter()
        page.goto(f"{url}/circuit?" + urllib.parse.urlencode(query))
        page.wait_for_function("() => (" + GRAPH_TITLE_JS + ")()?.includes('connected to the logits')",
                               timeout=300_000, polling="raf")
        results.setdefault("Circuit: new question (IG, 14 tokens) -> graph drawn", []).append(
            time.perf_counter() - start)
        wait_rendered(page, "Circuit")
    slider = page.get_by_role("slider").first
    for k in range(2 * repeats):
        before = page.evaluate(GRAPH_TITLE_JS)
        slider.focus()
        start = time.perf_counter()
        page.keyboard.press("ArrowRight" if k % 2 == 0 else "ArrowLeft")
        page.wait_for_function(f"(b) => ({GRAPH_TITLE_JS})() !== b", arg=before, timeout=300_000, polling="raf")
        page.evaluate(TWO_FRAMES_JS)
        results.setdefault("Circuit: N slider step -> graph redrawn", []).append(time.perf_counter() - start)
        wait_rendered(page, "Circuit")


@contextlib.contextmanager
def training_in_another_session(browser, url: str):
    """Another session (its own browser page) starts the Train page's default preset and keeps it training
    (its worker process, one torch thread) while the body runs; then stops it."""
    other = browser.new_page(viewport={"width": 1400, "height": 1600})
    other.goto(f"{url}/train")
    wait_rendered(other, "Train")
    other.get_by_role("button", name="Start training").click()
    other.wait_for_function("() => document.body.textContent.match(/step [1-9][0-9]* \\/ /)", timeout=300_000)
    try:
        yield
    finally:
        other.get_by_role("button", name="Stop").click()
        other.close()


def measure(port: int, repeats: int, log_path: Path, screenshot: Path | None = None) -> dict:
    from playwright.sync_api import sync_playwright

    url = f"http://127.0.0.1:{port}"
    texts = prompts(repeats + 1)
    results: dict[str, list[float]] = {"cold start: server healthy": [], "cold start: first view rendered": []}
    with sync_playwright() as p, open(log_path, "w") as log:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "streamlit"), "run", "app.py", "--server.headless", "true",
             "--server.port", str(port), "--browser.gatherUsageStats", "false"],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            wait_healthy(url, proc)
            results["cold start: server healthy"].append(time.perf_counter() - t0)
            page.goto(url)
            wait_rendered(page)
            results["cold start: first view rendered"].append(time.perf_counter() - t0)

            page.goto(f"{url}/attention")
            wait_rendered(page, "Attention")
            prompt = page.locator('[data-testid="stSidebar"] [data-testid="stTextArea"] textarea').first
            prompt.fill(texts[0])  # a first 64-token prompt: warms the code paths of this length
            prompt.press("Control+Enter")
            page.wait_for_function(f"() => ({HEATMAP_JS})()?.startsWith('{PROMPT_TOKENS}:')", timeout=300_000)
            wait_rendered(page, "Attention")
            for busy in (False, True):
                hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
                label = " (one other CPU-bound process)" if busy else ""
                try:
                    for text in texts[1:]:
                        edit_prompt(page, prompt, text + (" busy" if busy else ""), results, label)
                finally:
                    if hog is not None:
                        hog.kill()
            with training_in_another_session(browser, url):
                label = " (a training running in another session)"
                for text in texts[1:]:
                    edit_prompt(page, prompt, text + " training", results, label)
                for title in PAGE_TITLES:
                    switch(page, title, results, "a training running in another session")
                switch(page, "Attention", {}, "")
            for text in texts[1:]:
                edit_prompt(page, prompt, text + " again", {}, "")
                timed(results, "layer changed in the sidebar -> settled", lambda: change_layer(page))
                for visit in ("first visit after the prompt edit", "visited again"):
                    for title in PAGE_TITLES:
                        switch(page, title, results, visit)
                switch(page, "Next token", {}, "")
                timed(results, "one sampling step -> settled", lambda: sample_step(page))
                page.get_by_role("button", name="Back one step").click()
                wait_rendered(page, "Next token")
                switch(page, "Attention", {}, "")
            circuit(page, url, repeats, results)
            errors = page.locator('[data-testid="stException"]').count()
            if screenshot:
                page.screenshot(path=str(screenshot))
        finally:
            browser.close()
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    return {"runs": results, "median_s": {k: statistics.median(v) for k, v in results.items() if v},
            "exceptions_on_page": errors, "prompt_tokens": PROMPT_TOKENS}


def table(result: dict) -> str:
    lines = ["| what | median s | runs |", "|---|---:|---:|"]
    for name, runs in result["runs"].items():
        if runs:
            lines.append(f"| {name} | {statistics.median(runs):.2f} | {', '.join(f'{r:.2f}' for r in runs)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8650)
    parser.add_argument("--repeats", type=int, default=3, help="prompt edits and page switches measured")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--screenshot", type=Path, help="save the Attention page as PNG at the end")
    args = parser.parse_args(argv)
    missing = [p for p in ("pages/attention.py", "pages/tokens.py") if not (REPO / p).exists()]
    if missing:
        sys.exit(f"n/a: {', '.join(missing)} not written yet")
    log_path = Path(tempfile.gettempdir()) / f"gptviz-browser-timing-{args.port}.log"
    result = measure(args.port, args.repeats, log_path, args.screenshot)
    print(f"# App timings in headless Chromium ({result['prompt_tokens']}-token prompts, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})\n")
    print(table(result))
    if result["exceptions_on_page"]:
        print(f"\nWARNING: {result['exceptions_on_page']} exception(s) shown on the page; app log: {log_path}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
