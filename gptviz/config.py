"""Model hyper-parameters for the two families gptviz runs: GPT-2 and Llama-style (SmolLM2)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Family = Literal["gpt2", "llama"]


@dataclass(frozen=True)
class GPTConfig:
    """Everything the model's shapes depend on.

    family "gpt2":  learned position embedding, LayerNorm, biases, GELU(tanh) MLP.
    family "llama": rotary position embedding, RMSNorm, no biases, SwiGLU MLP,
                    grouped-query attention (n_kv_head <= n_head).
    """

    family: Family
    vocab_size: int
    n_ctx: int  # longest context the model was trained for
    d_model: int
    n_layer: int
    n_head: int
    n_kv_head: int
    d_mlp: int
    norm_eps: float
    rope_theta: float = 10000.0  # llama only
    tie_embeddings: bool = True
    name: str = ""

    def __post_init__(self) -> None:
        if self.family not in ("gpt2", "llama"):
            raise ValueError(f"Unknown model family {self.family!r}: use 'gpt2' or 'llama'.")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}.")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head={self.n_head} is not a multiple of n_kv_head={self.n_kv_head}.")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_head

    @property
    def n_rep(self) -> int:
        """Query heads that share one key/value head (1 without grouped-query attention)."""
        return self.n_head // self.n_kv_head

    def to_dict(self) -> dict:
        return asdict(self)


def config_from_hf(hf: dict, name: str = "") -> GPTConfig:
    """Build a GPTConfig from a Hugging Face ``config.json`` dict (GPT2 or Llama)."""
    model_type = hf.get("model_type")
    if model_type == "gpt2":
        d_model = hf["n_embd"]
        return GPTConfig(
            family="gpt2",
            vocab_size=hf["vocab_size"],
            n_ctx=hf.get("n_positions", hf.get("n_ctx", 1024)),
            d_model=d_model,
            n_layer=hf["n_layer"],
            n_head=hf["n_head"],
            n_kv_head=hf["n_head"],
            d_mlp=hf.get("n_inner") or 4 * d_model,
            norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            tie_embeddings=True,
            name=name,
        )
    if model_type == "llama":
        if hf.get("attention_bias") or hf.get("mlp_bias"):
            raise ValueError("Llama configs with attention_bias or mlp_bias are not supported.")
        if hf.get("rope_scaling"):
            raise ValueError("Llama configs with rope_scaling are not supported.")
        n_head = hf["num_attention_heads"]
        head_dim = hf.get("head_dim")
        if head_dim is not None and head_dim * n_head != hf["hidden_size"]:
            raise ValueError("Llama configs with head_dim * n_head != hidden_size are not supported.")
        rope = hf.get("rope_parameters") or {}
        return GPTConfig(
            family="llama",
            vocab_size=hf["vocab_size"],
            n_ctx=hf.get("max_position_embeddings", 2048),
            d_model=hf["hidden_size"],
            n_layer=hf["num_hidden_layers"],
            n_head=n_head,
            n_kv_head=hf.get("num_key_value_heads") or n_head,
            d_mlp=hf["intermediate_size"],
            norm_eps=hf.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
            name=name,
        )
    raise ValueError(
        f"config.json has model_type={model_type!r}; gptviz runs 'gpt2' and 'llama' models."
    )
