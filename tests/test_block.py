"""Inside a block: every step the page shows equals the model's own computation, and transformers'.

Random transformers models of every architecture (odd sizes, grouped-query heads, nh·hs ≠ d_model,
post norms, sliding windows) are run with forward hooks on the modules each step corresponds to;
gptviz's step-by-step numbers must match them to float32 rounding (numerics.assert_close).
"""
from __future__ import annotations

import math

import gguf
import numpy as np
import pytest
import torch
import transformers

import gptviz
from conftest import save_tiny_gpt2, save_tiny_llama
from gptviz import features
from gptviz.analysis import block, positions
from gptviz.architectures import ARCHITECTURES
from gptviz.loading import weights_origin
from gptviz.weights import tensor_types
from numerics import assert_close, close
from test_fidelity import ARCH_CASES, GPT2_CASES, LLAMA_CASES, save_random

PROMPT = "The cat sat on the mat because the cat was tired, and then it slept."

CASES = {  # name -> (saver(path) -> path, T)
    "gpt2-odd": (lambda p: save_tiny_gpt2(p, seed=1, **GPT2_CASES[1][0]), 29),
    "llama-mqa": (lambda p: save_tiny_llama(p, seed=2, **LLAMA_CASES[1][0]), 31),
    **{name: (lambda p, c=ARCH_CASES[name]: save_random(p, c[0], 3, **c[1]), ARCH_CASES[name][2])
       for name in ("gemma3", "qwen3", "llama-bias", "qwen2-sliding", "llama3-rope", "gpt_neox", "gemma2", "phi3",
                    "olmo2")},
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    """(our model, transformers' model, a trace of T random tokens) for one architecture case."""
    saver, T = CASES[request.param]
    path = saver(tmp_path_factory.mktemp(request.param) / "m")
    ours = gptviz.load_model(str(path))
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    ids = torch.randint(0, ours.config.vocab_size, (T,), generator=torch.Generator().manual_seed(T)).tolist()
    return ours, hf, gptviz.trace(ours, ids)


def hf_block_module(hf, arch: str, layer: int, ours: str) -> list[torch.nn.Module]:
    """The transformers modules our block module `ours` is made of (architectures.py's name table)."""
    entry = ARCHITECTURES[arch]
    prefix = entry.block_prefix.format(i=layer)
    if arch == "gpt2":
        prefix = "transformer." + prefix
    return [hf.get_submodule(prefix + name) for name in entry.names[ours]]


def run_with_hooks(hf, ids: list[int], modules: dict[str, torch.nn.Module]) -> dict[str, tuple[torch.Tensor, ...]]:
    """name -> (input, output) of each module in one forward pass (batch dimension dropped)."""
    seen, handles = {}, []
    for name, module in modules.items():
        handles.append(module.register_forward_hook(
            lambda mod, args, out, name=name: seen.__setitem__(name, (args[0][0].detach(), out[0].detach()))))
    try:
        with torch.no_grad():
            hf(torch.tensor([ids]))
    finally:
        for h in handles:
            h.remove()
    return seen


def check_close(actual, expected, **tolerance) -> None:
    """numerics.assert_close, on arrays of the same shape (no broadcasting)."""
    assert tuple(np.shape(actual)) == tuple(np.shape(expected)), (np.shape(actual), np.shape(expected))
    assert_close(actual, expected, **tolerance)


# ---- against transformers -------------------------------------------------------------------------
def test_every_step_matches_transformers(case):
    """Each step against a forward hook on the transformers module it stands for; which norms there
    are and where comes from the block's declared structure (pre, post, both; parallel or not)."""
    ours, hf, tr = case
    cfg, arch = ours.config, ours.config.arch
    nh, hs, T = cfg.n_head, cfg.d_head, tr.n_tokens
    structure = ours.blocks[0].structure
    assert list(block.norm_places(tr)) == list(structure.norms())
    for layer in range(cfg.n_layer):
        names = [*structure.norms(), "attn.qkv", "attn.out_proj", "mlp.fc_in", "mlp.fc_out"]
        modules = {f"{n}/{i}": m for n in names for i, m in enumerate(hf_block_module(hf, arch, layer, n))}
        seen = run_with_hooks(hf, tr.ids, modules)

        # the norms: each step-by-step output equals what transformers' norm module returned
        # (vs transformers' own kernels, float32: ulps=64 here and below)
        for which in block.norm_places(tr):
            x = block.norm_input(tr, layer, which)
            check_close(x, seen[f"{which}/0"][0], ulps=64)
            steps = block.norm_steps(block.norm_module(tr, layer, which), x)
            check_close(steps.out, seen[f"{which}/0"][1], ulps=64)
            check_close(steps.model_out, seen[f"{which}/0"][1], ulps=64)
            check_close(steps.out, steps.model_out, ulps=16)  # the steps rebuild the model's norm: another order

        # q, k, v of one token: x · W (+ b), split into heads (transformers: one or three projections)
        hf_qkv = torch.cat([seen[f"attn.qkv/{i}"][1] for i in range(len(ARCHITECTURES[arch].names["attn.qkv"]))], -1)
        if (rearrange := ARCHITECTURES[arch].rearrange.get("attn.qkv")) is not None:  # GPT-NeoX: per head
            hf_qkv = rearrange(hf_qkv.T, cfg).T
        for position in (0, T // 2, T - 1):
            s = block.qkv_steps(tr, layer, position)
            check_close(np.concatenate([s.q_lin.ravel(), s.k_lin.ravel(), s.v.ravel()]), hf_qkv[position], ulps=64)
            check_close(s.x, seen["attn.qkv/0"][0][position], ulps=64)  # what the attention projections read
            # one token's projections vs the whole sequence's (s.difference, the page's number, is their max)
            check_close(s.q, tr.q(layer)[:, position], ulps=32)
            check_close(s.k, tr.k(layer)[:, position], ulps=32)
            check_close(s.v, tr.v(layer)[:, position], ulps=32)
            if cfg.positional == "learned" and not cfg.qk_norm:
                check_close(s.q, s.q_lin, ulps=0)  # no rotary, no q norm: the projection itself

        # the output projection: concatenated heads through W_O, and the per-head sum
        out = block.attention_output(tr, layer)
        check_close(out.merged, seen["attn.out_proj/0"][0], ulps=64)
        check_close(out.out, seen["attn.out_proj/0"][1], ulps=64)
        # the per-head parts add up to the output (out.head_sum_difference, the page's number): another order
        summed = out.head_parts.sum(0) + (out.bias if out.bias is not None else 0.0)
        check_close(summed, out.out, ulps=16)
        assert out.head_parts.shape == (nh, T, cfg.d_model) and out.merged.shape == (T, nh * hs)
        shares = out.head_shares.sum(0) + (out.bias_share if out.bias_share is not None else 0.0)
        check_close(shares, np.ones(T), rtol=1e-4)  # the heads' shares of the output add up to 1 (float32 parts)
        check_close(out.written, tr.attn_out(layer), ulps=16)  # the same maths, another order
        check_close(out.head_norms, np.linalg.norm(out.head_parts, axis=-1), ulps=8)  # the same norms, recomputed
        if cfg.post_norms:
            check_close(out.written, seen["post_attn_norm/0"][1], ulps=64)

        # the MLP: hidden activations are the input of W_out; its output is W_out's
        mlp = block.mlp_steps(tr, layer)
        check_close(mlp.x, seen["mlp.fc_in/0"][0], ulps=64)  # what the MLP reads: after norm2, from the stream it reads
        check_close(mlp.hidden, seen["mlp.fc_out/0"][0], ulps=64)
        check_close(mlp.out, seen["mlp.fc_out/0"][1], ulps=64)
        check_close(mlp.written, tr.mlp_out(layer), ulps=16)  # the same maths, another order
        if cfg.post_norms:
            check_close(mlp.written, seen["post_mlp_norm/0"][1], ulps=64)
        act = block.activation_curve(tr, layer, -3.0, 3.0, 7)
        check_close(mlp.act, ours.blocks[layer].mlp.act(torch.from_numpy(mlp.pre)), ulps=0)  # the same function
        gelu = {"tanh": "tanh", "exact": "none"}[cfg.gelu]
        expected = (torch.nn.functional.gelu(torch.from_numpy(act[0]), approximate=gelu) if cfg.mlp != "swiglu"
                    else torch.nn.functional.silu(torch.from_numpy(act[0])))
        check_close(act[1], expected, ulps=0)  # the same function on the same inputs
        if mlp.up is None:
            check_close(mlp.hidden, mlp.act, ulps=0)  # the activations are the hidden layer
        else:
            check_close(mlp.hidden, mlp.act * mlp.up, ulps=8)  # act · up, recomputed


def test_shortcut_writes_add_up(case):
    ours, _, tr = case
    T = tr.n_tokens
    writes = block.all_residual_writes(tr, 0, T)
    assert all(w.shape == (ours.config.n_layer, T) for w in writes.values())
    for layer in range(ours.config.n_layer):
        # a write's norm vs the norm of a difference of two float32 streams (the stream's rounding in it)
        check_close(writes["attn_out"][layer], (tr.resid_mid(layer) - tr.resid_pre(layer)).norm(dim=-1), ulps=64)
        check_close(writes["mlp_out"][layer], (tr.resid_post(layer) - tr.resid_mid(layer)).norm(dim=-1), ulps=64)
        check_close(writes["resid_pre"][layer], tr.resid_pre(layer).norm(dim=-1), ulps=8)  # the same norms
    # a window gives the same numbers for its positions (position-wise steps, attention over all keys)
    part = block.residual_writes(tr, 1, 3, T - 2)
    for name in block.WRITE_ROWS:
        check_close(part[name], writes[name][1, 3 : T - 2], ulps=16)  # the same maths on fewer rows


def test_the_mlp_reads_one_token_at_a_time(case):
    ours, _, tr = case
    for layer in range(ours.config.n_layer):
        for position in (0, tr.n_tokens - 1):
            check = block.one_token_check(tr, layer, position)
            # one row alone vs the whole sequence: the same maths, another summation order
            check_close(check.mlp_alone, check.mlp_model, ulps=32)
            check_close(check.mlp_model, tr.mlp_out(layer)[position], ulps=32)
            check_close(check.attn_model, tr.attn_out(layer)[position], ulps=32)
            if position == 0:  # the first token only ever sees itself
                check_close(check.attn_alone, check.attn_model, ulps=32)
    # attention mixes tokens: alone, a later token's attention output differs
    assert max(block.one_token_check(tr, layer, tr.n_tokens - 1).attn_difference
               for layer in range(ours.config.n_layer)) > 1e-3


def test_rotary_scores_depend_only_on_the_offset(case):
    ours, _, tr = case
    cfg = ours.config
    if cfg.positional != "rotary":
        with pytest.raises(ValueError, match="rotary"):
            positions.rotary_table(ours, 0, 8)
        return
    for layer in range(cfg.n_layer):  # Gemma's sliding layers have their own rope
        s = block.qkv_steps(tr, layer, tr.n_tokens - 1)
        q, k = s.q_pre[0], s.k_pre[tr.kv_head(0)]
        rows = positions.scores_by_offset(ours, layer, q, k, [0, 7, 40], 24)
        # rotations of the same q, k: float32 rounding of the rotated vectors (ulps of the largest score)
        check_close(rows, np.broadcast_to(rows[0], rows.shape), ulps=64)
        grid = positions.rotary_scores(ours, layer, q, k, range(20), range(20))
        i, j = np.indices(grid.shape)  # constant along every diagonal (a Toeplitz matrix): its first row and column
        check_close(grid, np.where(i >= j, grid[np.maximum(i - j, 0), 0], grid[0, np.maximum(j - i, 0)]), ulps=64)
        # the model's q·k at the real positions are among these: q at T-1, k at T-1 (offset 0); float32
        # rounding at the scale of the scores (the rows' largest), not of this one score
        model_qk = float(torch.from_numpy(s.q[0]) @ torch.from_numpy(s.k[tr.kv_head(0)]))
        check_close(rows[0, 0], model_qk, ulps=64 * np.abs(rows).max() / abs(model_qk))
        table = positions.rotary_table(ours, layer, 12)
        check_close(table.angles, np.arange(12)[:, None] * table.frequencies[None, :], ulps=0)  # the same products
        check_close(table.cos, np.cos(table.angles), ulps=8)  # the same cosines, another library
        check_close(table.wavelengths, 2 * math.pi / table.frequencies, ulps=8)  # the same quotients
    if cfg.rope_local is not None:
        full, sliding = cfg.layer_types.index("full"), cfg.layer_types.index("sliding")
        assert not close(positions.rotary_table(ours, full, 8).frequencies,  # two ropes: not the same frequencies
                         positions.rotary_table(ours, sliding, 8).frequencies, rtol=1e-5)


# ---- the two families through the shared fixtures -----------------------------------------------------
@pytest.fixture(params=["gpt2", "llama"])
def model(request, tiny_gpt2, tiny_llama):
    return tiny_gpt2 if request.param == "gpt2" else tiny_llama


def test_norm_steps_explain_the_norm(model):
    tr = gptviz.trace(model, PROMPT)
    steps = block.norm_steps(model.blocks[1].norm1, tr.resid_pre(1))
    if model.config.norm == "layernorm":
        assert steps.centred and steps.bias is not None
        check_close(steps.normalized.mean(-1), np.zeros(tr.n_tokens), atol=1e-12)  # zero by construction (float64)
        check_close(steps.normalized.std(-1), np.sqrt(steps.var / (steps.var + steps.eps)), ulps=16)  # the same maths
        # float64 steps of the float32 stream vs float64 maths on it: another summation order
        check_close(steps.denom, np.sqrt(tr.resid_pre(1).double().var(-1, unbiased=False).numpy() + steps.eps), ulps=16)
    else:
        assert not steps.centred and steps.bias is None
        check_close(np.sqrt((steps.normalized**2).mean(-1)), np.sqrt(steps.var / (steps.var + steps.eps)), ulps=16)
    table = block.norm_table(steps, tr.tokens)
    assert len(table) == tr.n_tokens and table["token"].tolist() == tr.tokens
    check_close(table["‖x‖ before"], tr.resid_pre(1).norm(dim=-1), ulps=16)  # the same norms, another summation order
    window = block.norm_steps(model.blocks[1].norm1, block.norm_input(tr, 1, "norm1", 2, 5))
    check_close(window.out, steps.out[2:5], ulps=16)  # the same maths on fewer rows
    scale = block.norm_scale_by_layer(tr, 3)
    assert len(scale) == model.config.n_layer + 1
    # the same float32 norms, as floats
    check_close(scale["‖x‖ at the token"], [float(r[3].norm()) for r in tr.resid_stream], rtol=1e-6)
    check_close(scale["‖norm(x)‖ at the token"].iloc[-1], float(tr.final_norm[3].norm()), rtol=1e-6)
    with pytest.raises(ValueError, match="no norm"):
        block.norm_module(tr, 0, "post_mlp_norm")
    with pytest.raises(ValueError, match="LayerNorm or RMSNorm"):
        block.norm_steps(torch.nn.Identity(), tr.resid_pre(0))


def test_neurons(model):
    tr = gptviz.trace(model, PROMPT)
    mlp = block.mlp_steps(tr, 1)
    top = block.top_neurons(mlp.hidden, 8)
    peak = np.abs(mlp.hidden).max(0)
    assert len(top) == 8 and peak[top[0]] == peak.max() and np.all(np.diff(peak[top]) <= 0)
    assert np.all(peak[top[-1]] >= np.delete(peak, top))
    neuron = int(top[0])
    promoted, suppressed = block.neuron_logit_effect(tr, 1, neuron, k=5)
    assert len(promoted) == len(suppressed) == 5
    assert promoted["effect"].is_monotonic_decreasing and suppressed["effect"].is_monotonic_increasing
    # the effect is the unembedding of the direction through the final norm's gain (centred for LayerNorm)
    d = model.blocks[1].mlp.fc_out.weight[:, neuron].double()
    if model.config.norm == "layernorm":
        d = d - d.mean()
    effect = model.unembed_weight.double() @ (d * model.final_norm.weight.double())
    # the page's float32 maths vs float64 maths on the same weights (the largest effects: no cancellation)
    check_close(promoted["effect"], effect[promoted["id"].tolist()], rtol=1e-6)
    check_close(promoted["effect"].iloc[0], float(effect.max()), rtol=1e-6)
    check_close(suppressed["effect"].iloc[0], float(effect.min()), rtol=1e-6)
    with pytest.raises(ValueError, match="Neuron"):
        block.neuron_direction(tr, 0, model.config.d_mlp)


def test_window_arguments_are_checked(model):
    tr = gptviz.trace(model, PROMPT)
    for bad in ((3, 3), (-1, 4), (0, tr.n_tokens + 1)):
        with pytest.raises(ValueError, match="not inside"):
            block.mlp_steps(tr, 0, *bad)
    with pytest.raises(ValueError, match="outside"):
        block.qkv_steps(tr, 0, tr.n_tokens)
    with pytest.raises(ValueError, match="Layer"):
        block.attention_output(tr, model.config.n_layer)


# ---- positions, dropout, the feature table ------------------------------------------------------------
@pytest.mark.parametrize("n, d", [(50, 64), (17, 9), (1, 1), (300, 576)])
def test_sinusoidal_table_matches_the_formula(n, d):
    table = positions.sinusoidal_table(n, d)
    direct = np.zeros((n, d))
    for pos in range(n):
        for i in range(d):
            angle = pos / 10000 ** ((i - i % 2) / d)
            direct[pos, i] = math.sin(angle) if i % 2 == 0 else math.cos(angle)
    check_close(table, direct, ulps=8 * n)  # float64 sines of angles up to n, by another route: ~n ulps of the angle
    with pytest.raises(ValueError):
        positions.sinusoidal_table(0, 4)


def test_learned_positions(tiny_gpt2, tiny_llama):
    table = positions.learned_positions(tiny_gpt2, 20)
    check_close(table, tiny_gpt2.pos_emb.weight[:20].detach(), ulps=0)  # the weights themselves
    sim = positions.position_similarity(table)
    assert sim.shape == (20, 20)
    check_close(np.diag(sim), np.ones(20), ulps=16)  # cosine of a vector with itself: rounding only
    assert positions.learned_positions(tiny_llama, 20) is None


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_view(tiny_gpt2, p):
    tr = gptviz.trace(tiny_gpt2, PROMPT)
    pattern = tr.attention(0, 0)
    view = block.dropout_view(pattern, p, seed=3)
    kept = view.mask
    check_close(view.dropped[kept], pattern.numpy()[kept] / (1 - p), ulps=8)  # the same quotients
    assert np.all(view.dropped[~kept] == 0)
    check_close(view.row_sums, view.dropped.sum(-1), ulps=8)  # the same sums
    assert abs(kept.mean() - (1 - p)) < 0.15  # about 1 - p of the weights survive
    assert not close(view.row_sums, 1.0, ulps=64)  # rows no longer sum to 1 (beyond float32 rounding)
    again = block.dropout_view(pattern, p, seed=3)
    assert np.array_equal(again.mask, view.mask)
    assert not np.array_equal(block.dropout_view(pattern, p, seed=4).mask, view.mask)
    check_close(block.dropout_view(pattern, 0.0, 0).dropped, pattern, ulps=0)  # no dropout: the pattern itself
    with pytest.raises(ValueError, match="dropout rate"):
        block.dropout_view(pattern, 1.0, 0)


def test_feature_table(tiny_gpt2, tiny_llama):
    gpt2 = features.feature_table(tiny_gpt2.config)
    assert gpt2["the book's GPT-2"].tolist() == [f.describe(features.BOOK_GPT2) for f in features.FEATURES]
    differs = dict(zip(gpt2["component"], gpt2["differs"]))
    assert differs["size"] and differs["MLP"]  # 48 → 192 → 48 is not 768 → 3,072 → 768
    same = ("norm", "where the norms are", "biases", "q/k norm", "sliding window", "dropout")
    assert not any(differs[c] for c in same)
    assert "0.1" in gpt2.set_index("component").loc["dropout", "this model"]
    llama = features.feature_table(tiny_llama.config, weights="somewhere, F32").set_index("component")
    assert "RMSNorm" in llama.loc["norm", "this model"] and "LayerNorm" in llama.loc["norm", "the book's GPT-2"]
    assert "rotary" in llama.loc["positions", "this model"] and "learned" in llama.loc["positions", "the book's GPT-2"]
    assert "SwiGLU" in llama.loc["MLP", "this model"] and "grouped-query" in llama.loc["key/value heads", "this model"]
    assert llama.loc["biases", "this model"] == "none" and llama.loc["dropout", "this model"] == "none (p = 0)"
    assert llama.loc["weights", "this model"] == "somewhere, F32"
    assert differs["attention heads"] and llama.loc["attention scale", "differs"]  # 3 × 16 and 6 × 8: not 12 × 64
    assert set(llama["page"]) <= {"overview", "inside_block", "embeddings", "attention", "logit_lens"}


def test_book_config_is_gpt2_small():
    book = features.BOOK_GPT2
    assert (book.n_layer, book.d_model, book.n_head, book.d_mlp, book.n_ctx, book.vocab_size) == (
        12, 768, 12, 3072, 1024, 50257)
    assert book.dropout == 0.1 and book.tie_embeddings and book.norm == "layernorm"


def test_weights_origin(tiny_gpt2_dir, tmp_path):
    assert "F32" in weights_origin(str(tiny_gpt2_dir)) and "float32" in weights_origin(str(tiny_gpt2_dir))
    assert "openai-community/gpt2" in weights_origin("gpt2")
    with pytest.raises(ValueError, match="Unknown model"):
        weights_origin(str(tmp_path / "nothing"))


def test_gguf_tensor_types_read_from_the_header(tmp_path):
    path = tmp_path / "t.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_token_list([f"tok{i}" for i in range(300)])  # an array of strings to skip
    writer.add_array("test.numbers", [1, 2, 3])
    writer.add_string("test.text", "hello")
    rng = np.random.default_rng(0)
    writer.add_tensor("a", rng.normal(size=(4, 64)).astype(np.float32))
    writer.add_tensor("b", rng.normal(size=(8,)).astype(np.float16))
    q = gguf.quants.quantize(rng.normal(size=(2, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("c", q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    reader = gguf.GGUFReader(path)
    expected: dict[str, int] = {}
    for t in reader.tensors:
        expected[t.tensor_type.name] = expected.get(t.tensor_type.name, 0) + 1
    assert tensor_types(path) == expected == {"F32": 1, "F16": 1, "Q8_0": 1}
    assert "Q8_0" in weights_origin(str(path)) and "quantized" in weights_origin(str(path))
