"""Edge runs against an independent reference: transformers' own model on the same weights, where PyTorch hooks
give a receiver (a query or value projection's input, a whole attention layer's input, an MLP's input, the final
norm's input) the stream with one sender's output swapped for its output in the corrupted run; the sender's
output is read from transformers' own activations (its slice of the output projection's input, times its slice
of the projection's weight). Logits within 32 float32 ulps of the largest."""
from __future__ import annotations

import pytest
import torch
import transformers

import gptviz
from gptviz.edges import EMBED, LOGITS, Edges
from gptviz.labels import MLP
from numerics import assert_close
from test_fidelity import save_random
from test_interventions import attn_of, capture, hf_logits, ids_for, layers_of, o_proj_of

CASES = {"gpt2": ("GPT2Config", dict(n_embd=60, n_layer=3, n_head=5, vocab_size=50257, n_positions=64,
                                     initializer_range=0.1)),  # heads that write enough to matter
         "llama-gqa": ("LlamaConfig", dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=6,
                                           num_key_value_heads=2, intermediate_size=96, vocab_size=50257,
                                           max_position_embeddings=64))}


@pytest.fixture(scope="module", params=list(CASES))
def pair(request, tmp_path_factory):
    config_class, kwargs = CASES[request.param]
    path = save_random(tmp_path_factory.mktemp(request.param) / "m", config_class, 3, **kwargs)
    ours = gptviz.load_model(str(path))
    return request.param, ours, transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager")


def sender_output(hf, ids, sender, d_head: int) -> torch.Tensor:
    """(T, C) what a sender wrote in transformers' run of ids: the embeddings (block 0's input), a head's slice of
    the output projection's input times its slice of the projection, an MLP's output."""
    if sender == EMBED:
        return capture(hf, ids, "resid_pre", 0)[0]
    layer, what = sender
    if what == MLP:
        return capture(hf, ids, "mlp_out", layer)[0]
    z = capture(hf, ids, "z", layer)[0]  # (T, nh·hs)
    cols = slice(what * d_head, (what + 1) * d_head)
    proj = o_proj_of(layers_of(hf)[layer])
    weight = proj.weight  # Linear: (C, nh·hs); GPT-2's Conv1D: (nh·hs, C)
    return z[:, cols] @ (weight[:, cols].T if isinstance(proj, torch.nn.Linear) else weight[cols])


def receiver_hooks(hf, family: str, receiver: str, layer: int, delta: torch.Tensor) -> list:
    """Hooks giving one receiver of `layer` (or the logits) the stream plus delta (T, C): "q" / "v" the query /
    value projections (Llama), "attn" the whole attention input (GPT-2 projects q, k, v at once), "mlp"."""
    if receiver == LOGITS:
        norm = hf.transformer.ln_f if family == "gpt2" else hf.model.norm
        return [norm.register_forward_pre_hook(lambda m, args: (args[0] + delta, *args[1:]))]
    block = layers_of(hf)[layer]
    if receiver == "mlp":
        norm = block.ln_2 if family == "gpt2" else block.post_attention_layernorm
        return [norm.register_forward_pre_hook(lambda m, args: (args[0] + delta, *args[1:]))]
    seen = {}

    def keep_input(module, args, kwargs):
        seen["x"] = args[0] if args else kwargs["hidden_states"]

    def swap(module, args, kwargs):  # the projection reads norm(stream + delta), not norm(stream)
        norm = block.ln_1 if family == "gpt2" else block.input_layernorm
        mixed = norm(seen["x"] + delta)
        return ((mixed, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": mixed})

    target = attn_of(block) if receiver == "attn" else getattr(attn_of(block), f"{receiver}_proj")
    return [block.register_forward_pre_hook(keep_input, with_kwargs=True),
            target.register_forward_pre_hook(swap, with_kwargs=True)]


def edges_of(model, sender, receiver: str, layer: int) -> list:
    c = model.config
    if receiver == LOGITS:
        return [(sender, LOGITS)]
    if receiver == "mlp":
        return [(sender, (layer, MLP))]
    parts = ("q", "k", "v") if receiver == "attn" else (receiver,)
    return [(sender, (layer, head, part)) for part in parts
            for head in range(c.n_head if part == "q" else c.n_kv_head)]


@pytest.mark.parametrize("sender, receiver, layer", [
    (EMBED, "attn-or-q", 1), ((0, 2), "attn-or-v", 2), ((1, 4), "mlp", 2), ((0, MLP), "mlp", 2),
    ((1, 0), LOGITS, None), (EMBED, "mlp", 0)])
def test_one_sender_swapped_for_one_receiver_matches_hooked_transformers(pair, sender, receiver, layer):
    family, ours, hf = pair
    if receiver.startswith("attn-or-"):
        receiver = "attn" if family == "gpt2" else receiver[-1]
    clean, corrupted = ids_for(ours, T=15, seed=4), ids_for(ours, T=15, seed=5)
    with torch.no_grad():
        delta = (sender_output(hf, corrupted, sender, ours.config.d_head)
                 - sender_output(hf, clean, sender, ours.config.d_head))
        reference = hf_logits(hf, clean, receiver_hooks(hf, family, receiver, layer, delta))[-1]
    run = gptviz.trace(ours, clean, edges=Edges(drop=edges_of(ours, sender, receiver, layer)),
                       source=gptviz.trace(ours, corrupted))
    assert_close(run.last_logits, reference, ulps=32)  # vs transformers' own float32 kernels
    assert (run.last_logits - hf_logits(hf, clean)[-1]).abs().max() > 1e-4  # the swap changed the prediction
