"""The Why this token? figures: shapes, labels, colour scales, and clicks read back."""
from __future__ import annotations

import numpy as np
import pytest

from gptviz.plots import attribution as plots
from gptviz.plots.common import picked_customdata


def test_component_map_heads_and_mlp_column_on_their_own_scales():
    heads = np.arange(12, dtype=float).reshape(3, 4) - 6  # -6 .. 5
    mlps = np.array([-30.0, 2.0, 1.0])
    fig = plots.component_map(heads, mlps, "title", "Δ metric", focus=(1, 2))
    kinds = [t.type for t in fig.data]
    assert kinds == ["heatmap", "heatmap", "scatter", "scatter"]
    assert np.shape(fig.data[0].z) == (3, 4) and np.shape(fig.data[1].z) == (3, 1) and list(fig.data[1].x) == ["MLP"]
    assert fig.layout.coloraxis.cmax == 6 and fig.layout.coloraxis.cmin == -6  # heads: ±max |head|
    assert fig.layout.coloraxis2.cmax == 30  # the MLPs' own scale
    assert len(fig.data[2].x) == 12 and len(fig.data[3].x) == 3  # one clickable marker per cell
    assert fig.layout.shapes[0].x0 == 1.5 and fig.layout.shapes[0].y0 == 0.5
    assert "L%{customdata[0]}H%{customdata[1]}" in fig.data[2].hovertemplate
    only_heads = plots.component_map(heads, np.full(3, np.nan), "t", "v")
    assert [t.type for t in only_heads.data] == ["heatmap", "scatter"]
    with pytest.raises(ValueError, match="one per layer"):
        plots.component_map(heads, np.zeros(4), "t", "v")
    with pytest.raises(ValueError, match="layers, heads"):
        plots.component_map(np.zeros(3), None, "t", "v")


def test_clicks_are_read_back_from_customdata():
    heads = np.zeros((3, 4))
    fig = plots.component_map(heads, np.zeros(3), "t", "v")
    cell = fig.data[2].customdata[4 + 3]  # layer 1, head 3
    assert plots.component_pick({"customdata": list(cell)}, 3, 4) == (1, 3)
    streamlit_form = {"customdata": {"0": 2, "1": -1, "2": 0.5}}  # Streamlit sends a list as a dict
    assert picked_customdata(streamlit_form) == [2, -1, 0.5]
    assert plots.component_pick(streamlit_form, 3, 4) == (2, "mlp")
    for bad in ({}, {"customdata": None}, {"customdata": [7, 0, 0]}, {"customdata": [0, 9, 0]}, {"x": 1}):
        assert plots.component_pick(bad, 3, 4) is None
    pos = plots.position_map(np.zeros((2, 5)), ["embed", "after L0"], [f"{i}·t" for i in range(5)], "t")
    marker = pos.data[1]
    assert len(marker.x) == 10 and plots.map_pick({"customdata": list(marker.customdata[7])}, 2, 5) == (1, 2)
    assert plots.map_pick({"customdata": [5, 0, 0]}, 2, 5) is None


def test_position_map_scale_holds_one_and_every_value():
    values = np.array([[0.0, 0.5, 1.0], [-0.2, 2.5, np.nan]])
    fig = plots.position_map(values, ["L0", "L1"], ["0· a", "1·b", "2·c"], "restored")
    assert fig.data[0].zmax == 2.5 and fig.data[0].zmin == -2.5 and list(fig.data[0].x)[0] == "0·␣a"
    small = plots.position_map(np.full((1, 2), 0.1), ["L0"], ["a", "b"], "t")
    assert small.data[0].zmax == 1.0


def test_layer_parts_agreement_and_compare_figures():
    fig = plots.layer_parts_figure({"attention": np.array([np.nan, 1, 2]), "MLP": np.array([np.nan, -1, 0.5])},
                                   ["embeddings", "L0", "L1"], "logit")
    assert [t.name for t in fig.data] == ["attention", "MLP"] and fig.layout.barmode == "relative"
    with pytest.raises(ValueError, match="expected"):
        plots.layer_parts_figure({"a": np.zeros(2)}, ["x", "y", "z"], "v")
    agree = plots.agreement_figure(np.array([1.0, -2.0, np.nan]), np.array([0.5, -1.0, 3.0]), ["a", "b", "c"], "m")
    assert len(agree.data[1].x) == 2 and list(agree.data[0].x) == [-2.0, 1.0]  # NaN left out; the y = x line
    with pytest.raises(ValueError, match="must agree"):
        plots.agreement_figure(np.zeros(2), np.zeros(3), ["a", "b"], "m")
    comp = plots.compare_figure([" Mary", "the"], np.array([0.9, 0.05]), np.array([0.4, 0.1]), "t")
    assert [t.name for t in comp.data] == ["before", "after knock-out"] and list(comp.data[0].y)[0] == "1. ␣Mary"
    with pytest.raises(ValueError, match="one per token"):
        plots.compare_figure(["a"], np.zeros(2), np.zeros(2))
