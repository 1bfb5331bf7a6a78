"""TransformerLens's run_with_cache next to transformers' sdpa forward, on the same weights:
the peer row of bench.py, run with bench/.venv-peers/bin/python (see setup-peers.sh).

The HookedTransformer is built offline from the HF GPT-2 directory's config and weights
(convert_gpt2_weights, no weight processing, so it computes exactly what the HF model does).
Never imports gptviz. Prints one JSON line.

    python -m bench.peer_tl time --source DIR --T 16 64 --repeats 5 3 --threads 1
    python -m bench.peer_tl memory --source DIR --T 1024 --threads 1
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import warnings
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
import transformers  # noqa: E402

from bench.rss_case import reset_peak, status_mb  # noqa: E402
from bench.timing import Case, summarise, time_cases  # noqa: E402


def load_models(source: str):
    """(transformers GPT2LMHeadModel with sdpa, HookedTransformer) with the same weights."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights

    transformers.logging.disable_progress_bar()
    hf = transformers.GPT2LMHeadModel.from_pretrained(source, dtype=torch.float32, attn_implementation="sdpa")
    hf.eval().requires_grad_(False)
    c = hf.config
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer, d_model=c.n_embd, n_ctx=c.n_positions, d_head=c.n_embd // c.n_head, n_heads=c.n_head,
        d_mlp=c.n_inner or 4 * c.n_embd, d_vocab=c.vocab_size, act_fn="gelu_new", normalization_type="LN",
        eps=c.layer_norm_epsilon, positional_embedding_type="standard", original_architecture="GPT2LMHeadModel",
        default_prepend_bos=False, device="cpu", dtype=torch.float32,
    )
    with warnings.catch_warnings():  # "HookedTransformer is deprecated": 3.9.0 is pinned on purpose
        warnings.simplefilter("ignore", DeprecationWarning)
        tl = HookedTransformer(cfg)
    tl.load_and_process_state_dict(convert_gpt2_weights(hf, cfg), fold_ln=False, center_writing_weights=False,
                                   center_unembed=False, fold_value_biases=False)
    return hf, tl.eval().requires_grad_(False)


def random_ids(vocab_size: int, T: int, seed: int = 0) -> torch.Tensor:
    """The same ids as bench.cases.random_ids."""
    return torch.randint(0, vocab_size, (1, T), generator=torch.Generator().manual_seed(seed))


def timing(source: str, Ts: list[int], repeats: list[int]) -> dict:
    import transformer_lens

    hf, tl = load_models(source)
    with torch.inference_mode():
        ids = random_ids(hf.config.vocab_size, 16)
        difference = float((tl(ids) - hf(ids, use_cache=False).logits).abs().max())
    out = {}
    for T, n in zip(Ts, repeats):
        ids = random_ids(hf.config.vocab_size, T)
        named = {"hf_sdpa": Case(lambda _: hf(ids, use_cache=False).logits),
                 "tl_cache": Case(lambda _: tl.run_with_cache(ids))}
        out[str(T)] = summarise(time_cases(named, n, warmup=0 if T >= 1024 else 1), "hf_sdpa")["tl_cache"]
    version = getattr(transformer_lens, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("transformer-lens")
    return {"timing": out, "max_logit_diff": difference, "transformer_lens": version}


def memory(source: str, T: int, warmup_T: int = 16) -> dict:
    _, tl = load_models(source)
    with torch.inference_mode():
        for _ in range(2):
            tl.run_with_cache(random_ids(tl.cfg.d_vocab, warmup_T, seed=1))
        ids = random_ids(tl.cfg.d_vocab, T)
        gc.collect()
        base = status_mb("VmRSS")
        reset = reset_peak()
        out = tl.run_with_cache(ids)
        peak = status_mb("VmHWM")
        del out
    return {"case": "tl_cache", "T": T, "base_mb": base, "peak_mb": peak, "extra_mb": peak - base, "hwm_reset": reset}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("time", "memory"))
    parser.add_argument("--source", required=True, help="a Hugging Face GPT-2 model directory")
    parser.add_argument("--T", type=int, nargs="+", default=[1024])
    parser.add_argument("--repeats", type=int, nargs="+", default=[3])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.mode == "time":
        repeats = args.repeats + [args.repeats[-1]] * (len(args.T) - len(args.repeats))
        result = timing(args.source, args.T, repeats)
    else:
        result = memory(args.source, args.T[0])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
