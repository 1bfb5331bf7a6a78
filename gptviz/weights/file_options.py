"""What a weight file a user saved cannot say, declared once: load_model's keyword options (the command line
and the app's form read this table), and the errors when one is missing or contradicts the file.

The names are the book's cfg keys (``GPTModel(cfg)``, ``Llama3Model(cfg)``, ``Qwen3Model(cfg)``), except
n_kv_heads (its cfg["n_kv_groups"]): pass the values the model was built with.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from gptviz.config import Rope
from gptviz.weights.convert import WeightsError

# The keys of the book's Llama 3 cfg["rope_freq"], and where each goes in our Rope.
ROPE_FREQ_KEYS = {"factor": "factor", "low_freq_factor": "low_freq_factor", "high_freq_factor": "high_freq_factor",
                  "original_context_length": "original_context"}


def parse_rope_freq(text: str) -> dict | None:
    """Command-line text -> cfg["rope_freq"]: a JSON object, or "none" for no scaling."""
    if text.strip().lower() in ("none", "null", ""):
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ValueError(f"rope_freq {text!r} is not JSON ({e}): write it as "
                         '\'{"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, '
                         '"original_context_length": 8192}\', or none.') from e
    return value


@dataclass(frozen=True)
class FileOption:
    """One keyword option of load_model: its name, how command-line text becomes its value, what it means."""

    name: str
    parse: Callable[[str], object]
    help: str


FILE_OPTIONS = (
    FileOption("n_heads", int, "attention heads (cfg['n_heads']): a state dict does not store the head count"),
    FileOption("n_kv_heads", int, "key/value heads of grouped-query attention (the book's cfg['n_kv_groups']); read "
               "from W_key's shape when left out"),
    FileOption("head_dim", int, "Qwen3: the size of each head (cfg['head_dim']), read from q_norm when it has one"),
    FileOption("context_length", int, "the longest context the model was built for (cfg['context_length']); "
               "Llama 3 and Qwen3 state dicts do not store it"),
    FileOption("rope_base", float, "rotary's base theta (cfg['rope_base']) of Llama 3 and Qwen3"),
    FileOption("rope_freq", parse_rope_freq, "Llama 3's rotary frequency scaling (cfg['rope_freq']): a JSON "
               "object with factor, low_freq_factor, high_freq_factor, original_context_length; or none"),
    FileOption("tokenizer", str, "gpt2, nanoGPT's meta.pkl, a tokenizer.json (or the folder holding it), or a "
               "text file whose characters are the vocabulary; needed unless the vocabulary is GPT-2's"),
)
OPTION_NAMES = tuple(option.name for option in FILE_OPTIONS)


def check_option_names(options: dict) -> None:
    """ValueError naming any option load_model does not take."""
    if unknown := sorted(set(options) - set(OPTION_NAMES)):
        raise ValueError(f"Unknown option{'s' * (len(unknown) > 1)} {', '.join(unknown)}: load_model takes "
                         f"{', '.join(OPTION_NAMES)} (for a weight file that does not say them itself).")


def missing(source: str, option: str, what: str) -> WeightsError:
    """The error for an option a file needs and the caller left out."""
    flag = "--" + option.replace("_", "-")
    return WeightsError(f"{option}: {source} does not say {what}; pass {option}=... to load_model ({flag} on the "
                        f"command line), the cfg[{option!r}] the model was built with.")


def contradicts(source: str, option: str, given: object, why: str) -> WeightsError:
    """The error for an option the file's shapes contradict; `why` says what the shapes say."""
    return WeightsError(f"{option}={given!r} does not fit {source}: {why}. Pass the {option} the model was built "
                        "with, or leave it out where the file says it.")


def rope_from_book(theta: float, rope_freq: dict | str | None) -> Rope:
    """Our Rope for the book's cfg["rope_base"] and cfg["rope_freq"] (None, "none" or {}: no scaling)."""
    if isinstance(rope_freq, str):
        rope_freq = parse_rope_freq(rope_freq)
    if not rope_freq:
        return Rope(theta=float(theta))
    if not isinstance(rope_freq, dict) or set(rope_freq) != set(ROPE_FREQ_KEYS):
        raise ValueError(f"rope_freq must be None or a dict of exactly {', '.join(ROPE_FREQ_KEYS)} "
                         f"(the book's cfg['rope_freq']), not {rope_freq!r}.")
    scaling = {ours: float(rope_freq[theirs]) for theirs, ours in ROPE_FREQ_KEYS.items()}
    scaling["original_context"] = int(scaling["original_context"])
    return Rope(theta=float(theta), scaling="llama3", **scaling)
