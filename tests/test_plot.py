"""Tests for levers.plot: the house style and the recurring figure helpers (Agg backend)."""

import io

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.colors import is_color_like, to_hex
from matplotlib.figure import Figure

from levers.plot import PALETTE, curves, figure, style

plt.switch_backend("Agg")


@pytest.fixture(autouse=True)
def isolated():
    """Each test starts from matplotlib's current defaults and leaves no figure open."""
    with mpl.rc_context():
        yield
    plt.close("all")


def test_palette_is_eight_distinct_colours():
    assert len(PALETTE) == len(set(PALETTE)) == 8
    assert all(is_color_like(c) for c in PALETTE)


def test_style_sets_the_house_rcparams():
    mpl.rcParams["axes.grid"] = False
    mpl.rcParams["axes.prop_cycle"] = mpl.cycler(color=["red"])
    style()
    rc = mpl.rcParams
    assert tuple(rc["figure.figsize"]) == (6.4, 3.6)
    assert rc["axes.grid"] is True
    assert rc["axes.spines.top"] is False and rc["axes.spines.right"] is False
    assert rc["axes.titleweight"] == "bold"
    assert rc["legend.frameon"] is False
    assert rc["svg.hashsalt"] == "levers"
    assert [to_hex(c) for c in rc["axes.prop_cycle"].by_key()["color"]] == [
        c.lower() for c in PALETTE]


def test_style_is_idempotent():
    style()
    first = dict(mpl.rcParams)
    style()
    assert dict(mpl.rcParams) == first


def test_figure_labels_the_axes():
    fig, ax = figure("Accuracy vs bits", "bits per weight", "accuracy (%)")
    assert isinstance(fig, Figure) and isinstance(ax, Axes)
    assert ax.get_title() == "Accuracy vs bits"
    assert ax.get_xlabel() == "bits per weight"
    assert ax.get_ylabel() == "accuracy (%)"
    assert fig.get_axes() == [ax]


def test_figure_with_several_columns_labels_each_axes():
    fig, axes = figure("Layers", "weight value", "count", ncols=3, figsize=(9.0, 3.0))
    assert isinstance(axes, np.ndarray) and axes.shape == (3,)
    assert fig.get_suptitle() == "Layers"
    assert all(a.get_xlabel() == "weight value" and a.get_ylabel() == "count" for a in axes)
    assert tuple(fig.get_size_inches()) == pytest.approx((9.0, 3.0))


@pytest.mark.parametrize("labels", [("", "x", "y"), ("t", "", "y"), ("t", "x", ""),
                                    (None, "x", "y"), ("t", None, "y")])
def test_figure_requires_title_and_labels(labels):
    before = plt.get_fignums()
    with pytest.raises(ValueError, match="every figure needs a title, an x label and a y label"):
        figure(*labels)
    assert plt.get_fignums() == before


@pytest.mark.parametrize("ncols", [0, -1, 1.5, "2", True])
def test_figure_rejects_bad_ncols(ncols):
    before = plt.get_fignums()
    with pytest.raises(ValueError, match=r"ncols must be a positive int, got"):
        figure("t", "x", "y", ncols=ncols)
    assert plt.get_fignums() == before


def test_curves_draws_one_line_per_series():
    series = {"fp32": ([1, 2, 3], [0.9, 0.8, 0.7]), "int8": ([1, 2], [0.5, 0.4])}
    fig, ax = curves(series, "Trade-off", "size (MB)", "accuracy")
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["fp32", "int8"]
    assert list(lines[0].get_xdata()) == [1, 2, 3] and list(lines[1].get_ydata()) == [0.5, 0.4]
    assert [to_hex(line.get_color()) for line in lines] == [c.lower() for c in PALETTE[:2]]
    assert all(line.get_marker() == "o" for line in lines)
    assert ax.get_legend() is not None
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("Trade-off", "size (MB)",
                                                                  "accuracy")
    assert ax.get_xscale() == ax.get_yscale() == "linear"


def test_curves_options():
    fig, ax = curves({"a": ([1, 10, 100], [1, 2, 3])}, "t", "x", "y", logx=True, logy=True,
                     markers=False)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_lines()[0].get_marker() in (None, "None", "")
    assert ax.get_legend() is None  # one series needs no legend


def test_curves_colours_cycle_through_the_palette():
    series = {f"s{i}": ([0, 1], [i, i]) for i in range(len(PALETTE) + 2)}
    fig, ax = curves(series, "t", "x", "y")
    colours = [to_hex(line.get_color()) for line in ax.get_lines()]
    assert colours[len(PALETTE):] == [c.lower() for c in PALETTE[:2]]


@pytest.mark.parametrize(("series", "match"), [
    ({}, "series must name at least one"),
    ({"ok": ([1], [1]), "bad": ([1, 2, 3], [1, 2])},
     r"series 'bad': x and y lengths differ \(3 vs 2\)"),
])
def test_curves_rejects_bad_series(series, match):
    before = plt.get_fignums()
    with pytest.raises(ValueError, match=match):
        curves(series, "t", "x", "y")
    assert plt.get_fignums() == before  # no half-drawn figure left open


def test_curves_requires_labels():
    with pytest.raises(ValueError, match="every figure needs a title"):
        curves({"a": ([0], [0])}, "t", "", "y")


def test_same_numbers_give_the_same_picture():
    def render() -> bytes:
        style()
        fig, _ = curves({"a": ([0, 1, 2], [2, 0, 1]), "b": ([0, 2], [1, 1])}, "t", "x", "y")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None})
        plt.close(fig)
        return buffer.getvalue()

    assert render() == render()
