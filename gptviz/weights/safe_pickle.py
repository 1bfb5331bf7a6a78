"""The only place gptviz opens pickle files, in two ways that cannot run code:

- a PyTorch file (``torch.save``): ``torch.load(weights_only=True)``, whose unpickler builds tensors and
  plain containers only and refuses every other global before anything is called;
- nanoGPT's ``meta.pkl`` (a character vocabulary): an unpickler that refuses every global at all, so only
  dicts, lists, strings and numbers come out.

A refused file gets a message that says why (a whole pickled model, or code) and what to do.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from gptviz.weights.convert import WeightsError

# How torch's weights-only unpickler names the global it refused, in its two spellings:
# "Unsupported global: GLOBAL llms_from_scratch.ch04.GPTModel was not an allowed global" and
# "Trying to load unsupported GLOBAL posix.system whose module posix is blocked".
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _unreadable(path: Path, why: str) -> WeightsError:
    return WeightsError(f"{path} cannot be read as a file torch.save wrote: it is truncated, or something else "
                        f"({why}).")


def _refused(path: Path, message: str) -> WeightsError:
    """Why torch's weights-only unpickler refused `path`, in words: a whole pickled object or code."""
    found = _REFUSED_GLOBAL.search(message)
    if found is None:  # no global refused: the bytes are no pickle torch.save wrote
        return _unreadable(path, "its bytes are no pickle of tensors")
    name = found.group(1)
    if name.rpartition(".")[2][:1].isupper() and "is blocked" not in message:
        return WeightsError(
            f"{path} holds a whole pickled object ({name}), not a state dict, and unpickling it would run its "
            "code: gptviz did not. Where the model was built, save its weights instead: "
            "torch.save(model.state_dict(), 'model.pth'), and open that file."
        )
    return WeightsError(
        f"{path} would run code when unpickled ({name}): gptviz refused it and ran nothing. Open only weight files "
        "you trust, saved as a state dict (torch.save(model.state_dict(), path)) or as safetensors."
    )


def load_torch_file(path: Path, mmap: bool = False) -> object:
    """What ``torch.save`` wrote to `path`: tensors in dicts, lists and plain values (on the CPU).

    mmap: map the file instead of reading it (for a look at names, shapes and dtypes). WeightsError for a
    file that is no PyTorch file or holds anything else; nothing in it is ever run."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu", mmap=mmap)
    except pickle.UnpicklingError as e:
        raise _refused(path, str(e)) from e
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file fails in many ways, all ending here
        if mmap and isinstance(e, RuntimeError) and "mmap" in str(e):  # not torch's zip format: cannot be mapped
            return load_torch_file(path, mmap=False)
        raise _unreadable(path, f"{type(e).__name__}: {e}") from e


class _PlainData(pickle.Unpickler):
    """An unpickler for data only: every global (a class, a function) is refused before it is looked up."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"{module}.{name}")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"a persistent id ({pid!r})")


def load_plain_pickle(path: Path) -> object:
    """A pickle of plain data (dicts, lists, tuples, strings, numbers), as nanoGPT's meta.pkl is.

    WeightsError for a file that names any class or function: it is refused, never run."""
    try:
        with open(path, "rb") as f:
            return _PlainData(f).load()
    except pickle.UnpicklingError as e:
        raise WeightsError(
            f"{path} holds more than plain data ({e}): gptviz refused it and ran nothing. A vocabulary file "
            "(nanoGPT's meta.pkl) holds only dicts of strings and numbers."
        ) from e
    except (OSError, EOFError, ValueError, TypeError, IndexError, KeyError) as e:
        raise WeightsError(f"{path} cannot be read as a pickle ({type(e).__name__}: {e}).") from e
