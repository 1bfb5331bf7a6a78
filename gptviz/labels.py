"""Names of a model's components as people write them: "L3H1" (layer 3, head 1), "L5 MLP". One
place prints them and one reads them back; the URL, the pages, the plots and the tables all use these."""
from __future__ import annotations

import re
from typing import Literal, Sequence, Union

MLP = "mlp"
Component = tuple[int, Union[int, Literal["mlp"]]]  # (layer, head) or (layer, "mlp")
COMPONENT_RE = re.compile(r"^L(\d+)\s*(?:H(\d+)|(MLP))$", re.IGNORECASE)


def head_label(layer: int, head: int) -> str:
    """(3, 1) -> "L3H1"."""
    return f"L{layer}H{head}"


def component_label(component: Component) -> str:
    """(3, 1) -> "L3H1"; (5, "mlp") -> "L5 MLP"."""
    layer, what = component
    return f"L{layer} MLP" if what == MLP else head_label(layer, what)


def parse_component(text: str) -> Component | None:
    """"L3H1" -> (3, 1), "L5 MLP" -> (5, "mlp") (any case, spaces allowed); None for anything else."""
    match = COMPONENT_RE.match(text.strip())
    if not match:
        return None
    return int(match.group(1)), MLP if match.group(3) else int(match.group(2))


def parse_head(text: str) -> tuple[int, int]:
    """"L3H1" -> (3, 1); ValueError for text that names no head."""
    component = parse_component(text)
    if component is None or component[1] == MLP:
        raise ValueError(f"{text!r} is not a head: write it as L<layer>H<head>, e.g. L3H1.")
    return component


def parse_names(text: str, n_layer: int, n_head: int, mlps: bool = True) -> tuple[list[Component], list[str]]:
    """"L1H5, L3 MLP" -> ([(1, 5), (3, "mlp")], the pieces that name no component of this model): each
    piece (separated by commas or semicolons) names exactly one component, never a fuzzy match;
    duplicates are dropped. mlps=False: MLPs count as not understood (a list of heads)."""
    found: list[Component] = []
    bad: list[str] = []
    for piece in (p.strip() for p in text.replace(";", ",").split(",")):
        if not piece:
            continue
        component = parse_component(piece)
        fits = component is not None and component[0] < n_layer and (
            mlps if component[1] == MLP else component[1] < n_head)
        if not fits:
            bad.append(piece)
        elif component not in found:
            found.append(component)
    return found, bad


def parse_components(text: str, n_layer: int, n_head: int) -> list[Component]:
    """"L3H1,L5 MLP" -> [(3, 1), (5, "mlp")]: what the URL and the page keep. Pieces that are not a
    component of this model (bad text, layer or head out of range) are dropped; duplicates too."""
    return parse_names(text, n_layer, n_head)[0]


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
