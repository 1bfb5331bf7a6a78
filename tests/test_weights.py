"""gptviz/weights/ and loading.py: HF directories, GGUF conversion and its cache, the hub offline.

References are transformers models built here with random weights (no hub, no network),
and transformers' own GGUF loader for the shipped SmolLM2 file.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import gptviz.weights.gguf as gguf_weights
import gptviz.weights.hub as hub
from gptviz.architectures import config_from_hf
from gptviz.loading import MODEL_NAMES, load_model
from gptviz.model import GPT
from gptviz.packages import smollm2_gguf_path
from gptviz.weights import WeightsError, download, is_cached, load_gguf, load_hf_dir, param_shapes
from numerics import assert_close

ROOT = Path(__file__).resolve().parents[1]
GPT2_VOCAB = 50257  # dirs without tokenizer files get GPT-2's tokenizer: the model needs that many rows


def tiny_gpt2(vocab_size: int = GPT2_VOCAB) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=4, n_embd=32, n_positions=64, vocab_size=vocab_size,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def tiny_llama(tie: bool, vocab_size: int = GPT2_VOCAB) -> LlamaForCausalLM:
    torch.manual_seed(1)
    config = LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
                         intermediate_size=48, vocab_size=vocab_size, max_position_embeddings=64,
                         rope_theta=50000.0, rms_norm_eps=1e-5, tie_word_embeddings=tie)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # HF initialises norms to 1: randomise them so a swapped norm shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def hf_sd(model) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.state_dict().items()}


def hf_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


IDS = torch.tensor([[5, 17, 300, 2, 49, 1000, 7, 7]])


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> tuple[Path, GPT2LMHeadModel]:
    model = tiny_gpt2()
    path = tmp_path_factory.mktemp("gpt2") / "tiny-gpt2"
    model.save_pretrained(path)
    return path, model


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def llama_dir(request, tmp_path_factory) -> tuple[Path, LlamaForCausalLM]:
    model = tiny_llama(tie=request.param)
    path = tmp_path_factory.mktemp("llama") / "tiny-llama"
    model.save_pretrained(path)
    return path, model


def copy_dir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------- Hugging Face directories


@pytest.mark.parametrize("make", [lambda: tiny_gpt2(), lambda: tiny_llama(True), lambda: tiny_llama(False)])
def test_param_shapes_are_those_of_the_model(make):
    config = config_from_hf(make().config.to_dict())
    model = GPT(config)
    assert param_shapes(config) == {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_gpt2_dir_matches_hf(gpt2_dir):
    path, hf = gpt2_dir
    config, sd = load_hf_dir(path)
    ref = {k.removeprefix("transformer."): v for k, v in hf_sd(hf).items()}
    assert (config.arch, config.n_layer, config.d_model, config.vocab_size) == ("gpt2", 2, 32, GPT2_VOCAB)
    assert {k: tuple(v.shape) for k, v in sd.items()} == param_shapes(config)
    assert all(v.dtype == torch.float32 and v.is_contiguous() for v in sd.values())
    assert torch.equal(sd["tok_emb.weight"], ref["wte.weight"])
    assert torch.equal(sd["pos_emb.weight"], ref["wpe.weight"])
    assert torch.equal(sd["blocks.1.attn.qkv.weight"], ref["h.1.attn.c_attn.weight"].t())
    assert torch.equal(sd["blocks.1.attn.qkv.bias"], ref["h.1.attn.c_attn.bias"])
    assert torch.equal(sd["blocks.0.attn.out_proj.weight"], ref["h.0.attn.c_proj.weight"].t())
    assert torch.equal(sd["blocks.0.mlp.fc_in.weight"], ref["h.0.mlp.c_fc.weight"].t())
    assert torch.equal(sd["blocks.0.mlp.fc_out.weight"], ref["h.0.mlp.c_proj.weight"].t())
    assert torch.equal(sd["final_norm.bias"], ref["ln_f.bias"])
    assert "lm_head.weight" not in sd


def test_load_model_gpt2_dir_logits_match_hf(gpt2_dir):
    path, hf = gpt2_dir
    model = load_model(str(path))
    assert model.name == "tiny-gpt2" and model.tokenizer.n_vocab == GPT2_VOCAB
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert not any(p.is_meta for p in model.parameters())
    with torch.no_grad():
        assert_close(model(IDS), hf_logits(hf, IDS), ulps=64)  # vs transformers' own kernels (float32)


def test_llama_dir_matches_hf(llama_dir):
    path, hf = llama_dir
    config, sd = load_hf_dir(path)
    ref = hf_sd(hf)
    assert (config.arch, config.n_head, config.n_kv_head, config.rope.theta) == ("llama", 4, 2, 50000.0)
    assert config.tie_embeddings == hf.config.tie_word_embeddings
    assert {k: tuple(v.shape) for k, v in sd.items()} == param_shapes(config)
    for i in range(2):
        layer = f"model.layers.{i}."
        qkv = torch.cat([ref[layer + f"self_attn.{n}_proj.weight"] for n in "qkv"])
        assert torch.equal(sd[f"blocks.{i}.attn.qkv.weight"], qkv)
        gate_up = torch.cat([ref[layer + "mlp.gate_proj.weight"], ref[layer + "mlp.up_proj.weight"]])
        assert torch.equal(sd[f"blocks.{i}.mlp.fc_in.weight"], gate_up)
        assert torch.equal(sd[f"blocks.{i}.mlp.fc_out.weight"], ref[layer + "mlp.down_proj.weight"])
        assert torch.equal(sd[f"blocks.{i}.norm2.weight"], ref[layer + "post_attention_layernorm.weight"])
    assert ("lm_head.weight" in sd) == (not config.tie_embeddings)
    if not config.tie_embeddings:
        assert torch.equal(sd["lm_head.weight"], ref["lm_head.weight"])


def test_load_model_llama_dir_logits_match_hf(llama_dir):
    path, hf = llama_dir
    model = load_model(str(path))
    with torch.no_grad():
        assert_close(model(IDS), hf_logits(hf, IDS), ulps=64)  # vs transformers' own kernels (float32)


def test_gpt2_keys_without_transformer_prefix(gpt2_dir, tmp_path):
    path = copy_dir(gpt2_dir[0], tmp_path / "bare")
    tensors = load_file(path / "model.safetensors")
    save_file({k.removeprefix("transformer."): v for k, v in tensors.items()}, path / "model.safetensors")
    _, sd = load_hf_dir(path)
    _, ref = load_hf_dir(gpt2_dir[0])
    assert all(torch.equal(sd[k], ref[k]) for k in ref)


def test_sharded_dir_loads_like_single_file(llama_dir, tmp_path):
    path = tmp_path / "sharded"
    llama_dir[1].save_pretrained(path, max_shard_size="1MB")
    assert (path / "model.safetensors.index.json").is_file() and not (path / "model.safetensors").exists()
    assert len(list(path.glob("model-*.safetensors"))) > 1
    _, sd = load_hf_dir(path)
    _, ref = load_hf_dir(llama_dir[0])
    assert sd.keys() == ref.keys() and all(torch.equal(sd[k], ref[k]) for k in ref)


def test_half_precision_checkpoint_becomes_float32(tmp_path):
    hf = tiny_llama(tie=True, vocab_size=100).half()
    hf.save_pretrained(tmp_path / "fp16")
    _, sd = load_hf_dir(tmp_path / "fp16")
    assert all(v.dtype == torch.float32 for v in sd.values())
    assert torch.equal(sd["tok_emb.weight"], hf.model.embed_tokens.weight.float())


def test_truncated_safetensors_names_the_file(gpt2_dir, tmp_path):
    path = copy_dir(gpt2_dir[0], tmp_path / "cut")
    file = path / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="download") as e:
        load_hf_dir(path)
    assert str(file) in str(e.value)


def test_corrupted_safetensors_header_names_the_file(gpt2_dir, tmp_path):
    path = copy_dir(gpt2_dir[0], tmp_path / "bad")
    file = path / "model.safetensors"
    data = bytearray(file.read_bytes())
    data[8:24] = b"\xff" * 16
    file.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="corrupted") as e:
        load_model(str(path))
    assert str(file) in str(e.value)


def test_config_that_does_not_match_the_weights(gpt2_dir, tmp_path):
    path = copy_dir(gpt2_dir[0], tmp_path / "wrong")
    config = json.loads((path / "config.json").read_text())
    config["n_embd"] = 48
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError) as e:
        load_hf_dir(path)
    message = str(e.value)
    assert str(path / "model.safetensors") in message
    assert "transformer.wte.weight" in message
    assert f"({GPT2_VOCAB}, 32)" in message and f"({GPT2_VOCAB}, 48)" in message


def test_missing_and_unexpected_tensors(gpt2_dir, tmp_path):
    path = copy_dir(gpt2_dir[0], tmp_path / "keys")
    tensors = load_file(path / "model.safetensors")
    save_file(tensors | {"transformer.h.0.attn.extra": torch.zeros(3)}, path / "model.safetensors")
    with pytest.raises(WeightsError, match=r"unexpected tensors transformer\.h\.0\.attn\.extra"):
        load_hf_dir(path)
    del tensors["transformer.h.1.ln_2.bias"]
    save_file(tensors, path / "model.safetensors")
    with pytest.raises(WeightsError, match=r"missing tensors h\.1\.ln_2\.bias"):
        load_hf_dir(path)


def test_pickle_only_dir_is_refused_without_unpickling(gpt2_dir, tmp_path, monkeypatch):
    path = tmp_path / "pickled"
    path.mkdir()
    shutil.copy(gpt2_dir[0] / "config.json", path)
    torch.save(gpt2_dir[1].state_dict(), path / "pytorch_model.bin")

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load must never be called")

    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(WeightsError, match="pytorch_model.bin") as e:
        load_model(str(path))
    assert str(path) in str(e.value) and "safetensors" in str(e.value)


def test_tokenizer_larger_than_the_embedding_is_refused(tmp_path):
    tiny_gpt2(vocab_size=100).save_pretrained(tmp_path / "small-vocab")
    with pytest.raises(WeightsError, match="50257 tokens"):
        load_model(str(tmp_path / "small-vocab"))


def test_unknown_model_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as e:
        load_model("gpt3")
    assert all(name in str(e.value) for name in MODEL_NAMES)
    with pytest.raises(ValueError, match="does not exist"):
        load_model("/no/such/model.gguf")
    with pytest.raises(WeightsError, match="owner/name"):
        download("gpt3")


# ---------------------------------------------------------------- GGUF, on a tiny file written here


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf.py does to q and k rows."""
    rows, cols = w.shape
    return w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def write_tiny_gguf(path: Path, hf: LlamaForCausalLM, arch: str = "llama") -> Path:
    """A GGUF file of ``hf`` laid out as llama.cpp writes it (F32 tensors)."""
    c = hf.config
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_freq_base(c.rope_parameters["rope_theta"])
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(c.vocab_size)])
    sd = {k: v.numpy() for k, v in hf_sd(hf).items()}
    names = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
             "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    writer.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(c.num_hidden_layers):
        for gguf_name, hf_name in names.items():
            w = sd[f"model.layers.{i}.{hf_name}.weight"]
            if gguf_name == "attn_q":
                w = llama_cpp_permute(w, c.num_attention_heads)
            elif gguf_name == "attn_k":
                w = llama_cpp_permute(w, c.num_key_value_heads)
            writer.add_tensor(f"blk.{i}.{gguf_name}.weight", np.ascontiguousarray(w))
    writer.add_tensor("output_norm.weight", sd["model.norm.weight"])
    if not c.tie_word_embeddings:
        writer.add_tensor("output.weight", sd["lm_head.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_tiny_gemma3_gguf(path: Path, hf) -> Path:
    """A GGUF file of a transformers Gemma 3 model laid out as llama.cpp writes it: its own
    tensor names, every norm weight stored + 1, q/k rows not permuted, the head tied."""
    c = hf.config
    writer = gguf.GGUFWriter(path, "gemma3")
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_key_length(c.head_dim)
    writer.add_value_length(c.head_dim)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_freq_base(c.rope_parameters["full_attention"]["rope_theta"])
    writer.add_sliding_window(c.sliding_window)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"t{i}" for i in range(c.vocab_size)])
    sd = {k: v.numpy() for k, v in hf_sd(hf).items()}
    names = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
             "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
             "attn_k_norm": "self_attn.k_norm", "post_attention_norm": "post_attention_layernorm",
             "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    writer.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(c.num_hidden_layers):
        for gguf_name, hf_name in names.items():
            w = sd[f"model.layers.{i}.{hf_name}.weight"]
            writer.add_tensor(f"blk.{i}.{gguf_name}.weight", np.ascontiguousarray(w + 1 if "norm" in gguf_name else w))
    writer.add_tensor("output_norm.weight", sd["model.norm.weight"] + 1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_tiny_gemma3_gguf_matches_transformers(tmp_path):
    """Gemma 3 from GGUF: norms shifted back, no q/k permutation, 5-of-6 sliding layers, two rotary θ."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    n_layer = 7
    hf = Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=300, hidden_size=48, intermediate_size=80, num_hidden_layers=n_layer, num_attention_heads=3,
        num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=256, sliding_window=5,
        max_position_embeddings=64, attn_implementation="eager",
        layer_types=["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(n_layer)],
    )).eval()
    with torch.no_grad():  # norms away from their zero init, so a missed shift shows
        for name, p in hf.named_parameters():
            if name.endswith("norm.weight"):
                p.normal_(0, 0.3)
    path = write_tiny_gemma3_gguf(tmp_path / "gemma.gguf", hf)
    config, sd = load_gguf(path, cache_dir=tmp_path)
    assert (config.arch, config.sliding_window, config.layer_types[5], config.rope_local.theta) == (
        "gemma3", 5, "full", 10000.0)
    model = GPT(config)
    model.load_state_dict(sd, strict=True)
    ids = torch.randint(0, 300, (1, 13), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_close(model(ids), hf(ids).logits, ulps=64)  # vs transformers' own kernels (float32)


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def tiny_gguf(request, tmp_path_factory) -> tuple[Path, LlamaForCausalLM]:
    hf = tiny_llama(tie=request.param, vocab_size=300)
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", hf), hf


def cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_tiny_gguf_undoes_llama_cpp_permutation(tiny_gguf, tmp_path):
    path, hf = tiny_gguf
    config, sd = load_gguf(path, cache_dir=tmp_path)
    ref = hf_sd(hf)
    assert (config.n_head, config.n_kv_head, config.rope.theta, config.norm_eps) == (4, 2, 50000.0, 1e-5)
    assert config.tie_embeddings == hf.config.tie_word_embeddings
    assert {k: tuple(v.shape) for k, v in sd.items()} == param_shapes(config)
    for i in range(2):
        qkv = torch.cat([ref[f"model.layers.{i}.self_attn.{n}_proj.weight"] for n in "qkv"])
        assert torch.equal(sd[f"blocks.{i}.attn.qkv.weight"], qkv)
    model = GPT(config)
    model.load_state_dict(sd, strict=True)
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.no_grad():
        assert_close(model(ids), hf_logits(hf, ids), ulps=64)  # vs transformers' own kernels (float32)


def test_gguf_cache_is_reused(tiny_gguf, tmp_path, monkeypatch):
    path, _ = tiny_gguf
    calls = []
    config, sd = load_gguf(path, cache_dir=tmp_path, progress=lambda done, total: calls.append((done, total)))
    n_tensors = 2 + 9 * 2 + (0 if config.tie_embeddings else 1)
    assert calls == [(i, n_tensors) for i in range(1, n_tensors + 1)]
    [entry] = cache_files(tmp_path)
    assert entry.endswith(".safetensors")

    def no_dequantize(*args, **kwargs):
        raise AssertionError("a cached GGUF must not be dequantized again")

    monkeypatch.setattr(gguf.quants, "dequantize", no_dequantize)
    config2, sd2 = load_gguf(path, cache_dir=tmp_path, progress=lambda done, total: calls.append("again"))
    assert config2 == config and sd2.keys() == sd.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert len(calls) == n_tensors
    monkeypatch.undo()

    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched (a fresh install): the same entry
    load_gguf(path, cache_dir=tmp_path)
    assert len(cache_files(tmp_path)) == 1
    with open(path, "ab") as f:  # changed content is converted again
        f.write(b"\0" * 32)
    load_gguf(path, cache_dir=tmp_path)
    assert len(cache_files(tmp_path)) == 2


def test_gguf_cache_write_is_atomic(tiny_gguf, tmp_path, monkeypatch, caplog):
    path, _ = tiny_gguf

    def half_write(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gguf_weights, "save_file", half_write)
    with caplog.at_level(logging.WARNING, logger="gptviz.weights"):
        config, sd = load_gguf(path, cache_dir=tmp_path)
    assert "No space left" in caplog.text
    assert cache_files(tmp_path) == []  # neither a cache entry nor a temp file
    assert {k: tuple(v.shape) for k, v in sd.items()} == param_shapes(config)
    monkeypatch.undo()
    load_gguf(path, cache_dir=tmp_path)
    assert [name.endswith(".safetensors") for name in cache_files(tmp_path)] == [True]


def test_gguf_unwritable_cache_still_loads(tiny_gguf, tmp_path, monkeypatch, caplog):
    path, _ = tiny_gguf
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="gptviz.weights"):
        _, sd = load_gguf(path, cache_dir=blocker / "cache")  # mkdir fails for real
    assert "using them from memory" in caplog.text and "tok_emb.weight" in sd

    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)

    def erofs(*args, **kwargs):  # root ignores the mode bits: say what a read-only mount says
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(gguf_weights.tempfile, "mkstemp", erofs)
    _, sd2 = load_gguf(path, cache_dir=read_only)
    assert cache_files(read_only) == [] and all(torch.equal(sd[k], sd2[k]) for k in sd)


def test_corrupted_cache_entry_is_rebuilt(tiny_gguf, tmp_path, caplog):
    path, _ = tiny_gguf
    _, sd = load_gguf(path, cache_dir=tmp_path)
    [entry] = cache_files(tmp_path)
    (tmp_path / entry).write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="gptviz.weights"):
        _, sd2 = load_gguf(path, cache_dir=tmp_path)
    assert "unusable cache entry" in caplog.text
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert load_file(tmp_path / entry).keys() == sd.keys()


def test_truncated_or_foreign_gguf_names_the_file(tiny_gguf, tmp_path):
    path, hf = tiny_gguf
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(WeightsError, match="truncated") as e:
        load_gguf(cut, cache_dir=tmp_path / "cache")
    assert str(cut) in str(e.value)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(WeightsError, match="download it again") as e:
        load_gguf(junk, cache_dir=tmp_path / "cache")
    assert str(junk) in str(e.value)
    other = write_tiny_gguf(tmp_path / "other.gguf", hf, arch="gpt2")
    with pytest.raises(WeightsError, match="architecture 'gpt2' is not supported"):
        load_gguf(other, cache_dir=tmp_path / "cache")
    assert cache_files(tmp_path / "cache") == []


def test_truncated_smollm2_gguf_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTVIZ_CACHE", str(tmp_path / "cache"))
    cut = tmp_path / "SmolLM2-cut.gguf"
    with open(smollm2_gguf_path(), "rb") as f:
        cut.write_bytes(f.read(1 << 20))
    with pytest.raises(WeightsError) as e:
        load_model(str(cut))
    assert str(cut) in str(e.value)


# ---------------------------------------------------------------- the shipped SmolLM2 GGUF


@pytest.fixture(scope="module")
def smollm2_cache(tmp_path_factory) -> tuple[Path, list]:
    """Converts the shipped GGUF once (~6 s) into a temporary cache."""
    cache = tmp_path_factory.mktemp("gptviz-cache")
    calls: list = []
    load_gguf(smollm2_gguf_path(), cache_dir=cache, progress=lambda done, total: calls.append((done, total)))
    return cache, calls


def test_smollm2_config_and_progress(smollm2_cache):
    cache, calls = smollm2_cache
    config, sd = load_gguf(smollm2_gguf_path(), cache_dir=cache)
    assert (config.arch, config.n_layer, config.n_head, config.n_kv_head) == ("llama", 30, 9, 3)
    assert (config.d_model, config.d_mlp, config.vocab_size, config.n_ctx) == (576, 1536, 49152, 8192)
    assert (config.rope.theta, config.norm_eps, config.tie_embeddings) == (100000.0, 1e-5, True)
    assert calls[-1] == (272, 272) and len(calls) == 272
    assert {k: tuple(v.shape) for k, v in sd.items()} == param_shapes(config)


def test_smollm2_q_k_v_match_transformers_gguf_loader(smollm2_cache, smollm2_hf):
    config, sd = load_gguf(smollm2_gguf_path(), cache_dir=smollm2_cache[0])
    ref = hf_sd(smollm2_hf)
    sizes = [config.n_head * config.d_head, config.n_kv_head * config.d_head, config.n_kv_head * config.d_head]
    for i in range(config.n_layer):
        q, k, v = sd[f"blocks.{i}.attn.qkv.weight"].split(sizes)
        for ours, name in [(q, "q_proj"), (k, "k_proj"), (v, "v_proj")]:
            # the same dequantized weights, by transformers' GGUF loader
            assert_close(ours, ref[f"model.layers.{i}.self_attn.{name}.weight"], ulps=8)


def test_load_model_smollm2_logits_match_transformers(smollm2_cache, smollm2_hf, monkeypatch):
    monkeypatch.setenv("GPTVIZ_CACHE", str(smollm2_cache[0]))
    monkeypatch.setattr(gguf.quants, "dequantize", lambda *a: pytest.fail("the cache was not used"))
    model = load_model("smollm2-135m")
    assert model.name == "smollm2-135m" and model.tokenizer.n_vocab == 49152
    ids = torch.tensor([model.tokenizer.encode("The capital of France is")])
    with torch.no_grad():
        assert_close(model(ids), hf_logits(smollm2_hf, ids), ulps=64)  # vs transformers' own kernels (float32)


# ---------------------------------------------------------------- the hub, without a network


def run_python(code: str, env: dict[str, str]) -> dict:
    """Run ``code`` in a fresh interpreter (huggingface_hub reads its settings at import)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=clean | env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


PROBE_DOWNLOAD = """
    import json, time
    from gptviz.loading import available_offline, default_model_name
    from gptviz.weights import WeightsError, download, is_cached
    start = time.monotonic()
    try:
        download("gpt2-medium")
        error = None
    except WeightsError as e:
        error = str(e)
    seconds = time.monotonic() - start
    print(json.dumps({"error": error, "seconds": seconds, "cached": is_cached("gpt2-medium"),
                      "offline": available_offline(), "default": default_model_name()}))
"""


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}],
                         ids=["offline", "unreachable"])
def test_download_without_hub_fails_fast(env, tmp_path):
    out = run_python(PROBE_DOWNLOAD, env | {"HF_HOME": str(tmp_path / "hf-home")})
    assert out["error"] is not None and out["seconds"] < 5
    assert "gpt2-medium is not in the Hugging Face cache" in out["error"] and "smollm2-135m" in out["error"]
    assert out["cached"] is False
    assert out["offline"] == ["smollm2-135m", "gemma3-270m"] and out["default"] == "smollm2-135m"


def test_cached_gpt2_loads_offline(gpt2_dir, tmp_path):
    snapshot = tmp_path / "hub" / "models--openai-community--gpt2" / "snapshots" / ("ab" * 20)
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(gpt2_dir[0] / name, snapshot / name)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("ab" * 20)
    out = run_python("""
        import json, torch
        from gptviz.loading import available_offline, default_model_name, load_model
        model = load_model("gpt2")
        print(json.dumps({"offline": available_offline(), "default": default_model_name(), "name": model.name,
                          "wte": model.tok_emb.weight[:3, :3].tolist()}))
    """, {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")})
    assert out["offline"] == ["gpt2", "smollm2-135m", "gemma3-270m"]
    assert out["default"] == "gpt2" and out["name"] == "gpt2"
    expected = gpt2_dir[1].transformer.wte.weight[:3, :3]
    assert torch.equal(torch.tensor(out["wte"]), expected)  # the same float32 weights, through JSON: exactly


def test_progress_tqdm_reports_bytes(tmp_path):
    seen = []
    bar_class = hub._progress_tqdm(lambda done, total: seen.append((done, total)))
    bar = bar_class(total=100, initial=10, desc="model.safetensors", unit="B", unit_scale=True,
                    name="huggingface_hub.http_get")
    bar.update(30)
    bar.update_transfer(30)  # xet's second counter must not double-count
    bar.update(60)
    bar.close()
    assert seen == [(40, 100), (100, 100)]
    assert is_cached("gpt2-xl", cache_dir=tmp_path) is False
