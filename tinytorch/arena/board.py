"""The leaderboard: README.md and a static index.html rendered from run files.

Both come from jinja2 templates in templates/; charts are drawn by matplotlib
and embedded as inline SVG, so the page works offline (no CDN, no script).
Reference rows (naive, numpy, optimized) are listed as baselines, never
ranked; unranked backends are listed with their reason.
"""
from __future__ import annotations

import io
import os

from .merging import merge
from .scoring import geomean

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")


def _aggregate(row, key):
    values = [c[key] for c in row.get("cases", []) if c.get(key)]
    return geomean(values)


def ranked_rows(board) -> list[dict]:
    """Rows by score; candidates numbered 1.., references "ref", unranked last with "-"."""
    rows = []
    for row in board["rows"]:
        rows.append({**row, "speedup_vs_naive": _aggregate(row, "speedup_vs_naive"),
                     "fraction_of_numpy": _aggregate(row, "fraction_of_numpy")})
    scored = sorted((r for r in rows if r["score"] is not None), key=lambda r: -r["score"])
    rank = 0
    for row in scored:
        if row["ranked"]:
            rank += 1
            row["rank"], row["rank_label"] = rank, str(rank)
        else:
            row["rank"], row["rank_label"] = None, "ref" if row.get("reference") else "-"
    unscored = sorted((r for r in rows if r["score"] is None), key=lambda r: r["name"])
    for row in unscored:
        row["rank"], row["rank_label"] = None, "ref" if row.get("reference") else "-"
    return scored + unscored


def _svg(figure) -> str:
    import matplotlib.pyplot as plt
    buffer = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none"}):    # text stays text: readable, searchable
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def event_chart(event_name, rows) -> str | None:
    """Bars: each backend's speedup over optimized on one event (log scale)."""
    import matplotlib.pyplot as plt
    bars = [(r["name"], r["events"][event_name]) for r in rows
            if r["events"].get(event_name) and r["unranked_reason"] is None]
    if not bars:
        return None
    figure, axes = plt.subplots(figsize=(6, 0.35 * len(bars) + 1.2))
    names, values = zip(*bars)
    axes.barh(range(len(bars)), values, color=["#888" if v < 1 else "#3a7" for v in values])
    axes.set_yticks(range(len(bars)), names)
    axes.invert_yaxis()
    axes.set_xscale("log")
    axes.axvline(1.0, color="k", linewidth=0.8)
    axes.set_xlabel("speedup over optimized (higher is better)")
    axes.set_title(event_name)
    return _svg(figure)


def gflops_chart(workload, rows) -> str | None:
    """Lines: GFLOP/s against problem size (FLOPs per call); a colour per backend,
    solid for float32 and dashed for float64."""
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(figsize=(7, 4))
    drawn = False
    colours = plt.get_cmap("tab10")
    for index, row in enumerate(rows):
        for dtype, style in (("float32", "-o"), ("float64", "--s")):
            points = sorted((c["flops"], c["gflops"]) for c in row.get("cases", [])
                            if c.get("workload") == workload and c.get("dtype") == dtype
                            and c.get("kind") != "memory" and c.get("gflops")
                            and c.get("status") == "ok")
            if points:
                xs, ys = zip(*points)
                axes.plot(xs, ys, style, color=colours(index % 10), markersize=4,
                          label=f"{row['name']} {dtype}")
                drawn = True
    if not drawn:
        plt.close(figure)
        return None
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("problem size (FLOPs per call)")
    axes.set_ylabel("GFLOP/s")
    axes.set_title(f"{workload}: GFLOP/s against problem size")
    axes.legend(fontsize=7, ncol=2)
    return _svg(figure)


def _environment():
    import jinja2

    def number(value, digits=3):
        return "-" if value is None else f"{value:.{digits}g}"
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html"]),
                             trim_blocks=True, lstrip_blocks=True)
    def rate(value):
        return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
    def times(value):
        return "-" if value is None else f"{value:.3g}x"
    env.filters["number"] = number
    env.filters["times"] = times
    env.filters["rate"] = rate
    return env


def throughput_table(rows) -> tuple[list, list]:
    """Model events' rates: columns (event, shape, unit) and per backend one value per column."""
    columns = list(dict.fromkeys((c["event"], c["label"], c["throughput_unit"])
                                 for r in rows for c in r.get("cases", []) if c.get("throughput")))
    table = []
    for row in rows:
        rates = {(c["event"], c["label"], c.get("throughput_unit")): c["throughput"]
                 for c in row.get("cases", []) if c.get("throughput")}
        if rates:
            table.append((row["name"], [rates.get(column) for column in columns]))
    return columns, table


def context(board) -> dict:
    rows = ranked_rows(board)
    events = board["events"]
    throughput_columns, throughput_rows = throughput_table(rows)
    return {
        "rows": rows, "events": events, "runs": board["runs"], "rules": board["rules"],
        "notes": board.get("notes", []),
        "throughput_columns": throughput_columns, "throughput_rows": throughput_rows,
        "failed": [r for r in rows if r["unranked_reason"]],
        "event_charts": [(e["name"], event_chart(e["name"], rows)) for e in events],
        "gflops_charts": [(w, gflops_chart(w, rows)) for w in
                          dict.fromkeys(e["workload"] or e["kind"] for e in events
                                        if e["kind"] != "memory")],
        "case_failures": [(r["name"], c) for r in rows for c in r.get("cases", [])
                          if c.get("status") not in ("ok", "skipped")],
    }


def render(files: list[tuple[str, dict]], board_dir) -> dict:
    """Write README.md and index.html for these (path, run document) pairs; return the board."""
    import matplotlib
    matplotlib.use("Agg")
    board = merge(files)
    ctx = context(board)
    env = _environment()
    os.makedirs(board_dir, exist_ok=True)
    for template, name in (("README.md.j2", "README.md"), ("index.html.j2", "index.html")):
        results_text = env.get_template(template).render(**ctx)
        path = os.path.join(board_dir, name)
        temp = f"{path}.{os.getpid()}.tmp"
        with open(temp, "w") as f:
            f.write(results_text)
        os.replace(temp, path)
    return board
