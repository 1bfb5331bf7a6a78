"""The Train page's Streamlit glue: the server's one training queue, this session's runs, and their
checkpoints offered in the model picker as "name @ step N (id)"."""
from __future__ import annotations

import os
import time

import streamlit as st
from streamlit import runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx

from gptviz.cache import default_cache_dir
from gptviz.loading import load_model
from gptviz.training.settings import TrainSettings
from gptviz.training.worker import TrainingJob, TrainingQueue
from gptviz.ui.own_models import OwnModel, add_to_session
from gptviz.ui.view_state import model_changed
from gptviz.weights.book import state_dict_bytes, to_book_state_dict

JOBS_KEY = "_train_jobs"  # this session's runs, newest last
CLOSED_GRACE_S = 15.0  # a session gone this long (not a reload or a network blip) stops its training


@st.cache_resource
def training_queue() -> TrainingQueue:
    """The server's queue: GPTVIZ_MAX_TRAININGS runs at once (default 1), GPTVIZ_TRAIN_THREADS torch
    threads each (default 1), so the pages of every session keep the other cores."""
    return TrainingQueue(max_running=int(os.environ.get("GPTVIZ_MAX_TRAININGS", "1")),
                         threads=int(os.environ.get("GPTVIZ_TRAIN_THREADS", "1")))


def _session_alive():
    """A callable that says whether this session is still open (False once it has been gone
    CLOSED_GRACE_S seconds; always True outside a served app, e.g. in AppTest)."""
    ctx = get_script_run_ctx()
    if ctx is None or not runtime.exists():
        return lambda: True
    session_id, gone_since = ctx.session_id, [None]

    def alive() -> bool:
        if not runtime.exists() or runtime.get_instance().is_active_session(session_id):
            gone_since[0] = None
            return True
        gone_since[0] = gone_since[0] or time.monotonic()
        return time.monotonic() - gone_since[0] < CLOSED_GRACE_S

    return alive


def session_jobs() -> list[TrainingJob]:
    return st.session_state.setdefault(JOBS_KEY, [])


def start(settings: TrainSettings) -> TrainingJob:
    """Queue a new run for this session; its checkpoints go under the cache's trained/ folder."""
    job = TrainingJob(settings, default_cache_dir() / "trained", alive=_session_alive())
    job.directory = job.directory / job.id
    session_jobs().append(job)
    return training_queue().submit(job)


def checkpoint_label(job: TrainingJob, step: int) -> str:
    return f"{job.settings.name} @ step {step} ({job.id})"


def offer_checkpoints(job: TrainingJob) -> list[str]:
    """Put every checkpoint of the run in this session's model picker; their labels, in step order."""
    labels = []
    for ckpt in sorted(job.checkpoints, key=lambda c: c.step):
        label = checkpoint_label(job, ckpt.step)
        add_to_session(label, OwnModel(ckpt.path))
        labels.append(label)
    return labels


@st.cache_data(max_entries=8, show_spinner=False)
def book_checkpoint(path: str) -> bytes:
    """A checkpoint as the book's GPTModel state dict, as torch.save writes it (for a download); b"" with the
    reason shown when the book's class cannot hold the model (an attention-only one)."""
    try:
        return state_dict_bytes(to_book_state_dict(load_model(path)))
    except ValueError as err:
        st.caption(str(err))
        return b""


def pick_model(label: str) -> None:
    """Make a checkpoint the session's model (a button's callback: before the sidebar's picker is drawn)."""
    st.session_state["model"] = label
    model_changed()
