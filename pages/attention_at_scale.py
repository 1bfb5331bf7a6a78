"""Attention at scale: how time and memory of self-attention grow with the context length."""
from collections import OrderedDict

import pandas as pd
import streamlit as st

from gptviz import ui
from gptviz.analysis import scaling
from gptviz.plots import scale as plots

RUN_KEY = "_scale_run"  # (model name, sizes, budget) of the last "Measure" press
MAX_RUNS_KEPT = 16


@st.cache_resource
def measured_runs() -> OrderedDict:
    """Measured tables by (model name, sizes, budget), shared by every session: a run takes up to
    its budget. (Not st.cache_data: its element replay forbids updating the progress bar inside.)"""
    return OrderedDict()


def measure(run: tuple, model, progress) -> pd.DataFrame:
    runs = measured_runs()
    if run not in runs:
        runs[run] = scaling.measure_scaling(model, list(run[1]), run[2], progress)
        while len(runs) > MAX_RUNS_KEPT:
            runs.popitem(last=False)
    return runs[run]


def local_layers_note(config, analytic: pd.DataFrame) -> str:
    """How sliding-window layers change the count ("" for a model without them)."""
    if not config.has_sliding_layers:
        return ""
    w, L = config.sliding_window, config.n_layer
    n_local = config.layer_types.count("sliding")
    full = analytic.iloc[-1]
    return (
        f"\n\n**Local layers.** {n_local} of the {L} layers use a sliding window of w = {w:,} keys: a query there "
        f"reads at most {w:,} keys, so its attention is 4·T·min(T, {w:,})·d FLOPs, **linear in T** beyond T = {w:,} "
        f"(the dashed line). Over all {L} layers, attention at T = {config.n_ctx:,} is "
        f"{full['attention_flops_model']:.3g} FLOPs instead of {L * full['attention_flops_layer']:.3g} if every layer "
        f"were global. The saving needs a kernel that skips the blocks the mask hides (FlashAttention's sliding "
        f"window does); here PyTorch's kernel gets the window as a mask over the whole T × T grid (the measurement "
        f"below times a local layer too), and a materialised pattern is still nh·T²·4 bytes."
    )


def computed_section(v, sizes: list[int]) -> None:
    """What the model's shapes say: FLOPs and pattern memory against T, and where attention dominates."""
    config = v.model.config
    nh, hs, d, L = config.n_head, config.d_head, config.d_model, config.n_layer
    analytic = scaling.analytic_costs(config, sizes)
    crossover = scaling.crossover_length(config)
    per_token = scaling.rest_flops_per_token(config)
    full = analytic.iloc[-1]

    ui.explain(
        f"In every layer each of the T tokens compares its query with the keys of all tokens: the scores "
        f"q·kᵀ are an ({nh}, T, T) matrix ({nh} heads, q of shape ({nh}, T, {hs})), then softmax, then a "
        f"weighted sum of the values. Each of the two products is T²·{hs} multiply-adds (2·T²·{hs} FLOPs) per "
        f"head, so with {nh} heads **4·T²·nh·hs = 4·T²·{nh * hs:,}** FLOPs per layer: **O(T²·d)** (the attention "
        f"width nh·hs = {nh}·{hs}" + (f", not d_model = {d}" if nh * hs != d else " = d_model") + "). The projections "
        f"(q, k, v, output) and the MLP cost the same for every token, {per_token:,} FLOPs per token per layer "
        f"here: **O(T·d²)**. "
        f"So attention's share grows with T; they are equal at T = {per_token:,} / (4·{nh * hs:,}) ≈ "
        f"**{crossover:,.0f}** tokens for {v.model_name}"
        + (f" (its context is {config.n_ctx:,}, so within it attention never dominates by this count)."
           if crossover > config.n_ctx else f", inside its context of {config.n_ctx:,}.")
        + f"\n\nMemory: a pattern that is materialised holds {nh}·T²·4 bytes per layer: at T = {config.n_ctx:,} "
        f"that is {ui.fmt_bytes(full['pattern_bytes_layer'])} per layer and "
        f"{ui.fmt_bytes(full['pattern_bytes_model'])} "
        f"for all {L} layers. Fused kernels (FlashAttention, PyTorch's `scaled_dot_product_attention`) never "
        f"store the whole pattern: they compute it in tiles, so their memory grows like T, not T²."
        + local_layers_note(config, analytic)
    )
    st.subheader("Computed from the model's shapes")
    left, right = st.columns(2)
    with left:
        ui.chart(plots.flops_figure(analytic, crossover), key="flops_chart")
    with right:
        ui.chart(plots.memory_figure(analytic), key="memory_computed_chart")
    ui.download_csv(analytic.set_index("T"), "attention_costs_computed", key="analytic_csv")


def measured_section(v, sizes: list[int]) -> None:
    """Attention timed on this machine at each T, within a time budget, against the rest of the layer."""
    config = v.model.config
    nh = config.n_head
    crossover = scaling.crossover_length(config)
    st.subheader("Measured on this machine")
    st.write(
        f"For each T in {', '.join(f'{T:,}' for T in sizes)}: one layer's attention (random q, k, v of the "
        f"model's shapes) through the fused kernel the model uses and through the eager path that builds the "
        f"({nh}, T, T) pattern, the rest of one layer (the model's own norms, projections and MLP on a random "
        f"input), and a whole forward pass of random tokens. Each time is the best of a few runs. The eager path "
        f"is skipped where one layer's pattern would exceed {ui.fmt_bytes(scaling.MAX_EAGER_BYTES)} (it holds about "
        f"four such tensors at once)."
    )
    c1, c2 = st.columns([1, 3])
    budget = c1.number_input("Time budget (seconds)", 1, 600, step=5, key="scale_budget")
    c2.caption("Bigger T takes longer (the forward pass at the full context can take minutes on a laptop): the "
               "run stops before a size that would not fit the budget.")
    state = st.session_state
    if st.button("Measure", key="measure", type="primary"):
        state[RUN_KEY] = (v.model_name, tuple(sizes), float(budget))
        measured_runs().pop(state[RUN_KEY], None)  # a press measures afresh; reruns show the stored run
    run = state.get(RUN_KEY)
    if run is None or run[0] != v.model_name:
        st.info("Press **Measure** to time attention at each context length.")
        return
    bar = st.progress(0.0, text="Measuring…")

    def progress(done: int, total: int, message: str) -> None:
        bar.progress(min(1.0, done / max(total, 1)), text=message)

    frame = measure(run, v.model, progress)
    bar.empty()
    stopped = frame.attrs.get("stopped_before")
    measured_to = int(frame["T"].iloc[-1])
    if stopped is None:
        st.success(f"Measured every size up to T = {measured_to:,} in {frame.attrs['elapsed_s']:.1f} s "
                   f"({frame.attrs['threads']} CPU threads).")
    else:
        st.warning(f"Stopped at T = {measured_to:,}: the next size, T = {stopped:,}, would not fit the "
                   f"{run[2]:.0f} s budget ({frame.attrs['elapsed_s']:.1f} s used). Raise the budget to go further.")
    ui.chart(plots.time_figure(frame), key="time_chart")
    ui.chart(plots.memory_figure(frame), key="memory_chart")
    st.caption(
        "Measured: the four times (best of a few runs; other programs on this machine add noise), and the peak "
        "memory PyTorch held during one layer's attention (torch.profiler; it counts tensors of other threads "
        "running at the same moment too). Computed: the pattern bytes nh·T²·4 per layer and for all layers, and "
        "the FLOPs. The eager path keeps several (nh, T, T) tensors alive at once (scores, scaled, masked, "
        "softmax); the fused kernel works in tiles and holds little more than its output."
    )
    beyond = frame[frame["attention_fused_s"] > frame["rest_of_layer_s"]]
    if len(beyond):
        st.markdown(f"Measured: attention takes longer than the rest of the layer from **T = "
                    f"{int(beyond['T'].iloc[0]):,}** on (computed crossover by FLOPs: {crossover:,.0f}).")
    else:
        st.markdown(f"Measured: up to T = {measured_to:,} the rest of the layer takes longer than attention "
                    f"(computed crossover by FLOPs: {crossover:,.0f}).")
    if "attention_local_fused_s" in frame.columns:
        last = frame.iloc[-1]
        st.markdown(f"Measured at T = {int(last['T']):,}: a local layer's attention (window {config.sliding_window:,}) "
                    f"took {last['attention_local_fused_s'] / last['attention_fused_s']:.2f}× the time of a global "
                    f"layer's.")
    st.dataframe(frame, hide_index=True, key="scale_table")
    ui.download_csv(frame.set_index("T"), "attention_costs_measured", key="measured_csv")


def main() -> None:
    st.title("Attention at scale")
    st.write("How do the time and memory of self-attention grow as the context gets longer?")
    v = ui.view()
    sizes = scaling.context_sizes(v.model.config.n_ctx)
    computed_section(v, sizes)
    measured_section(v, sizes)


main()
