"""llama.cpp GGUF files -> weights: dequantized once with ``gguf``, then cached as safetensors."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import gguf
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from gptviz.architectures import config_from_hf
from gptviz.cache import default_cache_dir
from gptviz.config import GPTConfig
from gptviz.gguf_header import GGUFHeaderError, read_header
from gptviz.weights.convert import Progress, WeightsError, check_shapes, convert, param_shapes, plan

logger = logging.getLogger(__name__)


GGUF_CACHE_FORMAT = "2"  # bump when the conversion changes: old cache entries are then ignored
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_LLAMA_BLOCK = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GEMMA3_BLOCK = _LLAMA_BLOCK | {
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}


@dataclass(frozen=True)
class GgufArchitecture:
    """How llama.cpp stored one architecture: block tensor names (GGUF -> Hugging Face), whether
    q/k rows were permuted for its rotary, what was added to every norm weight, and the
    metadata -> config.json fields that differ from Llama's."""

    block_names: dict[str, str]
    permuted_qk: bool
    norm_shift: float
    hf_extra: Callable[[Callable], dict]


def _gemma3_extra(field: Callable) -> dict:
    """Gemma 3: values the GGUF lacks are those transformers and llama.cpp assume (6-layer pattern, local θ 1e4)."""
    n_layer = int(field("block_count"))
    return {
        "model_type": "gemma3_text",
        "head_dim": int(field("attention.key_length")),
        "query_pre_attn_scalar": 256,
        "sliding_window": int(field("attention.sliding_window")),
        "layer_types": ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(n_layer)],
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": float(field("rope.freq_base", 1e6))},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        },
    }


GGUF_ARCHITECTURES = {
    "llama": GgufArchitecture(_LLAMA_BLOCK, permuted_qk=True, norm_shift=0.0,
                              hf_extra=lambda field: {"model_type": "llama"}),
    # llama.cpp stores Gemma's norm weights as w + 1 (its RMSNorm multiplies by w, Gemma's by 1 + w)
    "gemma3": GgufArchitecture(_GEMMA3_BLOCK, permuted_qk=False, norm_shift=1.0, hf_extra=_gemma3_extra),
}


def _gguf_to_hf(name: str, block_names: dict[str, str]) -> str | None:
    """``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj.weight`` (None if unknown)."""
    stem, _, suffix = name.rpartition(".")
    if stem in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[stem]}.{suffix}"
    parts = stem.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in block_names:
        return f"model.layers.{parts[1]}.{block_names[parts[2]]}.{suffix}"
    return None


def _hf_to_gguf(key: str, block_names: dict[str, str]) -> str:
    """The inverse of _gguf_to_hf, to name a missing tensor the way the GGUF file would."""
    names = {f"{hf}.weight": f"{gg}.weight" for gg, hf in _GLOBAL_NAMES.items()}
    if key in names:
        return names[key]
    _, _, layer, rest = key.split(".", 3)  # model.layers.{i}.<module>.weight
    module, _, suffix = rest.rpartition(".")
    block = {hf: gg for gg, hf in block_names.items()}
    return f"blk.{layer}.{block.get(module, module)}.{suffix}"


def unpermute_rows(w: Tensor, n_head: int) -> Tensor:
    """Undo llama.cpp's row order for q or k weights (n_head = n_kv_head for k).

    llama.cpp's convert did ``w.reshape(n_head, 2, rows // n_head // 2, C).swapaxes(1, 2)`` so
    its rotary could pair neighbouring rows; ours pairs the first half of a head with the second.
    """
    rows, cols = w.shape
    return w.reshape(n_head, rows // n_head // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def _open_gguf(path: Path) -> gguf.GGUFReader:
    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:  # noqa: BLE001 - the reader fails in many ways on a bad file
        raise WeightsError(f"{path} is not a readable GGUF file, or it is truncated ({e}): download it again.") from e
    for t in reader.tensors:
        if t.data.nbytes != t.n_bytes:
            raise WeightsError(f"{path} is truncated (tensor {t.name} is cut short): download it again.")
    return reader


def tensor_types(path: str | Path) -> dict[str, int]:
    """How many tensors of a GGUF file are stored in each type ("Q4_1", "F32", ...), read from its
    header alone (milliseconds)."""
    try:
        return read_header(path, metadata=False).tensor_types
    except GGUFHeaderError as e:
        raise WeightsError(f"{e}: download it again.") from e


def _gguf_config(reader: gguf.GGUFReader, path: Path) -> tuple[GPTConfig, GgufArchitecture]:
    """A GPTConfig from the GGUF metadata, and how the file stores that architecture."""

    def field(key: str, default=None):
        f = reader.get_field(key)
        if f is None:
            if default is None:
                raise WeightsError(f"{path}: metadata {key} is missing; this GGUF file cannot be used.")
            return default
        return f.contents()

    arch = field("general.architecture")
    if arch not in GGUF_ARCHITECTURES:
        raise WeightsError(
            f"{path}: architecture {arch!r} is not supported; gptviz runs GGUF files of {sorted(GGUF_ARCHITECTURES)}."
        )
    stored = GGUF_ARCHITECTURES[arch]
    arch_field = lambda key, default=None: field(f"{arch}.{key}", default)  # noqa: E731
    tokens = reader.get_field("tokenizer.ggml.tokens")
    n_head = int(arch_field("attention.head_count"))
    hf = {
        "vocab_size": len(tokens.data) if tokens is not None else int(arch_field("vocab_size")),
        "max_position_embeddings": int(arch_field("context_length")),
        "hidden_size": int(arch_field("embedding_length")),
        "num_hidden_layers": int(arch_field("block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(arch_field("attention.head_count_kv", n_head)),
        "intermediate_size": int(arch_field("feed_forward_length")),
        # GGUF stores float32: 9.999999747e-06 is the 1e-5 the model was trained with
        "rms_norm_eps": float(f"{float(arch_field('attention.layer_norm_rms_epsilon')):.7g}"),
        "rope_theta": float(f"{float(arch_field('rope.freq_base', 10000.0)):.7g}"),
        "tie_word_embeddings": all(t.name != "output.weight" for t in reader.tensors),
        **stored.hf_extra(arch_field),
    }
    if "head_dim" not in hf and (key_length := arch_field("attention.key_length", 0)):
        hf["head_dim"] = int(key_length)
    try:
        return config_from_hf(hf, name=path.stem), stored
    except ValueError as e:
        raise WeightsError(f"{path}: {e}") from e


def _convert_gguf(reader: gguf.GGUFReader, path: Path, progress: Progress | None) -> tuple[GPTConfig, dict]:
    config, stored = _gguf_config(reader, path)
    steps = plan(config)
    by_key = {(_gguf_to_hf(t.name, stored.block_names) or t.name): t for t in reader.tensors}
    shapes = {key: tuple(int(d) for d in reversed(t.shape)) for key, t in by_key.items()}  # GGUF lists dims inner first
    check_shapes(steps, shapes, path,
                 lambda key: by_key[key].name if key in by_key else _hf_to_gguf(key, stored.block_names))
    hf: dict[str, Tensor] = {}
    for done, (key, t) in enumerate(by_key.items(), start=1):
        try:
            a = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shapes[key])
            w = torch.from_numpy(a if a.flags.writeable else a.copy())  # F32 tensors are read-only views
        except (NotImplementedError, ValueError) as e:
            raise WeightsError(f"{path}: cannot dequantize {t.name} ({t.tensor_type.name}): {e}.") from e
        if stored.permuted_qk and key.endswith("q_proj.weight"):
            w = unpermute_rows(w, config.n_head)
        elif stored.permuted_qk and key.endswith("k_proj.weight"):
            w = unpermute_rows(w, config.n_kv_head)
        elif stored.norm_shift and key.endswith("norm.weight"):
            w = w - stored.norm_shift
        hf[key] = w
        if progress is not None:
            progress(done, len(by_key))
    return config, convert(steps, hf)


def _cache_path(path: Path, cache_dir: Path) -> Path:
    """The cache entry of a GGUF file, named by its content (not its modification time: a fresh
    install of the same package must find the conversion it made before, not leave it orphaned)."""
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    key = f"{GGUF_CACHE_FORMAT}|{digest}"
    return cache_dir / f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"


def _read_cache(entry: Path) -> tuple[GPTConfig, dict[str, Tensor]] | None:
    """A cached conversion, or None (missing or unusable: it is then converted again)."""
    if not entry.is_file():
        return None
    try:
        with safe_open(entry, framework="pt") as f:
            config = GPTConfig.from_dict(json.loads(f.metadata()["gptviz_config"]))
            sd = {key: f.get_tensor(key) for key in f.keys()}
        if {k: tuple(v.shape) for k, v in sd.items()} != param_shapes(config):
            raise ValueError("tensors do not match the stored config")
        return config, sd
    except Exception as e:  # noqa: BLE001 - a bad cache entry is rebuilt, never fatal
        logger.warning("ignoring unusable cache entry %s (%s)", entry, e)
        return None


def _write_cache(entry: Path, config: GPTConfig, sd: dict[str, Tensor]) -> None:
    """Write atomically (temp file + os.replace); a cache that cannot be written is only a warning."""
    tmp = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=entry.name + ".", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, 0o644)  # mkstemp's 0o600 would hide the entry from other users of a shared cache
        save_file(sd, tmp, metadata={"gptviz_config": json.dumps(config.to_dict()), "format": GGUF_CACHE_FORMAT})
        os.replace(tmp, entry)
    except (OSError, SafetensorError) as e:
        logger.warning("could not cache the converted weights in %s (%s); using them from memory", entry.parent, e)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def load_gguf(
    path: str | Path, cache_dir: str | Path | None = None, progress: Progress | None = None
) -> tuple[GPTConfig, dict[str, Tensor]]:
    """A llama.cpp GGUF file -> (config, our float32 state dict).

    The first call dequantizes every tensor (``progress(done, total)`` per tensor) and caches
    the result as safetensors in ``cache_dir`` (default: default_cache_dir()); later calls
    read that cache entry, which is keyed by the file's content (sha256).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path} not found: pass an existing .gguf file.")
    entry = _cache_path(path, Path(cache_dir) if cache_dir is not None else default_cache_dir())
    cached = _read_cache(entry)
    if cached is not None:
        config, sd = cached
        return replace(config, name=path.stem), sd
    config, sd = _convert_gguf(_open_gguf(path), path, progress)
    _write_cache(entry, config, sd)
    return config, sd
