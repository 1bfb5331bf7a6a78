"""Overview: the path the prompt takes through the loaded model, what it predicts next, exports."""
from __future__ import annotations

from urllib.parse import urlencode

import pandas as pd
import streamlit as st

from gptviz import export, features, ui
from gptviz.analysis import embeddings as emb
from gptviz.analysis import lens
from gptviz.loading import weights_origin
from gptviz.plots import pipeline
from gptviz.plots.common import show_whitespace

LOGITS_DEFAULT_MAX_BYTES = 256 * 2**20  # above this the .npz leaves the logits out unless asked
COMPRESS_MAX_BYTES = 64 * 2**20  # larger .npz files are stored uncompressed (deflate is slow, gains ~10%)


@st.cache_data(max_entries=16, show_spinner=False)
def origin_of(model_name: str) -> str:
    """Where the model's weights come from and at what precision (read from the file headers)."""
    try:
        return weights_origin(ui.model_source(model_name)[0])
    except (ValueError, OSError) as err:
        return f"as stored ({err})"


# Where each box of the pipeline is shown: (page, tab or None); anything in a block not named here
# (a norm, a ⊕) goes to Inside a block's shortcut view.
BOX_PAGES = {"ids": ("tokens", None), "hook_embed": ("embeddings", None), "hook_pos_embed": ("embeddings", None),
             "rotary": ("inside_block", "Positions"), "attn": ("attention", None), "mlp": ("inside_block", "MLP"),
             "ln_final": ("logit_lens", None), "logits": ("next_token", None), "probs": ("next_token", None)}


def on_box_click(keys: list[str]) -> None:
    """A click on a pipeline box: remember where to go (a callback may not switch pages itself)."""
    for point in (st.session_state.get("overview_pipeline") or {}).get("selection", {}).get("points", []):
        index = point.get("point_index")
        if isinstance(index, int) and 0 <= index < len(keys):
            key = keys[index]
            is_norm = key.startswith("ln") or "norm" in key
            st.session_state["_go_to"] = BOX_PAGES.get(key, ("inside_block", "Norm" if is_norm else "Shortcut"))
            return


def md(text: str) -> str:
    """Plain text safe inside a markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


def book_section(v: ui.View) -> None:
    cfg = v.model.config
    st.subheader("This model vs the book's GPT-2", anchor="vs-book")
    origin = origin_of(v.model_name)
    table = features.feature_table(cfg, weights=origin)
    ui.explain(
        "Raschka's *Build a Large Language Model (from Scratch)* builds GPT-2 small (124M parameters). Models since "
        "then keep its plan (embeddings, N identical blocks of attention and MLP with shortcuts, a final norm, an "
        "output head) but change parts of it. Each row is one part, worded from the model's config by the same "
        "function for both columns; **bold** marks where "
        f"{cfg.name or 'this model'} differs. The last column links to where the app shows that part with this "
        "model's numbers."
    )
    lines = ["| component | the book's GPT-2 | " + md(cfg.name or "this model") + " | shown on |", "|---|---|---|---|"]
    for row in table.itertuples(index=False):
        mine = md(row[2])
        page = ui.PAGES_BY_KEY[row.page]
        tab = page.tab_of(row.anchor)
        params = dict(st.query_params) | ({page.tab_setting: tab} if tab else {})
        target = ("./" if row.page == "overview" else f"./{row.page}") + (f"?{urlencode(params)}" if params else "") + (
            f"#{row.anchor}" if row.anchor else "")
        where = page.title + (f" › {row.section}" if row.section else "")
        lines.append(f"| {md(row.component)} | {md(row[1])} | {f'**{mine}**' if row.differs else mine} | "
                     f"[{where}]({target}) |")
    st.markdown("\n".join(lines))
    st.caption(f"Weights: {origin}. gptviz computes in float32 whatever the file stores.")
    ui.download_csv(table.set_index("component"), "model_vs_book_gpt2", key="overview_book_csv")


def megabytes(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:,.1f} MB" if n_bytes >= 1e5 else f"{n_bytes / 1e3:,.1f} kB"


def pipeline_section(v: ui.View) -> None:
    cfg, T = v.model.config, v.trace.n_tokens
    C, V, nh, hs = cfg.d_model, cfg.vocab_size, cfg.n_head, cfg.d_head
    st.subheader("The pipeline")
    position = (
        f"adds a learned position vector wpe[t] (also ({T}, {C})), so x₀ = wte[ids] + wpe[0..{T - 1}]"
        if cfg.positional == "learned" else
        "adds no position vector: position enters inside attention, where q and k are rotated by an angle "
        "that grows with the position (rotary embedding, RoPE), so x₀ = wte[ids]"
    )
    gqa = (f" Keys and values have only {cfg.n_kv_head} heads: each is shared by {cfg.n_rep} query heads "
           "(grouped-query attention)." if cfg.n_kv_head != nh else "")
    ui.explain(
        f"Your prompt is cut into **T = {T} tokens**. Each token id picks a row of the token-embedding table "
        f"({V:,} × {C}), giving a ({T}, {C}) matrix: one vector of C = {C} numbers per token. "
        f"{cfg.name or 'The model'} "
        f"then {position}.\n\n"
        f"That matrix — the *residual stream* — flows through **{cfg.n_layer} identical blocks**. Each block adds "
        f"two things to it (the *shortcut* connections): `x = x + attention(norm(x))`, where every token looks back "
        f"at the earlier tokens with {nh} heads of size hs = {hs} (q: ({nh}, {T}, {hs}), pattern: ({nh}, {T}, {T})), "
        f"then `x = x + MLP(norm(x))`, which works on each token alone, widening C = {C} to {cfg.d_mlp:,} and back."
        f"{gqa}\n\n"
        f"After a final norm, each token's vector is compared with every token's embedding: "
        f"logits = norm(x) · W_Uᵀ, shape ({T}, {V:,}). A softmax turns the last row into the probabilities "
        f"of the next token. Hover a box for its formula."
    )
    stages = pipeline.pipeline_stages(cfg, T)
    ui.chart(pipeline.pipeline_figure(cfg, T), key="overview_pipeline", selection_mode="points",
             on_select=lambda: on_box_click([s.key for s in stages]))
    st.caption("Click a box to open the page that shows it with this prompt.")

    params = ui.of_model(v.model_name, v.model, emb.parameter_counts)
    total = int(params["parameters"].sum())
    st.markdown(f"**Parameters:** {total:,} in all"
                + (" (the output head reuses the token embedding: *tied*)" if cfg.tie_embeddings else ""))
    per_block = params["per block"].map(lambda n: "—" if pd.isna(n) else f"{n:,}")  # — : not in the blocks
    st.dataframe(params.assign(**{"per block": per_block}), hide_index=True, width="stretch",
                 column_config={"share": st.column_config.ProgressColumn("share", format="percent", min_value=0.0,
                                                                         max_value=1.0),
                                "parameters": st.column_config.NumberColumn(format="localized")})
    ui.download_csv(params.set_index("part"), "parameter_counts", key="overview_params_csv")


def prediction_section(v: ui.View) -> None:
    tr = v.trace
    st.subheader("What comes next?")
    k = st.slider("Tokens shown", 1, 50, key="overview_top_k")
    top = lens.top_next_tokens(tr, -1, k).drop(columns="actual next")
    last = show_whitespace(tr.tokens[-1])
    ui.explain(
        f"The last row of the logits, ({tr.model.config.vocab_size:,},), scores every token of the vocabulary as "
        f"the one after “{last}” (position {tr.n_tokens - 1}). The softmax p_i = exp(logit_i) / Σ_j exp(logit_j) "
        f"turns the scores into probabilities that sum to 1. These are the {k} largest, at temperature 1 "
        "(the Next token page samples from them)."
    )
    left, right = st.columns([3, 2])
    with left:
        ui.chart(pipeline.top_tokens_figure(top["token"].tolist(), top["probability"].to_numpy(),
                                            top["id"].tolist(), title=f"Next token after “{last}”"),
                 key="overview_top_chart")
    with right:
        shown = top.assign(token=top["token"].map(show_whitespace))
        st.dataframe(shown, hide_index=True, width="stretch",
                     column_config={"probability": st.column_config.NumberColumn(format="%.4f"),
                                    "logit": st.column_config.NumberColumn(format="%.3f")})
        ui.download_csv(shown.set_index("rank"), "top_next_tokens", key="overview_top_csv")


def export_section(v: ui.View) -> None:
    tr = v.trace
    st.subheader("Export the trace")
    logits_bytes = tr.n_tokens * v.model.config.vocab_size * 4
    include_logits = st.checkbox("Include the logits in the .npz", value=logits_bytes <= LOGITS_DEFAULT_MAX_BYTES,
                                 key="export_logits",
                                 help="The logits (T × vocab) are usually the largest array: here "
                                      f"{megabytes(logits_bytes)}.")
    contents = export.npz_contents(tr, include_logits)
    table = pd.DataFrame({"array": list(contents), "shape": [str(s) for s, _ in contents.values()],
                          "size": [megabytes(b) for _, b in contents.values()]})
    raw = sum(b for _, b in contents.values())
    with_patterns = tr.n_tokens <= export.JSON_PATTERN_MAX_TOKENS
    ui.explain(
        "**.npz** (read with `numpy.load`): every tensor the trace keeps, float32, named like TransformerLens's "
        "hook points, plus a `metadata` JSON string (the model's config, the tokens). Attention patterns are not "
        "stored: recompute them from q and k as softmax(mask(q·kᵀ/√hs)).\n\n"
        "**JSON**: ids, tokens, config, the top-5 next tokens at every position, the residual stream's norm at every "
        f"layer and position, and every attention pattern when T ≤ {export.JSON_PATTERN_MAX_TOKENS} "
        f"({'included' if with_patterns else f'left out: T = {tr.n_tokens}'}). The files are built when you click."
    )
    st.dataframe(table, hide_index=True, width="content")
    compressed = raw <= COMPRESS_MAX_BYTES
    st.caption(f".npz: about {megabytes(raw)}" + (" before compression (floats compress little)." if compressed else
               ", stored uncompressed (compressing this much would take long and save ~10%)."))
    stem = f"gptviz-{v.model_name.replace(' ', '').replace(':', '-')}-{tr.n_tokens}tok"
    left, right = st.columns(2)
    left.download_button("Download .npz (all tensors)",
                         data=lambda: export.trace_to_npz(tr, include_logits, compressed),
                         file_name=f"{stem}.npz", mime="application/octet-stream", key="export_npz",
                         on_click="ignore")
    right.download_button("Download .json (readable summary)", data=lambda: export.trace_to_json(tr),
                          file_name=f"{stem}.json", mime="application/json", key="export_json", on_click="ignore")


def main() -> None:
    if (target := st.session_state.pop("_go_to", None)) is not None:
        page, tab = target
        if tab is not None:
            st.session_state[ui.PAGES_BY_KEY[page].tab_setting] = tab
        st.switch_page(ui.PAGES_BY_KEY[page].file)
    st.title("Overview")
    st.markdown("*What does the model do to your prompt, step by step, and what does it predict next?*")
    v = ui.view()
    cfg = v.model.config
    cols = st.columns(5)
    cols[0].metric("Tokens (T)", f"{v.trace.n_tokens:,}")
    cols[1].metric("Layers", cfg.n_layer)
    cols[2].metric("Heads", cfg.n_head if cfg.n_kv_head == cfg.n_head else f"{cfg.n_head} ({cfg.n_kv_head} kv)")
    cols[3].metric("d_model (C)", cfg.d_model)
    cols[4].metric("Context", f"{cfg.n_ctx:,}")
    pipeline_section(v)
    book_section(v)
    prediction_section(v)
    export_section(v)


main()
