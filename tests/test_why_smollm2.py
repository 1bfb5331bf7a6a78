"""Why this token? on the real SmolLM2: interventions against transformers' own GGUF loading with
forward hooks (within 32 float32 ulps of the largest logit), direct logit attribution adding up to the
logit, and the heads whose knock-out hurts " Mary" most after "When Mary and John went to the store,
John gave a drink to"."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import gptviz
from gptviz.analysis import attribution as at
from numerics import assert_close
from test_interventions import ablate_hooks, capture, hf_logits, patch_hook

PROMPT = "When Mary and John went to the store, John gave a drink to"
ULPS = 32  # vs transformers' own float32 kernels: ulps of the largest logit (about 34; measured 16)


@pytest.fixture(scope="module")
def smollm2():
    return gptviz.load_model("smollm2-135m")


@pytest.fixture(scope="module")
def clean(smollm2):
    return gptviz.trace(smollm2, PROMPT)


@pytest.fixture(scope="module")
def mary_john(smollm2):
    return smollm2.tokenizer.encode(" Mary")[0], smollm2.tokenizer.encode(" John")[0]


def test_predicts_mary(smollm2, clean, mary_john):
    assert int(clean.logits[-1].argmax()) == mary_john[0]


def test_interventions_match_hooked_transformers(smollm2, smollm2_hf, clean):
    hs = smollm2.config.d_head
    knock_outs = (([(23, 3)], "zero"), ([(14, 2), (20, "mlp")], "mean"), ([(7, "mlp"), (29, 1)], "zero"))
    for components, ablation in knock_outs:
        ours = gptviz.trace(smollm2, clean.ids, ablate=components, ablation=ablation)
        ref = hf_logits(smollm2_hf, clean.ids, ablate_hooks(smollm2_hf, components, ablation, hs))
        assert_close(ours.logits, ref, ulps=ULPS, what=str(components))
    corrupted_ids = smollm2.tokenizer.encode(at.name_swap(PROMPT))
    assert len(corrupted_ids) == clean.n_tokens
    for kind, layer, index in (("resid_post", 12, 9), ("z", 23, 3), ("attn_out", 20, None), ("resid_pre", 0, 1)):
        ours = gptviz.trace(smollm2, corrupted_ids, patch=gptviz.Patch(clean, [(kind, layer, index)]))
        source = capture(smollm2_hf, clean.ids, kind, layer)
        ref = hf_logits(smollm2_hf, corrupted_ids, [patch_hook(smollm2_hf, kind, layer, index, source, hs)])
        assert_close(ours.logits, ref, ulps=ULPS, what=kind)


def test_drastic_knock_outs_match_hooked_transformers(smollm2, smollm2_hf, clean):
    """Knocking out the first layers (MLP 0 makes SmolLM2's attention-sink activation) makes the run
    amplify rounding 15-20x: the two implementations' float32 runs then differ by more than 1e-4. A
    "float64" copy is no way out: transformers keeps RMSNorm and the attention softmax in float32
    inside a float64 model (and both sides build rotary tables in float32), so even the plain
    "float64" runs differ by ~3.5e-5, and the knocked-out ones passed or failed by CPU.

    The yardstick instead: how far float32 rounding alone moves *our* knocked-out run (float32 vs a
    float64 copy of our model), in float32 ulps of the largest logit. The two implementations may differ
    by at most three times that, or ULPS, and the yardstick must stay far below the knock-out's own
    effect, so a wrong knock-out (another head, layer or ablation) still fails."""
    ours64 = copy.deepcopy(smollm2).double()
    hs = smollm2.config.d_head
    eps = torch.finfo(torch.float32).eps
    for components, ablation in (([(0, "mlp"), (14, 2)], "mean"), ([(1, 5), (23, 3)], "zero")):
        knocked = gptviz.trace(smollm2, clean.ids, ablate=components, ablation=ablation).logits
        rounding = (knocked - gptviz.trace(ours64, clean.ids, ablate=components, ablation=ablation).logits).abs().max()
        ref = hf_logits(smollm2_hf, clean.ids, ablate_hooks(smollm2_hf, components, ablation, hs))
        effect = (knocked - clean.logits).abs().max()
        rounding_ulps = float(rounding / (eps * ref.abs().max()))
        assert_close(knocked, ref, ulps=max(ULPS, 3 * rounding_ulps), what=str(components))
        assert 3 * rounding < effect / 100, components


def test_direct_logit_attribution_adds_up_to_the_logit(clean, mary_john):
    attributions = [at.direct_logit_attribution(clean, metric) for metric in (at.Metric(mary_john[0]),
                                                                              at.Metric(*mary_john))]
    # float64 parts of the float32 activations vs the float32 forward: ulps of the larger, the logit of Mary
    assert_close([dla.total for dla in attributions], np.float32([dla.logit for dla in attributions]), ulps=16)
    dla = attributions[1]
    assert int(dla.heads.argmax()) == 23 * 9 + 3  # L23H3 writes the most into logit(Mary) - logit(John)


def test_the_heads_whose_knock_out_hurts_mary_most(clean, mary_john):
    """The ablation map (270 heads, 30 MLPs) of logit(" Mary") − logit(" John"), checked against one
    knocked-out trace for the head it names first."""
    metric = at.Metric(*mary_john)
    amap = at.ablation_map(clean, metric, "zero")
    worst = amap.most_negative(5)
    assert [(l, h) for l, h, _ in worst[:3]] == [(23, 3), (1, 5), (29, 1)]
    single = gptviz.trace(clean.model, clean.ids, ablate=[(23, 3)])
    # the float32 metric, batched vs alone (another summation order)
    assert_close(np.float32(worst[0][2] + amap.base), at.metric_value(single, metric), ulps=ULPS)
    assert amap.mlps[0] < -5  # the first MLP acts as part of the embedding
