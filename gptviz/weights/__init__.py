"""Weight files -> (GPTConfig, state dict of our GPT), one module per source:

- hf_dir: a Hugging Face directory (config.json + safetensors), any architecture we run;
- hub: a model on the Hugging Face hub (any repo of those architectures), downloaded once into
  the standard HF cache;
- gguf: a llama.cpp GGUF file, dequantized once, then cached as safetensors;
- user_file: a state dict a user saved: the book's GPTModel (book), Llama3Model and Qwen3Model
  (book_llama), nanoGPT's ckpt.pt (nanogpt); file_options declares the keyword options for what such a
  file cannot say, user_tokenizer picks its tokenizer.

convert holds what they share: our parameter names and shapes, the plan that maps
checkpoint tensors onto them, the checks (name_table: the same from a table of names). Pickles are
opened in one place only, safe_pickle, as data that cannot run code.
"""
from gptviz.weights.convert import Progress, WeightsError, param_shapes
from gptviz.weights.file_options import FILE_OPTIONS, OPTION_NAMES, check_option_names
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
from gptviz.weights.user_file import USER_FILE_SUFFIXES, describe_user_file, is_user_file, load_user_file

__all__ = [
    "DOWNLOAD_BYTES", "FILE_OPTIONS", "HUB_NAMES", "OPTION_NAMES", "Progress", "USER_FILE_SUFFIXES", "WeightsError",
    "cached_repos", "check_option_names", "describe_user_file", "download", "hub_offline", "is_cached", "is_hub_name",
    "is_user_file", "load_gguf", "load_hf_dir", "load_user_file", "param_shapes", "repo_allowed", "repo_id",
    "stored_dtypes", "tensor_types",
]
