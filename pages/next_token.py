"""Next token: the model's prediction after any token, sampling settings, and generating step by step."""
import html
import math

import streamlit as st

from gptviz import ui
from gptviz.analysis import lens
from gptviz.plots import sampling as plots
from gptviz.plots.common import show_whitespace
from gptviz.sampling import SamplingSettings
from gptviz.ui.settings import SEED_MAX

STEPS_KEY = "_next_steps"  # one (token id, temperature, top_k, top_p) per generated token
SHOWN_PROMPT_CHARS = 600
LN2 = math.log(2)


def clamp_sampling_state(vocab: int) -> None:
    """top-k can be at most the vocabulary (the other bounds are the settings' own)."""
    ui.clamp_state("top_k", 0, vocab, 0)


def step_settings(generated: tuple[int, ...]) -> tuple[list[SamplingSettings], list[str]]:
    """The settings each generated token was chosen with (recorded when it was chosen), or the
    current ones for tokens that came from elsewhere (a shared link)."""
    records = st.session_state.get(STEPS_KEY, [])
    current = current_settings()
    settings, labels = [], []
    for i, token_id in enumerate(generated):
        if i < len(records) and records[i][0] == token_id:
            _, temperature, top_k, top_p = records[i]
            settings.append(SamplingSettings(temperature, top_k, top_p))
            labels.append("greedy" if temperature == 0 else f"T={temperature:g}, k={top_k}, p={top_p:g}")
        else:
            settings.append(current)
            labels.append("not recorded (current settings)")
    return settings, labels


def current_settings() -> SamplingSettings:
    state = st.session_state
    return SamplingSettings(float(state["temperature"]), int(state["top_k"]), float(state["top_p"]))


def generate(v, n: int, greedy: bool) -> None:
    """A button's callback (the page then runs once, with the new tokens): append n tokens chosen
    after the run shown, sampled with seed + step (or greedy); each step reads only the new token
    (the store extends the previous trace through its KV cache)."""
    state = st.session_state
    settings = SamplingSettings(temperature=0.0) if greedy else current_settings()
    generated, records = list(v.generated), state.get(STEPS_KEY, [])[: len(v.generated)]
    room = ui.max_tokens(v.model) - 1 - len(generated)  # a long prompt slides: its oldest tokens make room
    for _ in range(min(n, room)):
        prompt, _ = ui.cut_to_context(v.model, v.prompt_ids, ui.max_tokens(v.model) - len(generated))
        tr = v.run_of(prompt + tuple(generated), v.knock_out).trace
        token = lens.pick_next(tr, settings, int(state["seed"]), len(generated))
        generated.append(token)
        records.append((token, settings.temperature, settings.top_k, settings.top_p))
    state[STEPS_KEY] = records
    state["_last_generated"] = generated[len(v.generated):]
    ui.set_generated(generated)


def step_back(v) -> None:
    if v.generated:
        st.session_state[STEPS_KEY] = st.session_state.get(STEPS_KEY, [])[: len(v.generated) - 1]
        ui.set_generated(list(v.generated[:-1]))
    else:
        st.session_state["_nothing_back"] = True


def on_bar_click(tokens: list[str]) -> None:
    """A click on a top-token bar: that token becomes the target of the Why this token? page."""
    for point in (st.session_state.get("top_chart") or {}).get("selection", {}).get("points", []):
        index = point.get("point_index")
        if isinstance(index, int) and 0 <= index < len(tokens):
            st.session_state["why_target"] = st.session_state["why_target_pick"] = tokens[index]
            return


def prediction_section(v) -> int:
    """The top tokens after the position; returns the position."""
    tr, config = v.trace, v.model.config
    T, V = tr.n_tokens, config.vocab_size
    left, right = st.columns(2)
    with left:
        position = ui.position_input("Position (the prediction after this token)", tr.tokens,
                                     f"0 to {T - 1}; the last position predicts the token after the text.")
    n_top = right.number_input("How many top tokens", 1, min(100, V), step=1, key="n_top")
    ui.explain(
        f"At every position the model turns the final residual stream into **logits** z, one score per "
        f"token of its vocabulary: `final_norm` (shape ({T}, {config.d_model})) times the output head "
        f"(shape ({config.d_model}, {V})) gives logits of shape ({T}, {V}). **softmax** turns a row into "
        f"probabilities: p_i = exp(z_i) / Σ_j exp(z_j), summing to 1 over all {V:,} tokens.\n\n"
        f"Position p's row is the model's guess for the token **after** token p. For p < {T - 1} the "
        f"token that really came next is marked in red: the model read the whole text at once, but each "
        f"position only saw the tokens up to itself (causal mask)."
    )
    top = lens.top_next_tokens(tr, position, n_top)
    actual = lens.actual_next(tr, position)
    if actual is not None:
        chosen = " (generated)" if position + 1 >= len(v.prompt_ids) else ""
        st.markdown(f"Really next{chosen}: {ui.code(actual['token'])}, p = {actual['probability']:.4g}, rank "
                    f"{actual['rank']:,} of {V:,}.")
    fig = plots.top_tokens_figure(top["token"].tolist(), top["probability"].to_numpy(), top["logit"].to_numpy(),
                                  top["actual next"].to_numpy(),
                                  title=f"Top {len(top)} next tokens after position {position}")
    ui.chart(fig, key="top_chart", filename=f"next_tokens_pos{position}", selection_mode="points",
             on_select=lambda tokens=top["token"].tolist(): on_bar_click(tokens))
    why = st.session_state.get("why_target_pick") if st.session_state.get("why_target") else top["token"].iloc[0]
    ui.link("why", f"Why {show_whitespace(why)}? Which heads and MLPs make this prediction",
            help="Click a bar to pick the token to explain.")
    with st.expander("Top tokens as a table"):
        st.dataframe(top.assign(token=top["token"].map(show_whitespace)), hide_index=True, key="top_table")
        ui.download_csv(top, f"next_tokens_pos{position}", key="top_csv")
    return position


@ui.fragment
def sampling_section(v, position: int) -> None:
    tr, V = v.trace, v.model.config.vocab_size
    T = tr.n_tokens
    st.subheader("Temperature, top-k, top-p")
    if position != T - 1:
        st.caption(f"Shown for position {position}, as above; generating (below) always continues after the "
                   f"last token, position {T - 1}.")
    clamp_sampling_state(V)
    c1, c2, c3, c4 = st.columns(4)
    c1.slider("Temperature (0 = greedy)", 0.0, 5.0, step=0.05, key="temperature")
    c2.number_input(f"top-k (0 = off, up to {V:,})", 0, V, step=1, key="top_k")
    c3.slider("top-p (1 = off)", 0.0, 1.0, step=0.01, key="top_p")
    c4.number_input("Seed", 0, SEED_MAX, step=1, key="seed")
    settings = current_settings()
    table, summary = lens.sampling_table(tr, position, settings, int(st.session_state["n_top"]))
    m1, m2, m3, m4 = st.columns(4)
    m1.metric(f"Tokens kept (of {summary.vocab:,})", f"{summary.n_kept:,}")
    m2.metric("Mass kept before renormalising", f"{summary.kept_mass:.4f}")
    m3.metric("Entropy at T = 1", ui.bits(summary.entropy_before / LN2))
    m4.metric("Entropy sampled from", ui.bits(summary.entropy_after / LN2))
    ui.explain(
        f"Sampling works on all {V:,} logits z at position {position}, in three steps:\n\n"
        f"1. **Temperature** T: p = softmax(z / T). T < 1 sharpens (the top token gains), T > 1 flattens; "
        f"T = 0 means argmax (greedy): all the mass on the top token.\n"
        f"2. **top-k**: keep only the k most likely tokens (k = 0: keep all {V:,}).\n"
        f"3. **top-p** (nucleus): keep the smallest set of top tokens whose probability adds up to at least "
        f"p (the top token always stays).\n\n"
        f"The kept probabilities are divided by their sum (the *mass kept*, {summary.kept_mass:.4f} now) so "
        f"they add up to 1 again, and the next token is drawn from that. Now {summary.n_kept:,} tokens survive. "
        f"The bars show the top {len(table)} tokens at T = 1; ✗ marks a token the filters removed. **Entropy** "
        f"H = −Σ p log₂ p, in bits: 0 when one token has all the mass, log₂(n) bits spread evenly over n tokens."
    )
    log_scale = st.checkbox("Logarithmic probability axis (to see the small ones)", key="dist_log")
    fig = plots.distribution_figure(table["token"].tolist(), table["original (T=1)"].to_numpy(),
                                    table["after temperature"].to_numpy(), table["after filter"].to_numpy(),
                                    table["kept"].to_numpy(), settings.temperature, log_scale=log_scale)
    ui.chart(fig, key="dist_chart", filename=f"sampling_pos{position}")
    with st.expander("Distributions as a table"):
        st.dataframe(table.assign(token=table["token"].map(show_whitespace)), hide_index=True, key="dist_table")
        ui.download_csv(table, f"sampling_pos{position}", key="dist_csv")


def generate_section(v) -> None:
    tr, config, tok = v.trace, v.model.config, v.model.tokenizer
    T, state = tr.n_tokens, st.session_state
    st.subheader("Generate tokens")
    full = len(v.generated) >= ui.max_tokens(v.model) - 1  # a longer prompt slides: its oldest tokens make room
    n_prompt = len(v.prompt_ids)
    b1, b2, b3, b4 = st.columns([1, 1, 1, 1])
    n = int(b1.number_input("Tokens per press", 1, 64, step=1, key="n_generate"))
    b2.button(f"Sample {n} token{'s' * (n > 1)}", key="sample_next", disabled=full, width="stretch",
              on_click=generate, args=(v, n, False))
    b3.button(f"Greedy {n} token{'s' * (n > 1)}", key="greedy_next", disabled=full, width="stretch",
              on_click=generate, args=(v, n, True))
    b4.button("Back one step", key="back_step", width="stretch", on_click=step_back, args=(v,))
    if full:
        st.warning(f"The view is full: {T:,} tokens is all it reads (the sidebar's limit). Take a step back or "
                   "raise the limit to generate more.")
    if state.pop("_nothing_back", False):
        st.info("Nothing to take back: no token has been generated yet.")
    if last := state.pop("_last_generated", None):
        st.success("Generated " + " ".join(ui.code(t) for t in tok.token_strings(last))
                   + " (highlighted below; the table has each one's probability).")
    ui.explain(
        f"**Sample** draws the next token after the last one with the settings above, from a random "
        f"generator seeded with seed + step number, so the same seed, prompt and settings always give the "
        f"same tokens. **Greedy** takes the most likely token. Each new token is appended and the model "
        f"reads it: thanks to the **KV cache** only the new token runs through the {config.n_layer} layers; "
        f"the keys and values of the {T:,} earlier tokens (shape ({config.n_kv_head}, T, {config.d_head}) "
        f"per layer) are reused, not recomputed. Every other page now shows prompt + generated tokens."
    )
    if not v.generated:
        st.caption("No generated tokens yet: press a button above.")
        return
    settings_used, labels = step_settings(v.generated)
    steps = lens.steps_table(tr, n_prompt, settings_used)
    steps["chosen with"] = labels
    st.dataframe(steps.assign(token=steps["token"].map(show_whitespace)), hide_index=True, key="steps_table")
    ui.download_csv(steps, "generated_steps", key="steps_csv")
    prompt_text = tok.decode(list(v.prompt_ids))
    if len(prompt_text) > SHOWN_PROMPT_CHARS:
        prompt_text = "…" + prompt_text[-SHOWN_PROMPT_CHARS:]
    generated = "".join(f'<span style="background-color: #ffd166" title="{html.escape(t)}">'
                        f"{html.escape(show_newlines(t))}</span>" for t in tok.token_strings(list(v.generated)))
    st.markdown(f'<div style="white-space: pre-wrap; font-family: monospace; border: 1px solid #ddd; padding: 0.5em">'
                f"{html.escape(prompt_text)}{generated}</div>", unsafe_allow_html=True)
    st.caption(f"{len(v.generated)} generated token(s), highlighted (↵ marks a generated newline), after the "
               f"prompt's {n_prompt:,} tokens.")


def show_newlines(text: str) -> str:
    """A generated token's text with its newlines visible (↵ before each)."""
    return text.replace("\n", "↵\n")


def main() -> None:
    st.title("Next token")
    st.write("Which token does the model expect next, and how does sampling pick one?")
    v = ui.view()
    position = prediction_section(v)
    sampling_section(v, position)
    generate_section(v)


main()
