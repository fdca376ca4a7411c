"""One house style for the book's figures.

`style()` sets matplotlib's defaults once per notebook; the helpers draw the figures that recur
across chapters so they look alike everywhere. Figures are rendered by the Agg backend with fixed
fonts and no timestamps, so the same numbers give the same picture on every machine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

#: Colours that stay distinguishable for the common forms of colour blindness (Okabe & Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
           "#000000")


def style() -> None:
    """Apply the house style: readable sizes, light grid, colour-blind-safe colours, and an
    opaque white background, so that a figure stays legible on the book's dark theme."""
    mpl.rcParams.update({
        "figure.figsize": (6.4, 3.6),
        "figure.dpi": 100,
        "savefig.dpi": 100,
        "font.size": 10,
        "axes.titlesize": 11,
        "axes.titleweight": "bold",
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.prop_cycle": mpl.cycler(color=PALETTE),
        "legend.frameon": False,
        # opaque white, also in the book's dark mode (book/_static/levers.css frames it)
        "figure.facecolor": "white",
        "savefig.facecolor": "white",
        "savefig.transparent": False,
        "svg.hashsalt": "levers",
        "path.simplify": False,
    })


def figure(title: str, xlabel: str, ylabel: str, ncols: int = 1,
           figsize: tuple[float, float] | None = None) -> tuple[Figure, Axes]:
    """A new figure with a title and labelled axes (units belong in the labels).

    Returns the figure and its axes (an array of axes when ``ncols > 1``, each labelled).
    """
    if not title or not xlabel or not ylabel:
        raise ValueError("every figure needs a title, an x label and a y label")
    if not isinstance(ncols, int) or isinstance(ncols, bool) or ncols < 1:
        raise ValueError(f"ncols must be a positive int, got {ncols!r}")
    fig, ax = plt.subplots(1, ncols, figsize=figsize, layout="constrained")
    fig.suptitle(title, fontweight="bold") if ncols > 1 else ax.set_title(title)
    for a in (ax.flat if ncols > 1 else [ax]):
        a.set_xlabel(xlabel)
        a.set_ylabel(ylabel)
    return fig, ax


def curves(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str,
           xlabel: str, ylabel: str, logx: bool = False, logy: bool = False,
           markers: bool = True) -> tuple[Figure, Axes]:
    """Plot named ``(x, y)`` series on one set of axes: the book's trade-off curves.

    Examples
    --------
    >>> fig, ax = curves({"a": ([0, 1], [1, 0])}, "t", "x", "y")
    >>> plt.close(fig)
    """
    if not series:
        raise ValueError("series must name at least one (x, y) pair")
    for name, (x, y) in series.items():  # before the figure exists, so a failure leaks none
        if len(x) != len(y):
            raise ValueError(f"series {name!r}: x and y lengths differ ({len(x)} vs {len(y)})")
    fig, ax = figure(title, xlabel, ylabel)
    for i, (name, (x, y)) in enumerate(series.items()):
        ax.plot(x, y, marker="o" if markers else None, markersize=3, label=name,
                color=PALETTE[i % len(PALETTE)])
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if len(series) > 1:
        ax.legend()
    return fig, ax
