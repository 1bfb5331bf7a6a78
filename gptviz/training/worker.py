"""Training in the background, never in the server's own threads: each run trains in a worker process of
its own (torch limited to `threads` there), a server-wide queue runs at most `max_running` at once and
the others wait their turn, and a run whose owner is gone (`alive()` False) is stopped.

The worker sends its events (gptviz/training/events.py) through a multiprocessing queue; a collector
thread in the server gathers them into the job, where the page reads them.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gptviz.training.events import Checkpoint, Evaluation, Event, Failed, Finished, HeadSnapshot, Progress, Sample
from gptviz.training.settings import TrainSettings

logger = logging.getLogger(__name__)
POLL_S = 0.2  # how often the collector drains the workers' events and checks the owners


def _work(settings: dict, directory: str, resume: bool, extra_iters: int, events: mp.Queue, stop: mp.Event,
          threads: int) -> None:
    """The worker process: train, sending every event; a failure is a Failed event, not a traceback."""
    import torch

    torch.set_num_threads(threads)
    from gptviz.training.loop import new_run, train
    from gptviz.training.loop import resume as resume_run

    try:
        run = resume_run(Path(directory)) if resume else new_run(TrainSettings.from_dict(settings))
        end = max(run.settings.max_iters, run.step + extra_iters) if resume else None
        train(run, Path(directory), events.put, stop.is_set, max_iters=end)
    except Exception as err:  # noqa: BLE001 - the page shows it; the server must not die with the worker
        logger.error("training failed:\n%s", traceback.format_exc())
        events.put(Failed(message=f"{type(err).__name__}: {err}"))


@dataclass
class TrainingJob:
    """One training run, as the page sees it: its state ("queued", "running", "stopped", "finished",
    "failed"), and everything it has reported so far."""

    settings: TrainSettings
    directory: Path
    alive: Callable[[], bool] = lambda: True
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    state: str = "queued"
    message: str = ""
    progress: Progress | None = None
    evaluations: list[Evaluation] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    snapshots: list[HeadSnapshot] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    resume: bool = False
    extra_iters: int = 0
    _process: mp.Process | None = field(default=None, repr=False)
    _events: mp.Queue | None = field(default=None, repr=False)
    _stop: mp.Event | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    def take(self, event: Event) -> None:
        """Keep what the worker reported."""
        if isinstance(event, Progress):
            self.progress = event
        elif isinstance(event, Evaluation):
            self.evaluations.append(event)
        elif isinstance(event, Sample):
            self.samples.append(event)
        elif isinstance(event, HeadSnapshot):
            self.snapshots.append(event)
        elif isinstance(event, Checkpoint):
            self.checkpoints = [c for c in self.checkpoints if c.step != event.step] + [event]
        elif isinstance(event, Finished):
            self.state = "stopped" if event.stopped else "finished"
        elif isinstance(event, Failed):
            self.state, self.message = "failed", event.message


class TrainingQueue:
    """Every training of the server: at most max_running in worker processes, the rest queued in order."""

    def __init__(self, max_running: int = 1, threads: int = 1) -> None:
        self.max_running, self.threads = max_running, threads
        self._jobs: list[TrainingJob] = []
        self._lock = threading.Lock()
        self._context = mp.get_context("spawn")  # a fresh interpreter: nothing of the server's threads
        self._collector: threading.Thread | None = None

    def submit(self, job: TrainingJob) -> TrainingJob:
        job.state = "queued"
        with self._lock:
            self._jobs.append(job)
        self._ensure_collector()
        self._schedule()
        return job

    def resume(self, job: TrainingJob, extra_iters: int = 0) -> None:
        """Queue a stopped (or finished) job again, from its last saved state; `extra_iters` more steps."""
        if job.active:
            return
        job.resume, job.extra_iters, job.message = True, extra_iters, ""
        with self._lock:
            self._jobs.remove(job)
        self.submit(job)

    def stop(self, job: TrainingJob) -> None:
        """Stop a job: a running one saves a checkpoint and ends at its next step; a queued one leaves the queue."""
        with self._lock:
            if job.state == "queued":
                job.state = "stopped"
                return
        if job._stop is not None:
            job._stop.set()

    def position(self, job: TrainingJob) -> int:
        """0 while running, else 1 + how many queued jobs are ahead of it."""
        with self._lock:
            if job.state != "queued":
                return 0
            waiting = [j for j in self._jobs if j.state == "queued"]
            return waiting.index(job) + 1

    def running(self) -> list[TrainingJob]:
        with self._lock:
            return [j for j in self._jobs if j.state == "running"]

    def _schedule(self) -> None:
        with self._lock:
            running = sum(j.state == "running" for j in self._jobs)
            for job in self._jobs:
                if running >= self.max_running:
                    break
                if job.state == "queued":
                    self._start(job)
                    running += 1

    def _start(self, job: TrainingJob) -> None:
        job._events, job._stop = self._context.Queue(), self._context.Event()
        job._process = self._context.Process(
            target=_work, daemon=True, name=f"gptviz-train-{job.id}",
            args=(job.settings.to_dict(), str(job.directory), job.resume, job.extra_iters, job._events, job._stop,
                  self.threads),
        )
        job.state = "running"
        job._process.start()

    def _ensure_collector(self) -> None:
        with self._lock:
            if self._collector is None or not self._collector.is_alive():
                self._collector = threading.Thread(target=self._collect, daemon=True, name="gptviz-train-collector")
                self._collector.start()

    def _collect(self) -> None:
        """Drain every running worker's events, stop the jobs whose owner is gone, start queued ones
        (the collector thread's loop, for the life of the server)."""
        while True:
            with self._lock:
                jobs = list(self._jobs)
            for job in jobs:
                try:
                    alive = job.alive()
                except Exception:  # noqa: BLE001 - an owner that cannot be asked keeps its job
                    logger.exception("training %s: cannot tell whether its session is open", job.id)
                    alive = True
                if not alive:  # its session closed: stop it, and forget it once it has stopped
                    if job.active:
                        logger.info("training %s: its session closed, stopping it", job.id)
                        self.stop(job)
                    else:
                        self.forget(job)
                if job.state == "running":
                    self.drain(job)
            self._schedule()
            time.sleep(POLL_S)

    def drain(self, job: TrainingJob) -> None:
        """Take every event the job's worker has sent; a worker that died without a word fails the job."""
        while True:
            try:
                event = job._events.get_nowait()
            except queue.Empty:
                break
            job.take(event)
        if job.state == "running" and job._process is not None and not job._process.is_alive():
            try:  # its last events may arrive just after it ended
                while True:
                    job.take(job._events.get(timeout=0.5))
            except queue.Empty:
                pass
            if job.state == "running":
                job.state, job.message = "failed", f"the training process ended (exit code {job._process.exitcode})"
        if job.state != "running" and job._process is not None:
            job._process.join(timeout=5)
            job._process = None

    def forget(self, job: TrainingJob) -> None:
        """Drop a job that is no longer active from the server's list."""
        with self._lock:
            if not job.active and job in self._jobs:
                self._jobs.remove(job)
