"""A state dict described by a table of names (the book's classes): our parameter -> the checkpoint tensors
that make it, concatenated on dim 0 (the book's W_query, W_key, W_value -> our fused qkv). The table becomes
convert.py's Steps, so the shapes are checked and the tensors converted as for every other source.
"""
from __future__ import annotations

from torch import Tensor

from gptviz.config import GPTConfig
from gptviz.weights.convert import Shape, Step, _part_rows, check_shapes, convert, param_shapes

# Our parameter ("blocks.{i}." for a block's) -> the checkpoint keys ("{i}": the block) concatenated to make it.
NameTable = dict[str, tuple[str, ...]]


def block_count(keys: list[str], prefix: str) -> int:
    """How many blocks a state dict holds: 1 + the largest i of its "{prefix}{i}." keys (0 if none)."""
    found = [int(rest.split(".", 1)[0]) for key in keys if (rest := key.removeprefix(prefix)) != key
             and rest.split(".", 1)[0].isdigit()]
    return 1 + max(found) if found else 0


def table_steps(config: GPTConfig, table: NameTable) -> list[Step]:
    """For each parameter of GPT(config), the checkpoint tensors the table names and the shapes they must have."""
    steps = []
    for ours, shape in param_shapes(config).items():
        pattern, i = ours, None
        if ours.startswith("blocks."):
            _, i, rest = ours.split(".", 2)
            pattern = f"blocks.{{i}}.{rest}"
        if pattern not in table:
            raise AssertionError(f"no checkpoint name for {ours}")
        keys = [key.format(i=i) for key in table[pattern]]
        module = pattern.removeprefix("blocks.{i}.").rpartition(".")[0]
        rows = _part_rows(module, shape[0], len(keys), config)
        steps.append(Step(ours, tuple((key, (r, *shape[1:])) for key, r in zip(keys, rows)), transpose=False))
    return steps


def convert_by_table(config: GPTConfig, table: NameTable, tensors: dict[str, Tensor], source: str,
                     ignored: tuple[str, ...] = ()) -> dict[str, Tensor]:
    """The checkpoint's tensors -> our float32 state dict, after checking that they are exactly the table's
    (names and shapes; keys ending in one of `ignored`, e.g. causal-mask buffers, are left out)."""
    steps = table_steps(config, table)
    kept = {key: t for key, t in tensors.items() if not key.endswith(ignored)} if ignored else dict(tensors)
    shapes: dict[str, Shape] = {key: tuple(t.shape) for key, t in kept.items()}
    check_shapes(steps, shapes, source, lambda key: key)
    return convert(steps, kept)
