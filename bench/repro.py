#!/usr/bin/env python3
"""Incident reproducibility: reruns each scenario three times with the same
seed and prints the coefficient of variation of the fault-phase TTFT p95
across the reruns. Gate: ≤ 10 % (docs/architecture.md, "Statistics rules").

Usage (root; about 1 minute per smoke rep):
  .venv/bin/python bench/repro.py --scenarios dns_latency,tcp_loss,cpu_contention --out runs/repro
  .venv/bin/python bench/repro.py --runs runs/repro          # only compute, over existing runs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analyze.repro import CV_GATE, reproducibility  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default="dns_latency,tcp_loss,cpu_contention",
                    help="comma-separated scenario names, or 'all' (every fault, baseline and mixed)")
    ap.add_argument("--tag", default="repro", help="tag of the recorded runs (default repro)")
    ap.add_argument("--reruns", type=int, default=3)
    ap.add_argument("--profile", default="smoke", choices=["smoke", "full"])
    ap.add_argument("--out", type=Path, default=Path("runs/repro"))
    ap.add_argument("--runs", type=Path, default=None, help="only compute over existing runs")
    a = ap.parse_args()
    root = a.runs
    if root is None:
        from replay.runner import LabOptions, run_lab, scenario_names
        from runfmt.config import load_config

        scenarios = scenario_names() if a.scenarios == "all" else a.scenarios.split(",")
        opts = LabOptions(scenarios=scenarios, reps=a.reruns, tag=a.tag, profile=a.profile,
                          runs_root=a.out, config=load_config())
        for run in run_lab(opts, lambda p: print(f"\r{p.scenario} {p.rep}/{p.reps} {p.phase:9} "
                                                 f"{p.requests_done}/{p.requests_total}", end="",
                                                 file=sys.stderr)):
            print(f"\n{run.scenario} rep {run.rep} → {run.run_dir}", file=sys.stderr)
        root = a.out
    print(f"{'tag':8} {'scenario':34} {'runs':>4}  {'fault TTFT p95 per run (ms)':40} {'CV':>7}  gate ≤ {CV_GATE:.0%}")
    failed = False
    for r in reproducibility([root]).rows:
        if r.metric != "fault_ttft_p95_ms":
            continue
        values = ", ".join(f"{v:.0f}" for v in r.values)
        cv = "n/a" if r.cv is None else f"{r.cv:.1%}"
        verdict = "n/a (< 2 runs)" if r.cv is None else "FAIL" if r.flagged else "pass"
        failed |= r.flagged
        print(f"{r.tag:8} {r.scenario:34} {r.runs:>4}  {values:40} {cv:>7}  {verdict}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
