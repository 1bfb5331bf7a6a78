"""gptviz against transformers (eager attention) on random models saved with save_pretrained."""
from __future__ import annotations

import pytest
import torch
import transformers

import gptviz
from numerics import assert_close

GPT2_CASES = [  # (config overrides, T): odd head counts, T not a power of two
    (dict(n_embd=60, n_layer=3, n_head=5), 37),
    (dict(n_embd=49, n_layer=2, n_head=7, n_positions=64), 63),
    (dict(n_embd=32, n_layer=1, n_head=1, n_inner=80), 1),
    (dict(n_embd=48, n_layer=4, n_head=3), 100),
]
LLAMA_CASES = [  # grouped-query (6 heads / 2 kv), multi-query (1 kv), plain (kv = heads)
    (dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2), 29),
    (dict(hidden_size=40, num_hidden_layers=3, num_attention_heads=5, num_key_value_heads=1, rope_theta=100000.0), 51),
    (dict(hidden_size=36, num_hidden_layers=2, num_attention_heads=3, num_key_value_heads=3, rms_norm_eps=1e-6), 17),
]


# More architectures, each (transformers config class, its arguments, T): odd sizes, grouped- and
# multi-query attention, explicit head sizes, and T longer than the sliding windows.
SMALL = dict(vocab_size=50257, hidden_size=40, intermediate_size=72, num_hidden_layers=3, max_position_embeddings=96)
ARCH_CASES = {
    "llama3-rope": ("LlamaConfig", dict(SMALL, num_attention_heads=5, num_key_value_heads=1, tie_word_embeddings=False,
                                        rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                                                             low_freq_factor=1.0, high_freq_factor=4.0,
                                                             original_max_position_embeddings=16)), 41),
    "llama-bias": ("LlamaConfig", dict(SMALL, num_attention_heads=4, num_key_value_heads=2, attention_bias=True,
                                       mlp_bias=True), 19),
    "qwen2": ("Qwen2Config", dict(SMALL, num_attention_heads=5, num_key_value_heads=5), 33),
    "qwen2-sliding": ("Qwen2Config", dict(SMALL, num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True,
                                          sliding_window=7, max_window_layers=1), 30),
    "qwen3": ("Qwen3Config", dict(SMALL, num_attention_heads=3, num_key_value_heads=1, head_dim=18), 27),
    "mistral": ("MistralConfig", dict(SMALL, num_attention_heads=5, num_key_value_heads=1, sliding_window=9), 35),
    "gemma3": ("Gemma3TextConfig", dict(SMALL, hidden_size=42, num_hidden_layers=4, num_attention_heads=3,
                                        num_key_value_heads=1,
                                        head_dim=22, query_pre_attn_scalar=17, sliding_window=6,
                                        layer_types=["sliding_attention", "full_attention", "sliding_attention",
                                                     "sliding_attention"],
                                        rope_parameters={"full_attention": dict(rope_type="linear", factor=2.0,
                                                                                rope_theta=1e6),
                                                         "sliding_attention": dict(rope_type="default",
                                                                                   rope_theta=1e4)}), 23),
    # Pythia: parallel attention and MLP, rotary on a quarter of each head, LayerNorm, exact GELU, biases
    "gpt_neox": ("GPTNeoXConfig", dict(SMALL, hidden_size=48, num_attention_heads=3, intermediate_size=88,
                                       rope_parameters=dict(rope_type="default", rope_theta=10000.0,
                                                            partial_rotary_factor=0.25)), 37),
    # Gemma 2: scores and logits soft-capped (caps small enough to bite on a random model), local/global
    "gemma2": ("Gemma2Config", dict(SMALL, hidden_size=42, num_attention_heads=3, num_key_value_heads=1,
                                    head_dim=22, query_pre_attn_scalar=17, sliding_window=6, initializer_range=0.1,
                                    attn_logit_softcapping=2.0, final_logit_softcapping=1.5), 23),
    # Phi-3: fused qkv and gate/up projections, partial rotary, every layer sliding
    "phi3": ("Phi3Config", dict(SMALL, num_attention_heads=4, num_key_value_heads=2, sliding_window=9,
                                rope_parameters=dict(rope_type="default", rope_theta=10000.0,
                                                     partial_rotary_factor=0.6)), 30),
    # OLMo-2: norms only after the sublayers, q/k norms over the whole projection
    "olmo2": ("Olmo2Config", dict(SMALL, num_attention_heads=5, num_key_value_heads=1), 25),
}


def reference(path, family: str):
    cls = transformers.GPT2LMHeadModel if family == "gpt2" else transformers.AutoModelForCausalLM
    return cls.from_pretrained(path, attn_implementation="eager").eval()


def save_random(path, config_class: str, seed: int, **kwargs):
    """A random transformers model of `config_class`, saved with save_pretrained (safetensors). Biases
    and norm weights (every 1-D parameter), which transformers initialises to constants, get noise, so
    that one loaded in the wrong place or order shows."""
    torch.manual_seed(seed)
    config = getattr(transformers, config_class)(**kwargs)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 1:
                param.add_(0.1 * torch.randn_like(param))
    model.save_pretrained(path)
    return path


def compare(ours, hf, ids: list[int]) -> None:
    with torch.no_grad():
        out = hf(torch.tensor([ids]), output_attentions=True, output_hidden_states=True)
    tr = gptviz.trace(ours, ids)
    # every comparison here: vs transformers' own kernels (float32), another summation order
    assert_close(tr.logits, out.logits[0], ulps=64, what="logits")
    n_layer = ours.config.n_layer
    assert len(out.attentions) == n_layer
    for layer in range(n_layer):
        assert_close(tr.patterns(layer), out.attentions[layer][0], ulps=64, what=f"patterns {layer}")
        for head in range(ours.config.n_head):
            assert_close(tr.attention(layer, head), out.attentions[layer][0, head], ulps=64, what=f"L{layer}H{head}")
    hidden = torch.stack([h[0] for h in out.hidden_states])  # (n_layer + 1, T, C), last one after the final norm
    assert_close(tr.resid[:-1], hidden[:-1], ulps=64, what="resid")
    assert_close(tr.final_norm, hidden[-1], ulps=64, what="final norm")
    assert_close(tr.probs, torch.softmax(out.logits[0], -1), ulps=64, what="probs")


@pytest.mark.parametrize("overrides,T", GPT2_CASES)
def test_gpt2_matches_transformers(tmp_path, overrides, T):
    from conftest import save_tiny_gpt2

    path = save_tiny_gpt2(tmp_path / "m", seed=T, **overrides)
    ours = gptviz.load_model(str(path))
    assert ours.config.arch == "gpt2"
    ids = torch.randint(0, ours.config.vocab_size, (T,), generator=torch.Generator().manual_seed(T)).tolist()
    compare(ours, reference(path, "gpt2"), ids)


@pytest.mark.parametrize("overrides,T", LLAMA_CASES)
def test_llama_matches_transformers(tmp_path, overrides, T):
    from conftest import save_tiny_llama

    path = save_tiny_llama(tmp_path / "m", seed=T, **overrides)
    ours = gptviz.load_model(str(path))
    assert ours.config.arch == "llama"
    assert ours.config.n_kv_head == overrides["num_key_value_heads"]
    ids = torch.randint(0, ours.config.vocab_size, (T,), generator=torch.Generator().manual_seed(T)).tolist()
    compare(ours, reference(path, "llama"), ids)


def test_llama_untied_head_matches_transformers(tmp_path):
    from conftest import save_tiny_llama

    path = save_tiny_llama(tmp_path / "m", seed=3, tie_word_embeddings=False)
    ours = gptviz.load_model(str(path))
    assert not ours.config.tie_embeddings
    compare(ours, reference(path, "llama"), list(range(100, 140)))


@pytest.mark.parametrize("case", list(ARCH_CASES))
def test_architecture_matches_transformers(tmp_path, case):
    config_class, kwargs, T = ARCH_CASES[case]
    path = save_random(tmp_path / "m", config_class, T, **kwargs)
    ours = gptviz.load_model(str(path))
    ids = torch.randint(0, ours.config.vocab_size, (T,), generator=torch.Generator().manual_seed(T)).tolist()
    compare(ours, reference(path, ours.config.arch), ids)
    if ours.config.has_sliding_layers:
        layer = ours.config.layer_types.index("sliding")
        window = ours.config.sliding_window
        assert T > window and (gptviz.trace(ours, ids).attention(layer, 0).gt(0).sum(-1).max() == window)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_stages_add_up_to_the_residual_stream(family, tiny_gpt2, tiny_llama):
    """The on-demand stages recompose the fused forward's residual stream."""
    model = tiny_gpt2 if family == "gpt2" else tiny_llama
    tr = gptviz.trace(model, "The cat sat on the mat because the cat was tired.")
    T = tr.n_tokens
    for layer in range(model.config.n_layer):
        pattern = tr.patterns(layer)
        assert_close(pattern.sum(-1), torch.ones(model.config.n_head, T), ulps=16)  # softmax rows: float32 rounding
        assert pattern.triu(diagonal=1).abs().max() == 0
        v = tr.v(layer).repeat_interleave(model.config.n_rep, dim=0)  # (nh, T, hs)
        assert_close(pattern @ v, tr.z(layer), ulps=8)  # the shown pattern is the one the kernel used (same maths)
        # the residual stream's float32 additions, redone
        assert_close(tr.resid_pre(layer) + tr.attn_out(layer), tr.resid_mid(layer), ulps=8)
        assert_close(tr.resid_mid(layer) + tr.mlp_out(layer), tr.resid_post(layer), ulps=8)
        assert tr.mlp_hidden(layer).shape == (T, model.config.d_mlp)
        head = model.config.n_head - 1
        masked = tr.scores(layer, head, "masked")
        assert torch.isinf(masked.triu(diagonal=1)[masked.triu(diagonal=1) != 0]).all()
        assert_close(torch.softmax(masked, -1), tr.attention(layer, head), ulps=8)  # the same softmax, recomputed
        scaled = tr.scores(layer, head, "scaled")
        assert_close(scaled / model.config.scale, tr.scores(layer, head, "raw"), ulps=8)  # a float32 scale, undone
    if family == "gpt2":
        assert torch.equal(tr.resid[0], tr.embed + tr.pos_embed)
    else:
        assert tr.pos_embed is None and torch.equal(tr.resid[0], tr.embed)
