"""Inside a block: the norm, attention's output projection, the shortcut, the MLP, positions and
dropout, in the order data flows, with the loaded model's real shapes and numbers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from gptviz import features, ui
from gptviz.analysis import block, heads, positions
from gptviz.plots import block as plots
from gptviz.plots.common import show_whitespace
from gptviz.plots.embeddings import embedding_heatmap
from gptviz.plots.lens import position_labels

WINDOW = 64  # tokens drawn in the tokens × something views (a window around the chosen token)
DROPOUT_TOKENS = 24  # the dropout view shows the first tokens' pattern
OFFSET_GRID = 40  # positions a side in the rotary q·k grid
OFFSETS = 64  # offsets in the rotary score-by-offset curves
POSITIONS_DEFAULT = 128
MAX_POSITIONS = 512  # a (512, 768) table and a (512, 512) similarity: about 1.5 MB each in the browser


def window_of(T: int, position: int) -> tuple[int, int]:
    """The tokens [start, stop) the per-token views draw: all of them, or WINDOW around the chosen one."""
    if T <= WINDOW:
        return 0, T
    start = min(max(position - WINDOW // 2, 0), T - WINDOW)
    return start, start + WINDOW


def quoted(token: str) -> str:
    """A token for a figure title (no markdown there)."""
    return f"“{show_whitespace(token)}”"


def vectors_frame(rows: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(np.asarray(v, dtype=np.float64)) for name, v in rows.items()}).rename_axis(
        "dimension")


# ---- 1. the norm ------------------------------------------------------------------------------------
def norm_section(v: ui.View, position: int, start: int, stop: int) -> None:
    tr, layer, cfg = v.trace, v.layer, v.model.config
    st.subheader("1. The norm before attention" if cfg.pre_norms else "1. The norms after each sublayer",
                 anchor="norm")
    places = block.norm_places(tr)
    if st.session_state.get("norm") not in places:
        st.session_state["norm"] = "norm1"
    st.radio("Which norm of the block", list(places), key="norm", horizontal=True,
             format_func=lambda name: f"{name}: {places[name]}")
    which = st.session_state["norm"]
    steps = block.norm_steps(block.norm_module(tr, layer, which), block.norm_input(tr, layer, which, start, stop))
    row = position - start
    C, eps = cfg.d_model, steps.eps
    gain = "(1 + γ)" if steps.offset else "γ"
    ln = steps.centred
    ui.explain(
        f"Every block first rescales each token's vector: {features.norm_name(cfg)}, "
        f"**{features.norm_formula(cfg)}** over the C = {C} numbers of one token, with ε = {eps:g}. "
        + ("LayerNorm (the book's `LayerNorm`, GPT-2's ln_1) subtracts the vector's mean, divides by its standard "
           "deviation √(var + ε), then multiplies by a learned scale γ and adds a learned shift β (C numbers each). "
           if ln else
           "RMSNorm (Llama's, and this model's) is simpler than the book's LayerNorm: it does **not subtract the "
           "mean** and has **no shift β**; it divides by the root mean square √(mean(x²) + ε) and multiplies by "
           f"a learned scale {gain}. Cheaper, and in practice as good. ")
        + f"Each token is normalised on its own: the norm's input is ({stop - start}, {C}) here and its output the "
        "same shape. It keeps every block's input on one scale however large the residual stream grows: see the "
        "last chart of this section."
        + (" This model scales by (1 + γ): its checkpoint stores γ − 1." if steps.offset else "")
    )
    spread = "standard deviation" if ln else "root mean square"
    cols = st.columns(4)
    cols[0].metric("mean of x", f"{steps.mean[row]:.4g}", help="LayerNorm subtracts it; RMSNorm leaves it in.")
    cols[1].metric(f"{spread} √({'var' if ln else 'mean(x²)'} + ε)", f"{steps.denom[row]:.4g}")
    cols[2].metric("‖x‖ before → after", f"{np.linalg.norm(steps.x[row]):.4g} → {np.linalg.norm(steps.out[row]):.4g}")
    cols[3].metric("ε", f"{eps:g}")
    rows = {f"x: the input at token {position} ({C} numbers)": steps.x[row]}
    if ln:
        rows[f"x − mean (mean = {steps.mean[row]:.4g})"] = steps.x[row] - steps.mean[row]
    rows[f"x̂ = {'(x − mean)' if ln else 'x'} / {steps.denom[row]:.4g}: normalised"] = steps.normalized[row]
    rows[f"{gain}: the learned scale"] = steps.gain
    if steps.bias is not None:
        rows["β: the learned shift"] = steps.bias
    rows[f"output = x̂ · {gain}" + (" + β" if steps.bias is not None else "")] = steps.out[row]
    ui.chart(plots.vector_steps_figure(rows, title=f"{which} of layer {layer} on {quoted(tr.tokens[position])}"),
             key="block_norm_steps")
    ui.download_csv(vectors_frame(rows), f"norm_steps_L{layer}_{which}_pos{position}", key="block_norm_steps_csv")
    st.caption(f"Largest |output − the model's own {which}(x)| over these tokens: {steps.difference:.1e}")

    st.markdown(f"**Every token{'' if stop - start == tr.n_tokens else f' ({start}–{stop - 1})'}, before and after**")
    table = block.norm_table(steps, tr.tokens[start:stop], start)
    st.dataframe(table.assign(token=table["token"].map(show_whitespace)), hide_index=True, width="stretch",
                 height=min(400, 38 + 35 * len(table)))
    ui.download_csv(table.set_index("position"), f"norm_table_L{layer}_{which}", key="block_norm_table_csv")

    scale = block.norm_scale_by_layer(tr, position, start, stop)
    series = {f"‖x‖ at {show_whitespace(tr.tokens[position])}": scale["‖x‖ at the token"].to_numpy(),
              "‖norm1(x)‖ at it": scale["‖norm(x)‖ at the token"].to_numpy(),
              "median ‖x‖": scale["median ‖x‖"].to_numpy(), "median ‖norm1(x)‖": scale["median ‖norm(x)‖"].to_numpy()}
    ui.chart(plots.lines_figure(scale["residual stream"].tolist(), series, log_y=True, y_title="L2 norm (log scale)",
                                x_title="the residual stream entering each block (L0…), and the final one",
                                title="The residual stream grows with depth; the norm keeps each block's input "
                                      "on one scale"), key="block_norm_depth")
    ui.download_csv(scale.set_index("residual stream"), "norm_by_depth", key="block_norm_depth_csv")


# ---- 2. attention's output ----------------------------------------------------------------------------
def attention_section(v: ui.View, position: int, start: int, stop: int) -> None:
    tr, layer, cfg = v.trace, v.layer, v.model.config
    C, nh, n_kv, hs = cfg.d_model, cfg.n_head, cfg.n_kv_head, cfg.d_head
    st.subheader("2. Attention: q, k, v in, the output projection out", anchor="attention-output")
    s = block.qkv_steps(tr, layer, position)
    ui.explain(
        f"**In.** The normed vector x (1, {C}) of the token is multiplied by three weight matrices: "
        f"q = x · W_q ({C} × {nh * hs}), k = x · W_k ({C} × {n_kv * hs}), v = x · W_v ({C} × {n_kv * hs})"
        + (" plus biases" if cfg.qkv_bias else "")
        + f", then cut into heads: q is {nh} heads × {hs}, k and v {n_kv} heads × {hs}"
        + (f" (each key/value head serves {cfg.n_rep} query heads)" if cfg.n_rep > 1 else "") + ". "
        + ("Each head's q and k are then normed (q/k norm). " if cfg.qk_norm else "")
        + ("Then rotary embedding turns q and k by an angle that grows with the position (section 5). "
           if cfg.positional == "rotary" else "")
        + "The Attention page takes it from there: scores, softmax, the weighted sum of values.\n\n"
        f"**Out.** Each head h gives a context vector z_h ({hs} numbers) per token. The heads' vectors are "
        f"**concatenated** into one ({stop - start}, {nh * hs}) matrix (head boundaries marked below), and "
        f"multiplied by the output projection W_O ({nh * hs} → {C})"
        + (" plus its bias" if cfg.out_bias else "")
        + f": attention's output, ({stop - start}, {C}). Because W_O is linear, the same output is a **sum over "
        f"heads**: z_h · W_O[:, h·{hs}:(h+1)·{hs}]ᵀ is head h's contribution, and the contributions"
        + (" plus the bias" if cfg.out_bias else "") + " add up to the output exactly."
        + (f" Note {nh} × {hs} = {nh * hs} ≠ d_model = {C}: W_O changes the width." if nh * hs != C else "")
        + (" This model then normalises the output once more (post norm) before the shortcut adds it."
           if cfg.post_norms else "")
    )
    rows = {f"x = norm1(resid) ({C})": s.x, f"q = x · W_q ({nh} × {hs})": s.q_lin.ravel()}
    if cfg.qk_norm:
        rows["q after the q norm"] = s.q_pre.ravel()
    if cfg.positional == "rotary":
        rows["q after rotary: the model's q"] = s.q.ravel()
    rows[f"k = x · W_k ({n_kv} × {hs})"] = s.k_lin.ravel()
    if cfg.positional == "rotary" or cfg.qk_norm:
        rows["k: the model's k"] = s.k.ravel()
    rows[f"v = x · W_v ({n_kv} × {hs})"] = s.v.ravel()
    ui.chart(plots.vector_steps_figure(rows, title=f"q, k, v of {quoted(tr.tokens[position])} in layer {layer}"),
             key="block_qkv")
    ui.download_csv(vectors_frame(rows), f"qkv_L{layer}_pos{position}", key="block_qkv_csv")
    st.caption(f"Shapes: x (1, {C}) · W_q {s.weight_shapes['W_q']} → q (1, {nh * hs}); W_k {s.weight_shapes['W_k']}; "
               f"W_v {s.weight_shapes['W_v']}. Largest |q, k, v here − the model's|: {s.difference:.1e}.")

    out = block.attention_output(tr, layer, start, stop)
    labels = position_labels(tr.tokens[start:stop], start)
    ui.chart(plots.heads_matrix_figure(out.merged, tr.tokens[start:stop], nh, start=start, highlight=position,
                                       title=f"The {nh} heads' context vectors concatenated: ({stop - start}, "
                                             f"{nh} × {hs} = {nh * hs})"), key="block_concat")
    ui.download_csv(pd.DataFrame(out.merged, index=labels, columns=[f"H{h}.{d}" for h in range(nh) for d in range(hs)]),
                    f"concatenated_heads_L{layer}", key="block_concat_csv")
    ui.chart(embedding_heatmap(out.out, tr.tokens[start:stop], first_position=start,
                               title=f"× W_O ({nh * hs} → {C})" + (" + b" if out.bias is not None else "")
                                     + f" = attention's output ({stop - start}, {C})"), key="block_attn_out")
    ui.download_csv(pd.DataFrame(out.out, index=labels), f"attention_output_L{layer}", key="block_attn_out_csv")

    row_labels = [f"H{h}" for h in range(nh)] + (["bias"] if out.bias_share is not None else [])
    shares = out.head_shares if out.bias_share is None else np.vstack([out.head_shares, out.bias_share[None]])
    norms = out.head_norms if out.bias is None else np.vstack(
        [out.head_norms, np.full((1, stop - start), np.linalg.norm(out.bias), dtype=np.float32)])
    st.markdown(
        "**Each head's share.** Head h's contribution c_h = z_h · W_O,hᵀ, measured along the output's own "
        "direction: share_h = c_h · out / ‖out‖². The shares of all heads"
        + (" and the bias" if out.bias is not None else "") + " add up to 1 for every token; a negative share "
        "points against the output."
    )
    left, right = st.columns([3, 2])
    with left:
        ui.chart(plots.head_shares_figure(shares, row_labels, tr.tokens[start:stop], start=start, norms=norms,
                                          title="share of attention's output, per head and token"),
                 key="block_head_shares")
    with right:
        r = position - start
        ui.chart(plots.bars_figure(row_labels, norms[:, r], y_title="‖c_h‖",
                                   title=f"‖each contribution‖ at {show_whitespace(tr.tokens[position])}"),
                 key="block_head_norms")
    st.caption(f"Largest |Σ_h z_h · W_O,hᵀ{' + b' if out.bias is not None else ''} − out_proj(concat)|: "
               f"{out.head_sum_difference:.1e}.")
    frame = pd.DataFrame({"head": np.repeat(row_labels, stop - start),
                          "position": np.tile(np.arange(start, stop), len(row_labels)),
                          "share": shares.ravel(), "norm": norms.ravel()})
    ui.download_csv(frame.set_index(["head", "position"]), f"head_shares_L{layer}", key="block_head_shares_csv")


# ---- 3. the shortcut ----------------------------------------------------------------------------------
def shortcut_section(v: ui.View, position: int, start: int, stop: int) -> None:
    tr, layer, cfg = v.trace, v.layer, v.model.config
    st.subheader("3. The shortcut: what each sublayer adds to the residual stream", anchor="shortcut")
    ui.explain(
        "Neither attention nor the MLP replaces the token's vector: each **adds** its output to it, "
        "x ← x + attention(norm1(x)), then x ← x + MLP(norm2(x)) (the shortcut or residual connection: the book's "
        "`x = x + shortcut`). The running sum is the *residual stream*; each sublayer *writes* into it."
        + (" In this model each write is normed first (post norms)." if cfg.post_norms else "")
        + "\n\nThe bars show, for the chosen token in this layer, the stream before, the two writes and the stream "
        "after each. The heatmaps show the whole model: each layer (row) and token (column), the stream's norm and "
        "each write's norm **relative to the stream it joins** (0.1 = a write a tenth the stream's size). Large "
        "ratios are where a layer changes the token most."
    )
    writes = block.residual_writes(tr, layer, start, stop)
    r = position - start
    names = ["residual in", "attention writes", "after attention", "MLP writes", "residual out"]
    values = np.asarray([writes[k][r] for k in block.WRITE_ROWS])
    ui.chart(plots.bars_figure(names, values, y_title="L2 norm", colours=["#4a72b0", "#f59e0b", "#4a72b0", "#8c5bb0",
                                                                        "#4a72b0"],
                               title=f"Layer {layer}, token {position} {show_whitespace(tr.tokens[position])}"),
             key="block_shortcut_bars")
    bar = st.progress(0.0, text="What every layer writes…")
    everything = block.all_residual_writes(
        tr, start, stop,
        lambda done, total: bar.progress(done / total, text=f"What every layer writes: {done}/{total}"))
    bar.empty()
    ui.chart(plots.writes_figure(everything, tr.tokens[start:stop], start=start, focus=(layer, position)),
             key="block_writes")
    L, W = everything["resid_pre"].shape
    frame = pd.DataFrame({"layer": np.repeat(np.arange(L), W), "position": np.tile(np.arange(start, stop), L),
                          **{name: everything[name].ravel() for name in block.WRITE_ROWS}})
    ui.download_csv(frame.set_index(["layer", "position"]), "residual_writes", key="block_writes_csv")


# ---- 4. the MLP -----------------------------------------------------------------------------------------
def on_neuron_click(d_mlp: int) -> None:
    points = (st.session_state.get("block_neurons") or {}).get("selection", {}).get("points", [])
    for point in points:
        picked = plots.neuron_pick(point, d_mlp)
        if picked is not None:
            st.session_state["neuron"] = picked
            return


def mlp_section(v: ui.View, position: int, start: int, stop: int) -> None:
    tr, layer, cfg = v.trace, v.layer, v.model.config
    C, d_mlp = cfg.d_model, cfg.d_mlp
    gate = features.gate_activation(cfg)
    act_name = gate or "GELU"
    st.subheader("4. The feed-forward network (MLP)", anchor="ffn")
    ui.explain(
        f"The MLP works on **one token's vector at a time**: x = norm2(residual) ({C} numbers) is "
        + (f"expanded to d_mlp = {d_mlp:,} numbers, h = GELU(x · W_in + b) (W_in {C} × {d_mlp:,}, ×{d_mlp / C:g}), "
           if gate is None else
           f"projected twice to d_mlp = {d_mlp:,} numbers, a gate g = x · W_gate and an up projection u = x · W_up "
           f"(each {C} × {d_mlp:,}), combined as h = {gate}(g) ⊙ u ({features.mlp_name(cfg)}), ")
        + f"then contracted back: out = h · W_out ({d_mlp:,} × {C}). Formula: {features.mlp_formula(cfg)}. "
        "Each of the d_mlp hidden numbers is a **neuron**: its activation says how strongly this token's vector "
        "matches the neuron's input direction; its column of W_out is what it adds to the output.\n\n"
        "The book (and Giles Thomas's series) ask whether the MLP is a fixed-length bottleneck because it sees one "
        "vector at a time. It is: the last line of this section recomputes the MLP from the token's vector alone and "
        "gets the model's output exactly; the same for attention does not, because attention mixes tokens."
    )
    steps = block.mlp_steps(tr, layer, start, stop)
    r = position - start
    pre, act = steps.pre[r], steps.act[r]
    low, high = float(min(pre.min(), -4.0)), float(max(pre.max(), 4.0))
    curve = block.activation_curve(tr, layer, low, high)
    left, right = st.columns(2)
    with left:
        ui.chart(plots.activation_figure(*curve, pre, act, name=act_name,
                                         title=f"{act_name} and this token's {d_mlp:,} "
                                               f"{'gate values' if gate else 'pre-activations'}"),
                 key="block_activation")
    with right:
        st.metric("neurons with a positive activation", f"{float((steps.hidden[r] > 0).mean()):.0%}")
        st.metric("largest |activation|", f"{float(np.abs(steps.hidden[r]).max()):.4g}")
        if steps.up is not None:
            st.caption(f"Gated: the curve shows {gate}(g); the neuron's activation is {gate}(g) · u, so a neuron "
                       "can also be negative where the curve is positive.")
        st.metric("‖MLP output‖ at this token", f"{float(np.linalg.norm(steps.written[r])):.4g}")
    ui.download_csv(pd.DataFrame({"pre-activation": pre, act_name: act, "activation": steps.hidden[r]},
                                 index=pd.RangeIndex(d_mlp, name="neuron")),
                    f"mlp_neurons_L{layer}_pos{position}", key="block_activation_csv")

    top = block.top_neurons(steps.hidden)
    default = int(top[0])
    neuron = ui.clamp_state("neuron", 0, d_mlp - 1, default)
    st.markdown(f"**The {len(top)} most active neurons** (largest |activation| in the tokens shown). "
                "Click a cell to pick its neuron.")
    ui.chart(plots.neurons_figure(steps.hidden[:, top], top.tolist(), tr.tokens[start:stop], start=start,
                                  selected=neuron, title=f"hidden activations: tokens × neurons (of {d_mlp:,})"),
             key="block_neurons", on_select=lambda: on_neuron_click(d_mlp), selection_mode="points")
    labels = position_labels(tr.tokens[start:stop], start)
    ui.download_csv(pd.DataFrame(steps.hidden[:, top], index=labels, columns=[f"n{n}" for n in top]),
                    f"mlp_top_neurons_L{layer}", key="block_neurons_csv")

    st.number_input(f"Neuron (0–{d_mlp - 1:,})", 0, d_mlp - 1, step=1, key="neuron")
    neuron = int(st.session_state["neuron"])
    values = steps.hidden[:, neuron]
    st.markdown(f"**Neuron {neuron} over the prompt** (red positive, blue negative; hover for the value):")
    st.markdown(plots.activation_text_html(tr.tokens[start:stop], values, start=start), unsafe_allow_html=True)
    promoted, suppressed = block.neuron_logit_effect(tr, layer, neuron)
    st.markdown(
        f"**What neuron {neuron} writes.** Its column of W_out (C = {C}) is the direction it adds, times its "
        "activation. Read through the final norm's scale and the output head, it raises some tokens' logits and "
        "lowers others' (per unit of activation; later layers can still change it)."
    )
    ui.chart(plots.logit_effect_figure(promoted, suppressed, title=f"neuron {neuron} of layer {layer}"),
             key="block_neuron_logits")
    ui.download_csv(pd.concat({"promotes": promoted, "suppresses": suppressed}, names=["direction", "rank"]),
                    f"neuron_L{layer}_{neuron}_logits", key="block_neuron_logits_csv")

    ui.chart(embedding_heatmap(steps.written, tr.tokens[start:stop], first_position=start,
                               title=f"contracted: hidden · W_out ({d_mlp:,} → {C})"
                                     + (" and the post norm" if cfg.post_norms else "") + f" = the MLP's output "
                                     f"({stop - start}, {C})"), key="block_mlp_out")
    ui.download_csv(pd.DataFrame(steps.written, index=labels), f"mlp_output_L{layer}", key="block_mlp_out_csv")
    check = block.one_token_check(tr, layer, position)
    cols = st.columns(2)
    cols[0].metric("MLP from this token's vector alone vs the model's", f"{check.mlp_difference:.1e}",
                   help="Largest |difference| over the C numbers: the MLP needs nothing but the token itself.")
    cols[1].metric("attention from this token's vector alone vs the model's", f"{check.attn_difference:.3g}",
                   help="Alone, the token can attend only to itself: attention needs the other tokens"
                        + (" (the first token sees only itself anyway)." if position == 0 else "."))


# ---- 5. positions -------------------------------------------------------------------------------------
def positions_section(v: ui.View, position: int) -> None:
    tr, layer, cfg, model = v.trace, v.layer, v.model.config, v.model
    st.subheader("5. Positions", anchor="positions")
    top = min(cfg.n_ctx, MAX_POSITIONS)
    n = ui.clamp_state("n_positions", 8, top, min(POSITIONS_DEFAULT, top))
    st.slider("Positions drawn", 8, top, step=8 if top >= 16 else 1, key="n_positions")
    n = int(st.session_state["n_positions"])
    C = cfg.d_model
    ui.explain(
        "Attention by itself ignores order: shuffle the tokens and every token gets the same weights over the same "
        "values. Position has to be put in. "
        + (f"**{cfg.name or 'This model'} learns it**: a table of {cfg.n_ctx:,} × {C} vectors, one per position, "
           "is added to the token embeddings (the book's `pos_emb`), so x₀ = wte[id] + wpe[t]."
           if cfg.positional == "learned" else
           f"**{cfg.name or 'This model'} uses rotary embedding (RoPE)**: nothing is added to the embeddings; inside "
           f"every attention layer each pair of dimensions of q and k (hs = {cfg.d_head}, {cfg.d_head // 2} pairs) is "
           "rotated by an angle position · θ_i, with a different frequency θ_i per pair. Rotating q by its position m "
           "and k by n makes q·k depend on m − n only: attention sees relative positions.")
        + f"\n\nFor comparison, the original transformer's **sinusoidal encoding** is computed below for this model's "
        f"size: PE[pos, 2i] = sin(pos / 10000^(2i/{C})), PE[pos, 2i+1] = cos(pos / 10000^(2i/{C})): fast-turning "
        "dimensions on the left, slow ones on the right. Its similarity matrix depends only on the distance between "
        "positions (a banded matrix)."
    )
    if cfg.positional == "learned":
        table = positions.learned_positions(model, n)
        left, right = st.columns(2)
        with left:
            ui.chart(plots.position_heatmap(table, title=f"learned position table wpe[0..{n - 1}] ({n} × {C})"),
                     key="block_learned")
        similarity = positions.position_similarity(table)
        with right:
            ui.chart(plots.position_similarity_figure(similarity,
                                                      title="cosine similarity of the learned position vectors"),
                     key="block_learned_sim")
        ui.download_csv(pd.DataFrame(table).rename_axis("position"), f"learned_positions_{n}", key="block_learned_csv")
        ui.download_csv(pd.DataFrame(similarity).rename_axis("position"), f"learned_positions_similarity_{n}",
                        key="block_learned_sim_csv")
    sin = positions.sinusoidal_table(n, C)
    left, right = st.columns(2)
    with left:
        ui.chart(plots.position_heatmap(sin, title=f"sinusoidal encoding, {n} × {C} (not used by this model)"),
                 key="block_sinusoid")
    similarity = positions.position_similarity(sin)
    with right:
        ui.chart(plots.position_similarity_figure(similarity, title="cosine similarity of the sinusoidal vectors"),
                 key="block_sinusoid_sim")
    ui.download_csv(pd.DataFrame(sin).rename_axis("position"), f"sinusoidal_{n}x{C}", key="block_sinusoid_csv")
    ui.download_csv(pd.DataFrame(similarity).rename_axis("position"), f"sinusoidal_similarity_{n}",
                    key="block_sinusoid_sim_csv")
    if cfg.positional != "rotary":
        return
    rope = cfg.rope_for(layer)
    rt = positions.rotary_table(model, layer, n)
    scaling = f", {rope.scaling} scaling × {rope.factor:g}" if rope.scaling != "default" else ""
    local = " (this layer's sliding-window rope)" if cfg.rope_local is not None and rope == cfg.rope_local else ""
    st.markdown(
        f"**Rotary in layer {layer}**{local}: θ base {rope.theta:g}{scaling}. Pair i turns by position · θ_i radians "
        f"per token. The fastest pair turns {rt.frequencies[0]:.3g} rad per token (a full turn every "
        f"{rt.wavelengths[0]:.3g} tokens), the slowest {rt.frequencies[-1]:.3g} "
        f"(every {rt.wavelengths[-1]:,.0f} tokens)."
    )
    left, right = st.columns(2)
    with left:
        ui.chart(plots.position_heatmap(rt.cos, x_title="dimension pair", title=f"cos(position · θ_i), {n} × "
                                                                                  f"{cfg.d_head // 2} pairs"),
                 key="block_rotary")
    with right:
        ui.chart(plots.lines_figure([str(i) for i in range(len(rt.wavelengths))], {"wavelength": rt.wavelengths},
                                    log_y=True, x_title="dimension pair i", y_title="tokens per full turn",
                                    title="each pair's wavelength 2π / θ_i"), key="block_rotary_waves")
    ui.download_csv(pd.DataFrame(rt.angles).rename_axis("position"), f"rotary_angles_L{layer}_{n}",
                    key="block_rotary_csv")
    ui.download_csv(pd.DataFrame({"frequency (rad per token)": rt.frequencies, "wavelength (tokens)": rt.wavelengths})
                    .rename_axis("pair"), f"rotary_frequencies_L{layer}", key="block_rotary_waves_csv")
    s = block.qkv_steps(tr, layer, position)
    head = v.head
    q, k = s.q_pre[head], s.k_pre[tr.kv_head(head)]
    grid = positions.rotary_scores(model, layer, q, k, range(OFFSET_GRID), range(OFFSET_GRID))
    starts = [p for p in (0, 100, 1000) if p + OFFSETS <= cfg.n_ctx] or [0]
    by_offset = positions.scores_by_offset(model, layer, q, k, starts, min(OFFSETS, cfg.n_ctx))
    st.markdown(
        f"**q·k depends only on the distance.** Take head {head}'s q and key head {tr.kv_head(head)}'s k of "
        f"{ui.code(tr.tokens[position])} before rotary, and place them at every pair of positions: the score is the "
        "same along each diagonal, and the curves for keys at different positions lie on top of each other."
    )
    ui.chart(plots.offset_figure(grid, by_offset, starts, title=f"the same q and k at different positions "
                                                                f"(layer {layer}, head {head})"),
             key="block_offsets")
    spread = float(np.abs(by_offset - by_offset[0]).max())
    st.caption(f"Largest difference between the curves: {spread:.1e} (float32 rounding).")
    ui.download_csv(pd.DataFrame(by_offset.T, columns=[f"key at {p}" for p in starts]).rename_axis("offset"),
                    f"rotary_scores_by_offset_L{layer}H{head}", key="block_offsets_csv")


# ---- 6. dropout ------------------------------------------------------------------------------------------
def dropout_section(v: ui.View) -> None:
    tr, layer, head, cfg = v.trace, v.layer, v.head, v.model.config
    st.subheader("6. Dropout (training only)", anchor="dropout")
    ui.explain(
        "In training, the book's GPT applies **dropout** in four places: to the embeddings (`drop_emb`, after adding "
        "token and position vectors), to the attention weights (after the softmax), and to the outputs of attention "
        "and of the MLP before the shortcut adds them (`drop_shortcut`). Each number is zeroed with probability p and "
        "the survivors are multiplied by 1/(1 − p), so the expected value stays the same; the network cannot rely on "
        "any single path. "
        + (f"{cfg.name or 'This model'} was trained with p = {cfg.dropout:g}. " if cfg.dropout else
           f"{cfg.name or 'This model'}'s config has no dropout (p = 0), as is usual for large modern models. ")
        + "**At inference dropout is off**: everything else on this site is the model with no dropout. The view "
        "below is only an illustration of what training would see, on the chosen head's pattern."
    )
    clamp_p = st.session_state.get("dropout_p", cfg.dropout or 0.1)
    try:
        clamp_p = float(clamp_p)
    except (TypeError, ValueError):
        clamp_p = 0.1
    st.session_state["dropout_p"] = min(max(round(clamp_p * 20) / 20, 0.0), 0.9)
    left, right = st.columns(2)
    left.slider("Dropout rate p (training view only)", 0.0, 0.9, step=0.05, key="dropout_p")
    seed = ui.clamp_state("dropout_seed", 0, 2**31 - 1, 0)
    right.number_input("Mask seed", 0, 2**31 - 1, step=1, key="dropout_seed")
    p, seed = float(st.session_state["dropout_p"]), int(st.session_state["dropout_seed"])
    n = min(tr.n_tokens, DROPOUT_TOKENS)
    pattern = heads.pattern_window(tr, layer, head, 0, n)
    view = block.dropout_view(pattern, p, seed)
    ui.chart(plots.dropout_figure(pattern, view.dropped, tr.tokens[:n], p, tr.window(layer)), key="block_dropout")
    causal = heads.visible_keys(np.arange(n), n, tr.window(layer)).numpy()  # the weights this layer can use
    st.caption(f"What training would see, not what the model does: layer {layer}, head {head}, the first {n} tokens. "
               f"{int((~view.mask & causal).sum())} of {int(causal.sum())} weights dropped; the rest × 1/(1 − {p:g}) = "
               f"{1 / (1 - p):.3g}. Row sums now range {view.row_sums.min():.3f}–{view.row_sums.max():.3f} "
               "instead of 1.")
    labels = position_labels(tr.tokens[:n])
    ui.download_csv(pd.DataFrame(view.dropped, index=labels, columns=labels),
                    f"dropout_p{p:g}_seed{seed}_L{layer}H{head}",
                    key="block_dropout_csv")


def structure_note(config) -> None:
    """The block this model has, as a formula from its declared structure, and what is unlike the book's."""
    parallel = config.parallel_residual
    st.markdown(f"This model's block: `{features.block_formula(config)}`"
                + (" — **parallel**: attention and the MLP both read the block's input x, side by side, and both "
                   "outputs are added to it (GPT-J, GPT-NeoX / Pythia); the book's block runs the MLP on the "
                   "stream after attention." if parallel else ""))


SECTIONS = {"Norm": norm_section, "Attention": attention_section, "Shortcut": shortcut_section, "MLP": mlp_section,
            "Positions": lambda v, position, start, stop: positions_section(v, position),
            "Dropout": lambda v, position, start, stop: dropout_section(v)}


def main() -> None:
    st.title("Inside a block")
    st.markdown("*What does one transformer block do to your token, step by step, with the model's real numbers?*")
    v = ui.view()
    T = v.trace.n_tokens
    position = ui.position_input("Token", v.trace.tokens, "The token whose vector each step follows (the layer is "
                                 "the sidebar's).", slider=True, what="Following")
    start, stop = window_of(T, position)
    st.markdown(f"Layer **{v.layer}** of {v.model.config.n_layer} (sidebar)"
                + (f"; views over tokens show {start}–{stop - 1} of {T:,}." if stop - start < T else "."))
    structure_note(v.model.config)
    for name, tab in ui.sections("inside_block"):
        with tab:
            SECTIONS[name](v, position, start, stop)


main()
