"""Issue 4's benchmark: what does seeing every tensor cost, next to a plain forward pass?

Two subjects, each one set of weights loaded into gptviz and into transformers:
GPT-2-small shape with random fp32 weights (saved by transformers, loaded by gptviz from
that directory) and SmolLM2-135M (the shipped GGUF, loaded by both). Sections:

- forward: medians over repeats of transformers' plain sdpa forward (the baseline, use_cache=False),
  gptviz's plain forward, gptviz's trace, all patterns computed on a ready trace, trace + all
  patterns, transformers eager + output_attentions, and TransformerLens run_with_cache (GPT-2
  shape only, in bench/.venv-peers, see setup-peers.sh). Cases run round-robin (order rotated
  each round) so a burst of load from elsewhere hits every case alike; a ratio is the median of
  the per-round ratios to the baseline of the same round. CPU-time ratios are printed as well.
- memory: extra peak RSS of one forward at T = 1024, one fresh process per case (rss_case.py).
- generation: one step at a 256-token context with the KV cache, vs transformers' cached
  step, vs recomputing the whole sequence, and Trace.extend (what the app uses to step).
- render: data + figure build + fig.to_json() for the attention heatmap and the all-heads
  overview (gptviz.plots / gptviz.analysis.heads; "n/a" where those are missing).
- attribution (issue 8): the ablation map of every head (and MLP), and its gradient estimate,
  on a ready trace, as ratios to one plain forward pass of the same prompt (round-robin).
- circuit: edge scores of every edge (attribution patching; integrated gradients, per step), one
  faithfulness point (one circuit run, alone and 4 at once), as ratios to one plain forward; the
  circuit graph of the top-200 pruned edges (prune + frame, figure build, to_json) in seconds.

    python -m bench.bench                 # the full run (about 10 minutes on 2 cores)
    python -m bench.bench --quick         # a smoke run
    python -m bench.bench --json out.json --threads 2 --models gpt2-small-shape
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import gptviz  # noqa: E402
from bench import cases  # noqa: E402
from bench.cases import Subject  # noqa: E402
from bench.timing import Case, combine, summarise, time_cases  # noqa: E402
from gptviz.model import KVCache, LayerKV  # noqa: E402

if TYPE_CHECKING:
    from gptviz.analysis.circuit import EdgeScores

log = logging.getLogger("bench")

REPO = Path(__file__).resolve().parents[1]
PEERS_PYTHON = REPO / "bench" / ".venv-peers" / "bin" / "python"
BASELINE = "hf_sdpa"
FORWARD_ROWS = {
    "hf_sdpa": "transformers plain forward, sdpa (baseline)",
    "gv_forward": "gptviz plain forward `model(ids)`",
    "gv_trace": "gptviz trace (q, k, v, residual stream, logits)",
    "gv_patterns": "gptviz all patterns, on a ready trace",
    "gv_trace_patterns": "gptviz trace + all patterns",
    "hf_eager_attn": "transformers eager + output_attentions",
    "tl_cache": "TransformerLens run_with_cache",
}
TIMED_FORWARD = ("hf_sdpa", "gv_forward", "gv_trace", "gv_patterns", "hf_eager_attn")
GEN_ROWS = {
    "hf_step": "transformers cached step (baseline)",
    "gv_step": "gptviz cached step `model(tok, cache=...)`",
    "gv_extend": "gptviz `Trace.extend([tok])`",
    "gv_recompute": "gptviz full recompute `model(all ids)`",
}
MEMORY_ROWS = {
    "hf_sdpa": "transformers plain forward, sdpa",
    "gv_forward": "gptviz plain forward",
    "gv_trace": "gptviz trace",
    "gv_trace_patterns": "gptviz trace + all patterns held",
    "hf_eager_attn": "transformers eager + output_attentions",
    "tl_cache": "TransformerLens run_with_cache",
}
FIXED_MMAP_THRESHOLD = 1 << 20  # MALLOC_MMAP_THRESHOLD_ for the "fixed threshold" memory column
FIXED_THRESHOLD_CASES = ("hf_sdpa", "gv_forward", "gv_trace", "hf_eager_attn")

ATTRIBUTION_ROWS = {
    "gv_forward": "plain forward `model(ids)` (baseline)",
    "ablation_heads": "ablation map, every head alone",
    "ablation_all": "ablation map, every head and every MLP alone",
    "gradient": "attribution patching (gradient estimate, heads and MLPs)",
}
ATTRIBUTION_LIMITS = {("ablation_heads", 16): 25.0, ("ablation_heads", 64): 150.0, ("gradient", 16): 4.0,
                      ("gradient", 64): 4.0}

IG_STEPS, BATCHED_RUNS, GRAPH_EDGES = 5, 4, 200
CIRCUIT_ROWS = {
    "gv_forward": "plain forward `model(ids)` (baseline)",
    "eap": "edge scores, attribution patching (every edge)",
    "ig": f"edge scores, integrated gradients ({IG_STEPS} steps, per step)",
    "circuit_run": "one faithfulness point: one circuit run (`Setup.runs`, one mask)",
    "circuit_run_batched": f"… {BATCHED_RUNS} circuit runs at once, per run",
}
CIRCUIT_LIMITS = {"eap": 6.0, "ig": 4.0, "circuit_run": 2.0}
CIRCUIT_GRAPH_LIMIT_S = 2.0

DEFAULT = dict(Ts=(16, 64, 256, 1024), repeats={16: 7, 64: 5, 256: 4, 1024: 3}, gen_context=256, gen_repeats=7,
               memory_T=1024, memory_repeats=1, render_T=1024, render_repeats=3,
               attribution_Ts=(16, 64), attribution_repeats={16: 5, 64: 3}, circuit_T=16, circuit_repeats=3)
QUICK = dict(Ts=(16, 64), repeats={16: 3, 64: 2}, gen_context=32, gen_repeats=3,
             memory_T=256, memory_repeats=1, render_T=64, render_repeats=1,
             attribution_Ts=(16,), attribution_repeats={16: 1}, circuit_T=16, circuit_repeats=1)


def warmup(T: int) -> int:
    """Warm-up calls per case: none at T >= 1024 (smaller T ran just before, and per-round
    ratios keep a slow first round fair), one below."""
    return 0 if T >= 1024 else 1


# ---- sections ----------------------------------------------------------------------------------
def forward_section(subject: Subject, Ts, repeats: dict[int, int]) -> dict[int, dict]:
    """{T: {case: summary}} for the in-process forward cases (TL is added by peer_section)."""
    results = {}
    for T in Ts:
        ids = cases.random_ids(subject.gv.config.vocab_size, T)
        named = {name: cases.forward_case(name, ids, gv=subject.gv, hf=subject.hf, hf_eager=subject.hf_eager)
                 for name in TIMED_FORWARD}
        timings = time_cases(named, repeats.get(T, 3), warmup=warmup(T))
        timings["gv_trace_patterns"] = combine(timings, ("gv_trace", "gv_patterns"))
        results[T] = summarise(timings, BASELINE)
        log.info("%s T=%d: %s", subject.name, T,
                 ", ".join(f"{k} {v['ratio']:.2f}x" for k, v in results[T].items()))
    return results


def generation_cases(subject: Subject, context: int) -> dict[str, Case]:
    """One new token after `context` cached tokens, four ways (all on the same ids)."""
    ids = cases.random_ids(subject.gv.config.vocab_size, context + 1)
    prompt, new = ids[:, :context], ids[:, context:]
    with torch.inference_mode():
        hf_cache = subject.hf(prompt, use_cache=True).past_key_values
        parent = gptviz.trace(subject.gv, prompt[0].tolist())
    gv_cache = parent.kv_cache()

    return {
        "hf_step": Case(lambda past: subject.hf(new, past_key_values=past, use_cache=True).logits,
                        lambda: copy.deepcopy(hf_cache)),
        "gv_step": Case(lambda cache: subject.gv(new, cache=cache),
                        lambda: KVCache([LayerKV(layer.k, layer.v) for layer in gv_cache.layers])),
        "gv_extend": Case(lambda _: parent.extend(new[0].tolist())),
        "gv_recompute": Case(lambda _: subject.gv(ids)),
    }


def generation_section(subject: Subject, context: int, repeats: int) -> dict:
    named = generation_cases(subject, context)
    with torch.inference_mode():  # the cached step gives the same next-token logits as recomputing
        step = named["gv_step"].run(named["gv_step"].setup())[0, -1]
        hf_step = named["hf_step"].run(named["hf_step"].setup())[0, -1]
        full = named["gv_recompute"].run(None)[0, -1]
    check = max(float((step - full).abs().max()), float((hf_step - full).abs().max()))
    result = summarise(time_cases(named, repeats), "hf_step")
    return {"context": context, "max_logit_diff": check, "cases": result}


def render_section(subject: Subject, T: int, repeats: int) -> dict:
    """Attention heatmap of one head and the all-heads overview at T tokens: data, build, to_json."""
    try:
        from gptviz.analysis import heads
        from gptviz.plots import attention as attention_plots
    except ImportError as err:
        return {"error": f"n/a ({err})"}
    tr = gptviz.trace(subject.gv, cases.random_ids(subject.gv.config.vocab_size, T)[0].tolist())
    layer, head = tr.n_layer - 1, 0
    max_cells = getattr(attention_plots, "MAX_CELLS", 512)
    steps: dict[str, dict[str, Callable]] = {}
    if hasattr(heads, "pooled_pattern") and hasattr(attention_plots, "pattern_heatmap"):
        if T > max_cells:
            def heatmap_data():
                return heads.pooled_pattern(tr, layer, head, max_cells)

            def heatmap_build(data):
                pooled, edges = data
                return attention_plots.pattern_heatmap(pooled, tr.tokens, edges=(edges, edges), title="pooled")
        else:
            def heatmap_data():
                return heads.pattern_window(tr, layer, head, 0, T)

            def heatmap_build(data):
                return attention_plots.pattern_heatmap(data, tr.tokens)
        steps["attention heatmap"] = {"data": heatmap_data, "build": heatmap_build}
    if hasattr(heads, "head_stats") and hasattr(attention_plots, "overview_figure"):
        steps[f"overview, {subject.n_heads_total} heads"] = {
            "data": lambda: heads.head_stats(tr),
            "build": lambda stats: attention_plots.overview_figure(stats.tiles, (0, 0), stats.entropy, "entropy"),
        }
    results = {}
    for name, step in steps.items():  # the data once (it is cached in the app), the figure `repeats` times
        t0 = time.perf_counter()
        data = step["data"]()
        data_s = time.perf_counter() - t0
        build_s, json_s = [], []
        for _ in range(max(1, repeats)):
            t1 = time.perf_counter()
            fig = step["build"](data)
            t2 = time.perf_counter()
            text = fig.to_json()
            json_s.append(time.perf_counter() - t2)
            build_s.append(t2 - t1)
        results[name] = {"T": T, "data_ms": data_s * 1e3, "build_ms": statistics.median(build_s) * 1e3,
                         "json_ms": statistics.median(json_s) * 1e3, "json_kb": len(text) / 1024}
    if not results:
        return {"error": "n/a (no pattern_heatmap / overview_figure builders)"}
    return results


def attribution_cases(subject: Subject, T: int) -> dict[str, Case]:
    """The ablation maps and the gradient estimate on a ready trace of T random ids (the metric:
    the log-probability of the top next token), and the plain forward they are compared with."""
    from gptviz.analysis import attribution

    ids = cases.random_ids(subject.gv.config.vocab_size, T)
    tr = gptviz.trace(subject.gv, ids[0].tolist())
    metric = attribution.Metric(int(tr.last_logits.argmax()))
    return {
        "gv_forward": Case(lambda _: subject.gv(ids)),
        "ablation_heads": Case(lambda _: attribution.ablation_map(tr, metric, mlps=False)),
        "ablation_all": Case(lambda _: attribution.ablation_map(tr, metric)),
        "gradient": Case(lambda _: attribution.ablation_map_gradient(tr, metric)),
    }


def attribution_section(subject: Subject, Ts, repeats: dict[int, int]) -> dict:
    """{T: {case: summary}}: ratios to the plain forward of the same round."""
    results = {}
    for T in Ts:
        timings = time_cases(attribution_cases(subject, T), repeats.get(T, 2), warmup=1)
        results[T] = summarise(timings, "gv_forward")
        log.info("%s attribution T=%d: %s", subject.name, T,
                 ", ".join(f"{k} {v['ratio']:.1f}x" for k, v in results[T].items()))
    return results


def attribution_table(result: dict, key: str = "ratio") -> str:
    by_T = result["attribution"]
    Ts = list(by_T)
    heads = f" ({result['n_heads']} heads)" if "n_heads" in result else ""
    lines = ["| case | " + " | ".join(f"T={T}" for T in Ts) + " |", "|---|" + "---:|" * len(Ts)]
    for case, label in ATTRIBUTION_ROWS.items():
        label = label + heads if case == "ablation_heads" else label
        lines.append(f"| {label} | " + " | ".join(cell(by_T[T].get(case), key) for T in Ts) + " |")
    return "\n".join(lines)


def circuit_cases(subject: Subject, T: int) -> tuple[dict[str, Case], EdgeScores]:
    """Edge scores, circuit runs and the plain forward they are compared with, on T random ids (the
    source: T other random ids; the metric: logit(top) − logit(second) of the clean run), and the
    EAP scores (the circuit run keeps their top GRAPH_EDGES edges, pruned)."""
    from gptviz.analysis import circuit as cc
    from gptviz.analysis.attribution import Metric

    ids = cases.random_ids(subject.gv.config.vocab_size, T)
    clean = gptviz.trace(subject.gv, ids[0].tolist())
    source = gptviz.trace(subject.gv, cases.random_ids(subject.gv.config.vocab_size, T, seed=1)[0].tolist())
    metric = Metric(*clean.last_logits.topk(2).indices.tolist())

    def scores(method: str) -> EdgeScores:
        with torch.inference_mode(False):  # the harness times in inference mode; scores need autograd
            return cc.edge_scores(clean, metric, source, method, IG_STEPS)

    eap = scores("eap")
    setup = cc.Setup.of(clean, metric, source)
    cut = setup.graph.valid() & ~eap.circuit(GRAPH_EDGES)  # (n_senders, n_receivers)
    named = {
        "gv_forward": Case(lambda _: subject.gv(ids)),
        "eap": Case(lambda _: scores("eap")),
        "ig": Case(lambda _: scores("ig")),
        "circuit_run": Case(lambda _: setup.runs(cut[None])),
        "circuit_run_batched": Case(lambda _: setup.runs(cut.expand(BATCHED_RUNS, -1, -1))),
    }
    return named, eap


def circuit_figure(scores: EdgeScores):
    """What the Circuit page draws once the scores exist: the top GRAPH_EDGES edges pruned, their frame, the graph."""
    from gptviz.plots.circuit import circuit_graph

    graph = scores.graph
    return circuit_graph(scores.frame(scores.circuit(GRAPH_EDGES)), graph.n_layer, graph.n_head, graph.n_kv_head)


def circuit_section(subject: Subject, T: int, repeats: int) -> dict:
    """{"T", "n_edges", "cases": {case: summary} (ratios to the plain forward; ig per step, batched runs per
    run), "graph": {"edges" kept, seconds of "build_s" (prune + frame + figure) and "json_s" (to_json)}}."""
    named, eap = circuit_cases(subject, T)
    result = summarise(time_cases(named, repeats, warmup=1), "gv_forward")
    result["ig"] = per_unit(result["ig"], IG_STEPS)
    result["circuit_run_batched"] = per_unit(result["circuit_run_batched"], BATCHED_RUNS)
    build_s, json_s = [], []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fig = circuit_figure(eap)
        t1 = time.perf_counter()
        fig.to_json()
        build_s.append(t1 - t0)
        json_s.append(time.perf_counter() - t1)
    log.info("%s circuit T=%d: %s", subject.name, T, ", ".join(f"{k} {v['ratio']:.1f}x" for k, v in result.items()))
    return {"T": T, "n_edges": eap.graph.n_edges, "cases": result,
            "graph": {"edges": int(eap.circuit(GRAPH_EDGES).sum()), "build_s": statistics.median(build_s),
                      "json_s": statistics.median(json_s)}}


def per_unit(summary: dict, n: int) -> dict:
    """A summary of a case that did n units of work, per unit (times and ratios divided by n)."""
    return {k: v / n if k in ("ms", "cpu_ms", "ratio", "cpu_ratio") else v for k, v in summary.items()}


def circuit_table(result: dict) -> str:
    circuit = result["circuit"]
    lines = ["| case | wall | CPU time |", "|---|---:|---:|"]
    for case, label in CIRCUIT_ROWS.items():
        label = f"{label} ({circuit['n_edges']:,} edges)" if case == "eap" else label
        summary = circuit["cases"][case]
        lines.append(f"| {label} | {cell(summary)} | {cell(summary, 'cpu_ratio')} |")
    g = circuit["graph"]
    lines.append(f"| circuit graph, top {GRAPH_EDGES} pruned ({g['edges']} edges): prune + frame + figure, to_json "
                 f"| {g['build_s']:.3f} s + {g['json_s']:.3f} s | |")
    return "\n".join(lines)


def run_child(cmd: list[str], env: dict | None = None, timeout: float = 600) -> dict:
    """Run a child that prints one JSON object as its last stdout line."""
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(cmd[:4])}… failed: {' | '.join(tail)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_command(subject: Subject, case: str, T: int, threads: int) -> list[str]:
    if case == "tl_cache":
        return [str(PEERS_PYTHON), "-m", "bench.peer_tl", "memory", "--source", subject.source, "--T", str(T),
                "--threads", str(threads)]
    return [sys.executable, "-m", "bench.rss_case", "--source", subject.source, "--case", case, "--T", str(T),
            "--threads", str(threads)]


def memory_section(subject: Subject, T: int, repeats: int, threads: int, with_peers: bool,
                   workers: int = 2) -> dict:
    """{case: {extra_mb (median over runs), min_mb, max_mb, fixed_extra_mb}}, one fresh process per run.

    fixed_extra_mb: one more run with glibc's mmap threshold fixed at 1 MiB, so freed tensors
    go back to the system instead of staying in the heap: what the kept tensors themselves
    cost. Peak RSS is per process, so `workers` children run at once.
    """
    wanted = [c for c in MEMORY_ROWS if c != "tl_cache" or (with_peers and subject.is_gpt2 and PEERS_PYTHON.exists())]
    fixed_env = {"MALLOC_MMAP_THRESHOLD_": str(FIXED_MMAP_THRESHOLD)}
    jobs = [(case, None) for case in wanted for _ in range(repeats)]
    jobs += [(case, fixed_env) for case in wanted if case in FIXED_THRESHOLD_CASES]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [(case, env, pool.submit(run_child, memory_command(subject, case, T, threads), env))
                   for case, env in jobs]
    runs: dict[str, list[dict]] = {case: [] for case in wanted}
    fixed: dict[str, dict] = {}
    errors: dict[str, str] = {}
    for case, env, future in futures:
        try:
            result = future.result()
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            errors[case] = str(err)
            continue
        if env is None:
            runs[case].append(result)
        else:
            fixed[case] = result
    results = {}
    for case in wanted:
        if case in errors or not runs[case]:
            results[case] = {"error": errors.get(case, "no run")}
            continue
        extras = [r["extra_mb"] for r in runs[case]]
        results[case] = {"T": T, "extra_mb": statistics.median(extras), "runs": len(extras), "min_mb": min(extras),
                         "max_mb": max(extras),
                         "base_mb": statistics.median(r["base_mb"] for r in runs[case]),
                         "fixed_extra_mb": fixed[case]["extra_mb"] if case in fixed else None,
                         "hwm_reset": all(r["hwm_reset"] for r in runs[case])}
    log.info("memory %s: %s", subject.name, {c: round(r.get("extra_mb", -1)) for c, r in results.items()})
    return results


def peer_section(subject: Subject, Ts, repeats: dict[int, int], threads: int) -> dict:
    """TransformerLens timings from bench/.venv-peers (ratios to sdpa measured in that process)."""
    if not subject.is_gpt2:
        return {"status": "n/a (GPT-2 shape only)"}
    if not PEERS_PYTHON.exists():
        return {"status": "not installed (bash bench/setup-peers.sh)"}
    cmd = [str(PEERS_PYTHON), "-m", "bench.peer_tl", "time", "--source", subject.source, "--threads", str(threads),
           "--T", *map(str, Ts), "--repeats", *(str(repeats.get(T, 3)) for T in Ts)]
    try:
        return {"status": "ok", **run_child(cmd, timeout=1800)}
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        return {"status": f"failed: {err}"}


# ---- tables ------------------------------------------------------------------------------------
def cell(summary: dict | None, key: str = "ratio") -> str:
    if not summary:
        return "n/a"
    return f"{summary[key]:.2f}× ({summary['ms' if key == 'ratio' else 'cpu_ms']:,.0f} ms)"


def forward_rows(result: dict) -> dict[str, dict[int, dict | None]]:
    """{case: {T: summary or None}}, TL merged in from the peer section."""
    forward, peer = result["forward"], result.get("peers", {})
    rows = {}
    for case in FORWARD_ROWS:
        if case == "tl_cache":
            timing = peer.get("timing", {})
            rows[case] = {T: timing.get(str(T)) for T in forward}
        else:
            rows[case] = {T: forward[T].get(case) for T in forward}
    return rows


def forward_table(result: dict, key: str = "ratio") -> str:
    Ts = list(result["forward"])
    lines = ["| case | " + " | ".join(f"T={T}" for T in Ts) + " |", "|---|" + "---:|" * len(Ts)]
    for case, by_T in forward_rows(result).items():
        label = FORWARD_ROWS[case]
        if case == "tl_cache" and result.get("peers", {}).get("status", "ok") != "ok":
            lines.append(f"| {label} | " + " | ".join([result["peers"]["status"]] * len(Ts)) + " |")
            continue
        lines.append(f"| {label} | " + " | ".join(cell(by_T[T], key) for T in Ts) + " |")
    return "\n".join(lines)


def generation_table(result: dict) -> str:
    gen = result["generation"]
    lines = [f"| one new token after {gen['context']} tokens | ms | × transformers cached step |", "|---|---:|---:|"]
    for case, label in GEN_ROWS.items():
        s = gen["cases"][case]
        lines.append(f"| {label} | {s['ms']:,.1f} | {s['ratio']:.2f}× |")
    return "\n".join(lines)


def memory_table(result: dict) -> str:
    memory = result["memory"]
    eager = memory.get("hf_eager_attn", {}).get("extra_mb")
    lines = ["| case | extra peak RSS MB | runs | × transformers eager+attentions | "
             "with a fixed 1 MiB mmap threshold |", "|---|---:|---:|---:|---:|"]
    for case, label in MEMORY_ROWS.items():
        m = memory.get(case)
        if m is None:
            continue
        if "error" in m:
            lines.append(f"| {label} | {m['error']} | | | |")
            continue
        vs = f"{m['extra_mb'] / eager:.2f}×" if eager else "n/a"
        spread = f"{m['runs']} ({m['min_mb']:,.0f}–{m['max_mb']:,.0f})" if m["runs"] > 1 else "1"
        fixed = "" if m["fixed_extra_mb"] is None else f"{m['fixed_extra_mb']:,.0f}"
        lines.append(f"| {label} | {m['extra_mb']:,.0f} | {spread} | {vs} | {fixed} |")
    return "\n".join(lines)


def render_table(results: dict[str, dict]) -> str:
    lines = ["| model | figure | T | data ms | build ms | to_json ms | JSON KB |", "|---|---|---:|---:|---:|---:|---:|"]
    for name, result in results.items():
        render = result.get("render", {})
        if "error" in render:
            lines.append(f"| {name} | {render['error']} | | | | | |")
            continue
        for figure, r in render.items():
            lines.append(f"| {name} | {figure} | {r['T']} | {r['data_ms']:,.0f} | {r['build_ms']:,.0f} | "
                         f"{r['json_ms']:,.0f} | {r['json_kb']:,.0f} |")
    return "\n".join(lines)


def targets(results: dict[str, dict]) -> list[dict]:
    """Each of issue 4's targets: the measured value (time: wall and CPU ratios), the limit, met or not."""
    out = []

    def add(what: str, limit: float, value: float, cpu: float | None = None, unit: str = "×") -> None:
        out.append({"target": what, "limit": limit, "unit": unit, "value": value, "cpu_value": cpu,
                    "met": value <= limit, "cpu_met": None if cpu is None else cpu <= limit})

    for name, result in results.items():
        for T, by_case in result.get("forward", {}).items():
            limit = 1.10 if T <= 256 else 1.3
            trace = by_case["gv_trace"]
            add(f"{name}: trace ≤ {limit}× plain forward, T={T}", limit, trace["ratio"], trace["cpu_ratio"])
        gen = result.get("generation")
        if gen:
            step = gen["cases"]["gv_step"]
            add(f"{name}: cached step ≤ 1.2× transformers' cached step, context {gen['context']}", 1.2,
                step["ratio"], step["cpu_ratio"])
        memory = result.get("memory", {})
        trace_mem = memory.get("gv_trace", {})
        if "extra_mb" in trace_mem:
            add(f"{name}: extra peak RSS of a trace ≤ 450 MB, T={trace_mem['T']}", 450, trace_mem["extra_mb"],
                unit=" MB")
            eager = memory.get("hf_eager_attn", {}).get("extra_mb")
            if eager:
                add(f"{name}: … ≤ half of transformers eager + attentions ({eager:,.0f} MB / 2)", eager / 2,
                    trace_mem["extra_mb"], unit=" MB")
        for T, by_case in result.get("attribution", {}).items():
            for (case, at_T), limit in ATTRIBUTION_LIMITS.items():
                if at_T == T and case in by_case:
                    what = "all-heads ablation map" if case == "ablation_heads" else "gradient estimate"
                    add(f"{name}: {what} ≤ {limit:g}× plain forward, T={T}", limit, by_case[case]["ratio"],
                        by_case[case]["cpu_ratio"])
        circuit = result.get("circuit")
        if circuit:
            what = {"eap": "every edge's score (attribution patching)", "ig": "integrated gradients, per step",
                    "circuit_run": "one faithfulness point (one circuit run)"}
            for case, limit in CIRCUIT_LIMITS.items():
                summary = circuit["cases"][case]
                add(f"{name}: {what[case]} ≤ {limit:g}× plain forward, T={circuit['T']}", limit, summary["ratio"],
                    summary["cpu_ratio"])
            g = circuit["graph"]
            add(f"{name}: circuit graph (top {GRAPH_EDGES}) drawn ≤ {CIRCUIT_GRAPH_LIMIT_S:g} s after the scores",
                CIRCUIT_GRAPH_LIMIT_S, g["build_s"] + g["json_s"], unit=" s")
    return out


def targets_table(items: list[dict]) -> str:
    lines = ["| target | measured (wall) | met | by CPU time | met |", "|---|---:|:---:|---:|:---:|"]
    yes = {True: "yes", False: "NO", None: ""}
    for t in items:
        fmt = {"×": lambda v: f"{v:.2f}×", " s": lambda v: f"{v:.2f} s"}.get(
            t["unit"], lambda v: f"{v:,.0f}{t['unit']}")
        cpu = "" if t["cpu_value"] is None else fmt(t["cpu_value"])
        lines.append(f"| {t['target']} | {fmt(t['value'])} | {yes[t['met']]} | {cpu} | {yes[t['cpu_met']]} |")
    return "\n".join(lines)


def report(results: dict[str, dict], meta: dict) -> str:
    parts = [f"# gptviz benchmark\n\n{meta['threads']} torch thread(s), torch {meta['torch']}, "
             f"transformers {meta['transformers']}, {meta['cpus']} CPUs, load average at start {meta['loadavg']}.\n"
             "Cells: median of per-round ratios to transformers' plain sdpa forward of the same round "
             "(median wall ms in brackets)."]
    for name, result in results.items():
        parts.append(f"\n## {name}\n\nweights check: max |logits gptviz − transformers| = {result['check']:.1e}")
        if "forward" in result:
            parts.append("\n### Forward pass and trace (wall clock)\n\n" + forward_table(result))
            parts.append("\n### The same, by CPU time of the process\n\n" + forward_table(result, "cpu_ratio"))
            peer = result.get("peers", {})
            if peer.get("status") == "ok":
                parts.append(f"\nTransformerLens {peer.get('transformer_lens', '?')} ran in bench/.venv-peers; its "
                             "ratios are to transformers' sdpa forward timed in that same process "
                             f"(max |logits TL − transformers| = {peer.get('max_logit_diff', float('nan')):.1e}).")
        if "generation" in result:
            parts.append("\n### Generation step\n\n" + generation_table(result))
        if result.get("memory"):
            parts.append(f"\n### Extra peak RSS of one forward at T={next(iter(result['memory'].values())).get('T')}"
                         " (fresh process per run; VmHWM − VmRSS before the run)\n\n" + memory_table(result))
        if "attribution" in result:
            parts.append("\n### Why this token? Ablation maps (ratio to one plain forward, wall clock)\n\n"
                         + attribution_table(result))
            parts.append("\n### The same, by CPU time\n\n" + attribution_table(result, "cpu_ratio"))
        if "circuit" in result:
            parts.append(f"\n### Circuits at T={result['circuit']['T']} (ratio to one plain forward)\n\n"
                         + circuit_table(result))
    if any("render" in r for r in results.values()):
        parts.append("\n## Rendering (figure build and serialisation)\n\n" + render_table(results))
    parts.append("\n## Targets\n\n" + targets_table(targets(results)))
    return "\n".join(parts) + "\n"


# ---- the run -----------------------------------------------------------------------------------
def load_subjects(names: list[str], workdir: Path) -> Iterator[Subject]:
    """The subjects one at a time (each is dropped before the next one loads)."""
    for name in names:
        if name == cases.GPT2_SMALL:
            source = str(cases.save_gpt2_small(workdir / "gpt2-small-shape"))
        elif name == cases.SMOLLM2:
            source = cases.SMOLLM2
        else:
            raise ValueError(f"Unknown model {name!r}: use {', '.join(cases.SUBJECTS)}.")
        log.info("loading %s", name)
        yield cases.load_subject(name, source)


def bench_subject(subject: Subject, plan: dict, sections: set[str], threads: int) -> dict:
    result: dict = {"check": cases.max_logit_difference(subject)}
    if "forward" in sections:
        result["forward"] = forward_section(subject, plan["Ts"], plan["repeats"])
    if "peers" in sections:
        result["peers"] = peer_section(subject, plan["Ts"], plan["repeats"], threads)
    if "generation" in sections:
        result["generation"] = generation_section(subject, plan["gen_context"], plan["gen_repeats"])
    if "render" in sections:
        result["render"] = render_section(subject, plan["render_T"], plan["render_repeats"])
    if "attribution" in sections:
        result["n_heads"] = subject.n_heads_total
        result["attribution"] = attribution_section(subject, plan["attribution_Ts"], plan["attribution_repeats"])
    if "circuit" in sections:
        result["circuit"] = circuit_section(subject, plan["circuit_T"], plan["circuit_repeats"])
    if "memory" in sections and subject.name in plan.get("memory_models", (cases.GPT2_SMALL,)):
        result["memory"] = memory_section(subject, plan["memory_T"], plan["memory_repeats"], threads,
                                          with_peers="peers" in sections)
    return result


def metadata(threads: int) -> dict:
    import transformers

    return {"threads": threads, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "loadavg": " ".join(f"{x:.1f}" for x in os.getloadavg()), "date": time.strftime("%Y-%m-%d %H:%M")}


def to_jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj


SECTIONS = ("forward", "peers", "generation", "memory", "render", "attribution", "circuit")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer T and repeats: a smoke run")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for every case (default 1: the steadiest ratios on a shared 2-core box)")
    parser.add_argument("--models", default=",".join(cases.SUBJECTS),
                        help="comma-separated: " + ", ".join(cases.SUBJECTS))
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated: " + ", ".join(SECTIONS))
    parser.add_argument("--memory-models", default=cases.GPT2_SMALL,
                        help="comma-separated models whose peak RSS is measured (default: the target's GPT-2 shape)")
    parser.add_argument("--json", type=Path, help="also write every number to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    sections = set(args.sections.split(","))
    if bad := sections - set(SECTIONS):
        parser.error(f"unknown sections {sorted(bad)}: use {', '.join(SECTIONS)}")
    torch.set_num_threads(args.threads)
    plan = {**(QUICK if args.quick else DEFAULT), "memory_models": tuple(args.memory_models.split(","))}
    meta = metadata(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gptviz-bench-") as workdir:
        results = {}
        for subject in load_subjects(args.models.split(","), Path(workdir)):
            results[subject.name] = bench_subject(subject, plan, sections, args.threads)
            del subject
            gc.collect()
    meta["seconds"] = round(time.perf_counter() - started)
    text = report(results, meta) + f"\n{meta['seconds']} s in all.\n"
    print(text)
    if args.json:
        args.json.write_text(json.dumps(to_jsonable({"meta": meta, "results": results, "targets": targets(results)}),
                                        indent=1))


if __name__ == "__main__":
    main()
