"""The features Pythia, Gemma 2, Phi-3 and OLMo-2 brought, each seen where it acts: soft-capped
scores as a stage of their own and soft-capped logits (in the lens and in direct logit attribution),
parallel attention and MLP, partial rotary, norms only after the sublayers, q/k norms over the whole
projection, GPT-NeoX's per-head fused q, k, v. The models are random transformers models of
test_fidelity.ARCH_CASES (whose logits, patterns and hidden states match transformers to float32 rounding)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import transformers

import gptviz
from gptviz import features
from gptviz.analysis import attribution as at
from gptviz.analysis import block, heads, lens, positions
from gptviz.architectures import ARCHITECTURES, config_from_hf
from gptviz.config import GPTConfig
from gptviz.model import soft_cap
from gptviz.plots import attention as PA
from gptviz.weights import param_shapes
from numerics import assert_close
from test_fidelity import ARCH_CASES, save_random

NEW = ("gpt_neox", "gemma2", "phi3", "olmo2")


def logit_rtol(logits: torch.Tensor, value: float, ulps: float) -> float:
    """rtol for `value`, a float of float32 logits (a logit difference): its rounding is `ulps` float32
    ulps of the logits' scale, not of the difference (which may cancel to near 0)."""
    return ulps * torch.finfo(torch.float32).eps * float(logits.abs().max()) / abs(value)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    """name -> directory of a random model of ARCH_CASES[name], for the four new architectures."""
    return {name: save_random(tmp_path_factory.mktemp(name) / "m", ARCH_CASES[name][0], 11, **ARCH_CASES[name][1])
            for name in NEW}


@pytest.fixture(scope="module")
def traces(saved) -> dict[str, gptviz.Trace]:
    """name -> a trace of T random tokens (T of the case: past every sliding window)."""
    out = {}
    for name, path in saved.items():
        model = gptviz.load_model(str(path))
        T = ARCH_CASES[name][2]
        ids = torch.randint(0, 50257, (T,), generator=torch.Generator().manual_seed(1)).tolist()
        out[name] = gptviz.trace(model, ids)
    return out


# ---- soft-capped attention scores: a stage of their own ------------------------------------------------
def test_soft_capped_scores_are_a_stage_only_where_the_model_caps(traces):
    tr = traces["gemma2"]
    cap = tr.model.config.attn_softcap
    assert tr.score_stages == ("raw", "scaled", "softcapped", "masked")
    for layer in range(tr.n_layer):
        scaled, capped = tr.scores(layer, 1, "scaled"), tr.scores(layer, 1, "softcapped")
        assert torch.equal(capped, soft_cap(scaled, cap)) and capped.abs().max() < cap
        assert (capped - scaled).abs().max() > 1e-2  # the cap bites on this model
        masked = tr.scores(layer, 1, "masked")
        seen = torch.isfinite(masked)
        assert torch.equal(masked[seen], capped[seen])
        assert_close(torch.softmax(masked, -1), tr.attention(layer, 1), ulps=8)  # the same softmax, recomputed
    for name in ("gpt_neox", "phi3", "olmo2"):
        assert traces[name].score_stages == ("raw", "scaled", "masked")
        with pytest.raises(ValueError, match="does not soft-cap"):
            traces[name].scores(0, 0, "softcapped")


def test_the_attention_page_helpers_show_the_soft_cap(traces):
    for name, tr in traces.items():
        capped = tr.model.config.attn_softcap is not None
        stages = heads.stage_window(tr, 0, 0, 2, 12)
        assert list(stages) == [*tr.score_stages, "softmax"]
        fig = PA.stages_figure(stages, tr.tokens, 2, window=tr.window(0))
        titles = [a.text for a in fig.layout.annotations]
        assert len(titles) == len(stages) and titles[-1].startswith(f"{len(stages)}. softmax")
        assert any("soft-cap" in t for t in titles) == capped
        b = heads.query_breakdown(tr, 0, 0, tr.n_tokens - 1)
        assert (b.softcapped is not None) == capped
        assert_close(b.weights, tr.attention(0, 0)[-1], ulps=32)  # float64 maths on the trace's float32 q, k
        if capped:  # the same float64 maths
            assert_close(b.softcapped, soft_cap(torch.from_numpy(b.scaled), tr.model.config.attn_softcap))
    with pytest.raises(ValueError, match="needs the keys"):
        PA.stages_figure({"raw": stages["raw"], "softmax": stages["softmax"]}, traces["gemma2"].tokens, 2)


# ---- soft-capped logits: the lens and the attribution -------------------------------------------------
def test_the_lens_applies_the_final_soft_cap(traces):
    tr = traces["gemma2"]
    model, cap = tr.model, tr.model.config.final_softcap
    assert tr.logits.abs().max() < cap
    final = lens.lens_logits(tr, tr.resid_stream[-1])
    assert_close(final, tr.logits, ulps=16)  # the same maths, another summation order
    assert (model.unembed(tr.final_norm) - tr.logits).abs().max() > 0.1  # without the cap they differ
    rows = lens.readout_at(tr, 3)
    assert_close(rows[-1], tr.probs[3], ulps=16)  # the same maths, another summation order
    assert rows.shape == (tr.n_layer + 1, model.config.vocab_size)


def test_attribution_explains_the_logits_before_the_cap(traces):
    tr = traces["gemma2"]
    model = tr.model
    order = torch.argsort(tr.logits[-1], descending=True).tolist()
    for metric in (at.Metric(order[0], order[5]), at.Metric(order[2]), at.Metric(order[9], order[0], position=4)):
        dla = at.direct_logit_attribution(tr, metric)
        p = metric.check(tr).position
        pick = lambda logits: float(logits[metric.target] - (logits[metric.contrast] if metric.contrast is not None
                                                            else 0.0))
        raw = model.unembed(tr.final_norm[p])
        # floats of float32 logits: the unembedding recomputed, and float64 parts of the float32 stream
        assert_close(dla.logit, pick(raw), rtol=logit_rtol(raw, pick(raw), 8))
        assert_close(dla.total, dla.logit, rtol=logit_rtol(raw, dla.logit, 32))
        assert_close(dla.capped_logit, pick(tr.logits[p]), rtol=logit_rtol(tr.logits[p], pick(tr.logits[p]), 8))
        assert abs(dla.capped_logit - dla.logit) > 1e-3 and dla.softcap == model.config.final_softcap
        assert "before the cap" in dla.cap_note
        if metric.contrast is not None:  # the metric every rerun measures is the model's own, capped
            # the two tokens' capped logits recomputed from the final stream: float32 rounding of the logits
            assert_close(at.metric_value(tr, metric), dla.capped_logit,
                         rtol=logit_rtol(tr.logits[p], dla.capped_logit, 8))
    assert at.direct_logit_attribution(traces["olmo2"], at.Metric(0, 1)).cap_note is None


# ---- parallel attention and MLP (GPT-NeoX) ---------------------------------------------------------------
def test_a_parallel_blocks_mlp_reads_the_blocks_input(traces, saved):
    tr = traces["gpt_neox"]
    hf = transformers.AutoModelForCausalLM.from_pretrained(saved["gpt_neox"], attn_implementation="eager").eval()
    seen = {}
    handles = [layer.post_attention_layernorm.register_forward_pre_hook(
        lambda m, args, i=i: seen.__setitem__(i, args[0][0].clone())) for i, layer in enumerate(hf.gpt_neox.layers)]
    with torch.no_grad():
        hf(torch.tensor([tr.ids]))
    for h in handles:
        h.remove()
    for layer in range(tr.n_layer):
        # vs transformers' own kernels (float32); norm2 reads resid_pre, as in transformers
        assert_close(tr.mlp_in(layer), seen[layer], ulps=64)
        assert torch.equal(tr.mlp_in(layer), tr.resid_pre(layer))
        # the block's float32 sum, in another order
        assert_close(tr.resid_pre(layer) + tr.attn_out(layer) + tr.mlp_out(layer), tr.resid_post(layer), ulps=8)
        assert_close(block.norm_input(tr, layer, "norm2"), seen[layer], ulps=64)  # vs transformers (float32)
        check = block.one_token_check(tr, layer, tr.n_tokens - 1)
        assert_close(check.mlp_alone, check.mlp_model, ulps=32)  # the same MLP on one row: another summation order
    assert (traces["phi3"].mlp_in(1) - traces["phi3"].resid_mid(1)).abs().max() == 0  # sequential: after attention


def test_attribution_adds_up_on_a_parallel_block_with_biases(traces):
    tr = traces["gpt_neox"]
    assert all((b.attn.out_proj.bias != 0).all() and (b.mlp.fc_out.bias != 0).all() for b in tr.model.blocks)
    order = torch.argsort(tr.logits[-1], descending=True).tolist()
    for metric in (at.Metric(order[0], order[1]), at.Metric(order[4])):
        dla = at.direct_logit_attribution(tr, metric)
        # float64 parts of the float32 stream vs the float32 logit (difference)
        assert_close(dla.total, dla.logit, rtol=logit_rtol(tr.logits[-1], dla.logit, 32))
        assert dla.final_bias != 0 and (dla.attn_bias != 0).all()
        assert dla.softcap is None and dla.capped_logit is None


# ---- rotary on a part of each head ---------------------------------------------------------------------
@pytest.mark.parametrize("name, turned", [("gpt_neox", 4), ("phi3", 6), ("olmo2", 8)])
def test_partial_rotary_turns_only_the_first_dimensions(traces, name, turned):
    tr = traces[name]
    cfg = tr.model.config
    assert cfg.rotary_dims == turned
    s = block.qkv_steps(tr, 1, tr.n_tokens - 1)
    assert np.array_equal(s.q[:, turned:], s.q_pre[:, turned:]) and np.array_equal(s.k[:, turned:], s.k_pre[:, turned:])
    assert np.abs(s.q[:, :turned] - s.q_pre[:, :turned]).max() > 1e-3
    table = positions.rotary_table(tr.model, 1, 10)
    assert table.frequencies.shape == (turned // 2,) and table.cos.shape == (10, turned // 2)


def test_rotary_needs_an_even_number_of_turned_dimensions():
    base = dict(arch="x", vocab_size=10, n_ctx=8, d_model=16, n_layer=1, n_head=2, n_kv_head=2, d_mlp=8,
                norm_eps=1e-5)
    assert GPTConfig(**base, rotary_pct=0.25).rotary_dims == 2
    with pytest.raises(ValueError, match="even number"):
        GPTConfig(**base, rotary_pct=0.375)  # 3 of 8
    with pytest.raises(ValueError, match="positive"):
        GPTConfig(**base, attn_softcap=0.0)


# ---- OLMo-2: norms only after the sublayers, q/k norms over the whole projection ----------------------
def test_olmo2_norms(traces, saved):
    tr = traces["olmo2"]
    cfg, first = tr.model.config, tr.model.blocks[0]
    assert list(block.norm_places(tr)) == ["post_attn_norm", "post_mlp_norm"]
    assert isinstance(first.norm1, torch.nn.Identity) and isinstance(first.norm2, torch.nn.Identity)
    assert first.attn.q_norm.weight.shape == (cfg.n_head * cfg.d_head,)
    assert first.attn.k_norm.weight.shape == (cfg.n_kv_head * cfg.d_head,)
    hf = transformers.AutoModelForCausalLM.from_pretrained(saved["olmo2"], attn_implementation="eager").eval()
    seen, layer = {}, hf.model.layers[1]
    handles = [layer.self_attn.q_norm.register_forward_hook(lambda m, a, out: seen.__setitem__("q", out[0])),
               layer.post_attention_layernorm.register_forward_hook(lambda m, a, out: seen.__setitem__("post", out[0]))]
    with torch.no_grad():
        hf(torch.tensor([tr.ids]))
    for h in handles:
        h.remove()
    s = block.qkv_steps(tr, 1, 5)
    # vs transformers' own kernels (float32)
    assert_close(s.q_pre.ravel(), seen["q"][5], ulps=64)  # all heads' q normed together
    steps = block.norm_steps(tr.model.blocks[1].post_attn_norm, block.norm_input(tr, 1, "post_attn_norm"))
    assert_close(steps.out, steps.model_out, ulps=16)  # the steps rebuild the model's norm: another order
    assert_close(tr.attn_out(1), seen["post"], ulps=64)


# ---- GPT-NeoX's fused q, k, v ---------------------------------------------------------------------------
def test_gpt_neox_rows_are_reordered_per_head():
    config = GPTConfig(arch="gpt_neox", vocab_size=10, n_ctx=8, d_model=6, n_layer=1, n_head=2, n_kv_head=2,
                       d_mlp=8, norm_eps=1e-5, positional="learned")
    rearrange = ARCHITECTURES["gpt_neox"].rearrange["attn.qkv"]
    labels = [f"{part}{h}{d}" for h in range(2) for part in "qkv" for d in range(3)]  # checkpoint order
    order = rearrange(torch.arange(18), config).tolist()
    assert [labels[i] for i in order] == [f"{part}{h}{d}" for part in "qkv" for h in range(2) for d in range(3)]
    assert rearrange(torch.arange(36).view(18, 2), config)[:, 0].tolist() == [2 * i for i in order]  # a weight


def test_the_feature_table_names_each_new_feature(traces):
    table = {name: features.feature_table(tr.model.config).set_index("component")["this model"]
             for name, tr in traces.items()}
    assert "in parallel" in table["gpt_neox"]["where the norms are"]
    assert "first 4 of each head's 16" in table["gpt_neox"]["positions"] and "erf" in table["gpt_neox"]["MLP"]
    assert "then soft-capped: tanh(s / 2)" in table["gemma2"]["attention scale"]
    assert "soft-capped" in table["gemma2"]["output head"]
    assert table["olmo2"]["where the norms are"].startswith("on each sublayer's output")
    assert "whole q and k projections" in table["olmo2"]["q/k norm"]
    assert "soft-capped" not in table["phi3"]["attention scale"]
    assert "first 6 of each head's 10" in table["phi3"]["positions"]


# ---- the hub checkpoints' own config.json files -----------------------------------------------------------
PYTHIA_70M = {"architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu",
              "hidden_size": 512, "intermediate_size": 2048, "layer_norm_eps": 1e-05, "max_position_embeddings": 2048,
              "model_type": "gpt_neox", "num_attention_heads": 8, "num_hidden_layers": 6, "rotary_emb_base": 10000,
              "rotary_pct": 0.25, "tie_word_embeddings": False, "use_parallel_residual": True, "vocab_size": 50304}
GEMMA2_2B = {"architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "attn_logit_softcapping": 50.0,
             "final_logit_softcapping": 30.0, "head_dim": 256, "hidden_act": "gelu_pytorch_tanh",
             "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2304, "intermediate_size": 9216,
             "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 8,
             "num_hidden_layers": 26, "num_key_value_heads": 4, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06,
             "rope_theta": 10000.0, "sliding_window": 4096, "vocab_size": 256000}
PHI3_MINI_4K = {"architectures": ["Phi3ForCausalLM"], "attention_bias": False, "hidden_act": "silu",
                "hidden_size": 3072, "intermediate_size": 8192, "max_position_embeddings": 4096, "model_type": "phi3",
                "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
                "original_max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "rope_scaling": None,
                "rope_theta": 10000.0, "sliding_window": 2047, "tie_word_embeddings": False, "vocab_size": 32064}
OLMO2_1B = {"architectures": ["Olmo2ForCausalLM"], "attention_bias": False, "hidden_act": "silu", "hidden_size": 2048,
            "intermediate_size": 8192, "max_position_embeddings": 4096, "model_type": "olmo2",
            "num_attention_heads": 16, "num_hidden_layers": 16, "num_key_value_heads": 16, "rms_norm_eps": 1e-06,
            "rope_scaling": None, "rope_theta": 500000, "tie_word_embeddings": False, "vocab_size": 100352}


@pytest.mark.parametrize("hf, n_params", [(PYTHIA_70M, 70_426_624), (GEMMA2_2B, 2_614_341_888),
                                          (PHI3_MINI_4K, 3_821_079_552)])
def test_hub_configs_give_the_published_parameter_counts(hf, n_params):
    """The hub's config.json files (written by older transformers: rotary_pct, rope_theta) read into the
    features, and the model they build has the published number of parameters."""
    config = config_from_hf(hf)
    assert sum(math.prod(shape) for shape in param_shapes(config).values()) == n_params


def test_hub_configs_name_their_features():
    pythia, gemma2, phi3, olmo2 = (config_from_hf(h) for h in (PYTHIA_70M, GEMMA2_2B, PHI3_MINI_4K, OLMO2_1B))
    assert pythia.parallel_residual and pythia.rotary_dims == 16 and pythia.gelu == "exact" and pythia.qkv_bias
    assert not pythia.tie_embeddings and pythia.norm == "layernorm"
    assert (gemma2.attn_softcap, gemma2.final_softcap, gemma2.sliding_window) == (50.0, 30.0, 4096)
    assert gemma2.layer_types[:4] == ("sliding", "full", "sliding", "full") and gemma2.tie_embeddings
    assert gemma2.scale == 256 ** -0.5 and gemma2.post_norms and gemma2.pre_norms and gemma2.norm_offset == 1.0
    assert phi3.layer_types == ("sliding",) * 32 and phi3.sliding_window == 2047 and phi3.rotary_dims == 96
    assert (olmo2.qk_norm_scope, olmo2.pre_norms, olmo2.post_norms, olmo2.rope.theta) == ("projection", False, True,
                                                                                            500000.0)
    with pytest.raises(ValueError, match="longrope"):  # Phi-3's 128k variants
        config_from_hf({**PHI3_MINI_4K, "rope_scaling": {"type": "longrope", "long_factor": [1.0] * 48,
                                                         "short_factor": [1.0] * 48}})


def test_growing_by_a_token_with_the_kv_cache(traces):
    """Soft-capped attention over cached keys (Gemma 2), partial rotary and parallel blocks (GPT-NeoX),
    fused projections (Phi-3), norms after the sublayers (OLMo-2): extending a trace token by token
    gives the logits and the stream of tracing the whole sequence."""
    for name, tr in traces.items():
        new = [7, 1234, 42]
        grown = tr
        for token in new:
            grown = grown.extend([token])
        whole = gptviz.trace(tr.model, tr.ids + new)
        # the same maths over cached keys: another summation order
        assert_close(grown.logits, whole.logits, ulps=32, what=name)
        assert_close(grown.resid, whole.resid, ulps=32, what=name)
