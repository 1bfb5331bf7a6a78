"""Embeddings: the vectors the model starts from, and how alike the prompt's tokens are."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from gptviz import ui
from gptviz.analysis import embeddings as emb
from gptviz.plots import embeddings as plots
from gptviz.plots.common import show_whitespace

WINDOW = 128  # tokens drawn at once in the heatmaps and the similarity matrix
PCA_LABEL_MAX = 2048  # above this many points the PCA scatter has no hover labels


def prompt_pca(tr, choice: str) -> emb.PCA:
    """The prompt's vectors of one kind (token embeddings, or the stream after a block) on 2 axes."""
    return emb.pca(emb.residual_vectors(tr, choice))


def position_pca(model) -> emb.PCA | None:
    """The learned position table on 2 axes (None: the model has none)."""
    table = emb.position_table(model)
    return None if table is None else emb.pca(table)


def window_of(T: int) -> tuple[int, int]:
    """The tokens [start, stop) the heatmaps draw: all of them, or WINDOW picked with a slider."""
    if T <= WINDOW:
        return 0, T
    ui.clamp_state("emb_start", 0, T - WINDOW, 0)
    start = st.slider(f"First token drawn (the prompt has {T:,} tokens; the heatmaps show {WINDOW} at a time)",
                      0, T - WINDOW, key="emb_start")
    st.caption(f"Heatmaps and similarities show tokens {start}–{start + WINDOW - 1}; the norms and PCA use all {T:,}.")
    return start, start + WINDOW


def heatmap_section(v: ui.View, start: int, stop: int) -> None:
    tr, cfg = v.trace, v.model.config
    T, C = tr.n_tokens, cfg.d_model
    st.subheader("The input vectors")
    matrices = emb.embedding_matrices(tr)
    if cfg.positional == "learned":
        ui.explain(
            f"Each token id picks a row of the token-embedding table wte ({cfg.vocab_size:,} × {C}); each position "
            f"t picks a row of the position table wpe ({cfg.n_ctx:,} × {C}). The block-0 input is their sum, "
            f"x₀[t] = wte[id_t] + wpe[t], a ({T}, {C}) matrix: one row per token, one column per dimension. The same "
            "token at two positions gets the same token row but different position rows."
        )
    else:
        ui.explain(
            f"Each token id picks a row of the token-embedding table ({cfg.vocab_size:,} × {C}): x₀[t] = wte[id_t], "
            f"a ({T}, {C}) matrix. {cfg.name or 'This model'} adds **no position vector**: position enters inside "
            "attention, where each query and key is rotated by an angle that grows with its position (rotary "
            "embedding), so the same token at two positions starts from the same vector here."
        )
    names = list(matrices)
    if len(names) > 1:
        ui.choose_state("emb_matrix", names, names[0])
        name = st.radio("Matrix", names, horizontal=True, key="emb_matrix")
    else:
        name = names[0]
    part = matrices[name][start:stop]
    tokens = tr.tokens[start:stop]
    shown = f", rows {start}–{stop - 1} shown" if stop - start < T else ""
    ui.chart(plots.embedding_heatmap(part, tokens, title=f"{name}: ({T}, {C}){shown}", first_position=start),
             key="emb_heatmap")
    labels = [f"{start + i}·{show_whitespace(t)}" for i, t in enumerate(tokens)]
    ui.download_csv(ui.matrix_frame(part, labels), name.split(" (")[0].replace(" ", "_"), key="emb_heatmap_csv")

    norms = emb.embedding_norms(tr)
    ui.explain(
        "The L2 norm ‖x‖ = √(Σ_i x_i²) is each vector's length. Comparing the token and position norms shows how "
        "much each contributes to the block-0 input." if cfg.positional == "learned" else
        "The L2 norm ‖x‖ = √(Σ_i x_i²) is each token vector's length (the RMSNorm in each block rescales it)."
    )
    ui.chart(plots.norms_figure(norms.to_numpy(), list(norms.columns), tr.tokens), key="emb_norms")
    ui.download_csv(norms.assign(token=[show_whitespace(t) for t in tr.tokens]), "embedding_norms",
                    key="emb_norms_csv")


def similarity_section(v: ui.View, start: int, stop: int) -> None:
    tr = v.trace
    T, C = tr.n_tokens, v.model.config.d_model
    st.subheader("How alike are the tokens?")
    choices = emb.vector_choices(tr)
    ui.choose_state("emb_vectors", choices, choices[0])
    choice = st.selectbox("Vectors compared", choices, key="emb_vectors",
                          help="The token embeddings, or the residual stream after a block: how the tokens' "
                               "vectors become more (or less) alike as the model reads.")
    vectors = emb.residual_vectors(tr, choice)
    ui.explain(
        f"Cosine similarity cos(a, b) = a·b / (‖a‖ ‖b‖) is 1 when two vectors point the same way, 0 when they are "
        f"at right angles, −1 when opposite. Here for every pair of the prompt's tokens, on the {choice} vectors "
        f"({T}, {C}) → a ({T}, {T}) matrix. Repeated tokens have similarity 1 on the token embedding."
    )
    sim = emb.cosine_similarity(vectors[start:stop])
    tokens = tr.tokens[start:stop]
    ui.chart(plots.cosine_heatmap(sim, tokens, title=f"cosine similarity: {choice}", first_position=start),
             key="emb_cosine")
    labels = [f"{start + i}·{show_whitespace(t)}" for i, t in enumerate(tokens)]
    ui.download_csv(ui.matrix_frame(sim, labels, labels), "cosine_similarity", key="emb_cosine_csv")

    st.subheader("The tokens in two dimensions (PCA)")
    ui.explain(
        f"Principal component analysis finds the directions in which the {T} vectors ({C} numbers each) spread "
        "the most. Each token is drawn at its coordinates along the first two (PC1, PC2): tokens close together "
        "have similar vectors. The axis titles say how much of the total spread each direction holds."
    )
    if T < 2:
        st.info("PCA needs at least 2 tokens: one point has no spread. Type a longer prompt.")
        return
    result = ui.derived(v.shown, prompt_pca, choice)
    if T > PCA_LABEL_MAX:
        st.caption(f"{T:,} points: hover labels are off; colour shows the position.")
    ui.chart(plots.pca_scatter(result.coords, result.explained, tr.tokens if T <= PCA_LABEL_MAX else None,
                               title=f"PCA of the {choice} vectors"), key="emb_pca")
    frame = pd.DataFrame(result.coords, columns=["PC1", "PC2"]).assign(token=[show_whitespace(t) for t in tr.tokens])
    ui.download_csv(frame.rename_axis("position"), "pca_coordinates", key="emb_pca_csv")


def position_section(v: ui.View) -> None:
    cfg = v.model.config
    st.subheader("The whole position table")
    if cfg.positional != "learned":
        st.info(f"{cfg.name or 'This model'} has no position table to draw: it uses rotary position embedding, a "
                "fixed rotation of each query and key by an angle proportional to the position (different "
                "frequencies for different pairs of dimensions), computed on the fly inside attention.")
        return
    result = ui.of_model(v.model_name, v.model, position_pca)
    ui.explain(
        f"All {cfg.n_ctx:,} rows of the learned position table wpe ({cfg.n_ctx:,} × {cfg.d_model}), projected on "
        "their first two principal components and coloured by position. In a trained GPT-2 neighbouring positions "
        "get similar vectors, so the points trace a smooth curve (a helix in more dimensions); in an untrained "
        "model they are a random cloud."
    )
    ui.chart(plots.pca_scatter(result.coords, result.explained, None, lines=True,
                               title=f"PCA of the position table ({cfg.n_ctx:,} positions)"), key="emb_pos_pca")
    ui.download_csv(pd.DataFrame(result.coords, columns=["PC1", "PC2"]).rename_axis("position"),
                    "position_table_pca", key="emb_pos_pca_csv")


SECTIONS = {"Input vectors": lambda v, start, stop: heatmap_section(v, start, stop),
            "How alike": lambda v, start, stop: similarity_section(v, start, stop),
            "Position table": lambda v, start, stop: position_section(v)}


def main() -> None:
    st.title("Embeddings")
    st.markdown("*Which vectors does the model start from, and how alike are your tokens?*")
    v = ui.view()
    start, stop = window_of(v.trace.n_tokens)
    for name, tab in ui.sections("embeddings"):
        with tab:
            SECTIONS[name](v, start, stop)


main()
