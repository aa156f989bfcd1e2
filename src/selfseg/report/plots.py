"""Summary plots of the report, drawn with matplotlib and returned as SVG text to embed in the page."""

from __future__ import annotations

import io as stdio

import matplotlib
import numpy as np
from matplotlib.figure import Figure

__all__ = ["benchmark_svg", "dice_svg", "seconds_svg"]

_STYLE = {"svg.fonttype": "none", "svg.hashsalt": "selfseg", "font.size": 9}  # text as text; stable ids


def _svg(figure: Figure) -> str:
    buffer = stdio.StringIO()
    with matplotlib.rc_context(_STYLE):
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # the XML prologue and doctype have no place inside HTML


def _strip_plot(groups: dict[str, list[float]], *, title: str, label: str, limits: tuple | None = None) -> str:
    """A box plot per group with its points jittered over it."""
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(max(3.5, 1.1 * len(groups) + 1.5), 2.8))
        axes = figure.add_subplot()
        names = list(groups)
        axes.boxplot([groups[name] for name in names], showfliers=False, widths=0.5)
        rng = np.random.default_rng(0)
        for position, name in enumerate(names, start=1):
            values = np.asarray(groups[name], dtype=float)
            axes.scatter(position + rng.uniform(-0.15, 0.15, values.size), values, s=6, alpha=0.6, color="#1f77b4")
        crowded = len(names) > 3
        axes.set_xticks(range(1, len(names) + 1), names, rotation=20 if crowded else 0, ha="right" if crowded else "center")
        axes.set_ylabel(label)
        axes.set_title(title)
        if limits is not None:
            axes.set_ylim(*limits)
        axes.grid(axis="y", alpha=0.3)
        return _svg(figure)


def dice_svg(groups: dict[str, list[float]]) -> str:
    """Dice against the ground truth per method or run: box and points."""
    return _strip_plot(groups, title="Dice per image", label="Dice", limits=(0, 1.02))


def seconds_svg(groups: dict[str, list[float]]) -> str:
    """Seconds of the fit per image (per slice for volumes), per method or run."""
    return _strip_plot(groups, title="Seconds per image", label="seconds")


def benchmark_svg(rows: list[dict[str, str]]) -> str:
    """Mean Dice per dataset and method of a benchmark.csv (its ground-truth-free "auto" rule), as bars."""
    auto = [row for row in rows if row.get("foreground") == "auto"] or rows
    datasets = sorted({row["dataset"] for row in auto})
    methods = sorted({row["method"] for row in auto})
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(max(4.0, 1.2 * len(datasets) + 1.5), 2.8))
        axes = figure.add_subplot()
        width = 0.8 / max(1, len(methods))
        for k, method in enumerate(methods):
            means = [next((float(r["dice"]) for r in auto if r["dataset"] == d and r["method"] == method), np.nan)
                     for d in datasets]
            axes.bar(np.arange(len(datasets)) + k * width, means, width, label=method)
        axes.set_xticks(np.arange(len(datasets)) + 0.4 - width / 2, datasets)
        axes.set_ylim(0, 1.02)
        axes.set_ylabel("mean Dice")
        axes.set_title("Benchmark, masks chosen without ground truth")
        axes.legend(fontsize=7, ncols=min(len(methods), 5))
        axes.grid(axis="y", alpha=0.3)
        return _svg(figure)
