"""nanoGPT's GPT (karpathy/nanoGPT, model.py) -> our GPT.

nanoGPT named its modules after Hugging Face's GPT-2 (transformer.wte, wpe, h.{i}.ln_1, attn.c_attn, attn.c_proj,
ln_2, mlp.c_fc, mlp.c_proj, ln_f, lm_head), so the names are the GPT-2 entry of gptviz/architectures.py. What
differs: its projections are nn.Linear, stored (out, in) where GPT-2's Conv1D stores (in, out); its MLP uses
the exact (erf) GELU; with bias=False no Linear or LayerNorm has a bias (ours: LayerNorm biases of zeros);
lm_head is tied to wte. Old checkpoints may hold attn.bias, the causal-mask buffer of the slow attention.

train.py saves {"model": state_dict, "model_args": {n_layer, n_head, n_embd, block_size, bias, vocab_size,
dropout}, "iter_num", "best_val_loss", "config", "optimizer"}; gptviz reads the state dict and model_args.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from gptviz.architectures import architecture
from gptviz.config import GPTConfig
from gptviz.weights.convert import WeightsError, check_shapes, convert, plan
from gptviz.weights.file_options import contradicts, missing
from gptviz.weights.name_table import block_count

PREFIX = "transformer."
WTE, WPE, C_ATTN, C_FC = (f"{PREFIX}wte.weight", f"{PREFIX}wpe.weight", f"{PREFIX}h.0.attn.c_attn.weight",
                          f"{PREFIX}h.0.mlp.c_fc.weight")
HEAD = "lm_head.weight"


def is_nanogpt(sd: dict[str, Tensor]) -> bool:
    """Whether a state dict has nanoGPT's (and GPT-2's) names."""
    return all(key in sd for key in (WTE, WPE, C_ATTN))


def _config(sd: dict[str, Tensor], args: dict, source: str, n_heads: int | None,
            context_length: int | None) -> GPTConfig:
    """Our config from the shapes, checked against model_args and the options."""
    vocab_size, C = sd[WTE].shape
    if tuple(sd[C_ATTN].shape) == (C, 3 * C) and C > 1:
        raise WeightsError(f"{source} holds Hugging Face GPT-2 weights (Conv1D, stored (in, out)), not nanoGPT's: "
                           "save the model with save_pretrained and open its folder.")
    bias = f"{PREFIX}h.0.attn.c_attn.bias" in sd
    found = dict(n_layer=block_count(list(sd), f"{PREFIX}h."), n_embd=C, block_size=sd[WPE].shape[0],
                 vocab_size=vocab_size, bias=bias)
    if differing := [f"{key}={args[key]!r} (the tensors say {value!r})" for key, value in found.items()
                     if key in args and args[key] != value]:
        raise WeightsError(f"{source}: its model_args do not match its tensors: {', '.join(differing)}; "
                           "save model_args and the model's state dict together, as nanoGPT's train.py does.")
    n_head = args.get("n_head")
    if n_heads is not None and n_head is not None and n_heads != n_head:
        raise contradicts(source, "n_heads", n_heads, f"its model_args say n_head={n_head}")
    n_head = n_head if n_heads is None else n_heads
    if n_head is None:
        raise missing(source, "n_heads", "how many heads each attention layer has (it has no model_args)")
    if n_head < 1 or C % n_head:
        raise contradicts(source, "n_heads", n_head, f"n_embd {C} (wte's width) does not split into {n_head} heads")
    if context_length is not None and context_length != found["block_size"]:
        raise contradicts(source, "context_length", context_length, f"wpe has {found['block_size']} positions")
    tied = HEAD not in sd or torch.equal(sd[HEAD], sd[WTE])
    return GPTConfig(
        arch="gpt2", vocab_size=vocab_size, n_ctx=found["block_size"], d_model=C, n_layer=found["n_layer"],
        n_head=n_head, n_kv_head=n_head, d_mlp=sd[C_FC].shape[0], norm_eps=1e-5, norm="layernorm",
        positional="learned", mlp="gelu", gelu="exact", qkv_bias=bias, out_bias=bias, mlp_bias=bias,
        tie_embeddings=tied, dropout=float(args.get("dropout", 0.0)),
    )


def from_nanogpt(
    sd: dict[str, Tensor], model_args: dict | None = None, n_heads: int | None = None,
    context_length: int | None = None, source: str = "the checkpoint",
) -> tuple[GPTConfig, dict[str, Tensor]]:
    """nanoGPT's state dict (and the model_args train.py saves beside it) -> (our config, our float32 state dict).

    The head count comes from model_args; a bare state dict needs n_heads (WeightsError naming it)."""
    config = _config(sd, dict(model_args or {}), source, n_heads, context_length)
    gpt2 = architecture("gpt2")
    tensors = {key: t for name, t in sd.items() if (key := gpt2.checkpoint_key(name, config)) is not None}
    if not config.qkv_bias:  # bias=False: LayerNorm without a bias is ours with a bias of zeros
        norms = [*(f"h.{i}.{ln}" for i in range(config.n_layer) for ln in ("ln_1", "ln_2")), "ln_f"]
        tensors = {f"{norm}.bias": torch.zeros(config.d_model) for norm in norms} | tensors
    # GPT-2's plan, without its Conv1D transpositions: nanoGPT's Linear weights are (out, in), as ours
    steps = [replace(step, transpose=False, parts=tuple((key, shape[::-1]) for key, shape in step.parts))
             if step.transpose else step for step in plan(config)]
    check_shapes(steps, {key: tuple(t.shape) for key, t in tensors.items()}, source,
                 lambda key: key if key == HEAD else PREFIX + key)
    return config, convert(steps, tensors)
