"""Many sessions at once, briefly (the long run: scripts/load-test.sh): 8 concurrent browser
sessions on three models each see only their own tokens, and the server's memory stays bounded."""
from __future__ import annotations

import gc
import os
import threading
import time
import weakref
from dataclasses import asdict

import gptviz
from conftest import save_tiny_gpt2
from gptviz import ui
from gptviz.ui.store import RunKey
from load_test import run_load_test


def test_eight_concurrent_sessions_see_their_own_tokens(tiny_gpt2_dir, tiny_llama_dir):
    report = run_load_test(sessions=8, rounds=4, deadline_s=300, wait_timeout_s=150,
                           model_dirs=[tiny_gpt2_dir, tiny_llama_dir], include_default=True)
    summary = {k: v for k, v in asdict(report).items() if k != "per_session"}
    assert report.passed, summary
    assert len(set(report.models)) == 3 and all(s["rounds_done"] == 4 for s in report.per_session)
    # Three models take turns in a registry of two, so SmolLM2 is unloaded and loaded again every
    # round: each unloaded copy must be let go (while traces kept them, each round added ~550 MB;
    # a trace computed while its model was being unloaded may keep one copy a little longer).
    assert report.rss_end_mb <= report.rss_first_round_mb + 800, summary
    assert report.rss_peak_mb < 4000, summary


def test_an_unloaded_model_is_freed_with_its_traces(app_env, tiny_gpt2_dir, tmp_path, monkeypatch):
    third = save_tiny_gpt2(tmp_path / "third-gpt2", seed=3)
    monkeypatch.setenv("GPTVIZ_MODEL_DIRS", os.environ["GPTVIZ_MODEL_DIRS"] + os.pathsep + str(third))
    registry = ui.ModelRegistry(on_evict=lambda name: store.forget(name))
    store = ui.TraceStore(budget_bytes=2**30, keep=registry.holds)  # wired as in ui.trace_store()
    names = [app_env["gpt2"], app_env["llama"], "local: third-gpt2"]
    first = registry.get(names[0])
    store.get(RunKey(names[0], (1, 2, 3)), first)
    gone = weakref.ref(first)
    del first
    for name in names[1:]:
        store.get(RunKey(name, (4, 5)), registry.get(name))
    gc.collect()
    assert gone() is None, "the unloaded model is still referenced"
    assert [registry.loaded(name) for name in names] == [False, True, True]
    again = registry.get(names[0])  # loads afresh, and its trace is computed afresh with it
    assert store.get(RunKey(names[0], (1, 2, 3)), again).model is again

    # A trace computed by a copy that was unloaded while it ran is returned but not kept.
    stale = gptviz.load_model(str(tiny_gpt2_dir))
    assert store.get(RunKey(names[0], (7, 8)), stale).model is stale
    gone = weakref.ref(stale)
    del stale
    gc.collect()
    assert gone() is None, "a trace of an unloaded copy was kept"

    # Without that check, a trace of another copy is still never served for this one.
    plain = ui.TraceStore(budget_bytes=2**30)
    old, new = gptviz.load_model(str(tiny_gpt2_dir)), gptviz.load_model(str(tiny_gpt2_dir))
    plain.get(RunKey("race", (7, 8)), old)
    assert plain.get(RunKey("race", (7, 8)), new).model is new
    assert plain.get(RunKey("race", (7, 8, 9)), new).model is new


def test_a_loaded_model_is_served_while_another_one_loads(app_env, monkeypatch):
    """A slow load (a first GGUF conversion, a big GPT-2) must not hold up sessions on loaded models."""
    registry = ui.ModelRegistry()
    loaded = registry.get(app_env["gpt2"])
    started, release = threading.Event(), threading.Event()

    def slow_load(source, progress=None):
        started.set()
        release.wait(timeout=30)
        return loaded

    monkeypatch.setattr(gptviz.loading, "load_model", slow_load)
    other = threading.Thread(target=registry.get, args=(app_env["llama"],))
    other.start()
    try:
        assert started.wait(timeout=10)
        begin = time.perf_counter()
        assert registry.get(app_env["gpt2"]) is loaded
        assert time.perf_counter() - begin < 1 and not release.is_set()
    finally:
        release.set()
        other.join(timeout=30)
    assert registry.loaded(app_env["llama"])
