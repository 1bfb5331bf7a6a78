"""Weight files -> (GPTConfig, state dict of our GPT), for three sources:

- a Hugging Face directory: ``config.json`` + ``model.safetensors`` (or shards), GPT-2 or Llama keys;
- GPT-2 on the Hugging Face hub: downloaded once into the standard HF cache, then a directory;
- a llama.cpp GGUF file: dequantized once, then cached as a safetensors file.

Our parameter names (nn.Linear convention: a weight is (out, in)):
  tok_emb.weight (V, C); pos_emb.weight (n_ctx, C), GPT-2 only;
  blocks.{i}.norm1, blocks.{i}.norm2, final_norm: weight (C,) (+ bias for GPT-2);
  blocks.{i}.attn.qkv.weight ((nh + 2 n_kv) hs, C): q rows, then k rows, then v rows;
  blocks.{i}.attn.out_proj.weight (C, C); blocks.{i}.mlp.fc_out.weight (C, d_mlp);
  blocks.{i}.mlp.fc_in.weight (d_mlp, C), for Llama (2 d_mlp, C) = [gate; up];
  lm_head.weight (V, C), only when the head is not tied to tok_emb.
Weights are read from safetensors or GGUF only: nothing is ever unpickled.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import gguf
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm.std import tqdm

from gptviz.config import GPTConfig, config_from_hf

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # progress(done, total)
Shape = tuple[int, ...]


class WeightsError(ValueError):
    """A weight file that cannot be used; the message names the file and says what to do."""


def param_shapes(config: GPTConfig) -> dict[str, Shape]:
    """Every parameter of ``GPT(config)`` and its shape (see the module docstring)."""
    C, F, V = config.d_model, config.d_mlp, config.vocab_size
    qkv = (config.n_head + 2 * config.n_kv_head) * config.d_head
    gpt2 = config.family == "gpt2"
    shapes: dict[str, Shape] = {"tok_emb.weight": (V, C)}
    if gpt2:
        shapes["pos_emb.weight"] = (config.n_ctx, C)
    for i in range(config.n_layer):
        block = {
            "norm1.weight": (C,),
            "attn.qkv.weight": (qkv, C),
            "attn.out_proj.weight": (C, C),
            "norm2.weight": (C,),
            "mlp.fc_in.weight": ((1 if gpt2 else 2) * F, C),
            "mlp.fc_out.weight": (C, F),
        }
        if gpt2:
            block |= {
                "norm1.bias": (C,), "attn.qkv.bias": (qkv,), "attn.out_proj.bias": (C,),
                "norm2.bias": (C,), "mlp.fc_in.bias": (F,), "mlp.fc_out.bias": (C,),
            }
        shapes |= {f"blocks.{i}.{name}": shape for name, shape in block.items()}
    shapes["final_norm.weight"] = (C,)
    if gpt2:
        shapes["final_norm.bias"] = (C,)
    if not config.tie_embeddings:
        shapes["lm_head.weight"] = (V, C)
    return shapes


# One conversion step: our key <- these HF tensors (key, shape), concatenated on dim 0,
# then transposed when the flag is set.
Step = tuple[str, list[tuple[str, Shape]], bool]


def _gpt2_plan(config: GPTConfig) -> list[Step]:
    """HF GPT-2 (keys without ``transformer.``). Its Conv1D weights are (in, out): transposed."""
    C, F, V = config.d_model, config.d_mlp, config.vocab_size
    plan: list[Step] = [
        ("tok_emb.weight", [("wte.weight", (V, C))], False),
        ("pos_emb.weight", [("wpe.weight", (config.n_ctx, C))], False),
    ]
    for i in range(config.n_layer):
        ours, hf = f"blocks.{i}.", f"h.{i}."
        for our_name, hf_name, shape, transpose in [
            ("norm1.weight", "ln_1.weight", (C,), False),
            ("norm1.bias", "ln_1.bias", (C,), False),
            ("attn.qkv.weight", "attn.c_attn.weight", (C, 3 * C), True),
            ("attn.qkv.bias", "attn.c_attn.bias", (3 * C,), False),
            ("attn.out_proj.weight", "attn.c_proj.weight", (C, C), True),
            ("attn.out_proj.bias", "attn.c_proj.bias", (C,), False),
            ("norm2.weight", "ln_2.weight", (C,), False),
            ("norm2.bias", "ln_2.bias", (C,), False),
            ("mlp.fc_in.weight", "mlp.c_fc.weight", (C, F), True),
            ("mlp.fc_in.bias", "mlp.c_fc.bias", (F,), False),
            ("mlp.fc_out.weight", "mlp.c_proj.weight", (F, C), True),
            ("mlp.fc_out.bias", "mlp.c_proj.bias", (C,), False),
        ]:
            plan.append((ours + our_name, [(hf + hf_name, shape)], transpose))
    plan.append(("final_norm.weight", [("ln_f.weight", (C,))], False))
    plan.append(("final_norm.bias", [("ln_f.bias", (C,))], False))
    return plan


def _llama_plan(config: GPTConfig) -> list[Step]:
    """HF Llama: q, k, v concatenated into qkv; gate and up into fc_in."""
    C, F, V = config.d_model, config.d_mlp, config.vocab_size
    q_rows, kv_rows = config.n_head * config.d_head, config.n_kv_head * config.d_head
    plan: list[Step] = [("tok_emb.weight", [("model.embed_tokens.weight", (V, C))], False)]
    for i in range(config.n_layer):
        ours, hf = f"blocks.{i}.", f"model.layers.{i}."
        plan += [
            (ours + "norm1.weight", [(hf + "input_layernorm.weight", (C,))], False),
            (ours + "attn.qkv.weight", [
                (hf + "self_attn.q_proj.weight", (q_rows, C)),
                (hf + "self_attn.k_proj.weight", (kv_rows, C)),
                (hf + "self_attn.v_proj.weight", (kv_rows, C)),
            ], False),
            (ours + "attn.out_proj.weight", [(hf + "self_attn.o_proj.weight", (C, C))], False),
            (ours + "norm2.weight", [(hf + "post_attention_layernorm.weight", (C,))], False),
            (ours + "mlp.fc_in.weight", [
                (hf + "mlp.gate_proj.weight", (F, C)),
                (hf + "mlp.up_proj.weight", (F, C)),
            ], False),
            (ours + "mlp.fc_out.weight", [(hf + "mlp.down_proj.weight", (C, F))], False),
        ]
    plan.append(("final_norm.weight", [("model.norm.weight", (C,))], False))
    if not config.tie_embeddings:
        plan.append(("lm_head.weight", [("lm_head.weight", (V, C))], False))
    return plan


def _plan(config: GPTConfig) -> list[Step]:
    return _gpt2_plan(config) if config.family == "gpt2" else _llama_plan(config)


def _hf_key(config: GPTConfig, key: str) -> str | None:
    """A checkpoint key in the plan's spelling, or None for keys that hold no weights of ours."""
    if config.family == "gpt2":
        key = key.removeprefix("transformer.")
        if key.endswith((".attn.bias", ".attn.masked_bias")) or key == "lm_head.weight":
            return None  # causal-mask buffers, and the head tied to wte
        return key
    if key.endswith("rotary_emb.inv_freq") or (key == "lm_head.weight" and config.tie_embeddings):
        return None
    return key


def _check_shapes(plan: list[Step], found: dict[str, Shape], source: Path, label: Callable[[str], str]) -> None:
    """Raise WeightsError unless ``found`` (plan key -> shape) is exactly the plan's tensors."""
    expected = {key: shape for _, parts, _ in plan for key, shape in parts}
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


def _convert(config: GPTConfig, plan: list[Step], hf: dict[str, Tensor]) -> dict[str, Tensor]:
    """Checked HF tensors -> our float32 state dict (tensors are popped from ``hf`` as they go)."""
    sd = {}
    for ours, parts, transpose in plan:
        w = torch.cat([hf.pop(key) for key, _ in parts], dim=0) if len(parts) > 1 else hf.pop(parts[0][0])
        sd[ours] = (w.t() if transpose else w).to(torch.float32).contiguous()
    assert {k: tuple(v.shape) for k, v in sd.items()} == param_shapes(config), "plan and param_shapes disagree"
    return sd


# ---------------------------------------------------------------- Hugging Face directories


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
    """A Hugging Face GPT-2 or Llama directory -> (config, our float32 state dict)."""
    directory = Path(path)
    if not directory.is_dir():
        raise WeightsError(f"{directory} is not a directory: pass a Hugging Face model directory.")
    config = _read_config(directory)
    plan = _plan(config)
    files = _safetensors_files(directory)
    origin: dict[str, tuple[Path, str]] = {}  # plan key -> (file, key as spelled in the file)
    shapes: dict[str, Shape] = {}
    for file in files:
        try:
            with safe_open(file, framework="pt") as f:
                for key in f.keys():
                    if (ours := _hf_key(config, key)) is not None:
                        origin[ours] = (file, key)
                        shapes[ours] = tuple(f.get_slice(key).get_shape())
        except (SafetensorError, OSError) as e:
            raise _corrupt(file, e) from e
    source = files[0] if len(files) == 1 else directory
    _check_shapes(plan, shapes, source, lambda key: origin[key][1] if key in origin else key)
    hf: dict[str, Tensor] = {}
    for file in files:
        try:
            with safe_open(file, framework="pt") as f:
                for ours, (where, key) in origin.items():
                    if where == file:
                        hf[ours] = f.get_tensor(key)
        except (SafetensorError, OSError) as e:
            raise _corrupt(file, e) from e
    return config, _convert(config, plan, hf)


# ---------------------------------------------------------------- GPT-2 from the hub

GPT2_REPOS = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
}
GPT2_DOWNLOAD_BYTES = {  # approximate size of each model.safetensors
    "gpt2": 548_000_000,
    "gpt2-medium": 1_520_000_000,
    "gpt2-large": 3_250_000_000,
    "gpt2-xl": 6_430_000_000,
}
HUB_FILES = ("config.json", "model.safetensors")
HUB_PROBE_TIMEOUT_S = 5.0


def _gpt2_repo(name: str) -> str:
    if name not in GPT2_REPOS:
        raise WeightsError(f"{name!r} is not a GPT-2 size: pick one of {', '.join(GPT2_REPOS)}.")
    return GPT2_REPOS[name]


def _cached_dir(name: str, cache_dir: str | Path | None = None) -> Path | None:
    """The HF cache snapshot holding both files of ``name``, or None."""
    paths = [try_to_load_from_cache(_gpt2_repo(name), f, cache_dir=cache_dir) for f in HUB_FILES]
    if all(isinstance(p, str) and os.path.isfile(p) for p in paths):
        parents = {Path(p).parent for p in paths}
        if len(parents) == 1:
            return parents.pop()
    return None


def is_cached(name: str, cache_dir: str | Path | None = None) -> bool:
    """Whether config.json and model.safetensors of this GPT-2 size are in the HF cache."""
    return _cached_dir(name, cache_dir) is not None


def hub_offline() -> bool:
    """HF_HUB_OFFLINE, as huggingface_hub read it at import or as the environment says now."""
    now = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return bool(hf_constants.HF_HUB_OFFLINE) or now


def _progress_tqdm(progress: Progress) -> type[tqdm]:
    """A silent tqdm class for hf_hub_download's ``tqdm_class`` that reports (done, total) bytes."""

    class CallbackTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.done, self.size = kwargs.get("initial") or 0, kwargs.get("total") or 0

        def update(self, n: float | None = 1) -> bool | None:
            self.done += int(n or 0)
            progress(self.done, self.size)
            return None

        def update_transfer(self, n: float | None = 1) -> None:
            """Xet's bytes-on-the-wire counter: one bar (written bytes) is enough."""

        def set_transfer_postfix_str(self, *args, **kwargs) -> None:
            """Unused: the bar is never drawn."""

    return CallbackTqdm


def download_gpt2(name: str, progress: Progress | None = None, cache_dir: str | Path | None = None) -> Path:
    """Directory holding config.json and model.safetensors of a GPT-2 size, downloaded if needed.

    Only those two files are fetched, into the standard HF cache. ``progress(done, total)``
    gets the bytes of model.safetensors. Fails fast (one probe of HUB_PROBE_TIMEOUT_S) offline.
    """
    repo = _gpt2_repo(name)
    cached = _cached_dir(name, cache_dir)
    if cached is not None:
        return cached
    unreachable = (
        f"{name} is not in the Hugging Face cache and the hub cannot be reached; "
        "connect to the internet or pick smollm2-135m"
    )
    if hub_offline():
        raise WeightsError(f"{unreachable} (HF_HUB_OFFLINE is set).")
    try:  # one quick HEAD without retries: the download itself retries for ~25 s when offline
        get_hf_file_metadata(hf_hub_url(repo, HUB_FILES[1]), timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as e:  # noqa: BLE001 - any failure here means "cannot reach the hub"
        raise WeightsError(f"{unreachable} ({type(e).__name__}: {e}).") from e
    try:
        hf_hub_download(repo, HUB_FILES[0], cache_dir=cache_dir)
        path = hf_hub_download(
            repo, HUB_FILES[1], cache_dir=cache_dir, tqdm_class=_progress_tqdm(progress) if progress else None
        )
    except Exception as e:  # noqa: BLE001 - network, disk and hub errors all end the same way
        raise WeightsError(f"downloading {name} from {repo} failed ({type(e).__name__}: {e}); try again.") from e
    return Path(path).parent


# ---------------------------------------------------------------- GGUF (llama.cpp)

GGUF_CACHE_FORMAT = "1"  # bump when the conversion changes: old cache entries are then ignored
_GGUF_GLOBAL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_GGUF_BLOCK = {
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


def _gguf_to_hf(name: str) -> str | None:
    """``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj.weight`` (None if unknown)."""
    stem, dot, suffix = name.rpartition(".")
    if stem in _GGUF_GLOBAL:
        return f"{_GGUF_GLOBAL[stem]}.{suffix}"
    parts = stem.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _GGUF_BLOCK:
        return f"model.layers.{parts[1]}.{_GGUF_BLOCK[parts[2]]}.{suffix}"
    return None


def _hf_to_gguf(key: str) -> str:
    """The inverse of _gguf_to_hf, to name a missing tensor the way the GGUF file would."""
    names = {f"{hf}.weight": f"{gg}.weight" for gg, hf in _GGUF_GLOBAL.items()}
    if key in names:
        return names[key]
    _, _, layer, rest = key.split(".", 3)  # model.layers.{i}.<module>.weight
    module, _, suffix = rest.rpartition(".")
    block = {hf: gg for gg, hf in _GGUF_BLOCK.items()}
    return f"blk.{layer}.{block[module]}.{suffix}"


def unpermute_rows(w: Tensor, n_head: int) -> Tensor:
    """Undo llama.cpp's row order for q or k weights (n_head = n_kv_head for k).

    llama.cpp's convert did ``w.reshape(n_head, 2, rows // n_head // 2, C).swapaxes(1, 2)`` so
    its rotary could pair neighbouring rows; ours pairs the first half of a head with the second.
    """
    rows, cols = w.shape
    return w.reshape(n_head, rows // n_head // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def default_cache_dir() -> Path:
    """``$GPTVIZ_CACHE``, else ``~/.cache/gptviz``."""
    return Path(os.environ.get("GPTVIZ_CACHE") or Path.home() / ".cache" / "gptviz")


def _open_gguf(path: Path) -> gguf.GGUFReader:
    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:  # noqa: BLE001 - the reader fails in many ways on a bad file
        raise WeightsError(f"{path} is not a readable GGUF file, or it is truncated ({e}): download it again.") from e
    for t in reader.tensors:
        if t.data.nbytes != t.n_bytes:
            raise WeightsError(f"{path} is truncated (tensor {t.name} is cut short): download it again.")
    return reader


def _gguf_config(reader: gguf.GGUFReader, path: Path) -> GPTConfig:
    """A GPTConfig from the GGUF metadata (only the 'llama' architecture is supported)."""

    def field(key: str, default=None):
        f = reader.get_field(key)
        if f is None:
            if default is None:
                raise WeightsError(f"{path}: metadata {key} is missing; this GGUF file cannot be used.")
            return default
        return f.contents()

    arch = field("general.architecture")
    if arch != "llama":
        raise WeightsError(f"{path}: architecture {arch!r} is not supported; gptviz runs GGUF files of 'llama' models.")
    tokens = reader.get_field("tokenizer.ggml.tokens")
    n_head = int(field(f"{arch}.attention.head_count"))
    d_model = int(field(f"{arch}.embedding_length"))
    if int(field(f"{arch}.attention.key_length", d_model // n_head)) * n_head != d_model:
        raise WeightsError(f"{path}: head size * head count != embedding length is not supported.")
    hf = {
        "model_type": "llama",
        "vocab_size": len(tokens.data) if tokens is not None else int(field(f"{arch}.vocab_size")),
        "max_position_embeddings": int(field(f"{arch}.context_length")),
        "hidden_size": d_model,
        "num_hidden_layers": int(field(f"{arch}.block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(field(f"{arch}.attention.head_count_kv", n_head)),
        "intermediate_size": int(field(f"{arch}.feed_forward_length")),
        # GGUF stores float32: 9.999999747e-06 is the 1e-5 the model was trained with
        "rms_norm_eps": float(f"{float(field(f'{arch}.attention.layer_norm_rms_epsilon')):.7g}"),
        "rope_theta": float(f"{float(field(f'{arch}.rope.freq_base', 10000.0)):.7g}"),
        "tie_word_embeddings": all(t.name != "output.weight" for t in reader.tensors),
    }
    try:
        return config_from_hf(hf, name=path.stem)
    except ValueError as e:
        raise WeightsError(f"{path}: {e}") from e


def _convert_gguf(reader: gguf.GGUFReader, path: Path, progress: Progress | None) -> tuple[GPTConfig, dict]:
    config = _gguf_config(reader, path)
    plan = _plan(config)
    by_key = {(_gguf_to_hf(t.name) or t.name): t for t in reader.tensors}
    shapes = {key: tuple(int(d) for d in reversed(t.shape)) for key, t in by_key.items()}  # GGUF lists dims inner first
    _check_shapes(plan, shapes, path, lambda key: by_key[key].name if key in by_key else _hf_to_gguf(key))
    hf: dict[str, Tensor] = {}
    for done, (key, t) in enumerate(by_key.items(), start=1):
        try:
            a = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shapes[key])
            w = torch.from_numpy(a if a.flags.writeable else a.copy())  # F32 tensors are read-only views
        except (NotImplementedError, ValueError) as e:
            raise WeightsError(f"{path}: cannot dequantize {t.name} ({t.tensor_type.name}): {e}.") from e
        if key.endswith("q_proj.weight"):
            w = unpermute_rows(w, config.n_head)
        elif key.endswith("k_proj.weight"):
            w = unpermute_rows(w, config.n_kv_head)
        hf[key] = w
        if progress is not None:
            progress(done, len(by_key))
    return config, _convert(config, plan, hf)


def _cache_path(path: Path, cache_dir: Path) -> Path:
    stat = path.stat()
    key = f"{GGUF_CACHE_FORMAT}|{path.name}|{stat.st_size}|{stat.st_mtime_ns}"
    return cache_dir / f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"


def _read_cache(entry: Path) -> tuple[GPTConfig, dict[str, Tensor]] | None:
    """A cached conversion, or None (missing or unusable: it is then converted again)."""
    if not entry.is_file():
        return None
    try:
        with safe_open(entry, framework="pt") as f:
            config = GPTConfig(**json.loads(f.metadata()["gptviz_config"]))
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
    read that cache entry, which is keyed by the file's name, size and modification time.
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
