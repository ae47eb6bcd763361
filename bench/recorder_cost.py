#!/usr/bin/env python3
"""The recorder's own cost on a lab recording, from its direct accounting.

Records (or reads) one run of the lab's healthy baseline, rag_mixed_20rps, seed 42, with
the defaults: every signal, trace stamping, OTLP intake. Then prints, from the run's own
files (capture/accounting.py):

  overhead   resources/*.parquet holds one row a second: the recorder's CPU (all threads)
             plus its BPF programs' run_time_ns, over wall × CPUs. Median over those
             windows, with a bootstrap CI95 of the median (windows of one run are not
             independent, so the interval is narrower than one over runs would be), p95,
             and the split kernel / intake / BPF. The first --skip-s seconds (start-up:
             loading and attaching) are left out and reported apart.
  per signal the manifest's overhead.per_signal: BPF time and ns per program run, and each
             signal's share of the drain loop, in % of the machine over the whole run.
  health     events dropped and sampled out, shedding steps, and the recorder's RSS:
             growth from the median of the second minute to that of the last minute.

Acceptance (issue "Recorder overhead you can trust", README "Overhead"): median <= 1.0 %,
CI95 upper bound <= 1.5 % over >= 20 windows, 0 dropped, no shedding, RSS growth < 5 %
over a recording of 10 minutes or more (--profile full: 25 minutes).

Usage:
  sudo .venv/bin/python bench/recorder_cost.py --profile full --json build/recorder_cost.json
  sudo .venv/bin/python bench/recorder_cost.py --profile smoke         # 40 s, no RSS verdict
  sudo .venv/bin/python bench/recorder_cost.py --profile smoke --bpf-run-time calibrate
  .venv/bin/python bench/recorder_cost.py --run runs/tag=x/scenario=baseline/run=...  # read only
Exit: 0 when every acceptance line holds, 1 when one does not, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.overhead import direct_figures, median_ci, read_resources  # noqa: E402

MEDIAN_LIMIT_PCT = 1.0
HIGH_LIMIT_PCT = 1.5
MIN_WINDOWS = 20
RSS_GROWTH_LIMIT = 0.05
RSS_MIN_MINUTES = 10


def record(profile: str, out: Path, bpf_run_time: str = "stats") -> Path:
    """One lab baseline run, as `slocap lab run` makes it; returns its run directory.
    bpf_run_time "calibrate": safety.bpf_run_time "calibrate" (BPF stats on for the first
    safety.calibrate_s seconds only)."""
    cmd = [str(ROOT / ".venv/bin/slocap"), "lab", "run", "--scenario", "baseline", "--profile", profile,
           "--tag", "cost", "--out", str(out), "--seed", "42"]
    if bpf_run_time == "calibrate":
        config = out / "calibrate.json"
        out.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps({"safety": {"bpf_run_time": "calibrate"}}))
        cmd += ["--config", str(config)]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    runs = sorted(out.glob("tag=cost/scenario=baseline/run=*"))
    if not runs:
        raise SystemExit(f"no run directory under {out}")
    return runs[-1]


def rss_growth(rows: list[dict]) -> dict:
    """RSS growth from the median of minute 2 to the median of the last minute (minute 1 is
    start-up: programs loading, first parts)."""
    t0 = rows[0]["ts_ns"]
    minutes = (rows[-1]["ts_ns"] - t0) / 60e9
    second = [r["rss_bytes"] for r in rows if 60e9 <= r["ts_ns"] - t0 < 120e9 and r.get("rss_bytes")]
    last = [r["rss_bytes"] for r in rows if rows[-1]["ts_ns"] - r["ts_ns"] < 60e9 and r.get("rss_bytes")]
    if minutes < 2 or not second or not last:
        return {"minutes": round(minutes, 1), "growth": None}
    a, b = statistics.median(second), statistics.median(last)
    return {"minutes": round(minutes, 1), "minute2_mib": round(a / 2**20, 1), "last_minute_mib": round(b / 2**20, 1),
            "peak_mib": round(max(r["rss_bytes"] or 0 for r in rows) / 2**20, 1), "growth": b / a - 1}


def summarize(run_dir: Path, skip_s: float) -> dict:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    rows = read_resources(run_dir)
    if not rows:
        raise SystemExit(f"{run_dir}: no resources rows: was it recorded by slocap record?")
    t0 = rows[0]["ts_ns"] - rows[0]["interval_s"] * 1e9
    steady = [r for r in rows if r["ts_ns"] - t0 > skip_s * 1e9]
    startup = [r for r in rows if r["ts_ns"] - t0 <= skip_s * 1e9]
    ncpu = manifest["overhead"]["cpus"]
    figures = direct_figures(steady, ncpu)
    totals = [r["overhead_pct"] for r in steady if r.get("overhead_pct") is not None]
    counters = manifest.get("counters") or {}
    return {
        "run": str(run_dir), "method": manifest["overhead"]["method"], "cpus": ncpu,
        "signals": sorted(counters), "otlp": (manifest.get("otlp") or {}).get("enabled"),
        "windows": figures["windows"], "total": figures["total"],
        "p95": statistics.quantiles(totals, n=20)[-1] if len(totals) >= 20 else None,
        "kernel": figures["kernel"], "intake": figures["intake"], "bpf": figures["bpf"],
        "startup": median_ci([r["overhead_pct"] for r in startup]),
        "whole_run_pct": manifest["overhead"]["pct"],
        "per_signal": manifest["overhead"]["per_signal"],
        "dropped": sum(c.get("dropped", 0) for c in counters.values()),
        "sampled_out": sum(c.get("sampled_out", 0) for c in counters.values()),
        "shedding": (manifest.get("safety") or {}).get("actions") or [],
        "degraded": bool(manifest.get("degraded")),
        "rss": rss_growth(rows),
        "spans": (manifest.get("otlp") or {}).get("spans_written"),
        "calibration": manifest["overhead"].get("calibration"),
    }


def verdicts(s: dict) -> list[tuple[str, bool | None]]:
    t = s["total"]
    rss = s["rss"]
    long_enough = rss["minutes"] >= RSS_MIN_MINUTES
    return [
        (f"median <= {MEDIAN_LIMIT_PCT} % of the machine", t["median"] is not None and t["median"] <= MEDIAN_LIMIT_PCT),
        (f"CI95 upper bound <= {HIGH_LIMIT_PCT} % over >= {MIN_WINDOWS} windows",
         s["windows"] >= MIN_WINDOWS and t["high"] is not None and t["high"] <= HIGH_LIMIT_PCT),
        ("0 events dropped", s["dropped"] == 0),
        ("no shedding", not s["shedding"] and not s["degraded"]),
        (f"RSS growth < {RSS_GROWTH_LIMIT:.0%} over >= {RSS_MIN_MINUTES} min",
         None if not long_enough else rss["growth"] is not None and rss["growth"] < RSS_GROWTH_LIMIT),
    ]


def _fmt(ci: dict) -> str:
    if ci["median"] is None:
        return "n/a"
    low = "" if ci["low"] is None else f"  CI95 [{ci['low']:.3f}, {ci['high']:.3f}]"
    return f"{ci['median']:.3f} %{low}"


def report(s: dict) -> bool:
    print(f"\nrun: {s['run']}")
    print(f"method {s['method']}, {s['cpus']} CPUs, signals {', '.join(s['signals'])}, OTLP intake "
          f"{'on' if s['otlp'] else 'off'} ({s['spans']} spans)")
    print(f"\noverhead, % of the machine, median over {s['windows']} one-second windows (start-up left out):")
    print(f"  total    {_fmt(s['total'])}   p95 {s['p95']:.3f} %" if s["p95"] is not None else
          f"  total    {_fmt(s['total'])}")
    for key in ("kernel", "intake", "bpf"):
        print(f"  {key:<8} {_fmt(s[key])}")
    print(f"  start-up windows: {s['startup']['n']}, median {s['startup']['median'] or 0:.3f} %; "
          f"whole run incl. start-up and stop: {s['whole_run_pct']} %")
    print("\nper signal (whole run, manifest overhead.per_signal):")
    print(f"  {'signal':<12} {'% machine':>10} {'BPF s':>9} {'runs':>10} {'ns/run':>8}")
    for name, sig in s["per_signal"].items():
        per_run = "-" if sig["bpf_ns_per_run"] is None else f"{sig['bpf_ns_per_run']:.0f}"
        print(f"  {name:<12} {sig['pct'] or 0:>10.4f} {sig['bpf_run_s']:>9.4f} {sig['bpf_runs']:>10,} {per_run:>8}")
    cal = s.get("calibration")
    if cal:
        print(f"  (BPF time after the first {cal['seconds']:g} s: runs the programs counted x the ns per run "
              "measured in those seconds" + (f"; no ns per run for {', '.join(cal['uncalibrated'])}"
                                             if cal["uncalibrated"] else "") + ")")
    rss = s["rss"]
    print(f"\nhealth: {s['dropped']} dropped, {s['sampled_out']} sampled out, {len(s['shedding'])} shedding steps; "
          f"RSS over {rss['minutes']} min: " + (
              f"{rss['minute2_mib']} MiB in minute 2, {rss['last_minute_mib']} MiB in the last "
              f"({rss['growth']:+.1%}), peak {rss['peak_mib']} MiB" if rss["growth"] is not None
              else "too short to judge"))
    print("\nacceptance:")
    ok = True
    for line, held in verdicts(s):
        mark = "n/a " if held is None else ("ok  " if held else "FAIL")
        print(f"  {mark} {line}")
        ok = ok and held is not False
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--run", type=Path, help="a recorded run directory to read (records nothing)")
    src.add_argument("--profile", choices=("smoke", "full"), default="full",
                     help="lab phase lengths: smoke 40 s, full 25 min (default; the RSS check needs >= 10 min)")
    ap.add_argument("--out", type=Path, default=None, help="runs root for the new recording (default: a temp dir)")
    ap.add_argument("--bpf-run-time", choices=("stats", "calibrate"), default="stats",
                    help="stats: BPF stats on for the whole recording (default, exact); calibrate: on for its "
                         "first 10 s only, then counted runs x ns per run (safety.bpf_run_time)")
    ap.add_argument("--skip-s", type=float, default=5.0, help="start-up seconds left out of the windows (default 5)")
    ap.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the figures as JSON")
    a = ap.parse_args(argv)
    run_dir = a.run or record(a.profile, a.out or Path(tempfile.mkdtemp(prefix="recorder-cost-")), a.bpf_run_time)
    s = summarize(run_dir, a.skip_s)
    ok = report(s)
    if a.json:
        a.json.write_text(json.dumps(s, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
