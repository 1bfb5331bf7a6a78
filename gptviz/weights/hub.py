"""Models on the Hugging Face hub: downloaded once into the standard HF cache, then read as a directory.

Honours HF_HUB_OFFLINE; fails fast (one short probe) when the hub cannot be reached.
"""
from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import constants as hf_constants
from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache
from tqdm.std import tqdm

from gptviz.weights.convert import Progress, WeightsError


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
