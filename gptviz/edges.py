"""The edges of a model's computation graph, and which of them a run keeps.

The residual stream is a sum of what every sender wrote: the embeddings ("embed"), each head
(layer, head) and each MLP (layer, "mlp"). A receiver reads it: each head's query, key and value
inputs apart ((layer, head, "q" | "k" | "v"); with grouped-query attention the key and value
inputs belong to the key/value head that query heads share), each MLP's input ((layer, "mlp"))
and the final norm before the logits ("logits"). An edge (sender, receiver) exists where the
sender wrote before the receiver reads: an earlier layer, or, in a sequential block, the same
layer's heads into its MLP.

Every sender and receiver has an index, in the order the model runs, so a run's choice of edges
is a (senders, receivers) matrix. Senders: 0 = embed, then per layer its nh heads and its MLP;
receivers: per layer nh queries, n_kv keys, n_kv values and the MLP, then the logits. The senders
a receiver reads are always the first `upstream(receiver)` of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Literal, Sequence, Union

import torch
from torch import Tensor

from gptviz.labels import MLP, check_components, component_label, head_label

if TYPE_CHECKING:
    from gptviz.config import GPTConfig

EMBED, LOGITS = "embed", "logits"
INPUTS = ("q", "k", "v")
Sender = Union[Literal["embed"], tuple[int, int], tuple[int, Literal["mlp"]]]
Receiver = Union[Literal["logits"], tuple[int, int, str], tuple[int, Literal["mlp"]]]
Edge = tuple[Sender, Receiver]


@dataclass(frozen=True)
class EdgeGraph:
    """Sender and receiver indices of a model of n_layer layers, n_head query heads and n_kv_head
    key/value heads; parallel: the MLP reads the block's input (it does not see its own layer's heads)."""

    n_layer: int
    n_head: int
    n_kv_head: int
    parallel: bool = False

    @classmethod
    def of(cls, config: "GPTConfig") -> "EdgeGraph":
        return cls(config.n_layer, config.n_head, config.n_kv_head, config.parallel_residual)

    # ---- sizes ------------------------------------------------------------------------------
    @property
    def per_layer_senders(self) -> int:
        return self.n_head + 1

    @property
    def per_layer_receivers(self) -> int:
        return self.n_head + 2 * self.n_kv_head + 1

    @property
    def n_senders(self) -> int:
        return 1 + self.n_layer * self.per_layer_senders

    @property
    def n_receivers(self) -> int:
        return self.n_layer * self.per_layer_receivers + 1

    @property
    def grouped(self) -> bool:
        """Grouped-query attention: key/value receivers are key/value heads, not query heads."""
        return self.n_kv_head != self.n_head

    # ---- indices ------------------------------------------------------------------------------
    def heads_start(self, layer: int) -> int:
        """The sender index of layer `layer`'s head 0 (= how many senders attention at this layer reads)."""
        return 1 + layer * self.per_layer_senders

    def attn_receivers(self, layer: int) -> int:
        """The receiver index of layer `layer`'s first query input (its nh + 2·n_kv attention inputs follow)."""
        return layer * self.per_layer_receivers

    def mlp_receiver(self, layer: int) -> int:
        return self.attn_receivers(layer) + self.n_head + 2 * self.n_kv_head

    @property
    def logits_receiver(self) -> int:
        return self.n_receivers - 1

    def sender_index(self, sender: Sender) -> int:
        if sender == EMBED:
            return 0
        layer, what = self._component(sender)
        return self.heads_start(layer) + (self.n_head if what == MLP else what)

    def receiver_index(self, receiver: Receiver) -> int:
        if receiver == LOGITS:
            return self.logits_receiver
        if isinstance(receiver, tuple) and len(receiver) == 2 and receiver[1] == MLP:
            layer, _ = self._component(receiver)
            return self.mlp_receiver(layer)
        if not (isinstance(receiver, tuple) and len(receiver) == 3 and receiver[2] in INPUTS):
            raise ValueError(f"{receiver!r} is not a receiver: give (layer, head, 'q'|'k'|'v'), (layer, 'mlp') "
                             "or 'logits'.")
        layer, head, part = receiver
        n = self.n_head if part == "q" else self.n_kv_head
        if not (isinstance(layer, int) and 0 <= layer < self.n_layer and isinstance(head, int) and 0 <= head < n):
            what = "query heads" if part == "q" else "key/value heads"
            raise ValueError(f"{receiver!r} is not in this model: layers 0–{self.n_layer - 1}, {what} 0–{n - 1}.")
        offset = {"q": 0, "k": self.n_head, "v": self.n_head + self.n_kv_head}[part]
        return self.attn_receivers(layer) + offset + head

    def _component(self, item) -> tuple[int, int | str]:
        return check_components([item], self.n_layer, self.n_head)[0]

    def sender(self, index: int) -> Sender:
        if index == 0:
            return EMBED
        layer, what = divmod(index - 1, self.per_layer_senders)
        return (layer, MLP) if what == self.n_head else (layer, what)

    def receiver(self, index: int) -> Receiver:
        if index == self.logits_receiver:
            return LOGITS
        layer, what = divmod(index, self.per_layer_receivers)
        if what == self.per_layer_receivers - 1:
            return layer, MLP
        if what < self.n_head:
            return layer, what, "q"
        what -= self.n_head
        return (layer, what, "k") if what < self.n_kv_head else (layer, what - self.n_kv_head, "v")

    def upstream(self, receiver: int) -> int:
        """How many senders receiver `receiver` (an index) reads: the first upstream(receiver) ones."""
        if receiver == self.logits_receiver:
            return self.n_senders
        layer, what = divmod(receiver, self.per_layer_receivers)
        if what == self.per_layer_receivers - 1 and not self.parallel:
            return self.heads_start(layer) + self.n_head  # the MLP reads its own layer's heads too
        return self.heads_start(layer)

    def first_reader(self, sender: int) -> int:
        """The first receiver index that can read `sender` (an index; every later receiver may too): the
        embeddings' the first; a head's its own layer's MLP (or, in a parallel block, the next layer); an
        MLP's the next layer's inputs."""
        if sender == 0:
            return 0
        layer, what = divmod(sender - 1, self.per_layer_senders)
        if what == self.n_head or self.parallel:
            return self.attn_receivers(layer + 1)
        return self.mlp_receiver(layer)

    def valid(self) -> Tensor:
        """(n_senders, n_receivers) bool: True where the edge exists."""
        reads = torch.tensor([self.upstream(r) for r in range(self.n_receivers)])
        return torch.arange(self.n_senders)[:, None] < reads[None, :]

    @property
    def n_edges(self) -> int:
        return int(self.valid().sum())

    # ---- names --------------------------------------------------------------------------------
    def sender_label(self, sender: Sender) -> str:
        """"embed", "L3H1", "L3 MLP"."""
        return EMBED if sender == EMBED else component_label(sender)

    def receiver_label(self, receiver: Receiver) -> str:
        """"L5H2 q"; "L5H2 k" (or "L5KV0 k" for a key/value head under grouped-query attention); "L6 MLP"; "logits"."""
        if receiver == LOGITS:
            return LOGITS
        if len(receiver) == 2:
            return component_label(receiver)
        layer, head, part = receiver
        name = f"L{layer}KV{head}" if part != "q" and self.grouped else head_label(layer, head)
        return f"{name} {part}"

    def query_heads(self, receiver: Receiver) -> list[int]:
        """The query heads a receiver's input reaches: a q input its own head, a k/v input every query head
        of its key/value group; [] for an MLP or the logits."""
        if receiver == LOGITS or len(receiver) == 2:
            return []
        _, head, part = receiver
        if part == "q":
            return [head]
        group = self.n_head // self.n_kv_head
        return list(range(head * group, (head + 1) * group))

    def check(self, edges: Iterable[Edge]) -> list[tuple[int, int]]:
        """(sender index, receiver index) of each edge; ValueError naming an edge that does not exist."""
        out = []
        for edge in edges:
            try:
                sender, receiver = edge
            except (TypeError, ValueError):
                raise ValueError(f"{edge!r} is not an edge: give (sender, receiver).") from None
            s, r = self.sender_index(sender), self.receiver_index(receiver)
            if s >= self.upstream(r):
                raise ValueError(f"There is no edge {self.sender_label(sender)} → {self.receiver_label(receiver)}: "
                                 "a receiver reads only what was written before it.")
            out.append((s, r))
        return out


@dataclass(frozen=True)
class Edges:
    """Which edges of a run read the source run instead of this one: give `keep` (the circuit: every
    other edge reads the source) or `drop` (only these read the source), each a list of (sender, receiver)."""

    keep: Sequence[Edge] | None = None
    drop: Sequence[Edge] | None = None

    def __post_init__(self) -> None:
        if (self.keep is None) == (self.drop is None):
            raise ValueError("Give Edges either keep=[...] (the circuit) or drop=[...] (the edges cut), not both.")

    def replaced(self, graph: EdgeGraph) -> Tensor:
        """(n_senders, n_receivers) bool: True where the receiver reads the sender's source value."""
        chosen = torch.zeros(graph.n_senders, graph.n_receivers, dtype=torch.bool)
        for s, r in graph.check(self.keep if self.keep is not None else self.drop):
            chosen[s, r] = True
        return graph.valid() & ~chosen if self.keep is not None else chosen
