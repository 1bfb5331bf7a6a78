"""Checkpoint tensors (Hugging Face names) -> the state dict of our GPT, checked shape by shape.

Our parameter names (nn.Linear convention: a weight is (out, in)) are the model's own
(``GPT(config).state_dict()``); e.g. blocks.{i}.attn.qkv.weight ((nh + 2 n_kv) hs, C) holds
the q rows, then k, then v; blocks.{i}.mlp.fc_in.weight of a gated MLP (2 d_mlp, C) is
[gate; up]. Which checkpoint tensors make each one is the architecture's name table.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from gptviz.architectures import architecture
from gptviz.config import GPTConfig
from gptviz.model import GPT

Progress = Callable[[int, int], None]  # progress(done, total)
Shape = tuple[int, ...]


class WeightsError(ValueError):
    """A weight file that cannot be used; the message names the file and says what to do."""


def param_shapes(config: GPTConfig) -> dict[str, Shape]:
    """Every parameter of ``GPT(config)`` and its shape (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = GPT(config)
    return {key: tuple(t.shape) for key, t in model.state_dict().items()}


@dataclass(frozen=True)
class Step:
    """One of our tensors <- these checkpoint tensors (key, shape), concatenated on dim 0,
    then transposed when the checkpoint stores (in, out), then its rows put in our order by
    `rearrange` (a fused projection laid out differently from ours), if given."""

    ours: str
    parts: tuple[tuple[str, Shape], ...]
    transpose: bool
    rearrange: Callable[[Tensor], Tensor] | None = None


def _part_rows(module: str, rows: int, n_parts: int, config: GPTConfig) -> list[int]:
    """How dim 0 of a concatenated tensor splits into its checkpoint parts."""
    if module.endswith("attn.qkv") and n_parts == 3:
        return [config.n_head * config.d_head, config.n_kv_head * config.d_head, config.n_kv_head * config.d_head]
    assert rows % n_parts == 0, f"{module}: {rows} rows do not split into {n_parts} parts"
    return [rows // n_parts] * n_parts


def plan(config: GPTConfig) -> list[Step]:
    """For each of our parameters, the checkpoint tensors that make it (in the HF spelling)."""
    arch = architecture(config.arch)
    steps = []
    for ours, shape in param_shapes(config).items():
        module, _, suffix = ours.rpartition(".")
        prefix, local = "", module
        if module.startswith("blocks."):
            _, i, local = module.split(".", 2)
            prefix = arch.block_prefix.format(i=i)
        if local not in arch.names:
            raise AssertionError(f"{config.arch}: no checkpoint name for {ours}")
        hf_modules = arch.names[local]
        transpose = local in arch.transposed
        rows = _part_rows(local, shape[0], len(hf_modules), config)
        parts = tuple(
            (f"{prefix}{m}.{suffix}", tuple(reversed((r, *shape[1:]))) if transpose else (r, *shape[1:]))
            for m, r in zip(hf_modules, rows)
        )
        rearrange = arch.rearrange.get(local)
        steps.append(Step(ours, parts, transpose, None if rearrange is None else partial(rearrange, config=config)))
    return steps


def check_shapes(steps: list[Step], found: dict[str, Shape], source: Path, label: Callable[[str], str]) -> None:
    """Raise WeightsError unless ``found`` (checkpoint key -> shape) is exactly the plan's tensors."""
    expected = {key: shape for step in steps for key, shape in step.parts}
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    wrong = [key for key in expected if key in found and tuple(found[key]) != expected[key]]
    advice = "the weights do not match the model's config: re-download the model or fix its config"
    if wrong:
        key = wrong[0]
        more = f" (and {len(wrong) - 1} more tensors)" if len(wrong) > 1 else ""
        raise WeightsError(
            f"{source}: {label(key)} has shape {tuple(found[key])}, but the config implies "
            f"{expected[key]}{more}; {advice}."
        )
    for kind, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            names = ", ".join(label(k) for k in keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
            raise WeightsError(f"{source}: {kind} tensors {names}; {advice}.")


def convert(steps: list[Step], hf: dict[str, Tensor]) -> dict[str, Tensor]:
    """Checked checkpoint tensors -> our float32 state dict (tensors are popped from ``hf``)."""
    sd = {}
    for step in steps:
        parts = [hf.pop(key) for key, _ in step.parts]
        w = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
        w = w.t() if step.transpose else w
        w = step.rearrange(w) if step.rearrange is not None else w
        sd[step.ours] = w.to(torch.float32).contiguous()
    return sd
