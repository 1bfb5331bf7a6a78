"""Weight files -> (GPTConfig, state dict of our GPT), one module per source:

- hf_dir: a Hugging Face directory (config.json + safetensors), any architecture we run;
- hub: a model on the Hugging Face hub (any repo of those architectures), downloaded once into
  the standard HF cache;
- gguf: a llama.cpp GGUF file, dequantized once, then cached as safetensors.

convert holds what they share: our parameter names and shapes, the plan that maps
checkpoint tensors onto them, the checks. Nothing is ever unpickled.
"""
from gptviz.weights.convert import Progress, WeightsError, param_shapes
from gptviz.weights.gguf import load_gguf, tensor_types
from gptviz.weights.hf_dir import load_hf_dir, stored_dtypes
from gptviz.weights.hub import (
    DOWNLOAD_BYTES,
    HUB_NAMES,
    cached_repos,
    download,
    hub_offline,
    is_cached,
    is_hub_name,
    repo_allowed,
    repo_id,
)

__all__ = [
    "DOWNLOAD_BYTES", "HUB_NAMES", "Progress", "WeightsError", "cached_repos", "download",
    "hub_offline", "is_cached", "is_hub_name", "load_gguf", "load_hf_dir", "param_shapes", "repo_allowed", "repo_id",
    "stored_dtypes", "tensor_types",
]
