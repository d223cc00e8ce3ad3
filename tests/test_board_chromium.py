"""The leaderboard page as a browser shows it: headless Chromium, asserting on the visible text.

Chromium is driven over its DevTools pipe (--remote-debugging-pipe), so the
test reads `document.body.innerText` (what a reader sees) and the size of
every chart as laid out, with no extra Python dependency.
"""
import json
import os
import shutil
import subprocess
import time

import pytest

from conftest import skip_or_fail
from tinytorch.arena import results
from tinytorch.arena.board import render


def _case(event, kind, label, time_ms, ref_ms, flops, status="ok", reason=None):
    case = {"event": event, "kind": kind, "workload": kind, "label": label, "dtype": "float32",
            "params": {}, "flops": flops, "status": status, "reason": reason, "error": 1e-7}
    if status == "ok":
        case.update(time_ms={"median": time_ms, "min": time_ms, "max": time_ms, "spread": 0.0,
                             "samples": [time_ms], "calls_per_batch": 1},
                    reference_time_ms={"median": ref_ms, "min": ref_ms, "max": ref_ms,
                                       "spread": 0.0, "samples": [ref_ms], "calls_per_batch": 1},
                    gflops=flops / time_ms / 1e6)
    return case


def _backend(name, speed, reference=False, broken=None):
    """A row whose matmul takes 1/speed of optimized's time, on two sizes."""
    cases = []
    for label, flops, ref_ms in (("64x64x64", 2 * 64 ** 3, 0.05), ("512x512x512", 2 * 512 ** 3, 20.0)):
        if broken:
            cases.append(_case("matmul", "matmul", label, None, None, flops, "wrong", broken))
        else:
            cases.append(_case("matmul", "matmul", label, ref_ms / speed, ref_ms, flops))
    return {"name": name, "spec": name, "reference": reference, "distribution": f"{name}-kernels",
            "version": "1.0.0", "location": None, "files_sha256": None, "load_error": None,
            "cases": cases, "complete": True}


@pytest.fixture
def board_page(tmp_path):
    doc = {"schema_version": results.SCHEMA_VERSION, "run_id": "20261126T000000Z-abcdef",
           "machine": results.machine_description(), "quick": False, "rules": {},
           "events": [{"name": "matmul", "kind": "matmul", "workload": None}],
           "backends": {"optimized": _backend("optimized", 1.0, True),
                        "numpy": _backend("numpy", 2.0, True),
                        "alice": _backend("alice", 1.5),
                        "bob": _backend("bob", 0.5),
                        "mallory": _backend("mallory", 1.0, broken="wrong answer on timed inputs: "
                                                                   "relative error 1.4 > 0.0001")},
           "complete": True}
    path = tmp_path / "run.json"
    results.write_atomic(path, doc)
    render([(str(path), results.load(path))], tmp_path / "board")
    return tmp_path / "board" / "index.html"


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
        result = self.call("Runtime.evaluate", session, expression=expression, returnByValue=True)
        return result["result"].get("value")

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


def test_index_html_shows_the_ranking_charts_and_failures(board_page, tmp_path):
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        skip_or_fail("headless Chromium is not installed (apt-get install -y chromium)")
    browser = DevTools(binary, tmp_path / "profile")
    try:
        target = browser.call("Target.createTarget", url=board_page.as_uri())["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        loaded = f"location.href === {json.dumps(board_page.as_uri())} && document.readyState === 'complete'"
        deadline = time.monotonic() + 30
        while not browser.evaluate(session, loaded):     # about:blank is "complete" too
            assert time.monotonic() < deadline, "the page did not load within 30 s"
            time.sleep(0.05)
        text = browser.evaluate(session, "document.body.innerText")
        chart_widths = browser.evaluate(
            session, "Array.from(document.querySelectorAll('figure svg'))"
                     ".map(s => s.getBoundingClientRect().width)")
        chart_text = browser.evaluate(
            session, "Array.from(document.querySelectorAll('figure svg text'))"
                     ".map(t => t.textContent).join(' ')")
    finally:
        browser.close()

    lines = text.splitlines()
    ranking = [line.split("\t") for line in lines if line.split("\t")[0] in ("1", "2", "ref", "-")]
    by_name = {cells[1]: cells for cells in ranking}
    assert by_name["alice"][0] == "1" and by_name["bob"][0] == "2"     # ranked by score
    assert by_name["optimized"][0] == "ref" and by_name["numpy"][0] == "ref"
    assert float(by_name["optimized"][2]) == 1.0 and float(by_name["alice"][2]) == 1.5
    assert by_name["mallory"][0] == "-"
    assert "mallory" in text and "wrong answer on timed inputs" in text
    assert "Failures" in text and "GFLOP/s against problem size" in text
    assert len(chart_widths) == 2 and all(width > 200 for width in chart_widths)
    assert "speedup over optimized" in chart_text and "GFLOP/s" in chart_text
    assert "alice" in chart_text
