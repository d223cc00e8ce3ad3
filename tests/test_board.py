"""What the board says, read from the files it writes: ranks explained, numbers that agree.

README.md is read as GitHub renders it and index.html as HTML (test_board_escaping's
parsers); the page in a browser is tests/test_board_chromium.py.
"""
from __future__ import annotations

import html
import math
import re

import pytest

import board_runs as runs
import cmarkgfm
from test_board_escaping import Page
from tinytorch.arena import merging, results
from tinytorch.arena.board import measures_every_case, ranked_rows, render
from tinytorch.arena.history import score_history


def _render(folder, docs, given=None):
    paths = runs.write(folder / "results", docs)
    files = [(str(p), results.load(p)) for p in (given or paths)]
    board = render(files, folder / "board")
    return (board, (folder / "board" / "README.md").read_text(),
            (folder / "board" / "index.html").read_text())


def _shown(readme) -> str:
    """README.md's text as GitHub shows it (escapes and word joiners gone)."""
    rendered = cmarkgfm.github_flavored_markdown_to_html(readme)
    return html.unescape(re.sub(r"<[^>]+>", "", rendered)).replace("\u2060", "")


def _section(page_html, anchor):
    """The HTML of one backend's per-shape section."""
    start = page_html.index(f'id="{anchor}.cases"')
    return page_html[start:page_html.index("</details>", start)]


def test_model_throughput_shows_the_ratio_the_event_score_uses(tmp_path):
    board, readme, page_html = _render(tmp_path, [runs.run_document(runs.default_field())])
    alice = next(r for r in ranked_rows(board) if r["name"] == "alice")
    # alice: 1.5x optimized's own time; optimized timed beside her took 1.04x its own.
    own = {c["label"]: c["throughput"] for c in alice["cases"] if c.get("throughput")}
    table = readme.split("## Model throughput")[1].split("\n## ")[0]
    row = next(line for line in table.splitlines() if line.startswith("| alice |"))
    cells = row.strip("|").split("|")[1:]
    ratios = [float(re.search(r"\(([0-9.]+)×\)", c).group(1)) for c in cells]
    assert [c.split(" (")[0].strip() for c in cells] == [f"{v:,.0f}" for v in own.values()]
    # The event's score is the geometric mean of exactly these ratios ...
    assert math.prod(ratios) ** (1 / len(ratios)) == pytest.approx(
        alice["events"]["MLP training step"], rel=2e-3)
    # ... which differ from dividing rows of the table: optimized's row is its own turn.
    optimized = next(r for r in ranked_rows(board) if r["name"] == "optimized")
    divided = [own[c["label"]] / c["throughput"] for c in optimized["cases"] if c.get("throughput")]
    assert divided == pytest.approx([1.5, 1.5]) and ratios == pytest.approx([1.56, 1.56], rel=1e-2)
    assert "which optimized measured in its own turn" in readme
    assert "which optimized measured in its own turn" in page_html


def test_unranked_rows_show_their_reason_and_no_speed_figures(tmp_path):
    field = runs.default_field() + [runs.backend("late", 1.0, failure=(
        "violation", "interference: worked while another backend was timed")),
        runs.backend("newer", 1.0, failure=("sandbox-escape", "a status this board predates"))]
    _, readme, page_html = _render(tmp_path, [runs.run_document(field)])
    for name in ("mallory", "late", "newer"):       # an unknown status never passes
        per_event = readme.split("## Per event")[1].split("\n## ")[0]
        line = next(x for x in per_event.splitlines() if x.startswith(f"| {name} |"))
        assert set(line.strip("| ").split(" | ")[1:]) == {"-"}
        assert f"| {name} |" not in readme.split("## Model throughput")[1].split("\n## ")[0]
        section = _section(page_html, name)
        assert "Time ms" not in section and "GFLOP/s" not in section and "Unranked:" in section
    assert "interference: worked while another backend was timed" in _shown(readme)
    assert "violation" in _section(page_html, "late")


def test_the_naive_column_shows_only_where_naive_timed_every_shape(tmp_path):
    board, _, page_html = _render(tmp_path / "usual", [runs.run_document(runs.default_field())])
    assert not measures_every_case(board, "naive") and measures_every_case(board, "numpy")
    assert all(r["speedup_vs_naive"] is None for r in ranked_rows(board))
    assert "&times; naive" not in page_html and "&times; numpy" in page_html
    assert "Naive timed only the smallest shapes" in page_html

    doc = runs.run_document(runs.default_field())
    naive = runs.backend("naive-everywhere", 0.004, True)["cases"]      # every shape timed
    doc["backends"]["naive"]["cases"] = naive
    board, _, page_html = _render(tmp_path / "full", [doc])
    assert measures_every_case(board, "naive")
    alice = next(r for r in ranked_rows(board) if r["name"] == "alice")
    assert alice["speedup_vs_naive"] == pytest.approx(1.5 / 0.004, rel=1e-6)
    assert "&times; naive" in _section(page_html, "alice")


def test_isolation_is_said_for_every_run(tmp_path):
    _, readme, page_html = _render(tmp_path / "old", [runs.run_document(runs.default_field())])
    assert "Isolation was not recorded for run 20261127T040726Z-d3fe72" in _shown(readme)
    assert "not recorded" in page_html and "_unsandboxed" not in page_html
    _, readme, page_html = _render(tmp_path / "new", [runs.run_document(
        runs.default_field(), isolation=runs.SANDBOXED)])
    assert "sandboxed with bubblewrap 0.8.0 (as root)" in _shown(readme)
    assert "not recorded" not in readme and "Not sandboxed" not in page_html


def test_the_machine_description_shows_keys_it_gains(tmp_path):
    doc = runs.run_document(runs.default_field())
    doc["machine"].update(thread_limit=1, compiler_flags="-O3 -march=native", commit="abc123")
    _, _, page_html = _render(tmp_path, [doc])
    cells = Page(page_html).cells
    for key, value in (("thread_limit", "1"), ("compiler_flags", "-O3 -march=native"),
                       ("commit", "abc123"), ("blas", "internal_api=openblas")):
        assert key in cells and any(c.startswith(value) for c in cells), key


def test_model_gflops_get_a_chart_and_a_table_column(tmp_path):
    _, _, page_html = _render(tmp_path, [runs.run_document(runs.default_field())])
    assert "MLP training step: GFLOP/s against problem size" in page_html
    section = _section(page_html, "alice")
    row = next(r for r in section.split("<tr>") if "batch=64" in r)
    assert "samples/s" in row and "GFLOP/s" in row


def test_history_draws_each_run_and_names_a_file_it_leaves_out(tmp_path):
    docs = runs.class_runs(students=12, runs=3)
    paths = runs.write(tmp_path / "results", docs)
    (tmp_path / "results" / "broken.json").write_text("{not json")
    history = score_history([(str(paths[-1]), results.load(paths[-1]))])
    assert [run["run_id"] for run in history["runs"]] == [d["run_id"] for d in docs]
    assert len(history["skipped"]) == 1 and "broken.json" in history["skipped"][0]
    assert not history["events_differ"]
    scores = [run["scores"]["student000"] for run in history["runs"]]
    assert scores == sorted(scores)                     # the fixture's students improve weekly
    render([(str(paths[-1]), results.load(paths[-1]))], tmp_path / "board")
    page_html = (tmp_path / "board" / "index.html").read_text()
    assert "Scores over the 3 runs in the results folder" in page_html
    assert "History leaves out" in page_html and "broken.json" in page_html


def test_a_folder_of_runs_gets_one_note_not_one_per_backend(tmp_path):
    docs = runs.class_runs(students=12, runs=2)
    board = merging.merge(merging.load_all(runs.write(tmp_path, docs)))
    assert [n for n in board["notes"] if "measured in several files" in n] == [
        "12 backends were measured in several files; the board keeps each one's newest row, "
        "and each backend's section names the files it dropped"]
    assert all(row["replaced"] == ["000-run.json"] and row["run_id"].endswith("week1")
               for row in board["rows"] if not row.get("reference"))
