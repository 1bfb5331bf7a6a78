"""Composition scores (analysis.composition) against the plain formula on full C×C matrices, built head
by head in float64 from weights sliced out one at a time; the layout of the maps and of the frame; and a
later head made to read exactly what an earlier head writes (or nothing of it)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import gptviz
from gptviz.analysis.composition import INPUTS, composition_scores
from gptviz.config import GPTConfig
from gptviz.model import GPT, Norm
from numerics import assert_close
from test_fidelity import ARCH_CASES, save_random

POST_NORM_CASES = ("gemma2", "gemma3", "olmo2")  # post-attention norms; OLMo-2 has no pre-attention norm


def with_random_gains(model: GPT, seed: int) -> GPT:
    """A copy whose norm weights are not all ones, so that a gain folded wrongly shows."""
    model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.add_(0.3 * torch.randn(param.shape, generator=generator))
    return model


@pytest.fixture(scope="module")
def models(tiny_gpt2, tiny_llama, tmp_path_factory) -> dict[str, GPT]:
    out = {"gpt2": with_random_gains(tiny_gpt2, 1), "llama": with_random_gains(tiny_llama, 2)}
    for name in POST_NORM_CASES:
        config_class, kwargs, _ = ARCH_CASES[name]
        out[name] = gptviz.load_model(str(save_random(tmp_path_factory.mktemp(name) / "m", config_class, 7, **kwargs)))
    return out


def gain(norm: nn.Module, size: int) -> torch.Tensor:
    """(size,) float64: what the forward multiplies the normalized stream by (Gemma's 1 + weight, summed in
    float32 as the forward sums it), ones where the block has no such norm."""
    return torch.ones(size, dtype=torch.float64) if isinstance(norm, nn.Identity) else norm.gain.detach().double()


def reference_heads(model: GPT) -> list[list[tuple[torch.Tensor, ...]]]:
    """Per layer, per query head: W_Q, W_K, W_V (C, hs) and W_O (hs, C), float64, sliced one head at a
    time: rows of the fused qkv (queries, then keys, then values; head h reads kv head h // (nh / n_kv))
    times norm1's gain, columns of out_proj times post_attn_norm's gain."""
    config = model.config
    nh, n_kv, hs, C = config.n_head, config.n_kv_head, config.d_head, config.d_model
    layers = []
    for block in model.blocks:
        w = block.attn.qkv.weight.detach().double()
        o = block.attn.out_proj.weight.detach().double()
        g_in, g_out = gain(block.norm1, C), gain(block.post_attn_norm, C)
        rows = lambda start: w[start:start + hs].T * g_in[:, None]  # (C, hs)
        heads = []
        for h in range(nh):
            kv = h // (nh // n_kv)
            heads.append((rows(h * hs), rows(nh * hs + kv * hs), rows((nh + n_kv) * hs + kv * hs),
                          o[:, h * hs:(h + 1) * hs].T * g_out[None, :]))
        layers.append(heads)
    return layers


def reference_scores(model: GPT) -> dict[str, np.ndarray]:
    """The plain formula on full C×C matrices, pair by pair."""
    config = model.config
    L, nh = config.n_layer, config.n_head
    heads = reference_heads(model)
    qk = [[w_q @ w_k.T for w_q, w_k, _, _ in layer] for layer in heads]  # C×C each
    ov = [[w_v @ w_o for _, _, w_v, w_o in layer] for layer in heads]
    fro = torch.linalg.matrix_norm
    out = {name: np.full((L, nh, L, nh), np.nan) for name in INPUTS}
    for lh in range(L):
        for h in range(nh):
            for le in range(lh):
                for e in range(nh):
                    a = ov[le][e]
                    out["q"][lh, h, le, e] = fro(a @ qk[lh][h]) / (fro(a) * fro(qk[lh][h]))
                    out["k"][lh, h, le, e] = fro(a @ qk[lh][h].T) / (fro(a) * fro(qk[lh][h]))
                    out["v"][lh, h, le, e] = fro(a @ ov[lh][h]) / (fro(a) * fro(ov[lh][h]))
    return out


def test_the_reference_slices_the_weights_the_forward_uses(models):
    """Each head's sliced W_Q, W_K, W_V applied to a normalized stream give the forward's q, k, v
    (q and k where no q/k norm changes them); W_O gives out_proj's output of that head times the
    post-attention gain."""
    torch.manual_seed(0)
    for name, model in models.items():
        config = model.config
        hs, C = config.d_head, config.d_model
        block, heads = model.blocks[1], reference_heads(model)[1]
        x = torch.randn(1, 5, C)
        normed = block.norm1.normalized(x) if isinstance(block.norm1, Norm) else x  # (1, T, C)
        with torch.no_grad():
            projected = block.attn.project(normed * gain(block.norm1, C).float(), None)
            bias = block.attn.project(torch.zeros_like(x), None)
            checked = ("q", "k", "v") if not config.qk_norm else ("v",)
            for h, (w_q, w_k, w_v, w_o) in enumerate(heads):
                kv = h // config.n_rep
                for i, (what, w, head) in enumerate(zip("qkv", (w_q, w_k, w_v), (h, kv, kv))):
                    if what in checked:
                        expected = normed[0].double() @ w  # (T, hs)
                        got = projected[i][0, head] - bias[i][0, head]
                        # the float32 forward vs float64 maths on the sliced weights
                        assert_close(got, expected, ulps=64, what=f"{name} H{h} {what}")
                z = torch.zeros(1, 5, config.n_head * hs)
                z[..., h * hs:(h + 1) * hs] = torch.randn(1, 5, hs)
                out = block.attn.out_proj(z) - block.attn.out_proj(torch.zeros_like(z))
                out = out * gain(block.post_attn_norm, C).float()  # float32, as the forward multiplies
                # the float32 forward vs float64 maths on the sliced weights
                assert_close(out[0], z[0, :, h * hs:(h + 1) * hs].double() @ w_o, ulps=64, what=f"{name} H{h}")


@pytest.mark.parametrize("name", ["gpt2", "llama", *POST_NORM_CASES])
def test_scores_equal_the_plain_formula(models, name):
    model = models[name]
    ours, reference = composition_scores(model), reference_scores(model)
    for what in INPUTS:
        got, expected = ours.scores(what), reference[what]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))  # NaN unless the sender is earlier
        # float64 maths, another summation order
        assert_close(got[~np.isnan(expected)], expected[~np.isnan(expected)], ulps=64, what=what)


def test_the_maps_layout(models):
    """(L, nh, L, nh) [later layer, later head, earlier layer, earlier head]: NaN unless the earlier
    layer is earlier, else in [0, 1]."""
    for model in models.values():
        L, nh = model.config.n_layer, model.config.n_head
        comp = composition_scores(model)
        earlier_first = np.arange(L)[None, None, :, None] < np.arange(L)[:, None, None, None]
        earlier_first = np.broadcast_to(earlier_first, (L, nh, L, nh))
        for what in INPUTS:
            scores = comp.scores(what)
            assert scores.shape == (L, nh, L, nh)
            assert np.isnan(scores[~earlier_first]).all()
            assert np.isfinite(scores[earlier_first]).all()
            assert ((scores[earlier_first] >= 0) & (scores[earlier_first] <= 1)).all()


def test_the_frame_and_its_key_value_heads(models):
    """Long form, one row per pair with the sender earlier; kv_heads: k and v per key/value head of
    the later layer, the max over its query heads; q rows unchanged."""
    model = models["llama"]  # 6 query heads share 2 key/value heads
    config = model.config
    L, nh, n_kv = config.n_layer, config.n_head, config.n_kv_head
    comp = composition_scores(model)
    frame = comp.frame()
    assert list(frame.columns) == ["sender_layer", "sender_head", "receiver_layer", "receiver_head", "input",
                                   "composition"]
    pairs = L * (L - 1) // 2 * nh * nh
    assert frame["input"].value_counts().to_dict() == {"q": pairs, "k": pairs, "v": pairs}
    assert (frame["sender_layer"] < frame["receiver_layer"]).all()
    for row in frame.sample(20, random_state=0).itertuples():
        assert row.composition == comp.scores(row.input)[row.receiver_layer, row.receiver_head, row.sender_layer,
                                                         row.sender_head]
    grouped = comp.frame(kv_heads=True)
    kv_pairs = L * (L - 1) // 2 * n_kv * nh
    assert grouped["input"].value_counts().to_dict() == {"q": pairs, "k": kv_pairs, "v": kv_pairs}
    assert grouped[grouped["input"] == "q"].reset_index(drop=True).equals(frame[frame["input"] == "q"])
    for row in grouped[grouped["input"] != "q"].itertuples():
        heads = [h for h in range(nh) if h // (nh // n_kv) == row.receiver_head]
        group = comp.scores(row.input)[row.receiver_layer, heads, row.sender_layer, row.sender_head]
        assert row.composition == group.max()


def test_top(models):
    comp = composition_scores(models["gpt2"])
    frame = comp.frame()
    top = comp.top(5)
    assert len(top) == 5 and top["composition"].is_monotonic_decreasing
    assert top["composition"].iloc[0] == frame["composition"].max()
    top_v = comp.top(4, input="v")
    assert (top_v["input"] == "v").all()
    assert top_v["composition"].iloc[0] == np.nanmax(comp.v)
    with pytest.raises(ValueError, match="positive"):
        comp.top(0)
    with pytest.raises(ValueError, match="use one of"):
        comp.top(3, input="o")


@pytest.mark.parametrize("input", INPUTS)
def test_a_head_that_reads_what_an_earlier_head_writes(tiny_gpt2, input):
    """Head L2H2's queries (keys, values) set to read exactly the directions L0H1 writes: that pair's
    score rises above every other pair's; set to read only directions L0H1 never writes: it is 0."""
    model = copy.deepcopy(tiny_gpt2)
    config = model.config
    nh, hs = config.n_head, config.d_head
    (le, e), (lh, h) = (0, 1), (2, 2)
    start = {"q": h, "k": nh + h, "v": 2 * nh + h}[input] * hs  # GPT-2: one key/value head per query head
    writes = model.blocks[le].attn.out_proj.weight.detach()[:, e * hs:(e + 1) * hs]  # (C, hs): W_O^e transposed
    block = model.blocks[lh]
    with torch.no_grad():
        block.norm1.weight.fill_(1.0)
        block.attn.qkv.weight[start:start + hs] = writes.T
    comp = composition_scores(model)
    scores = comp.scores(input).copy()
    aligned = scores[lh, h, le, e]
    scores[lh, h, le, e] = np.nan
    assert aligned > np.nanmax(scores) and aligned > 1.5 * comp.baseline
    elsewhere = torch.linalg.qr(writes.double(), mode="complete").Q[:, hs:2 * hs]  # (C, hs), orthogonal to writes
    with torch.no_grad():
        block.attn.qkv.weight[start:start + hs] = elsewhere.T.float()
    # zero by construction, up to the float32 rounding of the orthogonal weights
    assert_close(composition_scores(model).scores(input)[lh, h, le, e], 0.0, atol=1e-6)


def test_the_baseline_is_what_random_heads_score():
    """Random weights of a 4-layer model score about the baseline (about 1/sqrt(C) for these shapes);
    the baseline is the same on every call."""
    torch.manual_seed(0)
    config = GPTConfig(arch="llama", vocab_size=64, n_ctx=32, d_model=64, n_layer=4, n_head=4, n_kv_head=2,
                       d_mlp=96, norm_eps=1e-5)
    comp = composition_scores(GPT(config))
    assert comp.baseline == composition_scores(GPT(config)).baseline
    assert 0.5 / np.sqrt(config.d_model) < comp.baseline < 2 / np.sqrt(config.d_model)
    for what in INPUTS:
        assert abs(np.nanmean(comp.scores(what)) / comp.baseline - 1) < 0.1
