"""The benchmark's functions on a tiny model: the tables have their rows and columns and every
number is finite and positive. No timing is asserted (that is what bench/bench.py reports)."""
from __future__ import annotations

import math

import pytest
import torch

from bench import bench, cases
from bench.timing import Case, summarise, time_cases

TS = (8, 16)


@pytest.fixture(scope="module")
def tiny_subject(tiny_gpt2_dir):
    return cases.load_subject("tiny-gpt2", str(tiny_gpt2_dir))


@pytest.fixture(scope="module")
def tiny_result(tiny_subject):
    plan = dict(Ts=TS, repeats={T: 1 for T in TS}, gen_context=8, gen_repeats=1, render_T=16, render_repeats=1)
    return bench.bench_subject(tiny_subject, plan, {"forward", "generation", "render"}, threads=1)


def finite_positive(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_same_weights_in_both_libraries(tiny_result):
    assert tiny_result["check"] < 1e-4


def test_forward_section_has_every_case_and_T(tiny_result):
    assert list(tiny_result["forward"]) == list(TS)
    for T in TS:
        by_case = tiny_result["forward"][T]
        assert set(by_case) == set(bench.FORWARD_ROWS) - {"tl_cache"}
        for summary in by_case.values():
            assert all(finite_positive(summary[k]) for k in ("ms", "cpu_ms", "ratio", "cpu_ratio"))
        assert by_case["hf_sdpa"]["ratio"] == 1.0


def test_forward_table_has_a_row_per_case_and_a_column_per_T(tiny_result):
    lines = bench.forward_table(tiny_result).splitlines()
    assert lines[0] == "| case | T=8 | T=16 |"
    rows = lines[2:]
    assert [row.split(" | ")[0].lstrip("| ") for row in rows] == list(bench.FORWARD_ROWS.values())
    for row in rows[:-1]:  # the last row is TransformerLens: a number, or why there is none
        cells = row.strip("|").split("|")[1:]
        assert len(cells) == len(TS) and all("×" in c and "ms" in c for c in cells)


def test_generation_section(tiny_result):
    gen = tiny_result["generation"]
    assert gen["max_logit_diff"] < 1e-4
    assert set(gen["cases"]) == set(bench.GEN_ROWS)
    assert all(finite_positive(s["ms"]) and finite_positive(s["ratio"]) for s in gen["cases"].values())
    assert len(bench.generation_table(tiny_result).splitlines()) == 2 + len(bench.GEN_ROWS)


def test_render_section(tiny_result):
    render = tiny_result["render"]
    assert "error" not in render, render
    for figure in render.values():
        assert all(finite_positive(figure[k]) for k in ("data_ms", "build_ms", "json_ms", "json_kb"))
    assert "tiny-gpt2" in bench.render_table({"tiny-gpt2": tiny_result})


def test_report_and_targets(tiny_result):
    meta = bench.metadata(threads=1)
    text = bench.report({"tiny-gpt2": tiny_result}, meta)
    assert "## tiny-gpt2" in text and "## Targets" in text
    items = bench.targets({"tiny-gpt2": tiny_result})
    assert {t["target"].split(": ")[1].split(",")[0] for t in items} >= {"trace ≤ 1.1× plain forward"}
    assert all(finite_positive(t["value"]) for t in items)


def test_memory_child_reports_a_peak(tiny_gpt2_dir):
    from bench import rss_case

    torch.set_num_threads(1)
    result = rss_case.measure(str(tiny_gpt2_dir), "gv_trace", T=16, warmup_T=8)
    assert result["peak_mb"] >= result["base_mb"] > 0 and result["extra_mb"] >= 0


def test_time_cases_rotates_and_ratios_are_per_round():
    calls = []
    named = {name: Case(lambda _, name=name: calls.append(name)) for name in "abc"}
    timings = time_cases(named, repeats=3, warmup=0)
    assert calls == list("abc" "bca" "cab")
    summary = summarise(timings, "a")
    assert summary["a"]["ratio"] == 1.0 and all(s["n"] == 3 for s in summary.values())
