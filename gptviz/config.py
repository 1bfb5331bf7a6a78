"""Model hyper-parameters: the shapes, and each architectural feature by name.

An architecture (GPT-2, Llama, Qwen, Mistral, Gemma 2 and 3, GPT-NeoX, Phi-3, OLMo-2) is a choice
of these features, made once per Hugging Face ``model_type`` in ``gptviz/architectures.py``; the
model, the trace and the pages read the features, never the architecture's name.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Literal

Norm = Literal["layernorm", "rmsnorm"]
Positional = Literal["learned", "rotary"]
MLPKind = Literal["gelu", "swiglu", "geglu"]
Gelu = Literal["tanh", "exact"]
QKNormScope = Literal["head", "projection"]
LayerType = Literal["full", "sliding"]
RopeScaling = Literal["default", "linear", "llama3"]

NORMS = ("layernorm", "rmsnorm")
POSITIONALS = ("learned", "rotary")
MLP_KINDS = ("gelu", "swiglu", "geglu")
GELUS = ("tanh", "exact")
QK_NORM_SCOPES = ("head", "projection")
LAYER_TYPES = ("full", "sliding")
ROPE_SCALINGS = ("default", "linear", "llama3")


@dataclass(frozen=True)
class Rope:
    """Rotary frequencies: dimension pair i of a head turns by position · theta^(-2i / hs).

    scaling "linear" divides every frequency by factor; "llama3" divides only the low
    frequencies (wavelengths beyond original_context / low_freq_factor) and blends between.
    """

    theta: float = 10000.0
    scaling: RopeScaling = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_context: int = 8192

    def __post_init__(self) -> None:
        if self.scaling not in ROPE_SCALINGS:
            raise ValueError(f"Unknown rope scaling {self.scaling!r}: use one of {ROPE_SCALINGS}.")


@dataclass(frozen=True)
class GPTConfig:
    """Everything the model's shapes and maths depend on.

    Shapes: vocab_size, n_ctx (longest context trained for), d_model, n_layer, n_head,
    n_kv_head (key/value heads; < n_head is grouped-query attention), d_head (0: d_model //
    n_head), d_mlp.
    Features:
      norm            "layernorm" (mean and variance, weight and bias) or "rmsnorm" (root mean square, weight)
      norm_offset     the norm scales by (norm_offset + weight): Gemma stores weight - 1
      positional      "learned" (a table added to the input) or "rotary" (q and k turned by position)
      rope            rotary frequencies; rope_local, if set, for the sliding-window layers
      rotary_pct      the fraction of each head's dimensions rotary turns (the first ones; GPT-NeoX: 0.25),
                      the rest pass unturned
      mlp             "gelu" (GELU(x W_in) W_out), "swiglu" / "geglu" (act(x W_gate) * (x W_up), then W_out)
      gelu            the GELU of "gelu" / "geglu": "tanh" (the approximation GPT-2 and Gemma use) or "exact" (erf)
      qkv_bias, out_bias, mlp_bias   biases of the q/k/v, attention output and MLP projections
      qk_norm         a norm over q and k before rotary: over each head's (qk_norm_scope "head") or over
                      the whole projection, all heads at once ("projection", OLMo-2)
      pre_norms       norms on each sublayer's input (the usual pre-norm block; OLMo-2 has none)
      post_norms      norms on attention's and the MLP's outputs before they join the residual stream
      parallel_residual  attention and the MLP both read the block's input and their outputs are added
                      together (GPT-NeoX): x + attn(norm1(x)) + mlp(norm2(x)); else the MLP reads x + attn
      attn_softcap    scores soft-capped after scaling, before the mask: tanh(s / c) · c (Gemma 2; None: not)
      final_softcap   logits soft-capped the same way (Gemma 2; None: not)
      embed_scale     token embeddings are multiplied by this (Gemma: sqrt(d_model))
      attn_scale      scores are multiplied by this (0: 1 / sqrt(d_head))
      sliding_window  keys a sliding-window layer sees, its own position included
      layer_types     per layer "full" or "sliding" (empty: all full)
      tie_embeddings  the output head is the token embedding
      dropout         the dropout rate of training (GPT-2: 0.1 on embeddings, attention weights and each
                      sublayer's output); applied only in training mode (the Train page), off at inference
    """

    arch: str
    vocab_size: int
    n_ctx: int
    d_model: int
    n_layer: int
    n_head: int
    n_kv_head: int
    d_mlp: int
    norm_eps: float
    d_head: int = 0
    norm: Norm = "rmsnorm"
    norm_offset: float = 0.0
    positional: Positional = "rotary"
    rope: Rope = field(default_factory=Rope)
    rope_local: Rope | None = None
    rotary_pct: float = 1.0
    mlp: MLPKind = "swiglu"
    gelu: Gelu = "tanh"
    qkv_bias: bool = False
    out_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    qk_norm_scope: QKNormScope = "head"
    pre_norms: bool = True
    post_norms: bool = False
    parallel_residual: bool = False
    attn_softcap: float | None = None
    final_softcap: float | None = None
    embed_scale: float = 1.0
    attn_scale: float = 0.0
    sliding_window: int | None = None
    layer_types: tuple[LayerType, ...] = ()
    tie_embeddings: bool = True
    dropout: float = 0.0
    name: str = ""

    def __post_init__(self) -> None:
        for value, allowed, what in (
            (self.norm, NORMS, "norm"), (self.positional, POSITIONALS, "positional"), (self.mlp, MLP_KINDS, "mlp"),
            (self.gelu, GELUS, "gelu"), (self.qk_norm_scope, QK_NORM_SCOPES, "qk_norm_scope"),
        ):
            if value not in allowed:
                raise ValueError(f"Unknown {what} {value!r}: use one of {allowed}.")
        if not self.d_head:
            if self.d_model % self.n_head:
                raise ValueError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}: give d_head.")
            object.__setattr__(self, "d_head", self.d_model // self.n_head)
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head={self.n_head} is not a multiple of n_kv_head={self.n_kv_head}.")
        if not 0 < self.rotary_pct <= 1:
            raise ValueError(f"rotary_pct must be in (0, 1], not {self.rotary_pct}.")
        if self.positional == "rotary" and (self.rotary_dims % 2 or not self.rotary_dims):
            raise ValueError(f"Rotary position embedding needs an even number of turned dimensions, not "
                             f"{self.rotary_dims} (d_head={self.d_head}, rotary_pct={self.rotary_pct}).")
        for cap in (self.attn_softcap, self.final_softcap):
            if cap is not None and not cap > 0:
                raise ValueError(f"A soft cap must be positive (or None), not {cap}.")
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
        if self.layer_types and len(self.layer_types) != self.n_layer:
            raise ValueError(f"layer_types lists {len(self.layer_types)} layers, the model has {self.n_layer}.")
        if any(t not in LAYER_TYPES for t in self.layer_types):
            raise ValueError(f"layer_types must hold {LAYER_TYPES}, not {self.layer_types}.")
        if "sliding" in self.layer_types and not self.sliding_window:
            raise ValueError("Sliding-window layers need a sliding_window size.")

    @property
    def n_rep(self) -> int:
        """Query heads that share one key/value head (1 without grouped-query attention)."""
        return self.n_head // self.n_kv_head

    @property
    def rotary_dims(self) -> int:
        """How many of each head's dimensions rotary turns: the first int(d_head · rotary_pct)."""
        return int(self.d_head * self.rotary_pct)

    @property
    def scale(self) -> float:
        """What q·kᵀ is multiplied by before the softmax (1 / sqrt(d_head) unless attn_scale says)."""
        return self.attn_scale or self.d_head**-0.5

    def layer_type(self, layer: int) -> LayerType:
        return self.layer_types[layer] if self.layer_types else "full"

    def window(self, layer: int) -> int | None:
        """Keys a query of `layer` may see (its own included), or None for the whole past."""
        return self.sliding_window if self.layer_type(layer) == "sliding" else None

    def rope_for(self, layer: int) -> Rope:
        """The rotary frequencies `layer` uses."""
        if self.rope_local is not None and self.layer_type(layer) == "sliding":
            return self.rope_local
        return self.rope

    @property
    def has_sliding_layers(self) -> bool:
        return "sliding" in self.layer_types

    def to_dict(self) -> dict:
        """Plain JSON types (layer_types as a list); from_dict reads it back."""
        return asdict(self) | {"layer_types": list(self.layer_types)}

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        """The inverse of to_dict (ValueError for unknown keys)."""
        known = {f.name for f in fields(cls)}
        if unknown := set(d) - known:
            raise ValueError(f"Unknown config keys {sorted(unknown)}.")
        d = dict(d)
        d["rope"] = Rope(**d["rope"]) if isinstance(d.get("rope"), dict) else d.get("rope", Rope())
        if isinstance(d.get("rope_local"), dict):
            d["rope_local"] = Rope(**d["rope_local"])
        d["layer_types"] = tuple(d.get("layer_types", ()))
        return cls(**d)
