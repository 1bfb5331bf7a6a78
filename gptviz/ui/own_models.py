"""Models a session brings itself: a file it uploaded, a checkpoint it trained. Each gets a label that
names it in the model picker and is unique in the process (it ends in a short id), so the process-wide
model and trace stores can key on it; only the session that added a label sees it in its picker."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import streamlit as st

SESSION_KEY = "_own_models"  # the labels this session added, in order


@dataclass(frozen=True)
class OwnModel:
    """Where a label's model lives: a file or Hugging Face directory, and load_model's keyword arguments
    for what the file cannot say (head count, tokenizer, …)."""

    path: str
    options: dict = field(default_factory=dict)


class OwnModels:
    """label -> OwnModel, for the whole process (the model registry reloads a label from here)."""

    def __init__(self) -> None:
        self._models: dict[str, OwnModel] = {}
        self._lock = threading.Lock()

    def add(self, label: str, model: OwnModel) -> None:
        with self._lock:
            self._models[label] = model

    def get(self, label: str) -> OwnModel | None:
        with self._lock:
            return self._models.get(label)


@st.cache_resource
def own_models() -> OwnModels:
    return OwnModels()


def add_to_session(label: str, model: OwnModel) -> None:
    """Register the model and offer it in this session's picker."""
    own_models().add(label, model)
    labels = st.session_state.setdefault(SESSION_KEY, [])
    if label not in labels:
        labels.append(label)


def session_labels() -> list[str]:
    """This session's own models, in the order it added them."""
    return list(st.session_state.get(SESSION_KEY, []))
