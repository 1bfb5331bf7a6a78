"""Tokens: how the prompt's text is cut into the pieces the model reads."""
from __future__ import annotations

import html

import pandas as pd
import streamlit as st

from gptviz import ui
from gptviz.analysis import embeddings as emb
from gptviz.plots.common import show_whitespace
from gptviz.tokenizer import CharTokenizer

MAX_CHIPS = 2000
CHIP_COLOURS = ("#dbeafe", "#fde68a", "#d1fae5", "#fbcfe8", "#e0e7ff", "#fed7aa")
CHIP_CSS = (
    "<style>.gv-chips{line-height:2.2}"
    ".gv-chips span{display:inline-block;margin:2px 1px;padding:1px 4px;border-radius:4px;font-family:monospace;"
    "white-space:pre;line-height:1.5;color:#111}"
    + "".join(f".gv-chips .c{i}{{background:{c}}}" for i, c in enumerate(CHIP_COLOURS))
    + ".gv-chips .gen{outline:2px solid #16a34a;font-weight:bold}"
    ".gv-chips .part{border:1px dashed #dc2626}.gv-chips small{color:#555}</style>"
)


def token_table(tr, n_prompt: int) -> pd.DataFrame:
    """The run's tokens, one row each (position, token, id, bytes, source, whole UTF-8)."""
    return emb.token_table(tr.model, tr.ids, n_prompt)


def chips_html(table: pd.DataFrame, show_ids: bool, limit: int = MAX_CHIPS) -> str:
    """The first `limit` tokens as coloured chips; generated tokens outlined, partial UTF-8 dashed red."""
    head = table.head(limit)
    parts = []
    for position, token, token_id, hex_bytes, source, whole in zip(
        head["position"], head["token"], head["id"], head["bytes (hex)"], head["source"], head["whole UTF-8"]
    ):
        generated = source == "generated"
        classes = f"c{position % len(CHIP_COLOURS)}" + (" gen" if generated else "") + ("" if whole else " part")
        label = html.escape(show_whitespace(token))
        if show_ids:
            label += f"<br><small>{token_id}</small>"
        title = html.escape(f"position {position} · id {token_id} · bytes {hex_bytes}"
                            + (" · generated" if generated else "") + ("" if whole else " · part of a character"))
        parts.append(f'<span class="{classes}" title="{title}">{label}</span>')
        if "\n" in token:
            parts.append("<br>")
    return CHIP_CSS + "<div class='gv-chips'>" + "".join(parts) + "</div>"


def main() -> None:
    st.title("Tokens")
    st.markdown("*Which pieces does the model actually read, and what are their numbers?*")
    v = ui.view()
    model, tokenizer = v.model, v.model.tokenizer
    n_prompt = len(v.prompt_ids)
    table = ui.derived(v.plain, token_table, n_prompt)
    counts = emb.token_counts(model, v.prompt_ids)
    T = len(v.ids)

    ids_note = (f"Each token is an integer id in [0, {model.config.vocab_size:,}); the model reads the {T} ids as "
                f"a tensor of shape ({T},) and never sees the letters.")
    if isinstance(tokenizer, CharTokenizer):
        ui.explain(f"The tokenizer ({tokenizer.name}) has one token per character: the {tokenizer.n_vocab:,} "
                   "characters of the text the model was trained on, in sorted order (nanoGPT's shakespeare-char). "
                   f"{ids_note} A character it never saw has no token: the page says which.")
    else:
        ui.explain(
            f"The tokenizer ({tokenizer.name}, a byte-level BPE with {tokenizer.n_vocab:,} tokens) turns the text "
            "into UTF-8 bytes, splits it into word-like pieces, then merges frequent byte pairs into bigger tokens. "
            f"{ids_note} A space usually belongs to the token after it (shown as ␣; a no-break space as ⍽, "
            "other invisible characters by their code point, e.g. ⟨U+200B⟩). A character that needs several "
            "bytes (an emoji) can be split over tokens: such a token is only part of a character and is shown with "
            "its byte escapes (dashed red border)."
        )
    cols = st.columns(4)
    cols[0].metric("Tokens", f"{counts.tokens:,}")
    cols[1].metric("Characters", f"{counts.characters:,}")
    cols[2].metric("UTF-8 bytes", f"{counts.bytes:,}")
    cols[3].metric("Characters per token", f"{counts.chars_per_token:.2f}")
    if v.n_dropped:
        st.caption(f"Counts are of the {n_prompt:,} prompt tokens the model reads; {v.n_dropped:,} earlier tokens "
                   f"did not fit its context of {model.config.n_ctx:,}.")
    if v.generated:
        n = len(v.generated)
        st.caption(f"Plus {n:,} generated token{'s' * (n != 1)} (green outline), not counted above.")

    st.subheader("The prompt, token by token")
    show_ids = st.checkbox("Show ids under the tokens", key="tokens_show_ids")
    if T > MAX_CHIPS:
        st.caption(f"Showing the first {MAX_CHIPS:,} of {T:,} tokens; the table below has all of them.")
    st.markdown(chips_html(table, show_ids), unsafe_allow_html=True)
    st.caption("Colours only separate neighbouring tokens. Hover a token for its position, id and bytes.")

    st.subheader("Table")
    shown = table.assign(token=table["token"].map(show_whitespace))
    st.dataframe(shown, hide_index=True, width="stretch", height=min(600, 38 + 35 * T))
    ui.download_csv(table.set_index("position"), "tokens", key="tokens_csv")


main()
