"""Circuits: which edges between heads and MLPs carry a prediction, and how much of it they carry alone.

An edge (sender, receiver) is cut when its receiver reads the sender's output from a source run (a
corrupted prompt, the mean over positions, or zero) instead of this run (gptviz/edge_run.py). Edge
scores estimate, for every edge at once, how the metric (gptviz.analysis.attribution.Metric) changes
when that edge alone is cut:

- edge attribution patching ("eap"): the first-order change, (source − clean sender output) ·
  ∂metric/∂(receiver input), from one edge run forward and one backward;
- integrated gradients ("ig"): the same gradient averaged along the straight path on which every
  edge moves together from the clean run to the source run (N steps, midpoints). The scores then add
  up to the whole change from clean to source, up to the path's discretisation.

A score is negative where cutting the edge lowers the metric: the edge carries the prediction. A
circuit keeps the N edges of largest |score| and drops those whose receiver no kept path connects
to the logits (they cannot change the output); running it (every other edge cut) measures its
faithfulness: the fraction of the clean − source gap that the circuit alone reproduces.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from gptviz.analysis.attribution import Metric, metric_value
from gptviz.analysis.composition import Composition
from gptviz.edge_run import Chunk, SenderOutputs, run_edges
from gptviz.edges import EMBED, LOGITS, EdgeGraph
from gptviz.labels import MLP
from gptviz.trace import Trace, source_outputs

Progress = Callable[[int, int], None]
Method = Literal["eap", "ig"]
METHODS = ("eap", "ig")
FRAME_COLUMNS = ("sender", "receiver", "sender_layer", "sender_head", "receiver_layer", "receiver_head", "input",
                 "score")
BATCH = 4  # edge runs per pass
CIRCUITS_KEPT = 4  # circuits an EdgeScores keeps (the latest sizes asked for)


@dataclass(frozen=True)
class Setup:
    """What every edge run of one question shares: the clean run, the metric (position made
    non-negative), the source's sender outputs (plain tensors, usable under autograd), the graph."""

    clean: Trace
    metric: Metric
    source: SenderOutputs
    graph: EdgeGraph

    @classmethod
    def of(cls, clean: Trace, metric: Metric, source: Trace | str | SenderOutputs) -> "Setup":
        """source: a corrupted run's Trace, "mean", "zero", or the senders' outputs themselves."""
        if clean.interventions is not None or clean.mlp_ins is not None:
            raise ValueError("Score edges on a plain run: this trace already has interventions.")
        model = clean.model
        outputs = source if isinstance(source, SenderOutputs) else source_outputs(model, clean.ids, source, clean)
        plain = lambda t: t.clone()  # inference tensors cannot take part in autograd
        outputs = SenderOutputs(plain(outputs.embed), tuple(map(plain, outputs.heads)), tuple(map(plain, outputs.mlps)))
        return cls(clean, metric.check(clean), outputs, EdgeGraph.of(model.config))

    def metric_of(self, mix: Tensor | float, **run) -> Tensor:
        """The metric (B,) of the edge runs with weights mix (B, n_senders, n_receivers[, T]) or one weight
        for every edge; `run`: run_edges's probes and chunks."""
        model = self.clean.model
        normed = run_edges(model, torch.tensor(self.clean.ids), self.source, mix,
                           positions=torch.tensor([self.metric.position]), **run)  # (B, 1, C)
        return self.metric.of_normed(model, normed[:, 0])

    def runs(self, cut: Tensor, progress: Progress | None = None) -> np.ndarray:
        """The metric (K,) of the runs in which the edges under cut (K, n_senders, n_receivers) bool read the source."""
        values = []
        with torch.inference_mode():
            for start in range(0, len(cut), BATCH):
                values.append(self.metric_of(cut[start:start + BATCH].float()).double().numpy())
                if progress is not None:
                    progress(min(start + BATCH, len(cut)), len(cut))
        return np.concatenate(values) if values else np.zeros(0)


# ---- scores ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class EdgeScores:
    """Every edge's score (see the module docstring) for one clean run, metric and source.

    scores (n_senders, n_receivers): NaN where no edge exists; per_position (n_senders, n_receivers, T) the
    same split by the position where the sender writes and the receiver reads (its sum over T), or None.
    clean, source: the metric of the clean run and of the run in which every edge reads the source;
    position: where the metric reads the logits. Methods taking `split` work on the edges split by
    position instead (an edge at one position: (sender, receiver, position)).
    Equal and hashed by identity: one set of scores names the question that made it (cache keys).
    """

    graph: EdgeGraph
    scores: np.ndarray
    clean: float
    source: float
    method: str
    steps: int
    per_position: np.ndarray | None = None
    position: int = -1
    _circuits: dict = field(default_factory=dict, repr=False)  # (n, split) -> circuit: a page's reruns ask again

    @property
    def gap(self) -> float:
        """clean − source: what the whole model adds over the source."""
        return self.clean - self.source

    @property
    def total(self) -> float:
        """The sum of every edge's score (integrated gradients: ≈ source − clean)."""
        return float(np.nansum(self.scores))

    @property
    def completeness_error(self) -> float:
        """|total − (source − clean)| / |source − clean|: how far the scores are from adding up to the whole
        change (integrated gradients converge to 0 as the steps grow; inf when there is no change)."""
        change = self.source - self.clean
        return abs(self.total - change) / abs(change) if change else float("inf")

    def values(self, split: bool = False) -> np.ndarray:
        """scores, or per_position when split (ValueError if these scores were not split by position)."""
        if split and self.per_position is None:
            raise ValueError("These scores are not split by position: score with by_position=True.")
        return self.per_position if split else self.scores

    def valid(self, split: bool = False) -> Tensor:
        """(n_senders, n_receivers[, T]) bool: where an edge exists."""
        valid = self.graph.valid()
        return valid[..., None].expand(self.values(True).shape) if split else valid

    def top(self, n: int, split: bool = False) -> Tensor:
        """(n_senders, n_receivers[, T]) bool: the n edges of largest |score|."""
        values = self.values(split)
        flat = np.nan_to_num(np.abs(values), nan=-1.0).ravel()
        n = max(0, min(n, int(self.valid(split).sum())))
        chosen = np.zeros(flat.shape, dtype=bool)
        chosen[np.argsort(-flat, kind="stable")[:n]] = True
        return torch.from_numpy(chosen.reshape(values.shape))

    def circuit(self, n: int, split: bool = False) -> Tensor:
        """The top n edges, less those whose receiver no kept path connects to the logits (prune)."""
        key = (n, split)
        if key not in self._circuits:
            while len(self._circuits) >= CIRCUITS_KEPT:
                self._circuits.pop(next(iter(self._circuits)), None)
            self._circuits[key] = prune(self.graph, self.top(n, split), self.position)
        return self._circuits[key]

    def frame(self, keep: Tensor | None = None, split: bool = False) -> pd.DataFrame:
        """One row per edge (those under `keep`, default all), largest |score| first: FRAME_COLUMNS, and
        when split the position."""
        mask = self.valid(split) if keep is None else keep & self.valid(split)
        index = mask.nonzero().numpy().T  # s, r[, t]
        values = self.values(split)[tuple(index)]
        order = np.argsort(-np.abs(values), kind="stable")
        s, r = index[0][order], index[1][order]
        senders, receivers = node_table(self.graph, "sender"), node_table(self.graph, "receiver")
        columns = {
            "sender": senders["label"].to_numpy()[s], "receiver": receivers["label"].to_numpy()[r],
            "sender_layer": senders["layer"].to_numpy()[s], "sender_head": senders["head"].to_numpy()[s],
            "receiver_layer": receivers["layer"].to_numpy()[r], "receiver_head": receivers["head"].to_numpy()[r],
            "input": receivers["input"].to_numpy()[r], "score": values[order],
        }
        if split:
            columns["position"] = index[2][order]
        return pd.DataFrame(columns, columns=list(FRAME_COLUMNS) + (["position"] if split else []))


def node_table(graph: EdgeGraph, role: str) -> pd.DataFrame:
    """Every sender (role "sender") or receiver ("receiver") by index: label, layer (embed −1, logits n_layer),
    head (−1 for none; a key/value head for k and v inputs) and, for receivers, the input ("q", "k", "v", "mlp",
    "logits")."""
    rows = []
    for i in range(graph.n_senders if role == "sender" else graph.n_receivers):
        node = graph.sender(i) if role == "sender" else graph.receiver(i)
        if node in (EMBED, LOGITS):
            rows.append((node, -1 if node == EMBED else graph.n_layer, -1, node))
        elif len(node) == 2:
            rows.append((graph.sender_label(node) if role == "sender" else graph.receiver_label(node), node[0],
                         -1 if node[1] == MLP else node[1], MLP))
        else:
            rows.append((graph.receiver_label(node), node[0], node[1], node[2]))
    return pd.DataFrame(rows, columns=["label", "layer", "head", "input"])


def edge_scores(clean: Trace, metric: Metric, source: Trace | str = "zero", method: Method = "eap", steps: int = 1,
                by_position: bool = False, progress: Progress | None = None) -> EdgeScores:
    """Score every edge of the clean run's graph (module docstring): "eap" from one forward and one
    backward edge run, "ig" from `steps` of them. by_position keeps the per-position split too.

    Along the path every edge has the same weight α, so every receiver of a layer reads the same
    stream; the gradient with respect to each receiver's input (probes) then gives every edge's:
    ∂metric/∂α[s, r] = (∂input_r/∂α[s, r]) · ∂metric/∂input_r, with ∂input_r/∂α[s, r] the sender's
    source − own output (through the post-attention norm's Jacobian where a block has one).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}.")
    steps = 1 if method == "eap" else int(steps)
    if steps < 1:
        raise ValueError("Integrated gradients needs at least 1 step.")
    setup = Setup.of(clean, metric, source)
    graph, T, C = setup.graph, clean.n_tokens, clean.model.config.d_model
    alphas = [0.0] if method == "eap" else [(k + 0.5) / steps for k in range(steps)]
    total = torch.zeros((graph.n_senders, graph.n_receivers) + ((T,) if by_position else ()), dtype=torch.float64)
    for done, alpha in enumerate(alphas):
        probes = torch.zeros(1, graph.n_receivers, T, C, requires_grad=True)
        chunks: list[Chunk] = []
        with torch.enable_grad():
            (grads,) = torch.autograd.grad(setup.metric_of(alpha, probes=probes, chunks=chunks).sum(), probes)
        total += _chunk_scores(graph, chunks, grads[0], alpha, by_position)
        if progress is not None:
            progress(done + 1, len(alphas) + 1)
    total /= len(alphas)
    if isinstance(source, Trace):
        every = metric_value(source, setup.metric)  # every edge reading the source is the source run
    else:
        with torch.inference_mode():
            every = float(setup.metric_of(1.0)[0])
    if progress is not None:
        progress(len(alphas) + 1, len(alphas) + 1)
    valid = graph.valid().numpy()
    summed = total.sum(-1) if by_position else total
    scores = np.where(valid, summed.numpy(), np.nan)
    per_position = np.where(valid[..., None], total.numpy(), np.nan) if by_position else None
    return EdgeScores(graph, scores, metric_value(clean, setup.metric), float(every), method, steps, per_position,
                      setup.metric.position)


CONVERGE_TOLERANCE = 0.02
CONVERGE_MAX_STEPS = 64


def converged_edge_scores(clean: Trace, metric: Metric, source: Trace | str = "zero", steps: int = 5,
                          by_position: bool = False, tolerance: float = CONVERGE_TOLERANCE,
                          max_steps: int = CONVERGE_MAX_STEPS, progress: Progress | None = None) -> EdgeScores:
    """Integrated gradients with the steps doubled (from `steps`, up to max_steps) until the scores add up to
    the whole change within `tolerance` (completeness_error); the last scores computed (their .steps says how
    many), also when max_steps is reached first."""
    while True:
        scores = edge_scores(clean, metric, source, "ig", steps, by_position, progress)
        if scores.completeness_error <= tolerance or steps >= max_steps:
            return scores
        steps = min(2 * steps, max_steps)


def _chunk_scores(graph: EdgeGraph, chunks: list[Chunk], grads: Tensor, alpha: float, by_position: bool) -> Tensor:
    """∂metric/∂α for every edge, (n_senders, n_receivers[, T]) float64, from each receiver's input gradient
    grads (n_receivers, T, C) and what the senders wrote (chunks of a run with one weight α for every edge).
    Entries of edges that do not exist are left arbitrary (callers mask them)."""
    out = torch.zeros((graph.n_senders, graph.n_receivers) + ((grads.shape[1],) if by_position else ()),
                      dtype=torch.float64)
    with torch.no_grad():
        linear = [c for c in chunks if c.norm is None]  # every receiver sees these as written: one product
        rows = torch.cat([torch.arange(c.first, c.first + c.diffs.shape[1]) for c in linear])
        out[rows] = _products(torch.cat([c.diffs[0] for c in linear]).detach(), grads, by_position)
        for chunk in chunks:
            if chunk.norm is None:
                continue
            first, n = chunk.first, chunk.diffs.shape[1]
            r0 = graph.first_reader(first)
            at = (chunk.own + alpha * chunk.diffs.sum(1))[0].detach()  # (T, C): what the receivers normed
            _, pull_back = torch.func.vjp(chunk.norm, at)  # the post-attention norm's Jacobian there
            g = torch.func.vmap(lambda cotangent: pull_back(cotangent)[0])(grads[r0:])  # (R, T, C)
            out[first:first + n, r0:] = _products(chunk.diffs[0].detach(), g, by_position)
    return out


def _products(diffs: Tensor, grads: Tensor, by_position: bool) -> Tensor:
    """Σ_c diffs[n, t, c] · grads[r, t, c] in float64: diffs (N, T, C), grads (R, T, C) -> (N, R), summed
    over t, or (N, R, T). One matrix product (einsum's plan for these shapes is ~30× slower)."""
    d, g = diffs.double(), grads.double()
    if by_position:
        return torch.bmm(d.transpose(0, 1), g.permute(1, 2, 0)).permute(1, 2, 0)  # (T, N, R) -> (N, R, T)
    return d.flatten(1) @ g.flatten(1).T


# ---- circuits and their faithfulness ---------------------------------------------------------------------
def prune(graph: EdgeGraph, keep: Tensor, position: int = -1) -> Tensor:
    """keep (n_senders, n_receivers) bool without the edges whose receiver no kept path connects to
    the logits: a head counts as connected if its output reaches the logits through kept edges (its
    q, k and v inputs all belong to it; a key/value head's to every query head that shares it).

    keep (n_senders, n_receivers, T), edges split by position: the logits count at `position` only, a
    q or MLP input at a position connects where its head's output at that position does, and a key or
    value input where the output at that position or any later one does (attention reads back)."""
    split = keep.dim() == 3
    keep = keep & (graph.valid()[..., None] if split else graph.valid())
    kept = keep if split else keep[..., None]  # (n_senders, n_receivers, T or 1)
    T = kept.shape[-1]
    reaches = torch.zeros(graph.n_senders, T, dtype=torch.bool)  # does sender s at t reach the logits?
    receiver_reaches = torch.zeros(graph.n_receivers, T, dtype=torch.bool)
    receiver_reaches[graph.logits_receiver, position if split else 0] = True
    for s in range(graph.n_senders - 1, -1, -1):  # later senders first: every receiver of s is downstream
        reaches[s] = (kept[s] & receiver_reaches).any(0)
        sender = graph.sender(s)
        if sender == EMBED:
            continue
        layer, what = sender
        if what == MLP:
            receiver_reaches[graph.mlp_receiver(layer)] = reaches[s]
        elif what == 0:  # all of this layer's heads are known now: their inputs reach where they do
            first = graph.heads_start(layer)
            for r in range(graph.attn_receivers(layer), graph.mlp_receiver(layer)):
                receiver = graph.receiver(r)
                out = reaches[[first + h for h in graph.query_heads(receiver)]].any(0)  # (T,)
                if receiver[2] != "q":  # a key or value at t is read by queries at t and after
                    out = out.flip(0).int().cummax(0).values.flip(0).bool()
                receiver_reaches[r] = out
    pruned = kept & receiver_reaches[None]
    return pruned if split else pruned[..., 0]


def circuit_runs(clean: Trace, metric: Metric, source: Trace | str, circuits: Tensor,
                 progress: Progress | None = None) -> np.ndarray:
    """The metric when only the edges of each circuit in circuits (K, n_senders, n_receivers[, T]) bool are
    kept and every other edge reads the source: (K,)."""
    setup = Setup.of(clean, metric, source)
    valid = setup.graph.valid()
    return setup.runs((valid[..., None] if circuits.dim() == 4 else valid)[None] & ~circuits, progress)


def faithfulness(value: float, scores: EdgeScores) -> float:
    """The fraction of the clean − source gap a run reproduces: (value − source) / (clean − source);
    1 = the whole model's prediction, 0 = the source's."""
    return (value - scores.source) / scores.gap if scores.gap != 0 else float("nan")


def faithfulness_curve(clean: Trace, metric: Metric, source: Trace | str, scores: EdgeScores,
                       sizes: Sequence[int], split: bool = False, progress: Progress | None = None) -> pd.DataFrame:
    """For each circuit size n: the edges kept after pruning, the metric of the circuit alone and of its
    complement (every edge but the circuit's), and their faithfulness. Columns n, kept, circuit_metric,
    complement_metric, circuit, complement. split: circuits of edges split by position."""
    sizes = sorted({int(n) for n in sizes if n >= 0})
    circuits = torch.stack([scores.circuit(n, split) for n in sizes])  # (K, n_senders, n_receivers[, T])
    both = torch.cat((circuits, scores.valid(split)[None] & ~circuits))
    values = circuit_runs(clean, metric, source, both, progress)
    K = len(sizes)
    return pd.DataFrame({
        "n": sizes, "kept": circuits.flatten(1).sum(1).numpy(), "circuit_metric": values[:K],
        "complement_metric": values[K:], "circuit": [faithfulness(v, scores) for v in values[:K]],
        "complement": [faithfulness(v, scores) for v in values[K:]],
    })


def curve_sizes(n_edges: int) -> tuple[int, ...]:
    """Circuit sizes for a faithfulness curve: 1-2-5 steps from 10 up to every edge."""
    return tuple(m * 10 ** e for e in range(1, 8) for m in (1, 2, 5) if m * 10 ** e < n_edges) + (n_edges,)


def sender_totals(frame: pd.DataFrame) -> dict[str, float]:
    """A circuit's edges (EdgeScores.frame) -> each sender's summed score over its edges: how much it
    carries (negative: it supports the prediction). Split by position, per sender and position ("L3H1 @5")."""
    sender = frame["sender"] + " @" + frame["position"].astype(str) if "position" in frame.columns else frame["sender"]
    return frame["score"].groupby(sender).sum().to_dict()


def weights_vs_prompt(clean: Trace, scores: EdgeScores, composition: Composition) -> pd.DataFrame:
    """Every head-to-head q, k and v edge with its composition score from the weights alone (the key/value
    inputs per key/value head, as edges are) and this prompt's edge score and rank by |score| (scores of the
    run `clean`): columns sender, receiver, input, composition, score, rank."""
    frame = scores.frame()
    frame["rank"] = np.arange(1, len(frame) + 1)
    heads = frame[(frame.sender_head >= 0) & frame.input.isin(["q", "k", "v"])]
    keys = ["sender_layer", "sender_head", "receiver_layer", "receiver_head", "input"]
    both = heads.merge(composition.frame(kv_heads=True), on=keys, how="inner")
    return both[["sender", "receiver", "input", "composition", "score", "rank"]].reset_index(drop=True)


def head_reads(scores: EdgeScores, composition: Composition, layer: int, head: int) -> tuple[np.ndarray, np.ndarray]:
    """What head (layer, head) can read from every head of the earlier layers, and what it reads on this prompt:
    composition (3, layer, nh) from the weights and this prompt's edge scores (3, layer, nh) into its query, key
    and value inputs (the key and value inputs of its key/value head), rows q, k, v."""
    graph = scores.graph
    if not (0 <= layer < graph.n_layer and 0 <= head < graph.n_head):
        raise ValueError(f"L{layer}H{head} is not in this model: layers 0–{graph.n_layer - 1}, "
                         f"heads 0–{graph.n_head - 1}.")
    kv = head // (graph.n_head // graph.n_kv_head)
    senders = [[graph.sender_index((l, h)) for h in range(graph.n_head)] for l in range(layer)]
    allowed = np.stack([composition.scores(part)[layer, head, :layer] for part in ("q", "k", "v")])
    used = np.stack([scores.scores[senders, graph.receiver_index((layer, head if part == "q" else kv, part))]
                     if layer else np.zeros((0, graph.n_head)) for part in ("q", "k", "v")])
    return allowed, used


# ---- a circuit as a file ------------------------------------------------------------------------------
def circuit_json(scores: EdgeScores, keep: Tensor, settings: dict) -> str:
    """The circuit (its edges and scores, each edge's names; split by position, each edge's position too: keep
    (n_senders, n_receivers, T)) and the settings that made it, as JSON."""
    split = keep.dim() == 3
    frame = scores.frame(keep, split)
    edges = [{"sender": r.sender, "receiver": r.receiver, "score": r.score} | ({"position": int(r.position)}
                                                                             if split else {})
             for r in frame.itertuples()]
    return json.dumps({"settings": settings, "method": scores.method, "steps": scores.steps,
                       "clean_metric": scores.clean, "source_metric": scores.source, "edges": edges}, indent=1)


def edge_keys(edges: Sequence[dict] | pd.DataFrame) -> set[tuple]:
    """The (sender, receiver[, position]) of each edge of a circuit file or of a frame: to compare two circuits."""
    rows = edges.to_dict("records") if isinstance(edges, pd.DataFrame) else edges
    return {(e.get("sender"), e.get("receiver")) + ((int(e["position"]),) if "position" in e else ())
            for e in rows if isinstance(e, dict)}


def split_foreign(edges: Sequence, graph: EdgeGraph, n_tokens: int) -> tuple[list[dict], list[str]]:
    """A circuit file's edges -> (those this model's graph has, the others named "L99H99 → L9H0 q [@5]"): an
    edge whose sender or receiver the graph lacks, or whose position is outside the prompt's n_tokens."""
    senders = {graph.sender_label(graph.sender(i)) for i in range(graph.n_senders)}
    receivers = {graph.receiver_label(graph.receiver(i)) for i in range(graph.n_receivers)}
    own, foreign = [], []
    for e in edges:
        if not isinstance(e, dict):
            foreign.append(repr(e))
            continue
        position = e.get("position", 0)
        if (e.get("sender") in senders and e.get("receiver") in receivers and isinstance(position, int)
                and 0 <= position < n_tokens):
            own.append(e)
        else:
            foreign.append(f"{e.get('sender')} → {e.get('receiver')}" + (f" @{position}" if "position" in e else ""))
    return own, foreign


def read_circuit_json(text: str) -> dict:
    """A circuit file back: its dict, checked to have settings and edges; ValueError saying what is wrong."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"This is not a circuit file (not JSON: {e}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict) or not isinstance(
            data.get("edges"), list):
        raise ValueError("This is not a circuit file: it needs 'settings' and 'edges'.")
    return data
