"""The tokenizer of a weight file a user saved, which stores none: the ``tokenizer=`` option, else nanoGPT's
meta.pkl beside the file, else GPT-2's BPE when the vocabulary is GPT-2's.

The option names one of: "gpt2"; nanoGPT's meta.pkl (a character vocabulary, read as plain data only); a
tokenizer.json (any .json file) or the folder holding one; any other file is text whose characters are the
vocabulary, sorted, as nanoGPT's data/shakespeare_char/prepare.py builds it.
"""
from __future__ import annotations

from pathlib import Path

from gptviz.tokenizer import (
    Tokenizer,
    TokenizerError,
    char_tokenizer,
    gpt2_tokenizer,
    text_char_tokenizer,
    tokenizer_from_hf_dir,
    tokenizer_from_json,
)
from gptviz.weights.convert import WeightsError
from gptviz.weights.safe_pickle import load_plain_pickle

GPT2_VOCAB_SIZES = (50257, 50304)  # GPT-2's, and nanoGPT's default: GPT-2's padded to a multiple of 64
META_PKL = "meta.pkl"


def meta_pkl_tokenizer(path: Path) -> Tokenizer:
    """nanoGPT's meta.pkl ({"vocab_size", "itos": {id: character}, "stoi"}) -> its character vocabulary."""
    meta = load_plain_pickle(path)
    itos = meta.get("itos") if isinstance(meta, dict) else None
    if not isinstance(itos, dict) or sorted(itos) != list(range(len(itos))):
        raise WeightsError(f"{path} has no itos table of ids 0..n-1 (nanoGPT's character vocabulary): pass the "
                           "meta.pkl that prepare.py wrote for the model's data.")
    try:
        return char_tokenizer([itos[i] for i in range(len(itos))], name=f"characters of {path.name}")
    except TokenizerError as e:
        raise WeightsError(f"{path}: {e}.") from e


def text_tokenizer(path: Path) -> Tokenizer:
    """A text file -> the vocabulary of its characters, sorted (nanoGPT's prepare.py: sorted(set(data)))."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise WeightsError(f"tokenizer: {path} cannot be read as UTF-8 text ({e}); pass the text the model was "
                           "trained on, its meta.pkl or a tokenizer.json.") from e
    if not text:
        raise WeightsError(f"tokenizer: {path} is empty; pass the text the model was trained on.")
    return text_char_tokenizer(text, name=f"characters of {path.name}")


def tokenizer_from_option(value: str | Path) -> Tokenizer:
    """The tokenizer= option (gpt2, or a file or folder as the module says) -> the tokenizer."""
    if str(value).strip().lower() == "gpt2":
        return gpt2_tokenizer()
    path = Path(value).expanduser()
    if path.is_dir():
        if not (path / "tokenizer.json").is_file():
            raise WeightsError(f"tokenizer: the folder {path} holds no tokenizer.json.")
        return tokenizer_from_hf_dir(path)
    if not path.is_file():
        raise WeightsError(f"tokenizer: {path} does not exist; pass gpt2, nanoGPT's meta.pkl, a tokenizer.json or "
                           "the text a character model was trained on.")
    if path.suffix.lower() == ".pkl":
        return meta_pkl_tokenizer(path)
    if path.suffix.lower() == ".json":
        return tokenizer_from_json(path, path.name)
    return text_tokenizer(path)


def user_file_tokenizer(option: Tokenizer | str | Path | None, vocab_size: int, weights: Path,
                        meta: dict) -> Tokenizer:
    """The tokenizer for a user's weight file whose embedding has `vocab_size` rows (meta: what else the
    checkpoint holds, e.g. nanoGPT's config); WeightsError naming the option when none can be told."""
    if isinstance(option, Tokenizer):
        return option
    if option is not None:
        return tokenizer_from_option(option)
    if (beside := weights.parent / META_PKL).is_file():
        return meta_pkl_tokenizer(beside)
    if vocab_size in GPT2_VOCAB_SIZES:
        return gpt2_tokenizer()
    config = meta.get("config")
    dataset = config.get("dataset") if isinstance(config, dict) else None
    where = f" (nanoGPT keeps it in data/{dataset}/{META_PKL})" if isinstance(dataset, str) else ""
    raise WeightsError(
        f"tokenizer: {weights} has a vocabulary of {vocab_size} tokens, not GPT-2's 50257, and does not say what "
        f"they are; pass tokenizer=... (--tokenizer on the command line): nanoGPT's {META_PKL}{where}, a "
        "tokenizer.json, or the text file a character model was trained on."
    )
