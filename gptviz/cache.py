"""Where gptviz keeps what it makes once and reuses: converted GGUF weights, the assembled Gemma 3 GGUF."""
from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$GPTVIZ_CACHE``, else ``~/.cache/gptviz``."""
    return Path(os.environ.get("GPTVIZ_CACHE") or Path.home() / ".cache" / "gptviz")
