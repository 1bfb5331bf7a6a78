"""The view every page shows: the shared sidebar, then (model, token ids, knock-out set and kind)
and its run from the store; the banners that say what is shown."""
from __future__ import annotations

import os
from dataclasses import dataclass

import streamlit as st

from gptviz.edits import ABLATIONS
from gptviz.labels import component_label, parse_components
from gptviz.loading import LICENCE_NOTES
from gptviz.model import GPT
from gptviz.tokenizer import TokenizerError
from gptviz.trace import Trace
from gptviz.ui import settings
from gptviz.ui.models import active_model, allow_list_text, default_model, model_allowed, model_choices, repo_error
from gptviz.ui.navigation import leave_pages_folder_mode
from gptviz.ui.store import Run, RunKey, run
from gptviz.ui.upload import own_model_box, take_opened_model
from gptviz.ui.widgets import clamp_state

# Tokens the pages read at most by default: the model's whole context (SmolLM2: 8,192, a trace of
# ~20 s and ~2.5 GB on a CPU), unless a server sets GPTVIZ_MAX_TOKENS lower; the sidebar's "Tokens
# read at most" changes it for a session.
MAX_VIEW_TOKENS: int | None = max(2, int(os.environ["GPTVIZ_MAX_TOKENS"])) if os.environ.get("GPTVIZ_MAX_TOKENS") \
    else None


@dataclass(frozen=True)
class View:
    """What a page shows: the model, the tokens it reads, the run shown (plain or knocked out), the focus."""

    model_name: str
    model: GPT
    prompt_ids: tuple[int, ...]  # the prompt's tokens that fit the context
    n_dropped: int  # prompt tokens cut from the start to fit the context
    generated: tuple[int, ...]
    shown: Run  # the plain run, or its knocked-out run when the switch is on
    plain: Run  # the run without interventions
    layer: int
    head: int

    @property
    def ids(self) -> tuple[int, ...]:
        return self.prompt_ids + self.generated

    @property
    def trace(self) -> Trace:
        return self.shown.trace

    @property
    def plain_trace(self) -> Trace:
        return self.plain.trace

    @property
    def knock_out(self) -> tuple | None:
        """((component, ...), ablation) of the run shown, or None for the plain run."""
        return self.shown.key.knock_out

    def knocked_out(self, layer: int, head: int | str) -> bool:
        """Whether the run shown has this head (or (layer, "mlp")) knocked out."""
        return self.knock_out is not None and (layer, head) in self.knock_out[0]

    def run_of(self, ids: tuple[int, ...], knock_out: tuple | None = None) -> Run:
        """The run of other ids on the view's model (e.g. a corrupted prompt), or a knocked-out run."""
        return run(RunKey(self.model_name, tuple(ids), knock_out), self.model)


# ---- the sidebar -----------------------------------------------------------------------------------
def generated_ids() -> list[int]:
    try:
        return [int(part) for part in st.session_state.get("gen", "").split(",") if part.strip()]
    except ValueError:
        return []


def set_generated(ids: list[int]) -> None:
    st.session_state["gen"] = ",".join(map(str, ids))


def _text_changed() -> None:
    """A new prompt: no generated tokens, and the position follows the end again."""
    st.session_state["gen"] = ""
    st.session_state.pop("position", None)


def model_changed() -> None:
    """A new model: as a new prompt, and the token limit back to its default for it."""
    _text_changed()
    st.session_state.pop("max_tokens", None)


def _pick_repo() -> None:
    """The repo-id box: an allowed repo id becomes the model; anything else gets a message."""
    state = st.session_state
    repo = str(state.get("hub_repo", "")).strip()
    state["hub_repo"] = ""
    if repo and (error := repo_error(repo)):
        state["_repo_error"] = error
    elif repo:
        state["model"] = repo
        model_changed()


def _open_view_file() -> None:
    upload = st.session_state.get("view_file_upload")
    if upload is None:
        return
    try:
        values, ids = settings.read_view_file(upload.getvalue())
    except ValueError as err:
        st.session_state["_view_file_error"] = str(err)
        return
    st.session_state["_view_file_opened"] = (upload.name, settings.open_view(values), ids)


def max_tokens(model: GPT) -> int:
    """Tokens (prompt + generated) the pages read at most: the sidebar's limit (default: the model's
    context, or GPTVIZ_MAX_TOKENS), never more than the model's context."""
    n_ctx = model.config.n_ctx
    try:
        return min(n_ctx, max(2, int(st.session_state.get("max_tokens") or MAX_VIEW_TOKENS or n_ctx)))
    except (TypeError, ValueError):
        return min(n_ctx, MAX_VIEW_TOKENS or n_ctx)


def sidebar() -> tuple[str, GPT] | None:
    """Draw the shared sidebar (model, prompt, layer, head, token limit, view file); the model shown."""
    settings.restore()
    state = st.session_state
    if (opened := take_opened_model()) is not None:
        state["model"] = opened
        model_changed()
    if not state.get("model") or not model_allowed(state["model"]):
        state["model"] = default_model()
    with st.sidebar:
        choices = model_choices()
        st.selectbox("Model", choices + [state["model"]] * (state["model"] not in choices), key="model",
                     on_change=model_changed, help="Pick a model; hub models not downloaded yet offer a download.")
        if note := LICENCE_NOTES.get(state["model"]):
            st.caption(note)
        st.text_input("…or a Hugging Face repo id", key="hub_repo", on_change=_pick_repo,
                      placeholder="owner/name, e.g. Qwen/Qwen2.5-0.5B",
                      help=f"Any repo of an architecture gptviz runs that this server allows: {allow_list_text()}")
        if error := state.pop("_repo_error", None):
            st.error(error)
        own_model_box()
        st.text_area("Prompt", key="prompt", height=120, on_change=_text_changed,
                     help="Any text. It is split into tokens and run through the model.")
        st.checkbox("Treat <|…|> text as special tokens", key="allow_special", on_change=_text_changed)
        shown = active_model()
        if shown is not None:
            config = shown[1].config
            clamp_state("layer", 0, config.n_layer - 1, 0)
            clamp_state("head", 0, config.n_head - 1, 0)
            st.number_input("Layer", 0, config.n_layer - 1, step=1, key="layer")
            st.number_input("Head", 0, config.n_head - 1, step=1, key="head")
            state["max_tokens"] = max_tokens(shown[1])
            if note := settings.link_note("max_tokens", state["max_tokens"],
                                          f"more than {shown[0]}'s context of {config.n_ctx:,} tokens"):
                st.warning(note)
            st.number_input("Tokens read at most", 2, config.n_ctx, step=256, key="max_tokens",
                            help=f"Up to the model's context ({config.n_ctx:,}). Long prompts keep their last "
                                 "tokens. Thousands of tokens take a while on a CPU and several GB of memory.")
        n_gen = len(generated_ids())
        if n_gen:
            st.caption(f"{n_gen} generated token{'s' * (n_gen != 1)} appended to the prompt (Next token page)")
            st.button("Clear generated tokens", key="clear_gen", on_click=_text_changed)
    settings.save_url()
    return shown


def _view_file_box(ids: tuple[int, ...]) -> None:
    """Save the whole view (long prompt included) as a .json file, or open one."""
    state = st.session_state
    with st.sidebar.expander("Save or open this view"):
        st.download_button("Download this view (.json)", settings.view_file(settings.current(), ids),
                           file_name="gptviz-view.json",
                           mime="application/json", key="view_file_download", on_click="ignore",
                           help="Every setting, the whole prompt and its token ids: open it here to get this view "
                                "back, also when the prompt is too long for a link.")
        st.file_uploader("Open a view file", type=["json"], key="view_file_upload", on_change=_open_view_file)
    if error := state.pop("_view_file_error", None):
        st.error(error)


# ---- the view ----------------------------------------------------------------------------------------
def ablation_setting() -> str:
    """The knock-out kind, "zero" or "mean"."""
    value = st.session_state.get("ablation", "zero")
    return value if value in ABLATIONS else "zero"


def knock_out_setting(model: GPT) -> tuple | None:
    """((component, ...), ablation) of the knock-out set kept in the URL ("knockout"), or None if empty."""
    components = parse_components(str(st.session_state.get("knockout", "")), model.config.n_layer,
                                  model.config.n_head)
    return (tuple(components), ablation_setting()) if components else None


def cut_to_context(model: GPT, ids, room: int) -> tuple[tuple[int, ...], int]:
    """(the last prompt ids that fit in `room` tokens, how many were dropped from the start); a BOS
    the tokenizer puts first stays first."""
    ids = list(ids)
    bos = ids[:1] if model.tokenizer.add_bos and len(ids) > 1 else []
    n_dropped = max(0, len(ids) - room)
    return tuple(bos + ids[len(bos) + n_dropped:]), n_dropped


def _prompt_ids(name: str, model: GPT) -> tuple[tuple[int, ...], int, tuple[int, ...]]:
    """(prompt ids that fit, tokens dropped from the start, generated ids); stops the page with a
    message when there is nothing to read."""
    state = st.session_state
    prompt = state.get("prompt", "")
    if not prompt.strip():
        st.info("The prompt is empty: type some text in the sidebar to see the model read it.")
        st.stop()
    try:
        ids = model.tokenizer.encode(prompt, allow_special=bool(state.get("allow_special")), add_special_tokens=True)
    except TokenizerError as err:
        st.error(f"This prompt cannot be tokenized: {err}")
        st.stop()
    if not ids:
        st.info("The prompt has no tokens: type some text in the sidebar.")
        st.stop()
    n_ctx = max_tokens(model)
    generated = tuple(i for i in generated_ids() if 0 <= i < model.config.vocab_size)
    if len(generated) < len(generated_ids()):
        st.warning(f"Left out {len(generated_ids()) - len(generated)} generated token ids that are not in "
                   f"{name}'s vocabulary (ids 0–{model.config.vocab_size - 1:,}).")
    if len(generated) >= n_ctx:  # e.g. from a hand-edited link: keep room for one prompt token
        st.warning(f"Only the first {n_ctx - 1:,} of {len(generated):,} generated tokens fit in {n_ctx:,} tokens.")
        generated = generated[: n_ctx - 1]
    prompt_ids, n_dropped = cut_to_context(model, ids, n_ctx - len(generated))
    if n_dropped:
        reads = (f"{name} reads at most {n_ctx:,}" if n_ctx == model.config.n_ctx else
                 f"the sidebar's limit is {n_ctx:,} tokens (raise it up to {name}'s context of "
                 f"{model.config.n_ctx:,})")
        st.warning(f"The prompt has {len(ids):,} tokens but {reads}: the first {n_dropped:,} tokens are left out "
                   f"and every view shows the last {len(prompt_ids):,}.")
    return prompt_ids, n_dropped, generated


def banners(v: View, explains_plain: bool = False) -> None:
    """At the top of the main area: which model stands in for the picked one, a knocked-out run (or, on a
    page that always explains the plain run, that it does), a view file just opened, a prompt too long for
    a link."""
    state = st.session_state
    stand_in = state.pop("_stand_in", None)
    if stand_in is not None:
        st.info(f"**{stand_in[1]}** is shown: **{stand_in[0]}** is not available yet (see the sidebar).")
    if v.knock_out is not None and explains_plain:
        st.info(f"**This page explains the plain run.** The knock-out switch is on: the other pages show the run with "
                f"{', '.join(map(component_label, v.knock_out[0]))} knocked out ({v.knock_out[1]} ablation); here "
                "the components are found and knocked out from the whole model.", icon=":material/info:")
    elif v.knock_out is not None:
        left, right = st.columns([5, 1])
        left.warning(f"**Knocked-out run:** this page shows the run with "
                     f"{', '.join(map(component_label, v.knock_out[0]))} knocked out ({v.knock_out[1]} ablation), "
                     "not the plain run.", icon=":material/block:")
        right.button("Show the plain run", key="knockout_off", on_click=lambda: state.update(knockout_view=False))
    if taken := state.pop("_link_taken", None):
        if note := taken.note("this link"):
            st.warning(note, icon=":material/link:")
    if (opened := state.pop("_view_file_opened", None)) is not None:
        name, taken, ids = opened
        note = " " + taken.note("it") if taken.note("it") else ""
        if ids and list(ids) != list(v.ids):
            note += " Its token ids differ from what this prompt gives now (another tokenizer or model?)."
        st.success(f"Opened the view file {name}.{note}")
    if long := settings.too_long_for_link():
        st.info(f"The {' and the '.join('prompt' if k == 'prompt' else 'corrupted prompt' for k in long)} "
                f"{'is' if len(long) == 1 else 'are'} too long for a link (over {settings.URL_TEXT_LIMIT:,} "
                "characters): a copied link keeps the other settings only. To share the whole view, download it "
                "as a file (sidebar, *Save or open this view*).", icon=":material/link_off:")


def view(explains_plain: bool = False) -> View:
    """Draw the shared sidebar, then return the current view for the page; shows a message
    and stops the page when there is none. Call it once per page run. explains_plain: the page always
    reads the plain run (Why this token?, Circuit), which its banner then says."""
    leave_pages_folder_mode()
    shown = sidebar()
    if shown is None:
        st.info("No model is loaded: pick one in the sidebar.")
        st.stop()
    name, model = shown
    prompt_ids, n_dropped, generated = _prompt_ids(name, model)
    ids = prompt_ids + generated
    with st.spinner(f"Running {name} on {len(ids):,} tokens…", show_time=True):  # shown only while it runs
        plain = run(RunKey(name, ids), model)
    knock = knock_out_setting(model) if st.session_state.get("knockout_view") else None
    _view_file_box(ids)
    config = model.config
    v = View(model_name=name, model=model, prompt_ids=prompt_ids, n_dropped=n_dropped, generated=generated,
             shown=plain if knock is None else run(RunKey(name, ids, knock), model), plain=plain,
             layer=min(int(st.session_state.get("layer", 0)), config.n_layer - 1),
             head=min(int(st.session_state.get("head", 0)), config.n_head - 1))
    banners(v, explains_plain)
    return v

