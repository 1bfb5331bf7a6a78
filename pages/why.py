"""Why this token? Which heads and MLPs make the prediction, and what happens when they are knocked out."""
import numpy as np
import streamlit as st

from gptviz import ui
from gptviz.analysis import attribution as at
from gptviz.edits import ABLATIONS
from gptviz.labels import component_label, parse_components
from gptviz.plots import attribution as plots
from gptviz.plots.common import show_whitespace
from gptviz.ui import code, focus, question

TOP_NAMED = 5  # heads named under the ablation map
KNOCKOUT_KEY = "knockout"


def on_component_click(key: str, n_layer: int, n_head: int) -> None:
    """A click on a layer × head map: focus that head (a click on the MLP column: its layer)."""
    for point in (st.session_state.get(key) or {}).get("selection", {}).get("points", []):
        picked = plots.component_pick(point, n_layer, n_head)
        if picked is not None:
            layer, what = picked
            focus(layer, None if what == "mlp" else what)
            return


def on_map_click(key: str, n_rows: int, n_cols: int, first_layer_row: int, columns: str) -> None:
    """A click on a layer × position (or head) map: focus that layer and position (or head)."""
    for point in (st.session_state.get(key) or {}).get("selection", {}).get("points", []):
        picked = plots.map_pick(point, n_rows, n_cols)
        if picked is not None:
            row, col = picked
            layer = max(0, row - first_layer_row)
            focus(layer, col if columns == "head" else None, col if columns == "position" else None)
            return


# ---- direct logit attribution ----------------------------------------------------------------------------
def dla_section(v, tr, metric: at.Metric) -> None:
    config = v.model.config
    L, nh, C, hs = config.n_layer, config.n_head, config.d_model, config.d_head
    st.subheader("Direct logit attribution: what each head writes into the logit")
    what = "logit difference" if metric.contrast is not None else "logit"
    norm = "LayerNorm" if config.norm == "layernorm" else "RMSNorm"
    ui.explain(
        f"The residual stream at the last layer is a **sum**: the embeddings, plus what every attention layer "
        f"and every MLP added. Attention's output is itself a sum over heads: concat(z_0 … z_{nh - 1}) W_O = "
        f"Σ_h z_h W_O[h], with z_h ({hs},) a head's context vector at this position and W_O[h] its ({hs}, {C}) "
        f"slice of the output projection. The logit of a token t is final_norm(x) · W_U[t] (W_U: the "
        f"({config.vocab_size:,}, {C}) output head). The final {norm} divides x by a scale s computed from the "
        f"whole x; **holding s at its value for this position**"
        + (" (and centring each part, as LayerNorm centres the whole)" if config.norm == "layernorm" else "")
        + ", the norm is linear, so the logit splits exactly into one share per part:\n\n"
        "share(part) = (part · s · w_norm) · W_U[t]"
        + (" − the same for the contrast" if metric.contrast is not None else "")
        + (", plus the final norm's bias as its own part" if config.norm == "layernorm" else "")
        + ".\n\n"
        + ("Gemma-style norms after each sublayer are held at their scale too. " if config.post_norms else "")
        + f"The map shows the {L} × {nh} heads' shares, the column beside it the {L} MLPs'. Blue pushes the "
        f"{what} up, red down. *Direct* means only the path straight to the output: a head that acts through "
        f"later layers (moving information for them) shows up in the ablation map below, not here. "
        f"**Click a cell** to focus that head on every page (Attention, Compare heads)."
    )
    dla = ui.derived(v.plain, at.direct_logit_attribution, metric)
    key = "why_dla_map"
    fig = plots.component_map(dla.heads, dla.mlps, f"Direct share of the {what}", what, focus=(v.layer, v.head))
    ui.chart(fig, key=key, on_select=lambda: on_component_click(key, L, nh), selection_mode="points")
    parts = dla.by_layer()
    ui.chart(plots.layer_parts_figure({c: parts[c].to_numpy() for c in parts.columns}, list(parts.index), what),
             key="why_dla_layers")
    c1, c2, c3 = st.columns(3)
    c1.metric("Sum of all shares", f"{dla.total:.5f}")
    c2.metric(f"The model's {what}", f"{dla.logit:.5f}")
    c3.metric("Difference", f"{abs(dla.total - dla.logit):.1e}",
              help="The decomposition is exact: only float rounding separates the two.")
    if dla.cap_note:
        st.caption(dla.cap_note)
    other = [f"embeddings {dla.embed + (dla.pos_embed or 0):+.3f}"]
    if dla.attn_bias.any():
        other.append(f"attention biases {dla.attn_bias.sum():+.3f}")
    if dla.final_bias:
        other.append(f"final norm bias {dla.final_bias:+.3f}")
    st.caption("Parts outside the map: " + ", ".join(other) + ".")
    ui.download_csv(dla.parts_frame().set_index("part"), "direct_logit_attribution", key="why_dla_csv")


# ---- ablation -------------------------------------------------------------------------------------------------
def ablation_section(v, tr, metric: at.Metric) -> None:
    config = v.model.config
    L, nh, T = config.n_layer, config.n_head, tr.n_tokens
    st.subheader("Knock out each head: the ablation map")
    st.session_state["ablation"] = ui.ablation_setting()  # a bad value from a link: zero
    st.radio("Ablation", ABLATIONS, key="ablation", horizontal=True,
             format_func=lambda a: {"zero": "zero (output set to 0)", "mean": "mean (output set to its mean over "
                                                                             "the positions)"}[a],
             help="How a knocked-out head or MLP is replaced, here and in the knock-out set below.")
    ablation = ui.ablation_setting()
    ui.explain(
        f"Each cell is one rerun of the model with **one** head knocked out: its context vector z_h (shape "
        f"({T}, {config.d_head}): all positions) replaced by "
        + ("0" if ablation == "zero" else "its mean over the prompt's positions (in that same run)")
        + f" before the output projection. The value is metric(knocked out) − metric(plain run): red = the "
        f"head helped the prediction (knocking it out hurts), blue = it worked against it. The MLP column does "
        f"the same with each layer's MLP output ({T}, {config.d_model}).\n\n"
        f"That is {L * nh} heads + {L} MLPs = {L * (nh + 1)} reruns. None starts from scratch: each starts at "
        f"the knocked-out layer from the residual stream this page already has, and the {nh + 1} copies of "
        f"a layer and every later layer's copies run as one batch, so each weight is read once per block. "
        f"Unlike direct attribution, this counts every path, also through later layers."
    )
    if not question.allowed(T, "the ablation map"):
        return
    amap = ui.derived(v.plain, at.ablation_map, metric, ablation,
                      progress=f"Knocking out each of {L * nh} heads and {L} MLPs")
    what = f"Δ {metric.name}"
    chart_key = "why_ablation_map"
    fig = plots.component_map(amap.heads, amap.mlps, f"Change of the {metric.name} when one component is knocked out",
                              what, focus=(v.layer, v.head))
    ui.chart(fig, key=chart_key, on_select=lambda: on_component_click(chart_key, L, nh), selection_mode="points",
             filename=f"ablation_map_{ablation}")
    worst = amap.most_negative(TOP_NAMED)
    target = show_whitespace(v.model.tokenizer.token_strings([metric.target])[0])
    if worst:
        named = ", ".join(f"**L{l}H{h}** ({e:+.3f})" for l, h, e in worst)
        st.markdown(f"Knocking out these heads hurts {code(target)} most: {named}.")
    else:
        st.markdown(f"No single head's knock-out lowers the metric for {code(target)}.")
    mlp_order = np.argsort(amap.mlps)[:3]
    st.caption("MLPs whose knock-out hurts most: " + ", ".join(f"L{l} MLP ({amap.mlps[l]:+.3f})" for l in mlp_order)
               + f". Plain run's metric: {amap.base:.3f}.")
    ui.download_csv(amap.frame().set_index(["layer", "head"]), f"ablation_map_{ablation}", key="why_ablation_csv")

    if st.toggle("Compare with attribution patching (the gradient estimate)", key="why_gradient",
                 help="One forward and one backward pass estimate the whole map to first order."):
        gradient_section(v, metric, ablation, amap)


def gradient_section(v, metric: at.Metric, ablation: str, amap: at.EffectMap) -> None:
    """Attribution patching next to the exact ablation map, and how well they agree."""
    L, nh = v.model.config.n_layer, v.model.config.n_head
    what = f"Δ {metric.name}"
    with st.spinner("One forward and one backward pass…"):
        est = ui.derived(v.plain, at.ablation_map_gradient, metric, ablation)
    agree = at.agreement(amap, est)
    ui.explain(
        "**Attribution patching** estimates every cell at once: with a = a component's output and a' its "
        "knocked-out value, metric(a') − metric(a) ≈ (a' − a) · ∂metric/∂a, summed over positions and "
        "dimensions. One forward pass gives every a, one backward pass every gradient: about the cost of 3 "
        "forward passes instead of one rerun per component. It is a straight-line estimate, good for small "
        "changes and poor where knocking a component out changes a lot non-linearly (often the first "
        "layers' MLPs, which act as part of the embedding)."
    )
    c1, c2, c3 = st.columns(3)
    c1.metric("Correlation over heads", f"{agree['heads']:.2f}")
    c2.metric("Correlation over MLPs", f"{agree['mlps']:.2f}")
    c3.metric(f"Top-{agree['k']} harmful heads shared", f"{agree['top_overlap']:.0%}")
    left, right = st.columns(2)
    with left:
        ekey = "why_gradient_map"
        ui.chart(plots.component_map(est.heads, est.mlps, "Gradient estimate", what, focus=(v.layer, v.head)),
                 key=ekey, on_select=lambda: on_component_click(ekey, L, nh), selection_mode="points")
    with right:
        labels = [component_label((l, h)) for l in range(L) for h in range(nh)] + \
                 [component_label((l, "mlp")) for l in range(L)]
        ui.chart(plots.agreement_figure(np.concatenate([amap.heads.ravel(), amap.mlps]),
                                        np.concatenate([est.heads.ravel(), est.mlps]), labels, metric.name),
                 key="why_agreement")
    frame = amap.frame().merge(est.frame(), on=["layer", "head"]).set_index(["layer", "head"])
    ui.download_csv(frame, f"ablation_exact_vs_gradient_{ablation}", key="why_gradient_csv")


# ---- a knock-out set --------------------------------------------------------------------------------------------
def add_component(component, config) -> None:
    current = parse_components(str(st.session_state.get(KNOCKOUT_KEY, "")), config.n_layer, config.n_head)
    if component not in current:
        ui.set_components(KNOCKOUT_KEY, [*current, component])


def knockout_section(v, tr, metric: at.Metric) -> None:
    config = v.model.config
    st.subheader("Knock out a set: the prediction before and after")
    b1, b2, b3 = st.columns(3)
    b1.button(f"Knock out L{v.layer}H{v.head} (the head in focus)", key="why_add_head", width="stretch",
              on_click=add_component, args=((v.layer, v.head), config))
    b2.button(f"Knock out layer {v.layer}'s MLP", key="why_add_mlp", width="stretch",
              on_click=add_component, args=((v.layer, "mlp"), config))
    b3.button("Clear the set", key="why_clear", width="stretch", on_click=ui.set_components, args=(KNOCKOUT_KEY, []))
    current = ui.components_input("Knocked out", KNOCKOUT_KEY, config, mlps=True,
                                  help="Names separated by commas, each exactly one head or MLP (L1H5 is layer 1's "
                                       "head 5, nothing else): e.g. L23H3, L1H5, L0 MLP. Or click a map cell to focus "
                                       "a head and add it with the button.")
    ablation = ui.ablation_setting()
    ui.explain(
        f"Build a set of heads and MLPs by clicking (a map cell focuses a head, the buttons add the head or MLP in "
        f"focus) and see the next-token distribution after token {metric.position} with all of them knocked out at "
        f"once ({ablation} ablation, as chosen above), next to the plain run. **KL divergence** KL(before ‖ after) "
        f"= Σ_t p_t log(p_t / q_t) over all {config.vocab_size:,} tokens measures how far the whole distribution "
        f"moved (0 = not at all). The switch shows the knocked-out run on every page, and lives in the URL."
    )
    if not current:
        st.info("The set is empty: add heads or MLPs above.")
        return
    after = v.run_of(v.ids, (tuple(current), ablation)).trace
    frame, kl = at.compare_runs(tr, after, metric.position, n=10)
    before_value, after_value = at.metric_value(tr, metric), at.metric_value(after, metric)
    c1, c2, c3 = st.columns(3)
    c1.metric(f"{metric.name}, plain run", f"{before_value:.3f}")
    c2.metric(f"{metric.name}, knocked out", f"{after_value:.3f}", delta=f"{after_value - before_value:+.3f}")
    c3.metric("KL(before ‖ after), nats", f"{kl:.4f}")
    ui.chart(plots.compare_figure(frame["token"].tolist(), frame["before"].to_numpy(), frame["after"].to_numpy(),
                                  f"Next token after position {metric.position}: "
                                  f"{', '.join(map(component_label, current))} knocked out"), key="why_compare")
    st.dataframe(frame.assign(token=frame["token"].map(show_whitespace)), hide_index=True, key="why_compare_table")
    ui.download_csv(frame.set_index("token"), "knock_out_before_after", key="why_compare_csv")
    st.toggle("Show this knocked-out run on every page", key="knockout_view",
              help="Attention, Next token, Logit lens, … then show the run with this set knocked out.")


# ---- activation patching ------------------------------------------------------------------------------------------
def patching_section(v, tr, metric: at.Metric) -> None:
    config = v.model.config
    T, C, hs = tr.n_tokens, config.d_model, config.d_head
    st.subheader("Activation patching: where does the difference live?")
    ui.explain(
        f"Run a **corrupted** prompt that differs from yours in a detail (swap the two names: the model should "
        f"now expect the other one), then rerun it while copying **one** activation from your (clean) run. If "
        f"copying it brings the clean prediction back, that activation carries the information. Each cell "
        f"shows the fraction of the gap restored:\n\n"
        f"restored = (metric(patched) − metric(corrupted)) / (metric(clean) − metric(corrupted))\n\n"
        f"1 = the clean prediction is back, 0 = no change. Maps: the **residual stream** at (layer, position), "
        f"a ({C},) vector (row 'embed' is the input of block 0, row 'after Ll' the stream leaving block l); "
        f"each **head's z** ({T}, {hs}), all positions at once; the **attention output** and the **MLP output** "
        f"of one layer at one position ({C},). Both prompts must have the same number of tokens ({T} here), since "
        f"activations are copied position by position. **Click a cell** to focus its layer and head or position."
    )
    corrupted = question.corrupted_run(v, tr, metric)
    if corrupted is None:
        return
    if not question.allowed(T, "the patching maps"):
        return
    patching_maps(v, corrupted, metric)


def patching_maps(v, corrupted, metric: at.Metric) -> None:
    """One map per patching site (computed once per clean run, corrupted run and metric), clickable."""
    maps = {site: ui.derived(v.plain, at.patching_map, corrupted, metric, site,
                             progress=f"Patching: {info.title.lower()}") for site, info in at.PATCH_SITES.items()}
    for site, pmap in maps.items():
        info = at.PATCH_SITES[site]
        chart_key = f"why_patch_{site}"
        first_layer_row = 1 if site == "resid" else 0
        rows, cols = pmap.restored.shape
        ui.chart(plots.position_map(pmap.restored, pmap.rows, pmap.columns, f"{info.title}: fraction restored"),
                 key=chart_key, on_select=lambda k=chart_key, r=rows, c=cols, f=first_layer_row, w=info.columns:
                 on_map_click(k, r, c, f, w), selection_mode="points")
        best = np.unravel_index(np.nanargmax(pmap.restored), pmap.restored.shape)
        st.caption(f"Patched: {info.explanation}. Most restored: {pmap.rows[best[0]]}, {pmap.columns[best[1]]} "
                   f"({pmap.restored[best]:.0%}).")
        ui.download_csv(pmap.frame(), f"patching_{site}", key=f"why_patch_{site}_csv")


def main() -> None:
    st.title("Why this token?")
    st.write("Which heads and MLPs make the prediction, and what happens when you knock them out?")
    v = ui.view(explains_plain=True)
    tr, metric = question.prediction(v)
    ui.link("circuit", "How do these heads connect? The same question on Circuit")
    for name, tab in ui.sections("why"):
        with tab:
            SECTIONS[name](v, tr, metric)


SECTIONS = {"Direct attribution": dla_section, "Ablation map": ablation_section, "Knock out a set": knockout_section,
            "Patching": patching_section}
main()
