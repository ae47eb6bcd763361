"""sloan compare --html: the page of a release comparison over hand-made tagged runs
(tests/analyze/test_compare.py's make_tag), what it says, and the page opened in headless
Chromium: no script error, no request leaving the file, a chart per metric, every run a
point. The screenshots are kept as CI artifacts, like the run report's."""

from __future__ import annotations

import json
import re

import pytest

from analyze.compare import METRICS, compare_tags
from analyze.html_report import compare_page
from tests.analyze.test_compare import make_run, make_tag, scoring  # noqa: F401 (scoring: a fixture)
from tests.analyze.test_html_report import DRAWN, _artifact_dir, _chromium
from tests.support.browser import Browser

# per figure: its box points, error bars and plotly div count, once every chart has drawn
COUNTS = ("[document.querySelectorAll('.plotly-graph-div').length,"
          " document.querySelectorAll('.boxlayer .point').length,"
          " document.querySelectorAll('.errorbar').length]")


@pytest.fixture
def ten_runs(tmp_path, scoring, sloan):  # noqa: F811
    """main against v0.2-rc (20 % slower TTFT), 10 runs each, through the command itself."""
    root = tmp_path / "ten"
    make_tag(root, "main", 10)
    make_tag(root, "v0.2-rc", 10, scale=1.2)
    out = tmp_path / "compare.html"
    result = sloan("compare", "main", "v0.2-rc", "--runs", root, "--resamples", 1000, "--html", out, "--json", "-")
    return result, out


@pytest.fixture
def three_runs(tmp_path, scoring):  # noqa: F811
    """Three tags of 3 runs each (exploratory), an incomplete run named in the notes, the
    candidate's attribution scores exploratory too."""
    root = tmp_path / "three"
    make_tag(root, "v0.1.0", 3)
    make_tag(root, "main", 3, scale=0.9)
    make_tag(root, "v0.2-rc", 3, scale=1.2, scoring_exploratory=True)
    cut = make_run(root, "v0.2-rc", "cut", complete=False, ttft=50_000)
    cmp = compare_tags([root], ["v0.1.0", "main", "v0.2-rc"])
    out = tmp_path / "compare-exploratory.html"
    out.write_text(compare_page(cmp, [root]))
    return cut, out


def _section(text: str, key: str) -> str:
    """The HTML of one metric's section: from its heading to the next one."""
    start = text.index(f'<h2 id="metric-{key}">')
    end = text.find("<h2 ", start + 1)
    return text[start:end if end > 0 else len(text)]


def test_the_command_writes_the_page_and_keeps_stdout_for_json(ten_runs):
    result, out = ten_runs
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # the page is announced on stderr only
    assert re.fullmatch(rf"wrote {re.escape(str(out))} \(\d\.\d MB, 16 metrics\)\n", result.stderr)
    ttft = next(m for m in doc["metrics"] if m["key"] == "ttft_p95_ms")
    # the per-run values behind each median, with the run they come from
    assert [s["run"] for s in ttft["samples"]["main"]] == [f"dns_latency/main-{k:02d}" for k in range(10)]
    assert len(ttft["samples"]["v0.2-rc"]) == 10
    precision = next(m for m in doc["metrics"] if m["key"] == "precision")
    assert precision["pooled"] is True and precision["samples"] == {}


def test_the_page_shows_every_metric_tag_and_ci(ten_runs):
    _, out = ten_runs
    text = out.read_text()
    assert text.count("plotly.js v") <= 2  # the bundle once
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=", text)  # nothing fetched at view time
    assert "<title>Release comparison: main vs v0.2-rc</title>" in text
    assert 'id="exploratory"' not in text and "not exploratory" in text
    assert "<b>Baseline:</b> tags given: the first, main, is the reference" in text
    for m in METRICS:
        section = _section(text, m.key)
        assert f">{m.label} " in section
        assert "<b>main</b> (ref)" in section and "<b>v0.2-rc</b>" in section
        assert "exploratory: n" not in section
    ttft = _section(text, "ttft_p95_ms")
    assert "median: <b>main</b> (ref) 713.1 ms over 10 runs · <b>v0.2-rc</b> 855.8 ms over 10 runs" in ttft
    assert re.search(r"<b>v0\.2-rc − main</b>: Δ \+142\.6 ms \(\+20\.0 %\); CI95 \[[\d.]+ ms, [\d.]+ ms\]", ttft)
    assert "v0.2-rc worse" in ttft  # the CI95 is above 0 and higher TTFT is worse
    assert r'"dns_latency\u002fmain-07"' in ttft  # every run is a point, named on hover (plotly's JSON)
    pooled = _section(text, "precision")
    assert "0.950 [0.930, 0.970] over 10 test runs" in pooled
    assert "no CI of the difference" in pooled


def test_an_exploratory_comparison_says_so_at_the_top_and_per_metric(three_runs):
    cut, out = three_runs
    text = out.read_text()
    top = text[:text.index("<h2 ")]
    assert ('<b>EXPLORATORY</b>: fewer than 10 runs per tag and profile (v0.1.0 3, main 3, v0.2-rc 3); '
            "no distribution claim, never a release gate.") in top
    assert f"<li>v0.2-rc: 1 incomplete run(s) left out: {cut}</li>" in top
    assert "v0.1.0 (ref)" in top  # the summary table
    for m in METRICS:
        section = _section(text, m.key)
        assert "exploratory: n &lt; 10 (v0.1.0 3, main 3, v0.2-rc 3)" in section
        for tag in ("v0.1.0", "main", "v0.2-rc"):
            assert f"<b>{tag}</b>" in section
    assert "scoring exploratory" in _section(text, "recall")
    assert "scoring exploratory" not in _section(text, "ttft_p95_ms")
    # the same figures as `sloan compare` prints for these runs (tests/analyze/test_compare.py)
    assert "<b>v0.2-rc − v0.1.0</b>: Δ +142.6 ms (+20.0 %); CI95 [79.9 ms, 205.4 ms]" in _section(
        text, "ttft_p95_ms")


def test_the_pages_open_in_a_browser_without_errors(ten_runs, three_runs, tmp_path):
    _chromium()
    _, ten = ten_runs
    _, three = three_runs
    with Browser() as browser:
        loads = {name: browser.load(path, wait_for=DRAWN, evaluate=COUNTS, full_page=True, max_height=9000)
                 for name, path in (("compare-html.png", ten), ("compare-html-exploratory.png", three))}
    shots = _artifact_dir(tmp_path)
    for name, load in loads.items():
        (shots / name).write_bytes(load.screenshot)
        assert load.problems == [], f"{load.problems} (screenshot: {shots / name})"
        assert load.screenshot.startswith(b"\x89PNG")
    per_run = len(METRICS) - 3  # precision, recall and F1 are pooled: one value per tag, no box
    # a chart per metric; every run a point in each per-run metric's box; error bars: the CI95
    # of each difference, and of each tag's pooled score
    assert loads["compare-html.png"].value == [len(METRICS), per_run * 20, per_run * 1 + 3 * 2]
    assert loads["compare-html-exploratory.png"].value == [len(METRICS), per_run * 9, per_run * 2 + 3 * 3]


def test_a_page_it_cannot_write_is_named(tmp_path, scoring, sloan):  # noqa: F811
    make_tag(tmp_path, "main", 2)
    make_tag(tmp_path, "v0.2-rc", 2)
    out = tmp_path / "missing" / "compare.html"
    r = sloan("compare", "main", "v0.2-rc", "--runs", tmp_path, "--resamples", 200, "--html", out)
    assert r.exit_code == 2
    assert r.output.splitlines()[-2:] == [f"error: cannot write {out}: No such file or directory",
                                          "  pass a writable path"]
