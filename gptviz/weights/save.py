"""Our GPT -> a Hugging Face GPT-2 directory (config.json, model.safetensors, a character vocabulary's
tokenizer.json), which transformers' GPT2LMHeadModel and gptviz.load_model both open.

The names are the GPT-2 entry of gptviz/architectures.py read backwards: each of our modules is one
GPT-2 module, Conv1D weights stored (in, out). An attention-only model (d_mlp 0, which transformers'
GPT-2 cannot build) is saved with an MLP of one neuron whose weights and biases are all 0: it adds
exactly 0 to the residual stream, as no MLP does.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from gptviz.architectures import GPT2_NAMES, architecture
from gptviz.config import GPTConfig
from gptviz.model import GPT
from gptviz.tokenizer import CharTokenizer, char_vocabulary_spec


def gpt2_config_json(config: GPTConfig, eos_id: int | None = None) -> dict:
    """config.json of a GPT-2 model of this config's shape (ValueError for another block)."""
    book_block = dict(norm="layernorm", positional="learned", mlp="gelu", gelu="tanh", qkv_bias=True, out_bias=True,
                      n_kv_head=config.n_head, d_head=config.d_model // config.n_head, pre_norms=True,
                      post_norms=False, parallel_residual=False, norm_offset=0.0, embed_scale=1.0, qk_norm=False,
                      attn_softcap=None, final_softcap=None, layer_types=())
    if differing := [k for k, v in book_block.items() if getattr(config, k) != v]:
        raise ValueError(f"Only GPT-2's block saves in the GPT-2 layout; this model differs in {differing}.")
    if config.attn_scale not in (0.0, config.d_head**-0.5):
        raise ValueError("GPT-2's layout scales attention by 1/sqrt(d_head) only.")
    return {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": config.vocab_size,
        "n_positions": config.n_ctx, "n_ctx": config.n_ctx, "n_embd": config.d_model, "n_layer": config.n_layer,
        "n_head": config.n_head, "n_inner": max(config.d_mlp, 1), "activation_function": "gelu_new",
        "layer_norm_epsilon": config.norm_eps, "resid_pdrop": config.dropout, "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout, "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": eos_id, "eos_token_id": eos_id, "torch_dtype": "float32",
    }


def gpt2_state_dict(model: GPT) -> dict[str, Tensor]:
    """Our state dict under GPT-2's names (contiguous float32 copies); biases GPT-2 always has and this
    model has not (an attention-only model's MLP) are zeros, and so is an attention-only model's one neuron."""
    entry = architecture("gpt2")
    ours = model.state_dict()
    if model.config.d_mlp == 0:  # attention only: one neuron that reads and writes nothing
        C = model.config.d_model
        for i in range(model.config.n_layer):
            ours[f"blocks.{i}.mlp.fc_in.weight"] = torch.zeros(1, C)
            ours[f"blocks.{i}.mlp.fc_out.weight"] = torch.zeros(C, 1)
    out: dict[str, Tensor] = {}
    for module, (hf_module,) in GPT2_NAMES.items():
        if module == "lm_head":
            continue  # not under transformer.: below, when untied
        in_block = module not in ("tok_emb", "pos_emb", "final_norm")
        layers = range(model.config.n_layer) if in_block else [None]
        for i in layers:
            prefix = f"blocks.{i}.{module}" if in_block else module
            hf = "transformer." + (entry.block_prefix.format(i=i) if in_block else "") + hf_module
            weight = ours[f"{prefix}.weight"]
            out[f"{hf}.weight"] = weight.T if module in entry.transposed else weight
            if module in ("tok_emb", "pos_emb"):
                continue
            bias = ours.get(f"{prefix}.bias")
            out[f"{hf}.bias"] = bias if bias is not None else torch.zeros(weight.shape[0])
    if not model.config.tie_embeddings:
        out["lm_head.weight"] = ours["lm_head.weight"]
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in out.items()}


def save_hf_dir(model: GPT, directory: str | Path) -> Path:
    """Write config.json, model.safetensors and (a character vocabulary's) tokenizer.json."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = model.tokenizer
    eos = tokenizer.eos_id if tokenizer is not None else None
    (directory / "config.json").write_text(json.dumps(gpt2_config_json(model.config, eos), indent=2))
    save_file(gpt2_state_dict(model), directory / "model.safetensors", metadata={"format": "pt"})
    if isinstance(tokenizer, CharTokenizer):
        (directory / "tokenizer.json").write_text(json.dumps(char_vocabulary_spec(tokenizer), ensure_ascii=False))
    return directory
