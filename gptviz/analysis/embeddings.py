"""What goes into the model and what comes out of it, as numbers for the first pages.

The input side: the prompt's tokens (ids, bytes), the token and position embeddings and
their sum, the residual stream's vectors compared by cosine similarity and PCA. The
model's parts and their parameter counts (the top next tokens: analysis/lens.py).
Pure functions of a Trace, a model or tensors; they return numpy arrays or pandas frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from torch import Tensor

from gptviz.model import GPT
from gptviz.trace import Trace

# ---- tokens ------------------------------------------------------------------------------


def token_table(model: GPT, ids: Sequence[int], n_prompt: int | None = None) -> pd.DataFrame:
    """One row per token: position, token (display text), id, bytes (hex), byte length, source,
    whole UTF-8 (False for a token holding only part of a character, e.g. half an emoji).

    ids: the token ids read by the model (prompt, then generated); the first n_prompt of them
    are the prompt (all of them when n_prompt is None).
    """
    ids = [int(i) for i in ids]
    n_prompt = len(ids) if n_prompt is None else n_prompt
    if not 0 <= n_prompt <= len(ids):
        raise ValueError(f"n_prompt={n_prompt} must be between 0 and the number of ids ({len(ids)}).")
    tokenizer = model.tokenizer
    raw = [tokenizer.token_bytes(i) for i in ids]
    return pd.DataFrame(
        {
            "position": np.arange(len(ids)),
            "token": tokenizer.token_strings(ids),
            "id": np.asarray(ids, dtype=np.int64),
            "bytes (hex)": [b.hex(" ") for b in raw],
            "byte length": np.asarray([len(b) for b in raw], dtype=np.int64),
            "source": ["prompt"] * n_prompt + ["generated"] * (len(ids) - n_prompt),
            "whole UTF-8": [_is_utf8(b) for b in raw],
        }
    )


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@dataclass(frozen=True)
class TokenCounts:
    """Sizes of a token sequence's text: tokens, characters, UTF-8 bytes."""

    tokens: int
    characters: int
    bytes: int

    @property
    def chars_per_token(self) -> float:
        return self.characters / self.tokens if self.tokens else 0.0


def token_counts(model: GPT, ids: Sequence[int]) -> TokenCounts:
    """Counts of the text the ids spell (bytes: the tokens' own bytes, summed)."""
    ids = [int(i) for i in ids]
    n_bytes = sum(len(model.tokenizer.token_bytes(i)) for i in ids)
    return TokenCounts(tokens=len(ids), characters=len(model.tokenizer.decode(ids)), bytes=n_bytes)


# ---- embeddings --------------------------------------------------------------------------
TOKEN_EMBEDDING = "token embedding"
POSITION_EMBEDDING = "position embedding"
EMBEDDING_SUM = "token + position (block 0 input)"


def embedding_matrices(trace: Trace) -> dict[str, np.ndarray]:
    """The model's input vectors, each (T, C) float32.

    GPT-2: token embedding wte[ids], position embedding wpe[0..T-1] and their sum (resid[0]).
    Llama: only the token embedding (it is resid[0]; position enters as rotary in attention).
    """
    out = {TOKEN_EMBEDDING: trace.embed.float().numpy()}
    if trace.pos_embed is not None:
        out[POSITION_EMBEDDING] = trace.pos_embed.float().numpy()
        out[EMBEDDING_SUM] = trace.resid_stream[0].float().numpy()
    return out


def embedding_norms(trace: Trace) -> pd.DataFrame:
    """(T, k) L2 norm of each token's vector in every embedding_matrices entry, indexed by position."""
    return pd.DataFrame(
        {name: np.linalg.norm(m.astype(np.float64), axis=-1) for name, m in embedding_matrices(trace).items()},
        index=pd.RangeIndex(trace.n_tokens, name="position"),
    )


def vector_choices(trace: Trace) -> list[str]:
    """Names of the per-token vectors residual_vectors can return, input first."""
    names = list(embedding_matrices(trace))
    return names + [f"residual after layer {layer}" for layer in range(trace.n_layer)]


def residual_vectors(trace: Trace, choice: str) -> np.ndarray:
    """(T, C) float32 vectors named by one of vector_choices(trace)."""
    inputs = embedding_matrices(trace)
    if choice in inputs:
        return inputs[choice]
    prefix = "residual after layer "
    if choice.startswith(prefix) and choice[len(prefix):].isdigit():
        layer = int(choice[len(prefix):])
        if layer < trace.n_layer:
            return trace.resid_post(layer).float().numpy()
    raise ValueError(f"Unknown vectors {choice!r}: pick one of {vector_choices(trace)}.")


def cosine_similarity(x: np.ndarray | Tensor) -> np.ndarray:
    """(T, C) vectors -> (T, T) cosine similarity x_i·x_j / (|x_i| |x_j|); a zero vector gives 0."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"cosine_similarity takes a (T, C) matrix, got shape {x.shape}.")
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    return np.clip(unit @ unit.T, -1.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class PCA:
    """Points projected onto their principal components.

    coords (N, k) the centred points in the first k components; explained (min(N, C),) the
    share of total variance along each component, largest first; components (k, C).
    """

    coords: np.ndarray
    explained: np.ndarray
    components: np.ndarray


def pca(x: np.ndarray | Tensor, k: int = 2) -> PCA:
    """Principal components of the rows of x (N, C), via the SVD of the centred rows.

    Needs N >= 2 points. Each component's sign is fixed so its largest-magnitude loading is
    positive (a deterministic picture). Components beyond the data's rank have coords 0.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"pca takes an (N, C) matrix, got shape {x.shape}.")
    n, c = x.shape
    if n < 2:
        raise ValueError(f"PCA needs at least 2 points, got {n}: use a longer prompt.")
    if k < 1:
        raise ValueError(f"k must be >= 1, not {k}.")
    centred = x - x.mean(axis=0, keepdims=True)
    if n > c:  # eigenvectors of the (C, C) covariance: cheaper than the SVD when N >> C
        values, vectors = np.linalg.eigh(centred.T @ centred)
        order = np.argsort(values)[::-1]
        variance, basis = np.clip(values[order], 0.0, None), vectors[:, order].T  # basis (C, C)
    else:
        _, singular, basis = np.linalg.svd(centred, full_matrices=False)  # basis (N, C)
        variance = singular**2
    total = variance.sum()
    explained = variance / total if total > 0 else np.zeros_like(variance)
    basis = basis[:k]
    signs = np.sign(basis[np.arange(len(basis)), np.abs(basis).argmax(axis=1)])
    basis = basis * np.where(signs == 0, 1.0, signs)[:, None]
    coords = centred @ basis.T
    if coords.shape[1] < k:  # fewer components than asked (C < k): pad with zeros
        coords = np.pad(coords, ((0, 0), (0, k - coords.shape[1])))
    return PCA(coords=coords.astype(np.float32), explained=explained.astype(np.float32),
               components=basis.astype(np.float32))


def position_table(model: GPT) -> np.ndarray | None:
    """(n_ctx, C) the learned position embedding table (GPT-2); None for rotary models."""
    if model.config.positional != "learned":
        return None
    return model.pos_emb.weight.detach().float().numpy()


# ---- the model's parts ---------------------------------------------------------------------
PART_ORDER = (
    "token embedding", "position embedding", "attention norms", "attention q, k, v", "attention output",
    "MLP norms", "MLP in", "MLP out", "final norm", "output head",
)


def _part_of(name: str) -> str:
    """The PART_ORDER entry a parameter's name (model.named_parameters()) belongs to."""
    if name.startswith("tok_emb."):
        return "token embedding"
    if name.startswith("pos_emb."):
        return "position embedding"
    if name.startswith("final_norm."):
        return "final norm"
    if name.startswith("lm_head."):
        return "output head"
    inner = name.split(".", 2)[2] if name.startswith("blocks.") else name
    for prefix, part in (("norm1.", "attention norms"), ("attn.q_norm.", "attention norms"),
                         ("attn.k_norm.", "attention norms"), ("post_attn_norm.", "attention norms"),
                         ("post_mlp_norm.", "MLP norms"), ("attn.qkv.", "attention q, k, v"),
                         ("attn.out_proj.", "attention output"), ("norm2.", "MLP norms"),
                         ("mlp.fc_in.", "MLP in"), ("mlp.fc_out.", "MLP out")):
        if inner.startswith(prefix):
            return part
    return "other"


def parameter_counts(model: GPT) -> pd.DataFrame:
    """Parameters per part of the model: columns part, parameters, per block, share, shapes.

    Every parameter is counted once (a tied output head shares the token embedding), so the
    "parameters" column sums to sum(p.numel() for p in model.parameters()).
    """
    counts: dict[str, int] = {}
    shapes: dict[str, list[str]] = {}
    for name, p in model.named_parameters():
        part = _part_of(name)
        counts[part] = counts.get(part, 0) + p.numel()
        shape = "×".join(map(str, p.shape))
        if name.startswith("blocks.") and not name.startswith("blocks.0."):
            continue
        suffix = name.split(".", 2)[2] if name.startswith("blocks.") else name
        shapes.setdefault(part, []).append(f"{suffix} {shape}")
    if model.config.tie_embeddings:
        counts.setdefault("output head", 0)
        shapes["output head"] = ["tied: reuses the token embedding (vocab×C)"]
    parts = [p for p in PART_ORDER if p in counts] + sorted(set(counts) - set(PART_ORDER))
    total = sum(counts.values())
    n_layer = model.config.n_layer
    in_blocks = {"attention norms", "attention q, k, v", "attention output", "MLP norms", "MLP in", "MLP out"}
    return pd.DataFrame(
        {
            "part": parts,
            "parameters": np.asarray([counts[p] for p in parts], dtype=np.int64),
            "per block": pd.array([counts[p] // n_layer if p in in_blocks else None for p in parts], dtype="Int64"),
            "share": np.asarray([counts[p] / total if total else 0.0 for p in parts]),
            "tensors (block 0)": ["; ".join(shapes.get(p, [])) for p in parts],
        }
    )
