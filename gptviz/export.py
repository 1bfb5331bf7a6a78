"""A trace written out as files: every kept tensor as .npz, the readable parts as JSON.

.npz (numpy.load): ids, embed, pos_embed (GPT-2 only), resid, resid_mid, q, k, v, logits
and a "metadata" JSON string (config, tokens). JSON: ids, tokens, config, the top next
tokens at every position, residual-stream norms and, for short prompts, every attention
pattern. Names follow the Trace's (TransformerLens's hook points).
"""
from __future__ import annotations

import io
import json
import math

import numpy as np
import torch

from gptviz.sampling import top_tokens
from gptviz.trace import Trace

FORMAT = "gptviz-trace"
VERSION = 1
JSON_PATTERN_MAX_TOKENS = 128  # above this the JSON leaves attention patterns out (size ~ T²)
JSON_DECIMALS = 6


def npz_arrays(trace: Trace, include_logits: bool = True) -> dict[str, np.ndarray]:
    """The arrays trace_to_npz writes, by name (shapes: T tokens, C d_model, hs d_head).

    ids (T,) int64; embed (T, C); pos_embed (T, C) (GPT-2 only); resid (n_layer+1, T, C);
    resid_mid (n_layer, T, C); q (n_layer, nh, T, hs); k, v (n_layer, n_kv, T, hs);
    logits (T, vocab) unless include_logits is False. Floats are float32.
    """
    f32 = lambda t: t.detach().to(torch.float32).numpy()
    arrays = {"ids": np.asarray(trace.ids, dtype=np.int64), "embed": f32(trace.embed)}
    if trace.pos_embed is not None:
        arrays["pos_embed"] = f32(trace.pos_embed)
    arrays["resid"] = f32(torch.stack(trace.resid_stream))
    arrays["resid_mid"] = f32(torch.stack(trace.resid_mids))
    arrays["q"] = f32(torch.stack(trace.qs))
    arrays["k"] = f32(torch.stack(trace.ks))
    arrays["v"] = f32(torch.stack(trace.vs))
    if include_logits:
        arrays["logits"] = f32(trace.logits)
    return arrays


def npz_contents(trace: Trace, include_logits: bool = True) -> dict[str, tuple[tuple[int, ...], int]]:
    """name -> (shape, bytes before compression) of what trace_to_npz writes, without copying."""
    cfg = trace.model.config
    T, C, L, hs = trace.n_tokens, cfg.d_model, trace.n_layer, cfg.d_head
    shapes = {"ids": (T,), "embed": (T, C)}
    if trace.pos_embed is not None:
        shapes["pos_embed"] = (T, C)
    shapes |= {"resid": (L + 1, T, C), "resid_mid": (L, T, C), "q": (L, cfg.n_head, T, hs),
               "k": (L, cfg.n_kv_head, T, hs), "v": (L, cfg.n_kv_head, T, hs)}
    if include_logits:
        shapes["logits"] = (T, cfg.vocab_size)
    return {name: (shape, math.prod(shape) * (8 if name == "ids" else 4)) for name, shape in shapes.items()}


def metadata(trace: Trace) -> dict:
    """What the arrays are: format, the model's config, the tokens and their ids."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "config": trace.model.config.to_dict(),
        "n_tokens": trace.n_tokens,
        "ids": list(trace.ids),
        "tokens": list(trace.tokens),
    }


def trace_to_npz(trace: Trace, include_logits: bool = True, compressed: bool = True) -> bytes:
    """The trace's tensors as an .npz file (bytes): npz_arrays plus "metadata".

    compressed: np.savez_compressed (zip deflate), else np.savez: float activations shrink
    only ~10% and deflating hundreds of MB takes a minute, so big exports skip it.
    Read it back with ``np.load(io.BytesIO(data))``; ``json.loads(str(f["metadata"]))``
    gives the config and tokens.
    """
    buffer = io.BytesIO()
    save = np.savez_compressed if compressed else np.savez
    save(buffer, metadata=np.asarray(json.dumps(metadata(trace))), **npz_arrays(trace, include_logits))
    return buffer.getvalue()


def _rounded(x: torch.Tensor | np.ndarray, decimals: int = JSON_DECIMALS) -> list:
    return np.round(np.asarray(x, dtype=np.float64), decimals).tolist()


def trace_to_json(trace: Trace, max_tokens: int = JSON_PATTERN_MAX_TOKENS, top_k: int = 5) -> str:
    """The trace's readable parts as a JSON string.

    Keys: format, version, config, n_tokens, ids, tokens; top_next_tokens: per position a list
    of top_k {id, token, probability, logit}; resid_norms: (n_layer+1, T) L2 norm of the
    residual stream entering each block and leaving the last; attention: when T <= max_tokens,
    patterns[layer][head][query] = attention weights over keys 0..query (the causal part,
    row sums 1), else null; notes: what was left out and why. Floats are rounded to 6 decimals.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, not {top_k}.")
    T = trace.n_tokens
    out = metadata(trace)
    notes = [f"Floats rounded to {JSON_DECIMALS} decimals; the .npz export has every tensor at full precision."]
    top_ids, top_logits, top_probs = top_tokens(trace.logits, top_k)
    with torch.inference_mode():
        resid_norms = torch.stack([r.float().norm(dim=-1) for r in trace.resid_stream])  # (n_layer+1, T)
    tokenizer = trace.model.tokenizer
    flat_ids = top_ids.flatten().tolist()
    names = dict(zip(flat_ids, tokenizer.token_strings(flat_ids)))
    out["top_next_tokens"] = [
        [{"id": i, "token": names[i], "probability": p, "logit": g}
         for i, p, g in zip(row_ids, row_p, row_g)]
        for row_ids, row_p, row_g in zip(top_ids.tolist(), _rounded(top_probs), _rounded(top_logits))
    ]
    out["resid_norms"] = _rounded(resid_norms)
    if T <= max_tokens:
        out["attention"] = [
            [[row[: q + 1] for q, row in enumerate(head)] for head in _rounded(trace.patterns(layer))]
            for layer in range(trace.n_layer)
        ]
        notes.append("attention[layer][head][query] lists the weights on keys 0..query (later keys are masked: 0).")
    else:
        out["attention"] = None
        notes.append(
            f"Attention patterns left out: {T} tokens > {max_tokens} (they grow as T²); "
            "the .npz has q and k to recompute them."
        )
    out["notes"] = notes
    return json.dumps(out, ensure_ascii=False)
