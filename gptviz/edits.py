"""Edits of one forward pass: what the model reads to knock heads or MLPs out or to copy activations in.

An edit is a value passed into the forward pass, like a trace's record or a KV cache; nothing is
ever stored on the model, so sessions that share one model stay independent. The forward reads
it at four points of each block (TransformerLens's hook names in brackets):

    z        the context vectors (B, nh, T, hs) after attention, before out_proj   (hook_z)
    attn_out attention's output (B, T, C) after out_proj, before any post-attention norm
    mlp_out  the MLP's output (B, T, C) before any post-MLP norm                    (hook_mlp_out)
    resid    the residual stream (B, T, C) entering block 0 and leaving each block  (hook_resid_post)

A LayerEdit says what changes in one block, for a whole batch at once: its masks have a
leading batch dimension B (1: the same for every copy), so an analysis can run n_head copies
of a prompt, each with another head knocked out, in one pass. knock_out builds the edits of
components knocked out; what copies activations from another run (activation patching) is
built from traces, a floor up, in gptviz/interventions.py, and handed to `build` as an EditSource.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, Protocol, Sequence

import torch
from torch import Tensor

from gptviz.labels import MLP, Component, check_components

if TYPE_CHECKING:
    from gptviz.config import GPTConfig

Ablation = Literal["zero", "mean"]
ABLATIONS = ("zero", "mean")

Replace = tuple[Tensor, Tensor]  # (mask (B, n) bool, source (n, ...)): where mask, take source


def _replace(x: Tensor, mask: Tensor, source: Tensor) -> Tensor:
    """x (B, n, ...) with x[b, i] = source[i] wherever mask[b, i] (mask (B or 1, n))."""
    mask = mask.reshape(mask.shape + (1,) * (x.dim() - mask.dim()))
    return torch.where(mask, source.to(x.dtype), x)


def _ablate(x: Tensor, mask: Tensor, ablation: Ablation, over: int) -> Tensor:
    """x with the entries under mask replaced by 0 ("zero") or by their mean over dim `over` ("mean")."""
    mask = mask.reshape(mask.shape + (1,) * (x.dim() - mask.dim()))
    fill = x.mean(dim=over, keepdim=True) if ablation == "mean" else x.new_zeros(())
    return torch.where(mask, fill, x)


@dataclass(frozen=True, eq=False)
class LayerEdit:
    """What one block changes. Every mask has a leading batch dimension B (or 1 for every copy).

    heads (B, nh) bool: these heads' z ablated (`ablation`: zero, or the mean over positions
    of this run); mlp (B,) bool: the MLP output ablated. z / attn_out / mlp_out / resid_post:
    (mask, source) pairs copying source where mask is True: z mask (B, nh), source (nh, T, hs);
    the others mask (B, T), source (T, C). z_add (B, nh, T, hs) and mlp_add (B, T, C) are added
    (zeros that require grad: the gradient of a metric with respect to z or the MLP output).
    Ablations come first, then copies, then additions.
    """

    ablation: Ablation = "zero"
    heads: Tensor | None = None
    mlp: Tensor | None = None
    z: Replace | None = None
    attn_out: Replace | None = None
    mlp_out: Replace | None = None
    resid_post: Replace | None = None
    z_add: Tensor | None = None
    mlp_add: Tensor | None = None

    def _edit(self, x: Tensor, knocked: Tensor | None, over: int, replace: Replace | None,
              add: Tensor | None) -> Tensor:
        """The three edits of an output, in order: knock out (ablate along `over`), replace, add."""
        if knocked is not None:
            x = _ablate(x, knocked, self.ablation, over=over)
        if replace is not None:
            x = _replace(x, *replace)
        return x if add is None else x + add

    def edit_z(self, z: Tensor) -> Tensor:
        """z (B, nh, T, hs) -> the edited context vectors, same shape."""
        return self._edit(z, self.heads, 2, self.z, self.z_add)

    def edit_attn_out(self, a: Tensor) -> Tensor:
        """a (B, T, C), attention's output before any post-attention norm."""
        return a if self.attn_out is None else _replace(a, *self.attn_out)

    def edit_mlp_out(self, m: Tensor) -> Tensor:
        """m (B, T, C), the MLP's output before any post-MLP norm."""
        return self._edit(m, self.mlp, 1, self.mlp_out, self.mlp_add)

    def edit_resid_post(self, x: Tensor) -> Tensor:
        """x (B, T, C), the residual stream leaving the block."""
        return x if self.resid_post is None else _replace(x, *self.resid_post)

    def after(self, n_before: int) -> "LayerEdit":
        """The same edit for copies that follow n_before other copies in the batch (left alone)."""
        if n_before == 0:
            return self

        def pad(mask: Tensor) -> Tensor:
            return torch.cat((mask.new_zeros((n_before,) + mask.shape[1:]), mask))

        changes: dict = {name: pad(getattr(self, name)) for name in ("heads", "mlp") if getattr(self, name) is not None}
        for name in ("z", "attn_out", "mlp_out", "resid_post"):
            if (pair := getattr(self, name)) is not None:
                changes[name] = (pad(pair[0]), pair[1])
        if self.z_add is not None or self.mlp_add is not None:
            raise ValueError("Additions cannot be padded: give them for the whole batch.")
        return replace(self, **changes)


@dataclass(frozen=True, eq=False)
class Interventions:
    """Edits for one forward pass: one LayerEdit (or None) per layer, and an optional copy into
    the residual stream entering block 0 (embed: mask (B, T), source (T, C))."""

    layers: tuple[LayerEdit | None, ...]
    embed: Replace | None = None

    def layer(self, i: int) -> LayerEdit | None:
        return self.layers[i]

    @classmethod
    def at(cls, n_layer: int, edits: dict[int, LayerEdit]) -> "Interventions":
        """Edits for some layers ({layer: edit}), nothing elsewhere."""
        return cls(tuple(edits.get(i) for i in range(n_layer)))


class EditSource(Protocol):
    """Something that turns into edits of a run of n_tokens tokens (gptviz.Patch does):
    ({layer: edit}, copy into the residual stream entering block 0 or None)."""

    def edits(self, config: "GPTConfig", n_tokens: int) -> tuple[dict[int, LayerEdit], Replace | None]: ...


# ---- building the edits of one run -----------------------------------------------------------
def knock_out(config: "GPTConfig", components: Sequence[Component],
              ablation: Ablation = "zero") -> dict[int, LayerEdit]:
    """{layer: edit} ablating the components in one run (batch 1)."""
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {ABLATIONS}, not {ablation!r}.")
    edits: dict[int, LayerEdit] = {}
    for layer, what in check_components(components, config.n_layer, config.n_head):
        edit = edits.get(layer, LayerEdit(ablation=ablation))
        if what == MLP:
            edit = replace(edit, mlp=torch.ones(1, dtype=torch.bool))
        else:
            heads = edit.heads if edit.heads is not None else torch.zeros(1, config.n_head, dtype=torch.bool)
            heads = heads.clone()
            heads[0, what] = True
            edit = replace(edit, heads=heads)
        edits[layer] = edit
    return edits


def build(config: "GPTConfig", n_tokens: int, ablate: Sequence[Component] = (), ablation: Ablation = "zero",
          patch: EditSource | None = None) -> Interventions | None:
    """The Interventions of one run (batch 1): components knocked out, then the patch's copies
    (patch.edits, e.g. a gptviz.Patch); None if nothing."""
    edits = knock_out(config, ablate, ablation)
    embed = None
    if patch is not None:
        patched, embed = patch.edits(config, n_tokens)
        for layer, edit in patched.items():
            base = edits.get(layer, LayerEdit(ablation=ablation))
            edits[layer] = replace(base, z=edit.z, attn_out=edit.attn_out, mlp_out=edit.mlp_out,
                                   resid_post=edit.resid_post)
    if not edits and embed is None:
        return None
    return Interventions(Interventions.at(config.n_layer, edits).layers, embed)
