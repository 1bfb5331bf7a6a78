"""The question Why this token? and Circuit ask together: which prediction (target, contrast, metric),
measured against which corrupted prompt, and whether a long prompt is worth the wait. Both pages draw
these widgets under the same keys, so a question set on one page is the other's too."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from gptviz.analysis import attribution as at
from gptviz.analysis.lens import top_next_tokens
from gptviz.plots.common import show_whitespace
from gptviz.tokenizer import TokenizerError
from gptviz.trace import Trace
from gptviz.ui.store import Run
from gptviz.ui.view_state import View, cut_to_context
from gptviz.ui.widgets import code, explain, position_input, token_input

AUTO_MAX_T = 64  # longer prompts compute the maps only when asked (each map reruns the model many times)


def prediction(v: View) -> tuple[Trace, at.Metric]:
    """The top of a page that explains a prediction (of the plain run: such a page's view says so in its
    banner): the position explained, target and contrast; (the plain trace, the metric)."""
    tr = v.plain_trace
    position = position_input("Position (explain the prediction after this token)", tr.tokens,
                              f"0 to {tr.n_tokens - 1}; the last position predicts the token after the text.")
    return tr, metric_section(v, tr, position)


def metric_section(v: View, tr: Trace, position: int) -> at.Metric:
    """Target and contrast token pickers (keys why_target, why_contrast), their probabilities and ranks,
    and the metric they define at `position`."""
    tok, config = v.model.tokenizer, v.model.config
    top_id = int(top_next_tokens(tr, position, 1)["id"].iloc[0])
    top = tok.token_strings([top_id])[0]
    left, right = st.columns(2)
    with left:
        target = token_input(tr, position, "Target token", "why_target", show_whitespace(top),
                             "The token to explain. Empty: the model's top prediction. Words inside a sentence "
                             "usually start with a space (' Mary'); both forms are offered. You can also click a bar "
                             "on the Next token page.")
    with right:
        contrast = token_input(tr, position, "Contrast token (optional)", "why_contrast", "none",
                               "With a contrast, the question is 'why the target rather than this?': the metric is "
                               "the logit difference. Empty: the target's log-probability.")
    target = top_id if target is None else target
    if contrast == target:
        st.warning("The contrast is the target itself: the difference would be 0. Using no contrast.")
        contrast = None
    metric = at.Metric(target, contrast, position)
    stats = at.token_stats(tr, [target] if contrast is None else [target, contrast], position)
    row = stats.iloc[0]
    value = at.metric_value(tr, metric)
    cols = st.columns(4)
    cols[0].metric("Target", show_whitespace(row["token"]), help=f"Token id {row['id']}, logit {row['logit']:.3f}.")
    cols[1].metric("p(target), rank", f"{row['probability']:.3g}, #{row['rank']:,}")
    if contrast is None:
        cols[2].metric("Contrast", "none", help="Without a contrast the metric is the target's log-probability.")
    else:
        other = stats.iloc[1]
        cols[2].metric(f"Contrast {show_whitespace(other['token'])}: p, rank",
                       f"{other['probability']:.3g}, #{other['rank']:,}",
                       help=f"Token id {other['id']}, logit {other['logit']:.3f}.")
    cols[3].metric(f"Metric: {metric.name}", f"{value:.3f}",
                   help=("logit(target) − logit(contrast)" if contrast is not None else "log softmax(logits)[target]"))
    explain(
        f"The prediction after token {position} {code(tr.tokens[position])} is explained through one number, the "
        f"**metric**: with a contrast token c, the **logit difference** z_target − z_c (\"why this rather than "
        f"that?\", the standard question of interpretability papers); without one, the target's "
        f"**log-probability** log softmax(z)_target. z = the logits, {config.vocab_size:,} numbers at each of the "
        f"{tr.n_tokens} positions. Every map below shows how the metric moves."
    )
    return metric


def allowed(T: int, what: str) -> bool:
    """Short prompts compute at once; long ones when the user switches it on (key why_compute)."""
    if T <= AUTO_MAX_T:
        return True
    on = st.toggle(f"Compute {what} for this prompt of {T:,} tokens", key="why_compute",
                   help=f"Prompts over {AUTO_MAX_T} tokens wait for this switch: each map reruns the model "
                        "many times, which takes a while on a CPU.")
    if not on:
        st.info(f"Switch on the computation above to see {what}.")
    return on


def suggest_swap(prompt: str) -> None:
    swapped = at.name_swap(prompt)
    st.session_state["corrupt"] = swapped if swapped is not None else st.session_state.get("corrupt", "")
    st.session_state["_why_no_swap"] = swapped is None


def cut_like_clean(v: View, corrupt_ids) -> tuple[int, ...]:
    """The corrupted prompt's ids (as long as the whole clean prompt) cut to the context exactly as the clean
    prompt's were (a BOS the tokenizer puts first stays first), then the same generated tokens."""
    return cut_to_context(v.model, corrupt_ids, len(v.prompt_ids))[0] + tuple(v.generated)


def corrupted_run(v: View, tr: Trace, metric: at.Metric) -> Run | None:
    """The corrupted prompt box (key corrupt) with a one-click name swap; its run, cut and extended like the
    clean one, with both metrics shown; None (and a message saying what to do) when there is none yet, it
    does not tokenize, its length differs from the clean prompt's, or it leaves no gap."""
    state = st.session_state
    prompt = state.get("prompt", "")
    c1, c2 = st.columns([3, 1])
    with c2:
        st.button("Suggest a name swap", key="why_swap", width="stretch", on_click=suggest_swap, args=(prompt,),
                  help="Swap the first two names of the prompt everywhere (Mary ↔ John).")
    if state.pop("_why_no_swap", False):
        st.info("No two names found (capitalised words inside a sentence): type a corrupted prompt.")
    with c1:
        text = st.text_area("Corrupted prompt", key="corrupt", height=80,
                            help="Your prompt with a detail changed, with as many tokens.")
    if not text.strip():
        st.info("Type a corrupted prompt, or press **Suggest a name swap**.")
        return None
    tok, special = v.model.tokenizer, bool(state.get("allow_special"))
    try:
        corrupt_ids = tok.encode(text, allow_special=special, add_special_tokens=True)
    except TokenizerError as err:
        st.error(f"The corrupted prompt cannot be tokenized: {err}")
        return None
    n_clean = v.n_dropped + len(v.prompt_ids)  # the whole prompt, before any cut to the context
    if len(corrupt_ids) != n_clean:
        clean_tokens = tok.token_strings(tok.encode(prompt, allow_special=special, add_special_tokens=True))
        corrupt_tokens = tok.token_strings(corrupt_ids)
        st.error(f"The two prompts tokenize to different lengths: yours has {len(clean_tokens)} tokens, the "
                 f"corrupted one {len(corrupt_tokens)}. Activations are copied position by position, so change "
                 f"words for words of as many tokens (names are usually one token each, with their leading space).")
        n = max(len(clean_tokens), len(corrupt_tokens))
        pad = [""] * n
        both = pd.DataFrame({"clean": (clean_tokens + pad)[:n], "corrupted": (corrupt_tokens + pad)[:n]})
        st.dataframe(both.map(show_whitespace), key="why_tokens_table")
        return None
    corrupted = v.run_of(cut_like_clean(v, corrupt_ids))
    clean_value, corrupted_value = at.metric_value(tr, metric), at.metric_value(corrupted.trace, metric)
    c1, c2, c3 = st.columns(3)
    c1.metric(f"{metric.name}, clean", f"{clean_value:.3f}")
    c2.metric(f"{metric.name}, corrupted", f"{corrupted_value:.3f}")
    top = top_next_tokens(corrupted.trace, metric.position, 1)["token"].iloc[0]
    c3.metric("Corrupted run's top token", show_whitespace(top))
    if abs(clean_value - corrupted_value) < 1e-3:
        st.warning("Both prompts give the same metric: there is no gap to restore. Change a detail that matters for "
                   "the target (or pick a contrast token).")
        return None
    return corrupted
