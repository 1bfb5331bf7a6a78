"""The book's GPTModel (Raschka, *Build a Large Language Model (from Scratch)*, ch. 4) and our GPT: one name
table, read both ways.

The book's state dict: tok_emb, pos_emb, trf_blocks.{i}.att.W_query|W_key|W_value (Linear, bias when
qkv_bias), att.out_proj, att.mask (the causal mask buffer), ff.layers.0 and ff.layers.2 (the MLP's two
Linear layers, GELU between), norm1|norm2.scale|shift, final_norm.scale|shift, out_head (no bias, untied).
Its block is GPT-2's: LayerNorm (eps 1e-5), learned positions, tanh GELU, an MLP of 4·emb_dim.
to_book_state_dict writes that state dict for our model; from_book_state_dict reads one back.
"""
from __future__ import annotations

import io

import torch
from torch import Tensor

from gptviz.config import GPTConfig
from gptviz.model import GPT
from gptviz.weights.convert import WeightsError
from gptviz.weights.file_options import contradicts, missing
from gptviz.weights.name_table import NameTable, block_count, convert_by_table

# Our parameter (in block i for "blocks.{i}." names) -> the book's, for what maps one to one.
BOOK_NAMES = {
    "tok_emb.weight": "tok_emb.weight",
    "pos_emb.weight": "pos_emb.weight",
    "final_norm.weight": "final_norm.scale",
    "final_norm.bias": "final_norm.shift",
    "blocks.{i}.norm1.weight": "trf_blocks.{i}.norm1.scale",
    "blocks.{i}.norm1.bias": "trf_blocks.{i}.norm1.shift",
    "blocks.{i}.attn.out_proj.weight": "trf_blocks.{i}.att.out_proj.weight",
    "blocks.{i}.attn.out_proj.bias": "trf_blocks.{i}.att.out_proj.bias",
    "blocks.{i}.norm2.weight": "trf_blocks.{i}.norm2.scale",
    "blocks.{i}.norm2.bias": "trf_blocks.{i}.norm2.shift",
    "blocks.{i}.mlp.fc_in.weight": "trf_blocks.{i}.ff.layers.0.weight",
    "blocks.{i}.mlp.fc_in.bias": "trf_blocks.{i}.ff.layers.0.bias",
    "blocks.{i}.mlp.fc_out.weight": "trf_blocks.{i}.ff.layers.2.weight",
    "blocks.{i}.mlp.fc_out.bias": "trf_blocks.{i}.ff.layers.2.bias",
}
# Our fused q/k/v projection (rows: q, then k, then v) <- the book's three.
BOOK_QKV = ("trf_blocks.{i}.att.W_query", "trf_blocks.{i}.att.W_key", "trf_blocks.{i}.att.W_value")
BOOK_MASK = "trf_blocks.{i}.att.mask"
BOOK_HEAD = "out_head.weight"
BOOK_BLOCK_PREFIX = "trf_blocks."


def book_cfg(model: GPT) -> dict:
    """The book's GPT_CONFIG dict for this model (ValueError when its block is not the book's)."""
    c = model.config
    book = dict(norm="layernorm", positional="learned", mlp="gelu", gelu="tanh", out_bias=True, mlp_bias=True,
                n_kv_head=c.n_head, d_head=c.d_model // c.n_head, d_mlp=4 * c.d_model, norm_eps=1e-5,
                pre_norms=True, post_norms=False, parallel_residual=False, qk_norm=False, embed_scale=1.0,
                attn_softcap=None, final_softcap=None, layer_types=())
    if differing := [k for k, v in book.items() if getattr(c, k) != v]:
        raise ValueError(f"The book's GPTModel cannot hold this model: it differs in {differing} "
                         "(an attention-only model has no MLP; the book's always has one of 4·emb_dim).")
    return dict(vocab_size=c.vocab_size, context_length=c.n_ctx, emb_dim=c.d_model, n_heads=c.n_head,
                n_layers=c.n_layer, drop_rate=c.dropout, qkv_bias=c.qkv_bias)


def to_book_state_dict(model: GPT) -> dict[str, Tensor]:
    """What `torch.save(GPTModel(cfg).state_dict(), path)` would hold for these weights (cfg: book_cfg(model))."""
    cfg = book_cfg(model)
    ours = model.state_dict()
    C = cfg["emb_dim"]
    out: dict[str, Tensor] = {}
    for i in range(cfg["n_layers"]):
        for our, theirs in BOOK_NAMES.items():
            if "{i}" in our:
                out[theirs.format(i=i)] = ours[our.format(i=i)]
        weights = ours[f"blocks.{i}.attn.qkv.weight"].split(C)
        biases = ours[f"blocks.{i}.attn.qkv.bias"].split(C) if cfg["qkv_bias"] else (None,) * 3
        for name, w, b in zip(BOOK_QKV, weights, biases):
            out[f"{name.format(i=i)}.weight"] = w
            if b is not None:
                out[f"{name.format(i=i)}.bias"] = b
        n = cfg["context_length"]
        out[BOOK_MASK.format(i=i)] = torch.triu(torch.ones(n, n), diagonal=1)
    for our, theirs in BOOK_NAMES.items():
        if "{i}" not in our:
            out[theirs] = ours[our]
    out[BOOK_HEAD] = model.unembed_weight
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def state_dict_bytes(state_dict: dict[str, Tensor]) -> bytes:
    """A state dict as the bytes torch.save writes (torch.load(weights_only=True) reads it back)."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()


def is_book_gpt(book: dict[str, Tensor]) -> bool:
    """Whether a state dict is the book's GPTModel's (its embedding tables and block 0's first tensors)."""
    first = (BOOK_NAMES["pos_emb.weight"], BOOK_NAMES["blocks.{i}.norm1.weight"].format(i=0),
             BOOK_NAMES["blocks.{i}.mlp.fc_in.weight"].format(i=0), f"{BOOK_QKV[0].format(i=0)}.weight")
    return all(key in book for key in first)


def book_table(qkv_bias: bool) -> NameTable:
    """BOOK_NAMES, BOOK_QKV and BOOK_HEAD as one table: our parameter -> the book's tensors that make it."""
    qkv = {f"blocks.{{i}}.attn.qkv.{suffix}": tuple(f"{name}.{suffix}" for name in BOOK_QKV)
           for suffix in ("weight", "bias")[: 1 + qkv_bias]}
    return {ours: (theirs,) for ours, theirs in BOOK_NAMES.items()} | qkv | {"lm_head.weight": (BOOK_HEAD,)}


def from_book_state_dict(
    book: dict[str, Tensor], n_heads: int | None = None, context_length: int | None = None,
    source: str = "the state dict",
) -> tuple[GPTConfig, dict[str, Tensor]]:
    """The book's GPTModel state dict -> (our config, our float32 state dict); the inverse of to_book_state_dict.

    The shapes say the vocabulary, emb_dim, layers, the context (pos_emb's rows), qkv_bias (whether
    W_query has a bias) and the MLP's width; only n_heads must be given (WeightsError naming it if not,
    or if emb_dim does not split into that many heads). context_length, if given, must be pos_emb's rows.
    """
    vocab_size, C = book[BOOK_NAMES["tok_emb.weight"]].shape
    n_ctx = book[BOOK_NAMES["pos_emb.weight"]].shape[0]
    if n_heads is None:
        raise missing(source, "n_heads", "how many heads each attention layer has")
    if n_heads < 1 or C % n_heads:
        raise contradicts(source, "n_heads", n_heads, f"emb_dim {C} (tok_emb's width) does not split into {n_heads} "
                                                       "heads of equal size")
    if context_length is not None and context_length != n_ctx:
        raise contradicts(source, "context_length", context_length, f"pos_emb has {n_ctx} rows (positions)")
    n_layer = block_count(list(book), BOOK_BLOCK_PREFIX)
    for mask in (BOOK_MASK.format(i=i) for i in range(n_layer)):
        if mask in book and tuple(book[mask].shape) != (n_ctx, n_ctx):
            raise WeightsError(f"{source}: {mask} is {tuple(book[mask].shape)}, but pos_emb has {n_ctx} positions; "
                               "save the state dict of one GPTModel, unchanged.")
    config = GPTConfig(
        arch="gpt2", vocab_size=vocab_size, n_ctx=n_ctx, d_model=C, n_layer=n_layer,
        n_head=n_heads, n_kv_head=n_heads, d_mlp=book[BOOK_NAMES["blocks.{i}.mlp.fc_in.weight"].format(i=0)].shape[0],
        norm_eps=1e-5, norm="layernorm", positional="learned", mlp="gelu", gelu="tanh",
        qkv_bias=f"{BOOK_QKV[0].format(i=0)}.bias" in book, out_bias=True, mlp_bias=True, tie_embeddings=False,
    )
    ignored = (BOOK_MASK.removeprefix(BOOK_BLOCK_PREFIX + "{i}"),)  # the causal-mask buffers: ours is built, not stored
    return config, convert_by_table(config, book_table(config.qkv_bias), book, source, ignored=ignored)
