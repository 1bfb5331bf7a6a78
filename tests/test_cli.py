"""The command line's summary: the prompt's tokens and the model's top next tokens (gptviz.sampling.top_tokens)."""
from __future__ import annotations

import json

import pytest
import torch

import gptviz
from gptviz.__main__ import main, summarize
from gptviz.sampling import top_tokens
from numerics import assert_close


def test_summary_lists_the_softmax_top(tiny_llama):
    out = summarize(tiny_llama, "The cat sat on the mat", 5, False)
    tr = gptviz.trace(tiny_llama, "The cat sat on the mat")
    probs = torch.softmax(tr.logits[-1].double(), -1)
    values, ids = torch.topk(probs, 5)
    assert [n["id"] for n in out["next"]] == ids.tolist()
    assert_close([n["prob"] for n in out["next"]], values, ulps=64)  # a float64 softmax, another summation order
    assert [n["token"] for n in out["next"]] == tiny_llama.tokenizer.token_strings(ids.tolist())
    assert out["model"] == tiny_llama.name and [t["id"] for t in out["tokens"]] == tr.ids


def test_top_tokens_over_rows_and_bad_k():
    logits = torch.randn(3, 7, 50, generator=torch.Generator().manual_seed(0))
    ids, values, probs = top_tokens(logits, 4, chunk=5)  # chunks smaller than the 21 rows
    assert ids.shape == values.shape == probs.shape == (3, 7, 4)
    expected = torch.softmax(logits.double(), -1).topk(4)
    assert probs.dtype == torch.float64
    assert_close(probs, expected.values, ulps=64)  # a float64 softmax over chunks of rows: another summation order
    assert torch.equal(ids, expected.indices)
    assert top_tokens(logits[0, 0], 99)[0].shape == (50,)  # k beyond the vocabulary: all of it
    with pytest.raises(ValueError, match="k must be"):
        top_tokens(logits, 0)


def test_main_prints_json(tiny_gpt2_dir, capsys):
    assert main(["Hello world", "--model", str(tiny_gpt2_dir), "--top", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["next"]) == 3 and out["model"] == tiny_gpt2_dir.name
