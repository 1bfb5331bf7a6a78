"""Overview, Tokens and Embeddings: their analysis and figure builders, and the pages in AppTest."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gptviz
from gptviz.analysis import embeddings as emb
from gptviz.analysis import lens
from gptviz.plots import embeddings as emb_plots
from gptviz.plots import pipeline
from gptviz.ui.navigation import BY_KEY
from numerics import assert_close
from page_helpers import chart, open_page, open_tab

PROMPT = "The cat sat on the mat. The cat 🤗 ran\n\tthere"
LONG = "Once upon a time there was a little word. " * 40  # ~400 tokens: past both tiny contexts


@pytest.fixture(params=["gpt2", "llama"])
def model(request, tiny_gpt2, tiny_llama):
    return tiny_gpt2 if request.param == "gpt2" else tiny_llama


# ---- analysis ---------------------------------------------------------------------------------
def test_cosine_similarity_matches_torch(model):
    tr = gptviz.trace(model, PROMPT)
    for choice in emb.vector_choices(tr):
        x = torch.from_numpy(emb.residual_vectors(tr, choice)).double()
        expected = F.cosine_similarity(x[:, None, :], x[None, :, :], dim=-1)  # (T, T)
        sim = emb.cosine_similarity(x.numpy())
        # float64 cosines rounded to float32, vs torch's in float64
        assert_close(sim, expected, ulps=8, what=choice)
        assert_close(np.diag(sim), 1.0, ulps=8)
    # a repeated token has the same token embedding: similarity exactly 1 off the diagonal
    first, again = tr.tokens.index(" cat"), len(tr.tokens) - 1 - tr.tokens[::-1].index(" cat")
    assert first != again
    assert_close(emb.cosine_similarity(tr.embed.numpy())[first, again], 1.0, ulps=8)  # |x|² / |x|², rounded


def test_cosine_similarity_of_zero_vector_is_zero_and_shape_checked():
    sim = emb.cosine_similarity(np.array([[1.0, 0.0], [0.0, 0.0], [-2.0, 0.0]]))
    assert_close(sim, [[1, 0, -1], [0, 0, 0], [-1, 0, 1]], ulps=8)  # ±1 and 0, rounded
    with pytest.raises(ValueError, match=r"\(T, C\)"):
        emb.cosine_similarity(np.zeros(3))


@pytest.mark.parametrize("n, c", [(40, 6), (5, 12)])  # N > C (covariance) and N <= C (SVD)
def test_pca_variance_shares_and_projection(n, c):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, c)) * np.linspace(3.0, 0.5, c)  # spread shrinking by dimension
    result = emb.pca(x, k=2)
    shares = result.explained
    assert np.all(np.diff(shares) <= 1e-7)
    assert_close(shares.sum(), 1.0, ulps=8)  # float32 shares of one total
    centred = x - x.mean(0)
    singular = np.linalg.svd(centred, compute_uv=False)
    # float64 eigenvalues (covariance) or singular values, rounded to float32, vs numpy's SVD
    assert_close(shares[: len(singular)], singular**2 / (singular**2).sum(), ulps=8)
    # the coordinates are the projections on orthonormal components, their variance is the eigenvalue
    # float64 results rounded to float32, then multiplied again: float32 rounding of sums over C
    assert_close(result.components @ result.components.T, np.eye(2), ulps=16)
    assert_close(result.coords, centred @ result.components.T, ulps=16)
    assert_close((result.coords**2).sum(0), singular[:2] ** 2, ulps=16)


def test_pca_edge_cases(model):
    with pytest.raises(ValueError, match="at least 2 points"):
        emb.pca(np.ones((1, 5)))
    two = emb.pca(np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]]))
    assert two.coords.shape == (2, 2)
    assert_close(two.explained[0], 1.0, ulps=8)  # one direction holds all the variance
    assert_close(two.coords[:, 1], 0.0, atol=1e-12)  # zero by construction: float64 rounding of values about 1
    table = emb.position_table(model)
    if model.config.arch == "gpt2":
        assert table.shape == (model.config.n_ctx, model.config.d_model)
        assert emb.pca(table).coords.shape == (model.config.n_ctx, 2)
    else:
        assert table is None


def test_parameter_counts_sum_to_model_total(model):
    counts = emb.parameter_counts(model)
    assert int(counts["parameters"].sum()) == sum(p.numel() for p in model.parameters())
    assert_close(counts["share"].sum(), 1.0, ulps=16)  # float64 shares of one total, summed
    assert "other" not in set(counts["part"])
    cfg = model.config
    row = counts.set_index("part")
    assert row.loc["token embedding", "parameters"] == cfg.vocab_size * cfg.d_model
    assert ("position embedding" in row.index) is (cfg.arch == "gpt2")
    qkv = (cfg.n_head + 2 * cfg.n_kv_head) * cfg.d_head * cfg.d_model
    assert row.loc["attention q, k, v", "per block"] == qkv + (qkv // cfg.d_model if cfg.arch == "gpt2" else 0)
    blocks = row.dropna(subset=["per block"])
    assert (blocks["per block"] * cfg.n_layer == blocks["parameters"]).all()


def test_top_next_tokens_are_the_softmax_top(model):
    tr = gptviz.trace(model, PROMPT)
    top = lens.top_next_tokens(tr, -1, 7)
    probs = torch.softmax(tr.logits[-1], dim=-1)
    assert list(top["id"]) == torch.topk(probs, 7).indices.tolist()
    assert_close(top["probability"], probs[list(top["id"])], ulps=8)  # the same softmax
    assert_close(top["logit"], tr.logits[-1, list(top["id"])], ulps=8)  # the trace's own logits
    assert list(top["rank"]) == list(range(1, 8))
    assert list(top["token"]) == model.tokenizer.token_strings(list(top["id"]))
    first = lens.top_next_tokens(tr, 0, 1)
    assert first["id"][0] == int(tr.logits[0].argmax())
    with pytest.raises(ValueError, match="outside"):
        lens.top_next_tokens(tr, tr.n_tokens, 1)


def test_token_table_bytes_spell_the_prompt(model):
    ids = model.tokenizer.encode(PROMPT)
    table = emb.token_table(model, ids + [11], n_prompt=len(ids))
    spelled = b"".join(bytes.fromhex(h) for h in table["bytes (hex)"][: len(ids)])
    assert spelled == PROMPT.encode("utf-8")
    assert list(table["byte length"]) == [len(model.tokenizer.token_bytes(i)) for i in ids + [11]]
    assert list(table["source"]) == ["prompt"] * len(ids) + ["generated"]
    emoji_parts = table[~table["whole UTF-8"]]
    assert len(emoji_parts) > 0 and all("\\x" in t for t in emoji_parts["token"])
    counts = emb.token_counts(model, ids)
    assert (counts.tokens, counts.characters, counts.bytes) == (len(ids), len(PROMPT), len(PROMPT.encode()))
    assert_close(counts.chars_per_token, len(PROMPT) / len(ids), ulps=8)  # the same division
    with pytest.raises(ValueError, match="n_prompt"):
        emb.token_table(model, ids, n_prompt=len(ids) + 1)


def test_embedding_matrices_and_norms(model):
    tr = gptviz.trace(model, PROMPT)
    mats = emb.embedding_matrices(tr)
    np.testing.assert_array_equal(mats[emb.TOKEN_EMBEDDING], model.tok_emb.weight[tr.ids].detach().numpy())
    if model.config.arch == "gpt2":
        # the same float32 sum
        assert_close(mats[emb.EMBEDDING_SUM], mats[emb.TOKEN_EMBEDDING] + mats[emb.POSITION_EMBEDDING], ulps=8)
        np.testing.assert_array_equal(mats[emb.EMBEDDING_SUM], tr.resid_pre(0).numpy())
    else:
        assert list(mats) == [emb.TOKEN_EMBEDDING]
    norms = emb.embedding_norms(tr)
    assert list(norms.columns) == list(mats)
    assert_close(norms[emb.TOKEN_EMBEDDING], tr.embed.norm(dim=-1), ulps=16)  # same norm, another order
    last = f"residual after layer {tr.n_layer - 1}"
    np.testing.assert_array_equal(emb.residual_vectors(tr, last), tr.resid_post(tr.n_layer - 1).numpy())
    with pytest.raises(ValueError, match="Unknown vectors"):
        emb.residual_vectors(tr, f"residual after layer {tr.n_layer}")


# ---- figures ----------------------------------------------------------------------------------
def test_pipeline_stages_carry_the_real_shapes(tiny_gpt2, tiny_llama):
    g = {s.key: s for s in pipeline.pipeline_stages(tiny_gpt2.config, 17)}
    cfg = tiny_gpt2.config
    assert g["hook_embed"].shape == f"(17, {cfg.d_model})" and "hook_pos_embed" in g and "rotary" not in g
    assert f"({cfg.n_head}, 17, {cfg.d_head})" in g["attn"].shape and "(3, 17, 17)" in g["attn"].shape
    assert g["logits"].shape == f"(17, {cfg.vocab_size:,})" and "GELU" in g["mlp"].title
    lcfg = tiny_llama.config
    ll = {s.key: s for s in pipeline.pipeline_stages(lcfg, 5)}
    assert "hook_pos_embed" not in ll and ll["rotary"].side and "SwiGLU" in ll["mlp"].title
    assert f"{lcfg.n_kv_head} kv heads" in ll["attn"].title
    assert f"({lcfg.n_kv_head}, 5, {lcfg.d_head})" in ll["attn"].shape
    assert "RMSNorm" in ll["ln1"].title
    with pytest.raises(ValueError):
        pipeline.pipeline_stages(lcfg, 0)


def test_pipeline_figure_has_a_box_per_stage(model):
    stages = pipeline.pipeline_stages(model.config, 9)
    fig = pipeline.pipeline_figure(model.config, 9)
    assert list(fig.data[0].text) == [s.title for s in stages]
    assert len([sh for sh in fig.layout.shapes if sh.type == "rect"]) == len(stages) + 1  # + the block frame
    texts = " ".join(a.text for a in fig.layout.annotations)
    assert f"× {model.config.n_layer} transformer blocks" in texts and "(9, " in texts


def test_top_tokens_figure():
    fig = pipeline.top_tokens_figure([" a", "b\n"], np.array([0.6, 0.3]), [5, 7])
    assert list(fig.data[0].y) == ["1. ␣a", "2. b↵"]
    assert_close(fig.data[0].x, [0.6, 0.3], ulps=8)  # copied into the figure
    assert list(fig.data[0].customdata) == [5, 7]
    with pytest.raises(ValueError, match="same length"):
        pipeline.top_tokens_figure(["a"], np.array([0.5, 0.5]))


def test_embedding_figures_shapes_and_labels():
    rng = np.random.default_rng(1)
    fig = emb_plots.embedding_heatmap(rng.normal(size=(3, 8)), ["a", " b", "c"], first_position=10)
    assert np.asarray(fig.data[0].z).shape == (3, 8) and list(fig.data[0].y) == ["10·a", "11·␣b", "12·c"]
    assert fig.data[0].zmin == -fig.data[0].zmax
    with pytest.raises(ValueError, match="one row per token"):
        emb_plots.embedding_heatmap(np.zeros((2, 8)), ["a"])
    sim = emb_plots.cosine_heatmap(np.eye(2), ["x", "y"])
    assert (sim.data[0].zmin, sim.data[0].zmax) == (-1.0, 1.0)
    with pytest.raises(ValueError):
        emb_plots.cosine_heatmap(np.eye(3), ["x", "y"])
    bars = emb_plots.norms_figure(np.ones((4, 2)), ["p", "q"], list("abcd"))
    assert [t.type for t in bars.data] == ["bar", "bar"] and list(bars.data[0].x) == ["0·a", "1·b", "2·c", "3·d"]
    many = emb_plots.BAR_MAX_TOKENS + 1
    lines = emb_plots.norms_figure(np.ones((many, 1)), ["p"], ["t"] * many)
    assert lines.data[0].type == "scatter" and len(lines.data[0].x) == many
    pts = emb_plots.pca_scatter(rng.normal(size=(5, 2)), np.array([0.5, 0.3]), list("vwxyz"))
    assert list(pts.data[0].text) == list("vwxyz") and "50.0%" in pts.layout.xaxis.title.text
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        emb_plots.pca_scatter(np.zeros((5, 3)), np.array([1.0]))


def test_figures_build_fast_at_large_sizes():
    rng = np.random.default_rng(2)
    tokens = [f"t{i}" for i in range(1024)]
    start = time.perf_counter()
    emb_plots.embedding_heatmap(rng.normal(size=(128, 768)), tokens[:128]).to_json()
    emb_plots.cosine_heatmap(rng.normal(size=(128, 128)), tokens[:128]).to_json()
    emb_plots.norms_figure(rng.normal(size=(1024, 3)), ["a", "b", "c"], tokens).to_json()
    emb_plots.pca_scatter(rng.normal(size=(1024, 2)), np.array([0.2, 0.1]), tokens).to_json()
    assert time.perf_counter() - start < 1.0


# ---- the pages in AppTest ------------------------------------------------------------------------
@pytest.mark.parametrize("stem", ["overview", "tokens", "embeddings"])
@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_page_handles_many_prompts(app_env, stem, which):
    at = open_page(stem, app_env[which])
    for prompt in ["Hi", "", "  \n", "ünïcödé 🤗🤗 ok\n\n\tend", LONG]:
        at.text_area(key="prompt").set_value(prompt)
        at.run()
        assert not at.exception, (prompt, at.exception)
        assert at.title[0].value == BY_KEY[stem].title
        if not prompt.strip():
            assert "empty" in at.info[0].value
            continue
        assert not at.error
        if prompt == LONG:
            assert any("left out" in w.value for w in at.warning)
        if stem != "tokens":
            assert at.get("plotly_chart"), prompt


def test_overview_shows_pipeline_params_and_top_tokens(app_env, tiny_gpt2):
    at = open_page("overview", prompt=PROMPT)
    spec = chart(at, "overview_pipeline")
    assert f"× {tiny_gpt2.config.n_layer} transformer blocks" in json.dumps(spec, ensure_ascii=False)
    params = at.dataframe[0].value
    assert int(params["parameters"].sum()) == sum(p.numel() for p in tiny_gpt2.parameters())
    top = at.dataframe[1].value
    expected = lens.top_next_tokens(gptviz.trace(tiny_gpt2, PROMPT), -1, 10)
    assert list(top["id"]) == list(expected["id"])
    before = chart(at, "overview_top_chart")
    at.slider(key="overview_top_k").set_value(3)
    at.run()
    assert len(at.dataframe[1].value) == 3 and chart(at, "overview_top_chart") != before
    assert {b.key for b in at.get("download_button")} >= {"export_npz", "export_json"}


def test_overview_export_contents_follow_the_checkbox(app_env):
    at = open_page("overview", app_env["llama"], PROMPT)
    contents = at.dataframe[2].value
    assert "logits" in list(contents["array"]) and "pos_embed" not in list(contents["array"])
    at.checkbox(key="export_logits").uncheck()
    at.run()
    assert "logits" not in list(at.dataframe[2].value["array"])


def test_tokens_page_chips_table_and_counts(app_env, tiny_gpt2):
    at = open_page("tokens", prompt=PROMPT)
    ids = tiny_gpt2.tokenizer.encode(PROMPT)
    table = at.dataframe[0].value
    assert list(table["id"]) == ids
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Tokens"] == str(len(ids)) and metrics["Characters"] == str(len(PROMPT))
    chips = next(m.value for m in at.markdown if "gv-chips" in m.value)
    assert chips.count("<span ") == len(ids) and "&lt;" not in chips and " part" in chips
    assert "␣cat" in chips and "↵" in chips and "<br>" in chips
    at.checkbox(key="tokens_show_ids").check()
    at.run()
    with_ids = next(m.value for m in at.markdown if "gv-chips" in m.value)
    assert with_ids != chips and f"<small>{ids[0]}</small>" in with_ids


def test_tokens_page_escapes_html_and_marks_generated(app_env, tiny_gpt2):
    at = open_page("tokens", prompt="<b>bold</b> & <script>x</script>")
    chips = next(m.value for m in at.markdown if "gv-chips" in m.value)
    assert "<script>" not in chips and "&lt;" in chips and "&amp;" in chips
    at.session_state["gen"] = "11,13"
    at.run()
    table = at.dataframe[0].value
    assert list(table["source"][-2:]) == ["generated", "generated"] and list(table["id"][-2:]) == [11, 13]
    assert next(m.value for m in at.markdown if "gv-chips" in m.value).count('class="c') == len(table)
    assert sum(' gen"' in part or " gen " in part for part in
               next(m.value for m in at.markdown if "gv-chips" in m.value).split("<span")) == 2


def test_tokens_page_notes_a_cut_prompt(app_env, tiny_gpt2):
    at = open_page("tokens", prompt=LONG)
    n_ctx = tiny_gpt2.config.n_ctx
    assert len(at.dataframe[0].value) == n_ctx
    assert any("did not fit" in c.value for c in at.caption)


def test_embeddings_widgets_change_the_charts(app_env):
    at = open_page("embeddings", prompt=PROMPT)
    heat = chart(at, "emb_heatmap")
    at.radio(key="emb_matrix").set_value(emb.POSITION_EMBEDDING)
    at.run()
    assert chart(at, "emb_heatmap") != heat
    assert "position embedding" in chart(at, "emb_heatmap")["layout"]["title"]["text"]
    assert not at.get("plotly_chart") or "emb_cosine" not in [c.key for c in at.get("plotly_chart")]  # lazy tabs
    open_tab(at, "embeddings_tab", "How alike")
    cos = chart(at, "emb_cosine")
    pca_before = chart(at, "emb_pca")
    at.selectbox(key="emb_vectors").set_value("residual after layer 1")
    at.run()
    assert chart(at, "emb_cosine") != cos and chart(at, "emb_pca") != pca_before
    assert "residual after layer 1" in chart(at, "emb_cosine")["layout"]["title"]["text"]
    open_tab(at, "embeddings_tab", "Position table")
    assert "emb_pos_pca" in " ".join(c.proto.id for c in at.get("plotly_chart"))


def test_embeddings_llama_explains_rotary_and_windows_long_prompts(app_env, tiny_llama):
    at = open_tab(open_page("embeddings", app_env["llama"], LONG), "embeddings_tab", "Position table")
    assert any("rotary" in i.value for i in at.info)
    open_tab(at, "embeddings_tab", "Input vectors")
    assert not at.radio  # only the token embedding: no position matrix to pick
    n_ctx = tiny_llama.config.n_ctx
    y0 = chart(at, "emb_heatmap")["data"][0]["y"]
    assert y0[0].startswith("0·")
    slider = at.slider(key="emb_start")
    assert slider.max == n_ctx - len(y0)
    slider.set_value(10)
    at.run()
    y1 = chart(at, "emb_heatmap")["data"][0]["y"]
    assert y1[0].startswith("10·") and len(y1) == len(y0)


def test_embeddings_single_token_prompt(app_env):
    for which in ("gpt2", "llama"):
        at = open_tab(open_page("embeddings", app_env[which], "Hi"), "embeddings_tab", "How alike")
        assert any("at least 2 tokens" in i.value for i in at.info)
        assert chart(at, "emb_cosine")["data"][0]["z"]


def test_overview_pipeline_boxes_open_their_pages(app_env):
    """A click on a box (the overview's callback sets where to go): the page that shows it, on its tab."""
    at = open_page("overview")
    assert any("Click a box" in c.value for c in at.caption)
    at.session_state["_go_to"] = ("inside_block", "MLP")
    at.run()
    assert not at.exception and [t.value for t in at.title] == ["Inside a block"]
    assert at.session_state["inside_block_tab"] == "MLP" and "block_neurons" in {c.key for c in at.get("plotly_chart")}
