"""Compare heads: patterns of heads from different layers side by side, their similarity, their roles."""
import numpy as np
import pandas as pd
import streamlit as st

from gptviz import ui
from gptviz.analysis import heads
from gptviz.labels import parse_components
from gptviz.plots import heads as plots
from gptviz.plots.attribution import component_pick

MAX_HEADS = 8
PICK_KEY = "cmp_heads"


def head_similarity(tr) -> np.ndarray:
    """(L·nh, L·nh) mean Jensen–Shannon divergence between every two heads' patterns."""
    return heads.js_divergence_matrix(heads.head_stats(tr).js_rows)


def default_heads(n_layer: int, n_head: int) -> list[tuple[int, int]]:
    """Four heads spread over the layers (and over the heads)."""
    layers = np.unique(np.linspace(0, n_layer - 1, min(4, n_layer)).round().astype(int))
    return [(int(l), (i * n_head) // len(layers)) for i, l in enumerate(layers)]


def on_map_click(key: str, config) -> None:
    """A click on a score map's cell: that head joins the compared heads (or leaves them)."""
    for point in (st.session_state.get(key) or {}).get("selection", {}).get("points", []):
        picked = component_pick(point, config.n_layer, config.n_head)
        if picked is not None and picked[1] != "mlp":
            ui.toggle_component(PICK_KEY, picked, config, mlps=False)
            return


def score_table(maps: dict[str, np.ndarray], n_layer: int, n_head: int) -> pd.DataFrame:
    index = pd.MultiIndex.from_product([range(n_layer), range(n_head)], names=["layer", "head"])
    return pd.DataFrame({name: values.reshape(-1) for name, values in maps.items()}, index=index)


def compare_section(v, T: int) -> None:
    tr, config = v.trace, v.model.config
    st.subheader("Heads side by side")
    ui.explain(
        f"Each panel is one head's ({T}, {T}) attention pattern (rows: query tokens, columns: the key tokens "
        f"they attend to; future keys blank), all on the same colour scale 0..1 so the panels compare directly. "
        f"Heads in early layers often look at the previous token or at themselves; later ones look further back."
        + ui.window_note(tr.model.config)
    )
    pairs = ui.components_input(f"Heads to compare (up to {MAX_HEADS})", PICK_KEY, config, mlps=False,
                                limit=MAX_HEADS, help="L3H2 = layer 3, head 2; names separated by commas. Or click "
                                                      "a cell of a score map below to add or remove that head.")
    if not pairs:
        st.info("Name at least one head to compare, e.g. L0H1.")
        return
    chosen = [plots.head_label(l, h) + (" (knocked out)" if v.knocked_out(l, h) else "") for l, h in pairs]
    gamma = 0.3 if st.toggle("Boost faint weights (colour ∝ weight^0.3)", key="cmp_boost") else 1.0
    pooled = [ui.derived(v.shown, heads.pooled_pattern, l, h, plots.MAX_COMPARE_CELLS) for l, h in pairs]
    windows = [tr.window(l) for l, _ in pairs]
    edges = pooled[0][1]
    if T > plots.MAX_COMPARE_CELLS:
        st.caption(f"{T:,} tokens: each pattern is shown in {len(edges) - 1}×{len(edges) - 1} blocks of up to "
                   f"{int(np.diff(edges).max())} tokens, each showing its largest weight (max-pooled).")
        fig = plots.compare_patterns_figure([p for p, _ in pooled], chosen, tr.tokens, edges, gamma=gamma,
                                            windows=windows)
    else:
        fig = plots.compare_patterns_figure([np.nan_to_num(p) for p, _ in pooled], chosen, tr.tokens, gamma=gamma,
                                            windows=windows)
    ui.chart(fig, key="cmp_patterns")
    index = pd.MultiIndex.from_product([chosen, edges[:-1], edges[:-1]], names=["head", "query from", "key from"])
    frame = pd.DataFrame({"weight": np.stack([p for p, _ in pooled]).reshape(-1)}, index=index)
    ui.download_csv(frame, "compared_patterns", key="cmp_patterns_csv")


def similarity_section(v, stats: heads.HeadStats) -> None:
    L, nh = stats.n_layer, stats.n_head
    N = L * nh
    st.subheader(f"How similar are the heads? ({N} × {N})")
    with st.spinner(f"Comparing {N} heads pairwise…"):
        js = ui.derived(v.shown, head_similarity)
    R, T = len(stats.js_positions), v.trace.n_tokens
    cells = stats.js_rows.shape[-1]
    ui.explain(
        f"For two heads, each query row of their patterns is a probability distribution over the keys. The "
        f"**Jensen–Shannon divergence** JS(P, Q) = H((P+Q)/2) − (H(P) + H(Q))/2 (H = entropy in bits) is 0 when "
        f"the rows are equal and 1 bit when they share no key. Each cell is the mean JS over query rows: "
        f"bright = heads that attend alike. Heads are ordered L0H0, L0H1, …, so blocks on the diagonal are layers."
        f"\n\nComputed on {R} query rows"
        + (f" evenly spaced over 1..{T - 1}" if R < T - 1 else " (every position after the first)")
        + f". Rows with more than {cells} keys are compared on {cells} cells: the first token, the "
        f"{heads.JS_NEAR} tokens nearest the query, and the rest in {heads.JS_FAR} blocks (grouping keys can only "
        f"lower the divergence)."
    )
    if R == 0:
        st.info("A one-token prompt has no choice to compare: every head puts all its weight on the token itself.")
        return
    ui.chart(plots.similarity_figure(js, L, nh), key="cmp_similarity")
    labels = plots.head_labels(L, nh)
    ui.download_csv(pd.DataFrame(js, index=pd.Index(labels, name="head"), columns=labels), "head_similarity_js",
                    key="cmp_similarity_csv")


def scores_section(v, stats: heads.HeadStats) -> None:
    L, nh = stats.n_layer, stats.n_head
    T = v.trace.n_tokens
    st.subheader("What each head does: scores")
    max_period = max(1, min(100, (v.model.config.n_ctx - 1) // 2))
    c1, c2 = st.columns(2)
    ui.clamp_state("cmp_period", 1, max_period, min(30, max_period))
    period = c1.slider("Induction: random tokens R", 1, max_period, key="cmp_period")
    seed = c2.number_input("Induction: random seed", 0, 2**31 - 1, step=1, key="cmp_seed")
    with st.spinner("Running the model on a repeated random sequence…"):
        induction, ids = ui.of_model(v.model_name, v.model, heads.induction_experiment, int(period), int(seed))
    sampled = len(stats.positions) < T
    over = (f"{len(stats.positions)} evenly spaced query positions" if sampled else "all query positions")
    config = v.model.config
    window_note = (f" In a local layer only the queries i < {config.sliding_window} still see position 0; the "
                   "others do not count." if config.has_sliding_layers else "")
    ui.explain(
        f"Each map shows one number per head (rows: layers, columns: heads), averaged over {over} of your prompt:\n\n"
        + "\n".join("- " + score.explanation.format(period=period, length=2 * period + 1, seed=seed,
                                                     window_note=window_note) for score in heads.HEAD_SCORES)
        + "\n\n**Click a cell** to add that head to the heads compared side by side (they are ringed); a second "
        "click takes it out."
        + ui.window_note(config)
    )
    focus = (v.layer, v.head)
    compared = [c for c in parse_components(str(st.session_state.get(PICK_KEY, "")), L, nh) if c[1] != "mlp"]
    windows = [config.window(layer) for layer in range(L)]
    maps = {score.key: induction if score.rows is None else stats.scores[score.key] for score in heads.HEAD_SCORES}
    columns = st.columns(2)
    for i, score in enumerate(heads.HEAD_SCORES):
        with columns[i % 2]:
            if np.isnan(maps[score.key]).all():
                st.markdown(f"**{score.name}**")
                st.info(f"No head has a {score.name} score: {score.undefined}.")
                continue
            key = f"cmp_score_{i}"
            ui.chart(plots.layer_head_heatmap(maps[score.key], score.name, score.unit, colorscale=score.colorscale,
                                              zmin=score.zmin, zmax=score.zmax, focus=focus, windows=windows,
                                              clickable=True, marked=compared),
                     key=key, filename=f"head_scores_{score.key}", selection_mode="points",
                     on_select=lambda key=key: on_map_click(key, config))
    table = score_table({score.name: maps[score.key] for score in heads.HEAD_SCORES}, L, nh)
    tops = [f"{score.name} {plots.head_label(*table[score.name].idxmax())} ({table[score.name].max():.2f})"
            for score in heads.HEAD_SCORES if score.rank_highest and table[score.name].notna().any()]
    st.caption("Highest per score: " + ", ".join(tops))
    ui.download_csv(table, "head_scores", key="cmp_scores_csv")


def stats_of(v) -> heads.HeadStats:
    with st.spinner(f"Computing the patterns of all {v.trace.n_layer * v.trace.n_head} heads…"):
        return ui.derived(v.shown, heads.head_stats)


SECTIONS = {"Side by side": lambda v: compare_section(v, v.trace.n_tokens),
            "Similarity": lambda v: similarity_section(v, stats_of(v)),
            "Scores": lambda v: scores_section(v, stats_of(v))}


def main() -> None:
    st.title("Compare heads")
    st.write("Do heads in different layers attend differently, which ones behave alike, and what role does each play?")
    v = ui.view()
    if st.session_state.get(PICK_KEY) is None:  # before any tab: a map click adds to these
        ui.set_components(PICK_KEY, default_heads(v.model.config.n_layer, v.model.config.n_head))
    for name, tab in ui.sections("compare_heads"):
        with tab:
            SECTIONS[name](v)


main()
