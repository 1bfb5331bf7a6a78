"""One forward pass, kept: every stage of the model for one prompt, as detached CPU tensors.

The forward runs once with PyTorch's fused attention and keeps the residual stream and each
layer's q, k, v. The stages in between (attention scores and patterns, context vectors,
attention output, MLP activations, final norm, probabilities) are computed on demand from
those with the model's own modules and the same maths, so a trace of a long prompt stays
small: at T = 1024 on GPT-2 small the 144 patterns alone would be 604 MB.
Shapes drop the batch dimension; names follow TransformerLens's hook points.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from gptviz.edge_run import SenderOutputs, run_edges
from gptviz.edges import EdgeGraph, Edges
from gptviz.edits import Ablation, EditSource, Interventions, build
from gptviz.labels import Component
from gptviz.model import (
    GPT,
    ForwardRecord,
    KVCache,
    LayerKV,
    attend,
    attention_pattern,
    attention_scores,
    masked_scores,
    soft_cap,
)

SCORE_STAGES = ("raw", "scaled", "softcapped", "masked")  # "softcapped" only on models that soft-cap
MEMO_PATTERNS_MAX_T = 256


def encode_prompt(model: GPT, text_or_ids: str | Sequence[int], allow_special: bool = False) -> list[int]:
    """Text (or ids) -> checked token ids; ValueError with a fix for empty or unknown input.

    Text gets the BOS token in front when the model's tokenizer adds one (Llama 3, Gemma);
    ids are taken as given.
    """
    if isinstance(text_or_ids, str):
        ids = model.tokenizer.encode(text_or_ids, allow_special=allow_special, add_special_tokens=True)
    else:
        ids = [int(i) for i in text_or_ids]
    if not ids:
        raise ValueError("The prompt is empty: type some text to see the model read it.")
    bad = [i for i in ids if not 0 <= i < model.config.vocab_size]
    if bad:
        raise ValueError(
            f"Token id {bad[0]} is outside this model's vocabulary of {model.config.vocab_size}."
        )
    return ids


def trace(
    model: GPT, text_or_ids: str | Sequence[int], *, allow_special: bool = False,
    ablate: Sequence[Component] = (), ablation: Ablation = "zero", patch: EditSource | None = None,
    edges: Edges | None = None, source: "Trace | str" = "zero",
) -> "Trace":
    """Run the model once on a prompt and keep what every view needs.

    text_or_ids: a string (tokenized; special-token-looking text stays plain text unless
    allow_special) or token ids. Raises ValueError for an empty prompt or one longer than
    the model's context (n_ctx).

    Interventions (the trace is then of the changed run, and its stages show the change):
    ablate: components knocked out, (layer, head) or (layer, "mlp"); ablation "zero" sets
    their output to 0, "mean" to its mean over this run's positions. patch: copies activations
    of a clean run of a prompt with as many tokens into this one (gptviz.Patch(clean_trace,
    [(site, layer, position or head), ...]), sites as in gptviz.interventions.SITES; any EditSource).

    edges: an edge run (gptviz/edge_run.py): Edges(keep=[...]) runs only the circuit, every other
    (sender, receiver) edge reading the `source` run's value; Edges(drop=[...]) replaces only these.
    source: a Trace of a prompt with as many tokens (e.g. a corrupted one), "mean" (each sender's
    output averaged over this prompt's positions) or "zero". The trace's q, k, v and MLP inputs are the
    receivers' own; its residual stream is what every sender's output adds up to, and the last one what
    the logits read.
    """
    ids = encode_prompt(model, text_or_ids, allow_special)
    if edges is not None:
        if ablate or patch is not None:
            raise ValueError("An edge run cannot also knock out or patch: express those as edges, or run them apart.")
        return _edge_trace(model, ids, edges, source)
    edits = build(model.config, len(ids), ablate, ablation, patch)
    record = ForwardRecord()
    with torch.inference_mode():
        last = model(torch.tensor([ids]), record=record, edits=edits, last_only=True)  # (1, 1, vocab)
    return Trace.from_record(model, ids, record, last[0, -1], edits)


def source_outputs(model: GPT, ids: Sequence[int], source: "Trace | str",
                   clean: "Trace | None" = None) -> SenderOutputs:
    """What the senders wrote in an edge run's source: a Trace of another prompt with as many tokens, or
    "mean" / "zero" of the run of `ids` itself (`clean`, its plain trace, if already there)."""
    if isinstance(source, Trace):
        if source.n_tokens != len(ids):
            raise ValueError(f"The source prompt has {source.n_tokens} tokens and this one {len(ids)}: an edge run "
                             "needs prompts of the same token length (swap words that are one token each).")
        if source.model.config != model.config:
            raise ValueError("The source run comes from another model: use runs of the same model.")
        return source.sender_outputs()
    if source not in ("mean", "zero"):
        raise ValueError(f"source must be a Trace, 'mean' or 'zero', not {source!r}.")
    outputs = (clean if clean is not None else trace(model, ids)).sender_outputs()
    return outputs.mean() if source == "mean" else outputs.zero()


def _edge_trace(model: GPT, ids: list[int], edges: Edges, source: "Trace | str") -> "Trace":
    mix = edges.replaced(EdgeGraph.of(model.config)).float()[None]  # (1, n_senders, n_receivers)
    record = ForwardRecord()
    with torch.inference_mode():
        sources = source_outputs(model, ids, source)
        position = torch.tensor([len(ids) - 1])
        normed = run_edges(model, torch.tensor(ids), sources, mix, record=record, positions=position)
        last = model.readout(normed)[0, -1]  # (vocab,)
    return Trace.from_record(model, ids, record, last, mlp_ins=_first(record.mlp_in))


def _first(batch: Sequence[Tensor]) -> tuple[Tensor, ...]:
    return tuple(t[0] for t in batch)


@dataclass(frozen=True, eq=False)
class Trace:
    """A forward pass over ids (T tokens), batch dimension removed.

    embed (T, C) token embedding (times the model's embed_scale); pos_embed (T, C) or None (rotary instead);
    resid_stream: n_layer + 1 tensors (T, C) (hook_resid_pre of each block, then the
    last block's hook_resid_post); resid_mids: per layer (T, C);
    qs: per layer (nh, T, hs); ks, vs: per layer (n_kv, T, hs), after q/k norms and rotary;
    last_logits (vocab,): the prediction after the last token (the other positions' logits are read
    out of the final stream on demand: `logits_at`, `logits`); interventions: what was changed in the
    run (None: nothing), applied again when a stage is computed on demand; mlp_ins: per layer (T, C)
    the stream each MLP read, in an edge run (where it is not the shared stream), else None.
    """

    model: GPT = field(repr=False)
    ids: list[int]
    tokens: list[str]
    embed: Tensor
    pos_embed: Tensor | None
    resid_stream: tuple[Tensor, ...]
    resid_mids: tuple[Tensor, ...]
    qs: tuple[Tensor, ...]
    ks: tuple[Tensor, ...]
    vs: tuple[Tensor, ...]
    last_logits: Tensor
    interventions: Interventions | None = field(default=None, repr=False)
    mlp_ins: tuple[Tensor, ...] | None = field(default=None, repr=False)
    _memo: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_record(cls, model: GPT, ids: list[int], record: ForwardRecord, last_logits: Tensor,
                    interventions: Interventions | None = None, mlp_ins: tuple[Tensor, ...] | None = None) -> "Trace":
        return cls(
            model=model,
            ids=list(ids),
            tokens=model.tokenizer.token_strings(ids),
            embed=record.embed[0],
            pos_embed=record.pos_embed,
            resid_stream=_first(record.resid),
            resid_mids=_first(record.resid_mid),
            qs=_first(record.q),
            ks=_first(record.k),
            vs=_first(record.v),
            last_logits=last_logits,
            interventions=interventions,
            mlp_ins=mlp_ins,
        )

    def _edit(self, layer: int):
        """The LayerEdit of `layer` in this run, or None."""
        return None if self.interventions is None else self.interventions.layer(layer)

    def _memoized(self, key: tuple, compute):
        with self._lock:
            if key not in self._memo:
                with torch.inference_mode():
                    self._memo[key] = compute()
            return self._memo[key]

    # ---- sizes -------------------------------------------------------------------
    @property
    def n_tokens(self) -> int:
        return len(self.ids)

    @property
    def n_layer(self) -> int:
        return len(self.qs)

    @property
    def n_head(self) -> int:
        return self.model.config.n_head

    # ---- residual stream ----------------------------------------------------------
    @property
    def resid(self) -> Tensor:
        """(n_layer + 1, T, C): the residual stream entering each block, then the final one."""
        return self._memoized(("resid",), lambda: torch.stack(self.resid_stream))

    def resid_pre(self, layer: int) -> Tensor:
        """(T, C) residual stream entering block `layer`."""
        return self.resid_stream[self._layer(layer)]

    def resid_mid(self, layer: int) -> Tensor:
        """(T, C) residual stream after attention's shortcut: resid_pre + attn_out (the MLP reads it, except in a
        parallel block, see mlp_in)."""
        return self.resid_mids[self._layer(layer)]

    def resid_post(self, layer: int) -> Tensor:
        """(T, C) residual stream leaving block `layer`."""
        return self.resid_stream[self._layer(layer) + 1]

    # ---- attention ----------------------------------------------------------------
    def q(self, layer: int) -> Tensor:
        """(nh, T, hs) queries of every head (after rotary for Llama)."""
        return self.qs[self._layer(layer)]

    def k(self, layer: int) -> Tensor:
        """(n_kv, T, hs) keys (after rotary for Llama); head h reads key head h // n_rep."""
        return self.ks[self._layer(layer)]

    def v(self, layer: int) -> Tensor:
        """(n_kv, T, hs) values."""
        return self.vs[self._layer(layer)]

    def kv_head(self, head: int) -> int:
        """The key/value head that query head `head` reads (grouped-query attention)."""
        return self._head(head) // self.model.config.n_rep

    def window(self, layer: int) -> int | None:
        """Keys a query of `layer` sees (its own included), or None: the whole past."""
        return self.model.config.window(self._layer(layer))

    @property
    def score_stages(self) -> tuple[str, ...]:
        """The stages `scores` shows for this model, in the order the model computes them (the
        softmax of the last is the pattern): "softcapped" only when the model soft-caps its scores."""
        capped = self.model.config.attn_softcap is not None
        return tuple(stage for stage in SCORE_STAGES if capped or stage != "softcapped")

    def scores(self, layer: int, head: int, stage: str = "raw") -> Tensor:
        """(T, T) one head's scores: "raw" q·kᵀ, "scaled" × scale (1/√hs unless the model says),
        "softcapped" tanh(scaled / c) · c (models with attn_softcap only), "masked" (-inf for keys after
        the query, and outside a sliding window; on the soft-capped scores)."""
        if stage not in self.score_stages:
            extra = " (this model does not soft-cap its scores)" if stage == "softcapped" else ""
            raise ValueError(f"stage must be one of {self.score_stages}, not {stage!r}{extra}.")
        layer, head = self._layer(layer), self._head(head)
        config = self.model.config
        with torch.inference_mode():
            raw = attention_scores(self.qs[layer][head : head + 1], self.ks[layer][self.kv_head(head)][None])[0]
            if stage == "raw":
                return raw
            if stage == "scaled":
                return raw * config.scale
            if stage == "softcapped":
                return soft_cap(raw * config.scale, config.attn_softcap)
            return masked_scores(raw, config.scale, self.window(layer), softcap=config.attn_softcap)

    def _pattern(self, layer: int, raw: Tensor) -> Tensor:
        """Raw scores (..., T, T) of `layer` -> their attention pattern, as the model computes it."""
        config = self.model.config
        return attention_pattern(raw, config.scale, self.window(layer), softcap=config.attn_softcap)

    def attention(self, layer: int, head: int) -> Tensor:
        """(T, T) one head's attention pattern: row = query token, columns = key tokens."""
        layer, head = self._layer(layer), self._head(head)
        if ("patterns", layer) in self._memo:
            return self._memo[("patterns", layer)][head]
        with torch.inference_mode():
            raw = attention_scores(self.qs[layer][head : head + 1], self.ks[layer][self.kv_head(head)][None])
            return self._pattern(layer, raw)[0]

    def patterns(self, layer: int) -> Tensor:
        """(nh, T, T) every head's attention pattern in one layer (hook_pattern).

        Kept on the trace for short prompts only (T <= MEMO_PATTERNS_MAX_T); longer ones are
        recomputed on each call, so a cached trace never grows by n_layer · nh · T² floats.
        """
        layer = self._layer(layer)

        def compute() -> Tensor:
            return self._pattern(layer, attention_scores(self.qs[layer], self.ks[layer]))

        if self.n_tokens <= MEMO_PATTERNS_MAX_T:
            return self._memoized(("patterns", layer), compute)
        with torch.inference_mode():
            return compute()

    def z(self, layer: int, start: int = 0, stop: int | None = None) -> Tensor:
        """(nh, W, hs) context vectors of the queries at positions [start, stop) (default: all T):
        each head's pattern-weighted sum of values (hook_z).

        Computed by the same kernel the forward pass ran, on the same q, k, v (and with
        this run's interventions: a knocked-out head's z is its ablated value; a mean over
        positions needs them all, so an intervened run computes every position).
        """
        layer = self._layer(layer)
        start, stop = self.span(start, stop)
        config = self.model.config
        edit = self._edit(layer)
        first, last = (0, self.n_tokens) if edit is not None else (start, stop)
        with torch.inference_mode():
            q = self.qs[layer][None, :, first:last]  # (1, nh, W, hs): the last W of `last` positions
            k, v = self.ks[layer][None, :, :last], self.vs[layer][None, :, :last]
            z = attend(q, k, v, config.scale, self.window(layer), config.attn_softcap)
            if edit is not None:
                z = edit.edit_z(z)[:, :, start:stop]
        return z[0]

    def attn_module_out(self, layer: int, start: int = 0, stop: int | None = None) -> Tensor:
        """(W, C) the heads' context vectors concatenated, through out_proj: attention's output
        before any post-attention norm (what a forward hook on the attention module sees)."""
        layer = self._layer(layer)
        start, stop = self.span(start, stop)
        edit = self._edit(layer)
        first, last = (0, self.n_tokens) if edit is not None else (start, stop)  # copies cover every position
        z = self.z(layer, first, last)  # (nh, W, hs)
        block = self.model.blocks[layer]
        with torch.inference_mode():
            out = block.attn.out_proj(z.transpose(0, 1).reshape(z.shape[1], -1))[None]  # (1, W, C)
            if edit is not None:
                out = edit.edit_attn_out(out)[:, start:stop]
        return out[0]

    def attn_out(self, layer: int, start: int = 0, stop: int | None = None) -> Tensor:
        """(W, C) what attention adds to the residual stream (hook_attn_out): attn_module_out
        (through the post-attention norm, if the model has one)."""
        block = self.model.blocks[self._layer(layer)]
        with torch.inference_mode():
            return block.post_attn_norm(self.attn_module_out(layer, start, stop))

    def head_outputs(self, layer: int) -> Tensor:
        """(nh, T, C) what each head writes, z_h · W_O[h], before any post-attention norm (the heads'
        sum plus out_proj's bias is attn_module_out)."""
        with torch.inference_mode():
            return self.model.blocks[self._layer(layer)].attn.head_outputs(self.z(layer))

    def sender_outputs(self) -> SenderOutputs:
        """What every sender wrote in this run (the embeddings, each head, each MLP), for edge runs: kept
        for short runs (every circuit of a question reads it), recomputed for long ones (n_layer · (nh + 1)
        · T · C numbers)."""
        def compute() -> SenderOutputs:
            embed = self.embed if self.pos_embed is None else self.embed + self.pos_embed
            return SenderOutputs(embed, tuple(self.head_outputs(l) for l in range(self.n_layer)),
                                 tuple(self.mlp_module_out(l) for l in range(self.n_layer)))

        if self.n_tokens <= MEMO_PATTERNS_MAX_T:
            return self._memoized(("sender_outputs",), compute)
        with torch.inference_mode():
            return compute()

    # ---- MLP ------------------------------------------------------------------------
    def mlp_in(self, layer: int, start: int = 0, stop: int | None = None) -> Tensor:
        """(W, C) the residual stream the MLP of block `layer` reads (before norm2): resid_mid, or
        resid_pre in a parallel block, whose MLP reads the block's input as attention does; in an edge
        run the MLP's own mix."""
        if self.mlp_ins is not None:
            return self.mlp_ins[self._layer(layer)][slice(*self.span(start, stop))]
        return self.stream(self.model.blocks[self._layer(layer)].structure.branches[1].reads, layer)[
            slice(*self.span(start, stop))]

    def mlp_hidden(self, layer: int, start: int = 0, stop: int | None = None) -> Tensor:
        """(W, d_mlp) MLP hidden activation (GELU or SwiGLU) (hook_post)."""
        block = self.model.blocks[self._layer(layer)]
        with torch.inference_mode():
            return block.mlp.hidden(self.sublayer_in(layer, "mlp", start, stop))

    def mlp_module_out(self, layer: int, start: int = 0, stop: int | None = None) -> Tensor:
        """(W, C) the MLP's output before any post-MLP norm (what a forward hook on the MLP module
        sees), with this run's interventions (which may need every position: then all are computed)."""
        layer = self._layer(layer)
        start, stop = self.span(start, stop)
        edit = self._edit(layer)
        first, last = (0, self.n_tokens) if edit is not None else (start, stop)
        block = self.model.blocks[layer]
        with torch.inference_mode():
            out = block.mlp.fc_out(self.mlp_hidden(layer, first, last))[None]  # (1, W, C)
            if edit is not None:
                out = edit.edit_mlp_out(out)[:, start:stop]
        return out[0]

    def mlp_out(self, layer: int, start: int = 0, stop: int | None = None) -> Tensor:
        """(W, C) what the MLP adds to the residual stream (hook_mlp_out; after the post-MLP norm, if any)."""
        block = self.model.blocks[self._layer(layer)]
        with torch.inference_mode():
            return block.post_mlp_norm(self.mlp_module_out(layer, start, stop))

    # ---- the block as it declares itself ---------------------------------------------------
    def stream(self, name: str, layer: int) -> Tensor:
        """(T, C) the residual stream `name` of block `layer`: "resid_pre", "resid_mid" or "resid_post"."""
        streams = {"resid_pre": self.resid_pre, "resid_mid": self.resid_mid, "resid_post": self.resid_post}
        if name not in streams:
            raise ValueError(f"stream must be one of {list(streams)}, not {name!r}.")
        return streams[name](layer)

    def sublayer_in(self, layer: int, branch: str, start: int = 0, stop: int | None = None) -> Tensor:
        """(W, C) what block `layer`'s sublayer `branch` ("attn" or "mlp") receives: the stream it
        reads (block.structure), through the norm before it if the block has one."""
        block = self.model.blocks[self._layer(layer)]
        b = self._branch(block, branch)
        span = slice(*self.span(start, stop))
        x = self.mlp_in(layer, start, stop) if branch == "mlp" else self.stream(b.reads, layer)[span]
        with torch.inference_mode():
            return x if b.norm_before is None else block.get_submodule(b.norm_before)(x)

    def norm_in(self, layer: int, norm: str, start: int = 0, stop: int | None = None) -> Tensor:
        """(W, C) what block `layer`'s norm module `norm` (a key of block.structure.norms()) reads:
        the stream its sublayer reads (a norm before it), or the sublayer's output (a norm after it)."""
        block = self.model.blocks[self._layer(layer)]
        norms = block.structure.norms()
        if norm not in norms:
            raise ValueError(f"This model's blocks have no norm {norm!r}: use one of {list(norms)}.")
        branch, where = norms[norm]
        if where == "before":
            return self.stream(self._branch(block, branch).reads, layer)[slice(*self.span(start, stop))]
        module_out = {"attn": self.attn_module_out, "mlp": self.mlp_module_out}[branch]
        return module_out(layer, start, stop)

    # ---- output -----------------------------------------------------------------------
    @property
    def final_norm(self) -> Tensor:
        """(T, C) the last residual stream through the final norm (ln_final)."""
        return self._memoized(("final_norm",), lambda: self.model.final_norm(self.resid_stream[-1]))

    def logits_at(self, position: int) -> Tensor:
        """(vocab,) the logits after the token at `position` (-1: the last): the final stream's row
        through the output head (and its soft-cap), as the forward computes them."""
        position = self._position(position)
        if position == self.n_tokens - 1:
            return self.last_logits
        with torch.inference_mode():
            return self.model.readout(self.final_norm[position])

    @property
    def logits(self) -> Tensor:
        """(T, vocab) every position's logits, computed on demand (not kept: T × vocab floats)."""
        with torch.inference_mode():
            return torch.cat((self.model.readout(self.final_norm[:-1]), self.last_logits[None]))

    @property
    def probs(self) -> Tensor:
        """(T, vocab) softmax of the logits: the next-token distribution at every position."""
        with torch.inference_mode():
            return torch.softmax(self.logits, dim=-1)

    def probs_at(self, position: int) -> Tensor:
        """(vocab,) next-token probabilities after the token at `position` (-1: the last)."""
        with torch.inference_mode():
            return torch.softmax(self.logits_at(position), dim=-1)

    # ---- growing by one token ------------------------------------------------------------
    def kv_cache(self) -> KVCache:
        """The keys and values of this trace as a cache for continuing the sequence."""
        return KVCache([LayerKV(k[None], v[None]) for k, v in zip(self.ks, self.vs)])

    def extend(self, new_ids: Sequence[int]) -> "Trace":
        """The trace of ids + new_ids, running only the new tokens (KV cache). Not for a run with
        interventions (a mean ablation averages over every position): trace the longer sequence."""
        new_ids = encode_prompt(self.model, new_ids)
        if self.interventions is not None or self.mlp_ins is not None:
            raise ValueError("A trace with interventions cannot be extended: trace the longer sequence anew.")
        record = ForwardRecord()
        with torch.inference_mode():
            last = self.model(torch.tensor([new_ids]), cache=self.kv_cache(), record=record, last_only=True)
            cat = lambda old, new: tuple(torch.cat((o, n[0]), dim=-2) for o, n in zip(old, new))
            pos_embed = None if self.pos_embed is None else torch.cat((self.pos_embed, record.pos_embed))
            return Trace(
                model=self.model,
                ids=self.ids + new_ids,
                tokens=self.tokens + self.model.tokenizer.token_strings(new_ids),
                embed=torch.cat((self.embed, record.embed[0])),
                pos_embed=pos_embed,
                resid_stream=cat(self.resid_stream, record.resid),
                resid_mids=cat(self.resid_mids, record.resid_mid),
                qs=cat(self.qs, record.q),
                ks=_first(record.k),
                vs=_first(record.v),
                last_logits=last[0, -1],
            )

    # ---- index checks ----------------------------------------------------------------
    def span(self, start: int = 0, stop: int | None = None) -> tuple[int, int]:
        """[start, stop) checked against the T positions (stop None: T)."""
        T = self.n_tokens
        stop = T if stop is None else stop
        if not 0 <= start < stop <= T:
            raise ValueError(f"Positions [{start}, {stop}) are not inside the sequence of {T} tokens.")
        return start, stop

    @staticmethod
    def _branch(block, name: str):
        branches = {b.name: b for b in block.structure.branches}
        if name not in branches:
            raise ValueError(f"A block's sublayers are {list(branches)}, not {name!r}.")
        return branches[name]

    def _layer(self, layer: int) -> int:
        if not -self.n_layer <= layer < self.n_layer:
            raise ValueError(f"Layer {layer} does not exist: this model has layers 0–{self.n_layer - 1}.")
        return layer % self.n_layer

    def _head(self, head: int) -> int:
        if not -self.n_head <= head < self.n_head:
            raise ValueError(f"Head {head} does not exist: this model has heads 0–{self.n_head - 1}.")
        return head % self.n_head

    def _position(self, position: int) -> int:
        T = self.n_tokens
        if not -T <= position < T:
            raise IndexError(f"Position {position} is not in the sequence of {T} tokens (0–{T - 1}).")
        return position % T
