"""Models on the Hugging Face hub: downloaded once into the standard HF cache, then read as a directory.

A hub model is named by its repo id ("Qwen/Qwen2.5-0.5B") or by a short name in HUB_NAMES
("gpt2" -> "openai-community/gpt2"). What is fetched: config.json, the tokenizer files the repo
has (TOKENIZER_FILES), and the safetensors weights (model.safetensors, or the index and its
shards), in that order, so cached weights mean the rest was fetched too. config.json's
model_type is checked against gptviz/architectures.py before any weight is downloaded.

Honours HF_HUB_OFFLINE; fails fast (one short probe) when the hub cannot be reached.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
from pathlib import Path

from huggingface_hub import constants as hf_constants
from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import GatedRepoError, RemoteEntryNotFoundError, RepositoryNotFoundError
from tqdm.std import tqdm

from gptviz.architectures import config_from_hf
from gptviz.weights.convert import Progress, WeightsError

HUB_NAMES = {  # short names -> repo ids
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
}
DOWNLOAD_BYTES = {  # approximate size of the weights of repos the app offers by name
    "openai-community/gpt2": 548_000_000,
    "openai-community/gpt2-medium": 1_520_000_000,
    "openai-community/gpt2-large": 3_250_000_000,
    "openai-community/gpt2-xl": 6_430_000_000,
}
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
HUB_PROBE_TIMEOUT_S = 5.0
OFFLINE_FALLBACK = "smollm2-135m"
# The hub's rule for repo ids: owner/name of letters, digits, "-", "_", ".", no "--" or "..".
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")


def is_repo_id(name: str) -> bool:
    """Whether `name` is spelled like a hub repo id, "owner/name"."""
    return bool(REPO_ID.fullmatch(name)) and "--" not in name and ".." not in name and not name.endswith(".")


def is_hub_name(name: str) -> bool:
    """A short name in HUB_NAMES or an "owner/name" repo id."""
    return name in HUB_NAMES or is_repo_id(name)


def repo_id(name: str) -> str:
    """The repo id of a short name or repo id; WeightsError for anything else."""
    if name in HUB_NAMES:
        return HUB_NAMES[name]
    if is_repo_id(name):
        return name
    raise WeightsError(f"{name!r} is not a Hugging Face repo id: write it as owner/name, e.g. Qwen/Qwen2.5-0.5B, "
                       f"or use one of {', '.join(HUB_NAMES)}.")


def repo_allowed(name: str, patterns: str) -> bool:
    """Whether the repo id of `name` matches one of the comma-separated glob `patterns` (fnmatch,
    case-sensitive); an empty pattern list allows nothing."""
    try:
        repo = repo_id(name)
    except WeightsError:
        return False
    return any(fnmatch.fnmatchcase(repo, p.strip()) for p in patterns.split(",") if p.strip())


# ---- the cache ------------------------------------------------------------------------------------
def _cache_root(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir if cache_dir is not None else hf_constants.HF_HUB_CACHE)


def _cached_file(repo: str, filename: str, cache_dir: str | Path | None) -> Path | None:
    path = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
    return Path(path) if isinstance(path, str) and os.path.isfile(path) else None


def _shards(index: Path) -> list[str]:
    """The shard file names an index lists; WeightsError if it is not a shard index."""
    try:
        return sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise WeightsError(f"{index} is not a valid shard index ({e!r}): delete it and download again.") from e


def cached_dir(name: str, cache_dir: str | Path | None = None) -> Path | None:
    """The HF cache snapshot holding config.json and all safetensors weights of `name`, or None."""
    repo = repo_id(name)
    config = _cached_file(repo, CONFIG, cache_dir)
    if config is None:
        return None
    single = _cached_file(repo, WEIGHTS, cache_dir)
    if single is not None:
        files = [single]
    else:
        index = _cached_file(repo, WEIGHTS_INDEX, cache_dir)
        try:
            shards = _shards(index) if index is not None else []
        except WeightsError:
            return None
        if not shards:
            return None
        files = [index] + [_cached_file(repo, shard, cache_dir) for shard in shards]
    if any(f is None for f in files) or {f.parent for f in files} != {config.parent}:
        return None
    return config.parent


def is_cached(name: str, cache_dir: str | Path | None = None) -> bool:
    """Whether config.json and the safetensors weights of `name` are in the HF cache."""
    return cached_dir(name, cache_dir) is not None


def cached_repos(cache_dir: str | Path | None = None) -> list[str]:
    """Repo ids whose config.json (of an architecture gptviz runs) and weights are in the HF cache."""
    root = _cache_root(cache_dir)
    found = []
    for folder in sorted(root.glob("models--*--*")) if root.is_dir() else []:
        repo = folder.name.removeprefix("models--").replace("--", "/", 1)
        if not is_repo_id(repo) or (snapshot := cached_dir(repo, cache_dir)) is None:
            continue
        try:
            config_from_hf(json.loads((snapshot / CONFIG).read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        found.append(repo)
    return found


def hub_offline() -> bool:
    """HF_HUB_OFFLINE, as huggingface_hub read it at import or as the environment says now."""
    now = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return bool(hf_constants.HF_HUB_OFFLINE) or now


# ---- downloading ------------------------------------------------------------------------------------
def _progress_tqdm(progress: Progress, offset: int = 0, total: int = 0) -> type[tqdm]:
    """A silent tqdm class for hf_hub_download's ``tqdm_class`` that reports (done, total) bytes:
    offset + this file's bytes out of `total` (this file's size if 0)."""

    class CallbackTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.done, self.size = kwargs.get("initial") or 0, kwargs.get("total") or 0

        def update(self, n: float | None = 1) -> bool | None:
            self.done += int(n or 0)
            progress(offset + self.done, total or self.size)
            return None

        def update_transfer(self, n: float | None = 1) -> None:
            """Xet's bytes-on-the-wire counter: one bar (written bytes) is enough."""

        def set_transfer_postfix_str(self, *args, **kwargs) -> None:
            """Unused: the bar is never drawn."""

    return CallbackTqdm


def _file_size(repo: str, filename: str) -> int | None:
    """Bytes of a file in the repo, or None if the repo has no such file."""
    try:
        return get_hf_file_metadata(hf_hub_url(repo, filename), timeout=HUB_PROBE_TIMEOUT_S).size or 0
    except RemoteEntryNotFoundError:
        return None


def _probe(name: str, repo: str) -> None:
    """One quick HEAD of config.json without retries (the download itself retries for ~25 s offline)."""
    unreachable = (f"{name} is not in the Hugging Face cache and the hub cannot be reached; "
                   f"connect to the internet or pick {OFFLINE_FALLBACK}")
    if hub_offline():
        raise WeightsError(f"{unreachable} (HF_HUB_OFFLINE is set).")
    try:
        get_hf_file_metadata(hf_hub_url(repo, CONFIG), timeout=HUB_PROBE_TIMEOUT_S)
    except GatedRepoError as e:
        raise WeightsError(f"{repo} is gated: accept its licence on huggingface.co, then log in "
                           "(`hf auth login` or HF_TOKEN) and try again.") from e
    except RepositoryNotFoundError as e:
        raise WeightsError(f"{repo} was not found on the Hugging Face hub (or is private): check the repo id.") from e
    except RemoteEntryNotFoundError as e:
        raise WeightsError(f"{repo} has no config.json: it is not a transformers model gptviz can read.") from e
    except Exception as e:  # noqa: BLE001 - any other failure here means "cannot reach the hub"
        raise WeightsError(f"{unreachable} ({type(e).__name__}: {e}).") from e


def _check_architecture(repo: str, config_path: str) -> None:
    try:
        config_from_hf(json.loads(Path(config_path).read_text(encoding="utf-8")), name=repo)
    except (ValueError, KeyError, TypeError) as e:
        raise WeightsError(f"{repo} cannot run in gptviz: {e}") from e


def download(name: str, progress: Progress | None = None, cache_dir: str | Path | None = None) -> Path:
    """Snapshot directory of a hub model (short name or repo id), downloaded into the HF cache if needed.

    Fetches config.json and checks its architecture, then the tokenizer files the repo has, then
    the safetensors weights (single file or index + shards); ``progress(done, total)`` gets the
    bytes of the weights. Fails fast offline (HF_HUB_OFFLINE) and when the hub cannot be reached
    (one probe of HUB_PROBE_TIMEOUT_S).
    """
    repo = repo_id(name)
    cached = cached_dir(repo, cache_dir)
    if cached is not None:
        return cached
    _probe(name, repo)
    try:
        config_path = hf_hub_download(repo, CONFIG, cache_dir=cache_dir)
        _check_architecture(repo, config_path)
        for filename in TOKENIZER_FILES:
            try:
                hf_hub_download(repo, filename, cache_dir=cache_dir)
            except RemoteEntryNotFoundError:
                pass  # optional: e.g. GPT-2 checkpoints rely on gptviz's own GPT-2 tokenizer
        single = _file_size(repo, WEIGHTS)
        if single is not None:
            weights = [(WEIGHTS, single)]
        else:
            if _file_size(repo, WEIGHTS_INDEX) is None:
                raise WeightsError(f"{repo} has no safetensors weights ({WEIGHTS} or {WEIGHTS_INDEX}); gptviz never "
                                   "unpickles .bin files: pick a repo that has safetensors.")
            index = hf_hub_download(repo, WEIGHTS_INDEX, cache_dir=cache_dir)
            weights = [(shard, _file_size(repo, shard) or 0) for shard in _shards(Path(index))]
        total, done = sum(size for _, size in weights), 0
        for filename, size in weights:
            bar = _progress_tqdm(progress, done, total) if progress else None
            hf_hub_download(repo, filename, cache_dir=cache_dir, tqdm_class=bar)
            done += size
    except WeightsError:
        raise
    except Exception as e:  # noqa: BLE001 - network, disk and hub errors all end the same way
        raise WeightsError(f"downloading {name} from {repo} failed ({type(e).__name__}: {e}); try again.") from e
    snapshot = cached_dir(repo, cache_dir)
    if snapshot is None:
        raise WeightsError(f"downloading {repo} left an incomplete cache entry (did the repo change?); try again.")
    return snapshot
