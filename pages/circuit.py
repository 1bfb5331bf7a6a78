"""Circuit: which edges between heads and MLPs carry the prediction, and how much of it they carry alone."""
import streamlit as st

from gptviz import ui
from gptviz.analysis import attribution as at
from gptviz.analysis import circuit as cc
from gptviz.analysis.composition import composition_scores
from gptviz.labels import MLP, component_label, parse_component, parse_components
from gptviz.plots import circuit as plots
from gptviz.plots.common import picked_customdata
from gptviz.ui import question, settings

SOURCES = {"corrupted": "the corrupted prompt", "mean": "each sender's mean over the positions", "zero": "zero"}
METHODS = {"ig": "Integrated gradients", "eap": "Edge attribution patching"}
SIZES = (5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000)
SPLIT_MAX_T = 24  # nodes split by position for prompts up to this many tokens
FILE_SETTINGS = ("prompt", "allow_special", "corrupt", "why_target", "why_target_pick", "why_contrast",
                 "why_contrast_pick", "position", "circuit_source", "circuit_method", "circuit_steps",
                 "circuit_converge", "circuit_n", "circuit_split")
KNOCKOUT_KEY = "knockout"
GRAPH_KEY = "circuit_graph"


# ---- the question: source and method ------------------------------------------------------------------
def source_section(v, tr, metric):
    """The source a cut edge reads: the corrupted prompt's run (shared with Why this token?), "mean" or "zero";
    None while the corrupted prompt is missing or unusable."""
    st.radio("A cut edge reads", list(SOURCES), key="circuit_source", format_func=SOURCES.get, horizontal=True,
             help="What a receiver reads instead of a sender's output when their edge is cut. The corrupted "
                  "prompt (a name swap) asks which edges carry the difference between the two prompts; the mean "
                  "and zero ask which edges carry anything at all.")
    state = st.session_state
    choice = state.get("circuit_source", "corrupted")
    if choice != "corrupted":
        return choice
    prompt, suggested = state.get("prompt", ""), state.get("_circuit_suggested")
    if suggested is not None and state.get("corrupt") == suggested[1] and suggested[0] != prompt:
        state["corrupt"], suggested = "", None  # our suggestion for an earlier prompt, never edited: redo it
    if not str(state.get("corrupt", "")).strip():  # a first visit: a graph at once, saying which question
        swapped = at.name_swap(prompt) if suggested is None else None
        if swapped is None:
            st.info("No corrupted prompt yet (and no two names in the prompt to swap): the graph below is for the "
                    "**mean** source, which asks which edges carry the prediction at all. Type a corrupted prompt "
                    "to ask which carry a difference.")
            question.corrupted_run(v, tr, metric)
            return "mean"
        state["corrupt"], state["_circuit_suggested"] = swapped, (prompt, swapped)
    if state.get("_circuit_suggested") == (prompt, state.get("corrupt")):  # still our suggestion: say so
        st.info(f"Shown: the prompt against a **name swap** suggested for you, “{state['corrupt']}”. Edit the "
                "corrupted prompt below, or pick the mean or zero source.")
    return question.corrupted_run(v, tr, metric)


def split_setting(T: int) -> bool:
    """Whether nodes are split by position (prompts of up to SPLIT_MAX_T tokens)."""
    if T > SPLIT_MAX_T:
        st.caption(f"Nodes can be split by position for prompts of up to {SPLIT_MAX_T} tokens (this one has {T}).")
        return False
    st.toggle("Split nodes by position", key="circuit_split",
              help="An edge then joins a sender and a receiver at one position (the residual stream of each position "
                   "is its own sum); heads move information between positions, shown as faint lines from where "
                   "they read keys and values to where they write.")
    return bool(st.session_state.get("circuit_split"))


def method_setting() -> tuple[str, int, bool]:
    """(method, steps, converge): converge raises integrated gradients' steps until the scores add up."""
    left, right = st.columns([3, 1])
    left.radio("Edge scores", list(METHODS), key="circuit_method", format_func=METHODS.get, horizontal=True,
               help="Integrated gradients: the gradient averaged along the way from the clean run to the source "
                    "(N forward and backward passes), closer to what cutting an edge really does. Edge attribution "
                    "patching: the first-order estimate from one forward and one backward pass; cheaper, and wrong "
                    "where an edge is far from linear (on SmolLM2, embed → L0 MLP even gets the wrong sign).")
    method = st.session_state.get("circuit_method", "ig")
    if method == "ig":
        right.number_input("Steps", min_value=1, max_value=cc.CONVERGE_MAX_STEPS, key="circuit_steps",
                           help="Forward and backward passes along the path (midpoints).")
        right.checkbox("Converge", key="circuit_converge",
                       help=f"Double the steps until the scores add up to the whole change within "
                            f"{cc.CONVERGE_TOLERANCE:.0%} (at most {cc.CONVERGE_MAX_STEPS} steps).")
        return method, int(st.session_state.get("circuit_steps", 5)), bool(st.session_state.get("circuit_converge"))
    return method, 1, False


def completeness_note(scores: cc.EdgeScores) -> None:
    """How close the scores come to adding up to the whole change (integrated gradients), and the steps used."""
    if scores.method != "ig":
        return
    change = scores.source - scores.clean
    off = scores.completeness_error
    st.caption(f"Integrated gradients with **{scores.steps} steps**: the scores add up to {scores.total:+.2f} "
               f"against a whole change of {change:+.2f} ({off:.0%} off). "
               + ("Within 2%: converged." if off <= cc.CONVERGE_TOLERANCE else
                  "A few steps approximate the path's integral; tick **Converge** for more steps until they add "
                  "up within 2%."))


def explain_scores(scores: cc.EdgeScores, source_name: str) -> None:
    g = scores.graph
    ui.explain(
        f"The residual stream is a **sum** of what every **sender** wrote: the embeddings, each of the "
        f"{g.n_layer} × {g.n_head} heads (z_h · W_O[h]) and each MLP. Every **receiver** reads that sum: each "
        f"head's query, key and value inputs apart"
        + (f" (keys and values belong to the {g.n_kv_head} key/value heads per layer that query heads share)"
           if g.grouped else "")
        + f", each MLP's input, and the logits. An **edge** is one sender → one receiver: this model has "
        f"{g.n_edges:,} of them.\n\n"
        f"**Cutting** an edge makes that one receiver read the sender's value from {source_name} instead; every "
        f"other receiver still reads the real one. The **score** of an edge estimates how the metric changes when "
        f"only that edge is cut: (source − clean output of the sender) · ∂metric/∂(receiver's input), summed over "
        f"positions and dimensions, from one forward and one backward pass through a run in which every receiver "
        f"has its own input"
        + (f" (integrated gradients: the gradient averaged over {scores.steps} points on the way from the clean "
           f"run to the source)" if scores.method == "ig" else "")
        + ". **Negative** (red): cutting the edge lowers the metric, so the edge carries the prediction. "
        f"\n\nThe **circuit** keeps the N edges of largest |score| and then drops every edge whose receiver no "
        f"kept path connects to the logits (it cannot change the output). Its **faithfulness** is measured by "
        f"running it: every edge outside the circuit cut at once,\n\n"
        f"faithfulness = (metric(circuit) − metric(source)) / (metric(clean) − metric(source))\n\n"
        f"1 = the circuit alone reproduces the model's prediction, 0 = no more than the source. The "
        f"**complement** (everything but the circuit) should then be near 0: what the circuit leaves out does not "
        f"carry it. Here metric(clean) = {scores.clean:.3f}, metric(source) = {scores.source:.3f}."
    )


# ---- the graph ------------------------------------------------------------------------------------------------
def on_node_click(config) -> None:
    """A click on a node: focus that head (an MLP: its layer) on every page, and offer it for the knock-out
    set. The position stays: it is the question this page asks."""
    for point in (st.session_state.get(GRAPH_KEY) or {}).get("selection", {}).get("points", []):
        data = picked_customdata(point)
        component = parse_component(str(data[0])) if data else None
        if component is not None:
            layer, what = component
            ui.focus(layer, None if what == MLP else what)
            st.session_state["_circuit_picked"] = str(data[0])
            return


def size_setting(n_edges: int) -> int:
    options = [n for n in SIZES if n < n_edges] + [n_edges]
    wanted = int(st.session_state.get("circuit_n", 100))
    st.session_state["circuit_n"] = max([n for n in options if n <= wanted] or options[:1])  # snapped to a step
    st.select_slider("Edges kept (N)", options=options, key="circuit_n",
                     help="The N edges of largest |score|; those that no kept path connects to the logits are then "
                          "dropped (they cannot change the output).")
    return int(st.session_state["circuit_n"])


def graph_section(v, tr, metric, source, scores: cc.EdgeScores, split: bool) -> None:
    config = v.model.config
    st.subheader("The circuit: the edges that carry the prediction")
    n = size_setting(int(scores.valid(split).sum()))
    keep = scores.circuit(n, split)
    frame = scores.frame(keep, split)
    point = ui.derived(v.plain, cc.faithfulness_curve, metric, source, scores, (n,), split,
                       progress="Running the circuit and its complement").iloc[0]
    c1, c2, c3 = st.columns(3)
    c1.metric("Edges in the circuit", f"{int(point.kept):,}", help=f"Of the top {n:,}, after dropping those that no "
              "kept path connects to the logits.")
    c2.metric("Faithfulness: the circuit alone", ui.percent(point.circuit),
              help=f"metric {point.circuit_metric:.3f} with every other edge cut.")
    c3.metric("The complement (all but the circuit)", ui.percent(point.complement),
              help=f"metric {point.complement_metric:.3f} with only the circuit's edges cut.")
    st.caption(f"The circuit alone reproduces {ui.percent(point.circuit)} of the gap between the clean prediction and "
               f"the source's; cutting just its {int(point.kept):,} edges leaves {ui.percent(point.complement)} of it.")
    fig = plots.circuit_graph(frame, config.n_layer, config.n_head, config.n_kv_head,
                              title=f"Top {n:,} edges ({int(point.kept):,} connected to the logits)"
                              + (" by position" if split else ""),
                              node_scores=cc.sender_totals(frame), tokens=tr.tokens if split else None)
    ui.chart(fig, key=GRAPH_KEY, filename=f"circuit_{n}_edges", on_select=lambda: on_node_click(config),
             selection_mode="points")
    st.caption("Lines: q solid, k dashed, v dotted; red edges carry the prediction, blue work against it; width by "
               "|score|. Node colour: the sum of its outgoing edges' scores. **Click a node** to focus that head on "
               "every page.")
    picked_section(config)
    ui.download_csv(frame.set_index(["sender", "receiver"]), f"circuit_{n}_edges", key="circuit_frame_csv")
    file_section(v, scores, keep, n)


def picked_section(config) -> None:
    """The node last clicked: focused everywhere; a button adds it to (or takes it out of) the knock-out set."""
    picked = st.session_state.get("_circuit_picked")
    component = parse_component(picked) if picked else None
    if component is None:
        return
    current = parse_components(str(st.session_state.get(KNOCKOUT_KEY, "")), config.n_layer, config.n_head)
    verb = "Take" if component in current else "Add"
    left, right = st.columns([2, 3])
    left.button(f"{verb} {picked} {'out of' if verb == 'Take' else 'to'} the knock-out set", key="circuit_knockout",
                on_click=ui.toggle_component, args=(KNOCKOUT_KEY, component, config), width="stretch")
    right.caption(f"{picked} is focused on every page (Attention, Compare heads, Inside a block). The knock-out set "
                  f"({', '.join(map(component_label, current)) if current else 'empty'}) is on Why this token?.")


# ---- the circuit as a file ------------------------------------------------------------------------------------
def open_circuit_file() -> None:
    upload = st.session_state.get("circuit_upload")
    if upload is None:
        return
    try:
        data = cc.read_circuit_json(upload.getvalue())
    except ValueError as err:
        st.session_state["_circuit_file_error"] = str(err)
        return
    for key in FILE_SETTINGS:  # what the file does not name goes back to its default
        st.session_state.pop(key, None)
    skipped = settings.apply({k: v for k, v in data["settings"].items() if k in settings.BY_KEY})
    st.session_state["_circuit_opened"] = (upload.name, data["edges"], skipped)


def file_section(v, scores: cc.EdgeScores, keep, n: int) -> None:
    state = st.session_state
    if opened := state.pop("_circuit_opened", None):
        name, file_edges, skipped = opened
        own, foreign = cc.split_foreign(file_edges, scores.graph, v.plain_trace.n_tokens)
        edges = cc.edge_keys(own)
        if foreign:
            st.warning(f"{name} names {len(foreign):,} edges this model does not have (e.g. "
                       f"{', '.join(foreign[:3])}): it was made for another model or prompt; they are left out "
                       "of the comparison below.")
        mine = cc.edge_keys(scores.frame(keep, keep.dim() == 3))
        same = "the same" if edges == mine else f"not the same ({len(edges ^ mine)} edges differ: another model?)"
        st.success(f"Opened {name}: its settings are this view's; its {len(edges):,} edges and the graph are {same}."
                   + (f" Left out: {', '.join(skipped)}." if skipped else ""))
    if error := state.pop("_circuit_file_error", None):
        st.error(error)
    left, right = st.columns(2)
    values = {"model": v.model_name, **settings.current([k for k in FILE_SETTINGS if k in settings.BY_KEY])}
    left.download_button("Save this circuit (JSON)", cc.circuit_json(scores, keep, values),
                         file_name=f"circuit_{n}_edges.json", mime="application/json", key="circuit_json",
                         on_click="ignore", help="Its edges with their scores, and every setting that made it: open "
                                                 "the file here to get the same graph back.")
    right.file_uploader("Open a circuit file", type=["json"], key="circuit_upload", on_change=open_circuit_file)


# ---- faithfulness ------------------------------------------------------------------------------------------
def faithfulness_section(v, tr, metric, source, scores: cc.EdgeScores, split: bool) -> None:
    st.subheader("Faithfulness: how much of the prediction circuits of each size carry")
    n = int(st.session_state.get("circuit_n", 100))
    sizes = cc.curve_sizes(int(scores.valid(split).sum()))
    curve = ui.derived(v.plain, cc.faithfulness_curve, metric, source, scores, sizes, split,
                       progress="Running circuits of each size")
    chosen = ui.derived(v.plain, cc.faithfulness_curve, metric, source, scores, (n,), split)
    shown = curve if n in set(curve.n) else curve.merge(chosen, how="outer").sort_values("n")
    ui.chart(plots.faithfulness_curve(shown, n, title="The circuit alone, and everything but the circuit"),
             key="circuit_curve", filename="circuit_faithfulness")
    ui.explain(
        "Each point is a run: the circuit of the top n edges (pruned as on the graph) with every other edge cut "
        "(blue), and the model with only the circuit's edges cut (orange). 100% = the clean prediction, 0% = the "
        "source's. A circuit that explains the prediction reaches near 100% with few edges while its complement "
        "falls near 0%. Values beyond 100% or below 0% happen: a circuit can lack edges that held the "
        "prediction back."
    )
    st.dataframe(shown.rename(columns={"n": "top n", "kept": "edges kept"}), hide_index=True, key="circuit_curve_table",
                 column_config={c: st.column_config.NumberColumn(format="percent") for c in ("circuit", "complement")})
    ui.download_csv(shown.set_index("n"), "faithfulness_curve", key="circuit_curve_csv")


# ---- weights vs prompt --------------------------------------------------------------------------------------
def composition_section(v, tr, metric, source, scores: cc.EdgeScores, split: bool) -> None:
    st.subheader("Which connections the weights make possible, and which this prompt uses")
    with st.spinner("Reading every pair of heads' composition from the weights (once per model)…"):
        comp = ui.of_model(v.model_name, v.model, composition_scores)
    frame = ui.derived(v.plain, cc.weights_vs_prompt, scores, comp)
    ui.explain(
        "**Composition scores** (Elhage et al. 2021) read the weights alone, no prompt: how much of what an earlier "
        "head writes (its OV matrix W_V W_O) a later head can read through its query (Q-composition: ‖W_OV · "
        "W_QK‖ / (‖W_OV‖ ‖W_QK‖)), its key (K: with W_QKᵀ) or its value (V: with the later W_OV). The norms' "
        "gains are folded in; rotary, biases and the norms' scaling are not part of the weights' circuit. "
        f"Random matrices of these shapes score about {comp.baseline:.3f}. Each point is one head → head edge: "
        "across, what the weights allow; up, how much this prompt uses it (|edge score|)."
    )
    ui.chart(plots.composition_vs_usage(frame, title="Composition (weights) vs |edge score| (this prompt)",
                                        baseline=comp.baseline),
             key="circuit_composition", filename="composition_vs_usage")
    left, right = st.columns(2)
    with left:
        st.markdown("**Strongest composition** (weights)")
        st.dataframe(frame.nlargest(20, "composition"), hide_index=True, key="circuit_comp_top")
    with right:
        st.markdown("**Most used by this prompt**")
        st.dataframe(frame.sort_values("rank").head(20), hide_index=True, key="circuit_used_top")
    ui.download_csv(frame.set_index(["sender", "receiver", "input"]), "composition_vs_edge_scores",
                    key="circuit_comp_csv")
    focused_head_reads(v, scores, comp)


def focused_head_reads(v, scores: cc.EdgeScores, comp) -> None:
    """The head in focus (the sidebar's, or a clicked node): what it can read and what it reads here."""
    layer, head = v.layer, v.head
    label = component_label((layer, head))
    st.markdown(f"**The head in focus, {label}** (pick another in the sidebar or click a node on the graph)")
    if layer == 0:
        st.info("A head of layer 0 reads only the embeddings: no earlier head composes with it.")
        return
    allowed, used = cc.head_reads(scores, comp, layer, head)
    ui.chart(plots.head_reads_figure(allowed, used, label), key="circuit_head_reads",
             filename=f"composition_into_{label}")
    st.caption(f"Top: how much {label}'s query, key and value can read of what each earlier head writes, from the "
               f"weights. Bottom: this prompt's edges from those heads into the same inputs (red: they carry the "
               f"prediction)" + (f"; key and value inputs belong to {label}'s key/value head" if
                                 scores.graph.grouped else "") + ".")


# ---- the edge table ------------------------------------------------------------------------------------------
def edges_section(v, tr, metric, source, scores: cc.EdgeScores, split: bool) -> None:
    st.subheader("Every edge, by |score|")
    frame = scores.frame()
    st.caption(f"{len(frame):,} edges; the table shows the first 2,000, the CSV has them all. Sum of all scores "
               f"{scores.total:+.3f} (the whole change from clean to source: {scores.source - scores.clean:+.3f}"
               + ("; integrated gradients add up to it" if scores.method == "ig" else
                  "; edge attribution patching is a first-order estimate, so the two need not match") + ").")
    st.dataframe(frame.head(2000), hide_index=True, key="circuit_edges_table")
    ui.download_csv(frame.set_index(["sender", "receiver"]), "edge_scores", key="circuit_edges_csv")


def main() -> None:
    st.title("Circuit")
    st.write("Which connections between heads and MLPs carry the prediction, and how much of it do they carry alone?")
    v = ui.view(explains_plain=True)
    tr, metric = question.prediction(v)
    ui.link("why", "One component at a time: the same question on Why this token?")
    source = source_section(v, tr, metric)
    if source is None:
        return
    method, steps, converge = method_setting()
    split = split_setting(tr.n_tokens)
    if not question.allowed(tr.n_tokens, "the edge scores"):
        return
    scoring = f"Scoring all {cc.EdgeGraph.of(v.model.config).n_edges:,} edges"
    if converge:
        scores = ui.derived(v.plain, cc.converged_edge_scores, metric, source, steps, split, progress=scoring)
    else:
        scores = ui.derived(v.plain, cc.edge_scores, metric, source, method, steps, split, progress=scoring)
    completeness_note(scores)
    explain_scores(scores, SOURCES[source] if isinstance(source, str) else "the corrupted prompt's run")
    if abs(scores.gap) < 1e-3:
        st.warning("The clean run and the source give the same metric: there is nothing for a circuit to carry. "
                   f"Pick another source or target (metric {scores.clean:.3f} in both).")
        return
    for name, tab in ui.sections("circuit"):
        with tab:
            SECTIONS[name](v, tr, metric, source, scores, split)


SECTIONS = {"Graph": graph_section, "Faithfulness": faithfulness_section, "Weights vs prompt": composition_section,
            "Edges": edges_section}
main()
