"""Interventions built from traces: activation patching copies activations of a clean run's
Trace into another run (gptviz.Patch), on top of knocking components out (gptviz/edits.py, which
the model reads). This module sits above the trace; the names the pages use for components and
ablations are here too, from gptviz/labels.py and gptviz/edits.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from gptviz.edits import ABLATIONS, Ablation, Interventions, LayerEdit, Replace, knock_out
from gptviz.labels import MLP, Component, check_components, component_label, parse_components

if TYPE_CHECKING:
    from gptviz.config import GPTConfig
    from gptviz.trace import Trace

__all__ = [
    "ABLATIONS", "MLP", "SITES", "Ablation", "Component", "Interventions", "LayerEdit", "Patch", "Site",
    "check_components", "component_label", "knock_out", "parse_components",
]

SITES = ("resid_pre", "resid_post", "z", "attn_out", "mlp_out")


class Site(NamedTuple):
    """One activation to copy from a clean run: kind (one of SITES), layer, and index: the
    position for resid_pre / resid_post / attn_out / mlp_out, the head for z; None: all of them."""

    kind: str
    layer: int
    index: int | None = None


@dataclass(frozen=True, eq=False)
class Patch:
    """Activation patching: copy the `sites` of a clean run (`source`, a Trace of a prompt with
    as many tokens) into the run being traced."""

    source: "Trace"
    sites: tuple[Site, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sites", tuple(Site(*s) for s in self.sites))

    def edits(self, config: "GPTConfig", n_tokens: int) -> tuple[dict[int, LayerEdit], Replace | None]:
        """({layer: edit}, embed copy) that copy the sites of the source into a run of n_tokens tokens
        (the EditSource that gptviz.edits.build reads)."""
        src = self.source
        if src.n_tokens != n_tokens:
            raise ValueError(
                f"The clean prompt has {src.n_tokens} tokens and this one {n_tokens}: activation patching needs "
                "prompts of the same token length (swap words that are one token each)."
            )
        if src.model.config != config:
            raise ValueError("The clean run comes from another model: patch runs of the same model.")
        edits: dict[int, LayerEdit] = {}
        embed = None
        for kind, layer, index in self.sites:
            if kind not in SITES:
                raise ValueError(f"Unknown patching site {kind!r}: use one of {SITES}.")
            if not 0 <= layer < config.n_layer:
                raise ValueError(f"Layer {layer} does not exist: this model has layers 0–{config.n_layer - 1}.")
            size = config.n_head if kind == "z" else n_tokens
            if index is not None and not 0 <= index < size:
                what = "head" if kind == "z" else "position"
                raise ValueError(f"{what.capitalize()} {index} does not exist: use 0–{size - 1}, or None for all.")
            mask = _one_hot(size, index)
            if kind == "resid_pre" and layer == 0:
                embed = _merge(embed, mask, src.resid_pre(0))
                continue
            if kind == "resid_pre":  # the stream entering block l is the one leaving block l - 1
                kind, layer = "resid_post", layer - 1
            edit = edits.get(layer, LayerEdit())
            source = {"z": lambda: src.z(layer), "attn_out": lambda: src.attn_module_out(layer),
                      "mlp_out": lambda: src.mlp_module_out(layer), "resid_post": lambda: src.resid_post(layer)}[kind]()
            edits[layer] = replace(edit, **{kind: _merge(getattr(edit, kind), mask, source)})
        return edits, embed


def _one_hot(n: int, index: int | None) -> Tensor:
    """(1, n) bool: True at index, or everywhere for None."""
    mask = torch.zeros(1, n, dtype=torch.bool)
    mask[0, slice(None) if index is None else index] = True
    return mask


def _merge(old: Replace | None, mask: Tensor, source: Tensor) -> Replace:
    """Two copies from the same source at one point: the union of their masks."""
    return (mask if old is None else old[0] | mask, source)
