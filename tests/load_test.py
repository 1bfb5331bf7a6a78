"""Many users at once: start the app, open N concurrent sessions in one headless Chromium
(one browser context each, so each is its own Streamlit session), each on its own model and
with its own prompts, and check that every session sees its own tokens and only those, that
no page shows an exception, and that the server's memory stays bounded.

    .venv/bin/python tests/load_test.py --sessions 16 --rounds 4      # or scripts/load-test.sh

Models, round robin: the two tiny local models (written to a temp dir; GPTVIZ_MODEL_DIRS) and
the app's default model. Everything is bounded: the whole run has a deadline, every wait a
timeout, and the server is stopped at the end whatever happens. Prints one JSON summary; the
exit status is 0 only if every session passed. tests/test_load.py runs a short version in CI.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright

from app_server import serve

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
MARKER = re.compile(r"M(\d\d)R(\d)Q")  # session, round: one unique word per prompt


@dataclass
class Session:
    index: int
    model: str
    rounds_done: int = 0
    seconds: list[float] = field(default_factory=list)  # prompt typed -> its tokens shown, per round
    failure: str | None = None


@dataclass
class Report:
    sessions: int
    rounds: int
    models: list[str]
    passed: bool
    duration_s: float
    rss_idle_mb: float  # server started, no session yet
    rss_first_round_mb: float  # every session has shown its first prompt's tokens (models loaded)
    rss_end_mb: float
    rss_peak_mb: float
    rss_end_anon_mb: float  # the end's VmRSS = private memory + mapped files (safetensors weights are mmapped)
    rss_end_file_mb: float
    round_s_median: float  # p50 of prompt typed -> its tokens shown
    round_s_p95: float
    round_s_max: float
    stagger_s: float  # sessions arrive spread over this many seconds
    server_cpu_s: float  # CPU seconds the server used while the sessions ran
    browser_cpu_s: float  # CPU seconds the browsers used (measured apart: they share this machine)
    failures: list[str]
    per_session: list[dict]


def cpu_seconds(pids: set[int]) -> float:
    """User + system CPU seconds of these processes so far."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def descendants(root: int) -> set[int]:
    """root and every process below it."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += parents.get(pid, [])
    return found


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """The process's resident memory, MB: VmRSS, or RssAnon / RssFile (its parts)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) / 1024


async def settle(page: Page, timeout_ms: float) -> None:
    """Wait until the script run finished (no running indicator, no spinner)."""
    await page.wait_for_timeout(200)
    await page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]') && "
        "!document.querySelector('[data-testid=\"stSpinner\"]')",
        timeout=timeout_ms,
    )


async def run_session(browser: Browser, url: str, s: Session, rounds: int, first_round: asyncio.Barrier,
                      timeout_ms: float, delay_s: float) -> None:
    await asyncio.sleep(delay_s)  # people arrive one after another, not all in the same millisecond
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    try:
        page = await context.new_page()
        page.set_default_navigation_timeout(timeout_ms)
        page.set_default_timeout(timeout_ms)  # every action (a fill waits for the box) may take as long as a wait
        await page.goto(f"{url}/tokens?{urllib.parse.urlencode({'model': s.model})}", wait_until="domcontentloaded",
                        timeout=timeout_ms)
        await settle(page, timeout_ms)
        for r in range(rounds):
            marker = f"M{s.index:02d}R{r}Q"
            prompt = f"Session {s.index} round {r} says {marker} to its model"
            start = time.monotonic()
            box = page.locator('[data-testid="stTextArea"] textarea').first
            await box.fill(prompt)
            await box.press("Control+Enter")
            await page.wait_for_function(
                "m => [...document.querySelectorAll('.gv-chips')].some(e => e.textContent.includes(m))",
                arg=marker, timeout=timeout_ms,
            )
            await settle(page, timeout_ms)
            s.seconds.append(round(time.monotonic() - start, 2))
            chips = " ".join(await page.locator(".gv-chips").all_text_contents())
            seen = {(int(a), int(b)) for a, b in MARKER.findall(chips)}
            if seen != {(s.index, r)}:
                raise AssertionError(f"round {r}: expected only marker {marker}, the tokens show {sorted(seen)}")
            if await page.locator('[data-testid="stException"]').count():
                raise AssertionError(f"round {r}: an exception is shown")
            picked = await page.locator('[data-testid="stSidebar"] input[aria-label="Model"]').input_value()
            if picked != s.model:
                raise AssertionError(f"round {r}: the model picker shows {picked!r}, not {s.model!r}")
            s.rounds_done += 1
            if r == 0:
                try:
                    await first_round.wait()  # everyone's models are loaded: a fair point to read memory
                except asyncio.BrokenBarrierError:
                    pass  # another session failed; this one goes on
    except Exception as e:  # noqa: BLE001 - one session's failure is reported, the others go on
        s.failure = f"session {s.index} ({s.model}): {type(e).__name__}: {(str(e) or '?').splitlines()[0][:300]}"
        if s.rounds_done == 0:
            await first_round.abort()  # nobody waits for this session at the barrier
    finally:
        await context.close()


async def drive(url: str, pid: int, sessions: list[Session], rounds: int, deadline_s: float,
                timeout_ms: float, stagger_s: float) -> dict:
    rss = {"idle": rss_mb(pid), "peak": rss_mb(pid)}
    server_before = cpu_seconds(descendants(pid))
    first_round = asyncio.Barrier(len(sessions) + 1)

    async def watch_memory() -> None:
        while True:
            rss["peak"] = max(rss["peak"], rss_mb(pid))
            await asyncio.sleep(0.25)

    async def read_first_round() -> None:
        try:
            await first_round.wait()
            rss["first_round"] = rss_mb(pid)
        except asyncio.BrokenBarrierError:
            rss["first_round"] = rss_mb(pid)

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        watcher = asyncio.create_task(watch_memory())
        server = descendants(pid)
        browsers_before = cpu_seconds(descendants(os.getpid()) - server - {os.getpid()})
        step = stagger_s / max(1, len(sessions) - 1)
        try:
            await asyncio.wait_for(asyncio.gather(
                read_first_round(),
                *(run_session(browser, url, s, rounds, first_round, timeout_ms, i * step)
                  for i, s in enumerate(sessions))
            ), timeout=deadline_s)
        except TimeoutError:
            for s in sessions:
                if s.failure is None and s.rounds_done < rounds:
                    s.failure = f"session {s.index} ({s.model}): not done after {deadline_s:.0f} s"
        finally:
            watcher.cancel()
            rss["server_cpu"] = cpu_seconds(descendants(pid)) - server_before
            browsers = descendants(os.getpid()) - descendants(pid) - {os.getpid()}
            rss["browser_cpu"] = cpu_seconds(browsers) - browsers_before
            await browser.close()
    rss["end"], rss["anon"], rss["file"] = rss_mb(pid), rss_mb(pid, "RssAnon"), rss_mb(pid, "RssFile")
    rss["peak"] = max(rss["peak"], rss["end"])
    rss.setdefault("first_round", rss["end"])
    return rss


def tiny_model_dirs(root: Path) -> list[Path]:
    """The two tiny random models the tests use (tests/conftest.py), written under root."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import save_tiny_gpt2, save_tiny_llama

    return [save_tiny_gpt2(root / "tiny-gpt2"), save_tiny_llama(root / "tiny-llama")]


def run_load_test(sessions: int = 8, rounds: int = 2, deadline_s: float = 300, wait_timeout_s: float = 120,
                  model_dirs: list[Path] | None = None, include_default: bool = True,
                  log_path: Path | None = None, stagger_s: float = 0.0) -> Report:
    """Start the app, drive `sessions` concurrent browser sessions for `rounds` prompts each, stop it."""
    with tempfile.TemporaryDirectory(prefix="gptviz-load-") as tmp:
        dirs = model_dirs or tiny_model_dirs(Path(tmp))
        env = {k: v for k, v in os.environ.items() if k != "GPTVIZ_DEFAULT_MODEL"}
        env["GPTVIZ_MODEL_DIRS"] = os.pathsep.join(map(str, dirs))
        models = [f"local: {Path(d).name}" for d in dirs]
        if include_default:
            sys.path.insert(0, str(REPO))
            import gptviz

            models.append(gptviz.default_model_name())
        plan = [Session(i, models[i % len(models)]) for i in range(sessions)]
        start = time.monotonic()
        with serve(env, log_path or Path(tmp) / "streamlit.log") as (url, pid):
            rss = asyncio.run(drive(url, pid, plan, rounds, deadline_s, wait_timeout_s * 1000, stagger_s))
        duration = time.monotonic() - start
    times = sorted(t for s in plan for t in s.seconds) or [float("nan")]
    failures = [s.failure for s in plan if s.failure]
    return Report(
        sessions=sessions, rounds=rounds, models=models, passed=not failures, duration_s=round(duration, 1),
        rss_idle_mb=round(rss["idle"]), rss_first_round_mb=round(rss["first_round"]), rss_end_mb=round(rss["end"]),
        rss_peak_mb=round(rss["peak"]), rss_end_anon_mb=round(rss["anon"]), rss_end_file_mb=round(rss["file"]),
        round_s_median=times[len(times) // 2], round_s_p95=times[min(len(times) - 1, int(0.95 * len(times)))],
        round_s_max=times[-1], stagger_s=stagger_s, server_cpu_s=round(rss["server_cpu"], 1),
        browser_cpu_s=round(rss["browser_cpu"], 1),
        failures=failures, per_session=[asdict(s) for s in plan],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=8, help="concurrent browser sessions (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="prompts typed per session (default 3)")
    parser.add_argument("--deadline", type=float, default=600, help="seconds for the whole run (default 600)")
    parser.add_argument("--wait-timeout", type=float, default=180, help="seconds for one prompt's tokens to show")
    parser.add_argument("--model-dir", action="append", type=Path, help="HF model dirs (default: two tiny ones)")
    parser.add_argument("--no-default-model", action="store_true", help="only the --model-dir models")
    parser.add_argument("--log", type=Path, help="where the server's log goes (default: a temp file)")
    parser.add_argument("--stagger", type=float, default=30, help="sessions arrive spread over this many seconds")
    args = parser.parse_args()
    report = run_load_test(args.sessions, args.rounds, args.deadline, args.wait_timeout, args.model_dir,
                           not args.no_default_model, args.log, args.stagger)
    print(json.dumps(asdict(report), indent=2))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
