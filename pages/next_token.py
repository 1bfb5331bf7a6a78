"""Next token: the model's prediction after any token, sampling settings, and generating step by step."""
import html

import streamlit as st

from gptviz import ui
from gptviz.analysis import lens
from gptviz.plots import sampling as plots
from gptviz.plots.common import show_whitespace
from gptviz.sampling import SamplingSettings

STEPS_KEY = "_next_steps"  # one (token id, temperature, top_k, top_p) per generated token
SEED_MAX = 2**31 - 1
SHOWN_PROMPT_CHARS = 600


def code(token: str) -> str:
    """A token as markdown inline code, its whitespace made visible."""
    return "`" + show_whitespace(token).replace("`", "ˋ") + "`"


def clamp_sampling_state(vocab: int) -> None:
    """Keep URL-restored sampling values inside the widgets' ranges."""
    state = st.session_state
    state["temperature"] = min(max(float(state.get("temperature", 1.0)), 0.0), 5.0)
    state["top_k"] = min(max(int(state.get("top_k", 0)), 0), vocab)
    state["top_p"] = min(max(float(state.get("top_p", 1.0)), 0.0), 1.0)
    state["seed"] = min(max(int(state.get("seed", 0)), 0), SEED_MAX)


def step_settings(generated: tuple[int, ...]) -> tuple[list[SamplingSettings], list[str]]:
    """The settings each generated token was chosen with (recorded when it was chosen), or the
    current ones for tokens that came from elsewhere (a shared link)."""
    records = st.session_state.get(STEPS_KEY, [])
    current = SamplingSettings(st.session_state["temperature"], st.session_state["top_k"], st.session_state["top_p"])
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


def add_token(generated: tuple[int, ...], token_id: int, settings: SamplingSettings) -> None:
    records = st.session_state.get(STEPS_KEY, [])[: len(generated)]
    st.session_state[STEPS_KEY] = records + [(token_id, settings.temperature, settings.top_k, settings.top_p)]
    ui.set_generated(list(generated) + [token_id])
    st.rerun()


def on_bar_click(tokens: list[str]) -> None:
    """A click on a top-token bar: that token becomes the target of the Why this token? page."""
    for point in (st.session_state.get("top_chart") or {}).get("selection", {}).get("points", []):
        index = point.get("point_index")
        if isinstance(index, int) and 0 <= index < len(tokens):
            st.session_state["why_target"] = st.session_state["why_target_pick"] = tokens[index]
            return


def main() -> None:
    st.title("Next token")
    st.write("Which token does the model expect next, and how does sampling pick one?")
    v = ui.view()
    tr, config, tok = v.trace, v.model.config, v.model.tokenizer
    T, V = tr.n_tokens, config.vocab_size

    # ---- the prediction at one position ----------------------------------------------------
    ui.follow_position(T)
    left, right = st.columns(2)
    position = left.number_input("Position (the prediction after this token)", 0, T - 1, step=1, key="position",
                                 help=f"0 to {T - 1}; the last position predicts the token after the text.")
    n_top = right.number_input("How many top tokens", 1, min(100, V), value=15, step=1, key="n_top")
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
    after = tr.tokens[position]
    actual = lens.actual_next(tr, position)
    if actual is None:
        st.markdown(f"After token {position} {code(after)} (the last), the model predicts:")
    else:
        st.markdown(
            f"After token {position} {code(after)}, the model predicts (really next: "
            f"{code(actual['token'])}, p = {actual['probability']:.4g}, rank {actual['rank']:,} "
            f"of {V:,}):"
        )
    fig = plots.top_tokens_figure(top["token"].tolist(), top["probability"].to_numpy(), top["logit"].to_numpy(),
                                  top["actual next"].to_numpy(),
                                  title=f"Top {len(top)} next tokens after position {position}")
    ui.chart(fig, key="top_chart", on_select=lambda tokens=top["token"].tolist(): on_bar_click(tokens),
             selection_mode="points")
    why = st.session_state.get("why_target_pick") if st.session_state.get("why_target") else top["token"].iloc[0]
    st.page_link("pages/why.py", label=f"Why {show_whitespace(why)}? Which heads and MLPs make this prediction",
                 icon=":material/psychology_alt:", help="Click a bar to pick the token to explain.")
    with st.expander("Top tokens as a table"):
        st.dataframe(top.assign(token=top["token"].map(show_whitespace)), hide_index=True, key="top_table")
        ui.download_csv(top, f"next_tokens_pos{position}", key="top_csv")

    # ---- temperature, top-k, top-p -------------------------------------------------------------
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
    state = st.session_state
    settings = SamplingSettings(float(state["temperature"]), int(state["top_k"]), float(state["top_p"]))
    table, summary = lens.sampling_table(tr, position, settings, n_top)
    m1, m2, m3, m4 = st.columns(4)
    m1.metric(f"Tokens kept (of {summary.vocab:,})", f"{summary.n_kept:,}")
    m2.metric("Mass kept before renormalising", f"{summary.kept_mass:.4f}")
    m3.metric("Entropy at T = 1 (nats)", f"{summary.entropy_before:.3f}")
    m4.metric("Entropy sampled from (nats)", f"{summary.entropy_after:.3f}")
    ui.explain(
        f"Sampling works on all {V:,} logits z at position {position}, in three steps:\n\n"
        f"1. **Temperature** T: p = softmax(z / T). T < 1 sharpens (the top token gains), T > 1 flattens; "
        f"T = 0 means argmax (greedy): all the mass on the top token.\n"
        f"2. **top-k**: keep only the k most likely tokens (k = 0: keep all {V:,}).\n"
        f"3. **top-p** (nucleus): keep the smallest set of top tokens whose probability adds up to at least "
        f"p (the top token always stays).\n\n"
        f"The kept probabilities are divided by their sum (the *mass kept*, {summary.kept_mass:.4f} now) so "
        f"they add up to 1 again, and the next token is drawn from that. Now {summary.n_kept:,} tokens survive. "
        f"The bars show the top {len(table)} tokens at T = 1; ✗ marks a token the filters removed."
    )
    log_scale = st.checkbox("Logarithmic probability axis (to see the small ones)", key="dist_log")
    fig = plots.distribution_figure(table["token"].tolist(), table["original (T=1)"].to_numpy(),
                                    table["after temperature"].to_numpy(), table["after filter"].to_numpy(),
                                    table["kept"].to_numpy(), settings.temperature, log_scale=log_scale)
    ui.chart(fig, key="dist_chart")
    with st.expander("Distributions as a table"):
        st.dataframe(table.assign(token=table["token"].map(show_whitespace)), hide_index=True, key="dist_table")
        ui.download_csv(table, f"sampling_pos{position}", key="dist_csv")

    # ---- one token at a time ---------------------------------------------------------------------
    st.subheader("Generate one token at a time")
    limit = ui.max_tokens(v.model)
    full = len(v.generated) >= limit - 1  # a longer prompt slides: its oldest tokens make room

    n_prompt = len(v.prompt_ids)
    b1, b2, b3 = st.columns(3)
    sample = b1.button("Sample next token", key="sample_next", disabled=full, width="stretch")
    greedy = b2.button("Take greedy token", key="greedy_next", disabled=full, width="stretch")
    back = b3.button("Back one step", key="back_step", width="stretch")
    if full:
        st.warning(f"The context is full of generated tokens: {T:,} tokens is all the view reads "
                   f"({v.model_name}'s n_ctx = {config.n_ctx:,}; sidebar limit {limit:,}). Take a step back or "
                   "raise the limit to generate more.")
    elif sample:
        add_token(v.generated, lens.pick_next(tr, settings, int(state["seed"]), len(v.generated)), settings)
    elif greedy:
        add_token(v.generated, lens.pick_next(tr, SamplingSettings(temperature=0.0), 0, len(v.generated)),
                  SamplingSettings(temperature=0.0))
    if back:
        if v.generated:
            state[STEPS_KEY] = state.get(STEPS_KEY, [])[: len(v.generated) - 1]
            ui.set_generated(list(v.generated[:-1]))
            st.rerun()
        st.info("Nothing to take back: no token has been generated yet.")
    ui.explain(
        f"**Sample** draws the next token after the last one with the settings above, from a random "
        f"generator seeded with seed + step number, so the same seed, prompt and settings always give the "
        f"same tokens. **Greedy** takes the most likely token. Each new token is appended and the model "
        f"reads it: thanks to the **KV cache** only the new token runs through the {config.n_layer} layers; "
        f"the keys and values of the {T:,} earlier tokens (shape ({config.n_kv_head}, T, {config.d_head}) "
        f"per layer) are reused, not recomputed. Every other page now shows prompt + generated tokens."
    )
    if v.generated:
        settings_used, labels = step_settings(v.generated)
        steps = lens.steps_table(tr, n_prompt, settings_used)
        steps["chosen with"] = labels
        st.dataframe(steps.assign(token=steps["token"].map(show_whitespace)), hide_index=True, key="steps_table")
        ui.download_csv(steps, "generated_steps", key="steps_csv")
        prompt_text = tok.decode(list(v.prompt_ids))
        if len(prompt_text) > SHOWN_PROMPT_CHARS:
            prompt_text = "…" + prompt_text[-SHOWN_PROMPT_CHARS:]
        st.markdown(
            f'<div style="white-space: pre-wrap; font-family: monospace; border: 1px solid #ddd; padding: 0.5em">'
            f'{html.escape(prompt_text)}<span style="background-color: #ffd166">'
            f"{html.escape(tok.decode(list(v.generated)))}</span></div>",
            unsafe_allow_html=True,
        )
        st.caption(f"{len(v.generated)} generated token(s), highlighted, after the prompt's {n_prompt:,} tokens.")
    else:
        st.caption("No generated tokens yet: press a button above.")


main()
