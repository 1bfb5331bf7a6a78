"""Interventions against an independent reference: transformers' own model on the same weights,
changed with PyTorch forward hooks (a head's slice of the input to the attention output
projection zeroed or mean-ablated, an MLP's output zeroed or replaced, a decoder layer's hidden
state replaced at a position). Random configs of both families (grouped-query attention
included), Gemma 3 (norms after each sublayer), GPT-NeoX (parallel attention and MLP), Gemma 2
(soft-capped scores and logits), Phi-3 (fused projections) and OLMo-2 (norms only after the
sublayers); logits to float32 rounding."""
from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest
import torch
import transformers

import gptviz
from gptviz.edits import Interventions, LayerEdit
from gptviz.interventions import Site
from gptviz.labels import component_label, head_label, parse_components, parse_head
from numerics import assert_close
from test_fidelity import ARCH_CASES, save_random


# ---- the reference: transformers with hooks ------------------------------------------------------
def layers_of(hf):
    if hasattr(hf, "gpt_neox"):
        return hf.gpt_neox.layers
    return hf.transformer.h if hasattr(hf, "transformer") else hf.model.layers


def attn_of(layer):
    for name in ("attn", "self_attn", "attention"):
        if hasattr(layer, name):
            return getattr(layer, name)
    raise AttributeError(f"no attention module in {type(layer).__name__}")


def o_proj_of(layer):
    attn = attn_of(layer)
    for name in ("c_proj", "o_proj", "dense"):
        if hasattr(attn, name):
            return getattr(attn, name)
    raise AttributeError(f"no output projection in {type(attn).__name__}")


def first(out):
    return out[0] if isinstance(out, tuple) else out


def with_first(out, value):
    return (value, *out[1:]) if isinstance(out, tuple) else value


@contextmanager
def hooked(handles):
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def ablate_hooks(hf, components, ablation, hs):
    """Hooks that ablate (layer, head) slices of o_proj's input and (layer, "mlp") MLP outputs."""
    layers, handles = layers_of(hf), []
    for layer, what in components:
        if what == "mlp":
            def mlp_hook(module, args, out):
                return out.mean(1, keepdim=True).expand_as(out) if ablation == "mean" else torch.zeros_like(out)
            handles.append(layers[layer].mlp.register_forward_hook(mlp_hook))
        else:
            def o_hook(module, args, head=what):
                z = args[0].clone()
                part = z[..., head * hs:(head + 1) * hs]
                z[..., head * hs:(head + 1) * hs] = part.mean(1, keepdim=True) if ablation == "mean" else 0.0
                return (z, *args[1:])
            handles.append(o_proj_of(layers[layer]).register_forward_pre_hook(o_hook))
    return handles


def capture(hf, ids, kind, layer):
    """One activation of hf on ids (what a hook sees): "resid_post" the decoder layer's output,
    "resid_pre" its input, "z" o_proj's input, "attn_out" the attention module's output, "mlp_out" the MLP's."""
    store = {}
    mod = layers_of(hf)[layer]
    if kind == "resid_pre":
        h = mod.register_forward_pre_hook(lambda m, args: store.__setitem__("x", args[0].clone()))
    elif kind == "z":
        h = o_proj_of(mod).register_forward_pre_hook(lambda m, args: store.__setitem__("x", args[0].clone()))
    else:
        target = {"resid_post": mod, "attn_out": attn_of(mod), "mlp_out": mod.mlp}[kind]
        h = target.register_forward_hook(lambda m, args, out: store.__setitem__("x", first(out).clone()))
    with hooked([h]), torch.no_grad():
        hf(torch.tensor([ids]))
    return store["x"]


def patch_hook(hf, kind, layer, index, source, hs):
    """A hook copying source (captured from the clean run) into position (or head) `index`."""
    mod = layers_of(hf)[layer]

    def copy(x):
        x = x.clone()
        if kind == "z":
            cols = slice(None) if index is None else slice(index * hs, (index + 1) * hs)
            x[:, :, cols] = source[:, :, cols]
        else:
            rows = slice(None) if index is None else slice(index, index + 1)
            x[:, rows] = source[:, rows]
        return x

    if kind == "resid_pre":
        return mod.register_forward_pre_hook(lambda m, args: (copy(args[0]), *args[1:]))
    if kind == "z":
        return o_proj_of(mod).register_forward_pre_hook(lambda m, args: (copy(args[0]), *args[1:]))
    target = {"resid_post": mod, "attn_out": attn_of(mod), "mlp_out": mod.mlp}[kind]
    return target.register_forward_hook(lambda m, args, out: with_first(out, copy(first(out))))


def hf_logits(hf, ids, handles=()):
    with hooked(list(handles)), torch.no_grad():
        return hf(torch.tensor([ids])).logits[0]


# ---- models ----------------------------------------------------------------------------------------
CASES = {  # name -> (transformers config class, kwargs)
    "gpt2": ("GPT2Config", dict(n_embd=60, n_layer=3, n_head=5, vocab_size=50257, n_positions=64)),
    "llama-gqa": ("LlamaConfig", dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=6,
                                      num_key_value_heads=2, intermediate_size=96, vocab_size=50257,
                                      max_position_embeddings=64)),
    **{name: ARCH_CASES[name][:2] for name in ("gemma3", "gpt_neox", "gemma2", "phi3", "olmo2")},
}


@pytest.fixture(scope="module", params=list(CASES))
def pair(request, tmp_path_factory):
    """(gptviz model, transformers reference with eager attention) on the same random weights."""
    config_class, kwargs = CASES[request.param]
    path = save_random(tmp_path_factory.mktemp(request.param) / "m", config_class, 7, **kwargs)
    ours = gptviz.load_model(str(path))
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    return ours, hf


def ids_for(model, T=19, seed=0):
    return torch.randint(0, model.config.vocab_size, (T,), generator=torch.Generator().manual_seed(seed)).tolist()


def corrupt(ids, positions, seed=1):
    out = list(ids)
    g = torch.Generator().manual_seed(seed)
    for p in positions:
        out[p] = int(torch.randint(0, 50257, (1,), generator=g))
    return out


# ---- ablation ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_head_and_mlp_ablation_match_hooked_transformers(pair, ablation):
    ours, hf = pair
    c = ours.config
    ids = ids_for(ours)
    plain = gptviz.trace(ours, ids)
    for components in ([(1, c.n_head - 1)], [(0, 0), (2, 1)], [(1, "mlp")], [(0, 2), (0, "mlp"), (2, "mlp")]):
        tr = gptviz.trace(ours, ids, ablate=components, ablation=ablation)
        ref = hf_logits(hf, ids, ablate_hooks(hf, components, ablation, c.d_head))
        assert_close(tr.logits, ref, ulps=64, what=str(components))  # vs transformers' own kernels (float32)
        assert (tr.logits - plain.logits).abs().max() > 1e-3  # the knock-out changed something


def test_stages_of_an_ablated_trace_show_the_ablation(pair):
    """A knocked-out run is an ordinary trace: its z, attention and MLP outputs are the changed ones,
    and the stages still add up to its residual stream."""
    ours, _ = pair
    ids = ids_for(ours)
    for ablation in ("zero", "mean"):
        tr = gptviz.trace(ours, ids, ablate=[(1, 2), (2, "mlp")], ablation=ablation)
        z, mlp = tr.z(1)[2], tr.mlp_module_out(2)  # (T, hs), (T, C): the same value at every position
        assert_close(z, z[:1].expand_as(z), ulps=0)  # one value, broadcast to every position: exactly
        assert_close(mlp, mlp[:1].expand_as(mlp), ulps=0)
        assert (z.abs().max() == 0) == (ablation == "zero") == (mlp.abs().max() == 0)
        for layer in range(ours.config.n_layer):
            # the residual stream's float32 additions, redone
            assert_close(tr.resid_pre(layer) + tr.attn_out(layer), tr.resid_mid(layer), ulps=8)
            assert_close(tr.resid_mid(layer) + tr.mlp_out(layer), tr.resid_post(layer), ulps=8)


# ---- patching ---------------------------------------------------------------------------------------
PATCH_SITES = [("resid_pre", 0, 5), ("resid_pre", 2, 5), ("resid_post", 1, 7), ("resid_post", 0, None),
               ("z", 1, 3), ("z", 2, None), ("attn_out", 0, 5), ("attn_out", 2, None), ("mlp_out", 1, 5),
               ("mlp_out", 0, 12)]


def test_patching_matches_hooked_transformers(pair):
    ours, hf = pair
    c = ours.config
    clean_ids = ids_for(ours)
    corrupted_ids = corrupt(clean_ids, [5, 12])
    clean = gptviz.trace(ours, clean_ids)
    for kind, layer, index in PATCH_SITES:
        index = min(index, c.n_head - 1) if kind == "z" and index is not None else index
        tr = gptviz.trace(ours, corrupted_ids, patch=gptviz.Patch(clean, [(kind, layer, index)]))
        source = capture(hf, clean_ids, kind, layer)
        ref = hf_logits(hf, corrupted_ids, [patch_hook(hf, kind, layer, index, source, c.d_head)])
        assert_close(tr.logits, ref, ulps=64, what=str((kind, layer, index)))  # vs transformers (float32)


def test_patching_several_sites_at_once_and_with_an_ablation(pair):
    ours, hf = pair
    c = ours.config
    clean_ids = ids_for(ours)
    corrupted_ids = corrupt(clean_ids, [3, 9])
    clean = gptviz.trace(ours, clean_ids)
    sites = [Site("z", 0, 1), Site("mlp_out", 1, 9), Site("resid_post", 1, 3)]
    tr = gptviz.trace(ours, corrupted_ids, ablate=[(2, 0)], patch=gptviz.Patch(clean, sites))
    sources = [capture(hf, clean_ids, s.kind, s.layer) for s in sites]  # before any hook is in place
    handles = [patch_hook(hf, s.kind, s.layer, s.index, source, c.d_head) for s, source in zip(sites, sources)]
    handles += ablate_hooks(hf, [(2, 0)], "zero", c.d_head)
    assert_close(tr.logits, hf_logits(hf, corrupted_ids, handles), ulps=64)  # vs transformers (float32)


def test_patching_ends_and_a_known_middle(tiny_llama, tiny_llama_dir):
    """Patching the whole residual stream at the last layer restores 100 % of the gap; patching
    nothing 0 %; patching the input of block 0 at the one position where the prompts differ makes
    the runs equal (100 %), at an earlier position changes nothing (0 %); one head's z lands in
    between, at the fraction transformers with a hook gives."""
    from gptviz.analysis.attribution import Metric, metric_value

    clean_ids = ids_for(tiny_llama, T=15, seed=3)
    corrupted_ids = corrupt(clean_ids, [9], seed=4)
    clean, corrupted = gptviz.trace(tiny_llama, clean_ids), gptviz.trace(tiny_llama, corrupted_ids)
    change = clean.logits[-1] - corrupted.logits[-1]  # random weights: take the tokens the corruption moved most
    metric = Metric(int(change.argmax()), int(change.argmin()))
    lo, hi = metric_value(corrupted, metric), metric_value(clean, metric)
    assert hi - lo > 0.05

    def restored(sites):
        tr = gptviz.trace(tiny_llama, corrupted_ids, patch=gptviz.Patch(clean, sites))
        return (metric_value(tr, metric) - lo) / (hi - lo)

    L = tiny_llama.config.n_layer
    # the clean run's own stream: float32 logits (as floats) of the clean run recomputed
    assert_close(restored([("resid_post", L - 1, None)]), 1.0, rtol=1e-6)
    assert restored([]) == 0.0
    assert_close(restored([("resid_pre", 0, 9)]), 1.0, rtol=1e-6)
    assert restored([("resid_pre", 0, 4)]) == 0.0
    hf = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation="eager").eval()
    hs = tiny_llama.config.d_head
    source = capture(hf, clean_ids, "z", 1)
    ref_lo, ref_hi = (float(metric.of_logits(hf_logits(hf, i)[-1])) for i in (corrupted_ids, clean_ids))
    patched = hf_logits(hf, corrupted_ids, [patch_hook(hf, "z", 1, 2, source, hs)])  # the hook goes after the run
    expected = (float(metric.of_logits(patched[-1])) - ref_lo) / (ref_hi - ref_lo)
    assert 0.01 < abs(expected) and abs(expected - 1) > 0.01
    # vs transformers: a ratio of float32 logit differences, whose error scales with 1 / (hi - lo), not with the ratio
    assert_close(restored([("z", 1, 2)]), expected, rtol=1e-3)


def test_patching_needs_prompts_of_equal_length(tiny_gpt2):
    clean = gptviz.trace(tiny_gpt2, "When Mary and John went to the store")
    with pytest.raises(ValueError, match="same token length"):
        gptviz.trace(tiny_gpt2, "When Mary went to the store", patch=gptviz.Patch(clean, [("resid_pre", 0, 0)]))
    with pytest.raises(ValueError, match="Unknown patching site"):
        gptviz.trace(tiny_gpt2, clean.ids, patch=gptviz.Patch(clean, [("q", 0, 0)]))
    with pytest.raises(ValueError, match="Position 99"):
        gptviz.trace(tiny_gpt2, clean.ids, patch=gptviz.Patch(clean, [("mlp_out", 0, 99)]))


# ---- the API's edges ----------------------------------------------------------------------------------
def test_bad_components_say_what_is_valid(tiny_gpt2):
    for bad in ([(0, 3)], [(3, 0)], [(0, "attn")], [5]):
        with pytest.raises(ValueError, match="layers 0–2|not a component"):
            gptviz.trace(tiny_gpt2, "Hello there", ablate=bad)
    with pytest.raises(ValueError, match="ablation must be"):
        gptviz.trace(tiny_gpt2, "Hello there", ablate=[(0, 0)], ablation="half")


def test_an_intervened_trace_is_not_extended(tiny_gpt2):
    tr = gptviz.trace(tiny_gpt2, "Hello there", ablate=[(0, 0)])
    with pytest.raises(ValueError, match="cannot be extended"):
        tr.extend([11])
    assert gptviz.trace(tiny_gpt2, "Hello there", ablate=[]).interventions is None


def test_component_labels_round_trip():
    comps = [(3, 1), (5, "mlp"), (0, 0)]
    text = ",".join(component_label(c) for c in comps)
    assert text == "L3H1,L5 MLP,L0H0"
    assert parse_components(text, 6, 4) == comps
    assert parse_components("L3H1, l5mlp ,L9H0,L0H7,junk,,L3H1", 6, 4) == [(3, 1), (5, "mlp")]
    assert head_label(3, 1) == component_label((3, 1)) and parse_head(head_label(11, 0)) == (11, 0)
    for bad in ("L5 MLP", "3H1", "L3H", ""):
        with pytest.raises(ValueError, match="not a head"):
            parse_head(bad)


def test_concurrent_interventions_stay_independent(tiny_llama):
    """Interventions are arguments, never state on the shared model: 8 threads each knocking out
    another head get the same logits as one thread alone."""
    ids = ids_for(tiny_llama, T=12)
    jobs = [[(0, h)] for h in range(6)] + [[(1, "mlp")], []]
    expected = [gptviz.trace(tiny_llama, ids, ablate=job).logits for job in jobs]
    got = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def run(i):
        barrier.wait()
        for _ in range(3):
            got[i] = gptviz.trace(tiny_llama, ids, ablate=jobs[i], ablation="zero").logits

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(a, b) for a, b in zip(expected, got))


# ---- forward_from: rerunning from a cached layer ----------------------------------------------------------
def test_forward_from_a_cached_layer_equals_the_full_forward(pair):
    model, _ = pair
    tr = gptviz.trace(model, ids_for(model, T=13))
    final = model.final_norm(tr.resid_stream[-1])  # (T, C)
    L = model.config.n_layer
    with torch.inference_mode():
        for layer in range(L + 1):
            x = tr.resid_stream[layer][None].expand(3, -1, -1)
            last = model.forward_from(layer, x)  # the last block only at the last position
            # the same maths from a cached layer, batched: another summation order
            assert_close(last, final[-1:].expand_as(last), ulps=32)
            some = model.forward_from(layer, x, positions=torch.tensor([0, 5, 12]))
            assert_close(some, final[[0, 5, 12]].expand_as(some), ulps=32)
        joined = model.forward_from(0, tr.resid_stream[0][None], joining={j: tr.resid_stream[j][None]
                                                                            for j in range(1, L)})
        assert joined.shape[0] == L
        assert_close(joined, final[-1:].expand_as(joined), ulps=32)  # the same maths: another summation order
        edit = LayerEdit(heads=torch.eye(2, model.config.n_head, dtype=torch.bool))  # copy 0: head 0, copy 1: head 1
        out = model.forward_from(1, tr.resid_pre(1)[None].expand(2, -1, -1), Interventions.at(L, {1: edit}))
    for copy in range(2):
        single = gptviz.trace(model, tr.ids, ablate=[(1, copy)])
        # the same ablated maths, batched from a cached layer: another summation order
        assert_close(out[copy, 0], model.final_norm(single.resid_stream[-1][-1]), ulps=32)
