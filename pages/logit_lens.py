"""Logit lens: every layer's residual stream read out as a next-token prediction."""
import streamlit as st

from gptviz import ui
from gptviz.analysis import lens
from gptviz.plots import lens as plots
from gptviz.plots.common import show_whitespace
from gptviz.ui import code
from gptviz.ui.settings import BY_KEY

FULL_VIEW_MAX = 128  # longer sequences show a window of positions (each costs n_layer + 1 read-outs)
WIDTHS = list(BY_KEY["lens_width"].choices)


def choose_window(T: int) -> tuple[int, int]:
    """All positions for short sequences; a selectable window of them for long ones."""
    if T <= FULL_VIEW_MAX:
        return 0, T
    state = st.session_state
    left, right = st.columns([1, 3])
    ui.choose_state("lens_width", WIDTHS, BY_KEY["lens_width"].default)
    width = left.selectbox("Window width", WIDTHS, key="lens_width",
                           help="Wider windows take longer: every position is read out at every layer.")
    state["lens_start"] = min(max(int(state.get("lens_start", T - width)), 0), T - width)
    start = right.slider("First position shown", 0, T - width, step=1, key="lens_start")
    st.caption(f"The sequence has {T:,} tokens: the heatmap shows positions {start:,}–{start + width - 1:,} "
               f"(a window of {width}); move it with the slider.")
    return start, start + width


def top_section(v) -> None:
    tr, config = v.trace, v.model.config
    T, L, V = tr.n_tokens, config.n_layer, config.vocab_size
    rows = lens.lens_row_names(L)

    ui.explain(
        f"The model only turns its residual stream into a prediction at the very end: "
        f"logits = unembed(final_norm(resid)), a ({T}, {config.d_model}) stream times the "
        f"({config.d_model}, {V:,}) output head. The **logit lens** applies that same read-out to the "
        f"residual stream *entering* each of the {L} blocks (`resid_pre`, shape ({T}, {config.d_model})), "
        f"so each row shows what the model 'would say' after that many layers. The last row is the "
        f"model's real prediction. Each cell is the most likely next token at that layer and position, "
        f"coloured by its probability softmax(logits)_top. Early layers usually predict something "
        f"generic; the answer often appears in the later layers."
        + (" The output head is the token embedding itself (tied), so row 0, the bare embedding, mostly "
           "'predicts' the token it already is." if config.tie_embeddings else "")
        + (f" This model soft-caps its logits, tanh(z / {config.final_softcap:g}) · {config.final_softcap:g}, "
           "before the softmax; every row here is read out the same way." if config.final_softcap else "")
    )
    start, stop = choose_window(T)
    with st.spinner("Reading out every layer…"):
        top_ids, top_probs = ui.derived(v.shown, lens.logit_lens_top, start, stop)
    top_tokens = lens.top_token_strings(tr, top_ids)
    fig = plots.lens_heatmap(top_probs, top_tokens, plots.position_labels(tr.tokens[start:stop], start), rows,
                             title="Top next token at each layer")
    ui.chart(fig, key="lens_chart")
    if stop - start > plots.TEXT_CELLS_MAX_COLS:
        st.caption(f"With more than {plots.TEXT_CELLS_MAX_COLS} positions the tokens are in the hover text only.")
    ui.download_csv(lens.lens_frame(tr, top_ids, top_probs, start), "logit_lens_top", key="lens_csv")


@ui.fragment
def target_section(v) -> None:
    tr, config, tok = v.trace, v.model.config, v.model.tokenizer
    L, V = config.n_layer, config.vocab_size
    rows = lens.lens_row_names(L)
    st.subheader("One token, layer by layer")
    left, right = st.columns(2)
    with left:
        position = ui.position_input("Position", tr.tokens, "The prediction for the token after this one.")
    default_id = int(lens.top_next_tokens(tr, position, 1)["id"].iloc[0])
    with right:
        picked = ui.token_input(tr, position, "Target token", "lens_target", show_whitespace(
            tok.token_strings([default_id])[0]), "A word; inside a sentence words usually start with a space "
            "(' Paris'): both forms are offered with their ranks. Empty: the model's top prediction here.")
    token_id = default_id if picked is None else picked
    token = tok.token_strings([token_id])[0]
    table = lens.target_table(tr, token_id, position)
    st.markdown(
        f"Target {code(token)} (id {token_id}) after token {position} "
        f"{code(tr.tokens[position])}: final probability "
        f"{table['target probability'].iloc[-1]:.4g}, rank {int(table['target rank'].iloc[-1]):,} of {V:,}."
    )
    ui.chart(plots.target_by_layer_figure(table["target probability"].to_numpy(), table["target rank"].to_numpy(),
                                          rows, token), key="target_chart", filename=f"logit_lens_{token.strip()}")
    probability = st.column_config.NumberColumn(format="%.4g")
    st.dataframe(table.assign(**{"top token": table["top token"].map(show_whitespace)}), hide_index=True,
                 key="target_table", column_config={"target probability": probability, "top probability": probability})
    ui.download_csv(table, f"logit_lens_target_pos{position}", key="target_csv")


def main() -> None:
    st.title("Logit lens")
    st.write("What would the model predict if it stopped after layer l?")
    v = ui.view()
    top_section(v)
    target_section(v)


main()
