"""The block described by the model: each block declares its norms and branches (model.BlockStructure),
each norm exposes its steps (model.Norm), the trace gives any window of every stage, and the
explanations (analysis.block, features, the pipeline figure) read these instead of knowing an
architecture. Steps against transformers' forward hooks are in test_block.py (every ARCH_CASES model)."""
from __future__ import annotations

import pytest
import torch

import gptviz
from gptviz import features
from gptviz.analysis import block
from gptviz.model import LayerNorm, RMSNorm, block_structure
from gptviz.plots import pipeline
from numerics import assert_close
from test_fidelity import ARCH_CASES, save_random

NORMS = {  # architecture case -> the norms its blocks declare, in the order they run
    "gpt_neox": {"norm1": ("attn", "before"), "norm2": ("mlp", "before")},
    "gemma2": {"norm1": ("attn", "before"), "post_attn_norm": ("attn", "after"), "norm2": ("mlp", "before"),
               "post_mlp_norm": ("mlp", "after")},
    "olmo2": {"post_attn_norm": ("attn", "after"), "post_mlp_norm": ("mlp", "after")},
    "phi3": {"norm1": ("attn", "before"), "norm2": ("mlp", "before")},
}


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> dict[str, gptviz.Trace]:
    out = {}
    for name in NORMS:
        path = save_random(tmp_path_factory.mktemp(name) / "m", ARCH_CASES[name][0], 13, **ARCH_CASES[name][1])
        model = gptviz.load_model(str(path))
        out[name] = gptviz.trace(model, list(range(200, 200 + ARCH_CASES[name][2])))
    return out


def test_each_block_declares_its_norms_and_branches(traces):
    for name, tr in traces.items():
        structure = tr.model.blocks[0].structure
        assert structure.norms() == NORMS[name] and structure == block_structure(tr.model.config)
        assert structure.parallel == (name == "gpt_neox")
        attn, mlp = structure.branches
        assert (attn.reads, mlp.reads) == ("resid_pre", "resid_pre" if name == "gpt_neox" else "resid_mid")
        for module in ("norm1", "norm2", "post_attn_norm", "post_mlp_norm"):  # a norm not declared is not there
            present = isinstance(getattr(tr.model.blocks[0], module), (LayerNorm, RMSNorm))
            assert present == (module in NORMS[name])
        assert list(block.norm_places(tr)) == list(NORMS[name])


def test_the_norm_steps_are_the_norm(traces):
    """The steps (centre, statistic, scale, gain, bias) rebuild every norm; LayerNorm's fused forward
    equals them."""
    for tr in traces.values():
        for name, module in tr.model.blocks[1].named_children():
            if not isinstance(module, (LayerNorm, RMSNorm)):
                continue
            x = tr.norm_in(1, name)
            steps = module.normalized(x) * module.gain + (module.bias if module.bias is not None else 0.0)
            assert_close(steps, module(x), ulps=16)  # the forward (LayerNorm's fused) vs its steps: same maths
            stat = module.statistic(x)[..., 0]  # mean square after the norm: stat / (stat + eps), about 1
            # the same identity in float32: rsqrt, squares and a mean over C, rounded another way
            assert_close(module.normalized(x).pow(2).mean(-1), stat / (stat + module.eps), ulps=64)
            explained = block.norm_steps(module, x)
            assert explained.centred == isinstance(module, LayerNorm)
            assert_close(explained.model_out, explained.out, ulps=16)  # float32 forward vs its float64 steps


@pytest.mark.parametrize("run", ["plain", "knocked out", "patched"])
def test_every_stage_has_windows(traces, run):
    """A window [start, stop) of a stage equals those rows of the whole stage, with or without
    interventions (a mean ablation and copied activations need every position)."""
    for name, plain in traces.items():
        model = plain.model
        if run == "plain":
            tr = plain
        elif run == "knocked out":
            tr = gptviz.trace(model, plain.ids, ablate=[(1, 0), (1, "mlp")], ablation="mean")
        else:
            other = gptviz.trace(model, [i + 1 for i in plain.ids])
            tr = gptviz.trace(model, plain.ids, patch=gptviz.Patch(other, [("z", 1, 1), ("attn_out", 1, 4),
                                                                           ("mlp_out", 1, None)]))
        T = tr.n_tokens
        for start, stop in ((0, T), (3, 9), (T - 1, T)):
            for stage in (tr.z, tr.attn_module_out, tr.attn_out, tr.mlp_in, tr.mlp_hidden, tr.mlp_module_out,
                          tr.mlp_out):
                whole, part = stage(1), stage(1, start, stop)
                rows = whole[:, start:stop] if stage == tr.z else whole[start:stop]
                # same maths, another summation order: a window of rows vs the whole stage
                assert_close(part, rows, ulps=16, what=f"{name} {run} {stage.__name__}")
            for norm in NORMS[name]:
                assert_close(tr.norm_in(1, norm, start, stop), tr.norm_in(1, norm)[start:stop], ulps=16,
                             what=f"{name} {run} {norm}")  # same maths, a window of rows
        with pytest.raises(ValueError, match="not inside"):
            tr.z(1, 5, 5)
        with pytest.raises(ValueError, match="no norm"):
            tr.norm_in(1, "norm3")


def test_what_each_sublayer_receives(traces):
    for name, tr in traces.items():
        block_ = tr.model.blocks[2]
        for branch in block_.structure.branches:
            stream = tr.stream(branch.reads, 2)
            expected = stream if branch.norm_before is None else getattr(block_, branch.norm_before)(stream)
            assert torch.equal(tr.sublayer_in(2, branch.name), expected)
        if name == "olmo2":  # no norm before a sublayer: attention reads the stream itself
            assert torch.equal(tr.sublayer_in(2, "attn"), tr.resid_pre(2))


def test_the_explanations_draw_the_declared_block(traces):
    for name, tr in traces.items():
        cfg = tr.model.config
        stages = pipeline.pipeline_stages(cfg, 9)
        keys = [s.key for s in stages]
        norm_keys = {features.NORM_NAMES[n] for n in NORMS[name]}
        assert norm_keys <= set(keys) and not ({"ln1", "ln2", "ln1_post", "ln2_post"} - norm_keys) & set(keys)
        by_key = {s.key: s for s in stages}
        if name == "gpt_neox":  # side by side, one ⊕ for both
            assert by_key["attn"].row == by_key["mlp"].row and {by_key["attn"].col, by_key["mlp"].col} == {"left",
                                                                                                          "right"}
            assert "hook_resid_mid" not in by_key and "in parallel" in by_key["hook_resid_post"].detail
        else:
            assert by_key["attn"].row < by_key["hook_resid_mid"].row < by_key["mlp"].row
        fig = pipeline.pipeline_figure(cfg, 9)
        assert len([sh for sh in fig.layout.shapes if sh.type == "rect"]) == len(stages) + 1
        placement = features.feature_table(cfg).set_index("component").loc["where the norms are", "this model"]
        assert ("pre-norm" in placement) == (name != "olmo2") and ("output" in placement) == (name in ("gemma2",
                                                                                                       "olmo2"))
    formulas = {name: features.block_formula(tr.model.config) for name, tr in traces.items()}
    assert formulas["gpt_neox"] == "out = x + attn(ln1(x)) + mlp(ln2(x))"
    assert formulas["phi3"] == "mid = x + attn(ln1(x)); out = mid + mlp(ln2(mid))"
    assert formulas["gemma2"] == "mid = x + ln1_post(attn(ln1(x))); out = mid + ln2_post(mlp(ln2(mid)))"
    assert formulas["olmo2"] == "mid = x + ln1_post(attn(x)); out = mid + ln2_post(mlp(mid))"
    capped = {s.key: s for s in pipeline.pipeline_stages(traces["gemma2"].model.config, 4)}
    assert "soft-capped" in capped["attn"].detail and "soft-capped" in capped["logits"].detail
