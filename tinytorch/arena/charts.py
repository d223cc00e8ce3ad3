"""The board's charts: matplotlib figures embedded in index.html as inline SVG (offline).

Each chart draws the references, the top backends by score and, hidden, one
group per other backend (`<g id="...hl~ANCHOR">`) that the page shows when that
backend's anchor is in the address: a class of 300 stays readable (never 300
visible lines) and `index.html#alice` still draws alice. Charts that compare
ratios put them on a linear axis starting at zero and say so; rates are drawn
on log axes, labelled as such. Every label a submission controls arrives
already shown (display.name / display.text) and goes through display.chart.
"""
from __future__ import annotations

import hashlib
import io
import math
import re

from . import display

TOP = 5                  # backends drawn in every chart besides the references
HIGHLIGHT = "#d62728"    # the backend named in the address
CLASS = "#9ecae1"        # the rest of the class
PALETTE = ["#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
REFERENCES = {"optimized": {"color": "black"},
              "numpy": {"color": "#1f77b4", "linestyle": "--"},
              "naive": {"color": "#7f7f7f", "linestyle": ":"}}


def _figure(width, height, columns=1, **kwargs):
    from matplotlib.figure import Figure
    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.subplots(1, columns, squeeze=False, **kwargs)[0]


def svg(figure, prefix: str) -> str:
    """The figure as an inline <svg>: its ids prefixed with `prefix.` (unique on the page,
    and unlike any backend anchor), without matplotlib's comments, metadata and style."""
    import matplotlib
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "tinytorch",
                                "font.sans-serif": ["DejaVu Sans", "Arial"]}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<!--.*?-->|<metadata>.*?</metadata>|<style[^>]*>.*?</style>", "", text,
                  flags=re.S)
    return re.sub(r'(\bid="|href="#|url\(#)', lambda m: f"{m.group(1)}{prefix}.", text)


def _hidden(artist, row, part=""):
    """Mark `artist` as drawn only when `row`'s anchor is in the address (on top of the rest)."""
    artist.set_gid(f"hl~{row['anchor']}{'~' + part if part else ''}")
    artist.set_zorder(10)


def _label(row) -> str:
    return display.chart(row["name"])


def _top(rows):
    return [r for r in rows if r["ranked"]][:TOP]


def _jitter(row, index) -> float:
    """A fixed offset in [-0.25, 0.25) per backend and row of a strip chart."""
    digest = hashlib.sha256(f"{row['anchor']}/{index}".encode()).digest()
    return digest[0] / 256 * 0.5 - 0.25


def score_distribution(rows, prefix) -> str | None:
    """A histogram of the ranked backends' scores, the references as lines."""
    ranked = [r for r in rows if r["ranked"]]
    if not ranked:
        return None
    references = [r for r in rows if r["reference"] and r["score"]]
    right = 1.08 * max(r["score"] for r in ranked + references)
    figure, (axes,) = _figure(6.2, 2.6)
    axes.hist([r["score"] for r in ranked], bins=[right * i / 30 for i in range(31)],
              color=CLASS, edgecolor="white", label=f"{len(ranked)} ranked backends")
    for row in references:
        axes.axvline(row["score"], linewidth=1.2, label=f"{_label(row)} {row['score']:.3g}",
                     **REFERENCES.get(row["anchor"], {}))
    for row in ranked:
        _hidden(axes.axvline(row["score"], color=HIGHLIGHT, linewidth=2.5), row)
        _hidden(axes.text(row["score"], 0.97, f" {_label(row)} {row['score']:.3g}",
                          color=HIGHLIGHT, va="top", fontweight="bold",
                          transform=axes.get_xaxis_transform()), row, "t")
    axes.set_xlim(0, right)
    axes.yaxis.get_major_locator().set_params(integer=True)
    axes.set_xlabel("score: geometric mean of the per-event ratios (linear axis from 0)")
    axes.set_ylabel("backends")
    axes.set_title("Scores of the class")
    axes.legend(fontsize=8, loc="upper right", frameon=False)
    return svg(figure, prefix)


def event_ratios(rows, events, prefix) -> str | None:
    """Per event, every ranked backend's ratio as a dot; the top backends and references marked."""
    names = [e["name"] for e in events]

    def points(row):
        return [(row["events"][n], i) for i, n in enumerate(names) if row["events"].get(n)]
    ranked = [r for r in rows if r["ranked"] and points(r)]
    if not ranked:
        return None
    references = [r for r in rows if r["reference"] and points(r)]
    right = 1.08 * max(x for r in ranked + references for x, _ in points(r))
    figure, (axes,) = _figure(6.2, 0.42 * len(names) + 1.5)
    axes.scatter(*zip(*((x, y + _jitter(r, y)) for r in ranked for x, y in points(r))), s=14,
                 color=CLASS, linewidths=0, label=f"{len(ranked)} ranked backends")
    for row in references:
        axes.plot(*zip(*points(row)), "|", markersize=16, markeredgewidth=2, label=_label(row),
                  color=REFERENCES.get(row["anchor"], {}).get("color"))
    for colour, row in zip(PALETTE, _top(ranked)):
        axes.plot(*zip(*points(row)), "o", markersize=5, color=colour, label=_label(row))
    for row in ranked:
        _hidden(axes.plot(*zip(*points(row)), "o", markersize=11, markerfacecolor="none",
                          markeredgecolor=HIGHLIGHT, markeredgewidth=2.2)[0], row)
    axes.set_yticks(range(len(names)), [display.chart(display.text(n, 40)) for n in names])
    axes.set_ylim(len(names) - 0.5, -0.5)
    axes.set_xlim(0, right)
    axes.set_xlabel("ratio to optimized, timed beside each backend (higher is better; "
                    "linear axis from 0)")
    axes.set_title("Each event across the class")
    axes.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return svg(figure, prefix)


def _decade(value, _position=None) -> str:
    """A log axis's tick as plain text (0.01, 1, 100, 1e6): no mathtext to parse."""
    return f"{value:g}" if 1e-3 <= value < 1e4 else f"1e{math.log10(value):.0f}"


def _rate_points(row, workload, dtype):
    return sorted((c["flops"], c["gflops"]) for c in row["cases"]
                  if c.get("status") == "ok" and c.get("kind") != "memory"
                  and (c.get("workload") or c.get("kind")) == workload
                  and c.get("dtype") == dtype and c.get("gflops") and c.get("flops"))


def gflops_by_size(workload, title, rows, ceilings, prefix) -> str | None:
    """GFLOP/s against FLOPs per call, a panel per dtype: references, top backends, the
    run's BLAS rate as the ceiling."""
    shown = [r for r in rows if r["reference"] or r["ranked"]]
    dtypes = [d for d in sorted({c["dtype"] for r in shown for c in r["cases"]})
              if any(_rate_points(r, workload, d) for r in shown)]
    if not dtypes:
        return None
    figure, panels = _figure(4.2 * len(dtypes) + 1.6, 3.3, len(dtypes), sharey=True)
    for axes, dtype in zip(panels, dtypes):
        for row in shown:
            points = _rate_points(row, workload, dtype)
            if points and row["reference"]:
                axes.plot(*zip(*points), marker="s", markersize=3, linewidth=1.4,
                          label=_label(row), **REFERENCES.get(row["anchor"], {}))
            elif points:
                _hidden(axes.plot(*zip(*points), "-o", color=HIGHLIGHT, linewidth=2.5,
                                  markersize=4)[0], row, dtype)
        for colour, row in zip(PALETTE, _top(rows)):
            points = _rate_points(row, workload, dtype)
            if points:
                axes.plot(*zip(*points), "-o", color=colour, markersize=3.5, linewidth=1.2,
                          label=_label(row))
        if ceilings.get(dtype):
            axes.axhline(ceilings[dtype], color="#2ca02c", linestyle="-.", linewidth=1,
                         label="BLAS ceiling (numpy's best matmul)")
            axes.annotate(f"BLAS ceiling {ceilings[dtype]:.3g} GFLOP/s", (0.02, ceilings[dtype]),
                          xycoords=("axes fraction", "data"), xytext=(0, 3),
                          textcoords="offset points", fontsize=7, color="#2ca02c")
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.minorticks_off()        # a tick per decade reads as well, and draws 5x faster
        axes.xaxis.set_major_formatter(_decade)
        axes.yaxis.set_major_formatter(_decade)
        axes.set_title(dtype, fontsize=9)
        axes.set_xlabel("problem size: FLOPs per call (log)")
    panels[0].set_ylabel("GFLOP/s (log)")
    figure.suptitle(f"{display.chart(title)}: GFLOP/s against problem size", fontsize=10)
    handles = {label: handle for axes in panels
               for handle, label in zip(*axes.get_legend_handles_labels())}
    panels[-1].legend(handles.values(), handles.keys(), fontsize=7, loc="center left",
                      bbox_to_anchor=(1.02, 0.5), frameon=False)
    return svg(figure, prefix)


def score_history(history, rows, prefix) -> str | None:
    """Each backend's score in every run kept in the results folder (two runs or more)."""
    def series(row):
        return [run["scores"].get(row["anchor"], math.nan) for run in history]
    candidates = [r for r in rows if not r["reference"] and
                  any(math.isfinite(v) for v in series(r))]
    if len(history) < 2 or not candidates:
        return None
    tops = [r for r in _top(rows) if r in candidates]
    figure, (axes,) = _figure(6.2, 2.8)
    xs = range(len(history))
    axes.axhline(1.0, color="black", linewidth=1, label="optimized (1.0)")
    for colour, row in zip(PALETTE, tops):
        axes.plot(xs, series(row), "-o", color=colour, markersize=4, label=_label(row))
    for row in candidates:
        _hidden(axes.plot(xs, series(row), "-o", color=HIGHLIGHT, linewidth=2.5,
                          markersize=5)[0], row)
    highest = max(v for r in candidates for v in series(r) if math.isfinite(v))
    axes.set_ylim(0, 1.1 * max(highest, 1.0))
    axes.set_xticks(list(xs), [display.chart(display.text(run["label"], 24)) for run in history],
                    fontsize=7)
    axes.set_ylabel("score (linear axis from 0)")
    axes.set_title(f"Scores over the {len(history)} runs in the results folder")
    axes.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return svg(figure, prefix)
