"""Train: train the book's GPT here, watch its losses, samples and heads change, and open any checkpoint on
every page (an induction head forming, with the induction preset)."""
from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path

import numpy as np
import streamlit as st

from gptviz import ui
from gptviz.plots.training import head_scores_figure, loss_figure, snapshots_figure
from gptviz.training.curves import milestones, phase_change
from gptviz.training.data import DataError, shakespeare_text
from gptviz.training.estimate import estimate_seconds
from gptviz.training.settings import PRESETS, TrainSettings, gpt_config, n_params
from gptviz.training.worker import TrainingJob
from gptviz.ui import settings, training

# The form's fields: setting key -> TrainSettings field (the preset fills them in)
FIELDS = {"train_corpus": "corpus", "train_tokenizer": "tokenizer", "train_n_layer": "n_layer",
          "train_n_head": "n_head", "train_d_model": "d_model", "train_n_ctx": "n_ctx", "train_dropout": "dropout",
          "train_attn_only": "attention_only", "train_tied": "tie_embeddings", "train_batch": "batch_size",
          "train_lr": "lr", "train_iters": "max_iters", "train_name": "name"}
LIVE_EVERY_S = 1.0


def fill_from_preset() -> None:
    """When the preset changes (picked, or from a link), every field takes the preset's value; on a session's
    first fill, fields a link set (other than their registry default) keep their value."""
    state = st.session_state
    name = state["train_preset"]
    first = "_train_filled_from" not in state
    if state.get("_train_filled_from") == name:
        return
    preset = PRESETS[name]
    for key, field_name in FIELDS.items():
        if first and state.get(key) != settings.BY_KEY[key].default:
            continue  # set by the link
        value = getattr(preset, field_name)
        state[key] = "shakespeare" if key == "train_corpus" and value == "induction" else value
    state["_train_filled_from"] = name


def settings_form() -> TrainSettings | None:
    """The run's settings from the form (None, with the reason shown, when they do not make a model)."""
    state = st.session_state
    fill_from_preset()
    preset = PRESETS[state["train_preset"]]
    st.selectbox("Preset", list(PRESETS), key="train_preset", on_change=fill_from_preset,
                 help="shakespeare-char: nanoGPT's CPU baby GPT; induction: a 2-layer attention-only model on "
                      "repeated random tokens; book-gpt2-bpe: the book's block with dropout on GPT-2's tokens.")
    induction = preset.corpus == "induction"
    data, model, optim = st.columns(3)
    with data:
        st.markdown("**Text**")
        if induction:
            st.caption(f"Random tokens from a vocabulary of {preset.vocab}: a block of n_ctx/4 to n_ctx/2 tokens, "
                       "repeated until it fills the context (a new block and length every batch).")
        else:
            st.radio("Train on", ["shakespeare", "text"], key="train_corpus", horizontal=True,
                     format_func={"shakespeare": "Shakespeare's plays", "text": "my own text"}.get)
            if state["train_corpus"] == "text":
                upload = st.file_uploader("Upload a .txt file", type=["txt"], key="train_upload")
                if upload is not None:
                    state["train_text"] = upload.getvalue().decode("utf-8", errors="replace")
                st.text_area("…or paste it", key="train_text", height=120)
            st.radio("Tokens", ["char", "gpt2"], key="train_tokenizer", horizontal=True,
                     format_func={"char": "characters", "gpt2": "GPT-2's BPE"}.get)
        st.text_input("Name", key="train_name", help="How its checkpoints are named in the model picker.")
    with model:
        st.markdown("**Model** (the book's GPT-2 block)")
        a, b = st.columns(2)
        a.number_input("Layers", 1, 48, key="train_n_layer")
        b.number_input("Heads", 1, 64, key="train_n_head")
        a.number_input("d_model", 8, 4096, step=16, key="train_d_model")
        b.number_input("Context", 4, 4096, step=16, key="train_n_ctx")
        a.number_input("Dropout", 0.0, 0.9, step=0.05, key="train_dropout")
        b.checkbox("Attention only", key="train_attn_only", help="No MLP in any block (d_mlp = 0).")
        b.checkbox("Tied output head", key="train_tied", help="The output head is the token embedding.")
    with optim:
        st.markdown("**Training** (AdamW)")
        st.number_input("Batch", 1, 512, key="train_batch")
        st.number_input("Learning rate", 1e-6, 1.0, format="%.0e", key="train_lr")
        st.number_input("Steps", 1, 10**6, step=100, key="train_iters")
    values = {name: state[key] for key, name in FIELDS.items()}
    if induction:
        values["corpus"] = "induction"
    scale = state["train_iters"] / preset.max_iters
    intervals = {name: max(1, round(getattr(preset, name) * scale)) for name in
                 ("eval_interval", "sample_interval", "checkpoint_interval")}
    try:
        settings = TrainSettings(**{**preset.to_dict(), **values, **intervals, "min_lr": preset.min_lr * (
            state["train_lr"] / preset.lr), "text": state["train_text"]})
    except ValueError as err:
        st.error(str(err))
        return None
    return settings


def summary(settings: TrainSettings) -> int | None:
    """Parameter count and estimated time, before starting; the vocabulary size (None if no text)."""
    vocab = settings.vocab if settings.corpus == "induction" else (50257 if settings.tokenizer == "gpt2" else None)
    if vocab is None:
        vocab = _char_vocab(settings.corpus, settings.text)
        if vocab is None:
            return None
    config = gpt_config(settings, vocab)
    with st.spinner("Timing a few training steps to estimate the time…"):
        seconds = _estimate(settings, vocab)
    tokens = settings.batch_size * settings.n_ctx
    st.caption(f"**{n_params(config):,} parameters** ({config.n_layer} layers × {config.n_head} heads, d_model "
               f"{config.d_model}, d_mlp {config.d_mlp}, vocabulary {vocab:,}, context {config.n_ctx}) · "
               f"{tokens:,} tokens a step · {settings.max_iters:,} steps · about **{_duration(seconds)}** here "
               "(estimated from this machine's measured speed, 1 thread).")
    return vocab


@st.cache_data(max_entries=8, show_spinner=False)
def _char_vocab(corpus: str, text: str) -> int | None:
    """How many distinct characters the text has (its character vocabulary); None for no text."""
    try:
        return len(set(shakespeare_text() if corpus == "shakespeare" else text)) or None
    except DataError as err:
        st.error(str(err))
        return None


@st.cache_data(max_entries=32, show_spinner=False)
def _estimate(settings: TrainSettings, vocab: int) -> float:
    return estimate_seconds(settings, vocab)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def controls(settings: TrainSettings | None) -> TrainingJob | None:
    """Start / stop / resume; the session's latest run."""
    jobs = training.session_jobs()
    job = jobs[-1] if jobs else None
    start, stop, resume, more = st.columns([1, 1, 1, 2])
    busy = job is not None and job.active
    if start.button("Start training", type="primary", disabled=busy or settings is None, key="train_start"):
        try:
            job = training.start(settings)
        except (DataError, ValueError) as err:
            st.error(str(err))
    if job is None:
        return None
    if stop.button("Stop", disabled=not job.active, key="train_stop", help="Saves a checkpoint; resume later."):
        training.training_queue().stop(job)
    extra = more.number_input("More steps when resuming", 0, 10**6, value=0, step=100, key="train_more")
    if resume.button("Resume", disabled=job.active or job.state == "queued", key="train_resume"):
        training.training_queue().resume(job, int(extra))
    return job


def status(job: TrainingJob) -> None:
    queue = training.training_queue()
    if job.state == "queued":
        st.info(f"Waiting for a free slot: number {queue.position(job)} in the queue (this server trains "
                f"{queue.max_running} model{'s' * (queue.max_running != 1)} at a time).")
    elif job.state == "failed":
        st.error(f"Training stopped with an error: {job.message}")
    p = job.progress
    if p is not None:
        left = f" · about {_duration(p.seconds_left)} left" if job.state == "running" else ""
        st.progress(min(1.0, p.step / p.max_iters),
                    text=f"{job.state}: step {p.step:,} / {p.max_iters:,} · loss {p.loss:.3f} · "
                         f"{p.tokens_per_s:,.0f} tokens/s{left}")
    elif job.state == "running":
        st.progress(0.0, text="Starting the training process…")


def losses(job: TrainingJob, phase: int | None) -> None:
    evals = list(job.evaluations)
    if not evals:
        return
    steps = [e.step for e in evals]
    curves = {"train": [e.train for e in evals], "validation": [e.val for e in evals]}
    floor = None
    if evals[0].repeat_half is not None:
        curves = {"first block (unpredictable)": [e.first_half for e in evals],
                  "repeats (predictable by induction)": [e.repeat_half for e in evals]}
        floor = math.log(job.settings.vocab)
    ui.chart(loss_figure(steps, curves, floor=floor, phase=phase), key="train_loss_chart")
    last = evals[-1]
    st.caption(f"At step {last.step:,}: train loss {last.train:.3f}, validation loss {last.val:.3f} (mean over "
               f"{job.settings.eval_iters} batches each)." + (f" Phase change at about step {phase}." if phase else ""))


def samples(job: TrainingJob) -> None:
    if not job.samples:
        return
    last = job.samples[-1]
    st.markdown(f"**Sample at step {last.step:,}** (temperature 0.8, top-k 200)")
    st.code(last.text, language=None, wrap_lines=True)
    with st.expander(f"All {len(job.samples)} samples"):
        for s in job.samples:
            st.markdown(f"step {s.step:,}")
            st.code(s.text, language=None, wrap_lines=True)


def heads(job: TrainingJob, phase: int | None) -> None:
    snaps = list(job.snapshots)  # the collector thread appends meanwhile
    if not snaps:
        return
    config = snaps[0].patterns.shape
    n_layer, n_head = config[0], config[1]
    steps = [s.step for s in snaps]
    induction = np.stack([s.induction for s in snaps])  # (S, L, nh)
    best = np.unravel_index(np.nanargmax(induction[-1]), induction[-1].shape)
    names = [f"L{layer}H{head}" for layer in range(n_layer) for head in range(n_head)]
    if st.session_state.get("train_head") not in names:
        st.session_state["train_head"] = f"L{best[0]}H{best[1]}"
    chosen = st.selectbox("Head", names, key="train_head",
                          help=f"Now strongest induction head: L{best[0]}H{best[1]}.")
    layer, head = (int(x) for x in chosen[1:].split("H"))
    left, right = st.columns(2)
    with left:
        ui.chart(head_scores_figure(steps, induction, title="Induction score of every head", phase=phase,
                                    highlight=(layer, head)), key="train_induction_chart")
    with right:
        ui.chart(head_scores_figure(steps, np.stack([s.previous_token for s in snaps]),
                                    title="Previous-token score of every head", phase=phase,
                                    highlight=(layer, head)), key="train_prev_chart")
    shown = milestones(steps, phase)
    by_step = {s.step: s for s in snaps}
    ui.chart(snapshots_figure([by_step[s].patterns[layer, head] for s in shown], shown, snaps[0].tokens,
                              title=f"{chosen}'s pattern on the probe (a random block said twice) as it trained"),
             key="train_pattern_chart")
    ui.chart(snapshots_figure([by_step[s].position_cosine for s in shown], shown, None, colorscale="RdBu",
                              zmin=-1.0, zmax=1.0, title="The learned position table: cosine similarity of positions"),
             key="train_positions_chart")
    ui.explain("Scores are measured on one probe sequence at each evaluation: a block of distinct tokens said "
               "twice. **Previous-token score**: attention from each token to the one before it. **Induction "
               "score**: attention from each token of the second copy to the token *after* its earlier copy (what "
               "an induction head reads to predict that the sequence repeats). An induction head needs a "
               "previous-token head in an earlier layer; both appear together at the phase change (Olsson et al. "
               "2022). The position table starts random (similarity ≈ 0 off the diagonal) and learns to make "
               "nearby positions alike.")


def checkpoints(job: TrainingJob) -> None:
    if not job.checkpoints:
        return
    labels = training.offer_checkpoints(job)
    st.markdown(f"**{len(labels)} checkpoints**, each in the sidebar's model picker: every page can look at it.")
    state = st.session_state
    if state.get("train_ckpt") not in labels or state.get("_train_ckpt_count") != len(labels):
        state["train_ckpt"] = labels[-1]  # a new checkpoint: the latest is shown until one is picked
    state["_train_ckpt_count"] = len(labels)
    chosen = st.selectbox("Checkpoint", labels, key="train_ckpt")
    path = Path(ui.model_source(chosen)[0])
    a, b, c = st.columns(3)
    a.button("Show it on every page", key="train_open", on_click=training.pick_model, args=(chosen,),
             help="Makes it the sidebar's model.")
    b.download_button("Hugging Face folder (.zip)", _zipped(path), f"{path.parent.name}-{path.name}.zip",
                      key="train_zip", help="config.json + model.safetensors (+ tokenizer.json): "
                                            "transformers' GPT2LMHeadModel.from_pretrained opens it.")
    if book := training.book_checkpoint(str(path)):
        c.download_button("The book's state dict (.pth)", book, f"{path.name}.pth", key="train_pth",
                          help="torch.save(GPTModel.state_dict()) of the book's ch. 4 GPTModel: "
                               "GPTModel(cfg).load_state_dict(torch.load(f, weights_only=True)).")


def _zipped(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for file in sorted(directory.iterdir()):
            z.write(file, f"{directory.name}/{file.name}")
    return buffer.getvalue()


def live(job: TrainingJob) -> None:
    """What the run has reported; redrawn every LIVE_EVERY_S while it trains, and once more (the whole
    page, so the buttons follow) when it ends."""
    if st.session_state.get("_train_live") and not job.active:
        st.session_state["_train_live"] = False
        st.rerun(scope="app")
    st.session_state["_train_live"] = job.active
    phase = phase_change(list(job.evaluations))
    status(job)
    losses(job, phase)
    samples(job)
    heads(job, phase)
    checkpoints(job)


def main() -> None:
    st.title("Train")
    st.markdown("*Train the book's GPT on this machine and watch it learn; open any checkpoint on every page.*")
    ui.view()
    settings = settings_form()
    vocab = summary(settings) if settings is not None else None
    job = controls(settings if vocab is not None else None)
    if job is None:
        return
    st.divider()
    ui.fragment(live, run_every=LIVE_EVERY_S if job.active else None)(job)


main()
