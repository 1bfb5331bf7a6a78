"""Interventions: change one forward pass (knock heads or MLPs out, copy activations from another run).

An intervention is a value passed into the forward pass, like a trace's record or a KV cache;
nothing is ever stored on the model, so sessions that share one model stay independent.
The forward reads it at four points of each block (TransformerLens's hook names in brackets):

    z        the context vectors (B, nh, T, hs) after attention, before out_proj   (hook_z)
    attn_out attention's output (B, T, C) after out_proj, before any post-attention norm
    mlp_out  the MLP's output (B, T, C) before any post-MLP norm                    (hook_mlp_out)
    resid    the residual stream (B, T, C) entering block 0 and leaving each block  (hook_resid_post)

A LayerEdit says what changes in one block, for a whole batch at once: its masks have a
leading batch dimension B (1: the same for every copy), so an analysis can run n_head copies
of a prompt, each with another head knocked out, in one pass.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, NamedTuple, Sequence, Union

import torch
from torch import Tensor

if TYPE_CHECKING:
    from gptviz.config import GPTConfig
    from gptviz.trace import Trace

Ablation = Literal["zero", "mean"]
ABLATIONS = ("zero", "mean")
MLP = "mlp"
Component = tuple[int, Union[int, Literal["mlp"]]]  # (layer, head) or (layer, "mlp")
SITES = ("resid_pre", "resid_post", "z", "attn_out", "mlp_out")

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

    def edit_z(self, z: Tensor) -> Tensor:
        """z (B, nh, T, hs) -> the edited context vectors, same shape."""
        if self.heads is not None:
            z = _ablate(z, self.heads, self.ablation, over=2)
        if self.z is not None:
            z = _replace(z, *self.z)
        return z if self.z_add is None else z + self.z_add

    def edit_attn_out(self, a: Tensor) -> Tensor:
        """a (B, T, C), attention's output before any post-attention norm."""
        return a if self.attn_out is None else _replace(a, *self.attn_out)

    def edit_mlp_out(self, m: Tensor) -> Tensor:
        """m (B, T, C), the MLP's output before any post-MLP norm."""
        if self.mlp is not None:
            m = _ablate(m, self.mlp, self.ablation, over=1)
        if self.mlp_out is not None:
            m = _replace(m, *self.mlp_out)
        return m if self.mlp_add is None else m + self.mlp_add

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


# ---- components: "L3H1", "L5 MLP" ------------------------------------------------------------
def component_label(component: Component) -> str:
    """(3, 1) -> "L3H1"; (5, "mlp") -> "L5 MLP"."""
    layer, what = component
    return f"L{layer} MLP" if what == MLP else f"L{layer}H{what}"


COMPONENT_RE = re.compile(r"^L(\d+)\s*(?:H(\d+)|(MLP))$", re.IGNORECASE)


def parse_components(text: str, n_layer: int, n_head: int) -> list[Component]:
    """"L3H1,L5 MLP" -> [(3, 1), (5, "mlp")]: what the URL and the page keep. Pieces that are not a
    component of this model (bad text, layer or head out of range) are dropped; duplicates too."""
    found: list[Component] = []
    for piece in text.split(","):
        match = COMPONENT_RE.match(piece.strip())
        if not match:
            continue
        layer = int(match.group(1))
        what: int | str = MLP if match.group(3) else int(match.group(2))
        if layer < n_layer and (what == MLP or what < n_head) and (layer, what) not in found:
            found.append((layer, what))
    return found


def check_components(components: Sequence[Component], n_layer: int, n_head: int) -> list[Component]:
    """The components as (layer, head | "mlp") tuples; ValueError naming a bad one and the valid ranges."""
    out = []
    for item in components:
        try:
            layer, what = item
        except (TypeError, ValueError):
            raise ValueError(f"{item!r} is not a component: give (layer, head) or (layer, 'mlp').") from None
        ok_layer = isinstance(layer, int) and 0 <= layer < n_layer
        ok_what = what == MLP or (isinstance(what, int) and 0 <= what < n_head)
        if not (ok_layer and ok_what):
            raise ValueError(f"{item!r} is not in this model: layers 0–{n_layer - 1}, heads 0–{n_head - 1} or 'mlp'.")
        out.append((layer, what))
    return out


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


def _one_hot(n: int, index: int | None) -> Tensor:
    """(1, n) bool: True at index, or everywhere for None."""
    mask = torch.zeros(1, n, dtype=torch.bool)
    mask[0, slice(None) if index is None else index] = True
    return mask


def _merge(old: Replace | None, mask: Tensor, source: Tensor) -> Replace:
    """Two copies from the same source at one point: the union of their masks."""
    return (mask if old is None else old[0] | mask, source)


def patching(config: "GPTConfig", patch: Patch, n_tokens: int) -> tuple[dict[int, LayerEdit], Replace | None]:
    """({layer: edit}, embed copy) that copy patch.sites of patch.source into a run of n_tokens tokens."""
    src = patch.source
    if src.n_tokens != n_tokens:
        raise ValueError(
            f"The clean prompt has {src.n_tokens} tokens and this one {n_tokens}: activation patching needs "
            "prompts of the same token length (swap words that are one token each)."
        )
    if src.model.config != config:
        raise ValueError("The clean run comes from another model: patch runs of the same model.")
    edits: dict[int, LayerEdit] = {}
    embed = None
    for kind, layer, index in patch.sites:
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


def build(config: "GPTConfig", n_tokens: int, ablate: Sequence[Component] = (), ablation: Ablation = "zero",
          patch: Patch | None = None) -> Interventions | None:
    """The Interventions of one run (batch 1): components knocked out, then the patch's copies; None if nothing."""
    edits = knock_out(config, ablate, ablation)
    embed = None
    if patch is not None:
        patched, embed = patching(config, patch, n_tokens)
        for layer, edit in patched.items():
            base = edits.get(layer, LayerEdit(ablation=ablation))
            edits[layer] = replace(base, z=edit.z, attn_out=edit.attn_out, mlp_out=edit.mlp_out,
                                   resid_post=edit.resid_post)
    if not edits and embed is None:
        return None
    return Interventions(Interventions.at(config.n_layer, edits).layers, embed)
