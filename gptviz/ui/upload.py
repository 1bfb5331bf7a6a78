"""Open your own model: a `.pth`, `.pt` or `.safetensors` file the user uploads (the book's GPTModel,
Llama3Model or Qwen3Model state dict, nanoGPT's ckpt.pt, ...), with the answers the file cannot give
(head count, rope base, tokenizer). The file is kept in the cache under its content's hash, read with
torch.load(weights_only=True) only, and the model joins this session's picker."""
from __future__ import annotations

import hashlib
from pathlib import Path

import streamlit as st

from gptviz.cache import default_cache_dir
from gptviz.loading import load_model
from gptviz.tokenizer import TokenizerError
from gptviz.ui.own_models import OwnModel, add_to_session
from gptviz.weights import WeightsError
from gptviz.weights.file_options import FILE_OPTIONS

EXTENSIONS = ["pth", "pt", "safetensors"]
TOKENIZER_EXTENSIONS = ["json", "pkl", "txt"]


def _kept(upload, folder: str) -> Path:
    """The uploaded file saved once under the cache, named by its content's sha256 (same file, same path)."""
    data = upload.getvalue()
    digest = hashlib.sha256(data).hexdigest()[:16]
    path = default_cache_dir() / "uploads" / folder / digest / Path(upload.name).name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return path


def options_form() -> dict:
    """What the file cannot say, as load_model's keyword arguments (gptviz.weights.file_options.FILE_OPTIONS,
    one field each; blank fields left out). The tokenizer is a file of its own."""
    options: dict = {}
    columns = st.columns(2)
    fields = [option for option in FILE_OPTIONS if option.name != "tokenizer"]
    for i, option in enumerate(fields):
        text = columns[i % 2].text_input(option.name, key=f"own_{option.name}", help=option.help,
                                         placeholder="from the file")
        if text.strip():
            try:
                options[option.name] = option.parse(text.strip())
            except ValueError as err:
                st.error(f"{option.name}: {text!r} is not a value it takes ({err}).")
    tokenizer = st.file_uploader("Tokenizer (tokenizer.json, nanoGPT's meta.pkl, or a .txt of the training text)",
                                 type=TOKENIZER_EXTENSIONS, key="own_tokenizer",
                                 help="Not needed for GPT-2's vocabulary of 50,257 tokens.")
    if tokenizer is not None:
        options["tokenizer"] = str(_kept(tokenizer, "tokenizers"))
    return options


def own_model_box() -> None:
    """The sidebar's "Open your own model" expander."""
    limit = st.get_option("server.maxUploadSize")
    with st.sidebar.expander("Open your own model"):
        upload = st.file_uploader(f"A state dict or checkpoint (.pth, .pt, .safetensors; up to {limit} MB)",
                                  type=EXTENSIONS, key="own_file",
                                  help="torch.save(model.state_dict(), 'model.pth') of the book's GPTModel, "
                                       "Llama3Model or Qwen3Model; nanoGPT's ckpt.pt. Read as data only: "
                                       "nothing in the file is ever run.")
        options = options_form()
        if upload is None or not st.button("Open", key="own_open", type="primary"):
            return
        path = _kept(upload, "models")
        try:
            with st.spinner(f"Reading {upload.name}…"):
                load_model(str(path), **options)  # every answer checked against the file now, not on a page
        except (WeightsError, TokenizerError, ValueError, OSError) as err:
            st.error(f"Could not open {upload.name}: {err}")
            return
        label = f"{upload.name} ({path.parent.name[:8]})"
        add_to_session(label, OwnModel(str(path), options))
        st.session_state["_pick_own"] = label
        st.rerun()


def take_opened_model() -> str | None:
    """The label of a model opened in the last run, once (it becomes the session's model)."""
    return st.session_state.pop("_pick_own", None)
