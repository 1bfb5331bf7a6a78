"""Attention: which earlier tokens each token looks at, and how one head computes that."""
import numpy as np
import pandas as pd
import streamlit as st

from gptviz import ui
from gptviz.analysis import heads
from gptviz.plots import attention as plots
from gptviz.plots.common import token_labels
from gptviz.plots.heads import layer_head_heatmap

MAX_WINDOW_ROWS = 256  # queries in the full-resolution window of a long prompt
MAX_WINDOW_KEYS = 1024  # keys in that window
STAGE_SIZES = (8, 16, 32, 48, 64)
OVERVIEW_KEY = "attn_overview"
BOOST_GAMMA = 0.3


def on_overview_select(n_layer: int, n_head: int) -> None:
    """A click on the overview: focus on the clicked head (runs before the sidebar is drawn)."""
    event = st.session_state.get(OVERVIEW_KEY)
    points = (event or {}).get("selection", {}).get("points", [])
    for point in points:
        picked = plots.overview_pick(point, n_layer, n_head)
        if picked is not None:
            ui.focus(*picked)
            return


def on_pick() -> None:
    state = st.session_state
    ui.focus(state["attn_pick_layer"], state["attn_pick_head"])


def head_title(v, layer: int, head: int) -> str:
    """"layer 3, head 1", with what the run shown does to it (knocked out) and its kind of layer."""
    return (f"layer {layer}, head {head}" + (" (a local layer)" if v.trace.window(layer) else "")
            + (f" — knocked out: its output is replaced by its {v.knock_out[1]}, the pattern is what it computed"
               if v.knocked_out(layer, head) else ""))


@ui.fragment
def pattern_section(v, T: int, labels: list[str]) -> None:
    tr, layer, head = v.trace, v.layer, v.head
    sliding = tr.window(layer)
    st.subheader(f"The pattern of {head_title(v, layer, head)}")
    ui.explain(
        f"Each row is a **query** token, each column a **key** token it may look at. Cell (i, j) is the "
        f"attention weight a_ij = softmax_j(q_i·k_j / √d_head): how much of token j's value goes into token "
        f"i's output. Each row sums to 1. A token never looks ahead, so the cells right of the diagonal are "
        f"blank (the causal mask). The pattern is ({T}, {T}) for this prompt of {T} tokens; this head's q and k "
        f"are ({T}, {tr.model.config.d_head}) each." + ui.window_note(tr.model.config, layer)
    )
    boost = st.toggle("Boost faint weights (colour ∝ weight^0.3)", key="attn_boost",
                      help="Over a long prompt most weights are small; this makes them visible. "
                           "The colour bar and the hover still show the real weights.")
    gamma = BOOST_GAMMA if boost else 1.0
    if T <= plots.MAX_CELLS:
        pattern = heads.pattern_window(tr, layer, head, 0, T)
        ui.chart(plots.pattern_heatmap(pattern, tr.tokens, gamma=gamma, window=sliding), key="attn_pattern",
            filename=f"attention_L{layer}H{head}")
        ui.download_csv(ui.matrix_frame(pattern, labels, labels, "query"), f"attention_L{layer}H{head}",
                        key="attn_pattern_csv")
        return
    pooled, edges = ui.derived(v.shown, heads.pooled_pattern, layer, head, plots.MAX_CELLS)
    block = int(np.diff(edges).max())
    st.caption(
        f"{T:,} tokens are too many to draw one cell each: the whole ({T:,}, {T:,}) pattern is shown in "
        f"{len(edges) - 1}×{len(edges) - 1} blocks of up to {block}×{block} tokens, each showing its **largest** "
        f"weight (max-pooling keeps a sharp one-token attention visible). Turn on the window for full resolution."
    )
    window = st.toggle("Show a window at full resolution", key="attn_window")
    if not window:
        ui.chart(plots.pattern_heatmap(pooled, tr.tokens, edges=(edges, edges), gamma=gamma, window=sliding,
                                       title="whole pattern, max-pooled"), key="attn_pattern",
                                           filename=f"attention_L{layer}H{head}")
        rows = plots.range_labels(edges, tr.tokens)
        ui.download_csv(ui.matrix_frame(pooled, rows, rows, "query"), f"attention_L{layer}H{head}_pooled",
                        key="attn_pattern_csv")
        return
    c1, c2 = st.columns(2)
    end = ui.clamp_state("attn_win_end", 1, T, T)
    start = ui.clamp_state("attn_win_start", max(0, end - MAX_WINDOW_ROWS), end - 1, max(0, end - 64))
    c1.number_input(f"First query position (at most {MAX_WINDOW_ROWS} rows)", max(0, end - MAX_WINDOW_ROWS), end - 1,
                    step=1, key="attn_win_start")
    c2.number_input("Last query position + 1", 1, T, step=1, key="attn_win_end")
    key_start = max(0, end - MAX_WINDOW_KEYS)
    pattern = heads.pattern_window(tr, layer, head, start, end, key_start)
    note = f"keys {key_start}–{end - 1}" + (f" (keys before {key_start} are not drawn)" if key_start else "")
    st.caption(f"Queries {start}–{end - 1}, {note}, one cell per token.")
    ui.chart(plots.pattern_heatmap(pattern, tr.tokens, query_start=start, key_start=key_start, gamma=gamma,
                                   window=sliding, title=f"queries {start}–{end - 1}"), key="attn_pattern",
                                       filename=f"attention_L{layer}H{head}")
    ui.download_csv(ui.matrix_frame(pattern, labels[start:end], labels[key_start:end], "query"),
                    f"attention_L{layer}H{head}_{start}_{end}", key="attn_pattern_csv")


def rotary_note(config) -> str:
    """For a rotary model: q and k as shown already carry their positions."""
    return (" Here q and k are taken *after* the rotary position embedding: each was rotated by an angle "
            "proportional to its position, as the model uses them, so q·k depends on how far apart they are."
            if config.positional == "rotary" else "")


@ui.fragment
def stages_section(v, T: int, labels: list[str]) -> None:
    tr, layer, head, config = v.trace, v.layer, v.head, v.model.config
    hs, cap = config.d_head, config.attn_softcap
    st.subheader(f"From scores to weights, step by step: {head_title(v, layer, head)}")
    ui.explain(
        f"The weights come from **softmax(mask({'cap(' if cap else ''}q·kᵀ · scale{')' if cap else ''}))**, here "
        f"with d_head = {hs}:\n\n"
        f"1. raw scores q·kᵀ: this head's queries q ({T}, {hs}) times its keys kᵀ ({hs}, {T}) give a "
        f"({T}, {T}) matrix: how well each query matches each key{rotary_note(config)};\n"
        f"2. scaled: × {config.scale:.4g}" + (f" = 1/√{hs}" if abs(config.scale - hs ** -0.5) < 1e-9 else
                                              f" (this model's own scale, not 1/√{hs} = {hs ** -0.5:.4g})")
        + ", so the softmax is not too peaked when d_head is large;\n"
        + (f"3. soft-capped: tanh(s / {cap:g}) · {cap:g}, which keeps every score between −{cap:g} and {cap:g} "
           "(nearly unchanged for small scores, flattened for large ones);\n" if cap else "")
        + f"{3 + bool(cap)}. masked: scores of future keys (j > i) become -∞ (blank), so they get weight 0"
        + (f"; in this local layer so do keys more than {tr.window(layer) - 1} tokens back, j ≤ i − "
           f"{tr.window(layer)} (orange);\n" if tr.window(layer) else ";\n")
        + f"{4 + bool(cap)}. softmax along each row: e^s / Σ e^s, weights in 0..1 that sum to 1 over keys 0..i.\n\n"
        f"Each panel has its own colour scale and shows a (w, w) window of the ({T}, {T}) matrices, w ≤ "
        f"{STAGE_SIZES[-1]}. The window shows queries and keys in the same range; the softmax "
        f"runs over all keys 0..i, so if the window does not start at 0 its rows sum to less than 1."
        + ui.window_note(tr.model.config, layer)
    )
    c1, c2 = st.columns(2)
    sizes = sorted({s for s in STAGE_SIZES if s < T} | {min(T, STAGE_SIZES[-1])})
    state = st.session_state
    if state.get("attn_stage_size") not in sizes:
        state["attn_stage_size"] = sizes[-1]
    if len(sizes) > 1:
        c1.select_slider("Window size (tokens)", sizes, key="attn_stage_size")
    size = state["attn_stage_size"]
    start = ui.clamp_state("attn_stage_start", 0, T - size, 0)
    if T > size:
        c2.slider("Window start", 0, T - size, key="attn_stage_start")
    stages = heads.stage_window(tr, layer, head, start, start + size)
    ui.chart(plots.stages_figure(stages, tr.tokens, start, window=tr.window(layer)), key="attn_stages",
        filename=f"attention_stages_L{layer}H{head}")
    frames = {name: ui.matrix_frame(z, labels[start:start + size], labels[start:start + size], "query")
              for name, z in stages.items()}
    ui.download_csv(pd.concat(frames, names=["stage"]), f"attention_stages_L{layer}H{head}", key="attn_stages_csv")


@ui.fragment
def query_section(v, T: int, labels: list[str]) -> None:
    tr, layer, head = v.trace, v.layer, v.head
    hs = tr.model.config.d_head
    st.subheader(f"One query, in detail: {head_title(v, layer, head)}")
    pos = ui.position_input("Query position", tr.tokens, "Which token's attention to take apart.", slider=True,
                            what="The query:")
    b = heads.query_breakdown(tr, layer, head, pos)
    kv = tr.kv_head(head)
    gqa = (f" (this model shares key/value heads: query head {head} reads key/value head {kv})"
           if tr.model.config.n_rep > 1 else "")
    sliding = tr.window(layer)
    seen = (f" (this layer is local: only j = {max(0, pos - sliding + 1)}..{pos}, the last {sliding} tokens, get "
            f"any weight; the older keys are masked, shaded orange)" if sliding and pos >= sliding else "")
    ui.explain(
        f"Token {labels[pos]} asks a question with its query **q** ({hs} numbers). It is compared with the key "
        f"**k_j** of every token j = 0..{pos} (a ({pos + 1}, {hs}) matrix){gqa}{seen}: score_j = q·k_j / √{hs}. "
        f"The softmax of the scores gives the weights a_j (the bars, they sum to 1). The context vector is the "
        f"weighted sum of the values: **z = Σ_j a_j v_j**, {hs} numbers, this head's output for the token "
        f"before the output projection. The last panel shows each a_j·v_j row and their sum z, which is "
        f"exactly the model's own context vector (trace.z).{rotary_note(tr.model.config)}"
    )
    if len(b.shown) < len(b.weights):
        which = (f"the {len(b.shown)} keys inside this layer's window (the older ones have weight 0)"
                 if sliding and len(b.shown) == sliding else f"the {len(b.shown)} keys with the largest weights")
        st.caption(f"{pos + 1} keys: the vector panels show {which}; the other {len(b.weights) - len(b.shown)} are "
                   "summed into one row.")
    left, right = st.columns(2)
    with left:
        ui.chart(plots.query_vectors_figure(b, tr.tokens), key="attn_query_vectors")
    with right:
        ui.chart(plots.weighted_sum_figure(b, tr.tokens), key="attn_weighted_sum")
    ui.chart(plots.weights_figure(b, tr.tokens, window=sliding), key="attn_weights",
        filename=f"attention_query{pos}_L{layer}H{head}")
    z_model = heads.context_vector(tr, layer, head, pos)
    st.metric("largest |Σ a_j·v_j − model's z|", f"{np.abs(b.z - z_model).max():.2e}",
              help="The weighted sum rebuilt here against the context vector of the model's forward pass.")
    frame = pd.DataFrame({"key": labels[: pos + 1], "raw score": b.raw, "scaled score": b.scaled, "weight": b.weights})
    ui.download_csv(frame.set_index("key"), f"attention_query_{pos}_L{layer}H{head}", key="attn_query_csv")
    shown = [labels[j] for j in b.shown]
    vectors = np.vstack([b.q[None], b.keys, b.values, b.weighted, b.rest[None], b.z[None]])
    index = ([f"q[{labels[pos]}]"] + [f"k[{lab}]" for lab in shown] + [f"v[{lab}]" for lab in shown]
             + [f"a·v[{lab}]" for lab in shown] + ["a·v of the other keys", "z"])
    ui.download_csv(pd.DataFrame(vectors, index=pd.Index(index, name="vector")), f"attention_query_{pos}_vectors",
                    key="attn_vectors_csv")


@ui.fragment
def lines_section(v, T: int, labels: list[str]) -> None:
    tr, layer, head = v.trace, v.layer, v.head
    st.subheader(f"Who looks at whom (lines): {head_title(v, layer, head)}")
    ui.explain(
        "The same weights drawn as lines, as in bertviz: each token on the left (as a query) is joined to the "
        "tokens on the right (as keys) it attends to; thicker, darker lines carry more weight (weights under "
        "0.01 are not drawn). The lines of the query picked above are orange. It draws a "
        f"({min(plots.MAX_LINES_TOKENS, T)}, {min(plots.MAX_LINES_TOKENS, T)}) block of the ({T}, {T}) pattern: "
        f"at most {plots.MAX_LINES_TOKENS} tokens, so the lines stay readable."
    )
    size = min(plots.MAX_LINES_TOKENS, T)
    pos = ui.position(T)
    if T > size:
        start = ui.clamp_state("attn_lines_start", 0, T - size, max(0, min(pos - size // 2, T - size)))
        st.slider(f"Window start (at most {size} tokens are drawn)", 0, T - size, key="attn_lines_start")
        st.caption(f"Tokens {start}–{start + size - 1} of {T}: lines to keys outside the window are not drawn.")
    else:
        start = 0
    pattern = heads.pattern_window(tr, layer, head, start, start + size, start)
    ui.chart(plots.lines_figure(pattern, tr.tokens, start, highlight=pos), key="attn_lines",
        filename=f"attention_lines_L{layer}H{head}")
    window = labels[start : start + size]
    ui.download_csv(ui.matrix_frame(pattern, window, window, "query"), f"attention_lines_L{layer}H{head}_{start}",
                    key="attn_lines_csv")


def overview_section(v, T: int, labels: list[str]) -> None:
    tr, config = v.trace, v.model.config
    L, nh = tr.n_layer, tr.n_head
    st.subheader(f"All {L * nh} heads at once")
    with st.spinner(f"Computing the patterns of all {L * nh} heads…"):
        stats = ui.derived(v.shown, heads.head_stats)
    n = stats.tiles.shape[-1]
    sampled = len(stats.positions) < T
    ui.explain(
        f"Every head of every layer ({L} layers × {nh} heads) as a small picture of its pattern: each tile is "
        f"the ({T}, {T}) pattern shrunk to {n}×{n} by averaging blocks of it, scaled to its own maximum. "
        f"Diagonal lines = attending to itself or the previous tokens; a dark left column = attending to the "
        f"first token (an \"attention sink\"). **Click a tile** (or use the boxes) to focus on that head."
        + (f" For this long prompt the tiles average {len(stats.positions)} evenly spaced query rows."
           if sampled else "")
        + (" Local layers are marked *local* (an orange band above their column): their tiles show the window "
           "as a band along the diagonal once the prompt is longer than it." if config.has_sliding_layers else "")
        + ui.window_note(config)
    )
    windows = [config.window(layer) for layer in range(L)]
    fig = plots.overview_figure(stats.tiles, (v.layer, v.head), stats.entropy, "mean entropy (bits)", windows)
    ui.chart(fig, key=OVERVIEW_KEY, on_select=lambda: on_overview_select(L, nh), selection_mode="points")
    left, right = st.columns([1, 2])
    with left:
        state = st.session_state
        state["attn_pick_layer"], state["attn_pick_head"] = v.layer, v.head
        st.selectbox("Layer", list(range(L)), format_func=lambda l: f"L{l}", key="attn_pick_layer", on_change=on_pick)
        st.selectbox("Head", list(range(nh)), key="attn_pick_head", on_change=on_pick,
                     format_func=lambda h: f"H{h}" + (" (knocked out)" if v.knocked_out(v.layer, h) else ""))
    with right:
        st.markdown("**Attention entropy per head**")
        st.caption(
            "H = −Σ_j a_j log₂ a_j of each query row, averaged over "
            + (f"{len(stats.positions)} evenly spaced query positions" if sampled else "all query positions")
            + ". 0 bits = all weight on one token; log₂(i+1) bits = spread evenly over the i+1 tokens it can see"
            + (f" (in a local layer at most log₂({config.sliding_window}) = {np.log2(config.sliding_window):.1f} "
               f"bits: it sees {config.sliding_window} tokens at most)" if config.has_sliding_layers else "")
            + ". Lower = more focused."
        )
        ui.chart(layer_head_heatmap(stats.entropy, "", "bits", colorscale="Viridis_r", zmin=0.0,
                                    focus=(v.layer, v.head), windows=windows), key="attn_entropy")
        frame = pd.DataFrame(stats.entropy, index=pd.Index([f"L{l}" for l in range(L)], name="layer"),
                             columns=[f"H{h}" for h in range(nh)])
        ui.download_csv(frame, "attention_entropy", key="attn_entropy_csv")
    tiles = stats.tiles.reshape(L * nh, n * n)
    index = pd.MultiIndex.from_product([range(L), range(nh)], names=["layer", "head"])
    ui.download_csv(pd.DataFrame(tiles, index=index), "attention_overview_tiles", key="attn_tiles_csv")


SECTIONS = {"Pattern": pattern_section, "Step by step": stages_section, "One query": query_section,
            "Lines": lines_section, "All heads": overview_section}


def main() -> None:
    st.title("Attention")
    st.write("Which earlier tokens does each token look at, and how does one head compute that?")
    ui.link("why", "Which heads matter for the prediction? Why this token?")
    v = ui.view()
    T = v.trace.n_tokens
    labels = token_labels(v.trace.tokens)
    for name, tab in ui.sections("attention"):
        with tab:
            SECTIONS[name](v, T, labels)


main()
