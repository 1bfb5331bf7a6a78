"""A config's named features in words: one describer per feature, used by the pipeline diagram
and by the "this model vs the book's GPT-2" table (each row is one describer applied to both).

The book is Raschka's *Build a Large Language Model (from Scratch)*, whose GPTModel is GPT-2
small (124M): BOOK_GPT2 is that configuration, read by the same architecture entry as any GPT-2.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd

from gptviz.architectures import config_from_hf
from gptviz.config import GPTConfig
from gptviz.model import block_structure

BOOK_GPT2 = config_from_hf(
    dict(model_type="gpt2", vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
         layer_norm_epsilon=1e-5, resid_pdrop=0.1), name="GPT-2 small (the book)",
)
BOOK_WEIGHTS = "OpenAI's released GPT-2 checkpoint, float32"


# ---- the words the pipeline diagram and the table share ----------------------------------------
NORM_NAMES = {"norm1": "ln1", "norm2": "ln2", "post_attn_norm": "ln1_post", "post_mlp_norm": "ln2_post"}  # as TL
NORM_PLACES = {  # (sublayer, before or after it) -> where a norm sits (model.BlockStructure.norms)
    ("attn", "before"): "before attention",
    ("attn", "after"): "on attention's output (post norm)",
    ("mlp", "before"): "before the MLP",
    ("mlp", "after"): "on the MLP's output (post norm)",
}


def norm_name(config: GPTConfig) -> str:
    return "LayerNorm" if config.norm == "layernorm" else "RMSNorm"


def norm_formula(config: GPTConfig) -> str:
    """The norm as a formula: γ is the stored weight (Gemma scales by 1 + γ), β the bias."""
    gamma = f"({config.norm_offset:g} + γ)" if config.norm_offset else "γ"
    if config.norm == "layernorm":
        return f"(x − mean) / √(var + ε) · {gamma} + β"
    return f"x / √(mean(x²) + ε) · {gamma}"


def mlp_name(config: GPTConfig) -> str:
    return {"gelu": "GELU", "swiglu": "SwiGLU", "geglu": "GeGLU"}[config.mlp]


def gate_activation(config: GPTConfig) -> str | None:
    """The gate's activation of a gated MLP (SiLU, GELU), None for a plain GELU MLP."""
    return {"swiglu": "SiLU", "geglu": "GELU"}.get(config.mlp)


def mlp_formula(config: GPTConfig) -> str:
    gate = gate_activation(config)
    return "W_out · GELU(W_in · x)" if gate is None else f"W_out · ({gate}(W_gate · x) ⊙ (W_up · x))"


def gelu_text(config: GPTConfig) -> str:
    """Which GELU a GELU MLP uses: the tanh approximation (GPT-2, Gemma) or the exact erf form (GPT-NeoX)."""
    return "GELU with erf (exact)" if config.gelu == "exact" else "GELU, tanh approximation"


def softcap_text(cap: float | None) -> str:
    """A soft cap in words: "none", or "tanh(s / c) · c, c = 50"."""
    return "none" if cap is None else f"tanh(s / {cap:g}) · {cap:g}: squashed into (−{cap:g}, {cap:g})"


def scale_text(config: GPTConfig) -> str:
    """What q·kᵀ is multiplied by: "/ √64", or the model's own factor."""
    return f"/ √{config.d_head}" if not config.attn_scale else f"· {config.scale:.4g}"


def block_formula(config: GPTConfig) -> str:
    """The block as a formula, from its declared structure (norms by TransformerLens's names):
    "mid = x + attn(ln1(x)); out = mid + mlp(ln2(mid))" (GPT-2), "out = x + attn(ln1(x)) + mlp(ln2(x))"
    (parallel, GPT-NeoX), "mid = x + ln1_post(attn(x)); ..." (OLMo-2)."""
    structure = block_structure(config)
    args = {"resid_pre": "x", "resid_mid": "mid"}

    def term(branch) -> str:
        inner = args[branch.reads]
        if branch.norm_before is not None:
            inner = f"{NORM_NAMES[branch.norm_before]}({inner})"
        out = f"{branch.name}({inner})"
        return out if branch.norm_after is None else f"{NORM_NAMES[branch.norm_after]}({out})"

    attn, mlp = structure.branches
    if structure.parallel:
        return f"out = x + {term(attn)} + {term(mlp)}"
    return f"mid = x + {term(attn)}; out = mid + {term(mlp)}"


def window_text(config: GPTConfig) -> str:
    if not config.has_sliding_layers:
        return "none: every layer sees the whole past"
    n = config.layer_types.count("sliding")
    return f"{n} of {config.n_layer} layers see only the last {config.sliding_window:,} keys"


# ---- one row per feature ------------------------------------------------------------------------
def _rope_text(config: GPTConfig) -> str:
    def one(rope) -> str:
        scaled = f", {rope.scaling} scaling × {rope.factor:g}" if rope.scaling != "default" else ""
        return f"θ = {rope.theta:g}{scaled}"

    local = f"; sliding-window layers {one(config.rope_local)}" if config.rope_local is not None else ""
    part = (f" (the first {config.rotary_dims} of each head's {config.d_head} dimensions; the rest unturned)"
            if config.rotary_dims < config.d_head else "")
    return f"rotary (RoPE): q and k turned by position{part}, {one(config.rope)}{local}; no position vector"


def _positions(c: GPTConfig) -> str:
    if c.positional == "learned":
        return f"learned table ({c.n_ctx:,} × {c.d_model:,}) added to the token embedding"
    return _rope_text(c)


def _norm(c: GPTConfig) -> str:
    return f"{norm_name(c)}: {norm_formula(c)}, ε = {c.norm_eps:g}"


def _placement(c: GPTConfig) -> str:
    structure = block_structure(c)
    sides = {where for _, where in structure.norms().values()}
    places = (["before attention and before the MLP (pre-norm)"] if "before" in sides else []) + (
        ["on each sublayer's output before the shortcut adds it"] if "after" in sides else [])
    parallel = "; attention and the MLP read the same input, in parallel" if structure.parallel else ""
    return f"{', and '.join(places)}, and a final norm{parallel}: {block_formula(c)}"


def _heads(c: GPTConfig) -> str:
    width = c.n_head * c.d_head
    note = "" if width == c.d_model else f" (≠ d_model = {c.d_model}: W_O maps {width} → {c.d_model})"
    return f"{c.n_head} heads × {c.d_head} = {width}{note}"


def _kv_heads(c: GPTConfig) -> str:
    if c.n_kv_head == c.n_head:
        return f"{c.n_kv_head}: one per query head"
    return f"{c.n_kv_head}: each shared by {c.n_rep} query heads (grouped-query attention)"


def _biases(c: GPTConfig) -> str:
    have = [name for name, on in (("q/k/v", c.qkv_bias), ("attention output", c.out_bias), ("MLP", c.mlp_bias)) if on]
    return ", ".join(have) if have else "none"


def _mlp(c: GPTConfig) -> str:
    gelu = f" ({gelu_text(c)})" if c.mlp != "swiglu" else ""
    return f"{c.d_model:,} → {c.d_mlp:,} → {c.d_model:,}, {mlp_name(c)}: {mlp_formula(c)}{gelu}"


def _head(c: GPTConfig) -> str:
    cap = f"; logits soft-capped, {softcap_text(c.final_softcap)}" if c.final_softcap is not None else ""
    if c.tie_embeddings:
        return f"tied: logits = x · W_Eᵀ, the token embedding ({c.vocab_size:,} × {c.d_model:,}){cap}"
    return f"its own matrix ({c.vocab_size:,} × {c.d_model:,}){cap}"


def _attention_scale(c: GPTConfig) -> str:
    cap = f", then soft-capped: {softcap_text(c.attn_softcap)}" if c.attn_softcap is not None else ""
    return f"q·kᵀ {scale_text(c)}{cap}"


def _qk_norm(c: GPTConfig) -> str:
    if not c.qk_norm:
        return "none"
    scope = "each head's q and k" if c.qk_norm_scope == "head" else "the whole q and k projections (all heads at once)"
    return f"{norm_name(c)} on {scope}"


def _dropout(c: GPTConfig) -> str:
    return f"p = {c.dropout:g} in training; off at inference" if c.dropout else "none (p = 0)"


@dataclass(frozen=True)
class Feature:
    """One row of the comparison: a component, how a config words it, and where the app shows it
    (page: a page's url path; anchor: a section on it, or ""; section: that section in words)."""

    component: str
    describe: Callable[[GPTConfig], str]
    page: str
    anchor: str = ""
    section: str = ""


FEATURES: tuple[Feature, ...] = (
    Feature("size", lambda c: f"{c.n_layer} layers, d_model = {c.d_model:,}, vocabulary {c.vocab_size:,}, "
                              f"context {c.n_ctx:,}", "overview"),
    Feature("norm", _norm, "inside_block", "norm", "the norm"),
    Feature("where the norms are", _placement, "inside_block", "shortcut", "the shortcut"),
    Feature("positions", _positions, "inside_block", "positions", "positions"),
    Feature("embedding scale", lambda c: f"× {c.embed_scale:.4g}" if c.embed_scale != 1.0 else "none", "embeddings"),
    Feature("attention heads", _heads, "attention"),
    Feature("key/value heads", _kv_heads, "attention"),
    Feature("q/k norm", _qk_norm, "attention"),
    Feature("attention scale", _attention_scale, "attention"),
    Feature("sliding window", window_text, "attention"),
    Feature("MLP", _mlp, "inside_block", "ffn", "the MLP"),
    Feature("biases", _biases, "inside_block", "attention-output", "attention's output"),
    Feature("output head", _head, "logit_lens"),
    Feature("dropout", _dropout, "inside_block", "dropout", "dropout"),
)


def feature_table(config: GPTConfig, weights: str = "") -> pd.DataFrame:
    """Component by component: the book's GPT-2 small, this config, whether they differ, and where
    the app shows it (columns component, the book's GPT-2, this model, differs, page, anchor, section).

    weights: where this model's weights come from and at what precision (a last row when given).
    """
    rows = [(f.component, f.describe(BOOK_GPT2), f.describe(config), f.page, f.anchor, f.section) for f in FEATURES]
    if weights:
        rows.append(("weights", BOOK_WEIGHTS, weights, "overview", "", ""))
    frame = pd.DataFrame(rows, columns=["component", "the book's GPT-2", "this model", "page", "anchor", "section"])
    frame.insert(3, "differs", frame["the book's GPT-2"] != frame["this model"])
    return frame
