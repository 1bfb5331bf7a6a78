"""The architectures gptviz runs, one table entry each: how a Hugging Face ``config.json``
fills in GPTConfig's named features, and where each of our weights lives in the checkpoint.

Adding an architecture is one entry in ARCHITECTURES (plus its GGUF names in
gptviz/weights/gguf.py if it comes as GGUF): the model reads only the features. A checkpoint
that fuses projections differently from ours says how to undo it (`rearrange`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from torch import Tensor

from gptviz.config import GPTConfig, Rope

# Our module (block modules without "blocks.{i}.") -> the HF modules whose weights are
# concatenated on dim 0 to make it.
LLAMA_NAMES = {
    "tok_emb": ("model.embed_tokens",),
    "final_norm": ("model.norm",),
    "lm_head": ("lm_head",),
    "norm1": ("input_layernorm",),
    "attn.qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "attn.q_norm": ("self_attn.q_norm",),
    "attn.k_norm": ("self_attn.k_norm",),
    "attn.out_proj": ("self_attn.o_proj",),
    "norm2": ("post_attention_layernorm",),
    "mlp.fc_in": ("mlp.gate_proj", "mlp.up_proj"),
    "mlp.fc_out": ("mlp.down_proj",),
}
GEMMA3_NAMES = LLAMA_NAMES | {
    "post_attn_norm": ("post_attention_layernorm",),
    "norm2": ("pre_feedforward_layernorm",),
    "post_mlp_norm": ("post_feedforward_layernorm",),
}
GEMMA2_NAMES = GEMMA3_NAMES  # the same modules; Gemma 2 has no q/k norms
OLMO2_NAMES = {  # no norms before the sublayers: OLMo-2's only norms follow them
    **{k: v for k, v in LLAMA_NAMES.items() if k not in ("norm1", "norm2")},
    "post_attn_norm": ("post_attention_layernorm",),
    "post_mlp_norm": ("post_feedforward_layernorm",),
}
PHI3_NAMES = LLAMA_NAMES | {  # fused projections, in our order: q, k, v rows; gate, then up rows
    "attn.qkv": ("self_attn.qkv_proj",),
    "mlp.fc_in": ("mlp.gate_up_proj",),
}
GPT_NEOX_NAMES = {
    "tok_emb": ("gpt_neox.embed_in",),
    "final_norm": ("gpt_neox.final_layer_norm",),
    "lm_head": ("lm_head",),
    "norm1": ("input_layernorm",),
    "attn.qkv": ("attention.query_key_value",),  # rows per head: q, k, v of head 0, then head 1, ...
    "attn.out_proj": ("attention.dense",),
    "norm2": ("post_attention_layernorm",),
    "mlp.fc_in": ("mlp.dense_h_to_4h",),
    "mlp.fc_out": ("mlp.dense_4h_to_h",),
}
GPT2_NAMES = {
    "tok_emb": ("wte",),
    "pos_emb": ("wpe",),
    "final_norm": ("ln_f",),
    "norm1": ("ln_1",),
    "attn.qkv": ("attn.c_attn",),
    "attn.out_proj": ("attn.c_proj",),
    "norm2": ("ln_2",),
    "mlp.fc_in": ("mlp.c_fc",),
    "mlp.fc_out": ("mlp.c_proj",),
    "lm_head": ("lm_head",),  # only when not tied to wte
}


@dataclass(frozen=True)
class Architecture:
    """One architecture: its features from an HF config, and its checkpoint's weight names.

    features(hf) -> GPTConfig keyword arguments; names: our module -> HF modules;
    block_prefix: where block i's modules live in the checkpoint; transposed: modules stored
    (in, out) (GPT-2's Conv1D); checkpoint_key: a key as stored -> as in `names` (None: skip);
    rearrange: module -> f(tensor, config) putting a fused checkpoint tensor's rows (weight or bias)
    in our order, after concatenation and transposition (GPT-NeoX's per-head q, k, v).
    """

    model_types: tuple[str, ...]
    features: Callable[[dict], dict]
    names: dict[str, tuple[str, ...]]
    block_prefix: str = "model.layers.{i}."
    transposed: frozenset[str] = field(default_factory=frozenset)
    checkpoint_key: Callable[[str, GPTConfig], str | None] = lambda key, config: (
        None if key.endswith("rotary_emb.inv_freq") or (key == "lm_head.weight" and config.tie_embeddings) else key
    )
    rearrange: dict[str, Callable[[Tensor, GPTConfig], Tensor]] = field(default_factory=dict)


def _gpt2_key(key: str, config: GPTConfig) -> str | None:
    key = key.removeprefix("transformer.")
    if key.endswith((".attn.bias", ".attn.masked_bias")) or (key == "lm_head.weight" and config.tie_embeddings):
        return None  # causal-mask buffers, and the head tied to wte
    return key


def _gpt_neox_key(key: str, config: GPTConfig) -> str | None:
    if key.endswith((".attention.bias", ".attention.masked_bias", "rotary_emb.inv_freq")):
        return None  # causal-mask and rotary buffers of older checkpoints
    if key.startswith("embed_out."):  # the hub checkpoints' name of the output head
        key = "lm_head." + key.removeprefix("embed_out.")
    return None if key == "lm_head.weight" and config.tie_embeddings else key


def _heads_interleaved_qkv(w: Tensor, config: GPTConfig) -> Tensor:
    """GPT-NeoX's query_key_value rows (nh, 3, hs) (each head's q, k, v together) -> ours (3, nh, hs)
    (all q rows, then all k, then all v); w: a weight (rows, C) or a bias (rows,)."""
    return w.unflatten(0, (config.n_head, 3, config.d_head)).transpose(0, 1).flatten(0, 2)


def _unsupported(hf: dict, what: str) -> ValueError:
    return ValueError(f"config.json of model_type {hf.get('model_type')!r} has {what}, which gptviz does not run.")


# A config's activation name -> our GELU (the tanh approximation or the exact erf one).
GELU_NAMES = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "exact"}


def _gelu(hf: dict, key: str, default: str) -> str:
    """The GELU the config's `key` names; refused (naming the field) for any other activation."""
    name = hf.get(key) or default
    if name not in GELU_NAMES:
        raise _unsupported(hf, f"{key}={name!r} (gptviz runs {', '.join(GELU_NAMES)} here)")
    return GELU_NAMES[name]


def _refuse_set(hf: dict, *keys: str) -> None:
    """Refuse a config that turns on a feature gptviz does not run, naming the field."""
    for key in keys:
        if hf.get(key):
            raise _unsupported(hf, f"{key}={hf[key]!r}")


def _gpt2(hf: dict) -> dict:
    # reorder_and_upcast_attn only changes the order and precision of the same float32 maths: honoured as is
    _refuse_set(hf, "scale_attn_by_inverse_layer_idx", "add_cross_attention")
    d_model = hf["n_embd"]
    return dict(
        vocab_size=hf["vocab_size"], n_ctx=hf.get("n_positions", hf.get("n_ctx", 1024)), d_model=d_model,
        n_layer=hf["n_layer"], n_head=hf["n_head"], n_kv_head=hf["n_head"],
        d_mlp=4 * d_model if hf.get("n_inner") is None else hf["n_inner"],
        norm_eps=hf.get("layer_norm_epsilon", 1e-5), norm="layernorm", positional="learned", mlp="gelu",
        gelu=_gelu(hf, "activation_function", "gelu_new"),
        attn_scale=0.0 if hf.get("scale_attn_weights", True) else 1.0,  # 0: the default 1/sqrt(d_head)
        qkv_bias=True, out_bias=True, mlp_bias=True, tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        dropout=float(hf.get("resid_pdrop", 0.1)),
    )


def _rope(hf: dict, params: dict | None = None) -> Rope:
    """A Rope from transformers 5's rope_parameters, or the older rope_theta + rope_scaling."""
    if params is None:
        params = hf.get("rope_parameters") or {
            "rope_theta": hf.get("rope_theta", 10000.0), **(hf.get("rope_scaling") or {})
        }
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in ("default", "linear", "llama3"):
        raise _unsupported(hf, f"rope_parameters (rope_scaling) of type {kind!r}")
    return Rope(
        theta=float(params.get("rope_theta", hf.get("rope_theta", 10000.0))), scaling=kind,
        factor=float(params.get("factor", 1.0)), low_freq_factor=float(params.get("low_freq_factor", 1.0)),
        high_freq_factor=float(params.get("high_freq_factor", 4.0)),
        original_context=int(params.get("original_max_position_embeddings", 8192)),
    )


def _layer_types(hf: dict, n_layer: int, default: Callable[[int], str]) -> tuple[str, ...]:
    """Per layer "full" / "sliding" from HF's layer_types, else from default(i) (an HF name)."""
    names = hf.get("layer_types") or [default(i) for i in range(n_layer)]
    ours = {"full_attention": "full", "sliding_attention": "sliding"}
    if unknown := sorted(set(names) - set(ours)):
        raise _unsupported(hf, f"layer types {unknown}")
    return tuple(ours[name] for name in names)


def _gated_mlp(hf: dict, key: str, default: str) -> dict:
    """The gated MLP the config's activation names: SwiGLU for silu, GeGLU (tanh or exact) for a GELU."""
    if (hf.get(key) or default) == "silu":
        return dict(mlp="swiglu")
    return dict(mlp="geglu", gelu=_gelu(hf, key, default))


def _llama(hf: dict, activation: str = "silu", activation_key: str = "hidden_act") -> dict:
    """The shapes and features every Llama-like config spells the same way."""
    n_head = hf["num_attention_heads"]
    bias = bool(hf.get("attention_bias", False))
    return dict(
        vocab_size=hf["vocab_size"], n_ctx=hf.get("max_position_embeddings", 2048), d_model=hf["hidden_size"],
        n_layer=hf["num_hidden_layers"], n_head=n_head, n_kv_head=hf.get("num_key_value_heads") or n_head,
        d_head=hf.get("head_dim") or hf["hidden_size"] // n_head, d_mlp=hf["intermediate_size"],
        norm_eps=hf.get("rms_norm_eps", 1e-6), rope=_rope(hf), qkv_bias=bias, out_bias=bias,
        mlp_bias=bool(hf.get("mlp_bias", False)), tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        dropout=float(hf.get("attention_dropout", 0.0)), **_gated_mlp(hf, activation_key, activation),
    )


def _qwen_layers(hf: dict) -> dict:
    """Qwen2/3: sliding-window layers only with use_sliding_window, from max_window_layers on."""
    window = hf.get("sliding_window") if hf.get("use_sliding_window") else None
    first_sliding = hf.get("max_window_layers", hf["num_hidden_layers"])
    types = _layer_types(hf, hf["num_hidden_layers"],
                         lambda i: "sliding_attention" if window and i >= first_sliding else "full_attention")
    return dict(layer_types=types if window else (), sliding_window=window)


def _qwen2(hf: dict) -> dict:
    return _llama(hf) | _qwen_layers(hf) | dict(qkv_bias=True, out_bias=False)


def _qwen3(hf: dict) -> dict:
    return _llama(hf) | _qwen_layers(hf) | dict(qk_norm=True)


def _mistral(hf: dict) -> dict:
    window = hf.get("sliding_window")
    types = ("sliding",) * hf["num_hidden_layers"] if window else ()
    return _llama(hf) | dict(sliding_window=window, layer_types=types)


def _rotary_pct(hf: dict) -> float:
    """The fraction of each head's dimensions rotary turns: transformers 5's partial_rotary_factor, or
    the older top-level partial_rotary_factor (Phi-3) / rotary_pct (GPT-NeoX)."""
    params = hf.get("rope_parameters") or {}
    return float(params.get("partial_rotary_factor", hf.get("partial_rotary_factor", hf.get("rotary_pct", 1.0))))


def _gpt_neox(hf: dict) -> dict:
    n_head = hf["num_attention_heads"]
    bias = bool(hf.get("attention_bias", True))
    params = hf.get("rope_parameters") or {"rope_theta": hf.get("rotary_emb_base", 10000.0),
                                            **(hf.get("rope_scaling") or {})}
    return dict(
        vocab_size=hf["vocab_size"], n_ctx=hf.get("max_position_embeddings", 2048), d_model=hf["hidden_size"],
        n_layer=hf["num_hidden_layers"], n_head=n_head, n_kv_head=n_head, d_mlp=hf["intermediate_size"],
        norm_eps=hf.get("layer_norm_eps", 1e-5), norm="layernorm", rope=_rope(hf, params),
        rotary_pct=_rotary_pct(hf), mlp="gelu", gelu=_gelu(hf, "hidden_act", "gelu"), qkv_bias=bias,
        out_bias=bias, mlp_bias=True, parallel_residual=bool(hf.get("use_parallel_residual", True)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)), dropout=float(hf.get("hidden_dropout", 0.0)),
    )


def _gemma2(hf: dict) -> dict:
    _refuse_set(hf, "use_bidirectional_attention")
    n_layer = hf["num_hidden_layers"]
    types = _layer_types(hf, n_layer, lambda i: "sliding_attention" if (i + 1) % 2 else "full_attention")
    return _llama(hf, "gelu_pytorch_tanh", "hidden_activation") | dict(
        norm_offset=1.0, mlp="geglu", post_norms=True, embed_scale=math.sqrt(hf["hidden_size"]),
        attn_scale=hf.get("query_pre_attn_scalar", 256) ** -0.5, sliding_window=hf.get("sliding_window", 4096),
        layer_types=types, n_ctx=hf.get("max_position_embeddings", 8192), **_softcaps(hf),
    )


def _phi3(hf: dict) -> dict:
    window = hf.get("sliding_window")
    types = ("sliding",) * hf["num_hidden_layers"] if window else ()
    return _llama(hf) | dict(sliding_window=window, layer_types=types, rotary_pct=_rotary_pct(hf),
                             tie_embeddings=bool(hf.get("tie_word_embeddings", False)))


def _olmo2(hf: dict) -> dict:
    return _llama(hf) | dict(qk_norm=True, qk_norm_scope="projection", pre_norms=False, post_norms=True,
                             tie_embeddings=bool(hf.get("tie_word_embeddings", False)))


def _softcaps(hf: dict) -> dict:
    """Gemma's soft caps of the attention scores and the final logits (None: not capped)."""
    cap = lambda key: float(hf[key]) if hf.get(key) is not None else None
    return dict(attn_softcap=cap("attn_logit_softcapping"), final_softcap=cap("final_logit_softcapping"))


def _gemma3(hf: dict) -> dict:
    _refuse_set(hf, "use_bidirectional_attention")
    n_layer = hf["num_hidden_layers"]
    pattern = hf.get("sliding_window_pattern", 6)
    types = _layer_types(hf, n_layer, lambda i: "sliding_attention" if (i + 1) % pattern else "full_attention")
    params = hf.get("rope_parameters") or {}
    if "full_attention" in params:
        rope, rope_local = _rope(hf, params["full_attention"]), _rope(hf, params["sliding_attention"])
    else:  # before transformers 5: rope_theta (+ rope_scaling) global, rope_local_base_freq local
        rope = _rope({**hf, "rope_theta": hf.get("rope_theta", 1_000_000.0)})
        rope_local = Rope(theta=float(hf.get("rope_local_base_freq", 10000.0)))
    return _llama(hf, "gelu_pytorch_tanh", "hidden_activation") | dict(
        norm_offset=1.0, mlp="geglu", qk_norm=True, post_norms=True, embed_scale=math.sqrt(hf["hidden_size"]),
        attn_scale=hf.get("query_pre_attn_scalar", 256) ** -0.5, sliding_window=hf.get("sliding_window", 4096),
        layer_types=types, rope=rope, rope_local=rope_local,
        n_ctx=hf.get("max_position_embeddings", 131072),
        # transformers' Gemma 3 caps only the final logits: its attention never reads attn_logit_softcapping
        final_softcap=_softcaps(hf)["final_softcap"],
    )


ARCHITECTURES: dict[str, Architecture] = {
    "gpt2": Architecture(("gpt2",), _gpt2, GPT2_NAMES, "h.{i}.",
                         frozenset({"attn.qkv", "attn.out_proj", "mlp.fc_in", "mlp.fc_out"}), _gpt2_key),
    "llama": Architecture(("llama",), _llama, LLAMA_NAMES),
    "qwen2": Architecture(("qwen2",), _qwen2, LLAMA_NAMES),
    "qwen3": Architecture(("qwen3",), _qwen3, LLAMA_NAMES),
    "mistral": Architecture(("mistral",), _mistral, LLAMA_NAMES),
    "gemma3": Architecture(("gemma3_text",), _gemma3, GEMMA3_NAMES),
    "gemma2": Architecture(("gemma2",), _gemma2, GEMMA2_NAMES),
    "gpt_neox": Architecture(("gpt_neox",), _gpt_neox, GPT_NEOX_NAMES, "gpt_neox.layers.{i}.",
                             checkpoint_key=_gpt_neox_key, rearrange={"attn.qkv": _heads_interleaved_qkv}),
    "phi3": Architecture(("phi3",), _phi3, PHI3_NAMES),
    "olmo2": Architecture(("olmo2",), _olmo2, OLMO2_NAMES),
}


def architecture(arch: str) -> Architecture:
    return ARCHITECTURES[arch]


def config_from_hf(hf: dict, name: str = "") -> GPTConfig:
    """A GPTConfig from a Hugging Face ``config.json`` dict of any architecture in ARCHITECTURES."""
    model_type = hf.get("model_type")
    for arch, entry in ARCHITECTURES.items():
        if model_type in entry.model_types:
            return GPTConfig(arch=arch, name=name, **entry.features(hf))
    known = sorted(t for entry in ARCHITECTURES.values() for t in entry.model_types)
    raise ValueError(f"config.json has model_type={model_type!r}; gptviz runs {', '.join(known)}.")
