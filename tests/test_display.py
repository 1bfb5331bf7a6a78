"""What the pages print, checked where it is built: invisible characters made visible, one label per place in a
PCA scatter, no empty cells in the parameter table, titles clear of the chart's own text and toolbar (the
browser test test_no_chart_text_prints_over_other_text measures that on every chart)."""
from __future__ import annotations

import numpy as np

from gptviz.plots import attention as attention_plots
from gptviz.plots import block as block_plots
from gptviz.plots import embeddings as emb_plots
from gptviz.plots import heads as head_plots
from gptviz.plots import lens as lens_plots
from gptviz.plots.common import MODEBAR_PX, PANELS_TOP_PX, TITLE_PX, show_whitespace
from gptviz.ui import code
from page_helpers import open_page


def test_every_invisible_character_is_shown():
    assert show_whitespace(" a\n\t\r") == "␣a↵⇥␍"
    assert show_whitespace("\xa0") == "⍽"  # GPT-2 has a no-break-space token
    for char in ("\u200b", "\u200d", "\ufeff", "\u00ad", "\u202f", "\u3000", "\x00", "\x7f", "\u2028"):
        assert show_whitespace(char) == f"⟨U+{ord(char):04X}⟩"
    assert show_whitespace("é汉🤗.") == "é汉🤗."  # what prints stays as it is
    assert code("\xa0") == "`⍽`"
    heat = lens_plots.lens_heatmap(np.full((2, 2), 0.5), [["\xa0", "a"], ["\u200b", " b"]], ["0", "1"], ["x", "y"])
    assert heat.data[0].text.tolist() == [["⍽", "a"], ["⟨U+200B⟩", "␣b"]]
    target = lens_plots.target_by_layer_figure(np.array([0.1, 0.2]), np.array([5, 1]), ["embed", "L0"], "\xa0")
    assert "⍽" in str(target.layout.title.text) + "".join(str(t.name) for t in target.data)


def test_points_at_one_place_share_one_label():
    """A repeated token has one token embedding: its points coincide, and their labels are one text."""
    coords = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [2.0, 0.5], [0.0, 1e-9]])
    texts = emb_plots.point_texts(coords, [" John", "x", " John", "y", " John"])
    assert texts == ["␣John (0, 2, 4)", "x", "", "y", ""]
    apart = emb_plots.point_texts(np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]]), ["a", "b", "a"])
    assert apart == ["a (0)", "b", "a (2)"]  # repeated, at different places: each says its position
    fig = emb_plots.pca_scatter(coords, np.array([0.6, 0.3]), [" John", "x", " John", "y", " John"])
    assert list(fig.data[0].text) == texts and list(fig.data[0].hovertext)[2] == "2·␣John"


def test_the_parameter_table_has_no_empty_cells(app_env):
    at = open_page("overview")
    params = at.dataframe[0].value
    assert not params.isna().any().any(), params
    per_block = dict(zip(params["part"], params["per block"]))
    assert per_block["token embedding"] == "—" and per_block["MLP in"] not in ("—", "", None)


def test_titles_keep_clear_of_the_toolbar_ticks_and_legends():
    tokens = [f"t{i}" for i in range(6)]
    patterns = [np.tril(np.ones((6, 6))) / np.arange(1, 7)[:, None]] * 4
    compared = head_plots.compare_patterns_figure(patterns, ["L0H0", "L0H1", "L1H0", "L1H1"], tokens)
    stages = attention_plots.stages_figure({"raw": patterns[0], "scaled": patterns[0], "masked": patterns[0],
                                            "softmax": patterns[0]}, tokens)
    for fig in (compared, stages):  # panel titles at the top right: below the toolbar's band
        assert fig.layout.margin.t == PANELS_TOP_PX > MODEBAR_PX + fig.layout.annotations[0].font.size
    heads = block_plots.heads_matrix_figure(np.zeros((6, 8)), tokens, 2, title="heads")
    neurons = block_plots.neurons_figure(np.zeros((6, 3)), [4, 7, 9], tokens, title="neurons")
    for fig in (heads, neurons):  # x axis on top: the title in its own band above the tick labels
        assert fig.layout.title.yref == "container" and fig.layout.title.yanchor == "top"
        assert fig.layout.margin.t > TITLE_PX + 20
    act = block_plots.activation_figure(np.linspace(-4, 4, 9), np.linspace(-4, 4, 9), np.zeros(3), np.zeros(3),
                                        name="GELU", title="GELU and this token's pre-activations")
    assert act.layout.legend.yanchor == "top" and act.layout.legend.y <= 1  # inside the plot, not by the title
    offset = block_plots.offset_figure(np.zeros((4, 4)), np.zeros((2, 4)), [0, 100], title="positions")
    assert offset.layout.legend.y < 0  # under its panel, not beside the panel's title
