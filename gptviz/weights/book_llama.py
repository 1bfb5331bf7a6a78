"""The book's Llama3Model and Qwen3Model (``llms_from_scratch/llama3.py``, ``qwen3.py``) -> our GPT: one name
table for both.

Both are Llama's block: RMSNorm before attention and before a SwiGLU MLP (ff.fc1 the SiLU gate, ff.fc2 the
up projection, ff.fc3 down), grouped-query attention (W_key and W_value have n_kv_groups heads; query head
h reads key head h // group_size, repeat_interleave), rotary position turning the first half of each head
with its second half (apply_rope: cat(-x2, x1), as ours), no biases, an output head apart from tok_emb.
Where they differ:
- Llama3Model: torch's nn.RMSNorm (parameter "weight", eps 1e-5); heads of emb_dim / n_heads; rotary
  frequencies rescaled by cfg["rope_freq"] (Llama 3.1's "llama3" scaling, ours in model.rotary_frequencies).
- Qwen3Model: the book's RMSNorm (parameter "scale", eps 1e-6, computed in float32); heads of cfg["head_dim"];
  with cfg["qk_norm"], an RMSNorm over each head's q and k before rotary.
Neither state dict stores the context length or rotary's base (cos and sin are not persistent buffers).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from gptviz.config import GPTConfig
from gptviz.weights.book import BOOK_BLOCK_PREFIX
from gptviz.weights.convert import WeightsError
from gptviz.weights.file_options import contradicts, missing, rope_from_book
from gptviz.weights.name_table import NameTable, block_count, convert_by_table

# Our parameter -> the book's; "{norm}" is the class's norm parameter name (BookClass.norm_param).
BOOK_GQA_NAMES: NameTable = {
    "tok_emb.weight": ("tok_emb.weight",),
    "final_norm.weight": ("final_norm.{norm}",),
    "lm_head.weight": ("out_head.weight",),
    "blocks.{i}.norm1.weight": ("trf_blocks.{i}.norm1.{norm}",),
    "blocks.{i}.attn.qkv.weight": ("trf_blocks.{i}.att.W_query.weight", "trf_blocks.{i}.att.W_key.weight",
                                   "trf_blocks.{i}.att.W_value.weight"),
    "blocks.{i}.attn.q_norm.weight": ("trf_blocks.{i}.att.q_norm.{norm}",),
    "blocks.{i}.attn.k_norm.weight": ("trf_blocks.{i}.att.k_norm.{norm}",),
    "blocks.{i}.attn.out_proj.weight": ("trf_blocks.{i}.att.out_proj.weight",),
    "blocks.{i}.norm2.weight": ("trf_blocks.{i}.norm2.{norm}",),
    "blocks.{i}.mlp.fc_in.weight": ("trf_blocks.{i}.ff.fc1.weight", "trf_blocks.{i}.ff.fc2.weight"),  # gate, up
    "blocks.{i}.mlp.fc_out.weight": ("trf_blocks.{i}.ff.fc3.weight",),
}
_UNSET = object()  # rope_freq=None means "no scaling": left out is told apart by this


@dataclass(frozen=True)
class BookClass:
    """What tells the two classes apart in a state dict and in their maths."""

    name: str
    arch: str  # the architecture ours calls it (gptviz/architectures.py)
    norm_param: str  # its RMSNorms' parameter name
    norm_eps: float

    def table(self) -> NameTable:
        return {ours: tuple(key.replace("{norm}", self.norm_param) for key in theirs)
                for ours, theirs in BOOK_GQA_NAMES.items()}

    def key(self, ours: str, i: int = 0, part: int = 0) -> str:
        """The book's name of one of our parameters (block i; part of a fused one)."""
        return self.table()[ours][part].format(i=i)

    def recognises(self, book: dict[str, Tensor]) -> bool:
        first = (self.key("blocks.{i}.norm1.weight"), self.key("blocks.{i}.attn.qkv.weight"))
        return all(key in book for key in first) and "pos_emb.weight" not in book


LLAMA3 = BookClass("Llama3Model", "llama", "weight", 1e-5)
QWEN3 = BookClass("Qwen3Model", "qwen3", "scale", 1e-6)


def _heads(cls: BookClass, book: dict[str, Tensor], source: str, n_heads: int | None, head_dim: int | None,
           n_kv_heads: int | None) -> tuple[int, int, int]:
    """(n_heads, n_kv_heads, head_dim) from W_query's and W_key's rows, q_norm's size and the options."""
    q_rows = book[cls.key("blocks.{i}.attn.qkv.weight", part=0)].shape[0]
    k_rows = book[cls.key("blocks.{i}.attn.qkv.weight", part=1)].shape[0]
    if (q_norm := cls.key("blocks.{i}.attn.q_norm.weight")) in book:
        size = book[q_norm].shape[0]
        if head_dim is not None and head_dim != size:
            raise contradicts(source, "head_dim", head_dim, f"q_norm normalizes heads of {size}")
        head_dim = size
    if head_dim is not None:
        if q_rows % head_dim:
            raise contradicts(source, "head_dim", head_dim, f"W_query's {q_rows} rows do not split into heads of "
                                                            f"{head_dim}")
        if n_heads is not None and n_heads != q_rows // head_dim:
            raise contradicts(source, "n_heads", n_heads, f"W_query's {q_rows} rows are {q_rows // head_dim} heads "
                                                          f"of {head_dim}")
        n_heads = q_rows // head_dim
    if n_heads is None:
        raise missing(source, "n_heads", "how many heads each attention layer has")
    if n_heads < 1 or q_rows % n_heads:
        raise contradicts(source, "n_heads", n_heads, f"W_query's {q_rows} rows do not split into {n_heads} heads")
    head_dim = q_rows // n_heads
    if head_dim % 2:
        raise contradicts(source, "n_heads", n_heads, f"heads of {head_dim} dimensions (W_query's {q_rows} rows / "
                                                      f"{n_heads}) cannot turn in pairs, as rotary does")
    groups = k_rows // head_dim
    if k_rows % head_dim or not groups or n_heads % groups:
        raise contradicts(source, "n_heads", n_heads, f"W_key's {k_rows} rows are no whole number of key/value "
                                                      f"heads of {head_dim} that divides {n_heads} query heads")
    if n_kv_heads is not None and n_kv_heads != groups:
        raise contradicts(source, "n_kv_heads", n_kv_heads, f"W_key's {k_rows} rows are {groups} heads of {head_dim}")
    return n_heads, groups, head_dim


def _from_book_gqa(cls: BookClass, book: dict[str, Tensor], source: str, n_heads: int | None, head_dim: int | None,
                   n_kv_heads: int | None, context_length: int | None, rope_base: float | None,
                   rope_freq: dict | None) -> tuple[GPTConfig, dict[str, Tensor]]:
    if any(".ff.gate." in key for key in book):
        raise WeightsError(f"{source}: a {cls.name} with a mixture-of-experts feed-forward (ff.gate): gptviz runs "
                           "only the dense one (cfg without num_experts).")
    n_heads, groups, head_dim = _heads(cls, book, source, n_heads, head_dim, n_kv_heads)
    if context_length is None:
        raise missing(source, "context_length", "how long a context the model was built for")
    if rope_base is None:
        raise missing(source, "rope_base", "the base (theta) of its rotary frequencies")
    vocab_size, C = book[cls.key("tok_emb.weight")].shape
    config = GPTConfig(
        arch=cls.arch, vocab_size=vocab_size, n_ctx=int(context_length), d_model=C,
        n_layer=block_count(list(book), BOOK_BLOCK_PREFIX), n_head=n_heads, n_kv_head=groups, d_head=head_dim,
        d_mlp=book[cls.key("blocks.{i}.mlp.fc_in.weight")].shape[0], norm_eps=cls.norm_eps, norm="rmsnorm",
        positional="rotary", rope=rope_from_book(rope_base, rope_freq), mlp="swiglu",
        qk_norm=cls.key("blocks.{i}.attn.q_norm.weight") in book, tie_embeddings=False,
    )
    return config, convert_by_table(config, cls.table(), book, source)


def from_book_llama3(
    book: dict[str, Tensor], n_heads: int | None = None, n_kv_heads: int | None = None,
    context_length: int | None = None, rope_base: float | None = None, rope_freq: dict | None = _UNSET,
    source: str = "the state dict",
) -> tuple[GPTConfig, dict[str, Tensor]]:
    """The book's Llama3Model state dict -> (our config, our float32 state dict).

    The shapes say the vocabulary, emb_dim, layers, hidden_dim and, given n_heads, n_kv_heads. n_heads,
    context_length, rope_base and rope_freq (its cfg["rope_freq"] dict, or None for none) must be given;
    WeightsError naming whichever is missing or contradicts the shapes."""
    if rope_freq is _UNSET:
        raise missing(source, "rope_freq", "how Llama 3 rescales its rotary frequencies (None: not at all)")
    return _from_book_gqa(LLAMA3, book, source, n_heads, None, n_kv_heads, context_length, rope_base, rope_freq)


def from_book_qwen3(
    book: dict[str, Tensor], n_heads: int | None = None, n_kv_heads: int | None = None, head_dim: int | None = None,
    context_length: int | None = None, rope_base: float | None = None, source: str = "the state dict",
) -> tuple[GPTConfig, dict[str, Tensor]]:
    """The book's Qwen3Model state dict -> (our config, our float32 state dict).

    With qk_norm, q_norm's size is head_dim and the heads follow from W_query and W_key; without, n_heads
    (or head_dim) must be given. context_length and rope_base must be given; WeightsError naming whichever
    is missing or contradicts the shapes."""
    return _from_book_gqa(QWEN3, book, source, n_heads, head_dim, n_kv_heads, context_length, rope_base, None)
