"""Edge runs (gptviz.trace(..., edges=Edges(...), source=...)) against an explicit computation: every
receiver's input rebuilt by hand as the sum of what the senders wrote, with the replaced ones taken from
the source; and the run's limits: every edge kept is the model's own run, none kept is the source run,
a sender cut from every receiver is that component knocked out."""
from __future__ import annotations

import pytest
import torch

import gptviz
from gptviz.edges import EMBED, LOGITS, EdgeGraph, Edges
from gptviz.labels import MLP
from numerics import assert_close

ULPS = 64  # the same maths, summed another way (sender by sender) through every layer
CASES = ("gpt2", "llama-gqa", "mistral", "gemma3", "gpt_neox", "olmo2", "gemma2", "llama-bias", "qwen3",
         "phi3")  # conftest: models


def prompts(model, n: int = 14, seed: int = 0) -> tuple[list[int], list[int]]:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(100, min(1000, model.config.vocab_size), (n,), generator=g).tolist()
    corrupted = list(clean)
    for i in (3, 7, 11)[: n // 4]:  # a few tokens swapped, as a name swap would
        corrupted[i] = (clean[i] + 17) % model.config.vocab_size
    return clean, corrupted


def random_edges(graph: EdgeGraph, share: float, seed: int) -> list:
    valid = graph.valid()
    pick = (torch.rand(valid.shape, generator=torch.Generator().manual_seed(seed)) < share) & valid
    return [(graph.sender(int(s)), graph.receiver(int(r))) for s, r in pick.nonzero()]


def hand_input(model, run, source, replaced: torch.Tensor, r: int) -> torch.Tensor:
    """(T, C) receiver r's input rebuilt from the senders' outputs, one by one: the run's own output, or
    the source's where the edge is replaced; each layer's heads summed with the output bias and through
    its post-attention norm (if any), the MLP's output through its post-MLP norm."""
    graph = EdgeGraph.of(model.config)
    own = run.sender_outputs()
    pick = lambda s, outs: (source if replaced[s, r] else own) if outs is None else outs
    n_up = graph.upstream(r)
    total = (source if replaced[0, r] else own).embed.clone()
    for layer, block in enumerate(model.blocks):
        first = graph.heads_start(layer)
        if first >= n_up:
            break
        attn = sum((pick(first + h, None).heads[layer][h] for h in range(model.config.n_head)),
                   torch.zeros_like(total))
        if block.attn.out_proj.bias is not None:
            attn = attn + block.attn.out_proj.bias
        total = total + block.post_attn_norm(attn)
        if first + model.config.n_head < n_up:
            total = total + block.post_mlp_norm(pick(first + model.config.n_head, None).mlps[layer])
    return total


@pytest.mark.parametrize("name", CASES)
def test_every_receiver_reads_its_own_mix(models, name):
    model = models[name]
    graph = EdgeGraph.of(model.config)
    clean, corrupted = prompts(model)
    source_trace = gptviz.trace(model, corrupted)
    edges = random_edges(graph, 0.5, seed=1)
    run = gptviz.trace(model, clean, edges=Edges(keep=edges), source=source_trace)
    replaced = Edges(keep=edges).replaced(graph)
    source = source_trace.sender_outputs()
    rotary = model.rotary(torch.arange(len(clean)))
    with torch.inference_mode():
        for layer, block in enumerate(model.blocks):
            r0 = graph.attn_receivers(layer)
            for r in range(r0, r0 + graph.per_layer_receivers - 1):
                _, head, part = graph.receiver(r)
                mixed = block.norm1(hand_input(model, run, source, replaced, r))[None]  # (1, T, C)
                q, k, v = block.attn.project(mixed, rotary[layer])
                mine = {"q": run.qs, "k": run.ks, "v": run.vs}[part][layer][head]
                assert_close(mine, {"q": q, "k": k, "v": v}[part][0, head], ulps=ULPS)
            m = graph.mlp_receiver(layer)
            expected = hand_input(model, run, source, replaced, m)
            assert_close(run.mlp_in(layer), expected, ulps=ULPS)
        final = hand_input(model, run, source, replaced, graph.logits_receiver)
    assert_close(run.resid_stream[-1], final, ulps=ULPS)
    assert_close(run.last_logits, model.readout(model.final_norm(final[-1])), ulps=ULPS)


@pytest.mark.parametrize("name", CASES)
def test_all_edges_is_the_model_and_none_is_the_source(models, name):
    model = models[name]
    graph = EdgeGraph.of(model.config)
    clean, corrupted = prompts(model, seed=2)
    plain, source = gptviz.trace(model, clean), gptviz.trace(model, corrupted)
    every = random_edges(graph, 1.0, seed=0)
    assert len(every) == graph.n_edges
    whole = gptviz.trace(model, clean, edges=Edges(keep=every), source=source)
    assert_close(whole.last_logits, plain.last_logits, ulps=ULPS)
    assert_close(whole.qs[-1], plain.qs[-1], ulps=ULPS)
    nothing = gptviz.trace(model, clean, edges=Edges(keep=[]), source=source)
    assert_close(nothing.last_logits, source.last_logits, ulps=ULPS)
    cut_all = gptviz.trace(model, clean, edges=Edges(drop=every), source=source)
    assert_close(cut_all.last_logits, source.last_logits, ulps=ULPS)
    assert (whole.last_logits - source.last_logits).abs().max() > 1e-3  # the prompts do differ


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_cutting_every_edge_of_a_sender_is_knocking_it_out(models, name, ablation):
    model = models[name]
    graph = EdgeGraph.of(model.config)
    clean, _ = prompts(model, seed=3)
    L = model.config.n_layer
    for component in [(0, 1), (L - 2, 0), (1, MLP)]:
        s = graph.sender_index(component)
        edges = [(component, graph.receiver(r)) for r in range(graph.n_receivers) if s < graph.upstream(r)]
        cut = gptviz.trace(model, clean, edges=Edges(drop=edges), source=ablation)
        knocked = gptviz.trace(model, clean, ablate=[component], ablation=ablation)
        assert_close(cut.last_logits, knocked.last_logits, ulps=ULPS)
        assert_close(cut.resid_stream[-1], knocked.resid_stream[-1], ulps=ULPS)


def test_edge_names_and_indices_round_trip(tiny_llama):
    graph = EdgeGraph.of(tiny_llama.config)  # 6 query heads, 2 key/value heads
    for s in range(graph.n_senders):
        assert graph.sender_index(graph.sender(s)) == s
    for r in range(graph.n_receivers):
        assert graph.receiver_index(graph.receiver(r)) == r
    assert graph.receiver_label((1, 1, "k")) == "L1KV1 k" and graph.receiver_label((1, 4, "q")) == "L1H4 q"
    assert graph.query_heads((1, 1, "v")) == [3, 4, 5]
    assert graph.sender_label((0, MLP)) == "L0 MLP" and graph.sender_label(EMBED) == "embed"
    # a head's outputs reach its own layer's MLP (sequential block), not its own layer's attention
    graph.check([((0, 2), (0, MLP)), (EMBED, LOGITS), ((1, MLP), LOGITS)])
    with pytest.raises(ValueError, match="no edge L1H0 → L1H2 q"):
        graph.check([((1, 0), (1, 2, "q"))])
    with pytest.raises(ValueError, match="key/value heads 0–1"):
        graph.check([(EMBED, (1, 2, "k"))])
    with pytest.raises(ValueError, match="not both"):
        Edges(keep=[], drop=[])


def test_parallel_blocks_have_no_head_to_own_mlp_edge(models):
    graph = EdgeGraph.of(models["gpt_neox"].config)
    with pytest.raises(ValueError, match="no edge"):
        graph.check([((0, 0), (0, MLP))])


def test_bad_edge_runs_say_what_to_do(tiny_gpt2):
    with pytest.raises(ValueError, match="same token length"):
        gptviz.trace(tiny_gpt2, [1, 2, 3], edges=Edges(keep=[]), source=gptviz.trace(tiny_gpt2, [1, 2]))
    with pytest.raises(ValueError, match="'mean' or 'zero'"):
        gptviz.trace(tiny_gpt2, [1, 2, 3], edges=Edges(keep=[]), source="corrupted")
    with pytest.raises(ValueError, match="cannot also knock out"):
        gptviz.trace(tiny_gpt2, [1, 2, 3], edges=Edges(keep=[]), ablate=[(0, 0)])


def test_a_senders_first_reader_is_the_first_receiver_it_has_an_edge_to(models):
    for name in ("gpt2", "llama-gqa", "gpt_neox"):
        graph = EdgeGraph.of(models[name].config)
        valid = graph.valid()
        for s in range(graph.n_senders):
            assert graph.first_reader(s) == int(valid[s].nonzero()[0, 0]), (name, s)
