"""What the process holds for every session: loaded models, traces, and results derived from them.

A run is named by its key: (model, token ids, knock-out set and kind). A trace is stored under its
run's key, and every analysis of it under (that key, the analysis, its arguments), so a value can
never outlive or stand in for the run it was computed from (a knocked-out page once showed the
plain run's numbers because an analysis was cached by model name and ids beside an unhashed trace).
Shared by every session of the process; bounded (traces in bytes, results in number).
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, TypeVar

import streamlit as st

from gptviz import loading
from gptviz.model import GPT
from gptviz.trace import Trace, trace
from gptviz.ui.own_models import own_models

T = TypeVar("T")
TRACE_CACHE_BYTES = int(float(os.environ.get("GPTVIZ_TRACE_CACHE_MB", "3000")) * 2**20)
RESULTS_MAX = 96  # derived results kept (maps and tables of a few thousand numbers, some a few MB)
MAX_MODELS_LOADED = 2


# ---- models: loaded once per process, shared by every session -----------------------------
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


def model_source(name: str) -> tuple[str, dict]:
    """The picker's name -> what load_model reads (a session's own model's path and options, a local
    directory's path, an offline name or a hub repo id) and its keyword arguments."""
    if (own := own_models().get(name)) is not None:
        return own.path, dict(own.options)
    return local_model_dirs().get(name, name), {}


def load_named(name: str, progress: Callable[[int, int], None] | None = None) -> GPT:
    """The picker's name -> the model."""
    path, options = model_source(name)
    return loading.load_model(path, progress=progress, **options)


class ModelRegistry:
    """Loaded models by name (at most MAX_MODELS_LOADED, least recently used dropped; `on_evict(name)`
    then lets go of whatever else still holds the dropped model, so its memory is freed)."""

    def __init__(self, on_evict: Callable[[str], None] | None = None, load: Callable[..., GPT] = load_named) -> None:
        self._models: OrderedDict[str, GPT] = OrderedDict()
        self._lock = threading.Lock()  # guards _models, held only briefly
        self._loading = threading.Lock()  # one load at a time; sessions on loaded models do not wait for it
        self._load = load  # (name, progress) -> model
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
            model = self._load(name, progress)
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


class RunKey(NamedTuple):
    """Everything a run's numbers depend on."""

    model: str  # the model's name in the picker
    ids: tuple[int, ...]  # the tokens read (prompt + generated)
    knock_out: tuple | None = None  # ((component, ...), "zero" | "mean"), or None for the plain run


@dataclass(frozen=True)
class Run:
    """A run and its trace; equal and hashed by key only, so a Run can be an analysis's argument."""

    key: RunKey
    trace: Trace = field(compare=False, hash=False, repr=False)


def trace_bytes(tr: Trace) -> int:
    tensors = [tr.embed, tr.last_logits, *tr.resid_stream, *tr.resid_mids, *tr.qs, *tr.ks, *tr.vs]
    return sum(t.numel() * t.element_size() for t in tensors)


class TraceStore:
    """Traces by run key, bounded in bytes. A plain sequence one step longer than a cached one is
    computed from that one's KV cache (only the new tokens run). A trace is kept only while
    `keep(model name, model)` says its model is still loaded (a trace holds its model)."""

    def __init__(self, budget_bytes: int, keep: Callable[[str, GPT], bool] | None = None) -> None:
        self._traces: OrderedDict[RunKey, Trace] = OrderedDict()
        self._lock = threading.Lock()
        self._budget = budget_bytes
        self._keep = keep

    def get(self, key: RunKey, model: GPT) -> Trace:
        """The trace of key's run on `model` (the model loaded under key.model)."""
        with self._lock:
            hit = self._cached(key, model)
            if hit is not None:
                self._traces.move_to_end(key)
                return hit
            parent = None if key.knock_out is not None else next(
                filter(None, (self._cached(key._replace(ids=key.ids[:cut]), model)
                              for cut in range(len(key.ids) - 1, max(0, len(key.ids) - 9), -1))), None)
        if parent is not None:
            tr = parent.extend(key.ids[parent.n_tokens:])
        elif key.knock_out is not None:
            tr = trace(model, key.ids, ablate=key.knock_out[0], ablation=key.knock_out[1])
        else:
            tr = trace(model, key.ids)
        return self._keep_trace(key, model, tr)

    def _keep_trace(self, key: RunKey, model: GPT, tr: Trace) -> Trace:
        with self._lock:  # forget() takes this lock too: a model unloaded after this check is forgotten later
            if self._keep is not None and not self._keep(key.model, model):
                return tr
            self._traces[key] = tr
            while len(self._traces) > 1 and sum(map(trace_bytes, self._traces.values())) > self._budget:
                self._traces.popitem(last=False)
        return tr

    def _cached(self, key: RunKey, model: GPT) -> Trace | None:
        """The trace stored under key, if this very model computed it (not a copy unloaded since)."""
        tr = self._traces.get(key)
        return tr if tr is not None and tr.model is model else None

    def forget(self, model_name: str) -> None:
        """Drop every trace of one model (it was unloaded: its traces would keep it in memory)."""
        with self._lock:
            for key in [key for key in self._traces if key.model == model_name]:
                del self._traces[key]


class Results:
    """Derived results by key, least recently used dropped beyond `size`. Unlike st.cache_data, the
    computation may drive a progress bar drawn outside it."""

    def __init__(self, size: int) -> None:
        self._values: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def lookup(self, key: tuple) -> tuple[bool, object]:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return True, self._values[key]
        return False, None

    def put(self, key: tuple, value: object) -> None:
        with self._lock:
            self._values[key] = value
            while len(self._values) > self._size:
                self._values.popitem(last=False)

    def forget(self, model_name: str) -> None:
        with self._lock:
            for key in [key for key in self._values if key[0] == model_name]:
                del self._values[key]


def _forget(name: str) -> None:
    """A model was unloaded: drop what still holds it (its traces) and what was derived from it."""
    trace_store().forget(name)
    results().forget(name)


@st.cache_resource
def model_registry() -> ModelRegistry:
    return ModelRegistry(on_evict=_forget)


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


@st.cache_resource
def trace_store() -> TraceStore:
    return TraceStore(TRACE_CACHE_BYTES, keep=model_registry().holds)


@st.cache_resource
def results() -> Results:
    return Results(RESULTS_MAX)


def run(key: RunKey, model: GPT) -> Run:
    """The run named by key, its trace from the store (computed once)."""
    return Run(key, trace_store().get(key, model))


def _name(fn: Callable) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def derived(source: Run, fn: Callable[..., T], *args, progress: str | None = None) -> T:
    """fn(source's trace, *args), computed once per (run key, fn, args) and shared by every session.

    Runs among args are passed to fn as their traces (their keys are part of the cache key), e.g.
    a corrupted prompt's run for patching. With `progress` ("Doing this"), fn also gets a
    progress=callback(done, total) keyword and a progress bar is shown while it runs."""
    key = (source.key.model, source.key, _name(fn), args)
    found, value = results().lookup(key)
    if found:
        return value
    call_args = [a.trace if isinstance(a, Run) else a for a in args]
    if progress is None:
        value = fn(source.trace, *call_args)
    else:
        bar = st.progress(0.0, text=f"{progress}…")
        try:
            value = fn(source.trace, *call_args, progress=lambda done, total: bar.progress(
                min(1.0, done / max(total, 1)), text=f"{progress}: {done}/{total}"))
        finally:
            bar.empty()
    results().put(key, value)
    return value


def computed(source: Run, fn: Callable, *args) -> bool:
    """Whether derived(source, fn, *args) is already in the store."""
    return results().lookup((source.key.model, source.key, _name(fn), args))[0]


def of_model(model_name: str, model: GPT, fn: Callable[..., T], *args) -> T:
    """fn(model, *args) for what depends on the weights alone (parameter counts, the position
    table, an induction test), computed once per (model, fn, args)."""
    key = (model_name, None, _name(fn), args)
    found, value = results().lookup(key)
    if not found:
        value = fn(model, *args)
        results().put(key, value)
    return value
