"""Edge runs: a forward pass in which every receiver reads its own mix of the residual stream.

In the model every receiver (a head's q, k or v input, an MLP's input, the logits) reads the same
stream: the sum of what every earlier sender wrote (gptviz/edges.py names them). An edge run
gives each (sender, receiver) pair a weight m in [0, 1]: the receiver reads

    input_r = Σ_s (1 − m[s, r]) · out_s + m[s, r] · source_s        (+ the biases every run shares)

where out_s is what sender s writes in this run (computed on its own mixed inputs) and source_s
what it wrote in a source run (a corrupted prompt, its mean over positions, or zero). m = 0
everywhere is the model's own forward pass; m = 1 everywhere reads only the source. The norms
apply to each receiver's summed input, as in the model. Where a block norms attention's output
before adding it (Gemma), a receiver sees that norm of its own mix of the heads.

Weights may be floats that require grad: ∂metric/∂m[s, r] at m = 0 is edge attribution patching's
score, and along m = α (0 → 1) the integrated-gradients variant's.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gptviz.edges import EdgeGraph
from gptviz.model import GPT, ForwardRecord, attend


@dataclass(frozen=True)
class SenderOutputs:
    """What every sender wrote in one run of T tokens, before any norm that follows it:
    embed (T, C) the token (+ position) embedding; heads: per layer (nh, T, C), head h's z_h · W_O[h]
    (the output bias is not a head's); mlps: per layer (T, C), the MLP's output."""

    embed: Tensor
    heads: tuple[Tensor, ...]
    mlps: tuple[Tensor, ...]

    @property
    def n_tokens(self) -> int:
        return self.embed.shape[0]

    def mean(self) -> "SenderOutputs":
        """Each sender's output averaged over the positions, at every position."""
        avg = lambda x: x.mean(-2, keepdim=True).expand_as(x)
        return SenderOutputs(avg(self.embed), tuple(map(avg, self.heads)), tuple(map(avg, self.mlps)))

    def zero(self) -> "SenderOutputs":
        return SenderOutputs(torch.zeros_like(self.embed), tuple(map(torch.zeros_like, self.heads)),
                             tuple(map(torch.zeros_like, self.mlps)))


def _mixed(mix: Tensor, diffs: Tensor) -> Tensor:
    """Σ_n mix[b, n, r(, t)] · diffs[b, n, t, c]: mix (B, n, R) or (B, n, R, T), diffs (B, n, T, C) -> (B, R, T, C)."""
    if mix.dim() == 3:
        return torch.einsum("bnr,bntc->brtc", mix, diffs)
    return torch.einsum("bnrt,bntc->brtc", mix, diffs)


@dataclass(frozen=True)
class Chunk:
    """Consecutive senders (the embeddings, a layer's heads, a layer's MLP) as an edge run saw them:
    first: the first one's index; diffs (B, n, T, C): source minus this run's output, in the stream's
    terms, or, for heads whose sum passes a post-attention norm (`norm`), before it: a receiver then
    sees norm(own + Σ mix · diffs) − norm(own), own (B, T, C) being the layer's summed output."""

    first: int
    diffs: Tensor
    norm: nn.Module | None = None
    own: Tensor | None = None


class _Written:
    """What the senders of an edge run wrote so far, and what each receiver sees of it.

    mix: per-edge weights (B, n_senders, n_receivers[, T]), or one weight for every edge (a float:
    then every receiver that reads the same senders sees the same, kept as running sums). Per-edge
    weights of a circuit are mostly 0 or mostly 1 (few edges kept, or few cut): a receiver then reads
    only the senders whose weight is not 0, or the running sum less those whose weight is not 1."""

    def __init__(self, mix: Tensor | float):
        self.mix = mix
        self.chunks: list[Chunk] = []
        self.sums: dict[int, Tensor] = {}  # senders read -> what the linear ones add up to (B, T, C), × mix if a float

    def add(self, first: int, diffs: Tensor, norm: nn.Module | None = None, own: Tensor | None = None) -> None:
        chunk = Chunk(first, diffs, None if isinstance(norm, nn.Identity) else norm, own)
        self.chunks.append(chunk)
        before = self.sums.get(first, 0)
        weight = 1.0 if isinstance(self.mix, Tensor) else self.mix
        if chunk.norm is None:
            self.sums[first + diffs.shape[1]] = before + weight * diffs.sum(1)
        elif isinstance(self.mix, Tensor):
            self.sums[first + diffs.shape[1]] = before  # seen through its norm, receiver by receiver
        else:
            self.sums[first + diffs.shape[1]] = before + chunk.norm(own + weight * diffs.sum(1)) - chunk.norm(own)

    def seen(self, r0: int, r1: int, n_up: int) -> Tensor:
        """(B, R, T, C) how receivers r0..r1-1, reading the first n_up senders, differ from this run's stream."""
        total = self.sums[n_up]  # (B, T, C)
        if not isinstance(self.mix, Tensor):
            return total[:, None].expand(total.shape[0], r1 - r0, *total.shape[1:])
        linear = [c for c in self.chunks if c.first < n_up and c.norm is None]
        rows = torch.cat([torch.arange(c.first, c.first + c.diffs.shape[1]) for c in linear])
        weights = self.mix[:, rows, r0:r1]  # (B, n, R[, T])
        read = (weights != 0).flatten(2).any(-1).any(0)  # (n,): senders some receiver reads from the source
        partly = (weights != 1).flatten(2).any(-1).any(0)  # (n,): senders some receiver reads from this run
        if self.mix.requires_grad or int(read.sum()) <= int(partly.sum()):
            keep = slice(None) if self.mix.requires_grad else read.nonzero()[:, 0]
            out = _mixed(weights[:, keep], _rows(linear, keep))
        else:  # all of the source, less what is read from this run
            keep = partly.nonzero()[:, 0]
            out = total[:, None] - _mixed(1 - weights[:, keep], _rows(linear, keep))
        for c in self.chunks:
            if c.first < n_up and c.norm is not None:
                mixed = _mixed(self.mix[:, c.first:c.first + c.diffs.shape[1], r0:r1], c.diffs)  # before the norm
                out = out + c.norm(c.own[:, None] + mixed) - c.norm(c.own)[:, None]
        return out


def _rows(chunks: list[Chunk], keep: Tensor | slice) -> Tensor:
    """(B, k, T, C): the diffs of the chunks' senders, concatenated in order, at positions `keep` (k,) of them."""
    if isinstance(keep, slice):
        return torch.cat([c.diffs for c in chunks], dim=1)[:, keep]
    parts, start = [], 0
    for c in chunks:
        n = c.diffs.shape[1]
        local = keep[(keep >= start) & (keep < start + n)] - start
        if len(local):
            parts.append(c.diffs[:, local])
        start += n
    return torch.cat(parts, dim=1) if parts else chunks[0].diffs[:, :0]


def run_edges(model: GPT, ids: Tensor, source: SenderOutputs, mix: Tensor | float, *,
              record: ForwardRecord | None = None, positions: Tensor | None = None, probes: Tensor | None = None,
              chunks: list[Chunk] | None = None) -> Tensor:
    """An edge run of ids (T,) for a batch of B weight matrices mix (B, n_senders, n_receivers), or
    (B, n_senders, n_receivers, T) with a weight per position (EdgeGraph's indices; weights of edges
    that do not exist are ignored), or one float weight for every edge (B = 1). Returns the logits'
    input after the final norm, (B, P, C) at `positions` (P,) (default: every position).

    record keeps, per layer, the stream that every sender's output adds up to (resid, resid_mid), each
    head's q, k, v, and each MLP's input (mlp_in); its last resid entry is the logits' own input.
    probes (B, n_receivers, T, C), zeros that require grad, are added to every receiver's input: their
    gradient is the metric's with respect to each input. chunks receives what the senders wrote (Chunk).
    """
    config = model.config
    graph = EdgeGraph.of(config)
    B, T = (mix.shape[0] if isinstance(mix, Tensor) else 1), ids.shape[0]
    if isinstance(mix, Tensor) and (mix.shape[1:3] != (graph.n_senders, graph.n_receivers)
                                    or (mix.dim() == 4 and mix.shape[3] != T)):
        raise ValueError(f"Edge weights need shape (B, {graph.n_senders}, {graph.n_receivers}[, {T}]), "
                         f"not {tuple(mix.shape)}.")
    if source.n_tokens != T:
        raise ValueError(f"The source run has {source.n_tokens} tokens and this one {T}: an edge run needs "
                         "prompts of the same token length.")
    nh, nkv = config.n_head, config.n_kv_head
    if probes is not None:  # per layer its attention inputs' and its MLP's, then the logits': views whose
        # gradients join in one concatenation (slicing would add up a zero-filled full-size gradient per slice)
        probes = probes.split([nh + 2 * nkv, 1] * config.n_layer + [1], dim=1)
    written = _Written(mix)
    x = model.embed(ids[None])  # (1, T, C)
    if record is not None:
        record.embed = x
    if config.positional == "learned":
        pos = model.pos_emb(torch.arange(T))  # (T, C)
        if record is not None:
            record.pos_embed = pos
        x = x + pos
    written.add(0, (source.embed - x)[:, None].expand(B, 1, T, -1))
    x = x.expand(B, T, -1)  # (B, T, C): the sum of every sender's output in this run
    if record is not None:
        record.resid.append(x)
    for layer, (block, rotary) in enumerate(zip(model.blocks, model.rotary(torch.arange(T)))):
        r0 = graph.attn_receivers(layer)
        inputs = x[:, None] + written.seen(r0, r0 + nh + 2 * nkv, graph.heads_start(layer))  # (B, R, T, C)
        inputs = block.norm1(inputs if probes is None else inputs + probes[2 * layer])
        q, k, v = block.attn.project_each(inputs[:, :nh], inputs[:, nh:nh + nkv], inputs[:, nh + nkv:], rotary)
        z = attend(q, k, v, block.attn.scale, block.attn.window, block.attn.softcap)  # (B, nh, T, hs)
        heads = block.attn.head_outputs(z)  # (B, nh, T, C)
        attn = heads.sum(1) if block.attn.out_proj.bias is None else heads.sum(1) + block.attn.out_proj.bias
        written.add(graph.heads_start(layer), source.heads[layer] - heads, block.post_attn_norm, attn)
        mid = x + block.post_attn_norm(attn)  # (B, T, C)
        m = graph.mlp_receiver(layer)
        mlp_in = (x if block.structure.parallel else mid) + written.seen(m, m + 1, graph.upstream(m))[:, 0]
        if probes is not None:
            mlp_in = mlp_in + probes[2 * layer + 1][:, 0]
        out = block.mlp(block.norm2(mlp_in))  # (B, T, C)
        write = block.post_mlp_norm(out)
        written.add(graph.heads_start(layer) + nh, (block.post_mlp_norm(source.mlps[layer]) - write)[:, None])
        x = mid + write
        if record is not None:
            record.q.append(q)
            record.k.append(k)
            record.v.append(v)
            record.resid_mid.append(mid)
            record.mlp_in.append(mlp_in)
            record.resid.append(x)
    final = x + written.seen(graph.logits_receiver, graph.logits_receiver + 1, graph.n_senders)[:, 0]  # (B, T, C)
    if probes is not None:
        final = final + probes[-1][:, 0]
    if record is not None:
        record.resid[-1] = final
    if chunks is not None:
        chunks.extend(written.chunks)
    return model.final_norm(final if positions is None else final[:, positions])
