"""Why this token? Direct logit attribution adds up to the logit and matches a transformers
computation; the batched ablation and patching maps equal one intervened trace per cell; the
gradient estimate is the derivative it claims to be; token picking, name swaps, run comparison."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import transformers

import gptviz
from gptviz.analysis import attribution as at
from gptviz.edits import Interventions, LayerEdit
from numerics import assert_close
from test_fidelity import ARCH_CASES, save_random
from test_interventions import capture, layers_of, o_proj_of

PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def arch_models(tmp_path_factory) -> dict:
    """Gemma 3 (norms after each sublayer), GPT-NeoX (parallel attention and MLP, biases) and Gemma 2
    (soft-capped logits) as random models."""
    return {name: gptviz.load_model(str(save_random(tmp_path_factory.mktemp(name) / "m", ARCH_CASES[name][0], 5,
                                                    **ARCH_CASES[name][1])))
            for name in ("gemma3", "gpt_neox", "gemma2")}


@pytest.fixture(params=["gpt2", "llama", "gemma3", "gpt_neox", "gemma2"])
def model(request, tiny_gpt2, tiny_llama, arch_models):
    return {"gpt2": tiny_gpt2, "llama": tiny_llama, **arch_models}[request.param]


def metrics_for(tr: gptviz.Trace) -> list[at.Metric]:
    order = torch.argsort(tr.logits[-1], descending=True).tolist()
    return [at.Metric(order[0]), at.Metric(order[0], order[1]), at.Metric(order[3], order[0], position=4)]


def logit_ulps(trace: gptviz.Trace, values, ulps: float = 64) -> float:
    """`ulps` float32 ulps of the run's largest logit, counted in ulps of the largest |value|: a metric (a logit
    difference) rounds at its logits' size, however small the difference (the top two nearly tied)."""
    return ulps * float(trace.logits.abs().max()) / float(np.abs(np.asarray(values, np.float64)).max())


def assert_parts_add_up(trace: gptviz.Trace, attributions: list[at.LogitAttribution]) -> None:
    """Each attribution's parts add up to the model's logit (difference): float64 sums of the float32
    activations vs the float32 forward, 16 ulps of the logits' size."""
    logits = np.float32([dla.logit for dla in attributions])
    assert_close([dla.total for dla in attributions], logits, ulps=logit_ulps(trace, logits, 16))


def map_metrics(emap: at.EffectMap) -> np.ndarray:
    """(L, nh + 1) an effect map's float32 metrics (effect + base), the MLPs last."""
    return np.float32(np.column_stack([emap.heads, emap.mlps]) + emap.base)


# ---- direct logit attribution ------------------------------------------------------------------------
def test_direct_logit_attribution_adds_up_to_the_logit(model):
    """LayerNorm (GPT-2: centred parts, biases, position embedding), RMSNorm (Llama), Gemma 3's
    norms after each sublayer, each held at its scale, GPT-NeoX's parallel block: the parts sum to
    the logit (difference); on Gemma 2 to the logit before its soft-cap."""
    tr = gptviz.trace(model, PROMPT)
    attributions, expected, by_frame, by_layer = [], [], [], []
    for metric in metrics_for(tr):
        dla = at.direct_logit_attribution(tr, metric)
        logits = tr.logits[metric.position]
        if model.config.final_softcap is not None:
            logits = model.unembed(tr.final_norm[metric.position])
        expected.append(logits[metric.target] - (logits[metric.contrast] if metric.contrast is not None else 0))
        assert dla.heads.shape == (model.config.n_layer, model.config.n_head)
        attributions.append(dla)
        by_frame.append(dla.parts_frame()["value"].sum())
        by_layer.append(dla.by_layer().sum().sum() + dla.final_bias)
    # the model's float32 logits (one row, or all rows at once), subtracted in float64: ulps of the logits' size
    expected = torch.stack(expected)
    assert_close([dla.logit for dla in attributions], expected, ulps=logit_ulps(tr, expected, 8))
    assert_parts_add_up(tr, attributions)
    totals = [dla.total for dla in attributions]
    assert_close(by_frame, totals, ulps=64)  # the same float64 parts, summed in other orders
    assert_close(by_layer, totals, ulps=64)
    assert (dla.pos_embed is not None) == (model.config.positional == "learned")
    if model.config.norm == "rmsnorm":
        assert dla.final_bias == 0


def test_direct_logit_attribution_with_every_bias_set(tiny_gpt2):
    """transformers initialises GPT-2's biases to 0: set them all, so the bias parts are tested too."""
    model = copy.deepcopy(tiny_gpt2)
    g = torch.Generator().manual_seed(0)
    for name, param in model.named_parameters():
        if name.endswith("bias"):
            param.data += 0.3 * torch.randn(param.shape, generator=g)
    tr = gptviz.trace(model, PROMPT)
    dla = at.direct_logit_attribution(tr, metrics_for(tr)[1])
    assert dla.final_bias != 0 and (dla.attn_bias != 0).all()
    assert_parts_add_up(tr, [dla])


def test_direct_logit_attribution_of_a_knocked_out_run_adds_up(tiny_llama):
    tr = gptviz.trace(tiny_llama, PROMPT, ablate=[(0, 1), (1, "mlp")], ablation="mean")
    assert_parts_add_up(tr, [at.direct_logit_attribution(tr, at.Metric(7, 11))])


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_heads_share_matches_a_transformers_computation(family, tiny_gpt2, tiny_llama, tiny_gpt2_dir,
                                                          tiny_llama_dir):
    """One head's share from transformers' own tensors: the head's slice of o_proj's input times its
    slice of the weight, through the final norm with transformers' scale, dotted with lm_head's row."""
    ours, path = (tiny_gpt2, tiny_gpt2_dir) if family == "gpt2" else (tiny_llama, tiny_llama_dir)
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    tr = gptviz.trace(ours, PROMPT)
    metric = metrics_for(tr)[1]
    dla = at.direct_logit_attribution(tr, metric)
    hs, layer = ours.config.d_head, 1
    hf.requires_grad_(False)
    z = capture(hf, tr.ids, "z", layer)[0, -1].double()  # (nh * hs,)
    final_in = capture(hf, tr.ids, "resid_post", ours.config.n_layer - 1)[0, -1].double()
    norm = hf.transformer.ln_f if family == "gpt2" else hf.model.norm
    w_u = hf.get_output_embeddings().weight.double()
    direction = w_u[metric.target] - w_u[metric.contrast]
    o_proj = o_proj_of(layers_of(hf)[layer])
    shares = []
    for head in range(ours.config.n_head):
        cols = slice(head * hs, (head + 1) * hs)
        if family == "gpt2":  # Conv1D: weight (in, out)
            part = z[cols] @ o_proj.weight.double()[cols]
            scale = torch.rsqrt(final_in.var(unbiased=False) + norm.eps)
            part = (part - part.mean()) * scale * norm.weight.double()
        else:
            part = o_proj.weight.double()[:, cols] @ z[cols]
            scale = torch.rsqrt(final_in.pow(2).mean() + norm.variance_epsilon)
            part = part * scale * norm.weight.double()
        shares.append(part @ direction)
    # vs transformers' own float32 activations and kernels: ulps of the layer's largest share
    assert_close(dla.heads[layer], torch.stack(shares).float(), ulps=64)


# ---- the batched maps equal one intervened trace per cell --------------------------------------------------
@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_ablation_map_equals_one_knocked_out_trace_per_component(model, ablation, monkeypatch):
    tr = gptviz.trace(model, PROMPT)
    L, nh = model.config.n_layer, model.config.n_head
    metric = metrics_for(tr)[1]
    amap = at.ablation_map(tr, metric, ablation)
    base = at.metric_value(tr, metric)
    assert amap.base == base and amap.heads.shape == (L, nh) and amap.mlps.shape == (L,)
    singles = np.zeros((L, nh + 1), np.float32)  # the metric of one knocked-out trace per component
    for layer in range(L):
        for i, what in enumerate([*range(nh), "mlp"]):
            single = gptviz.trace(model, tr.ids, ablate=[(layer, what)], ablation=ablation)
            singles[layer, i] = at.metric_value(single, metric)
    # float32 metrics, batched vs alone (another summation order): 64 ulps of the logits' size
    assert_close(map_metrics(amap), singles, ulps=logit_ulps(tr, singles))
    monkeypatch.setattr(at, "SWEEP_TOKENS", 3 * tr.n_tokens)  # several shared passes: the same map
    again = at.ablation_map(tr, metric, ablation)
    assert_close(map_metrics(again), map_metrics(amap), ulps=logit_ulps(tr, singles))  # batched another way
    other = metrics_for(tr)[2]  # another position, and a logit difference of two other tokens
    layer = L - 1
    singles = np.float32([at.metric_value(gptviz.trace(model, tr.ids, ablate=[(layer, head)], ablation=ablation),
                                          other) for head in range(nh)])
    assert_close(map_metrics(at.ablation_map(tr, other, ablation))[layer, :nh], singles,
                 ulps=logit_ulps(tr, singles))  # batched vs alone


def test_ablation_map_reports_progress_and_can_skip_mlps(tiny_llama):
    tr = gptviz.trace(tiny_llama, PROMPT)
    seen = []
    amap = at.ablation_map(tr, at.Metric(5), mlps=False, progress=lambda done, total: seen.append((done, total)))
    assert np.isnan(amap.mlps).all() and not np.isnan(amap.heads).any()
    assert seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)
    worst = amap.most_negative(3)
    assert [e for *_, e in worst] == sorted(e for *_, e in worst) and all(e < 0 for *_, e in worst)
    with pytest.raises(ValueError, match="plain run"):
        at.ablation_map(gptviz.trace(tiny_llama, PROMPT, ablate=[(0, 0)]), at.Metric(5))
    with pytest.raises(ValueError, match="vocabulary"):
        at.ablation_map(tr, at.Metric(10**9))


@pytest.mark.parametrize("site", list(at.PATCH_SITES))
def test_patching_map_equals_one_patched_trace_per_cell(model, site, monkeypatch):
    monkeypatch.setattr(at, "SWEEP_TOKENS", 40)  # several passes
    clean = gptviz.trace(model, PROMPT)
    swapped = at.name_swap(PROMPT)
    corrupted = gptviz.trace(model, swapped)
    assert corrupted.n_tokens == clean.n_tokens
    change = clean.logits[-1] - corrupted.logits[-1]
    metric = at.Metric(int(change.argmax()), int(change.argmin()))
    pmap = at.patching_map(clean, corrupted, metric, site)
    L, T, nh = model.config.n_layer, clean.n_tokens, model.config.n_head
    assert pmap.restored.shape == ((L + 1, T) if site == "resid" else (L, nh) if site == "z" else (L, T))
    assert len(pmap.rows) == pmap.restored.shape[0] and len(pmap.columns) == pmap.restored.shape[1]
    lo, hi = pmap.corrupted, pmap.clean
    differ = [i for i, (a, b) in enumerate(zip(clean.ids, corrupted.ids)) if a != b]
    cols = list(range(nh)) if site == "z" else sorted({0, T // 2, T - 1, *differ})
    singles = np.zeros((pmap.restored.shape[0], len(cols)), np.float32)  # the metric of one patched trace per cell
    for row in range(pmap.restored.shape[0]):
        for i, col in enumerate(cols):
            if site == "resid":
                kind, layer = ("resid_pre", row) if row < L else ("resid_post", L - 1)
            else:
                kind, layer = site, row
            tr = gptviz.trace(model, corrupted.ids, patch=gptviz.Patch(clean, [(kind, layer, col)]))
            singles[row, i] = at.metric_value(tr, metric)
    # float32 metrics, batched vs alone (another summation order): 64 ulps of the logits' size
    assert_close(pmap.values[:, cols], singles, ulps=logit_ulps(corrupted, singles))
    assert_close(pmap.restored, (pmap.values - lo) / (hi - lo), ulps=8)  # the share of the gap, in float64
    if site == "resid":  # the last row: only the last position reaches the prediction
        ends = np.float32([lo] * (T - 1) + [hi])
        assert_close(pmap.values[-1], ends, ulps=logit_ulps(corrupted, ends, 16))  # batched vs alone


def test_patching_map_needs_equal_lengths(tiny_gpt2):
    clean = gptviz.trace(tiny_gpt2, PROMPT)
    with pytest.raises(ValueError, match=f"{clean.n_tokens} tokens and the corrupted one"):
        at.patching_map(clean, gptviz.trace(tiny_gpt2, "When Mary went home"), at.Metric(1), "resid")
    with pytest.raises(ValueError, match="Unknown patching site"):
        at.patching_map(clean, clean, at.Metric(1), "q")


# ---- the gradient estimate ----------------------------------------------------------------------------------
@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_gradient_estimate_is_the_derivative_along_the_ablation(model, ablation):
    """estimate = d/dε metric(a + ε (a_ablated − a)) at ε = 0, checked by a central difference."""
    tr = gptviz.trace(model, PROMPT)
    metric = metrics_for(tr)[1]
    est = at.ablation_map_gradient(tr, metric, ablation)
    base = np.float32(at.metric_value(tr, metric))
    assert_close(est.base, base, ulps=logit_ulps(tr, base, 8))  # the float32 metric, another forward
    c, T, L = model.config, tr.n_tokens, model.config.n_layer
    eps = 1e-2
    model64 = copy.deepcopy(model).double()  # the difference in float64: no float32 rounding over 2·eps

    def moved(layer, what, step):
        if what == "mlp":
            m = tr.mlp_module_out(layer).double()
            fill = m.mean(0, keepdim=True) if ablation == "mean" else 0
            edit = LayerEdit(mlp_add=(step * (fill - m))[None])
        else:
            z = tr.z(layer).double()
            fill = z[what].mean(0, keepdim=True) if ablation == "mean" else 0
            add = torch.zeros(1, c.n_head, T, c.d_head, dtype=torch.float64)
            add[0, what] = step * (fill - z[what])
            edit = LayerEdit(z_add=add)
        with torch.inference_mode():
            normed = model64.forward_from(0, tr.resid_pre(0).double()[None], Interventions.at(L, {layer: edit}))
            return float(metric.of_normed(model64, normed[0, 0]))

    components = [(0, 0), (L - 1, c.n_head - 1), (1, 1), (0, "mlp"), (L - 1, "mlp")]
    slopes = [(moved(layer, what, eps) - moved(layer, what, -eps)) / (2 * eps) for layer, what in components]
    got = np.float32([est.mlps[layer] if what == "mlp" else est.heads[layer, what] for layer, what in components])
    # an approximation, a first-order estimate vs a central difference with step 1e-2 (rtol); the estimate's
    # float32 rounding, of the largest slope (ulps)
    assert_close(got, slopes, rtol=2e-3, ulps=64)
    exact = at.ablation_map(tr, metric, ablation)
    agree = at.agreement(exact, est)
    assert -1 <= agree["heads"] <= 1 and 0 <= agree["top_overlap"] <= 1


# ---- tokens, corrupted prompts, comparing runs ----------------------------------------------------------------
def test_token_choices_offer_the_leading_space_variant(tiny_gpt2):
    tr = gptviz.trace(tiny_gpt2, PROMPT)
    choices = at.token_choices(tr, "Mary")
    assert set(choices["token"]) == {" Mary", "Mary"}
    assert list(choices["rank"]) == sorted(choices["rank"])
    p = torch.softmax(tr.logits[-1], -1)
    for _, row in choices.iterrows():
        assert_close(row["probability"], p[row["id"]], ulps=8)  # the same softmax
    assert at.token_choices(tr, " Mary")["token"].tolist() == choices["token"].tolist()
    long = at.token_choices(tr, "Supercalifragilistic")
    assert (long["pieces"] > 1).all()
    assert at.token_choices(tr, "   ").empty is False  # whitespace itself is a token
    assert at.token_choices(tr, "").empty


@pytest.mark.parametrize("text,expected", [
    (PROMPT, "When John and Mary went to the store, Mary gave a drink to"),
    ("Then Alice met Bob. Alice said hi to", "Then Bob met Alice. Bob said hi to"),
    ("The cat sat. The dog ran.", None),
    ("no names here", None),
])
def test_name_swap(text, expected):
    assert at.name_swap(text) == expected


def test_compare_runs(tiny_llama):
    before = gptviz.trace(tiny_llama, PROMPT)
    frame, kl = at.compare_runs(before, before, n=5)
    assert len(frame) == 5
    assert_close(kl, 0.0, atol=1e-9)  # exactly zero by construction: a run against itself
    assert (frame["before"] == frame["after"]).all()
    after = gptviz.trace(tiny_llama, PROMPT, ablate=[(0, "mlp"), (1, "mlp")])
    frame, kl = at.compare_runs(before, after, n=5)
    assert kl > 0 and 5 <= len(frame) <= 10
    assert list(frame["before"]) == sorted(frame["before"], reverse=True)
    p = torch.softmax(after.logits[-1].double(), -1)
    assert_close(frame["after"].iloc[0], p[frame["id"].iloc[0]], ulps=8)  # the same float64 softmax
