"""A weight file a user saved (``torch.save(model.state_dict(), "model.pth")``, nanoGPT's ckpt.pt, or the same
tensors as safetensors) -> (config, our state dict, tokenizer).

The file is read as data only (gptviz/weights/safe_pickle.py), a checkpoint dict is opened to its state dict,
and the first format in FORMATS that recognises the names converts it; keyword options (file_options.py)
supply what the tensors cannot say. Adding a format is one entry in FORMATS.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from gptviz.config import GPTConfig
from gptviz.tokenizer import Tokenizer
from gptviz.weights.book import from_book_state_dict, is_book_gpt
from gptviz.weights.book_llama import LLAMA3, QWEN3, from_book_llama3, from_book_qwen3
from gptviz.weights.convert import WeightsError
from gptviz.weights.file_options import OPTION_NAMES, check_option_names
from gptviz.weights.nanogpt import from_nanogpt, is_nanogpt
from gptviz.weights.safe_pickle import load_torch_file
from gptviz.weights.user_tokenizer import user_file_tokenizer

USER_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
# Where a checkpoint dict keeps the model's state dict: nanoGPT's train.py, the book's ch. 5, others.
STATE_DICT_ENTRIES = ("model", "model_state_dict", "state_dict")
# Prefixes on every key of a wrapped model's state dict: torch.compile's, and DistributedDataParallel's.
WRAPPER_PREFIXES = ("_orig_mod.", "module.")


@dataclass(frozen=True)
class Checkpoint:
    """A file's state dict, and what else it holds beside it (nanoGPT: model_args, iter_num, config...)."""

    state_dict: dict[str, Tensor]
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class FileFormat:
    """One kind of state dict: its name in messages, how its keys are recognised, its conversion
    ``convert(checkpoint, source, **options) -> (config, state dict)``, and the options that conversion reads."""

    name: str
    recognises: Callable[[dict[str, Tensor]], bool]
    convert: Callable[..., tuple[GPTConfig, dict[str, Tensor]]]
    options: tuple[str, ...]


FORMATS = (
    FileFormat("the book's GPTModel", is_book_gpt,
               lambda ckpt, source, **o: from_book_state_dict(ckpt.state_dict, source=source, **o),
               ("n_heads", "context_length")),
    FileFormat("the book's Llama3Model", LLAMA3.recognises,
               lambda ckpt, source, **o: from_book_llama3(ckpt.state_dict, source=source, **o),
               ("n_heads", "n_kv_heads", "context_length", "rope_base", "rope_freq")),
    FileFormat("the book's Qwen3Model", QWEN3.recognises,
               lambda ckpt, source, **o: from_book_qwen3(ckpt.state_dict, source=source, **o),
               ("n_heads", "n_kv_heads", "head_dim", "context_length", "rope_base")),
    FileFormat("nanoGPT's GPT", is_nanogpt,
               lambda ckpt, source, **o: from_nanogpt(ckpt.state_dict, ckpt.meta.get("model_args"), source=source,
                                                      **o),
               ("n_heads", "context_length")),
)


def is_user_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in USER_FILE_SUFFIXES


def _tensors_only(d: object) -> bool:
    return isinstance(d, dict) and bool(d) and all(isinstance(v, Tensor) for v in d.values())


def _unwrapped(obj: object, path: Path) -> Checkpoint:
    """A loaded file -> its state dict (keys without torch.compile's or DDP's prefix) and the rest."""
    if _tensors_only(obj):
        sd, meta = dict(obj), {}
    else:
        entry = next((key for key in STATE_DICT_ENTRIES if isinstance(obj, dict) and _tensors_only(obj.get(key))),
                     None)
        if entry is None:
            what = f"a dict of {', '.join(map(str, list(obj)[:6]))}" if isinstance(obj, dict) else type(obj).__name__
            raise WeightsError(f"{path} holds {what}, not a state dict: save torch.save(model.state_dict(), path), or "
                               f"a checkpoint dict with the state dict under one of {', '.join(STATE_DICT_ENTRIES)}.")
        sd, meta = dict(obj[entry]), {k: v for k, v in obj.items() if k != entry}
    for prefix in WRAPPER_PREFIXES:
        if all(key.startswith(prefix) for key in sd):
            sd = {key.removeprefix(prefix): t for key, t in sd.items()}
    return Checkpoint(sd, meta)


def read_checkpoint(path: Path, mmap: bool = False) -> Checkpoint:
    """The file's state dict and what it holds beside it, read as data only (mmap: mapped, for a look)."""
    if path.suffix.lower() == ".safetensors":
        try:
            return _unwrapped(load_file(path), path)
        except (SafetensorError, OSError) as e:
            raise WeightsError(f"{path} is truncated or not a safetensors file ({e}).") from e
    return _unwrapped(load_torch_file(path, mmap=mmap), path)


def file_format(ckpt: Checkpoint, path: Path) -> FileFormat:
    """The first format that recognises the state dict's names (WeightsError listing them if none does)."""
    if (found := next((f for f in FORMATS if f.recognises(ckpt.state_dict)), None)) is not None:
        return found
    keys = ", ".join(list(ckpt.state_dict)[:5])
    raise WeightsError(
        f"{path} is a state dict gptviz does not know (its first keys: {keys}): it opens those of "
        f"{', '.join(f.name for f in FORMATS)}. A Hugging Face model opens as its folder (config.json beside "
        "model.safetensors)."
    )


def load_user_file(path: Path, **options) -> tuple[GPTConfig, dict[str, Tensor], Tokenizer]:
    """A user's weight file -> (config, our float32 state dict, tokenizer); `options` as file_options.py
    declares them (a None value is left out, except rope_freq, where None means no scaling)."""
    check_option_names(options)
    options = {k: v for k, v in options.items() if v is not None or k == "rope_freq"}
    ckpt = read_checkpoint(path)
    fmt = file_format(ckpt, path)
    weight_options = {k: v for k, v in options.items() if k != "tokenizer"}
    if extra := [k for k in OPTION_NAMES if k in weight_options and k not in fmt.options]:
        raise ValueError(f"{', '.join(extra)} {'does' if len(extra) == 1 else 'do'} not apply to {fmt.name} "
                         f"({path.name}): leave {'it' if len(extra) == 1 else 'them'} out.")
    config, sd = fmt.convert(ckpt, str(path), **weight_options)
    tokenizer = user_file_tokenizer(options.get("tokenizer"), config.vocab_size, path, ckpt.meta)
    return config, sd, tokenizer


def describe_user_file(path: Path) -> str:
    """What the file is, in words: its format, name, tensor count and dtypes (the file is mapped, not read)."""
    ckpt = read_checkpoint(path, mmap=True)
    fmt = file_format(ckpt, path)
    counts: dict[str, int] = {}
    for t in ckpt.state_dict.values():
        name = str(t.dtype).removeprefix("torch.")
        counts[name] = counts.get(name, 0) + 1
    dtypes = ", ".join(f"{n} {dtype}" if len(counts) > 1 else dtype for dtype, n in counts.items())
    kind = "checkpoint" if ckpt.meta else "state dict"
    step = f", saved at iteration {ckpt.meta['iter_num']}" if isinstance(ckpt.meta.get("iter_num"), int) else ""
    used = "" if set(counts) == {"float32"} else "; used as float32"
    return f"{fmt.name} {kind} {path.name} ({len(ckpt.state_dict)} tensors{step}), {dtypes}{used}"
