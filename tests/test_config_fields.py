"""Every field of every supported architecture's transformers config is honoured or refused, never ignored.

For each architecture, each field of its config class's __init__ that can change the forward pass is set
to a value other than its default, a random model of it saved and loaded: gptviz's logits equal
transformers' (the field is honoured), or loading raises a ValueError that names the field (refused).
The fields that cannot change an inference forward are listed once, with the reason. A field that a new
transformers adds is in neither list and fails test_every_field_is_covered, until it is sorted in here.
"""
from __future__ import annotations

import inspect

import pytest
import torch
import transformers

import gptviz
from gptviz.architectures import ARCHITECTURES
from numerics import assert_close
from test_fidelity import save_random

# Fields that cannot change what an inference forward computes from the weights:
NOT_FORWARD = {
    # bookkeeping and output plumbing
    "transformers_version", "architectures", "output_hidden_states", "return_dict", "dtype", "id2label",
    "label2id", "problem_type", "is_encoder_decoder", "is_decoder", "use_cache", "bos_token_id", "eos_token_id",
    "pad_token_id", "initializer_range",
    # chunked feed-forward computes the same values in pieces
    "chunk_size_feed_forward",
    # dropout is off at inference
    "resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout", "hidden_dropout", "classifier_dropout",
    # GPT-2's sequence-summary head (GPT2DoubleHeadsModel), not the language model
    "summary_type", "summary_use_proj", "summary_activation", "summary_proj_to_labels", "summary_first_dropout",
    # Phi-3: the context longrope was trained for; only longrope reads it, and longrope is refused
    "original_max_position_embeddings",
}
LLAMA_SHAPES = dict(vocab_size=50257, hidden_size=48, intermediate_size=72, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
# The shape fields every Llama-like config spells the same way, each changed from LLAMA_SHAPES.
LLAMA_SHAPE_CASES = [
    ("vocab_size", 50300, "equal"), ("hidden_size", 40, "equal"), ("intermediate_size", 50, "equal"),
    ("num_hidden_layers", 3, "equal"), ("num_attention_heads", 8, "equal"), ("num_key_value_heads", 1, "equal"),
    ("max_position_embeddings", 80, "equal"), ("rms_norm_eps", 1e-2, "equal"),
]
# Gemma 2 and 3's own fields (the rope layout differs: per layer type in Gemma 3).
GEMMA_CASES = [
    ("hidden_activation", "gelu", "equal"), ("hidden_activation", "relu", "refused"),
    ("tie_word_embeddings", False, "equal"), ("attention_bias", True, "equal"),
    ("query_pre_attn_scalar", 7, "equal"), ("sliding_window", 3, "equal"),
    ("layer_types", ["full_attention", "sliding_attention"], "equal"),
    ("attn_logit_softcapping", 2.0, "equal"), ("final_logit_softcapping", 1.5, "equal"),
]

# architecture -> (config class, base arguments, [(field, value, "equal" | "refused")]); each field
# of the class not in NOT_FORWARD has at least one case.
CASES = {
    "gpt2": ("GPT2Config", dict(vocab_size=50257, n_embd=48, n_layer=2, n_head=4, n_positions=64), [
        ("vocab_size", 50300, "equal"), ("n_positions", 80, "equal"), ("n_embd", 36, "equal"),
        ("n_layer", 3, "equal"), ("n_head", 3, "equal"), ("n_inner", 40, "equal"),
        ("activation_function", "gelu", "equal"), ("activation_function", "gelu_pytorch_tanh", "equal"),
        ("activation_function", "relu", "refused"), ("layer_norm_epsilon", 1e-2, "equal"),
        ("scale_attn_weights", False, "equal"), ("scale_attn_by_inverse_layer_idx", True, "refused"),
        ("reorder_and_upcast_attn", True, "equal"), ("add_cross_attention", True, "refused"),
        ("tie_word_embeddings", False, "equal"),
    ]),
    "llama": ("LlamaConfig", LLAMA_SHAPES, [
        *LLAMA_SHAPE_CASES, ("head_dim", 16, "equal"),
        ("hidden_act", "gelu_pytorch_tanh", "equal"), ("hidden_act", "gelu", "equal"),
        ("hidden_act", "relu", "refused"),
        ("attention_bias", True, "equal"), ("mlp_bias", True, "equal"), ("tie_word_embeddings", False, "equal"),
        ("pretraining_tp", 2, "equal"),
        ("rope_parameters", dict(rope_type="default", rope_theta=500.0), "equal"),
        ("rope_parameters", dict(rope_type="linear", rope_theta=10000.0, factor=4.0), "equal"),
        ("rope_parameters", dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
                                 high_freq_factor=4.0, original_max_position_embeddings=16), "equal"),
        ("rope_parameters", dict(rope_type="dynamic", rope_theta=10000.0, factor=2.0), "refused"),
        ("rope_parameters", dict(rope_type="yarn", rope_theta=10000.0, factor=2.0), "refused"),
    ]),
    "qwen2": ("Qwen2Config", LLAMA_SHAPES, [
        *LLAMA_SHAPE_CASES,
        ("hidden_act", "relu", "refused"), ("tie_word_embeddings", False, "equal"),
        ("rope_parameters", dict(rope_type="linear", rope_theta=1000.0, factor=2.0), "equal"),
        ("use_sliding_window", True, "equal"), ("sliding_window", 5, "equal"), ("max_window_layers", 1, "equal"),
        ("layer_types", ["sliding_attention", "full_attention"], "equal"),
    ]),
    "qwen3": ("Qwen3Config", LLAMA_SHAPES, [
        *LLAMA_SHAPE_CASES, ("head_dim", 10, "equal"),
        ("hidden_act", "relu", "refused"), ("tie_word_embeddings", False, "equal"), ("attention_bias", True, "equal"),
        ("rope_parameters", dict(rope_type="linear", rope_theta=1000.0, factor=2.0), "equal"),
        ("use_sliding_window", True, "equal"), ("sliding_window", 5, "equal"), ("max_window_layers", 1, "equal"),
        ("layer_types", ["sliding_attention", "full_attention"], "equal"),
    ]),
    "mistral": ("MistralConfig", LLAMA_SHAPES, [
        *LLAMA_SHAPE_CASES, ("head_dim", 16, "equal"),
        ("hidden_act", "relu", "refused"), ("tie_word_embeddings", False, "equal"), ("sliding_window", 5, "equal"),
        ("rope_parameters", dict(rope_type="linear", rope_theta=1000.0, factor=2.0), "equal"),
    ]),
    "gemma3": ("Gemma3TextConfig", dict(LLAMA_SHAPES, head_dim=12, sliding_window=6), [
        *LLAMA_SHAPE_CASES, ("head_dim", 16, "equal"),
        *GEMMA_CASES,
        ("rope_parameters", {"full_attention": dict(rope_type="linear", rope_theta=1e5, factor=3.0),
                             "sliding_attention": dict(rope_type="default", rope_theta=500.0)}, "equal"),
        ("use_bidirectional_attention", True, "refused"),
    ]),
    "gemma2": ("Gemma2Config", dict(LLAMA_SHAPES, head_dim=12, sliding_window=6), [
        *LLAMA_SHAPE_CASES, ("head_dim", 16, "equal"),
        *GEMMA_CASES,
        ("rope_parameters", dict(rope_type="linear", rope_theta=1000.0, factor=2.0), "equal"),
        ("use_bidirectional_attention", True, "refused"),
    ]),
    "gpt_neox": ("GPTNeoXConfig", dict(vocab_size=50257, hidden_size=48, intermediate_size=72, num_hidden_layers=2,
                                       num_attention_heads=3, max_position_embeddings=64), [
        ("vocab_size", 50300, "equal"), ("hidden_size", 72, "equal"), ("intermediate_size", 50, "equal"),
        ("num_hidden_layers", 3, "equal"), ("num_attention_heads", 6, "equal"),
        ("max_position_embeddings", 80, "equal"), ("layer_norm_eps", 1e-2, "equal"),
        ("hidden_act", "gelu_new", "equal"), ("hidden_act", "relu", "refused"),
        ("tie_word_embeddings", True, "equal"), ("use_parallel_residual", False, "equal"),
        ("attention_bias", False, "equal"),
        ("rope_parameters", dict(rope_type="default", rope_theta=500.0, partial_rotary_factor=0.5), "equal"),
        ("rope_parameters", dict(rope_type="linear", rope_theta=10000.0, factor=2.0, partial_rotary_factor=0.25),
         "equal"),
        ("rope_parameters", dict(rope_type="dynamic", rope_theta=10000.0, factor=2.0), "refused"),
    ]),
    "phi3": ("Phi3Config", LLAMA_SHAPES, [
        *LLAMA_SHAPE_CASES,
        ("hidden_act", "relu", "refused"), ("tie_word_embeddings", True, "equal"), ("sliding_window", 5, "equal"),
        ("rope_parameters", dict(rope_type="default", rope_theta=500.0, partial_rotary_factor=0.5), "equal"),
        ("rope_parameters", dict(rope_type="longrope", rope_theta=10000.0, short_factor=[1.0] * 6,
                                 long_factor=[2.0] * 6, original_max_position_embeddings=32), "refused"),
    ]),
    "olmo2": ("Olmo2Config", LLAMA_SHAPES, [
        *LLAMA_SHAPE_CASES,
        ("hidden_act", "relu", "refused"), ("tie_word_embeddings", True, "equal"), ("attention_bias", True, "equal"),
        ("rope_parameters", dict(rope_type="linear", rope_theta=1000.0, factor=2.0), "equal"),
    ]),
}
PARAMS = [(arch, field, value, expect) for arch, (_, _, cases) in CASES.items() for field, value, expect in cases]


def test_every_architecture_has_cases():
    assert set(CASES) == set(ARCHITECTURES)


@pytest.mark.parametrize("arch", sorted(CASES))
def test_every_field_is_covered(arch):
    """Each field of the config class is either tested here or cannot change the forward pass."""
    config_class, _, cases = CASES[arch]
    fields = {p for p in inspect.signature(getattr(transformers, config_class).__init__).parameters} - {"self",
                                                                                                      "kwargs"}
    assert fields - NOT_FORWARD - {field for field, _, _ in cases} == set(), "fields neither honoured nor refused"


def _case_id(arch: str, field: str, value) -> str:
    if isinstance(value, dict):
        value = value.get("rope_type", "per-layer")
    shown = "list" if isinstance(value, list) else value
    return f"{arch}-{field}-{shown}"


@pytest.mark.parametrize("arch, field, value, expect", PARAMS, ids=[_case_id(a, f, v) for a, f, v, _ in PARAMS])
def test_field_is_honoured_or_refused(tmp_path, arch, field, value, expect):
    config_class, base, _ = CASES[arch]
    kwargs = dict(base, **{field: value})
    if field in ("sliding_window", "max_window_layers", "layer_types") and arch in ("qwen2", "qwen3"):
        kwargs.update(use_sliding_window=True, sliding_window=kwargs.get("sliding_window") or 5)
    if field == "head_dim" and arch in ("gemma3", "gemma2"):
        kwargs["query_pre_attn_scalar"] = value
    path = save_random(tmp_path / "m", config_class, 7, **kwargs)
    if expect == "refused":
        with pytest.raises(ValueError, match=field):
            gptviz.load_model(str(path))
        return
    ours = gptviz.load_model(str(path))
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    ids = torch.randint(0, 50257, (1, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = hf(ids).logits[0]
    assert_close(gptviz.trace(ours, ids[0].tolist()).logits, expected, ulps=64)  # vs transformers' kernels (float32)
