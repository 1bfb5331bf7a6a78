"""A Hugging Face model directory (``config.json`` + ``model.safetensors`` or shards) -> weights.

Any architecture in gptviz/architectures.py. Weights are read from safetensors only:
nothing is ever unpickled.
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open
from torch import Tensor

from gptviz.architectures import architecture, config_from_hf
from gptviz.config import GPTConfig
from gptviz.weights.convert import Shape, WeightsError, check_shapes, convert, plan


def _read_config(directory: Path) -> GPTConfig:
    path = directory / "config.json"
    if not path.is_file():
        raise WeightsError(f"{path} not found: a model directory needs config.json next to model.safetensors.")
    try:
        return config_from_hf(json.loads(path.read_text(encoding="utf-8")), name=directory.name)
    except (ValueError, KeyError, TypeError) as e:
        raise WeightsError(f"{path}: cannot read the model config ({e!r}); fix or re-download config.json.") from e


def _safetensors_files(directory: Path) -> list[Path]:
    """model.safetensors, or the shards named by model.safetensors.index.json."""
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise WeightsError(f"{index} is not a valid shard index ({e!r}): re-download the model.") from e
        files = [directory / name for name in shards]
        for file in files:
            if not file.is_file():
                raise WeightsError(f"{file} (listed in {index.name}) is missing: re-download the model.")
        return files
    pickles = sorted(p.name for ext in ("*.bin", "*.pt", "*.pth", "*.ckpt") for p in directory.glob(ext))
    found = f" (found only {', '.join(pickles)}, which gptviz never unpickles)" if pickles else ""
    raise WeightsError(
        f"{directory} has no model.safetensors{found}: save the model with safetensors "
        "(transformers' save_pretrained does by default) or download its safetensors version."
    )


def _corrupt(file: Path, error: Exception) -> WeightsError:
    return WeightsError(f"{file} is truncated or corrupted ({error}): delete it and download it again.")


def load_hf_dir(path: str | Path) -> tuple[GPTConfig, dict[str, Tensor]]:
    """A Hugging Face model directory -> (config, our float32 state dict)."""
    directory = Path(path)
    if not directory.is_dir():
        raise WeightsError(f"{directory} is not a directory: pass a Hugging Face model directory.")
    config = _read_config(directory)
    steps = plan(config)
    files = _safetensors_files(directory)
    origin: dict[str, tuple[Path, str]] = {}  # plan key -> (file, key as spelled in the file)
    shapes: dict[str, Shape] = {}
    for file in files:
        try:
            with safe_open(file, framework="pt") as f:
                for key in f.keys():
                    if (ours := architecture(config.arch).checkpoint_key(key, config)) is not None:
                        origin[ours] = (file, key)
                        shapes[ours] = tuple(f.get_slice(key).get_shape())
        except (SafetensorError, OSError) as e:
            raise _corrupt(file, e) from e
    source = files[0] if len(files) == 1 else directory
    check_shapes(steps, shapes, source, lambda key: origin[key][1] if key in origin else key)
    hf: dict[str, Tensor] = {}
    for file in files:
        try:
            with safe_open(file, framework="pt") as f:
                for ours, (where, key) in origin.items():
                    if where == file:
                        hf[ours] = f.get_tensor(key)
        except (SafetensorError, OSError) as e:
            raise _corrupt(file, e) from e
    return config, convert(steps, hf)


def stored_dtypes(path: str | Path) -> dict[str, int]:
    """How many tensors of a model directory's safetensors are stored in each dtype ("F32", "BF16", ...),
    read from the file headers only."""
    counts: dict[str, int] = {}
    for file in _safetensors_files(Path(path)):
        try:
            with safe_open(file, framework="pt") as f:
                for key in f.keys():
                    dtype = f.get_slice(key).get_dtype()
                    counts[dtype] = counts.get(dtype, 0) + 1
        except (SafetensorError, OSError) as e:
            raise _corrupt(file, e) from e
    return counts
