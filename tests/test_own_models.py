"""A model a user built and saved opens in gptviz (gptviz/weights/user_file.py): the book's GPTModel,
Llama3Model and Qwen3Model (built here from the installed llms_from_scratch), and nanoGPT's ckpt.pt (its model
from tests/nanogpt_reference.py, saved as its train.py does). Each on seeded random weights of odd shapes gives
the class's own logits; what a file cannot say is an option, and every refusal says what to do."""
from __future__ import annotations

import json
import os
import pickle
import shlex
from pathlib import Path

import pytest
import torch
from llms_from_scratch.ch04 import GPTModel
from llms_from_scratch.llama3 import Llama3Model
from llms_from_scratch.qwen3 import Qwen3Model
from safetensors.torch import save_file

import gptviz
from gptviz.__main__ import main
from gptviz.config import GPTConfig
from gptviz.loading import load_model, weights_origin
from gptviz.model import GPT
from gptviz.tokenizer import CharTokenizer, char_tokenizer, char_vocabulary_spec
from gptviz.weights import WeightsError
from gptviz.weights.book import from_book_state_dict, to_book_state_dict
from nanogpt_reference import GPT as NanoGPT
from nanogpt_reference import GPTConfig as NanoConfig
from numerics import assert_close

VOCAB = 101  # odd sizes throughout: nothing lines up by accident
CHARS = [chr(0x100 + i) for i in range(VOCAB)]
BOOK_GPT = dict(vocab_size=VOCAB, context_length=37, emb_dim=48, n_heads=3, n_layers=3, drop_rate=0.0, qkv_bias=False)
# 6 heads of 8 in 2 key/value groups; rope_freq's original context 64 puts the head's four frequencies in all
# three of llama3 scaling's bands (wavelength 6.3 kept, 30 blended, 140 and 660 divided by the factor)
LLAMA3 = dict(vocab_size=VOCAB, context_length=37, emb_dim=48, n_heads=6, n_layers=3, hidden_dim=70, n_kv_groups=2,
              rope_base=500.0, dtype=torch.float32,
              rope_freq=dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_context_length=64))
# 4 heads of 10 (not emb_dim / n_heads) in 2 key/value groups
QWEN3 = dict(vocab_size=VOCAB, context_length=37, emb_dim=48, n_heads=4, n_layers=3, hidden_dim=70, head_dim=10,
             qk_norm=True, n_kv_groups=2, rope_base=1000.0, dtype=torch.float32)
NANO = dict(n_layer=3, n_head=3, n_embd=48, block_size=37, bias=True, vocab_size=VOCAB, dropout=0.0)


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Seeded random weights: matrices of scale 1/sqrt(fan_in), norm gains around 1, biases around 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            gain = name.endswith(("scale", "norm1.weight", "norm2.weight", "norm.weight", "ln_1.weight",
                                  "ln_2.weight", "ln_f.weight"))
            p.copy_(noise / p.shape[1] ** 0.5 if p.ndim == 2 else 0.2 * noise + (1.0 if gain else 0.0))
    return model.eval()


def random_ids(n: int = 37, vocab: int = VOCAB) -> torch.Tensor:
    return torch.randint(0, vocab, (2, n), generator=torch.Generator().manual_seed(1))


def chars_file(tmp_path: Path, chars=CHARS) -> Path:
    """A text whose sorted characters are the vocabulary (a character model's training text)."""
    path = tmp_path / "input.txt"
    path.write_text("".join(reversed(chars)) * 2, encoding="utf-8")
    return path


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids)


# ---- the book's GPTModel -------------------------------------------------------------------------


@pytest.mark.parametrize("qkv_bias", [False, True], ids=["no-qkv-bias", "qkv-bias"])
def test_the_books_gptmodel_opens_with_its_own_logits(tmp_path, qkv_bias):
    book = randomize(GPTModel(BOOK_GPT | dict(qkv_bias=qkv_bias)), seed=2)
    torch.save(book.state_dict(), tmp_path / "model.pth")
    ours = load_model(str(tmp_path / "model.pth"), n_heads=3, tokenizer=str(chars_file(tmp_path)))
    c = ours.config
    assert (c.vocab_size, c.n_ctx, c.d_model, c.n_layer, c.n_head, c.d_mlp) == (VOCAB, 37, 48, 3, 3, 192)
    assert c.qkv_bias == qkv_bias and not c.tie_embeddings and isinstance(ours.tokenizer, CharTokenizer)
    ids = random_ids()
    # the book's hand-written attention and tanh GELU against the fused kernels: float32 rounding of the same maths
    assert_close(logits(ours, ids), logits(book, ids), ulps=64)


def test_one_name_table_read_both_ways():
    config = GPTConfig(arch="gpt2", vocab_size=VOCAB, n_ctx=37, d_model=48, n_layer=3, n_head=3, n_kv_head=3,
                       d_mlp=192, norm_eps=1e-5, norm="layernorm", positional="learned", mlp="gelu", gelu="tanh",
                       qkv_bias=True, out_bias=True, mlp_bias=True, tie_embeddings=False)
    model = randomize(GPT(config), seed=3)
    back_config, back = from_book_state_dict(to_book_state_dict(model), n_heads=3)
    assert back_config == config
    assert back.keys() == model.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())


def test_a_safetensors_file_and_a_chapter_5_checkpoint_open_too(tmp_path):
    book = randomize(GPTModel(BOOK_GPT), seed=4)
    save_file({k: v.contiguous() for k, v in book.state_dict().items()}, tmp_path / "model.safetensors")
    optimizer = torch.optim.AdamW(book.parameters())
    torch.save({"model_state_dict": book.state_dict(), "optimizer_state_dict": optimizer.state_dict()},
               tmp_path / "model_and_optimizer.pth")  # as the book's chapter 5 saves both
    tokenizer = str(chars_file(tmp_path))
    ids = random_ids()
    for name in ("model.safetensors", "model_and_optimizer.pth"):
        ours = load_model(str(tmp_path / name), n_heads=3, tokenizer=tokenizer)
        assert_close(logits(ours, ids), logits(book, ids), ulps=64)  # as above


# ---- the book's Llama3Model and Qwen3Model --------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_the_books_llama3_opens_with_its_own_logits(tmp_path, dtype):
    book = randomize(Llama3Model(LLAMA3 | dict(dtype=dtype)), seed=5)
    torch.save(book.state_dict(), tmp_path / "llama.pth")
    reference = Llama3Model(LLAMA3).eval()  # the same weights, computed in float32 as gptviz does
    reference.load_state_dict({k: v.float() for k, v in book.state_dict().items()})
    path, tokenizer = str(tmp_path / "llama.pth"), str(chars_file(tmp_path))
    ours = load_model(path, n_heads=6, context_length=37, rope_base=500.0, rope_freq=LLAMA3["rope_freq"],
                      tokenizer=tokenizer)
    c = ours.config
    assert (c.n_head, c.n_kv_head, c.d_head, c.d_mlp, c.norm_eps, c.rope.scaling) == (6, 2, 8, 70, 1e-5, "llama3")
    ids = random_ids()
    # hand-written attention against the fused kernel: float32 rounding of the same maths
    assert_close(logits(ours, ids), logits(reference, ids), ulps=64)
    unscaled = load_model(path, n_heads=6, context_length=37, rope_base=500.0, rope_freq=None, tokenizer=tokenizer)
    assert not torch.allclose(logits(unscaled, ids), logits(reference, ids), atol=1e-3)  # rope_freq does matter


@pytest.mark.parametrize("qk_norm", [True, False], ids=["qk-norm", "no-qk-norm"])
def test_the_books_qwen3_opens_with_its_own_logits(tmp_path, qk_norm):
    book = randomize(Qwen3Model(QWEN3 | dict(qk_norm=qk_norm)), seed=6)
    torch.save(book.state_dict(), tmp_path / "qwen3.pth")
    heads = {} if qk_norm else dict(n_heads=4)  # q_norm's size is head_dim: the heads follow from W_query
    ours = load_model(str(tmp_path / "qwen3.pth"), context_length=37, rope_base=1000.0,
                      tokenizer=str(chars_file(tmp_path)), **heads)
    c = ours.config
    assert (c.n_head, c.n_kv_head, c.d_head, c.norm_eps, c.qk_norm) == (4, 2, 10, 1e-6, qk_norm)
    ids = random_ids()
    assert_close(logits(ours, ids), logits(book, ids), ulps=64)  # as for Llama 3


# ---- nanoGPT ---------------------------------------------------------------------------------------


def save_nanogpt(path: Path, seed: int, compiled: bool = False, **args) -> NanoGPT:
    """A nanoGPT model with random weights, saved as its train.py saves a checkpoint."""
    model_args = NANO | args
    model = randomize(NanoGPT(NanoConfig(**model_args)), seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = random_ids(vocab=model_args["vocab_size"])
    model.train()
    model(ids, ids)[1].backward()
    optimizer.step()  # the optimizer's state holds tensors too, as in a real checkpoint
    model.eval()
    raw_model = torch.compile(model) if compiled else model  # compiled: every key starts with _orig_mod.
    checkpoint = {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(), "model_args": model_args,
                  "iter_num": 250, "best_val_loss": torch.tensor(1.47),
                  "config": {"dataset": "shakespeare_char", "batch_size": 12, "learning_rate": 1e-3}}
    torch.save(checkpoint, path)
    return model


def nano_logits(model: NanoGPT, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, ids)[0]  # with targets nanoGPT returns every position's logits


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # torch.compile's
def test_a_compiled_nanogpt_checkpoint_opens_with_its_own_logits(tmp_path):
    path = tmp_path / "ckpt.pt"
    nano = save_nanogpt(path, seed=7, compiled=True, vocab_size=50304)  # no meta.pkl: nanoGPT's padded GPT-2 vocab
    assert next(iter(torch.load(path, weights_only=True)["model"])).startswith("_orig_mod.")
    ours = load_model(str(path))
    c = ours.config
    assert (c.n_head, c.n_ctx, c.gelu, c.qkv_bias, c.tie_embeddings, ours.tokenizer.name) == \
        (3, 37, "exact", True, True, "gpt2")
    ids = random_ids(vocab=50257)
    assert_close(logits(ours, ids), nano_logits(nano, ids), ulps=8)  # the same kernels in the same order


def test_a_nanogpt_char_model_without_biases_reads_its_meta_pkl(tmp_path):
    chars = sorted(set("First Citizen:\nBefore we proceed any further, hear me speak.\n"))
    nano = save_nanogpt(tmp_path / "ckpt.pt", seed=8, bias=False, vocab_size=len(chars))
    with open(tmp_path / "meta.pkl", "wb") as f:  # as data/shakespeare_char/prepare.py writes it
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)),
                     "stoi": {c: i for i, c in enumerate(chars)}}, f)
    ours = load_model(str(tmp_path / "ckpt.pt"))
    assert ours.tokenizer.chars == tuple(chars) and not ours.config.qkv_bias
    ids = random_ids(vocab=len(chars))
    assert_close(logits(ours, ids), nano_logits(nano, ids), ulps=8)  # as above
    assert ours.tokenizer.encode("hear me") == [chars.index(c) for c in "hear me"]


def test_a_bare_nanogpt_state_dict_with_the_slow_attentions_mask_needs_n_heads(tmp_path):
    nano = randomize(NanoGPT(NanoConfig(**NANO)), seed=9)
    sd = nano.state_dict()
    sd |= {f"transformer.h.{i}.attn.bias": torch.tril(torch.ones(37, 37)).view(1, 1, 37, 37) for i in range(3)}
    torch.save(sd, tmp_path / "nano.pt")  # no model_args; the buffer torch < 2.0 kept
    tokenizer = str(chars_file(tmp_path))
    with pytest.raises(WeightsError, match=r"n_heads: .* does not say how many heads"):
        load_model(str(tmp_path / "nano.pt"), tokenizer=tokenizer)
    ours = load_model(str(tmp_path / "nano.pt"), n_heads=3, tokenizer=tokenizer)
    ids = random_ids()
    assert_close(logits(ours, ids), nano_logits(nano, ids), ulps=8)  # as above


# ---- what a file cannot say, and what contradicts it -------------------------------------------------


@pytest.fixture()
def book_gpt(tmp_path) -> Path:
    path = tmp_path / "model.pth"
    torch.save(randomize(GPTModel(BOOK_GPT | dict(vocab_size=50257)), seed=10).state_dict(), path)
    return path


@pytest.fixture()
def book_llama(tmp_path) -> Path:
    path = tmp_path / "llama.pth"
    torch.save(randomize(Llama3Model(LLAMA3 | dict(vocab_size=50257)), seed=11).state_dict(), path)
    return path


def test_the_head_count_is_asked_for_and_checked(book_gpt):
    with pytest.raises(WeightsError, match=r"n_heads: .*model\.pth does not say how many heads.*pass n_heads="):
        load_model(str(book_gpt))
    with pytest.raises(WeightsError, match=r"n_heads=5 does not fit .*emb_dim 48 .* 5 heads"):
        load_model(str(book_gpt), n_heads=5)
    with pytest.raises(WeightsError, match=r"context_length=64 does not fit .*pos_emb has 37"):
        load_model(str(book_gpt), n_heads=3, context_length=64)
    model = load_model(str(book_gpt), n_heads=3)  # vocabulary 50,257: GPT-2's tokenizer without being told
    assert model.tokenizer.name == "gpt2" and model.name == "model.pth"


LLAMA_OPTIONS = dict(n_heads=6, context_length=37, rope_base=500.0, rope_freq=LLAMA3["rope_freq"])


@pytest.mark.parametrize("left_out", ["n_heads", "context_length", "rope_base", "rope_freq"])
def test_each_llama3_option_the_file_cannot_say_is_named(book_llama, left_out):
    options = {k: v for k, v in LLAMA_OPTIONS.items() if k != left_out}
    with pytest.raises(WeightsError, match=rf"^{left_out}: .* does not say"):
        load_model(str(book_llama), **options)


def test_shapes_that_contradict_an_option_are_refused(book_llama, tmp_path):
    with pytest.raises(WeightsError, match=r"n_kv_heads=3 does not fit .*W_key's 16 rows are 2 heads of 8"):
        load_model(str(book_llama), n_kv_heads=3, **LLAMA_OPTIONS)
    with pytest.raises(WeightsError, match=r"n_heads=16 does not fit .*heads of 3 dimensions"):
        load_model(str(book_llama), **LLAMA_OPTIONS | dict(n_heads=16))
    assert load_model(str(book_llama), n_kv_heads=2, **LLAMA_OPTIONS).config.n_kv_head == 2
    torch.save(randomize(Qwen3Model(QWEN3), seed=12).state_dict(), tmp_path / "qwen3.pth")
    with pytest.raises(WeightsError, match=r"n_heads=5 does not fit .*W_query's 40 rows are 4 heads of 10"):
        load_model(str(tmp_path / "qwen3.pth"), n_heads=5, context_length=37, rope_base=1e3, tokenizer="gpt2")
    save_nanogpt(tmp_path / "ckpt.pt", seed=13, vocab_size=50257)
    with pytest.raises(WeightsError, match=r"n_heads=4 does not fit .*model_args say n_head=3"):
        load_model(str(tmp_path / "ckpt.pt"), n_heads=4)


def test_options_are_checked_by_name(book_gpt, book_llama, tiny_gpt2_dir):
    with pytest.raises(ValueError, match=r"Unknown option n_head: load_model takes n_heads, "):
        load_model(str(book_gpt), n_head=3)
    with pytest.raises(ValueError, match=r"rope_base does not apply to the book's GPTModel .*leave it out"):
        load_model(str(book_gpt), n_heads=3, rope_base=1e4)
    with pytest.raises(ValueError, match=r"n_heads: options are for a weight file .* leave them out"):
        load_model(str(tiny_gpt2_dir), n_heads=3)
    with pytest.raises(ValueError, match=r"rope_freq must be None or a dict of exactly factor"):
        load_model(str(book_llama), **LLAMA_OPTIONS | dict(rope_freq={"factor": 8}))


# ---- files that are refused ---------------------------------------------------------------------------


class Payload:
    """Unpickled, this runs a shell command (what a malicious weight file does)."""

    def __init__(self, marker: Path):
        self.command = f"echo ran > {shlex.quote(str(marker))}"

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_file_that_would_run_code_is_refused_and_never_run(tmp_path):
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(Payload(proof)))  # the payload is real: plain unpickling runs it
    assert proof.exists()
    marker = tmp_path / "marker"
    torch.save({"tok_emb.weight": torch.zeros(3, 4), "evil": Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match=r"evil\.pth would run code when unpickled .*refused it and ran nothing"):
        load_model(str(tmp_path / "evil.pth"), n_heads=1)
    with pytest.raises(WeightsError, match="would run code"):
        weights_origin(str(tmp_path / "evil.pth"))
    torch.save(randomize(GPTModel(BOOK_GPT), seed=14).state_dict(), tmp_path / "model.pth")
    (tmp_path / "meta.pkl").write_bytes(pickle.dumps({"itos": Payload(marker)}))
    with pytest.raises(WeightsError, match=r"meta\.pkl holds more than plain data \(posix\.system\).*ran nothing"):
        load_model(str(tmp_path / "model.pth"), n_heads=3, tokenizer=str(tmp_path / "meta.pkl"))
    assert not marker.exists()


def test_a_whole_pickled_model_gets_told_to_save_its_state_dict(tmp_path):
    torch.save(GPTModel(BOOK_GPT), tmp_path / "whole.pth")
    with pytest.raises(WeightsError, match=r"whole pickled object \(llms_from_scratch\.ch04\.GPTModel\).*"
                                           r"torch\.save\(model\.state_dict\(\), 'model\.pth'\)"):
        load_model(str(tmp_path / "whole.pth"), n_heads=3)


def test_a_meta_pkl_with_a_class_inside_is_refused(tmp_path):
    from collections import OrderedDict

    (tmp_path / "meta.pkl").write_bytes(pickle.dumps({"itos": OrderedDict(enumerate(CHARS))}))
    torch.save(randomize(GPTModel(BOOK_GPT), seed=14).state_dict(), tmp_path / "model.pth")
    with pytest.raises(WeightsError, match=r"meta\.pkl holds more than plain data \(collections\.OrderedDict\)"):
        load_model(str(tmp_path / "model.pth"), n_heads=3)  # the meta.pkl beside it is read the same careful way


def test_files_that_are_no_state_dict_gptviz_knows(tmp_path, tiny_gpt2):
    torch.save({"notes": "hello", "step": 3}, tmp_path / "notes.pt")
    with pytest.raises(WeightsError, match=r"holds a dict of notes, step, not a state dict"):
        load_model(str(tmp_path / "notes.pt"))
    torch.save({"encoder.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match=r"does not know .*encoder\.weight.*the book's GPTModel"):
        load_model(str(tmp_path / "other.pt"))
    from gptviz.weights.save import gpt2_state_dict

    torch.save(gpt2_state_dict(tiny_gpt2), tmp_path / "pytorch_model.bin")  # Hugging Face's Conv1D layout
    with pytest.raises(WeightsError, match=r"Hugging Face GPT-2 weights .*save_pretrained"):
        load_model(str(tmp_path / "pytorch_model.bin"))
    (tmp_path / "broken.pth").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match=r"broken\.pth cannot be read as a file torch\.save wrote"):
        load_model(str(tmp_path / "broken.pth"))


# ---- tokenizers ---------------------------------------------------------------------------------------


def test_a_vocabulary_that_is_not_gpt2s_needs_the_tokenizer_option(tmp_path):
    save_nanogpt(tmp_path / "ckpt.pt", seed=15)
    with pytest.raises(WeightsError, match=r"tokenizer: .*101 tokens.*data/shakespeare_char/meta\.pkl"):
        load_model(str(tmp_path / "ckpt.pt"))


def test_every_kind_of_tokenizer_option(tmp_path):
    save_nanogpt(tmp_path / "ckpt.pt", seed=16)
    (tmp_path / "tok").mkdir()
    spec = char_vocabulary_spec(char_tokenizer(CHARS))
    (tmp_path / "tok" / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    with open(tmp_path / "vocab.pkl", "wb") as f:
        pickle.dump({"vocab_size": VOCAB, "itos": dict(enumerate(CHARS))}, f)
    (tmp_path / "my-chars.json").write_text(json.dumps(spec), encoding="utf-8")  # an upload keeps its own name
    for option in (tmp_path / "tok", tmp_path / "tok" / "tokenizer.json", tmp_path / "my-chars.json",
                   tmp_path / "vocab.pkl", chars_file(tmp_path)):
        tokenizer = load_model(str(tmp_path / "ckpt.pt"), tokenizer=str(option)).tokenizer
        assert tokenizer.chars == tuple(CHARS), option
    with pytest.raises(WeightsError, match="tokenizer: .*nothing.txt does not exist"):
        load_model(str(tmp_path / "ckpt.pt"), tokenizer=str(tmp_path / "nothing.txt"))
    with pytest.raises(WeightsError, match="the tokenizer has 50257 tokens but the model only 101"):
        load_model(str(tmp_path / "ckpt.pt"), tokenizer="gpt2")


# ---- description and the command line ------------------------------------------------------------


def test_weights_origin_describes_each_kind_of_file(tmp_path, book_gpt, book_llama):
    assert weights_origin(str(book_gpt)) == "the book's GPTModel state dict model.pth (47 tensors), float32"
    assert weights_origin(str(book_llama)).startswith("the book's Llama3Model state dict llama.pth (")
    book = Llama3Model(LLAMA3 | dict(dtype=torch.bfloat16))
    torch.save(book.state_dict(), tmp_path / "llama-bf16.pth")
    assert weights_origin(str(tmp_path / "llama-bf16.pth")).endswith("bfloat16; used as float32")
    save_nanogpt(tmp_path / "ckpt.pt", seed=17)
    assert weights_origin(str(tmp_path / "ckpt.pt")) == \
        "nanoGPT's GPT checkpoint ckpt.pt (41 tensors, saved at iteration 250), float32"


def test_the_command_line_takes_the_options(book_llama, capsys):
    freq = json.dumps(LLAMA3["rope_freq"])
    argv = ["Hello", "--model", str(book_llama), "--n-heads", "6", "--context-length", "37", "--rope-base", "500",
            "--top", "3", "--json"]
    assert main([*argv, "--rope-freq", freq]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = load_model(str(book_llama), **LLAMA_OPTIONS)
    ids = expected.tokenizer.encode("Hello")
    assert out["model"] == "llama.pth" and [t["id"] for t in out["tokens"]] == ids
    top = torch.topk(logits(expected, torch.tensor([ids]))[0, -1], 3).indices.tolist()
    assert [n["id"] for n in out["next"]] == top
    assert main(argv) == 2
    assert "rope_freq: " in capsys.readouterr().err
    assert main([*argv, "--rope-freq", "none"]) == 0


def test_gptviz_exports_the_same_load_model():
    assert gptviz.load_model is load_model
