#!/usr/bin/env python3
"""How the default SLO thresholds sit against the lab's healthy traffic.

Prints, over the no-fault requests of a labelled set (every request of the baseline
scenario, and those of every other run that ended before its fault began): the tail of
TTFT and TPOT, the share of healthy requests at or above each configured breach, and the
windows that page, healthy and under faults, per SLI. docs/slo.md quotes its output.

Usage:
  .venv/bin/python bench/slo_calibration.py [--runs datasets/labeled] [--config FILE]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analyze.session import open_runs  # noqa: E402
from analyze.slo import SLIS, evaluate  # noqa: E402
from runfmt.config import load_config  # noqa: E402

# a request of the baseline phase still streaming when the fault began is not healthy: it
# must have ended before the run's first fault (labels.start_ns)
HEALTHY = ("status = 'ok' AND (scenario = 'baseline' OR (phase = 'baseline' AND sent_ns + e2e_ms * 1e6 < "
           "(SELECT min(l.start_ns) FROM labels l WHERE l.tag = requests.tag AND l.run = requests.run)))")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("datasets/labeled"))
    ap.add_argument("--config", type=Path, default=None)
    a = ap.parse_args()
    cfg = load_config(a.config)
    slo = cfg["slo"]
    runs = open_runs([a.runs])
    try:
        n, t99, t999, tmax, p99, p999, pmax, t_share, p_share = runs.con.sql(
            f"""SELECT count(*), quantile_cont(ttft_ms, 0.99), quantile_cont(ttft_ms, 0.999), max(ttft_ms),
                       quantile_cont(tpot_ms, 0.99), quantile_cont(tpot_ms, 0.999), max(tpot_ms),
                       avg((ttft_ms >= $t)::INT), avg((tpot_ms >= $p)::INT)
                FROM requests WHERE {HEALTHY}""",
            params={"t": slo["ttft_ms"]["breach"], "p": slo["tpot_ms"]["breach"]}).fetchall()[0]
    finally:
        runs.con.close()
    print(f"healthy requests: {n:,} (runs under {a.runs})")
    print(f"TTFT ms: p99 {t99:.0f}, p99.9 {t999:.0f}, max {tmax:.0f}; "
          f"at or above the breach {slo['ttft_ms']['breach']:g} ms: {t_share:.2%}")
    print(f"TPOT ms: p99 {p99:.1f}, p99.9 {p999:.1f}, max {pmax:.1f}; "
          f"at or above the breach {slo['tpot_ms']['breach']:g} ms: {p_share:.2%}")
    healthy, faulted, paging_runs = Counter(), Counter(), {}
    windows = Counter()
    evaluated = evaluate([a.runs], cfg).runs
    for r in evaluated:
        first = next(iter(r.info.phases.values()), 0.0)
        for w in r.windows:
            ok = r.info.scenario == "baseline" or w.end_ns <= r.start_ns + int(first * 1e9)
            windows["healthy" if ok else "fault"] += 1
            for sli in w.paging:
                (healthy if ok else faulted)[sli] += 1
                if not ok:
                    paging_runs.setdefault(r.info.scenario, set()).add(sli)
    pages = {s: t.get("page", True) for s, t in slo.items()}
    print(f"windows: {windows['healthy']} healthy, {windows['fault']} with a fault on or after it; "
          f"paging SLIs (config): {', '.join(k for k, v in pages.items() if v)}")
    for sli in SLIS:
        print(f"  {sli:22} pages in {healthy[sli]:3} healthy and {faulted[sli]:3} fault windows")
    quiet = sorted({r.info.scenario for r in evaluated} - set(paging_runs) - {"baseline"})
    print("scenarios whose faults page: " + ", ".join(f"{s} ({'+'.join(sorted(v))})"
                                                      for s, v in sorted(paging_runs.items())))
    print("scenarios whose faults do not page: " + (", ".join(quiet) or "none"))


if __name__ == "__main__":
    main()
