"""Text <-> token ids, for every model gptviz loads.

Two backends behind one interface (``Tokenizer``):

- ``TiktokenTokenizer`` runs every byte-level BPE it can express (GPT-2, SmolLM2, Llama 3,
  Qwen2): text is split into pieces by a regex, each piece's UTF-8 bytes are merged pairwise
  into tokens; a token's tiktoken rank is its id.
- ``HuggingFaceTokenizer`` runs the rest with the ``tokenizers`` library that tokenizer.json
  was made for: SentencePiece-style BPE with byte fallback (Gemma), and byte-level BPEs whose
  ids or split tiktoken cannot express.

Sources: GPT-2's ranks shipped in ``gptviz/data/r50k_base.tiktoken`` (checked by sha256); a
Hugging Face directory's ``tokenizer.json``; a GGUF file's ``tokenizer.ggml.*`` metadata, turned
into a tokenizer.json the way transformers does. Either way a tokenizer.json-shaped dict (a
"spec") goes to tiktoken when it can, else to ``tokenizers``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import operator
import threading
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tiktoken
import tokenizers

from gptviz.gguf_header import GGUFHeaderError, read_header

logger = logging.getLogger(__name__)

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
# Llama 3's split regex as its tokenizer.json writes it (a Split pre-tokenizer before a
# regex-free ByteLevel), and Qwen2's, which differs only in taking one digit per piece.
LLAMA3_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN2_SPLIT = LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")
# The same splits for tiktoken's regex engine, which backtracks with a stack once a pattern has a
# lookahead; `\s*[\r\n]+` would overflow it on a long run of spaces. So each alternative without
# a lookahead becomes an atomic group (?>...), which keeps no backtracking state; nothing follows
# an alternative, so backtracking into it could never change the match. `\s++$` before
# `\s+(?!\S)` takes trailing whitespace in one step, as that alternative would.
LLAMA3_PATTERN = (
    r"""(?>(?i:'s|'t|'re|'ve|'m|'ll|'d))|(?>[^\r\n\p{L}\p{N}]?\p{L}+)|(?>\p{N}{1,3})"""
    r"""|(?> ?[^\s\p{L}\p{N}]+[\r\n]*)|(?>\s*[\r\n]+)|\s++$|\s+(?!\S)|(?>\s+)"""
)
QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")
SPLIT_PATTERNS = {LLAMA3_SPLIT: LLAMA3_PATTERN, QWEN2_SPLIT: QWEN2_PATTERN}


# tokenizer.json pieces, as the `tokenizers` library writes them.
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
_BYTE_LEVEL_NO_REGEX = {**_BYTE_LEVEL, "use_regex": False}


def _split_then_bytes(regex: str) -> dict:
    split = {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}
    return {"type": "Sequence", "pretokenizers": [split, _BYTE_LEVEL_NO_REGEX]}


# tokenizer.ggml.pre of a byte-level GGUF -> its pre-tokenizer.
GGUF_PRE_TOKENIZERS = {
    "gpt-2": _BYTE_LEVEL,
    "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]},
    "llama-bpe": _split_then_bytes(LLAMA3_SPLIT),
    "qwen2": _split_then_bytes(QWEN2_SPLIT),
}
# general.architecture values whose SentencePiece GGUF transformers builds as GemmaTokenizer.
GEMMA_ARCHITECTURES = ("gemma", "gemma2", "gemma3")
GGUF_CONTROL, GGUF_USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values (gguf.TokenType)


class TokenizerError(ValueError):
    """A tokenizer could not be built, or text/ids could not be converted."""


class _NotForTiktoken(Exception):
    """A tokenizer.json that tiktoken cannot run exactly; the message says why."""


@dataclass(frozen=True, eq=False)
class Tokenizer(ABC):
    """Text <-> token ids; what the rest of gptviz sees, whichever backend runs it.

    ``add_bos``: the model's own tokenizer puts ``bos_id`` before every text (Llama 3, Gemma).
    """

    name: str
    bos_id: int | None
    eos_id: int | None
    add_bos: bool

    @property
    @abstractmethod
    def n_vocab(self) -> int:
        """Number of token ids: every id is in [0, n_vocab)."""

    def encode(self, text: str, allow_special: bool = False, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text``.

        By default text that looks like a special token ("<|endoftext|>") is encoded as
        plain text; with ``allow_special`` it becomes that special token. With
        ``add_special_tokens``, ``bos_id`` comes first when ``add_bos`` says the model's tokenizer
        adds it (as transformers' ``tokenizer(text)`` does). Unpaired UTF-16 surrogates (e.g.
        "\\ud800", which UTF-8 cannot hold) become U+FFFD first.
        """
        if not isinstance(text, str):
            raise TokenizerError(f"encode takes text (str), got {type(text).__name__}")
        text = _fix_surrogates(text)
        try:
            ids = self._encode(text, allow_special)
        except (KeyboardInterrupt, SystemExit, TokenizerError):
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
        return [self.bos_id, *ids] if add_special_tokens and self.add_bos else ids

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``; bytes that are not valid UTF-8 become U+FFFD."""

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes of one token (a SentencePiece '▁' is a space, '<0xE2>' is b'\\xe2')."""
        (token_id,) = self._checked([token_id])
        return self._bytes_of(token_id)

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """One display string per id, in order.

        A token's own bytes are decoded on their own: valid UTF-8 shows as text (spaces kept),
        other bytes as escapes, e.g. half an emoji shows as "\\xf0\\x9f".
        """
        return [self._bytes_of(i).decode("utf-8", errors="backslashreplace") for i in self._checked(ids)]

    def validate_ids(self, ids: Iterable[int]) -> None:
        """Raise TokenizerError if any id is not an integer in [0, n_vocab)."""
        self._checked(ids)

    @abstractmethod
    def _encode(self, text: str, allow_special: bool) -> list[int]:
        """Token ids of valid UTF-8 text, nothing added."""

    @abstractmethod
    def _bytes_of(self, token_id: int) -> bytes:
        """The bytes of a checked id."""

    @property
    @abstractmethod
    def _missing_bytes(self) -> frozenset[int]:
        """Bytes no token can hold (SmolLM2 lacks a few control characters)."""

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

    def _check_encodable(self, text: str) -> None:
        if not self._missing_bytes:
            return
        bad = sorted(c for c in set(text) if not self._missing_bytes.isdisjoint(c.encode()))
        if bad:
            shown = ", ".join(f"U+{ord(c):04X}" for c in bad[:10])
            raise TokenizerError(
                f"{self.name} has no token for these characters: {shown}; remove them from the text"
            )


@dataclass(frozen=True, eq=False)
class TiktokenTokenizer(Tokenizer):
    """A byte-level BPE run by tiktoken; ``encoding`` ranks are token ids.

    ``nfc``: text is NFC-normalized first (Qwen2). ``plain_added``: added tokens that are not
    special (Qwen2.5's "<tool_call>"), matched in any text, as transformers does.
    """

    encoding: tiktoken.Encoding
    nfc: bool = False
    plain_added: frozenset[str] = frozenset()

    @property
    def n_vocab(self) -> int:
        return self.encoding.n_vocab

    def decode(self, ids: Sequence[int]) -> str:
        return self.encoding.decode(self._checked(ids), errors="replace")

    def _encode(self, text: str, allow_special: bool) -> list[int]:
        if self.nfc:
            text = unicodedata.normalize("NFC", text)
        self._check_encodable(text)
        allowed = "all" if allow_special else self.plain_added
        return self.encoding.encode(text, allowed_special=allowed, disallowed_special=())

    def _bytes_of(self, token_id: int) -> bytes:
        return self.encoding.decode_single_token_bytes(token_id)

    @functools.cached_property
    def _missing_bytes(self) -> frozenset[int]:
        missing = set()
        for b in range(256):
            try:
                self.encoding.encode_single_token(bytes([b]))
            except KeyError:
                missing.add(b)
        return frozenset(missing)


@dataclass(frozen=True, eq=False)
class HuggingFaceTokenizer(Tokenizer):
    """A BPE run by the ``tokenizers`` library, from a tokenizer.json.

    ``id_bytes[i]`` is token i's bytes. ``byte_level``: tokens are spelled in GPT-2's byte
    alphabet; else SentencePiece-style, '▁' for a space and '<0xE2>' for a byte without a token.
    """

    backend: tokenizers.Tokenizer
    id_bytes: tuple[bytes, ...]
    byte_level: bool
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def n_vocab(self) -> int:
        return len(self.id_bytes)

    def decode(self, ids: Sequence[int]) -> str:
        return self.backend.decode(self._checked(ids), skip_special_tokens=False)

    def _encode(self, text: str, allow_special: bool) -> list[int]:
        self._check_encodable(text)
        with self._lock:  # the flag is the backend's, shared by every caller
            self.backend.encode_special_tokens = not allow_special
            return self.backend.encode(text, add_special_tokens=False).ids

    def _bytes_of(self, token_id: int) -> bytes:
        return self.id_bytes[token_id]

    @functools.cached_property
    def _missing_bytes(self) -> frozenset[int]:
        spelled = _byte_to_unicode() if self.byte_level else {b: f"<0x{b:02X}>" for b in range(256)}
        return frozenset(b for b, token in spelled.items() if self.backend.token_to_id(token) is None)


@dataclass(frozen=True, eq=False)
class CharTokenizer(Tokenizer):
    """One token per character (nanoGPT's shakespeare-char, a model trained on the Train page):
    ``chars[i]`` is token i. A character outside the vocabulary is refused, never dropped."""

    chars: tuple[str, ...]

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}

    @property
    def n_vocab(self) -> int:
        return len(self.chars)

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[i] for i in self._checked(ids))

    def _encode(self, text: str, allow_special: bool) -> list[int]:
        index = self._index
        if missing := sorted(set(text) - index.keys()):
            shown = ", ".join(repr(c) for c in missing[:10])
            raise TokenizerError(f"{self.name} knows {len(self.chars)} characters and not {shown}: "
                                 "remove them from the text")
        return [index[c] for c in text]

    def _bytes_of(self, token_id: int) -> bytes:
        return self.chars[token_id].encode("utf-8", errors="surrogatepass")

    @property
    def _missing_bytes(self) -> frozenset[int]:
        return frozenset()


def char_tokenizer(chars: Iterable[str], name: str = "characters") -> CharTokenizer:
    """A character vocabulary: ``chars`` in id order (each one character, no repeats)."""
    chars = tuple(chars)
    if not chars or any(len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
        raise TokenizerError(f"{name}: a character vocabulary lists distinct single characters, "
                             f"not {chars[:10]!r}{'…' if len(chars) > 10 else ''}")
    return CharTokenizer(name=name, bos_id=None, eos_id=None, add_bos=False, chars=chars)


def text_char_tokenizer(text: str, name: str = "characters") -> CharTokenizer:
    """The vocabulary of a text's own characters, sorted: what nanoGPT's shakespeare_char/prepare.py builds."""
    return char_tokenizer(sorted(set(text)), name)


def char_vocabulary_spec(tokenizer: CharTokenizer) -> dict:
    """A tokenizer.json for a character vocabulary: a BPE with no merges and no pre-tokenizer, which
    transformers' fast tokenizers run too; tokenizer_from_hf_dir reads it back as a CharTokenizer."""
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
        "pre_tokenizer": None, "post_processor": None, "decoder": {"type": "Fuse"},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {c: i for i, c in enumerate(tokenizer.chars)}, "merges": []},
    }


def _char_vocabulary(name: str, spec: dict) -> CharTokenizer | None:
    """The CharTokenizer a tokenizer.json describes, if it is a character vocabulary (else None)."""
    model = spec.get("model") or {}
    vocab = model.get("vocab")
    if (model.get("type") != "BPE" or model.get("merges") or spec.get("pre_tokenizer") or spec.get("added_tokens")
            or not isinstance(vocab, dict) or not all(isinstance(t, str) and len(t) == 1 for t in vocab)):
        return None
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise TokenizerError(f"{name}: character ids are not 0..{len(by_id) - 1} without gaps")
    return char_tokenizer([c for c, _ in by_id], name)


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


@functools.lru_cache(maxsize=1)
def _byte_to_unicode() -> dict[int, str]:
    return {b: c for c, b in _unicode_to_byte().items()}


def load_gpt2_tokenizer(ranks_path: str | Path) -> TiktokenTokenizer:
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
    return TiktokenTokenizer(name="gpt2", encoding=encoding, bos_id=None, eos_id=50256, add_bos=False)


@functools.lru_cache(maxsize=1)
def gpt2_tokenizer() -> TiktokenTokenizer:
    """GPT-2's tokenizer from the shipped ranks (built once, ~1 s)."""
    return load_gpt2_tokenizer(GPT2_RANKS_PATH)


# --- from a tokenizer.json spec ----------------------------------------------------------------


def _tokenizer_from_spec(
    name: str, spec: dict, bos_id: int | None, eos_id: int | None, add_bos: bool
) -> Tokenizer:
    """tiktoken when it runs ``spec`` exactly, else the ``tokenizers`` library."""
    try:
        return _tiktoken_from_spec(name, spec, bos_id, eos_id, add_bos)
    except _NotForTiktoken as reason:
        logger.info("%s: using the tokenizers library (%s)", name, reason)
    return _huggingface_from_spec(name, spec, bos_id, eos_id, add_bos)


def _tiktoken_from_spec(
    name: str, spec: dict, bos_id: int | None, eos_id: int | None, add_bos: bool
) -> TiktokenTokenizer:
    """A byte-level BPE spec as a tiktoken Encoding; _NotForTiktoken when that would not be exact.

    tiktoken merges the adjacent pair whose joined token has the lowest rank; HF BPE the pair
    listed first in ``merges``. With rank = id these agree when every merge makes a token with
    a larger id than its parts and than all earlier merges, and every token other than a single
    byte is made by a merge. That is checked here: true for GPT-2 and SmolLM2, and for Llama 3
    and Qwen2, whose vocabularies were made by tiktoken. (tiktoken takes a piece that is a token
    whole, as HF BPE does with ignore_merges; merges trained in order reach it anyway.)
    """
    model = spec.get("model") or {}
    normalizer = spec.get("normalizer")
    decoder = spec.get("decoder") or {}
    if model.get("type") != "BPE" or decoder.get("type") != "ByteLevel":
        raise _NotForTiktoken(f"model {model.get('type')!r} with decoder {decoder.get('type')!r} is not byte-level BPE")
    if model.get("byte_fallback") or model.get("dropout") or model.get("continuing_subword_prefix") or model.get(
        "end_of_word_suffix"
    ):
        raise _NotForTiktoken("the BPE model has byte fallback, dropout or subword affixes")
    if normalizer and normalizer.get("type") != "NFC":
        raise _NotForTiktoken(f"normalizer {normalizer.get('type')!r}")
    pat_str = _tiktoken_pattern(spec.get("pre_tokenizer"))

    added = spec.get("added_tokens") or []
    contents = [t["content"] for t in added]
    if any(t.get("lstrip") or t.get("rstrip") or t.get("single_word") for t in added):
        raise _NotForTiktoken("an added token strips spaces or matches single words only")
    if any(b.startswith(a) for a, b in zip(sorted(contents), sorted(contents)[1:])):  # a prefix sorts just before
        raise _NotForTiktoken("an added token is the start of another")  # tiktoken may match the shorter
    if normalizer and any(unicodedata.normalize("NFC", c) != c for c in contents):
        raise _NotForTiktoken("an added token changes under NFC")

    to_byte = _unicode_to_byte()
    added_ids = {t["id"] for t in added}
    vocab = dict(model["vocab"])
    ranks: dict[bytes, int] = {}
    for text, i in vocab.items():
        if i in added_ids:
            continue
        try:
            ranks[bytes(to_byte[c] for c in text)] = i
        except KeyError:
            raise _NotForTiktoken(f"token {i} {text!r} is not byte-level BPE text") from None
    if len(ranks) != len({i for i in vocab.values() if i not in added_ids}):
        raise TokenizerError(f"{name}: two tokens have the same bytes; the vocabulary is broken")

    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    last = -1
    for k, (left, right) in enumerate(merges):
        made = vocab.get(left + right)
        if made is None or left not in vocab or right not in vocab:
            raise TokenizerError(
                f"{name}: merge {k} ({left!r}, {right!r}) uses a token missing from the vocabulary"
            )
        if made <= max(vocab[left], vocab[right], last):
            raise _NotForTiktoken(f"merge {k} ({left!r}, {right!r}) makes id {made}: ids disagree with merge order")
        last = made
    n_single = sum(len(token) == 1 for token in ranks)
    if len(ranks) != n_single + len(merges):
        raise _NotForTiktoken("some tokens are made by no merge, or by a merge that makes an added token")

    ids = sorted(ranks.values()) + sorted(added_ids)
    if sorted(ids) != list(range(len(ids))):
        raise TokenizerError(f"{name}: token ids are not 0..{len(ids) - 1} without gaps")
    encoding = tiktoken.Encoding(
        name=name, pat_str=pat_str, mergeable_ranks=ranks, special_tokens={t["content"]: t["id"] for t in added}
    )
    return TiktokenTokenizer(
        name=name,
        encoding=encoding,
        bos_id=bos_id,
        eos_id=eos_id,
        add_bos=add_bos,
        nfc=bool(normalizer),
        plain_added=frozenset(t["content"] for t in added if not t.get("special")),
    )


def _tiktoken_pattern(pre_tokenizer: dict | None) -> str:
    """tiktoken's regex for a byte-level pre-tokenizer: GPT-2's, SmolLM2's, Llama 3's or Qwen2's."""
    steps = _flatten(pre_tokenizer, "pretokenizers")
    kinds = [s.get("type") for s in steps]
    last = steps[-1] if steps else {}
    if kinds and kinds[-1] == "ByteLevel" and not last.get("add_prefix_space"):
        use_regex = last.get("use_regex", True)
        if kinds == ["ByteLevel"] and use_regex:
            return R50K_PATTERN
        if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and use_regex:
            return SMOLLM_PATTERN
        split = steps[0]
        regex = (split.get("pattern") or {}).get("Regex")
        if (
            kinds == ["Split", "ByteLevel"]
            and regex in SPLIT_PATTERNS
            and split.get("behavior") == "Isolated"
            and not split.get("invert")
            and not use_regex
        ):
            return SPLIT_PATTERNS[regex]
    raise _NotForTiktoken(f"pre-tokenizers {kinds} are not GPT-2's, SmolLM2's, Llama 3's or Qwen2's split")


def _flatten(node: dict | None, key: str) -> list[dict]:
    """The steps of a pre-tokenizer or post-processor, ``Sequence`` nodes (whose list is ``key``) opened."""
    if not node:
        return []
    if node.get("type") == "Sequence":
        return [step for sub in node.get(key, []) for step in _flatten(sub, key)]
    return [node]


def _huggingface_from_spec(
    name: str, spec: dict, bos_id: int | None, eos_id: int | None, add_bos: bool
) -> HuggingFaceTokenizer:
    """A byte-level or SentencePiece-style (byte fallback) BPE spec, run by ``tokenizers``."""
    model = spec.get("model") or {}
    steps = _flatten(spec.get("pre_tokenizer"), "pretokenizers") + [spec.get("decoder") or {}]
    byte_level = any(step.get("type") == "ByteLevel" for step in steps)
    if model.get("type") != "BPE" or not (byte_level or model.get("byte_fallback")):
        raise TokenizerError(
            f"{name}: only byte-level BPE tokenizers (GPT-2, Llama 3, Qwen2 style) and BPE with byte "
            f"fallback (Gemma style) are supported; found model {model.get('type')!r}"
        )
    try:
        backend = tokenizers.Tokenizer.from_str(json.dumps(spec))
    except Exception as e:  # the library raises plain Exception for a malformed spec
        raise TokenizerError(f"{name}: the tokenizers library cannot read this tokenizer ({e})") from e

    added = {i: t.content for i, t in backend.get_added_tokens_decoder().items()}
    tokens = {i: token for token, i in backend.get_vocab(with_added_tokens=True).items()}
    if sorted(tokens) != list(range(len(tokens))):
        raise TokenizerError(f"{name}: token ids are not 0..{len(tokens) - 1} without gaps")
    to_byte = _unicode_to_byte()
    byte_tokens = {f"<0x{b:02X}>": bytes([b]) for b in range(256)}
    id_bytes = []
    for i in range(len(tokens)):
        token = tokens[i]
        if i in added:
            id_bytes.append(added[i].encode())
        elif byte_level:
            try:
                id_bytes.append(bytes(to_byte[c] for c in token))
            except KeyError:
                raise TokenizerError(f"{name}: token {i} {token!r} is not byte-level BPE text") from None
        else:
            id_bytes.append(byte_tokens.get(token) or token.replace("▁", " ").encode())
    return HuggingFaceTokenizer(
        name=name, bos_id=bos_id, eos_id=eos_id, add_bos=add_bos,
        backend=backend, id_bytes=tuple(id_bytes), byte_level=byte_level,
    )


# --- Hugging Face directories -------------------------------------------------------------------


def tokenizer_from_hf_dir(path: str | Path) -> Tokenizer:
    """The tokenizer of a local Hugging Face model directory.

    ``tokenizer.json`` must describe a byte-level BPE (GPT-2, SmolLM2, Llama 3, Qwen2 style) or a
    BPE with byte fallback (Gemma style). A directory with no tokenizer files (e.g. a random
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
    return tokenizer_from_json(spec_path, path.name)


def tokenizer_from_json(spec_path: str | Path, name: str) -> Tokenizer:
    """The tokenizer a tokenizer.json file describes, whatever the file is called (bos/eos from the
    tokenizer_config.json or config.json beside it, if any), named `name`."""
    spec_path = Path(spec_path)
    path = spec_path.parent
    spec = _read_json(spec_path)
    if (chars := _char_vocabulary(name, spec)) is not None:
        return chars
    try:
        vocab = dict(spec["model"]["vocab"])
        vocab.update({t["content"]: t["id"] for t in spec.get("added_tokens") or []})
        bos_id, eos_id, add_bos = _bos_eos(path, spec, vocab)
        return _tokenizer_from_spec(name, spec, bos_id, eos_id, add_bos)
    except TokenizerError:
        raise
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:  # valid JSON, wrong structure
        raise TokenizerError(
            f"{spec_path} is not a valid tokenizer.json ({type(e).__name__}: {e}); re-download the model's tokenizer"
        ) from e


def _read_json(path: Path):
    """The parsed JSON file; TokenizerError naming the file when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise TokenizerError(f"{path} cannot be read as JSON ({e}); re-download the model's tokenizer files") from e


def _bos_eos(path: Path, spec: dict, vocab: dict[str, int]) -> tuple[int | None, int | None, bool]:
    """(bos_id, eos_id, add_bos), as transformers decides them.

    bos/eos come from tokenizer_config.json (token text) or config.json (ids). What is added to a
    text is up to tokenizer.json's post-processor (Llama 3's puts <|begin_of_text|> first):
    transformers 5 runs it as it is and ignores tokenizer_config.json's add_bos_token.
    """
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
    template = _template(path, spec)
    bos = _template_bos(path, template) if template else None
    return (ids["bos"] if bos is None else bos), ids["eos"], bos is not None


def _template(path: Path, spec: dict) -> dict | None:
    """The TemplateProcessing step of tokenizer.json's post-processor, if any."""
    steps = _flatten(spec.get("post_processor"), "processors")
    if any(step.get("type") not in ("ByteLevel", "TemplateProcessing") for step in steps):
        raise TokenizerError(f"{path}: post-processors {[s.get('type') for s in steps]} are not supported")
    templates = [step for step in steps if step["type"] == "TemplateProcessing"]
    return templates[-1] if templates else None


def _template_bos(path: Path, template: dict) -> int | None:
    """The id a post-processor template puts before every text, or None if it adds nothing."""
    single = template["single"]
    if [piece.get("Sequence", {}).get("id") for piece in single] == ["A"]:
        return None
    first = single[0].get("SpecialToken", {}).get("id")
    bos_ids = template.get("special_tokens", {}).get(first, {}).get("ids") or []
    if len(single) != 2 or single[1].get("Sequence", {}).get("id") != "A" or len(bos_ids) != 1:
        raise TokenizerError(
            f"{path}: the post-processor adds tokens other than one BOS before the text; not supported"
        )
    return bos_ids[0]


# --- GGUF files ---------------------------------------------------------------------------------


def tokenizer_from_gguf(path: str | Path) -> Tokenizer:
    """The tokenizer stored in a GGUF file (tensors are not read): a byte-level BPE
    (``tokenizer.ggml.model`` 'gpt2') or Gemma's SentencePiece BPE ('llama').

    Built once per process and file version (reading Gemma's vocabulary takes seconds).
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
        meta = read_header(path).metadata
    except GGUFHeaderError as e:
        raise TokenizerError(str(e)) from e
    model, architecture = meta.get("tokenizer.ggml.model"), meta.get("general.architecture")
    if "tokenizer.ggml.tokens" not in meta:
        raise TokenizerError(f"{path.name} has no tokenizer (no tokenizer.ggml.tokens); use a GGUF with one")
    if model == "gpt2":
        spec = _byte_level_spec(path, meta)
    elif model == "llama" and architecture in GEMMA_ARCHITECTURES:
        spec = _gemma_spec(meta)
    else:
        raise TokenizerError(
            f"{path.name}: tokenizer.ggml.model {model!r} for architecture {architecture!r} is not supported "
            f"(supported: 'gpt2', and 'llama' for {', '.join(GEMMA_ARCHITECTURES)})"
        )
    if meta.get("tokenizer.ggml.add_eos_token"):
        raise TokenizerError(f"{path.name}: the tokenizer appends EOS to every text (add_eos_token); not supported")
    add_bos = meta.get("tokenizer.ggml.add_bos_token", model == "llama")  # llama.cpp's default, as transformers
    bos_id = meta.get("tokenizer.ggml.bos_token_id")
    if add_bos and bos_id is None:
        raise TokenizerError(f"{path.name}: add_bos_token is set but there is no bos_token_id")
    return _tokenizer_from_spec(
        path.stem, spec, bos_id=bos_id, eos_id=meta.get("tokenizer.ggml.eos_token_id"), add_bos=bool(add_bos)
    )


def _byte_level_spec(path: Path, meta: dict) -> dict:
    """tokenizer.json for a byte-level GGUF, as transformers builds it (GPT2Tokenizer)."""
    pre = meta.get("tokenizer.ggml.pre")
    if pre not in GGUF_PRE_TOKENIZERS:
        raise TokenizerError(
            f"{path.name}: pre-tokenizer {pre!r} is not supported (supported: {sorted(GGUF_PRE_TOKENIZERS)})"
        )
    spelling = _byte_to_unicode()
    alphabet = set(spelling.values())
    tokens = meta["tokenizer.ggml.tokens"]
    vocab = {
        token if set(token) <= alphabet else "".join(spelling[b] for b in token.encode()): i
        for i, token in enumerate(tokens)
    }
    merges = [m.split(" ") for m in meta.get("tokenizer.ggml.merges", [])]
    model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
             "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
             "vocab": vocab, "merges": merges}
    return _spec(model, _gguf_added_tokens(meta, vocab, in_alphabet=alphabet), None,
                 GGUF_PRE_TOKENIZERS[pre], _BYTE_LEVEL)


def _gemma_spec(meta: dict) -> dict:
    """tokenizer.json for Gemma's SentencePiece GGUF, as transformers builds it (GemmaTokenizer).

    Tokens of spaces are stored as real spaces and renamed to '▁'s. The file lists no merges:
    every cut of a token into two tokens is one, earlier tokens first, longer left part first
    (transformers' generate_merges ordered by position, since Gemma's scores are not merge order).
    """
    tokens = ["▁" * len(t) if " " in t and not t.strip() else t for t in meta["tokenizer.ggml.tokens"]]
    vocab = {token: i for i, token in enumerate(tokens)}
    merges = []
    for token in sorted(vocab, key=vocab.__getitem__):
        for k in range(len(token) - 1, 0, -1):
            left = token[:k]
            if left in vocab and (right := token[k:]) in vocab:
                merges.append((left, right))
    unk_id = meta.get("tokenizer.ggml.unknown_token_id")
    model = {"type": "BPE", "dropout": None, "unk_token": tokens[unk_id] if unk_id is not None else "<unk>",
             "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
             "byte_fallback": True, "ignore_merges": False, "vocab": vocab, "merges": merges}
    decoder = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}
    ]}
    return _spec(
        model,
        _gguf_added_tokens(meta, vocab, in_alphabet=None),
        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": False},
        decoder,
    )


def _gguf_added_tokens(meta: dict, vocab: dict[str, int], in_alphabet: set[str] | None) -> list[dict]:
    """Control tokens as special added tokens, user-defined ones ("\\n\\n" in Gemma) as plain added
    tokens, as transformers adds them. A byte-level file's control token spelled outside the byte
    alphabet is a llama.cpp mislabel and stays an ordinary token."""
    added = []
    for token, kind in zip(meta["tokenizer.ggml.tokens"], meta.get("tokenizer.ggml.token_type", [])):
        control = kind == GGUF_CONTROL and (in_alphabet is None or set(token) <= in_alphabet)
        if (control or kind == GGUF_USER_DEFINED) and token in vocab:
            added.append({"id": vocab[token], "content": token, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": control})
    return added


def _spec(model: dict, added: list[dict], normalizer, pre_tokenizer: dict, decoder: dict) -> dict:
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": normalizer, "pre_tokenizer": pre_tokenizer, "post_processor": None,
            "decoder": decoder, "model": model}
