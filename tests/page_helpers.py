"""Opening the app's pages in AppTest, by the page registry (gptviz.ui.navigation.PAGES)."""
from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from gptviz.ui.navigation import BY_KEY

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def open_page(key: str, model: str | None = None, prompt: str | None = None, params: dict | None = None,
              timeout: float = 120) -> AppTest:
    """A session on page `key` (as app.py routes it), optionally with a model, a prompt, URL params."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    for name, value in (params or {}).items():
        at.query_params[name] = value
    at.run()
    at.switch_page(BY_KEY[key].file)
    at.run()
    if model is not None:
        at.selectbox(key="model").set_value(model)
        at.run()
    if prompt is not None:
        at.text_area(key="prompt").set_value(prompt)
        at.run()
    assert not at.exception, at.exception
    return at


def run_ok(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    return at


def open_tab(at: AppTest, setting: str, name: str) -> AppTest:
    """Open the lazy tab `name` of the tabs kept in `setting` (only the open tab is drawn)."""
    at.session_state[setting] = name
    return run_ok(at)


def spec(at: AppTest, key: str) -> str:
    """The figure JSON of the chart drawn with `key`."""
    matches = [c for c in at.get("plotly_chart") if c.key == key]
    assert len(matches) == 1, [c.key for c in at.get("plotly_chart")]
    return matches[0].proto.spec


def chart(at: AppTest, key: str) -> dict:
    return json.loads(spec(at, key))


def data(at: AppTest, key: str) -> list[dict]:
    return chart(at, key)["data"]


def charts(at: AppTest) -> dict[str, str]:
    """Every chart drawn: key -> figure JSON."""
    return {c.key: c.proto.spec for c in at.get("plotly_chart")}


def set_position(at: AppTest, position: int) -> AppTest:
    """Pick the shared position, as the page's position widget does."""
    at.session_state["position"] = position
    return run_ok(at)
