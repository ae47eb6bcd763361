#!/usr/bin/env python3
"""The README's picture of the HTML report (docs/img/report.png), taken in headless Chromium.

Builds `sloan report --html` over one committed lab run (by default the mixed
provider_throttle+memory_pressure run of datasets/labeled: two faults at once, two verdicts),
opens it through tests/support/browser.py (the same check as the test: no script error, no
request leaving the file) and saves a full-page screenshot. Prints the file and its size.

Usage:
  .venv/bin/python bench/report_screenshot.py [--runs RUN] [--out docs/img/report.png] [--width 1400]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analyze.attribution import Model  # noqa: E402
from analyze.html_report import build  # noqa: E402
from runfmt.config import load_config  # noqa: E402
from tests.support.browser import Browser  # noqa: E402

# relative to the checkout, as the page names it
RUN = Path("datasets/labeled/tag=main/scenario=provider_throttle+memory_pressure/run=20261130T085719Z-21d6")
DRAWN = ("(() => { const d = [...document.querySelectorAll('.plotly-graph-div')];"
         " return d.length > 0 && d.every(x => x._fullLayout && x.querySelector('.main-svg')); })()")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=RUN, help="a run directory or runs root (relative to the checkout)")
    ap.add_argument("--out", type=Path, default=Path("docs/img/report.png"))
    ap.add_argument("--width", type=int, default=1400)
    a = ap.parse_args()
    os.chdir(ROOT)
    page = build([a.runs], load_config(None), Model.named(None))
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "report.html"
        html.write_text(page.html)
        with Browser() as browser:
            load = browser.load(html, wait_for=DRAWN, width=a.width, height=900, full_page=True)
    if load.problems:
        sys.exit("the page did not open cleanly:\n  " + "\n  ".join(load.problems))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_bytes(load.screenshot)
    print(f"{a.out}: {len(load.screenshot) / 1e3:.0f} kB, page of {len(page.runs)} run(s), "
          f"{len(page.html) / 1e6:.1f} MB of HTML")


if __name__ == "__main__":
    main()
