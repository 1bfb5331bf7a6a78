"""Streamlit glue: the shared sidebar, the model and trace caches, the URL state.

The only module of gptviz that imports streamlit. Pages call `view()` to get the model,
the current token sequence and its trace; they never run the model themselves.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

import gptviz
from gptviz.analysis import heads
from gptviz.config import GPTConfig
from gptviz.interventions import ABLATIONS, component_label, parse_components
from gptviz.loading import LICENCE_NOTES
from gptviz.model import GPT
from gptviz.tokenizer import TokenizerError
from gptviz.trace import Trace
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

log = logging.getLogger(__name__)

DEFAULT_PROMPT = "When Mary and John went to the store, John gave a drink to"
URL_PROMPT_LIMIT = 2000  # longer prompts stay out of the address bar
TRACE_CACHE_BYTES = int(float(os.environ.get("GPTVIZ_TRACE_CACHE_MB", "3000")) * 2**20)
# Tokens the pages read at most unless the sidebar's "Tokens read at most" is raised (up to the
# model's context): SmolLM2 reads 8,192, and a trace that long takes a minute and ~5 GB on a
# CPU (a 1 MB paste); GPT-2 reads 1,024.
MAX_VIEW_TOKENS = max(2, int(os.environ.get("GPTVIZ_MAX_TOKENS", "1024")))
MAX_MODELS_LOADED = 2

def flag(text: str) -> bool:
    """A switch's value as the URL writes it ("True" / "False")."""
    return text.strip().lower() in ("true", "1")


# Session-state keys that live in the URL, with their type.
URL_KEYS = {
    "model": str, "prompt": str, "layer": int, "head": int, "gen": str,
    "seed": int, "temperature": float, "top_k": int, "top_p": float, "position": int, "max_tokens": int,
    "norm": str, "neuron": int, "n_positions": int, "dropout_p": float, "dropout_seed": int,  # Inside a block
    "why_target": str, "why_target_pick": str, "why_contrast": str, "why_contrast_pick": str,  # Why this token?
    "ablation": str, "knockout": str, "knockout_view": flag, "corrupt": str, "why_gradient": flag,
    "why_compute": flag,
}
LONG_TEXT_KEYS = ("prompt", "corrupt")  # left out of the URL when longer than URL_PROMPT_LIMIT
SAMPLING_DEFAULTS = {"seed": 0, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
# Widget values kept when their page is left: each page draws the sidebar itself, and
# Streamlit forgets a widget's value when its page is not drawn unless it is re-set.
PERSISTENT_KEYS = ("model", "prompt", "allow_special", "layer", "head", "seed", "temperature", "top_k",
                   "top_p", "position", "max_tokens", "norm", "neuron", "n_positions", "dropout_p", "dropout_seed",
                   "why_target", "why_target_pick", "why_contrast", "why_contrast_pick", "ablation", "knockout_view",
                   "corrupt", "why_gradient", "why_compute")


def local_model_dirs() -> dict[str, str]:
    """Local HF-format model directories offered in the picker: label -> path.

    From `streamlit run app.py -- --model-dir DIR` (repeatable) or GPTVIZ_MODEL_DIRS
    (paths separated by os.pathsep); never from the page itself.
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--model-dir", action="append", default=[])
    args, _ = parser.parse_known_args(sys.argv[1:])
    paths = args.model_dir + [p for p in os.environ.get("GPTVIZ_MODEL_DIRS", "").split(os.pathsep) if p]
    return {f"local: {Path(p).name}": p for p in paths}


# ---- hub models: which ones this server may download and load ---------------------------------
DEFAULT_ALLOW_MODELS = ("openai-community/gpt2*,HuggingFaceTB/SmolLM2-*,Qwen/Qwen2.5-0.5B*,Qwen/Qwen3-0.6B*,"
                        "meta-llama/Llama-3.2-1B*,google/gemma-3-270m*")


def allowed_models() -> str:
    """GPTVIZ_ALLOW_MODELS: comma-separated glob patterns of the hub repo ids this server may
    download and load (matched with fnmatch, case-sensitive); default DEFAULT_ALLOW_MODELS."""
    return os.environ.get("GPTVIZ_ALLOW_MODELS", DEFAULT_ALLOW_MODELS)


def _patterns() -> str:
    """The allow-list for messages, each pattern as code (a * would start italics)."""
    patterns = [p.strip() for p in allowed_models().split(",") if p.strip()]
    return ", ".join(f"`{p}`" for p in patterns) or "no hub models"


def model_choices() -> list[str]:
    """The picker's models: the built-in names (hub ones only if allowed), the allowed hub repos
    already in the Hugging Face cache, and the local directories."""
    allowed = allowed_models()
    names = [name for name in gptviz.MODEL_NAMES if not is_hub_name(name) or repo_allowed(name, allowed)]
    cached = [repo for repo in cached_repos() if repo not in HUB_NAMES.values() and repo_allowed(repo, allowed)]
    return names + cached + list(local_model_dirs())


def model_allowed(name: str) -> bool:
    """Whether a session may pick `name` (from the picker, the repo box or a link)."""
    return name in model_choices() or (is_hub_name(name) and repo_allowed(name, allowed_models()))


def _pick_repo() -> None:
    """The repo-id box: an allowed repo id becomes the model; anything else gets a message."""
    state = st.session_state
    repo = str(state.get("hub_repo", "")).strip()
    state["hub_repo"] = ""
    if not repo:
        return
    if not is_hub_name(repo):
        state["_repo_error"] = f"{repo!r} is not a Hugging Face repo id: write it as owner/name, e.g. Qwen/Qwen2.5-0.5B"
    elif not repo_allowed(repo, allowed_models()):
        state["_repo_error"] = f"{repo} is not allowed on this server: GPTVIZ_ALLOW_MODELS allows {_patterns()}."
    else:
        state["model"] = repo
        _model_changed()


def default_model() -> str:
    wanted = os.environ.get("GPTVIZ_DEFAULT_MODEL")
    if wanted and wanted in model_choices():
        return wanted
    return gptviz.default_model_name()


# ---- models: loaded once per process, shared by every session -----------------------------
class ModelRegistry:
    """Loaded models by name (at most MAX_MODELS_LOADED, least recently used dropped; `on_evict(name)`
    then lets go of whatever else still holds the dropped model, so its memory is freed)."""

    def __init__(self, on_evict: Callable[[str], None] | None = None) -> None:
        self._models: OrderedDict[str, GPT] = OrderedDict()
        self._lock = threading.Lock()  # guards _models, held only briefly
        self._loading = threading.Lock()  # one load at a time; sessions on loaded models do not wait for it
        self._on_evict = on_evict

    def loaded(self, name: str) -> bool:
        return name in self._models

    def holds(self, name: str, model: GPT) -> bool:
        """Whether `model` is the copy of `name` loaded now (not one unloaded meanwhile)."""
        return self._models.get(name) is model

    def get(self, name: str, progress: Callable[[int, int], None] | None = None) -> GPT:
        if (model := self._hit(name)) is not None:
            return model
        with self._loading:
            if (model := self._hit(name)) is not None:  # another session loaded it meanwhile
                return model
            model = gptviz.load_model(local_model_dirs().get(name, name), progress=progress)
            with self._lock:
                self._models[name] = model
                evicted = [self._models.popitem(last=False)[0] for _ in range(len(self._models) - MAX_MODELS_LOADED)]
            for dropped in evicted:
                if self._on_evict is not None:
                    self._on_evict(dropped)
            return model

    def _hit(self, name: str) -> GPT | None:
        with self._lock:
            if name in self._models:
                self._models.move_to_end(name)
                return self._models[name]
        return None


@st.cache_resource
def model_registry() -> ModelRegistry:
    return ModelRegistry(on_evict=lambda name: trace_store().forget(name))  # a trace holds its model


def load_with_progress(name: str) -> GPT:
    """The model `name`, showing a progress bar when it has to be converted or read first."""
    registry = model_registry()
    if registry.loaded(name):
        return registry.get(name)
    bar = st.progress(0.0, text=f"Loading {name}…")

    def progress(done: int, total: int) -> None:
        bar.progress(min(1.0, done / max(total, 1)), text=f"Loading {name}: {done}/{total}")

    try:
        return registry.get(name, progress)
    finally:
        bar.empty()


# ---- traces: cached per model and token sequence ----------------------------------------
def trace_bytes(tr: Trace) -> int:
    tensors = [tr.embed, tr.logits, *tr.resid_stream, *tr.resid_mids, *tr.qs, *tr.ks, *tr.vs]
    return sum(t.numel() * t.element_size() for t in tensors)


class TraceStore:
    """Traces by (model, ids), bounded in bytes. A sequence one step longer than a cached
    one is computed from that one's KV cache (only the new tokens run). A trace is kept only
    while `keep(model name, model)` says its model is still loaded (a trace holds its model)."""

    def __init__(self, budget_bytes: int, keep: Callable[[str, GPT], bool] | None = None) -> None:
        self._traces: OrderedDict[tuple, Trace] = OrderedDict()
        self._lock = threading.Lock()
        self._budget = budget_bytes
        self._keep = keep

    def get(self, model_name: str, model: GPT, ids: tuple[int, ...], knock_out: tuple | None = None) -> Trace:
        """The trace of ids; with knock_out (components, ablation) the trace of that knocked-out run."""
        if knock_out is not None:
            key = (model_name, ids, knock_out)
            with self._lock:
                hit = self._cached(key, model)
            return hit if hit is not None else self._keep_trace(
                key, model, gptviz.trace(model, ids, ablate=knock_out[0], ablation=knock_out[1]))
        with self._lock:
            hit = self._cached((model_name, ids), model)
            if hit is not None:
                self._traces.move_to_end((model_name, ids))
                return hit
            parent = next(
                filter(None, (self._cached((model_name, ids[:cut]), model)
                              for cut in range(len(ids) - 1, max(0, len(ids) - 9), -1))),
                None,
            )
        tr = parent.extend(ids[parent.n_tokens:]) if parent is not None else gptviz.trace(model, ids)
        return self._keep_trace((model_name, ids), model, tr)

    def _keep_trace(self, key: tuple, model: GPT, tr: Trace) -> Trace:
        with self._lock:  # forget() takes this lock too: a model unloaded after this check is forgotten later
            if self._keep is not None and not self._keep(key[0], model):
                return tr
            self._traces[key] = tr
            while len(self._traces) > 1 and sum(map(trace_bytes, self._traces.values())) > self._budget:
                self._traces.popitem(last=False)
        return tr

    def _cached(self, key: tuple, model: GPT) -> Trace | None:
        """The trace stored under key, if this very model computed it (not a copy unloaded since)."""
        tr = self._traces.get(key)
        return tr if tr is not None and tr.model is model else None

    def forget(self, model_name: str) -> None:
        """Drop every trace of one model (it was unloaded: its traces would keep it in memory)."""
        with self._lock:
            for key in [key for key in self._traces if key[0] == model_name]:
                del self._traces[key]


@st.cache_resource
def trace_store() -> TraceStore:
    return TraceStore(TRACE_CACHE_BYTES, keep=model_registry().holds)


class Memo:
    """Small results (maps of a few thousand numbers) by key, shared by every session; at most
    `size`, the least recently used dropped. Unlike st.cache_data, the computation may drive a
    progress bar drawn outside it."""

    def __init__(self, size: int) -> None:
        self._values: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def get(self, key: tuple, compute: Callable[[], object]) -> object:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = compute()  # outside the lock: other sessions keep reading meanwhile
        with self._lock:
            self._values[key] = value
            while len(self._values) > self._size:
                self._values.popitem(last=False)
        return value

    def has(self, key: tuple) -> bool:
        with self._lock:
            return key in self._values


@st.cache_resource
def memo() -> Memo:
    return Memo(64)


def remembered(key: tuple, compute: Callable[[Callable[[int, int], None]], object], what: str) -> object:
    """memo()'s value for key, computing it with a progress bar ("what: done/total") when missing;
    compute gets the progress callback(done, total)."""
    if memo().has(key):
        return memo().get(key, lambda: None)
    bar = st.progress(0.0, text=f"{what}…")
    try:
        return memo().get(key, lambda: compute(
            lambda done, total: bar.progress(min(1.0, done / max(total, 1)), text=f"{what}: {done}/{total}")))
    finally:
        bar.empty()


# ---- the state every page shares -------------------------------------------------------------
def restore_state() -> None:
    """Once per session: fill session state from the URL; then keep page widgets' values
    when a page is left (Streamlit drops the state of widgets that are not drawn)."""
    state = st.session_state
    if "_restored" not in state:
        state["_restored"] = True
        for key, kind in URL_KEYS.items():
            if key in st.query_params:
                try:
                    value = kind(st.query_params[key])
                    if kind is float and not math.isfinite(value):
                        raise ValueError("not a finite number")
                    state[key] = value
                except ValueError:
                    log.info("Ignoring bad URL value %s=%r", key, st.query_params[key])
        state.setdefault("model", default_model())
        state.setdefault("prompt", DEFAULT_PROMPT)
        state.setdefault("layer", 0)
        state.setdefault("head", 0)
        state.setdefault("max_tokens", MAX_VIEW_TOKENS)
        state.setdefault("gen", "")
        for key, value in SAMPLING_DEFAULTS.items():
            state.setdefault(key, value)
    for key in PERSISTENT_KEYS:
        if key in state:
            state[key] = state[key]
    if not model_allowed(state["model"]):
        state["model"] = default_model()


def save_url() -> None:
    """Write the shared selections to the address bar so a copied link reproduces the view."""
    state = st.session_state
    params = {}
    for key in URL_KEYS:
        if key in state:
            params[key] = str(state[key])
    for key in LONG_TEXT_KEYS:
        if len(str(state.get(key, ""))) > URL_PROMPT_LIMIT:
            params.pop(key, None)
    if params != dict(st.query_params):
        st.query_params.from_dict(params)


def generated_ids() -> list[int]:
    text = st.session_state.get("gen", "")
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        return []


def set_generated(ids: list[int]) -> None:
    st.session_state["gen"] = ",".join(map(str, ids))


def _forget_generated() -> None:
    st.session_state["gen"] = ""


def _model_changed() -> None:
    """A new model: no generated tokens, and the token limit back to its default for it."""
    _forget_generated()
    st.session_state.pop("max_tokens", None)


@dataclass(frozen=True)
class View:
    """What every page shows: the model, the tokens it reads, their trace, the focus."""

    model_name: str
    model: GPT
    prompt_ids: tuple[int, ...]  # the prompt's tokens that fit the context
    n_dropped: int  # prompt tokens cut from the start to fit the context
    generated: tuple[int, ...]
    trace: Trace  # what the pages show: plain_trace, or its knocked-out run when that switch is on
    layer: int
    head: int
    plain_trace: Trace  # the run without interventions
    knock_out: tuple | None = None  # (components, ablation) shown instead of the plain run, or None

    @property
    def ids(self) -> tuple[int, ...]:
        return self.prompt_ids + self.generated


def sidebar() -> None:
    """Draw the shared sidebar (model, prompt, layer, head); `view()` calls it on every page."""
    restore_state()
    state = st.session_state
    with st.sidebar:
        choices = model_choices()
        st.selectbox("Model", choices + [state["model"]] * (state["model"] not in choices), key="model",
                     on_change=_model_changed, help="Pick a model; hub models not downloaded yet offer a download.")
        if note := LICENCE_NOTES.get(state["model"]):
            st.caption(note)
        st.text_input("…or a Hugging Face repo id", key="hub_repo", on_change=_pick_repo,
                      placeholder="owner/name, e.g. Qwen/Qwen2.5-0.5B",
                      help=f"Any repo of an architecture gptviz runs that this server allows: {_patterns()}")
        if error := state.pop("_repo_error", None):
            st.error(error)
        st.text_area("Prompt", key="prompt", height=120, on_change=_forget_generated,
                     help="Any text. It is split into tokens and run through the model.")
        st.checkbox("Treat <|…|> text as special tokens", key="allow_special", on_change=_forget_generated)
        model = active_model()
        if model is not None:
            clamp_state("layer", 0, model.config.n_layer - 1, 0)
            clamp_state("head", 0, model.config.n_head - 1, 0)
            st.number_input("Layer", 0, model.config.n_layer - 1, step=1, key="layer")
            st.number_input("Head", 0, model.config.n_head - 1, step=1, key="head")
            n_ctx = model.config.n_ctx
            state["max_tokens"] = min(max(int(state.get("max_tokens") or MAX_VIEW_TOKENS), 2), n_ctx)
            st.number_input(
                "Tokens read at most", 2, n_ctx, step=256, key="max_tokens",
                help=f"Up to the model's context ({n_ctx:,}). Long prompts keep their last tokens. "
                     "Thousands of tokens take a while on a CPU and several GB of memory.",
            )
        n_gen = len(generated_ids())
        if n_gen:
            st.caption(f"{n_gen} generated token{'s' * (n_gen != 1)} appended to the prompt (Next token page)")
            st.button("Clear generated tokens", key="clear_gen", on_click=_forget_generated)
    save_url()


def active_model() -> GPT | None:
    """The picked model, loading it (with progress) or offering its download; falls back to
    the last model that worked, with a message, when the picked one cannot be used."""
    state = st.session_state
    name = state["model"]
    label = name
    if is_hub_name(name) and not is_cached(name):  # never downloads without the button (and the allow-list)
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
        if not is_cached(name):
            name = state.get("_active_model") or default_model()
            if name == label:
                return None
            st.caption(f"Showing **{name}** meanwhile.")
    try:
        model = load_with_progress(name)
    except (WeightsError, TokenizerError, ValueError, OSError) as err:
        st.error(f"Could not load {name}: {err}")
        fallback = state.get("_active_model")
        if fallback and fallback != name:
            st.caption(f"Still showing **{fallback}**.")
            return load_with_progress(fallback)
        return None
    state["_active_model"] = name
    return model


def leave_pages_folder_mode() -> None:
    """Streamlit runs a page file on its own, without app.py's st.navigation, when the first
    request of a process opens a page URL directly (the pages/ folder looks like an old-style
    multipage app). The page still works (it draws the sidebar itself); switch that mode off
    so every later run goes through app.py's navigation."""
    PagesManager.uses_pages_directory = False


def max_tokens(model: GPT) -> int:
    """Tokens (prompt + generated) the pages read at most: the sidebar's limit (default
    GPTVIZ_MAX_TOKENS, 1024), never more than the model's context."""
    wanted = st.session_state.get("max_tokens", MAX_VIEW_TOKENS)
    try:
        return min(model.config.n_ctx, max(2, int(wanted)))
    except (TypeError, ValueError):
        return min(model.config.n_ctx, MAX_VIEW_TOKENS)


def view() -> View:
    """Draw the shared sidebar, then return the current view for the page; shows a message
    and stops the page when there is none. Call it once per page run."""
    leave_pages_folder_mode()
    sidebar()
    state = st.session_state
    name = state.get("_active_model") or state["model"]
    model = load_with_progress(name) if model_allowed(name) else None
    if model is None:
        st.info("No model is loaded: pick one in the sidebar.")
        st.stop()
    prompt = state.get("prompt", "")
    if not prompt.strip():
        st.info("The prompt is empty: type some text in the sidebar to see the model read it.")
        st.stop()
    try:
        ids = model.tokenizer.encode(prompt, allow_special=bool(state.get("allow_special")), add_special_tokens=True)
    except TokenizerError as err:
        st.error(f"This prompt cannot be tokenized: {err}")
        st.stop()
    if not ids:
        st.info("The prompt has no tokens: type some text in the sidebar.")
        st.stop()
    n_ctx = max_tokens(model)
    generated = tuple(i for i in generated_ids() if 0 <= i < model.config.vocab_size)
    if len(generated) >= n_ctx:  # e.g. from a hand-edited link: keep room for one prompt token
        st.warning(f"Only the first {n_ctx - 1:,} of {len(generated):,} generated tokens fit in {n_ctx:,} tokens.")
        generated = generated[: n_ctx - 1]
    room = n_ctx - len(generated)
    bos = ids[:1] if model.tokenizer.add_bos and len(ids) > 1 else []  # kept when the oldest tokens go
    n_dropped = max(0, len(ids) - room)
    prompt_ids = tuple(bos + ids[len(bos) + n_dropped:])
    if n_dropped:
        reads = (f"{name} reads at most {n_ctx:,}" if n_ctx == model.config.n_ctx else
                 f"the sidebar's limit is {n_ctx:,} tokens (raise it up to {name}'s context of "
                 f"{model.config.n_ctx:,})")
        st.warning(
            f"The prompt has {len(ids):,} tokens but {reads}: the first "
            f"{n_dropped:,} tokens are left out and every view shows the last {len(prompt_ids):,}."
        )
    plain = trace_store().get(name, model, prompt_ids + generated)
    knock = knock_out_setting(model) if state.get("knockout_view") else None
    shown = plain if knock is None else trace_store().get(name, model, prompt_ids + generated, knock)
    if knock is not None:
        with st.sidebar:
            st.warning(f"Every page shows the run with {', '.join(map(component_label, knock[0]))} knocked out "
                       f"({knock[1]} ablation).")
            st.button("Show the plain run", key="knockout_off", on_click=lambda: state.update(knockout_view=False))
    return View(
        model_name=name, model=model, prompt_ids=prompt_ids, n_dropped=n_dropped, generated=generated,
        trace=shown, layer=min(int(state.get("layer", 0)), model.config.n_layer - 1),
        head=min(int(state.get("head", 0)), model.config.n_head - 1), plain_trace=plain, knock_out=knock,
    )


def ablation_setting() -> str:
    """The page's ablation, "zero" or "mean" (anything else in a link: "zero")."""
    value = st.session_state.get("ablation", "zero")
    return value if value in ABLATIONS else "zero"


def knock_out_setting(model: GPT) -> tuple | None:
    """(components, ablation) of the knock-out set kept in the URL ("knockout"), or None if empty."""
    components = parse_components(str(st.session_state.get("knockout", "")), model.config.n_layer,
                                  model.config.n_head)
    return (tuple(components), ablation_setting()) if components else None


def trace_of(v: View, ids: tuple[int, ...], knock_out: tuple | None = None) -> Trace:
    """The (cached) trace of other ids on the view's model, e.g. a corrupted prompt, or of a knocked-out run."""
    return trace_store().get(v.model_name, v.model, tuple(ids), knock_out)


def follow_position(T: int) -> None:
    """Clamp the shared "position" (a token index, T tokens) to the sequence; keep it on the
    last token if it was there, so it follows the end as tokens are generated."""
    state = st.session_state
    was_T = state.get("_position_T")
    position = int(state.get("position", T - 1))
    if was_T is not None and position == was_T - 1:
        position = T - 1
    state["position"] = min(max(position, 0), T - 1)
    state["_position_T"] = T


def explain(text: str) -> None:
    """A short learner's explanation above a view (collapsed, so experts skip it)."""
    with st.expander("What am I looking at?", expanded=False):
        st.markdown(text)


def download_csv(frame, name: str, key: str) -> None:
    """A CSV download button for a table or matrix (pandas DataFrame)."""
    st.download_button(f"Download {name} as CSV", frame.to_csv(index=True).encode(), file_name=f"{name}.csv",
                       mime="text/csv", key=key)


CHART_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


def chart(fig, key: str, **kwargs):
    """Draw a plotly figure; its modebar's camera button saves it as PNG (works offline)."""
    return st.plotly_chart(fig, key=key, config=CHART_CONFIG, width="stretch", **kwargs)


# ---- helpers every page may need: widget state, tables, cached analyses, notes ----------------------
def clamp_state(key: str, low: int, high: int, default: int) -> int:
    """Keep a widget's remembered value inside [low, high] (the prompt or the model may have shrunk)."""
    state = st.session_state
    try:
        value = int(state.get(key, default))
    except (TypeError, ValueError):
        value = default
    state[key] = min(max(value, low), high)
    return state[key]


def matrix_frame(z, rows: list[str], cols: list[str] | None = None, index_name: str | None = None) -> pd.DataFrame:
    """A matrix as a table for download_csv: rows and columns labelled (e.g. by token_labels)."""
    return pd.DataFrame(z, index=pd.Index(rows, name=index_name), columns=cols)


def fmt_bytes(n: float) -> str:
    """Bytes in binary units: 9,216 B, 2.2 MB, 2.3 GB."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024:
            return f"{n:,.0f} B" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TB"


@st.cache_data(max_entries=16, show_spinner=False)
def _head_stats(model_name: str, ids: tuple[int, ...], _trace: Trace) -> heads.HeadStats:
    return heads.head_stats(_trace)


def head_stats(v: View) -> heads.HeadStats:
    """Every head's scores, overview tiles and similarity rows for the view's tokens (cached per prompt,
    shared by the pages that show them)."""
    return _head_stats(v.model_name, v.ids, v.trace)


@st.cache_data(max_entries=64, show_spinner=False)
def _pooled_pattern(model_name: str, ids: tuple[int, ...], layer: int, head: int, size: int, _trace: Trace):
    return heads.pooled_pattern(_trace, layer, head, size)


def pooled_pattern(v: View, layer: int, head: int, size: int) -> tuple:
    """One head's pattern max-pooled to at most size × size blocks, (pooled, edges) (cached per prompt)."""
    return _pooled_pattern(v.model_name, v.ids, layer, head, size, v.trace)


def window_note(config: GPTConfig, layer: int | None = None) -> str:
    """What a sliding window is, for a model that has local layers ("" for one that has none); with
    `layer`, whether that layer is local and what it sees."""
    if not config.has_sliding_layers:
        return ""
    w, n_local = config.sliding_window, config.layer_types.count("sliding")
    which = (f"All {n_local} of this model's layers are" if n_local == config.n_layer else
             f"{n_local} of this model's {config.n_layer} layers are")
    others = "" if n_local == config.n_layer else " The other layers are *global*: they see every earlier token."
    note = (f"\n\n**Sliding window.** {which} *local*: a query there sees only itself and the {w - 1:,} tokens "
            f"before it (a window of {w:,} keys, i − {w:,} < j ≤ i); keys further back are masked like future ones "
            f"(drawn in orange).{others} Local layers make long prompts cheaper: their attention grows like "
            f"T·{w:,}, not T².")
    if layer is not None:
        kind = (f"local: beyond {w:,} tokens its queries no longer see the start of the prompt"
                if config.window(layer) else "global: its queries see every earlier token")
        note += f" Layer {layer} is {kind}."
    return note
