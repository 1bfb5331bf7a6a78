"""Peak memory of one forward-pass case, in a fresh process (run by bench.py, one case each).

Loads only the model the case needs, runs the case twice at a small T (warm-up), then
reads the resident set size (VmRSS), resets the kernel's peak counter (writing 5 to
/proc/self/clear_refs), runs the case once at T, and reads the peak (VmHWM). Prints one
JSON line: base_mb, peak_mb, extra_mb = peak - base, hwm_reset (False: the peak counter
could not be reset, so peak_mb may include loading).

    python -m bench.rss_case --source DIR|smollm2-135m --case gv_trace --T 1024 --threads 1
"""
from __future__ import annotations

import argparse
import gc
import json
import re
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MB = 2**20
MEMORY_CASES = ("hf_sdpa", "gv_forward", "gv_trace", "gv_trace_patterns", "hf_eager_attn")


def status_mb(field: str) -> float:
    """VmRSS or VmHWM of this process, in MB (2^20 bytes)."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) * 1024 / MB


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measure(source: str, case: str, T: int, warmup_T: int = 16) -> dict:
    import torch

    from bench import cases

    if case not in MEMORY_CASES:
        raise ValueError(f"case must be one of {MEMORY_CASES}, not {case!r}.")
    if case.startswith("gv_"):
        import gptviz

        models = {"gv": gptviz.load_model(source)}
    elif case == "hf_eager_attn":
        models = {"hf_eager": cases.load_hf(source, attn="eager")}
    else:
        models = {"hf": cases.load_hf(source)}
    vocab = next(iter(models.values())).config.vocab_size
    with torch.inference_mode():
        for _ in range(2):
            small = cases.forward_case(case, cases.random_ids(vocab, warmup_T, seed=1), **models)
            small.run(small.setup())
        del small
        big = cases.forward_case(case, cases.random_ids(vocab, T), **models)
        state = big.setup()
        gc.collect()
        base = status_mb("VmRSS")
        reset = reset_peak()
        out = big.run(state)
        peak = status_mb("VmHWM")
        del out
    return {"case": case, "T": T, "base_mb": base, "peak_mb": peak, "extra_mb": peak - base, "hwm_reset": reset}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="an HF model directory, or smollm2-135m")
    parser.add_argument("--case", required=True, choices=MEMORY_CASES)
    parser.add_argument("--T", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    print(json.dumps(measure(args.source, args.case, args.T)))


if __name__ == "__main__":
    main()
