"""The leaderboard page as a browser shows it: headless Chromium, asserting on what is laid out.

Chromium is driven over its DevTools pipe (--remote-debugging-pipe), with no
extra Python dependency. The assertions are about the first screen a student
sees (1280x800, nothing scrolled by hand): every backend's rank, score and
per-event numbers laid out inside it, their own row highlighted when the
address names it, their lines drawn in the charts and nobody else's hidden
ones. Screenshots go to $BOARD_SCREENSHOTS (default: the test's tmp folder).

The render-time budget of the class-sized board is the issue's 2 s; a shared
2-core CI machine runs other jobs beside this one, so the assertion allows
SLACK times that and prints what was measured.
"""
import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import board_runs as runs
from conftest import skip_or_fail
from tinytorch.arena import results
from tinytorch.arena.board import render
from tinytorch.arena.charts import TOP

WIDTH, HEIGHT = 1280, 800
BUDGET_S, SLACK = 2.0, 2.0
MAX_PAGE_BYTES = 5 * 1024 * 1024


class DevTools:
    """Just enough of the Chrome DevTools Protocol over --remote-debugging-pipe."""

    def __init__(self, binary, profile):
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()

        def wire():    # Chromium reads commands on fd 3 and writes replies on fd 4
            reads, writes = os.dup(to_chrome_r), os.dup(from_chrome_w)   # clear of 3 and 4
            os.dup2(reads, 3)
            os.dup2(writes, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)
        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            preexec_fn=wire, close_fds=False,    # keep 3 and 4; Python's own fds close on exec
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buffer, self.next_id = b"", 0

    def call(self, method, session=None, **params):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self.buffer:
                chunk = os.read(self.from_chrome, 1 << 16)
                if not chunk:
                    raise RuntimeError("Chromium closed its DevTools pipe")
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, session, expression):
        result = self.call("Runtime.evaluate", session, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url, width=WIDTH, height=HEIGHT) -> str:
        """A new tab at `url`, loaded; its session id."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", session, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", session, url=url)
        loaded = f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
        deadline = time.monotonic() + 60
        while not self.evaluate(session, loaded):     # about:blank is "complete" too
            assert time.monotonic() < deadline, f"{url} did not load within 60 s"
            time.sleep(0.02)
        return session

    def screenshot(self, session, path):
        data = self.call("Page.captureScreenshot", session, format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))

    def close(self):
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.to_chrome)
        os.close(self.from_chrome)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        skip_or_fail("headless Chromium is not installed (apt-get install -y chromium)")
    devtools = DevTools(binary, tmp_path_factory.mktemp("profile"))
    yield devtools
    devtools.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = Path(os.environ.get("BOARD_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _board(folder, docs, latest_only=False):
    paths = runs.write(folder / "results", docs)
    given = paths[-1:] if latest_only else paths
    render([(str(p), results.load(p)) for p in given], folder / "board")
    return folder / "board" / "index.html"


@pytest.fixture(scope="module")
def default_page(tmp_path_factory):
    return _board(tmp_path_factory.mktemp("default"),
                  [runs.run_document(runs.default_field(), isolation=runs.SANDBOXED)])


@pytest.fixture(scope="module")
def class_page(tmp_path_factory):
    """300 students over three weekly runs; the board from the newest, the history from all."""
    return _board(tmp_path_factory.mktemp("class"), runs.class_runs(300, 3), latest_only=True)


#: per ranking row: rank, backend, score and per-event cells, each with where it is laid out.
ROWS = """Array.from(document.querySelectorAll('#_ranking tbody tr')).filter(r => !r.hidden).map(r => {
  const box = e => { const b = e.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; };
  const cells = Array.from(r.cells);
  return {id: r.id, me: r.classList.contains('me'), background: getComputedStyle(cells[0]).backgroundColor,
          rank: cells[0].innerText, name: cells[1].innerText, score: cells[2].innerText,
          events: cells.slice(3, 3 + EVENTS).map(c => c.innerText),
          boxes: cells.slice(0, 3 + EVENTS).map(box)};
})"""
#: the highlight groups of the charts that are drawn, and how many there are.
MARKS = """(() => { const all = Array.from(document.querySelectorAll('svg [id*=".hl~"]'));
  return {total: all.length, shown: all.filter(g => getComputedStyle(g).display !== 'none')
                                      .map(g => g.id.split('.hl~')[1].split('~')[0])}; })()"""


def _rows(browser, session, events):
    return browser.evaluate(session, ROWS.replace("EVENTS", str(events)))


def _inside(box, width=WIDTH, height=HEIGHT):
    left, top, right, bottom = box
    return 0 <= left and right <= width and 0 <= top and bottom <= height


def test_first_screen_shows_every_rank_score_and_event_and_the_linked_row(browser, default_page,
                                                                          shots):
    session = browser.open(default_page.as_uri() + "#alice")
    browser.screenshot(session, shots / "default-board-alice.png")
    events = len(runs.EVENTS)
    rows = _rows(browser, session, events)
    assert browser.evaluate(session, "scrollY") == 0
    by_name = {row["name"]: row for row in rows}
    assert set(by_name) == {"optimized", "numpy", "naive", "alice", "bob", "mallory"}
    for row in rows:                       # laid out inside the first screen, no scrolling
        assert all(_inside(box) for box in row["boxes"]), row
    assert [by_name[n]["rank"] for n in ("alice", "bob", "mallory")] == ["1", "2", "-"]
    assert by_name["optimized"]["rank"] == "ref" and by_name["optimized"]["score"] == "1"
    # alice: 1.5x optimized's own time, optimized beside her 1.04x its own (memory: 1.5x)
    assert by_name["alice"]["events"] == [f"{1.5 * 1.04:.3g}"] * 3 + ["1.5"]
    assert by_name["alice"]["score"] == f"{(1.5 * 1.04) ** 0.75 * 1.5 ** 0.25:.3g}"
    assert all(value not in ("", "-") for value in by_name["bob"]["events"])
    assert by_name["mallory"]["score"] == "-" and set(by_name["mallory"]["events"]) == {"-"}
    text = browser.evaluate(session, "document.getElementById('_ranking').innerText")
    assert "unranked: matmul 64x64x64 float32: wrong answer on timed inputs" in text

    # The linked row is highlighted, and only it; its section is open; its chart marks drawn.
    assert [row["name"] for row in rows if row["me"]] == ["alice"]
    assert by_name["alice"]["background"] != by_name["bob"]["background"]
    assert browser.evaluate(session, "document.getElementById('alice.cases').open")
    marks = browser.evaluate(session, MARKS)
    assert marks["shown"] and set(marks["shown"]) == {"alice"}
    charts = browser.evaluate(session, "Array.from(document.querySelectorAll('figure svg'))"
                                       ".map(s => s.getBoundingClientRect().width)")
    assert len(charts) >= 4 and all(width > 300 for width in charts)   # scores, events, 2 rates

    showing = "document.getElementById('_showing').innerText"
    assert browser.evaluate(session, showing) == " In red: alice."

    # Another row, by the address alone: the highlight follows.
    browser.evaluate(session, "location.hash = '#bob'")
    rows = _rows(browser, session, events)
    assert [row["name"] for row in rows if row["me"]] == ["bob"]
    assert set(browser.evaluate(session, MARKS)["shown"]) == {"bob"}
    browser.evaluate(session, "location.hash = '#mallory'")        # unranked: nothing drawn
    assert [row["name"] for row in _rows(browser, session, events) if row["me"]] == ["mallory"]
    assert browser.evaluate(session, MARKS)["shown"] == []
    assert "mallory is unranked" in browser.evaluate(session, showing)


def test_the_ranking_sorts_and_filters(browser, default_page):
    session = browser.open(default_page.as_uri())
    browser.evaluate(session, "document.querySelectorAll('#_ranking th')[3].click()")   # matmul
    names = [row["name"] for row in _rows(browser, session, len(runs.EVENTS))]
    assert names[:4] == ["numpy", "alice", "optimized", "bob"] and names[-1] == "mallory"
    browser.evaluate(session, "document.querySelectorAll('#_ranking th')[3].click()")
    names = [row["name"] for row in _rows(browser, session, len(runs.EVENTS))]
    assert names[:4] == ["naive", "bob", "optimized", "alice"]
    browser.evaluate(session, """(() => { const box = document.getElementById('_filter');
        box.value = 'wrong answer'; box.dispatchEvent(new Event('input')); })()""")
    assert [row["name"] for row in _rows(browser, session, len(runs.EVENTS))] == ["mallory"]
    assert browser.evaluate(session, "document.getElementById('_count').innerText") == \
        "1 of 6 backends"


def test_an_unsandboxed_run_is_said_on_the_first_screen(browser, tmp_path, shots):
    unsandboxed = {"sandboxed": False, "tool": None, "mode": None}
    page = _board(tmp_path, [runs.run_document(runs.default_field(), isolation=unsandboxed)])
    session = browser.open(page.as_uri())
    browser.screenshot(session, shots / "unsandboxed-board.png")
    banner = browser.evaluate(session, """(() => { const b = document.getElementById('_unsandboxed');
        const r = b.getBoundingClientRect();
        return {text: b.innerText, box: [r.left, r.top, r.right, r.bottom]}; })()""")
    assert "--unsandboxed" in banner["text"] and _inside(banner["box"])
    readme = (page.parent / "README.md").read_text()
    assert readme.split("\n\n")[1].startswith("> **Warning: not sandboxed.**")


def test_a_hostile_field_shows_as_text(browser, tmp_path, shots):
    page = _board(tmp_path, [runs.hostile_run()])
    session = browser.open(page.as_uri() + "#alice")
    browser.screenshot(session, shots / "hostile-board.png")
    assert browser.evaluate(session, "typeof window.pwned") == "undefined"
    text = browser.evaluate(session, "document.body.innerText")
    assert "'\\u043eptimized'" in text and "'$x^{$'" in text
    assert browser.evaluate(session, "document.images.length") == 0
    assert browser.evaluate(session, "document.querySelectorAll('#_ranking tbody tr').length") == \
        len(runs.hostile_run()["backends"])


def test_a_class_of_300_renders_in_budget_and_stays_readable(browser, class_page, shots):
    size = class_page.stat().st_size
    assert size < MAX_PAGE_BYTES, f"{size / 1e6:.1f} MB"
    session = browser.open(class_page.as_uri() + "#student150")
    # From navigation to the second frame painted after load (poll latency included).
    painted_ms = browser.evaluate(session, "new Promise(done => requestAnimationFrame("
                                           "() => requestAnimationFrame(() => done(performance.now()))))")
    print(f"\n300-backend board: {size / 1e6:.2f} MB, painted {painted_ms:.0f} ms after navigation")
    assert painted_ms < BUDGET_S * SLACK * 1000, f"{painted_ms:.0f} ms"
    browser.screenshot(session, shots / "class-board-student150.png")

    rows = _rows(browser, session, len(runs.EVENTS))
    assert len(rows) == 303
    me = next(row for row in rows if row["me"])
    assert me["name"] == "student150" and _inside(me["boxes"][0])
    seen = [row for row in rows if _inside(row["boxes"][0])]
    assert len(seen) > 15 and me in seen
    for row in seen:
        assert all(_inside(box) for box in row["boxes"]) and row["rank"] and row["score"], row
    header = browser.evaluate(session, "document.querySelector('#_ranking th').getBoundingClientRect().top")
    assert 0 <= header < 5                 # the header sticks to the top of the screen

    marks = browser.evaluate(session, MARKS)
    assert marks["total"] > 300 * 4 and set(marks["shown"]) == {"student150"}
    # Every chart draws the references, the top backends, the ceiling and student150 as
    # lines (a line is a clipped path of a Line2D; ticks are not clipped), not the class.
    lines = browser.evaluate(session, """Array.from(document.querySelectorAll('figure svg')).map(s =>
        Array.from(s.querySelectorAll('g[id*="line2d"] > path[clip-path]'))
             .filter(p => p.getClientRects().length).length)""")
    assert len(lines) >= 5 and max(lines) <= 2 * (3 + TOP + 2), lines   # two dtype panels

    session = browser.open(class_page.as_uri())
    browser.screenshot(session, shots / "class-board-top.png")
    rows = _rows(browser, session, len(runs.EVENTS))
    assert [row["rank"] for row in rows[:10]] == [str(i) for i in range(1, 11)]
    assert all(_inside(box) for row in rows[:10] for box in row["boxes"])
