"""Why this token? Which heads and MLPs make a prediction, and what happens when they are knocked out.

The prediction is measured by a Metric at one position: the target token's log-probability,
or, given a contrast token, the logit difference target − contrast. Three ways to ask which
components matter:

- direct logit attribution: the final residual stream is a sum of parts (embeddings, each
  head's z_h · W_O[h], each MLP's output, biases); with the final norm's scale at the position
  held fixed (LayerNorm: each part centred as the norm centres the whole), the norm is linear,
  so each part's share of the logit is exact and the shares add up to it;
- ablation: knock each head (and MLP) out alone and rerun; the change of the metric. Each rerun
  starts at the knocked-out layer from the trace's residual stream, with the layer's heads as
  one batch (GPT.forward_from), and its gradient approximation (attribution patching: one
  forward and one backward);
- activation patching: run a corrupted prompt and copy one activation from the clean run;
  the fraction of the clean − corrupted gap that comes back.

Everything returns numpy or pandas; nothing here imports streamlit.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from gptviz.edits import ABLATIONS, Ablation, Interventions, LayerEdit
from gptviz.model import GPT, Norm
from gptviz.sampling import token_rank
from gptviz.trace import Trace

Progress = Callable[[int, int], None]


# ---- the metric ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """The prediction being explained, at `position` (-1: after the last token): with a contrast
    token the logit difference logit[target] − logit[contrast], else log softmax(logits)[target]."""

    target: int
    contrast: int | None = None
    position: int = -1

    @property
    def name(self) -> str:
        return "logit difference" if self.contrast is not None else "log-probability"

    def of_logits(self, logits: Tensor) -> Tensor:
        """logits (..., vocab) -> the metric (...)."""
        logits = logits.float()
        if self.contrast is not None:
            return logits[..., self.target] - logits[..., self.contrast]
        return torch.log_softmax(logits, dim=-1)[..., self.target]

    def of_normed(self, model: GPT, normed: Tensor) -> Tensor:
        """The final-normed residual stream (..., C) -> the metric (...) of the model's logits (soft-capped
        where the model caps them); a logit difference reads only the two tokens' rows of the output head."""
        if self.contrast is None:
            return self.of_logits(model.readout(normed))
        if model.config.final_softcap is None:
            return normed @ self.direction(model)
        rows = model.unembed_weight[[self.target, self.contrast]]  # (2, C)
        capped = model.cap_logits(normed @ rows.T)  # (..., 2)
        return capped[..., 0] - capped[..., 1]

    def direction(self, model: GPT) -> Tensor:
        """(C,) the output head's row of the target, minus the contrast's (logit = normed · direction)."""
        w = model.unembed_weight
        return w[self.target] - w[self.contrast] if self.contrast is not None else w[self.target]

    def check(self, trace: Trace) -> "Metric":
        """This metric with its position made non-negative; ValueError for tokens or positions out of range."""
        V, T = trace.model.config.vocab_size, trace.n_tokens
        for token in (self.target, self.contrast):
            if token is not None and not 0 <= token < V:
                raise ValueError(f"Token id {token} is outside this model's vocabulary of {V}.")
        if not -T <= self.position < T:
            raise ValueError(f"Position {self.position} is outside the sequence of {T} tokens.")
        return Metric(self.target, self.contrast, self.position % T)


def metric_value(trace: Trace, metric: Metric) -> float:
    """The metric of a run, read from its final residual stream as every rerun reads it."""
    metric = metric.check(trace)
    model = trace.model
    with torch.inference_mode():
        normed = model.final_norm(trace.resid_stream[-1][metric.position])
        return float(metric.of_normed(model, normed))


# ---- direct logit attribution -------------------------------------------------------------------
def through_norm(norm: nn.Module, total: Tensor, parts: Tensor) -> tuple[Tensor, Tensor | None]:
    """Parts (P, C) of a norm's input total (C,) taken through the norm with its scale held at
    the value it has for total: each part centred as the norm centres (LayerNorm), times the scale
    of total and the gain; the bias (C,) as its own part (None without). The parts then add up to
    norm(total). The norm's own steps (gptviz.model.Norm); a missing norm (identity) passes them."""
    if isinstance(norm, nn.Identity):
        return parts, None
    if not isinstance(norm, Norm):
        raise TypeError(f"No linear form for {type(norm).__name__}.")
    bias = None if norm.bias is None else norm.bias.double()
    return norm.centre(parts) * norm.scale(total) * norm.gain.double(), bias


@dataclass(frozen=True)
class LogitAttribution:
    """What each part of the final residual stream writes into the metric's logit (difference).

    heads (L, nh): z_h · W_O[h]; attn_bias (L,): the attention output's bias (0 without);
    mlps (L,): each MLP's output; embed, pos_embed (None for rotary models); final_bias: the final
    LayerNorm's bias (0 for RMSNorm). Post norms (Gemma) are held at their scale too. In a parallel
    block (GPT-NeoX) attention and the MLP both write into the same stream, so the split is the same.
    logit: the model's own logit (difference); the parts add up to it.

    Soft-capped logits (Gemma 2: tanh(l / c) · c, softcap = c) are not a sum of parts: the parts then
    explain the output head's logits before the cap, and `logit` is that pre-cap logit (difference);
    capped_logit is the model's own (after the cap). The cap keeps every logit's order, so the sign
    of a difference and the ranking of tokens are the same before and after it.
    """

    heads: np.ndarray
    attn_bias: np.ndarray
    mlps: np.ndarray
    embed: float
    pos_embed: float | None
    final_bias: float
    logit: float
    softcap: float | None = None
    capped_logit: float | None = None

    @property
    def cap_note(self) -> str | None:
        """What the attribution explains on a soft-capping model, in words (None without a cap)."""
        if self.softcap is None:
            return None
        return (f"This model soft-caps its logits (tanh(l / {self.softcap:g}) · {self.softcap:g}), which is not a "
                f"sum of parts: the shares add up to the logit before the cap, {self.logit:.4f}; after the cap the "
                f"model's is {self.capped_logit:.4f}. The cap keeps the tokens' order.")

    @property
    def total(self) -> float:
        return float(self.heads.sum() + self.attn_bias.sum() + self.mlps.sum() + self.embed
                     + (self.pos_embed or 0.0) + self.final_bias)

    def by_layer(self) -> pd.DataFrame:
        """Per layer: attention (heads + bias) and MLP shares; first row the embeddings."""
        rows = [{"part": "embeddings", "attention": np.nan, "MLP": np.nan,
                 "embeddings": self.embed + (self.pos_embed or 0.0)}]
        rows += [{"part": f"L{l}", "attention": float(self.heads[l].sum() + self.attn_bias[l]),
                  "MLP": float(self.mlps[l]), "embeddings": np.nan} for l in range(len(self.mlps))]
        return pd.DataFrame(rows).set_index("part")

    def parts_frame(self) -> pd.DataFrame:
        """One row per part: part, layer, head, value (what the CSV download holds)."""
        L, nh = self.heads.shape
        rows = [("token embedding", None, None, self.embed)]
        if self.pos_embed is not None:
            rows.append(("position embedding", None, None, self.pos_embed))
        for l in range(L):
            rows += [(f"L{l}H{h}", l, h, float(self.heads[l, h])) for h in range(nh)]
            if self.attn_bias[l] != 0:
                rows.append((f"L{l} attention bias", l, None, float(self.attn_bias[l])))
            rows.append((f"L{l} MLP", l, None, float(self.mlps[l])))
        rows.append(("final norm bias", None, None, self.final_bias))
        return pd.DataFrame(rows, columns=["part", "layer", "head", "value"])


def direct_logit_attribution(trace: Trace, metric: Metric) -> LogitAttribution:
    """Split the metric's logit (difference) at metric.position into the parts of the residual
    stream (float64 arithmetic on the trace's tensors). See LogitAttribution."""
    metric = metric.check(trace)
    p, model = metric.position, trace.model
    config = model.config
    L, nh, C = config.n_layer, config.n_head, config.d_model
    with torch.inference_mode():
        parts = [trace.embed[p].double()]
        if trace.pos_embed is not None:
            parts.append(trace.pos_embed[p].double())
        n_embed = len(parts)
        for layer, block in enumerate(model.blocks):
            heads = block.attn.head_outputs(trace.z(layer)[:, p:p + 1].double())[:, 0]  # (nh, C): what each head writes
            bias = block.attn.out_proj.bias
            bias = bias.double() if bias is not None else torch.zeros(C, dtype=torch.float64)
            heads, norm_bias = through_norm(block.post_attn_norm, trace.attn_module_out(layer)[p].double(),
                                            torch.cat((heads, bias[None])))
            if norm_bias is not None:
                heads[-1] += norm_bias
            parts += [*heads, trace.mlp_out(layer)[p].double()]
        stacked = torch.stack(parts)  # (n_embed + L * (nh + 2), C)
        final, final_bias = through_norm(model.final_norm, trace.resid_stream[-1][p].double(), stacked)
        direction = metric.direction(model).double()
        shares = final @ direction  # (parts,)
        per_layer = shares[n_embed:].view(L, nh + 2)

        def picked(logits: Tensor) -> float:  # the metric's logit (difference)
            return float(logits[metric.target] - (logits[metric.contrast] if metric.contrast is not None else 0.0))

        capped = config.final_softcap is not None  # explain the output head's logits, before the cap
        logits = model.unembed(trace.final_norm[p]).double() if capped else trace.logits_at(p).double()
        return LogitAttribution(
            heads=per_layer[:, :nh].numpy(), attn_bias=per_layer[:, nh].numpy(), mlps=per_layer[:, nh + 1].numpy(),
            embed=float(shares[0]), pos_embed=float(shares[1]) if n_embed == 2 else None,
            final_bias=float(final_bias @ direction) if final_bias is not None else 0.0, logit=picked(logits),
            softcap=config.final_softcap, capped_logit=picked(trace.logits_at(p).double()) if capped else None,
        )


# ---- ablation: knock each head out alone ----------------------------------------------------------
@dataclass(frozen=True)
class EffectMap:
    """The metric's change when each head (heads (L, nh)) or each MLP (mlps (L,), NaN if not
    computed) alone is ablated; base: the metric of the plain run. method "exact" (rerun) or
    "gradient" (attribution patching, a first-order estimate)."""

    heads: np.ndarray
    mlps: np.ndarray
    base: float
    ablation: Ablation
    method: str

    def frame(self) -> pd.DataFrame:
        """Rows per component: layer, head ("MLP" for MLPs), effect."""
        L, nh = self.heads.shape
        rows = [(l, str(h), float(self.heads[l, h])) for l in range(L) for h in range(nh)]
        rows += [(l, "MLP", float(self.mlps[l])) for l in range(L)]
        return pd.DataFrame(rows, columns=["layer", "head", f"effect ({self.method})"])

    def most_negative(self, n: int = 5) -> list[tuple[int, int, float]]:
        """The n heads whose ablation lowers the metric most: (layer, head, effect), worst first."""
        order = np.argsort(self.heads, axis=None)[:n]
        nh = self.heads.shape[1]
        return [(int(i) // nh, int(i) % nh, float(self.heads.flat[i])) for i in order if self.heads.flat[i] < 0]


def _plain(trace: Trace) -> None:
    if trace.interventions is not None:
        raise ValueError("This analysis needs the trace of a plain run (one without interventions).")


def _check_ablation(ablation: str) -> None:
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {ABLATIONS}, not {ablation!r}.")


SWEEP_TOKENS = 8192  # copies × tokens run in one pass at most (SmolLM2: about 25 KB per token and block)


def _sweep(trace: Trace, metric: Metric, copies: Callable[[int], tuple[Tensor, LayerEdit | None]],
           progress: Progress | None = None) -> np.ndarray:
    """The metric of reruns that start at every layer: copies(l) gives the n copies (n, T, C)
    entering block l and the edit block l makes to them (None: none). Copies of consecutive
    layers share one pass (GPT.forward_from's joining): copies(l + 1) join after block l, so each
    block runs once for every copy present; at most SWEEP_TOKENS copy-tokens per pass. The last
    layer's copies run on their own, so that the passes' last block, unedited, computes only the
    position read out. Returns (n_layer, n)."""
    model, L, T = trace.model, trace.n_layer, trace.n_tokens
    n = copies(0)[0].shape[0]
    per_pass = max(1, SWEEP_TOKENS // (n * T))
    passes = [(a, min(L - 1, a + per_pass)) for a in range(0, L - 1, per_pass)] + [(L - 1, L)]
    total, done = sum(L - a for a, _ in passes), 0
    values = np.zeros((L, n))
    where = None if metric.position == T - 1 else torch.tensor([metric.position])
    for a, b in passes:
        first, joining, edits = None, {}, {}
        for j in range(a, b):
            x, edit = copies(j)
            if j == a:
                first = x
            else:
                joining[j] = x
            if edit is not None:
                edits[j] = edit.after((j - a) * n)
        report = None if progress is None else (lambda d, t, done=done: progress(done + d, total))
        normed = model.forward_from(a, first, Interventions.at(L, edits), where, joining, report)  # ((b-a)·n, 1, C)
        values[a:b] = metric.of_normed(model, normed[:, 0]).view(b - a, n).numpy()
        done += L - a
    return values


def ablation_map(trace: Trace, metric: Metric, ablation: Ablation = "zero", *, mlps: bool = True,
                 progress: Progress | None = None) -> EffectMap:
    """Knock out every head (and every MLP) alone and measure the metric. For each layer, nh (+ 1)
    copies of the trace's residual stream entering it, copy h with head h ablated (the last with
    the MLP); all layers' copies run in shared passes (_sweep). progress(blocks done, total)."""
    _plain(trace)
    _check_ablation(ablation)
    metric = metric.check(trace)
    config = trace.model.config
    L, nh, T, C = config.n_layer, config.n_head, trace.n_tokens, config.d_model
    B = nh + int(mlps)
    edit = LayerEdit(ablation=ablation, heads=torch.eye(B, nh, dtype=torch.bool),  # copy h: head h
                     mlp=(torch.arange(B) == nh) if mlps else None)  # copy nh: the MLP
    base = metric_value(trace, metric)
    with torch.inference_mode():
        values = _sweep(trace, metric, lambda l: (trace.resid_pre(l)[None].expand(B, T, C), edit), progress)
    effects = values - base
    return EffectMap(heads=effects[:, :nh], mlps=effects[:, nh] if mlps else np.full(L, np.nan), base=base,
                     ablation=ablation, method="exact")


def ablation_map_gradient(trace: Trace, metric: Metric, ablation: Ablation = "zero") -> EffectMap:
    """Attribution patching: the first-order estimate of ablation_map from one forward and one
    backward pass. effect ≈ Σ (a_ablated − a) · ∂metric/∂a over positions and dimensions, for
    a = each head's z (nh, T, hs) and each MLP's output (T, C)."""
    _plain(trace)
    _check_ablation(ablation)
    metric = metric.check(trace)
    model, config = trace.model, trace.model.config
    L, nh, hs, T, C = config.n_layer, config.n_head, config.d_head, trace.n_tokens, config.d_model
    z_add = [torch.zeros(1, nh, T, hs, requires_grad=True) for _ in range(L)]
    mlp_add = [torch.zeros(1, T, C, requires_grad=True) for _ in range(L)]
    edits = Interventions(tuple(LayerEdit(z_add=z, mlp_add=m) for z, m in zip(z_add, mlp_add)))
    x = trace.resid_pre(0).clone()[None]  # a normal tensor: inference tensors cannot be saved for backward
    with torch.inference_mode(False), torch.enable_grad():
        normed = model.forward_from(0, x, edits, torch.tensor([metric.position]))
        value = metric.of_normed(model, normed[0, 0])
        grads = torch.autograd.grad(value, z_add + mlp_add)
    heads, mlps = np.zeros((L, nh)), np.zeros(L)
    with torch.inference_mode():
        for layer in range(L):
            z, m = trace.z(layer), trace.mlp_module_out(layer)  # (nh, T, hs), (T, C)
            z_fill = z.mean(1, keepdim=True) if ablation == "mean" else torch.zeros(())
            m_fill = m.mean(0, keepdim=True) if ablation == "mean" else torch.zeros(())
            heads[layer] = ((z_fill - z) * grads[layer][0]).sum((1, 2)).numpy()
            mlps[layer] = float(((m_fill - m) * grads[L + layer][0]).sum())
    return EffectMap(heads=heads, mlps=mlps, base=float(value.detach()), ablation=ablation, method="gradient")


def agreement(exact: EffectMap, approx: EffectMap) -> dict[str, float]:
    """How well the gradient estimate matches the exact map: Pearson correlation over the heads
    ("heads") and over the MLPs ("mlps", NaN if not computed), and the share of the exact map's
    k most harmful heads that the estimate also puts among its k most harmful ("top_overlap")."""

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        ok = ~(np.isnan(a) | np.isnan(b))
        a, b = a[ok], b[ok]
        return float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 and a.std() > 0 and b.std() > 0 else float("nan")

    k = min(10, exact.heads.size)
    top_exact = set(np.argsort(exact.heads, axis=None)[:k].tolist())
    top_approx = set(np.argsort(approx.heads, axis=None)[:k].tolist())
    return {"heads": corr(exact.heads.ravel(), approx.heads.ravel()), "mlps": corr(exact.mlps, approx.mlps),
            "top_overlap": len(top_exact & top_approx) / k, "k": k}


# ---- activation patching ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PatchSite:
    """One patching map: what is copied from the clean run, its rows and columns."""

    title: str
    columns: str  # "position" or "head"
    explanation: str


PATCH_SITES = {
    "resid": PatchSite("Residual stream", "position",
                       "the whole residual stream at one (layer, position): row 'embed' is the input of block 0, "
                       "row Ll the stream leaving block l"),
    "z": PatchSite("Head outputs z", "head", "one head's context vectors z at every position"),
    "attn_out": PatchSite("Attention output", "position", "one layer's attention output at one position"),
    "mlp_out": PatchSite("MLP output", "position", "one layer's MLP output at one position"),
}


@dataclass(frozen=True)
class PatchingMap:
    """restored (rows, cols): (patched − corrupted) / (clean − corrupted) of the metric for each
    patch (1 = the clean prediction back, 0 = no change); values (rows, cols): the metric itself."""

    site: str
    restored: np.ndarray
    values: np.ndarray
    rows: list[str]
    columns: list[str]
    clean: float
    corrupted: float

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.restored, index=pd.Index(self.rows, name="layer"), columns=self.columns)


def same_length(clean: Trace, corrupted: Trace) -> None:
    """ValueError with both token counts when two runs cannot be patched into each other."""
    if clean.n_tokens != corrupted.n_tokens:
        raise ValueError(
            f"The clean prompt has {clean.n_tokens} tokens and the corrupted one {corrupted.n_tokens}: patching "
            "copies activations position by position, so both need the same number of tokens."
        )
    if clean.model is not corrupted.model:
        raise ValueError("Both runs must come from the same model.")


def patching_map(clean: Trace, corrupted: Trace, metric: Metric, site: str,
                 progress: Progress | None = None) -> PatchingMap:
    """Copy each activation of `site` (a PATCH_SITES key) from the clean run into the corrupted
    one, alone, and measure the metric: per layer, one copy of the corrupted run per position (or
    head), reruns from that layer sharing passes (_sweep). progress(blocks done, total)."""
    if site not in PATCH_SITES:
        raise ValueError(f"Unknown patching site {site!r}: use one of {list(PATCH_SITES)}.")
    _plain(clean)
    _plain(corrupted)
    same_length(clean, corrupted)
    metric = metric.check(corrupted)
    model, config = corrupted.model, corrupted.model.config
    L, nh, T, C = config.n_layer, config.n_head, corrupted.n_tokens, config.d_model
    n = nh if site == "z" else T
    one_each = torch.eye(n, dtype=torch.bool)  # copy i patches position (or head) i

    def copies(layer: int) -> tuple[Tensor, LayerEdit | None]:
        if site == "resid":  # the stream entering block `layer`, one position from the clean run
            return torch.where(one_each[..., None], clean.resid_stream[layer], corrupted.resid_stream[layer]), None
        source = {"z": clean.z, "attn_out": clean.attn_module_out, "mlp_out": clean.mlp_module_out}[site](layer)
        return corrupted.resid_pre(layer)[None].expand(n, T, C), LayerEdit(**{site: (one_each, source)})

    with torch.inference_mode():
        values = _sweep(corrupted, metric, copies, progress)
        if site == "resid":  # and the stream leaving the last block: only the final norm is left
            normed = model.forward_from(L, copies(L)[0], positions=torch.tensor([metric.position]))
            values = np.vstack((values, metric.of_normed(model, normed[:, 0]).numpy()))
    clean_value, corrupted_value = metric_value(clean, metric), metric_value(corrupted, metric)
    gap = clean_value - corrupted_value
    restored = (values - corrupted_value) / gap if gap != 0 else np.full_like(values, np.nan)
    rows = [f"L{l}" for l in range(L)]
    rows = ["embed"] + [f"after {r}" for r in rows] if site == "resid" else rows
    columns = [f"H{h}" for h in range(nh)] if site == "z" else [f"{i}·{t}" for i, t in enumerate(corrupted.tokens)]
    return PatchingMap(site=site, restored=restored, values=values, rows=rows, columns=columns, clean=clean_value,
                       corrupted=corrupted_value)


# ---- picking tokens, corrupted prompts, comparing runs --------------------------------------------------
def token_choices(trace: Trace, text: str, position: int = -1) -> pd.DataFrame:
    """The tokens typed text may stand for: as typed, with a leading space, and without; each
    row the first token of that variant (pieces: how many tokens the variant is), its id, and its
    probability and rank at `position`. Most likely first, one row per distinct token."""
    word = text.strip()
    variants = [v for v in dict.fromkeys([text, " " + word, word]) if v.strip() or (v == text and v)]
    probs = torch.softmax(trace.logits_at(position).float(), dim=-1)
    rows, seen = [], set()
    for variant in variants:
        ids = trace.model.tokenizer.encode(variant)
        if not ids or ids[0] in seen:
            continue
        seen.add(ids[0])
        rows.append({"token": trace.model.tokenizer.token_strings(ids[:1])[0], "id": ids[0], "typed": variant,
                     "pieces": len(ids), "probability": float(probs[ids[0]]), "rank": token_rank(probs, ids[0])})
    frame = pd.DataFrame(rows, columns=["token", "id", "typed", "pieces", "probability", "rank"])
    return frame.sort_values("rank", kind="stable").reset_index(drop=True)


NAME_RE = re.compile(r"\b[A-Z][a-z]+\b")
SENTENCE_START_RE = re.compile(r"(?:^|[.!?]\s+)\W*(?=\w)")


def name_swap(text: str) -> str | None:
    """The prompt with its first two names swapped everywhere ("Mary" <-> "John"), or None
    without two. A name: a capitalised word that appears at least once inside a sentence, so
    "When" or "The" opening a sentence is not one."""
    starts = {m.end() for m in SENTENCE_START_RE.finditer(text)}
    names = list(dict.fromkeys(m.group() for m in NAME_RE.finditer(text) if m.start() not in starts))
    if len(names) < 2:
        return None
    a, b = names[:2]
    return re.sub(rf"\b(?:{re.escape(a)}|{re.escape(b)})\b", lambda m: b if m.group() == a else a, text)


def token_stats(trace: Trace, ids: Sequence[int], position: int = -1) -> pd.DataFrame:
    """For each token id at `position`: token, id, logit, probability, rank (1 = most likely)."""
    logits = trace.logits_at(position).float()
    probs = torch.softmax(logits, dim=-1)
    return pd.DataFrame({
        "token": trace.model.tokenizer.token_strings(list(ids)), "id": list(ids),
        "logit": [float(logits[i]) for i in ids], "probability": [float(probs[i]) for i in ids],
        "rank": [token_rank(probs, i) for i in ids],
    })


def compare_runs(before: Trace, after: Trace, position: int = -1, n: int = 10) -> tuple[pd.DataFrame, float]:
    """The top-n tokens of each run at `position`, with their probability in both runs (union of
    the two top lists, ordered by the probability before), and KL(before ‖ after) in nats."""
    p = torch.softmax(before.logits_at(position).double(), dim=-1)
    q = torch.softmax(after.logits_at(position).double(), dim=-1)
    ids = list(dict.fromkeys(torch.topk(p, n).indices.tolist() + torch.topk(q, n).indices.tolist()))
    ids.sort(key=lambda i: -float(p[i]))
    frame = pd.DataFrame({
        "token": before.model.tokenizer.token_strings(ids), "id": ids,
        "before": p[ids].numpy(), "after": q[ids].numpy(),
        "rank before": [token_rank(p, i) for i in ids], "rank after": [token_rank(q, i) for i in ids],
    })
    kl = float((p * (torch.log(p.clamp_min(1e-300)) - torch.log(q.clamp_min(1e-300)))).sum())
    return frame, kl
