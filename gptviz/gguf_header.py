"""The header of a GGUF file, read directly: its key-value metadata and how each tensor is stored.

gguf.GGUFReader parses the whole file first (a numpy view per vocabulary string: 20–30 s on
Gemma's 262k-token vocabulary); this reads the header alone, in well under a second, or in
milliseconds when the metadata values are skipped. The tokenizer reads the vocabulary from the
metadata; the weights' description reads the tensor types. GGUF layout: b"GGUF", version,
tensor count, key count, the key-value pairs, then per tensor its name, dims, type and offset.
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import gguf

# metadata value types (uint8 .. float64; 8 is a string, 9 an array) -> struct format
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9


class GGUFHeaderError(ValueError):
    """A file whose GGUF header cannot be read (not GGUF, too old, truncated, unknown value type)."""


@dataclass(frozen=True)
class GGUFHeader:
    """metadata: key -> value (strings, numbers, lists; empty when not read); tensor_types: how many
    tensors are stored in each type ("Q4_K", "F32", ...)."""

    metadata: dict
    tensor_types: dict[str, int]


def read_header(path: str | Path, metadata: bool = True) -> GGUFHeader:
    """The header of the GGUF file at `path`; metadata=False skips the values (milliseconds).
    GGUFHeaderError says what is wrong with a file that is not a readable GGUF."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _parse(data, metadata)
    except (OSError, ValueError, struct.error, IndexError) as e:  # UnicodeDecodeError is a ValueError
        raise GGUFHeaderError(f"cannot read {path} as a GGUF file: {e}") from e


def _parse(data, keep: bool) -> GGUFHeader:
    if data[:4] != b"GGUF":
        raise ValueError("it does not start with b'GGUF'")
    version, n_tensors, n_keys = struct.unpack_from("<IQQ", data, 4)
    if version < 2:
        raise ValueError(f"GGUF version {version} is too old")
    pos, meta = 24, {}
    for _ in range(n_keys):
        key, pos = _string(data, pos, True)
        (kind,) = struct.unpack_from("<I", data, pos)
        value, pos = _value(data, pos + 4, kind, keep)
        if keep:
            meta[key] = value
    counts: dict[str, int] = {}
    for _ in range(n_tensors):
        _, pos = _string(data, pos, False)
        (n_dims,) = struct.unpack_from("<I", data, pos)
        pos += 4 + 8 * n_dims  # the dims
        kind, _ = struct.unpack_from("<IQ", data, pos)  # the type, the data offset
        pos += 12
        try:
            name = gguf.GGMLQuantizationType(kind).name
        except ValueError:
            name = f"type {kind}"
        counts[name] = counts.get(name, 0) + 1
    return GGUFHeader(meta, counts)


def _string(data, pos: int, keep: bool) -> tuple[str | None, int]:
    (length,) = struct.unpack_from("<Q", data, pos)
    end = pos + 8 + length
    if end > len(data):
        raise ValueError("it is truncated (its header is cut short)")
    return (data[pos + 8 : end].decode("utf-8") if keep else None), end


def _value(data, pos: int, kind: int, keep: bool):
    """(value or None when not kept, position after it) of one metadata value of type `kind`."""
    if kind in SCALARS:
        fmt = "<" + SCALARS[kind]
        return (struct.unpack_from(fmt, data, pos)[0] if keep else None), pos + struct.calcsize(fmt)
    if kind == STRING:
        return _string(data, pos, keep)
    if kind == ARRAY:
        item_kind, count = struct.unpack_from("<IQ", data, pos)
        pos += 12
        if item_kind in SCALARS:
            fmt = f"<{count}{SCALARS[item_kind]}"
            end = pos + struct.calcsize(fmt)
            if end > len(data):
                raise ValueError("it is truncated (its header is cut short)")
            return (list(struct.unpack_from(fmt, data, pos)) if keep else None), end
        values = []
        for _ in range(count):  # a vocabulary: 262k strings for Gemma
            value, pos = _value(data, pos, item_kind, keep)
            values.append(value)
        return (values if keep else None), pos
    raise ValueError(f"unknown metadata value type {kind}")
