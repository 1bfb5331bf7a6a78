"""Which models a session may pick (offline names, cached and allowed hub repos, local directories),
and the picked one, loaded or offered for download."""
from __future__ import annotations

import os

import streamlit as st

from gptviz.loading import MODEL_NAMES, default_model_name
from gptviz.model import GPT
from gptviz.tokenizer import TokenizerError
from gptviz.ui.own_models import session_labels
from gptviz.ui.store import load_with_progress, local_model_dirs
from gptviz.weights import (
    DOWNLOAD_BYTES,
    HUB_NAMES,
    WeightsError,
    cached_repos,
    download,
    is_cached,
    is_hub_name,
    repo_allowed,
    repo_id,
)

DEFAULT_ALLOW_MODELS = ("openai-community/gpt2*,HuggingFaceTB/SmolLM2-*,Qwen/Qwen2.5-0.5B*,Qwen/Qwen3-0.6B*,"
                        "meta-llama/Llama-3.2-1B*,google/gemma-3-270m*,EleutherAI/pythia-*,google/gemma-2-2b*,"
                        "microsoft/Phi-3-mini-4k-instruct,allenai/OLMo-2-*")


def allowed_models() -> str:
    """GPTVIZ_ALLOW_MODELS: comma-separated glob patterns of the hub repo ids this server may
    download and load (matched with fnmatch, case-sensitive); default DEFAULT_ALLOW_MODELS."""
    return os.environ.get("GPTVIZ_ALLOW_MODELS", DEFAULT_ALLOW_MODELS)


def allow_list_text() -> str:
    """The allow-list for messages, each pattern as code (a * would start italics)."""
    patterns = [p.strip() for p in allowed_models().split(",") if p.strip()]
    return ", ".join(f"`{p}`" for p in patterns) or "no hub models"


def model_choices() -> list[str]:
    """The picker's models: the built-in names (hub ones only if allowed), the allowed hub repos
    already in the Hugging Face cache, the local directories, and this session's own models."""
    allowed = allowed_models()
    names = [name for name in MODEL_NAMES if not is_hub_name(name) or repo_allowed(name, allowed)]
    cached = [repo for repo in cached_repos() if repo not in HUB_NAMES.values() and repo_allowed(repo, allowed)]
    return names + cached + list(local_model_dirs()) + session_labels()


def model_allowed(name: str) -> bool:
    """Whether a session may pick `name` (from the picker, the repo box or a link)."""
    return name in model_choices() or (is_hub_name(name) and repo_allowed(name, allowed_models()))


def repo_error(repo: str) -> str | None:
    """Why a typed repo id cannot be picked, or None if it can."""
    if not is_hub_name(repo):
        return f"{repo!r} is not a Hugging Face repo id: write it as owner/name, e.g. Qwen/Qwen2.5-0.5B"
    if not repo_allowed(repo, allowed_models()):
        return f"{repo} is not allowed on this server: GPTVIZ_ALLOW_MODELS allows {allow_list_text()}."
    return None


def default_model() -> str:
    wanted = os.environ.get("GPTVIZ_DEFAULT_MODEL")
    if wanted and wanted in model_choices():
        return wanted
    return default_model_name()


def _offer_download(name: str) -> None:
    """A hub model not downloaded yet: its size and a Download button (never a download without it)."""
    size = f"{DOWNLOAD_BYTES[repo_id(name)] / 1e6:,.0f} MB" if repo_id(name) in DOWNLOAD_BYTES else ""
    st.info(f"**{name}** is not downloaded yet ({size + ' ' * bool(size)}from the Hugging Face hub).")
    label_size = f" ({size})" if size else ""
    if repo_allowed(name, allowed_models()) and st.button(f"Download {name}{label_size}", key="download"):
        bar = st.progress(0.0, text=f"Downloading {name}…")
        try:
            download(name, lambda done, total: bar.progress(min(1.0, done / max(total, 1)),
                     text=f"Downloading {name}: {done / 1e6:,.0f} / {total / 1e6:,.0f} MB"))
        except WeightsError as err:
            st.error(str(err))
        finally:
            bar.empty()


def active_model() -> tuple[str, GPT] | None:
    """(name, model) of the picked model, loading it (with progress) or offering its download; the
    last model that worked, with a message, while the picked one cannot be used. Draws in the sidebar."""
    state = st.session_state
    picked = name = state["model"]
    if is_hub_name(name) and not is_cached(name):
        _offer_download(name)
        if not is_cached(name):
            name = state.get("_active_model") or default_model()
            if name == picked:
                return None
            state["_stand_in"] = (picked, name)  # the main area says which model is shown
    try:
        model = load_with_progress(name)
    except (WeightsError, TokenizerError, ValueError, OSError) as err:
        st.error(f"Could not load {name}: {err}")
        fallback = state.get("_active_model")
        if fallback and fallback != name:
            state["_stand_in"] = (name, fallback)
            return fallback, load_with_progress(fallback)
        return None
    state["_active_model"] = name
    return name, model
