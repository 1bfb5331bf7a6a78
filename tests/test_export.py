"""The trace exports read back to the trace's own numbers (.npz exactly, JSON to 6 decimals)."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

import gptviz
from gptviz import export
from numerics import assert_close

PROMPT = "The cat sat on the mat. 🤗 The cat"
ROUNDED = 0.5 * 10.0**-export.JSON_DECIMALS  # the JSON's decimal rounding: an absolute error by construction


@pytest.fixture(params=["gpt2", "llama"])
def model(request, tiny_gpt2, tiny_llama):
    return tiny_gpt2 if request.param == "gpt2" else tiny_llama


def load_npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data)) as f:
        return {name: f[name] for name in f.files}


def test_npz_round_trip_equals_trace_tensors(model):
    tr = gptviz.trace(model, PROMPT)
    arrays = load_npz(export.trace_to_npz(tr))
    expected = {
        "ids": torch.tensor(tr.ids), "embed": tr.embed, "resid": tr.resid,
        "resid_mid": torch.stack([tr.resid_mid(layer) for layer in range(tr.n_layer)]),
        "q": torch.stack([tr.q(layer) for layer in range(tr.n_layer)]),
        "k": torch.stack([tr.k(layer) for layer in range(tr.n_layer)]),
        "v": torch.stack([tr.v(layer) for layer in range(tr.n_layer)]),
        "logits": tr.logits,
    }
    if tr.pos_embed is not None:
        expected["pos_embed"] = tr.pos_embed
    assert set(arrays) == set(expected) | {"metadata"}
    for name, tensor in expected.items():
        np.testing.assert_array_equal(arrays[name], tensor.numpy(), err_msg=name)
    cfg = model.config
    T = tr.n_tokens
    assert arrays["q"].shape == (cfg.n_layer, cfg.n_head, T, cfg.d_head)
    assert arrays["k"].shape == (cfg.n_layer, cfg.n_kv_head, T, cfg.d_head)
    assert arrays["resid"].shape == (cfg.n_layer + 1, T, cfg.d_model)
    meta = json.loads(str(arrays["metadata"]))
    assert meta["config"] == cfg.to_dict()
    assert meta["tokens"] == tr.tokens and meta["ids"] == tr.ids and meta["n_tokens"] == T


def test_npz_pos_embed_only_for_gpt2(tiny_gpt2, tiny_llama):
    assert "pos_embed" in load_npz(export.trace_to_npz(gptviz.trace(tiny_gpt2, "a b")))
    assert "pos_embed" not in load_npz(export.trace_to_npz(gptviz.trace(tiny_llama, "a b")))


def test_npz_without_logits_or_compression_and_contents_match(model):
    tr = gptviz.trace(model, PROMPT)
    compressed = export.trace_to_npz(tr, include_logits=True)
    plain = export.trace_to_npz(tr, include_logits=True, compressed=False)
    assert len(plain) > len(compressed)
    for name, array in load_npz(plain).items():
        np.testing.assert_array_equal(array, load_npz(compressed)[name], err_msg=name)
    for include in (True, False):
        arrays = load_npz(export.trace_to_npz(tr, include_logits=include))
        contents = export.npz_contents(tr, include_logits=include)
        assert ("logits" in arrays) is include
        assert set(contents) == set(arrays) - {"metadata"}
        for name, (shape, n_bytes) in contents.items():
            assert arrays[name].shape == shape, name
            assert arrays[name].nbytes == n_bytes, name


def test_npz_of_an_extended_trace(tiny_gpt2):
    tr = gptviz.trace(tiny_gpt2, "one two").extend([11, 13])
    arrays = load_npz(export.trace_to_npz(tr))
    np.testing.assert_array_equal(arrays["ids"], tr.ids)
    np.testing.assert_array_equal(arrays["pos_embed"], tr.pos_embed.numpy())
    assert arrays["k"].shape[2] == tr.n_tokens


def test_json_round_trip_values(model):
    tr = gptviz.trace(model, PROMPT)
    out = json.loads(export.trace_to_json(tr, top_k=4))
    assert out["ids"] == tr.ids and out["tokens"] == tr.tokens
    assert out["config"] == model.config.to_dict()
    assert len(out["top_next_tokens"]) == tr.n_tokens
    for pos, row in enumerate(out["top_next_tokens"]):
        probs = torch.softmax(tr.logits[pos], dim=-1)
        top = torch.topk(tr.logits[pos], 4)
        assert [entry["id"] for entry in row] == top.indices.tolist()
        for entry, i, logit in zip(row, top.indices.tolist(), top.values):
            assert entry["token"] == model.tokenizer.token_strings([i])[0]
            # the same float32 numbers, rounded to JSON_DECIMALS
            assert_close(entry["probability"], probs[i], ulps=8, atol=ROUNDED)
            assert_close(entry["logit"], logit, ulps=8, atol=ROUNDED)
    norms = np.asarray(out["resid_norms"])
    assert norms.shape == (model.config.n_layer + 1, tr.n_tokens)
    assert_close(norms, tr.resid.norm(dim=-1), ulps=16, atol=ROUNDED)  # the same norms, rounded to JSON_DECIMALS


def test_json_attention_patterns_for_short_prompts(model):
    tr = gptviz.trace(model, PROMPT)
    out = json.loads(export.trace_to_json(tr))
    patterns = out["attention"]
    assert len(patterns) == model.config.n_layer and len(patterns[0]) == model.config.n_head
    for layer in range(model.config.n_layer):
        for head in range(model.config.n_head):
            expected = tr.attention(layer, head).numpy()
            rows = patterns[layer][head]
            assert [len(r) for r in rows] == list(range(1, tr.n_tokens + 1))  # causal part only
            for q, row in enumerate(rows):
                # a float32 softmax row (rtol), each of its values rounded (atol)
                assert_close(sum(row), 1.0, rtol=1e-6, atol=len(row) * ROUNDED)
                assert_close(row, expected[q, : q + 1], ulps=8, atol=ROUNDED)  # the same pattern, rounded
    assert any("attention" in note for note in out["notes"])


def test_json_leaves_patterns_out_for_long_prompts(tiny_gpt2):
    tr = gptviz.trace(tiny_gpt2, "one two three four five six")
    out = json.loads(export.trace_to_json(tr, max_tokens=tr.n_tokens - 1))
    assert out["attention"] is None
    assert any("left out" in note and str(tr.n_tokens) in note for note in out["notes"])
    assert json.loads(export.trace_to_json(tr, max_tokens=tr.n_tokens))["attention"] is not None


def test_json_rejects_bad_top_k(tiny_gpt2):
    with pytest.raises(ValueError, match="top_k"):
        export.trace_to_json(gptviz.trace(tiny_gpt2, "hi"), top_k=0)
