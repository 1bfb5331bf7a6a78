"""Open your own model in the app: the book's GPTModel state dict uploaded in the sidebar, its head count
answered, joins the picker; every page works on it; a file that needs an answer says which."""
from __future__ import annotations

import io

import torch

from gptviz.ui.navigation import PAGES
from page_helpers import open_page, run_ok


def book_state_dict(n_heads: int = 3) -> bytes:
    from llms_from_scratch.ch04 import GPTModel

    torch.manual_seed(0)
    model = GPTModel(dict(vocab_size=50257, context_length=40, emb_dim=48, n_heads=n_heads, n_layers=2,
                          drop_rate=0.0, qkv_bias=True))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def test_an_uploaded_book_model_opens_on_every_page(app_env, tmp_path, monkeypatch):
    monkeypatch.setenv("GPTVIZ_CACHE", str(tmp_path))
    at = open_page("overview")
    at.sidebar.file_uploader(key="own_file").set_value(("model.pth", book_state_dict(), "application/octet-stream"))
    run_ok(at)
    at.button(key="own_open").click()
    run_ok(at)
    assert any("n_heads" in e.value for e in at.error)  # the file cannot say its head count: the error names it
    at.text_input(key="own_n_heads").set_value("3")
    at.button(key="own_open").click()
    run_ok(at)
    assert at.session_state["model"].startswith("model.pth (")
    assert at.session_state["model"] in at.selectbox(key="model").options
    for page in PAGES:
        at.switch_page(page.file)
        run_ok(at)
        assert not at.error, (page.key, [e.value for e in at.error])
