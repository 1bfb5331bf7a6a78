"""KV-cache generation, trace extension and concurrent traces."""
from __future__ import annotations

import threading

import pytest
import torch

import gptviz
from gptviz.sampling import SamplingSettings
from numerics import assert_close


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("settings", [SamplingSettings(temperature=0), SamplingSettings(0.8, 20, 0.9)])
def test_kv_cache_generation_equals_recomputing(family, settings, tiny_gpt2, tiny_llama):
    model = tiny_gpt2 if family == "gpt2" else tiny_llama
    ids = model.tokenizer.encode("Once upon a time there was")
    cached = gptviz.generate(model, ids, 12, settings, seed=7, use_cache=True)
    full = gptviz.generate(model, ids, 12, settings, seed=7, use_cache=False)
    assert [s.token_id for s in cached] == [s.token_id for s in full]
    for a, b in zip(cached, full):
        assert_close(a.logits, b.logits, ulps=32)  # the same maths over cached keys: another summation order


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_extend_equals_a_fresh_trace(family, tiny_gpt2, tiny_llama):
    model = tiny_gpt2 if family == "gpt2" else tiny_llama
    ids = model.tokenizer.encode("Alice and Bob went to the market")
    grown = gptviz.trace(model, ids).extend([262]).extend([3797, 318])
    fresh = gptviz.trace(model, ids + [262, 3797, 318])
    assert grown.ids == fresh.ids and grown.tokens == fresh.tokens
    # the same maths over cached keys: another summation order
    assert_close(grown.logits, fresh.logits, ulps=32)
    assert_close(grown.resid, fresh.resid, ulps=32)
    for layer in range(model.config.n_layer):
        assert_close(grown.patterns(layer), fresh.patterns(layer), ulps=32)


def test_generation_is_reproducible_and_seed_dependent(tiny_gpt2):
    ids = tiny_gpt2.tokenizer.encode("Hello")
    settings = SamplingSettings(temperature=1.5)
    first = [s.token_id for s in gptviz.generate(tiny_gpt2, ids, 10, settings, seed=1)]
    again = [s.token_id for s in gptviz.generate(tiny_gpt2, ids, 10, settings, seed=1)]
    other = [s.token_id for s in gptviz.generate(tiny_gpt2, ids, 10, settings, seed=2)]
    assert first == again
    assert first != other


def test_generation_stops_at_the_context(tiny_gpt2):
    n_ctx = tiny_gpt2.config.n_ctx
    steps = gptviz.generate(tiny_gpt2, [11] * (n_ctx - 3), 10, SamplingSettings(temperature=0))
    assert len(steps) == 3


def test_concurrent_traces_each_get_their_own_result(tiny_llama):
    prompts = [f"Prompt number {i} says {'hello ' * i}" for i in range(8)]
    expected = {p: gptviz.trace(tiny_llama, p) for p in prompts}
    results: dict[str, gptviz.Trace] = {}
    barrier = threading.Barrier(len(prompts))

    def work(prompt: str) -> None:
        barrier.wait()
        for _ in range(3):
            results[prompt] = gptviz.trace(tiny_llama, prompt)
            results[prompt].patterns(0)

    threads = [threading.Thread(target=work, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for prompt in prompts:
        got, want = results[prompt], expected[prompt]
        assert got.ids == want.ids
        assert torch.equal(got.logits, want.logits)
        assert torch.equal(got.patterns(1), want.patterns(1))


def test_too_long_and_empty_prompts_say_what_to_do(tiny_gpt2):
    with pytest.raises(ValueError, match="empty"):
        gptviz.trace(tiny_gpt2, "")
    with pytest.raises(ValueError, match="context"):
        gptviz.trace(tiny_gpt2, [11] * (tiny_gpt2.config.n_ctx + 1))
    with pytest.raises(ValueError, match="vocabulary"):
        gptviz.trace(tiny_gpt2, [tiny_gpt2.config.vocab_size])
