"""What the benchmark runs: the two subjects (same weights in gptviz and transformers) and
the forward-pass cases, shared by the timing run (bench.py) and the memory child (rss_case.py).

A subject is one set of weights loaded twice: into gptviz's GPT, and into transformers'
GPT2LMHeadModel / LlamaForCausalLM with the fused "sdpa" attention (plus a copy switched to
"eager" for output_attentions=True). Ids are random token ids with a fixed seed.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

import gptviz  # noqa: E402
from bench.timing import Case  # noqa: E402
from gptviz.model import GPT  # noqa: E402

# transformers is imported where it is used, so that a gptviz-only memory child skips its import.

log = logging.getLogger(__name__)

GPT2_SMALL = "gpt2-small-shape"
SMOLLM2 = "smollm2-135m"
SUBJECTS = (GPT2_SMALL, SMOLLM2)

# Forward-pass cases, in table order. "gv_patterns" is every layer's (nh, T, T) patterns
# computed on a trace that is already there (what "every head's pattern available" costs).
FORWARD_CASES = {
    "hf_sdpa": "transformers plain forward (sdpa)",
    "gv_forward": "gptviz plain forward model(ids)",
    "gv_trace": "gptviz trace (q, k, v + residual stream + logits)",
    "gv_trace_patterns": "gptviz trace, then all patterns",
    "hf_eager_attn": "transformers eager + output_attentions",
    "tl_cache": "TransformerLens run_with_cache",
}


def quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def save_gpt2_small(directory: Path, seed: int = 0, **overrides) -> Path:
    """A GPT-2-small-shaped model (12 layers, 12 heads, 768 dims) with random weights,
    saved in Hugging Face format; overrides change the GPT2Config (tests use a tiny one)."""
    import transformers

    quiet_transformers()
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**overrides))
    model.save_pretrained(directory)
    return Path(directory)


def load_hf(source: str, attn: str = "sdpa"):
    """transformers' model of a subject: an HF directory, or "smollm2-135m" (the shipped GGUF)."""
    import transformers

    quiet_transformers()
    if source == SMOLLM2:
        from gptviz.packages import smollm2_gguf_path

        path = smollm2_gguf_path()
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32, attn_implementation=attn
        )
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            source, dtype=torch.float32, attn_implementation=attn
        )
    return model.eval().requires_grad_(False)


def eager_copy(model):
    """The same weights with transformers' eager attention (needed for output_attentions)."""
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    return eager


@dataclass
class Subject:
    """One set of weights in gptviz (gv) and transformers (hf: sdpa; hf_eager: eager)."""

    name: str
    source: str  # an HF directory, or "smollm2-135m"
    gv: GPT
    hf: object  # transformers.PreTrainedModel
    hf_eager: object

    @property
    def n_heads_total(self) -> int:
        return self.gv.config.n_layer * self.gv.config.n_head

    @property
    def is_gpt2(self) -> bool:
        return self.gv.config.arch == "gpt2"


def load_subject(name: str, source: str) -> Subject:
    gv = gptviz.load_model(source)
    hf = load_hf(source)
    return Subject(name=name, source=source, gv=gv, hf=hf, hf_eager=eager_copy(hf))


def random_ids(vocab_size: int, T: int, seed: int = 0) -> torch.Tensor:
    """(1, T) random token ids, the same for every case and run."""
    return torch.randint(0, vocab_size, (1, T), generator=torch.Generator().manual_seed(seed))


def fresh_copy(tr: gptviz.Trace) -> gptviz.Trace:
    """The same trace with an empty memo, so patterns are computed again."""
    return dataclasses.replace(tr, _memo={}, _lock=threading.Lock())


def all_patterns(tr: gptviz.Trace) -> list[torch.Tensor]:
    """Every layer's (nh, T, T) attention patterns (memoised on the trace)."""
    return [tr.patterns(layer) for layer in range(tr.n_layer)]


def forward_case(name: str, ids: torch.Tensor, gv: GPT | None = None, hf=None, hf_eager=None) -> Case:
    """One forward-pass case on ids (1, T); only the model it needs has to be given.

    For the timing table, "gv_trace_patterns" is timed as its two parts (gv_trace, then
    gv_patterns on a ready trace); the memory child runs it whole.
    """
    id_list = ids[0].tolist()
    if name == "hf_sdpa":
        return Case(lambda _: hf(ids, use_cache=False).logits)
    if name == "gv_forward":
        return Case(lambda _: gv(ids))
    if name == "gv_trace":
        return Case(lambda _: gptviz.trace(gv, id_list))
    if name == "gv_trace_patterns":
        return Case(lambda _: all_patterns(gptviz.trace(gv, id_list)))
    if name == "gv_patterns":
        ready = gptviz.trace(gv, id_list)
        return Case(all_patterns, setup=lambda: fresh_copy(ready))
    if name == "hf_eager_attn":
        return Case(lambda _: hf_eager(ids, output_attentions=True, use_cache=False).attentions)
    raise ValueError(f"Unknown case {name!r}.")


def max_logit_difference(subject: Subject, T: int = 16) -> float:
    """max |logits(gptviz) - logits(transformers)| on T random ids: the weights really are the same."""
    ids = random_ids(subject.gv.config.vocab_size, T)
    with torch.inference_mode():
        return float((subject.gv(ids) - subject.hf(ids, use_cache=False).logits).abs().max())
