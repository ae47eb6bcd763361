#!/usr/bin/env python3
"""Overhead benchmark: what `slocap record` with every signal costs the lab's
workload, as a paired ratio with and without the recorder, checked by an A/A
control, beside the recorder's own accounting and two peers' cost per hook
(docs/architecture.md, "Statistics rules").

Design. A fixed amount of work runs once WITH a tool attached and once WITHOUT,
per pair, in a seeded random order; the pairs of all experiments are shuffled
together so drift hits them alike, and a warm-up run of each kind is thrown
away. The reference workload (--workload):
  lab        (default) the incident lab's baseline: gateway, retrieval, backend
             and DNS server in their namespaces and pod cgroups, set up once,
             and per run the seeded load generator rag_mixed_20rps (seed 42:
             the same requests every run) for --seconds; the recorder runs as
             the lab runs it (pods file, cgroup filter, OTLP receiver taking
             the services' spans)
  synthetic  bench/workload.py: a fixed number of DNS lookups, TCP connects,
             TLS handshakes and context switches on loopback, in a network
             namespace made here: a stress case, far busier than the lab
Experiments in one run:
  slocap    the recorder with all 7 signals (started before the workload, ready
            when its manifest.json exists, stopped with SIGINT after it)
  runqlat   the peer: libbpf-tools' runqlat, in the same place
  A/A       both arms without any tool: the control
  bpftrace  not paired: --bpftrace-runs windows with a bpftrace program on the
            same scheduler tracepoints as runqlat, for the per-hook table only

Measured per run, over the workload's window: from the load generator's go
(it is started, imports and says ready before the window opens) to its exit:
  workload+tool CPU / load generator  (PRIMARY for the lab) the one below
             divided by the load generator's own CPU in the same window
  workload+tool CPU  (PRIMARY for the synthetic workload) CPU time of the
             lab's cgroup tree, of the load generator's cgroup and of the
             tool's cgroup (both made here), from cgroup v2 cpu.stat
             usage_usec: the scheduler's runtime in ns, every thread, exited
             ones included
  machine CPU  delta of system-wide busy time in /proc/stat (all but idle +
             iowait)
  wall       the window
  TTFT p95, E2E p95  of the run's ok requests (the load generator's summary)
Per pair: ratio with/without. Printed: median ratio - 1 as overhead %, with a
CI95 from a seeded bootstrap over pairs (10,000 resamples). Half of each
experiment's pairs run "with" first and half "without" first (schedule); the
bootstrap resamples inside each order.

Why the lab's figure is divided by the load generator's CPU. The same seeded
requests cost the lab a different amount of CPU from one window to the next:
in 5 A/A pairs on this 2-vCPU VM the paired ratio of workload+tool CPU swung
by a standard deviation of 6.3 % (one window used 14 % more than its pair).
The services and the load generator swing together (services / load
generator stayed at 4.18-4.28 through that window), and the context switches
with them: the swing is in how much wake-up and socket work the same
requests take, which both ends of every connection share. Divided by the load
generator's CPU, the same 5 pairs swung by 1.1 %, so 10 to 20 pairs resolve
±1 %, where the undivided figure would need some 200. The cost: whatever the
recorder adds to the load generator itself cancels out. Its uprobes are not
hit there (it resolves no names and speaks plain HTTP), but the scheduler
hooks run on its context switches too: the run prints that share (its
context switches x our ns per context switch, in % of its CPU), by which the
primary figure may understate.

Why workload+tool CPU rather than machine CPU: it has the least A/A variance
of the three CPU-cost figures. Machine CPU counts every other tenant of the
machine and is sampled by the tick (CONFIG_TICK_CPU_ACCOUNTING, HZ=250: some
7,500 samples in a 15 s window on 2 CPUs, about 1 % sampling noise alone);
cgroup usage is exact and blind to other tenants. In exploratory runs on the
shared 2-vCPU dev VM (other engineers' tests running, load average 3-5),
two back-to-back A/A runs differed by 2-23 % in machine CPU and by 1-5 % in
workload+tool CPU. On a machine without other tenants both measure nearly
the same thing (machine CPU = the workload + the tool + a little background),
so the primary figure is the machine-CPU ratio without the other tenants in
its denominator.
It still holds BPF cost: a BPF program runs in the context of the task that
hits its hook, and that task's runtime (so its cgroup's usage) grows by it.
Checked against this kernel's config:
  * uprobes (dns, tls, trace stamping) run in the calling process: the load
    generator and the services, so in the figure;
  * connect's SYN_SENT step runs in the connecting task; retransmits and the
    ESTABLISHED step run in softirq (pid 0), and with no
    CONFIG_IRQ_TIME_ACCOUNTING softirq time is charged to whichever task it
    interrupted: in the figure when that is a lab task;
  * the scheduler hooks (runqueue, cpu_steal) run on every wakeup and switch
    of the machine, the cgroup filter being inside the program. sched_switch's
    cost lands on the task switched to (its runtime clock starts at the rq
    clock read before the hook), a wakeup's on the waker (or on whatever the
    IPI interrupted, when the wakeup is queued to the other CPU): lab tasks
    count; other tenants' tasks and idle do not (machine CPU misses the idle
    share too: the tick cannot fire inside the switch).
So the primary figure can miss part of the recorder's BPF run time: at most
all of it, which the direct figure below measures and prints next to it.

Variance, and the defaults. Besides the metric: 30 s of load per window (the
window runs ~7 s longer: the last answers stream), the load generator's
start-up outside the window, 20 pairs per experiment, the pairs of all
experiments interleaved in one shuffled order with both arm orders, a
warm-up run of each kind discarded, 1 s of quiet before each window. With
14 pairs the lab's A/A CI95 was [-0.39, +0.26] % on this 2-vCPU VM (README,
"Overhead benchmark"); each run prints the resolution it got and, when short
of ±1 %, about how many pairs its A/A spread would need (pairs_needed). A
full run takes about 1.5 hours.

Validity. The A/A control must show the method is unbiased: for the primary
metric its median must lie within ±0.5 % and its CI95 must hold 0. Otherwise
the run prints `NOT VALID: control biased` (the other metrics' A/A figures are
printed too) and exits 1 after writing --json; no gate verdict is given. A
run without a usable control (--aa-pairs 0 or 1) is NOT VALID as well.

Direct accounting. Each slocap run's resources/*.parquet holds one row per
second: the recorder's CPU + its BPF run time over wall × CPUs (overhead_pct)
and, where the columns exist, its split (kernel_overhead_pct,
intake_overhead_pct) and per-signal cost. The rows inside the workload's
window, pooled over all slocap runs: median and CI95 (bootstrap over windows;
windows of one run are not independent, so it is narrower than a CI over
runs), and the mean, in % of the machine and in % of the workload's CPU
(comparable with the paired figure). Where resources has no per-signal
columns, the per-signal split comes from the manifest's `overhead.per_signal`
(capture/accounting.py; whole recording, median over runs). Whether BPF stats
were on comes from manifest safety.bpf_stats (or overhead.bpf_stats).

What a user of the served model would feel: per pair, the ratio of the runs'
TTFT p95 and of their E2E p95 (ok requests), median - 1 and CI95 by the same
bootstrap over pairs, for each experiment (the A/A row is the control).

Peers per hook. kernel.bpf_stats_enabled is set to 1 for the benchmark (and
restored after; --no-bpf-stats leaves it): every BPF program of the host then
pays two clock reads per run, in both arms alike, and the tools' programs pay
them too, so the paired figures include that small cost. Per window, each
tool's programs are read from /proc/PID/fdinfo (run_time_ns, run_cnt) and
named with bpftool (program name -> hook, its .rodata/.bss map -> object):
ns per run per hook for ours (the runqueue signal; cpu_steal's sched_switch
on its own row), runqlat's and bpftrace's, and the scheduler hooks' ns per
context switch (a sched_switch run) of each.

Usage: .venv/bin/python bench/overhead.py [--workload lab|synthetic] [--pairs 20]
       [--aa-pairs N] [--peer-pairs N] [--seed 42] [--seconds 30 | --ops 16000] [--quick]
       [--install-peer] [--bpftrace-runs 3] [--no-bpf-stats] [--json FILE]
Needs root (loads BPF programs, makes network namespaces and cgroups).
Exit: 0 a valid run that meets every acceptance line (printed last, ok / FAIL), 1 NOT VALID,
a FAIL or a failure, 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# the span sink's gRPC server runs while children are forked (and exec at once): gRPC's
# fork handlers have nothing to do, and would log that they skip
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
from analyze.stats import bootstrap_median_ci, bootstrap_median_diff  # noqa: E402
from capture.otlp import OtlpReceiver  # noqa: E402
from runfmt.errors import SloError  # noqa: E402
from runfmt.signals import SIGNAL_NAMES  # noqa: E402

WORKLOAD = ROOT / "bench" / "workload.py"
ALL_SIGNALS = ",".join(SIGNAL_NAMES)
PEER_PACKAGE = "libbpf-tools"
BPFTRACE_PACKAGE = "bpftrace"
GATES_PCT = {"dev": 5.0, "GA": 3.0}
TTFT_LIMIT_PCT = 2.0  # TTFT p95 with the recorder within this of without it
CLK_TCK = os.sysconf("SC_CLK_TCK")
CGROUP_V2 = Path("/sys/fs/cgroup/unified")
BPF_STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")

# the A/A control of the primary metric: |median| within this, and its CI95 holding 0
AA_MAX_BIAS_PCT = 0.5
AA_TARGET_HALF_WIDTH_PCT = 1.0  # what the defaults aim at; a wider CI95 is said, not failed

# key, label (see the docstring for which is primary, and why)
METRICS = (("own_per_load", "workload+tool CPU / load gen."), ("own_cpu_s", "workload+tool CPU"),
           ("machine_cpu_s", "machine CPU"), ("wall_s", "wall"))


def primary_metric(workload: str) -> str:
    """The lab's figure is normalised by its load generator's CPU; the synthetic workload
    is all load generator, so it keeps the plain CPU figure."""
    return "own_per_load" if workload == "lab" else "own_cpu_s"


LATENCY = (("ttft_p95_ms", "TTFT p95"), ("e2e_p95_ms", "E2E p95"))

# the load generator, started and imported before the window opens: it says "ready" and
# waits for a line on stdin (replay.loadgen's own command line after -c)
LOADGEN_GATE = ("import sys; from replay import loadgen; print('ready', flush=True); sys.stdin.readline(); "
                "loadgen.main(sys.argv[1:])")

# the scheduler hooks of the per-hook table, as bpftool names their programs
SCHED_HOOKS = ("sched_wakeup", "sched_wakeup_new", "sched_switch")
# runqlat.bt's logic (bpftrace's tools/runqlat.bt), on the classic tracepoints
BPFTRACE_SCRIPT = """\
tracepoint:sched:sched_wakeup { @qtime[args->pid] = nsecs; }
tracepoint:sched:sched_wakeup_new { @qtime[args->pid] = nsecs; }
tracepoint:sched:sched_switch {
  if (args->prev_state == 0) { @qtime[args->prev_pid] = nsecs; }
  $ns = @qtime[args->next_pid];
  if ($ns) { @usecs = hist((nsecs - $ns) / 1000); }
  delete(@qtime[args->next_pid]);
}
"""


# -- statistics (pure) --------------------------------------------------------

def paired_ratios(with_: Sequence[float], without: Sequence[float]) -> np.ndarray:
    """Per-pair ratio with/without; both sequences in pair order."""
    a = np.asarray(with_, dtype=float)
    b = np.asarray(without, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples must be two equal-length 1-d sequences, got {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and np.all(b > 0) and np.all(a >= 0)):
        raise ValueError("paired samples must be finite, 'with' >= 0 and 'without' > 0")
    return a / b


@dataclass(frozen=True)
class Summary:
    """Overhead of one metric in one experiment, in percent (median ratio - 1)."""
    n: int
    median_pct: float
    low_pct: float
    high_pct: float

    @property
    def contains_zero(self) -> bool:
        return self.low_pct <= 0.0 <= self.high_pct


def summarize(with_: Sequence[float], without: Sequence[float], *, firsts: Sequence[str] | None = None,
              resamples: int = 10_000, seed: int = 42) -> Summary:
    """`firsts`: per pair, the arm that ran first; the bootstrap then resamples inside
    each order, as the schedule fixed how many pairs have each."""
    ratios = paired_ratios(with_, without)
    median, low, high = bootstrap_median_ci(ratios, strata=firsts, resamples=resamples, seed=seed)
    if low is None:  # one pair: no interval
        low = high = float("nan")
    return Summary(len(ratios), (median - 1) * 100, (low - 1) * 100, (high - 1) * 100)


def gate_verdict(s: Summary, limit_pct: float) -> str:
    """pass when the whole CI95 is at or below the limit, fail when all above it."""
    if s.n < 10:
        return "exploratory (< 10 pairs): no verdict"
    if s.high_pct <= limit_pct:
        return "pass"
    if s.low_pct > limit_pct:
        return "fail"
    return "undecided (CI95 straddles it)"


def net_of_control(tool_ratios: Sequence[float], aa_ratios: Sequence[float], *,
                   tool_firsts: Sequence[str] | None = None, aa_firsts: Sequence[str] | None = None,
                   resamples: int = 10_000, seed: int = 42) -> Summary | None:
    """The tool's overhead minus the A/A control's, in %: median(tool ratios) - median(A/A
    ratios), CI95 by bootstrapping the two sets of pairs independently (inside each arm
    order when the firsts are given, as in summarize)."""
    def present(ratios, firsts):  # the pairs with a ratio, and their orders
        keep = [i for i, r in enumerate(ratios) if r is not None]
        return [ratios[i] for i in keep], None if firsts is None else [firsts[i] for i in keep]

    t, t_firsts = present(tool_ratios, tool_firsts)
    c, c_firsts = present(aa_ratios, aa_firsts)
    ci = bootstrap_median_diff(t, c, candidate_strata=t_firsts, base_strata=c_firsts, resamples=resamples, seed=seed)
    if ci is None:
        return None
    return Summary(min(len(t), len(c)), (float(np.median(t)) - float(np.median(c))) * 100, ci[0] * 100, ci[1] * 100)


@dataclass(frozen=True)
class Check:
    ok: bool
    text: str


def acceptance(res: dict) -> list[Check]:
    """The overhead issue's acceptance lines this benchmark judges (README, "Overhead benchmark"):
    a valid A/A; slocap minus A/A with CI95 upper bound <= GA; TTFT p95 with the recorder
    within +-TTFT_LIMIT_PCT of without it (the CI95 of the paired ratio); the scheduler
    hooks' time per context switch no more than runqlat's."""
    v: Validity = res["validity"]
    checks = [Check(v.valid, f"A/A control: {v.headline} ({v.reason})")]
    net = res.get("net")
    checks.append(Check(bool(net) and v.valid and net.high_pct <= GATES_PCT["GA"],
                        f"slocap - A/A, {dict(METRICS)[res['primary']]}: " + (
                            f"{net.median_pct:+.2f} % [{net.low_pct:+.2f}, {net.high_pct:+.2f}], CI95 upper bound "
                            f"<= {GATES_PCT['GA']:g} %" if net else "no pairs")))
    ttft = res["latency"].get("slocap", {}).get("ttft_p95_ms")
    checks.append(Check(bool(ttft) and -TTFT_LIMIT_PCT <= ttft.low_pct and ttft.high_pct <= TTFT_LIMIT_PCT,
                        "TTFT p95 with / without slocap: " + (
                            f"{ttft.median_pct:+.2f} % [{ttft.low_pct:+.2f}, {ttft.high_pct:+.2f}], CI95 within "
                            f"+-{TTFT_LIMIT_PCT:g} %" if ttft else "no pairs")))
    hooks = res["hooks"]
    ours = ns_per_context_switch(hooks.get("slocap", {}))
    peer = ns_per_context_switch(hooks.get("runqlat", {}))
    checks.append(Check(ours is not None and peer is not None and ours <= peer,
                        "scheduler hooks per context switch, runqueue + cpu_steal against runqlat: "
                        + (f"{ours:,.0f} ns <= {peer:,.0f} ns" if ours is not None and peer is not None
                           else "not measured (BPF stats off, or no peer)")))
    return checks


@dataclass(frozen=True)
class Validity:
    """Whether the A/A control shows the method unbiased; `headline` is what is printed."""
    valid: bool
    headline: str  # "valid" | "NOT VALID: control biased" | "NOT VALID: no usable control"
    reason: str


def control_validity(aa: Summary | None, limit_pct: float = AA_MAX_BIAS_PCT) -> Validity:
    """The validity rule: the A/A median of the primary metric within ±limit_pct and its
    CI95 holding 0. No control, or one pair (no CI95), cannot vouch for the run."""
    if aa is None or aa.n == 0:
        return Validity(False, "NOT VALID: no usable control", "no A/A pairs were run (--aa-pairs 0)")
    if aa.n < 2 or math.isnan(aa.low_pct) or math.isnan(aa.high_pct):
        return Validity(False, "NOT VALID: no usable control", f"{aa.n} A/A pair: no CI95")
    problems = []
    if abs(aa.median_pct) > limit_pct:
        problems.append(f"A/A median {aa.median_pct:+.2f} % lies outside ±{limit_pct:g} %")
    if not aa.contains_zero:
        problems.append(f"A/A CI95 [{aa.low_pct:+.2f}, {aa.high_pct:+.2f}] % does not hold 0")
    if problems:
        return Validity(False, "NOT VALID: control biased", "; ".join(problems))
    return Validity(True, "valid" if aa.n >= 10 else f"valid, exploratory ({aa.n} A/A pairs: a wide CI95 holds 0 easily)",
                    f"A/A median {aa.median_pct:+.2f} % within ±{limit_pct:g} %, "
                    f"CI95 [{aa.low_pct:+.2f}, {aa.high_pct:+.2f}] % holds 0")


def half_width_pct(s: Summary) -> float:
    """The larger distance from the median to an end of the CI95 (nan without one)."""
    return max(s.median_pct - s.low_pct, s.high_pct - s.median_pct)


def pairs_needed(ratios: Sequence[float], half_width_pct: float = AA_TARGET_HALF_WIDTH_PCT) -> int | None:
    """Pairs for a CI95 of the median ratio about ±half_width_pct wide, at the spread of these
    per-pair ratios (A/A): the median's standard error is ~1.2533 sd / sqrt(n) for a normal
    sample; sd from the MAD (robust to one odd pair). None below 3 ratios."""
    x = np.asarray([r for r in ratios if r is not None and math.isfinite(r)], dtype=float)
    if x.size < 3:
        return None
    sd = 1.4826 * float(np.median(np.abs(x - np.median(x)))) * 100
    return max(2, math.ceil((1.96 * 1.2533 * sd / half_width_pct) ** 2))


def schedule(pairs: dict[str, int], seed: int) -> list[tuple[str, int, tuple[str, str]]]:
    """Every pair of every experiment once, shuffled together. The two arms' order is
    counterbalanced: half of each experiment's pairs run "with" first, half "without"
    first (one more of a random order when the count is odd), so a cost that falls on
    the first or second window of a pair cancels out of the median instead of leaning
    on it. (With an order drawn per pair, one 14-pair run had 9 pairs of one order and
    5 of the other, and those 5 read about a point higher; README, "Overhead
    benchmark".) Deterministic for a seed."""
    rng = random.Random(seed)
    orders = {}
    for name, n in pairs.items():
        firsts = ["with"] * (n // 2) + ["without"] * (n // 2) + ([rng.choice(["with", "without"])] if n % 2 else [])
        rng.shuffle(firsts)
        orders[name] = firsts
    todo = [(name, i) for name, n in pairs.items() for i in range(n)]
    rng.shuffle(todo)
    return [(name, i, ("with", "without") if orders[name][i] == "with" else ("without", "with")) for name, i in todo]


def median_ci(values: Sequence[float], *, resamples: int = 10_000, seed: int = 42) -> dict:
    """{n, median, low, high, mean} of a sample (low/high: bootstrap CI95 of the median, None
    below 2 values); every figure None for an empty sample."""
    x = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not x:
        return {"n": 0, "median": None, "low": None, "high": None, "mean": None}
    median, low, high = bootstrap_median_ci(x, resamples=resamples, seed=seed)
    return {"n": len(x), "median": median, "low": low, "high": high, "mean": float(np.mean(x))}


# -- the recorder's own accounting (pure) -------------------------------------

def inside_window(ts_ns: int, interval_s: float, start_ns: int, end_ns: int) -> bool:
    """A resources row (sampled at ts_ns, covering the interval_s before it) lies wholly
    inside the workload's window."""
    return start_ns <= ts_ns - interval_s * 1e9 and ts_ns <= end_ns


def signal_costs(row: Mapping) -> dict[str, float]:
    """Per-signal own cost (CPU-s in the row's interval) from a resources row, in whichever
    shape the columns have: a map or struct column `signal_cost_s`, or flat columns
    `signal_cost_s.<signal>` / `signal_cost_s_<signal>`. Empty when there are none."""
    out: dict[str, float] = {}
    nested = row.get("signal_cost_s")
    if isinstance(nested, Mapping):
        items = nested.items()
    elif isinstance(nested, (list, tuple)):  # an Arrow map as a list of (key, value)
        items = [tuple(kv.values()) if isinstance(kv, Mapping) else tuple(kv) for kv in nested]
    else:
        items = []
    for key, value in items:
        if value is not None:
            out[str(key)] = float(value)
    for col, value in row.items():
        for prefix in ("signal_cost_s.", "signal_cost_s_"):
            if col.startswith(prefix) and value is not None:
                out[col[len(prefix):]] = float(value)
    return out


def direct_figures(windows: Sequence[Mapping], ncpu: int, *, resamples: int = 10_000, seed: int = 42) -> dict:
    """The recorder's overhead from its own per-second rows, pooled: each figure in % of
    the machine (wall × CPUs, as the recorder computes it), median and CI95 over windows.

    total     overhead_pct (process CPU + BPF run time)
    kernel / intake  its split, where the columns exist
    bpf       BPF run time alone (bpf_run_ns); 0 while BPF stats are off
    process   the recorder's process CPU alone (cpu_user_s + cpu_sys_s)
    per_signal  own cost per signal, where the columns exist
    """
    def pct(cost_s: float, w: Mapping) -> float:
        return cost_s / (w["interval_s"] * ncpu) * 100

    rows = [w for w in windows if w.get("interval_s")]
    series: dict[str, list[float]] = {"total": [], "kernel": [], "intake": [], "bpf": [], "process": []}
    per_signal: dict[str, list[float]] = {}
    bpf_ns = bpf_runs = 0
    for w in rows:
        if w.get("overhead_pct") is not None:
            series["total"].append(float(w["overhead_pct"]))
        if w.get("kernel_overhead_pct") is not None:
            series["kernel"].append(float(w["kernel_overhead_pct"]))
        if w.get("intake_overhead_pct") is not None:
            series["intake"].append(float(w["intake_overhead_pct"]))
        if w.get("bpf_run_ns") is not None:
            series["bpf"].append(pct(w["bpf_run_ns"] / 1e9, w))
            bpf_ns += int(w["bpf_run_ns"])
            bpf_runs += int(w.get("bpf_runs") or 0)
        if w.get("cpu_user_s") is not None and w.get("cpu_sys_s") is not None:
            series["process"].append(pct(w["cpu_user_s"] + w["cpu_sys_s"], w))
        for name, cost in signal_costs(w).items():
            per_signal.setdefault(name, []).append(pct(cost, w))
    return {
        "windows": len(rows),
        **{key: median_ci(vals, resamples=resamples, seed=seed) for key, vals in series.items()},
        "per_signal": {name: median_ci(vals, resamples=resamples, seed=seed)
                       for name, vals in sorted(per_signal.items())},
        "bpf_ns_per_run": bpf_ns / bpf_runs if bpf_runs else None,
    }


def machine_pct_to_workload_pct(pct_of_machine: float | None, ncpu: int, workload_cpu_per_s: float) -> float | None:
    """A share of the machine (wall × CPUs) as a share of the workload's CPU time."""
    if pct_of_machine is None or workload_cpu_per_s <= 0:
        return None
    return pct_of_machine * ncpu / workload_cpu_per_s


def manifest_overheads(docs: Sequence[Mapping | None], *, resamples: int = 10_000, seed: int = 42) -> dict:
    """The manifests' `overhead` sections (capture/accounting.py: whole recording, start and
    stop included) over runs: the run figure `pct`, its method, and per signal the median of
    `pct` over runs with the pooled BPF ns per run. Runs without the section are left out."""
    docs = [d for d in docs if d]
    per_signal: dict[str, dict] = {}
    for d in docs:
        for name, sig in (d.get("per_signal") or {}).items():
            slot = per_signal.setdefault(name, {"pct": [], "bpf_run_s": 0.0, "bpf_runs": 0})
            slot["pct"].append(sig.get("pct"))
            slot["bpf_run_s"] += sig.get("bpf_run_s") or 0.0
            slot["bpf_runs"] += sig.get("bpf_runs") or 0
    return {
        "runs": len(docs),
        "methods": sorted({str(d.get("method")) for d in docs}),
        "pct": median_ci([d.get("pct") for d in docs], resamples=resamples, seed=seed),
        "per_signal": {name: {"pct": median_ci(slot["pct"], resamples=resamples, seed=seed),
                              "bpf_ns_per_run": slot["bpf_run_s"] * 1e9 / slot["bpf_runs"] if slot["bpf_runs"]
                              else None}
                       for name, slot in sorted(per_signal.items())},
    }


# -- BPF programs per hook (pure) ---------------------------------------------

def object_of(map_names: Sequence[str]) -> str | None:
    """The BPF object a program belongs to, from its maps: libbpf names an object's
    internal maps `<first 8 characters of the object>.rodata` (.bss, .data, .kconfig).
    A signal's name when the prefix matches one (or trace stamping's tracectx)."""
    for name in map_names:
        prefix, dot, section = name.partition(".")
        if not dot or not prefix or section.split(".")[0] not in ("rodata", "bss", "data", "kconfig"):
            continue
        for known in (*SIGNAL_NAMES, "tracectx"):
            if known[:8] == prefix:
                return known
        return prefix.rstrip("_")
    return None


def hook_of(prog_name: str) -> str:
    """The tracepoint a program's name says it is on (bpftool cuts names at 15 characters;
    libbpf-tools' raw_tp variants start with handle_, ours end with _raw)."""
    name = prog_name.removeprefix("handle_").removesuffix("_raw")
    if name.startswith("sched_wakeup_ne"):
        return "sched_wakeup_new"
    for hook in ("sched_wakeup", "sched_switch"):
        if name.startswith(hook):
            return hook
    return prog_name


def prog_deltas(before: Mapping[int, tuple[int, int]], after: Mapping[int, tuple[int, int]]
                ) -> dict[int, tuple[int, int]]:
    """(run_time_ns, run_cnt) per program id over a window; programs gone or new are left out."""
    return {pid_: (max(after[pid_][0] - ns, 0), max(after[pid_][1] - cnt, 0))
            for pid_, (ns, cnt) in before.items() if pid_ in after}


def hook_costs(records: Sequence[Mapping]) -> dict[str, dict[str, dict]]:
    """tool -> "<hook>" or "<hook> (<object>)" -> {ns, runs, ns_per_run, windows}, pooled over
    windows. records: {tool, hook, object, run_time_ns, run_cnt, window}. A tool's programs of
    one hook from one object add up; ours of another object than runqueue get their own key."""
    acc: dict[str, dict[str, dict]] = {}
    for r in records:
        key = r["hook"] if r["tool"] != "slocap" or r.get("object") in ("runqueue", None) \
            else f"{r['hook']} ({r['object']})"
        slot = acc.setdefault(r["tool"], {}).setdefault(key, {"ns": 0, "runs": 0, "windows": set()})
        slot["ns"] += int(r["run_time_ns"])
        slot["runs"] += int(r["run_cnt"])
        slot["windows"].add(r["window"])
    for by_key in acc.values():
        for slot in by_key.values():
            slot["ns_per_run"] = slot["ns"] / slot["runs"] if slot["runs"] else None
            slot["windows"] = len(slot["windows"])
    return acc


def ns_per_context_switch(costs: Mapping[str, Mapping], objects: Sequence[str | None] | None = None
                          ) -> float | None:
    """A tool's scheduler-hook time (wakeups + switches) per context switch, i.e. per run of
    its sched_switch program. `objects`: only keys of these objects (None: the plain hook)."""
    def wanted(key: str) -> tuple[str, str | None]:
        hook, _, rest = key.partition(" (")
        return hook, rest.rstrip(")") or None

    keys = [k for k in costs if wanted(k)[0] in SCHED_HOOKS and (objects is None or wanted(k)[1] in objects)]
    switches = [costs[k]["runs"] for k in keys if wanted(k)[0] == "sched_switch"]
    if not switches or not max(switches):
        return None
    return sum(costs[k]["ns"] for k in keys) / max(switches)


def load_share_pct(res: dict) -> float | None:
    """The scheduler hooks' time that lands on the load generator, in % of its CPU, median
    over slocap's runs: what dividing by the load generator's CPU cancels of the recorder."""
    per_switch = ns_per_context_switch(res["hooks"].get("slocap", {}))
    rec = [r for r in res["runs"] if r["experiment"] == "slocap" and r["arm"] == "with"
           and r.get("load_context_switches") and r.get("load_cpu_s")]
    if per_switch is None or not rec:
        return None
    return float(np.median([100 * r["load_context_switches"] * per_switch / 1e9 / r["load_cpu_s"] for r in rec]))


# -- machine readings ---------------------------------------------------------

CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def cpu_times() -> dict[str, int]:
    """System-wide CPU ticks from /proc/stat's first line (guest time is already in
    user, so it is not added again), busy = all but idle + iowait; and the
    machine's context-switch count."""
    with open("/proc/stat") as f:
        lines = f.read().splitlines()
    ticks = dict(zip(CPU_FIELDS, map(int, lines[0].split()[1:9])))
    ticks["busy"] = sum(ticks.values()) - ticks["idle"] - ticks["iowait"]
    ticks["ctxt"] = next(int(ln.split()[1]) for ln in lines if ln.startswith("ctxt "))
    return ticks


def cpu_pressure_us(path: Path = Path("/proc/pressure/cpu")) -> int | None:
    """PSI `some` total (µs some task waited for a CPU), None where PSI is off."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith("some "):
                return int(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def cgroup_cpu_s(cgroup: Path | None) -> float:
    """usage_usec of a cgroup-v2 directory (all its processes, every thread), in s."""
    if cgroup is None:
        return 0.0
    for line in (cgroup / "cpu.stat").read_text().splitlines():
        if line.startswith("usage_usec "):
            return int(line.split()[1]) / 1e6
    raise RuntimeError(f"{cgroup}/cpu.stat has no usage_usec")


def bpftool() -> str | None:
    return shutil.which("bpftool") or ("/usr/sbin/bpftool" if os.access("/usr/sbin/bpftool", os.X_OK) else None)


def bpf_program_names() -> list[str] | None:
    """Names of the BPF programs loaded now (bpftool), None without bpftool. Taken
    while no tool of ours runs, they are other tenants' probes, which would cost
    the workload in both arms alike."""
    exe = bpftool()
    if not exe:
        return None
    done = subprocess.run([exe, "prog", "show", "-j"], capture_output=True, text=True)
    try:
        return sorted(str(prog.get("name", "?")) for prog in json.loads(done.stdout or "[]"))
    except ValueError:
        return None


def bpf_prog_stats(pid: int | None) -> dict[int, tuple[int, int]]:
    """(run_time_ns, run_cnt) of every BPF program a process holds an fd of, by program id,
    from /proc/PID/fdinfo (both 0 while BPF stats are off). Empty for no process."""
    out: dict[int, tuple[int, int]] = {}
    if not pid:
        return out
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:bpf-prog":
                continue
            info = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines()
                        if ":" in line)
            out[int(info["prog_id"])] = (int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0)))
        except (OSError, KeyError, ValueError):
            continue
    return out


def bpf_prog_info(ids: Sequence[int]) -> dict[int, dict]:
    """{id: {name, object}} for these program ids (bpftool), empty without bpftool."""
    exe = bpftool()
    if not exe or not ids:
        return {}
    try:
        progs = json.loads(subprocess.run([exe, "prog", "show", "-j"], capture_output=True, text=True).stdout
                           or "[]")
        maps = json.loads(subprocess.run([exe, "map", "show", "-j"], capture_output=True, text=True).stdout
                          or "[]")
    except ValueError:
        return {}
    map_name = {m.get("id"): str(m.get("name", "")) for m in maps}
    wanted = set(ids)
    return {p["id"]: {"name": str(p.get("name", "?")),
                      "object": object_of([map_name.get(m, "") for m in p.get("map_ids", [])])}
            for p in progs if p.get("id") in wanted}


class BpfStats:
    """kernel.bpf_stats_enabled = 1 for the benchmark, the old value back afterwards."""

    def __init__(self) -> None:
        self.before: str | None = None
        self.changed = False

    def enable(self) -> str:
        try:
            self.before = BPF_STATS_SYSCTL.read_text().strip()
        except OSError as exc:
            return f"BPF stats unavailable ({exc.strerror}): no ns per run"
        if self.before == "1":
            return "kernel.bpf_stats_enabled was 1 already: left as it was"
        try:
            BPF_STATS_SYSCTL.write_text("1\n")
        except OSError as exc:
            return f"cannot set kernel.bpf_stats_enabled=1 ({exc.strerror}): no ns per run"
        self.changed = True
        return f"kernel.bpf_stats_enabled set to 1 for the benchmark (was {self.before}), restored at the end"

    def restore(self) -> None:
        if self.changed and self.before is not None:
            try:
                BPF_STATS_SYSCTL.write_text(self.before + "\n")
            except OSError:
                pass
            self.changed = False

    @staticmethod
    def on() -> bool:
        try:
            return BPF_STATS_SYSCTL.read_text().strip() == "1"
        except OSError:
            return False


class BenchCgroups:
    """Our own cgroup-v2 directories: one for the load generator (or synthetic workload),
    one for the tool under test, so their CPU is read exactly from cpu.stat."""

    NAMES = ("load", "tool")

    def __init__(self, parent: Path = CGROUP_V2) -> None:
        self.root = parent / f"slobench-{os.getpid()}"
        self.made = False

    def create(self) -> None:
        try:
            self.root.mkdir()
            self.made = True
            for name in self.NAMES:
                (self.root / name).mkdir()
        except OSError as exc:
            raise RuntimeError(f"cannot create cgroup {self.root}: {exc.strerror}; the benchmark reads the tool's "
                               f"and the load's CPU from cgroup v2 at {CGROUP_V2}") from exc

    def path(self, name: str) -> Path:
        return self.root / name

    def joiner(self, name: str):
        """A preexec_fn: the child joins the cgroup before it execs."""
        procs = str(self.root / name / "cgroup.procs")

        def join() -> None:
            with open(procs, "w") as f:
                f.write("0")
        return join

    def cpu_s(self, name: str) -> float:
        return cgroup_cpu_s(self.root / name)

    def remove(self) -> None:
        if not self.made:
            return
        deadline = time.monotonic() + 5
        for d in [self.root / n for n in self.NAMES] + [self.root]:
            while d.exists():
                try:
                    d.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    try:  # whatever is left of ours in it
                        for pid_ in (d / "cgroup.procs").read_text().split():
                            os.kill(int(pid_), signal.SIGKILL)
                    except (OSError, ValueError):
                        pass
                    time.sleep(0.1)
        self.made = False


# -- processes we start, and their cleanup -----------------------------------

class Children:
    """Every process started here, each in its own session; killed on the way out."""

    def __init__(self) -> None:
        self.live: dict[int, subprocess.Popen] = {}
        self.gentle: set[int] = set()  # tools: SIGINT first, so they detach their probes

    def start(self, cmd: list[str], gentle: bool = False, **kw) -> subprocess.Popen:
        p = subprocess.Popen(cmd, start_new_session=True, **kw)
        self.live[p.pid] = p
        if gentle:
            self.gentle.add(p.pid)
        return p

    def forget(self, p: subprocess.Popen) -> None:
        self.live.pop(p.pid, None)
        self.gentle.discard(p.pid)

    def stop(self, p: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 60.0) -> int | None:
        """Signal, wait, then SIGKILL its process group if it is still there."""
        if p.returncode is None:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group(p)
                p.wait()
        self.forget(p)
        return p.returncode

    @staticmethod
    def _kill_group(p: subprocess.Popen) -> None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def kill_all(self) -> None:
        for p in list(self.live.values()):
            if p.pid not in self.gentle:
                self._kill_group(p)  # the workload and its server: no need to be polite
            elif p.returncode is None:
                try:
                    os.kill(p.pid, signal.SIGINT)  # a tool gets a chance to detach cleanly
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for p in list(self.live.values()):
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            self._kill_group(p)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
            self.forget(p)


class Netns:
    """A network namespace of ours with lo up and a resolver at 127.0.0.1."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.etc = Path("/etc/netns") / name
        self._made_etc_netns = False
        self.created = False

    def create(self) -> None:
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        self.created = True
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True, capture_output=True)
        self._made_etc_netns = not self.etc.parent.exists()
        self.etc.mkdir(parents=True, exist_ok=False)
        (self.etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions attempts:2 timeout:1\n")

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def remove(self) -> None:
        if self.created:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
            self.created = False
        shutil.rmtree(self.etc, ignore_errors=True)
        if self._made_etc_netns:
            try:
                self.etc.parent.rmdir()
            except OSError:
                pass


# -- tools under test ---------------------------------------------------------

def read_resources(run_dir: Path) -> list[dict]:
    """Every row of a run's resources/*.parquet, as dicts (columns as they are)."""
    import pyarrow.parquet as pq

    rows: list[dict] = []
    for part in sorted(run_dir.glob("resources/part-*.parquet")):
        rows += pq.read_table(part).to_pylist()
    return sorted(rows, key=lambda r: r.get("ts_ns") or 0)


class SpanSink:
    """An OTLP endpoint that takes the services' spans and drops them, on the recorder's
    address while the recorder does not run. Without it the services' exporters would fail
    (connection refused) in every run without slocap and back off, and send nothing: their
    export work, which a traced service does anyway for its usual collector, would count as
    slocap's, and the backoff they are in would depend on the run before. It is the
    recorder's own receiver (capture/otlp.py) with the requests dropped, so the exporters
    see the same server in both arms (HTTP/1.1 keep-alive, the same replies): a sink that
    closed every connection would make them reconnect only in the arms without slocap.
    Its own CPU is this process's, in no measured cgroup."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self._receiver: OtlpReceiver | None = None

    def resume(self) -> None:
        if self._receiver is None:
            host, port = self.address
            self._receiver = OtlpReceiver(f"{host}:{port}", f"{host}:0", 64 << 20, lambda _request: None)
            self._receiver.start()

    def pause(self) -> None:
        if self._receiver is not None:
            self._receiver.stop(grace=1.0)
            self._receiver = None


class Slocap:
    def __init__(self, children: Children, exe: str, scratch: Path, extra: Sequence[str] = (),
                 preexec=None, sink: SpanSink | None = None, signals: str = ALL_SIGNALS) -> None:
        self.children, self.exe, self.scratch, self.signals = children, exe, scratch, signals
        self.extra = list(extra)  # e.g. the lab's pods file, cgroup filter and OTLP config
        self.preexec = preexec
        self.sink = sink  # gives the recorder its OTLP address while it runs
        self.proc: subprocess.Popen | None = None
        self.out: Path | None = None

    def start(self) -> None:
        if self.sink is not None:
            self.sink.pause()
        self.out = Path(tempfile.mkdtemp(prefix="rec-", dir=self.scratch))
        self.log = open(self.out / "slocap.log", "w")
        self.proc = self.children.start([self.exe, "record", "--out", str(self.out / "runs"),
                                         "--signals", self.signals, *self.extra], gentle=True,
                                        stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                        preexec_fn=self.preexec)
        pattern = str(self.out / "runs" / "tag=*" / "scenario=*" / "run=*" / "manifest.json")
        deadline = time.monotonic() + 60
        while not glob.glob(pattern):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.children.stop(self.proc, signal.SIGKILL, timeout=5)
                raise RuntimeError(f"slocap record did not become ready: {self._log_tail()}")
            time.sleep(0.02)

    def _log_tail(self) -> str:
        self.log.flush()
        text = (self.out / "slocap.log").read_text(errors="replace").strip()
        return text[-1500:] or "(no output)"

    def stop(self) -> dict:
        rc = self.children.stop(self.proc, signal.SIGINT, timeout=60)
        self.log.close()
        found = glob.glob(str(self.out / "runs" / "tag=*" / "scenario=*" / "run=*" / "manifest.json"))
        m = json.loads(Path(found[0]).read_text()) if found else {}
        counters = m.get("counters", {})
        safety = m.get("safety") or {}
        info = {
            "exit_code": rc,
            "state": m.get("state"),
            "mode": (m.get("capability") or {}).get("mode"),
            "events_seen": sum(c.get("seen", 0) for c in counters.values()),
            "events_written": sum(c.get("written", 0) for c in counters.values()),
            "dropped": sum(c.get("dropped", 0) for c in counters.values()),
            "sampled_out": sum(c.get("sampled_out", 0) for c in counters.values()),
            "seen_by_signal": {k: c.get("seen", 0) for k, c in counters.items()},
            "overhead_pct_mean": safety.get("overhead_pct_mean"),
            "bpf_stats": safety.get("bpf_stats", (m.get("overhead") or {}).get("bpf_stats")),
            "overhead": m.get("overhead"),  # capture/accounting.py: whole recording, per signal
            "shedding_actions": safety.get("actions", []),
            "recorder_cpu_s": (m.get("recorder") or {}).get("cpu_s"),
            "resources": read_resources(Path(found[0]).parent) if found else [],
        }
        if self.sink is not None:
            self.sink.resume()
        if rc not in (0, None) and m.get("state") != "finished":
            raise RuntimeError(f"slocap record exited {rc}: {self._log_tail()}")
        shutil.rmtree(self.out, ignore_errors=True)
        return info


class LoggedTool:
    """A peer started with its output to a log file; ready when `ready()` says so."""
    label = "?"
    start_timeout_s = 30.0

    def __init__(self, children: Children, exe: str, scratch: Path, preexec=None) -> None:
        self.children, self.exe, self.scratch, self.preexec = children, exe, scratch, preexec
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        fd, name = tempfile.mkstemp(prefix=f"{self.name}-", suffix=".log", dir=self.scratch)
        os.close(fd)
        self.logpath = Path(name)
        self.log = open(self.logpath, "w")
        self.proc = self.children.start(self.command(), gentle=True, stdin=subprocess.DEVNULL, stdout=self.log,
                                        stderr=subprocess.STDOUT, preexec_fn=self.preexec)
        deadline = time.monotonic() + self.start_timeout_s
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.children.stop(self.proc, signal.SIGKILL, timeout=5)
                raise RuntimeError(f"{self.name} did not start: {self.logpath.read_text(errors='replace')[-1500:]}")
            time.sleep(0.02)

    def stop(self) -> dict:
        rc = self.children.stop(self.proc, signal.SIGINT, timeout=30)
        self.log.close()
        self.logpath.unlink(missing_ok=True)
        return {"exit_code": rc}


class Runqlat(LoggedTool):
    name = "runqlat"
    label = "runqlat (libbpf-tools)"

    def command(self) -> list[str]:
        # line-buffered so its "Tracing ..." line (printed once attached) shows at once
        return ["stdbuf", "-oL", self.exe, "1", "1000"]

    def ready(self) -> bool:
        return "Tracing" in self.logpath.read_text(errors="replace")


class Bpftrace(LoggedTool):
    name = "bpftrace"
    label = "bpftrace (runqlat.bt)"
    start_timeout_s = 60.0  # it compiles the program first

    def command(self) -> list[str]:
        script = self.scratch / "runqlat.bt"
        script.write_text(BPFTRACE_SCRIPT)
        return [self.exe, str(script)]

    def ready(self) -> bool:
        """Attached: one perf event per probe beside its 3 programs."""
        kinds = []
        try:
            for fd in os.listdir(f"/proc/{self.proc.pid}/fd"):
                kinds.append(os.readlink(f"/proc/{self.proc.pid}/fd/{fd}"))
        except OSError:
            return False
        return kinds.count("anon_inode:bpf-prog") >= 3 and kinds.count("anon_inode:[perf_event]") >= 3


def find_exe(name: str) -> str | None:
    for cand in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def find_runqlat() -> str | None:
    return find_exe("runqlat")


def apt_policy(package: str) -> tuple[str | None, str | None]:
    """(installed, candidate) versions from apt-cache policy; None for '(none)'/unknown."""
    done = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True)
    found = {}
    for line in done.stdout.splitlines():
        key, _, value = line.strip().partition(":")
        if key in ("Installed", "Candidate"):
            found[key] = None if value.strip() in ("(none)", "") else value.strip()
    return found.get("Installed"), found.get("Candidate")


def ensure_tool(exe_name: str, package: str, install: bool, say) -> tuple[str | None, str]:
    """(path to the tool or None, one line saying how it stands)."""
    exe = find_exe(exe_name)
    installed, candidate = apt_policy(package)
    if exe:
        return exe, f"{exe} ({package} {installed or 'version unknown'})"
    if candidate is None and install:
        say(f"apt-get update (to look for {package})")
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
        installed, candidate = apt_policy(package)
    if candidate is None:
        return None, (f"{package} is not available from this host's Debian sources "
                      f"({platform.freedesktop_os_release().get('PRETTY_NAME', 'Debian')}): skipped")
    if not install:
        return None, (f"{exe_name} missing: {package} {candidate} is available but not installed; "
                      "pass --install-peer to install it: skipped")
    say(f"installing {package} {candidate} (--install-peer)")
    done = subprocess.run(["apt-get", "install", "-y", "-qq", package], capture_output=True, text=True,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    exe = find_exe(exe_name)
    if done.returncode != 0 or exe is None:
        return None, f"installing {package} {candidate} failed: {done.stderr.strip()[-300:]}: skipped"
    return exe, f"{exe} ({package} {candidate}, installed now by --install-peer)"


def ensure_peer(install: bool, say) -> tuple[str | None, str]:
    return ensure_tool("runqlat", PEER_PACKAGE, install, say)


# -- one run of the workload --------------------------------------------------

def run_workload(children: Children, cmd: list[str], cgroups: BenchCgroups, tool_pid: int | None,
                 lab_cgroup: Path | None = None, gated: bool = False) -> dict:
    """One run of `cmd` (its last stdout line is JSON) in the load cgroup; CPU over its
    window. With `lab_cgroup`, the CPU of the long-running services in it counts as
    workload too. The tool's programs' BPF stats are read at both ends of the window.
    `gated`: the command prints a line once started and waits for one on stdin (the
    load generator through LOADGEN_GATE): the window opens then, without its start-up."""
    with tempfile.TemporaryFile() as err_file:
        p = children.start(cmd, stdin=subprocess.PIPE if gated else subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=err_file, preexec_fn=cgroups.joiner("load"), cwd=ROOT)
        try:
            if gated and not p.stdout.readline():  # its interpreter and imports: before the window
                p.wait()
                err_file.seek(0)
                raise RuntimeError(f"workload exited {p.returncode} before it was ready: "
                                   f"{err_file.read().decode(errors='replace').strip()[-1500:]}")
            progs0 = bpf_prog_stats(tool_pid)
            tool0, load0, svc0 = cgroups.cpu_s("tool"), cgroups.cpu_s("load"), cgroup_cpu_s(lab_cgroup)
            psi0 = cpu_pressure_us()
            cpu0, t0, wall0 = cpu_times(), time.monotonic(), time.time_ns()
            if gated:
                p.stdin.write(b"go\n")
                p.stdin.close()
            out = p.stdout.read()  # to EOF; the child stays unreaped for wait4 (not communicate(), which reaps)
            p.stdout.close()
            _, status, ru = os.wait4(p.pid, 0)
        except BaseException:  # Ctrl-C: the workload goes first, before the tool detaches
            children.kill_all()
            raise
        err_file.seek(0)
        err = err_file.read()
    t1, wall1 = time.monotonic(), time.time_ns()
    cpu1 = cpu_times()
    psi1 = cpu_pressure_us()
    svc1, load1, tool1 = cgroup_cpu_s(lab_cgroup), cgroups.cpu_s("load"), cgroups.cpu_s("tool")
    progs1 = bpf_prog_stats(tool_pid)
    p.returncode = os.waitstatus_to_exitcode(status)
    children.forget(p)
    if p.returncode != 0:
        raise RuntimeError(f"workload exited {p.returncode}: {err.decode(errors='replace').strip()[-1500:]}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    latency = {"ttft_p95_ms": None, "e2e_p95_ms": None, "ttft_p50_ms": None, "e2e_p50_ms": None,
               "requests_ok": None}
    if "by_status" in result:  # replay.loadgen --json: requests, not operations
        failed = {k: v for k, v in result["by_status"].items() if k != "ok"}
        latency = {"ttft_p95_ms": (result.get("ttft_ms") or {}).get("p95"),
                   "e2e_p95_ms": (result.get("e2e_ms") or {}).get("p95"),
                   "ttft_p50_ms": (result.get("ttft_ms") or {}).get("p50"),
                   "e2e_p50_ms": (result.get("e2e_ms") or {}).get("p50"),
                   "requests_ok": result["by_status"].get("ok", 0)}
        result = {"ops_wall_s": None, "failures": sum(failed.values()),
                  "first_failure": ", ".join(f"{v} {k}" for k, v in failed.items()) or None}
    workload_cpu = (load1 - load0) + (svc1 - svc0)
    tool_cpu = tool1 - tool0
    return {
        "machine_cpu_s": (cpu1["busy"] - cpu0["busy"]) / CLK_TCK,
        "steal_s": (cpu1["steal"] - cpu0["steal"]) / CLK_TCK,
        "machine_cpu_by_field_s": {k: (cpu1[k] - cpu0[k]) / CLK_TCK for k in CPU_FIELDS},
        "context_switches": cpu1["ctxt"] - cpu0["ctxt"],
        "cpu_pressure_s": None if psi0 is None or psi1 is None else (psi1 - psi0) / 1e6,
        "workload_cpu_s": round(workload_cpu, 6),
        "load_cpu_s": round(load1 - load0, 6),
        "workload_user_s": round(ru.ru_utime, 4),  # the load process itself (wait4)
        "workload_sys_s": round(ru.ru_stime, 4),
        "services_cpu_s": round(svc1 - svc0, 6),
        "tool_cpu_s": round(tool_cpu, 6),
        "own_cpu_s": round(workload_cpu + tool_cpu, 6),
        "own_per_load": round((workload_cpu + tool_cpu) / (load1 - load0), 6)
                        if lab_cgroup is not None and load1 > load0 else None,
        "load_context_switches": ru.ru_nvcsw + ru.ru_nivcsw,
        "wall_s": round(t1 - t0, 4),
        "window_ns": (wall0, wall1),
        "ops_wall_s": result["ops_wall_s"],
        "failures": result["failures"],
        "first_failure": result["first_failure"],
        **latency,
        "_progs": prog_deltas(progs0, progs1),
    }


# -- the benchmark ------------------------------------------------------------

def say(msg: str) -> None:
    print(f"[overhead {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--pairs", type=int, help="pairs per tool (default 20; 3 with --quick)")
    ap.add_argument("--aa-pairs", type=int, help="A/A control pairs (default: = --pairs)")
    ap.add_argument("--peer-pairs", type=int,
                    help="runqlat pairs (default: = --pairs); its ns per run per hook needs only a few windows, "
                         "its paired overhead more")
    ap.add_argument("--seed", type=int, default=42, help="order of runs, bootstrap, workload plan (default 42)")
    ap.add_argument("--workload", choices=("lab", "synthetic"), default="lab",
                    help="lab: the incident lab's baseline at 20 requests/s (default); "
                         "synthetic: bench/workload.py, a connect/DNS/context-switch stress case")
    ap.add_argument("--seconds", type=float, help="lab: load per run, seconds (default 30; 8 with --quick)")
    ap.add_argument("--lab-index", type=int, default=9, help="lab: which lab network to make (default 9)")
    ap.add_argument("--ops", type=int, help="synthetic: operations per run (default 16000, ~4-5 s here; "
                                            "6000 with --quick)")
    ap.add_argument("--threads", type=int, default=8, help="synthetic: client threads (default 8)")
    ap.add_argument("--dns", choices=("stub", "hosts"), default="stub",
                    help="stub: real DNS queries to a responder on loopback in our netns (default); "
                         "hosts: /etc/hosts lookups, no netns")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds of quiet before each run (default 1)")
    ap.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    ap.add_argument("--quick", action="store_true", help="smoke: 3 pairs each, shorter runs, 1 bpftrace run")
    ap.add_argument("--no-peer", action="store_true", help="skip the runqlat peer")
    ap.add_argument("--bpftrace-runs", type=int,
                    help="windows with the bpftrace program, for the per-hook table (default 3; 1 with --quick; "
                         "0 skips it)")
    ap.add_argument("--install-peer", action="store_true",
                    help=f"apt-get install {PEER_PACKAGE} and {BPFTRACE_PACKAGE} when they are missing")
    ap.add_argument("--no-bpf-stats", action="store_true",
                    help="leave kernel.bpf_stats_enabled as it is (then: no BPF run time in the direct figure "
                         "and no ns per run, unless it is on already)")
    ap.add_argument("--signals", default=ALL_SIGNALS, metavar="LIST",
                    help="signals slocap records, comma-separated (default: all 7). A subset itemises the "
                         "paired cost, e.g. --signals runqueue,cpu_steal against the rest")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write per-run, per-pair data and summaries")
    a = ap.parse_args(argv)
    unknown = sorted(set(a.signals.split(",")) - set(SIGNAL_NAMES))
    if unknown:
        ap.error(f"--signals: unknown {', '.join(unknown)}; known: {ALL_SIGNALS}")
    a.pairs = a.pairs if a.pairs is not None else (3 if a.quick else 20)
    a.aa_pairs = a.aa_pairs if a.aa_pairs is not None else a.pairs
    a.peer_pairs = a.peer_pairs if a.peer_pairs is not None else a.pairs
    a.ops = a.ops if a.ops is not None else (6000 if a.quick else 16000)
    a.seconds = a.seconds if a.seconds is not None else (8.0 if a.quick else 30.0)
    a.bpftrace_runs = a.bpftrace_runs if a.bpftrace_runs is not None else (1 if a.quick else 3)
    if a.pairs < 1 or a.aa_pairs < 0 or a.peer_pairs < 1 or a.ops < 1 or a.seconds <= 0 or a.bpftrace_runs < 0:
        ap.error("--pairs and --peer-pairs must be >= 1, --aa-pairs >= 0, --ops >= 1, --seconds > 0, --bpftrace-runs >= 0")
    return a


def _fmt(s: Summary | None) -> str:
    if s is None:
        return "n/a"
    if np.isnan(s.low_pct):
        return f"{s.median_pct:+6.2f} [   n/a,    n/a]"
    return f"{s.median_pct:+6.2f} [{s.low_pct:+6.2f}, {s.high_pct:+6.2f}]"


def _fmt_ci(c: Mapping, scale: float = 1.0, digits: int = 2) -> str:
    if not c or c.get("median") is None:
        return "n/a"
    med = f"{c['median'] * scale:.{digits}f}"
    mean = f" (mean {c['mean'] * scale:.{digits}f})" if c.get("mean") is not None else ""
    if c.get("low") is None:
        return f"{med} [n/a]{mean}"
    return f"{med} [{c['low'] * scale:.{digits}f}, {c['high'] * scale:.{digits}f}]{mean}"


def _workload_size(a: argparse.Namespace) -> str:
    return f"{a.seconds:g} s of rag_mixed_20rps" if a.workload == "lab" else f"{a.ops:,} ops"


def _synthetic_workload(a: argparse.Namespace, scratch: Path) -> list[str]:
    from bench.workload import make_cert

    cert_dir = scratch / "cert"
    cert_dir.mkdir()
    make_cert(cert_dir)
    prefix: list[str] = []
    if a.dns == "stub":
        a._netns = Netns(f"slobench-{os.getpid()}")  # removed by main()'s cleanup
        a._netns.create()
        prefix = a._netns.prefix()
    return prefix + [sys.executable, str(WORKLOAD), "--ops", str(a.ops), "--threads", str(a.threads),
                     "--seed", str(a.seed), "--dns", a.dns, "--cert-dir", str(cert_dir)]


def _lab_workload(a: argparse.Namespace, scratch: Path) -> tuple[list[str], list[str], Path]:
    """The lab up once (torn down by main()); per run, the load generator alone.
    Returns the load command, the recorder's lab arguments and the lab's cgroup."""
    from replay.runner import record_config, start_services
    from replay.topology import Topology
    from runfmt.config import load_config

    say(f"setting up lab {a.lab_index} (namespaces, pod cgroups, services)")
    a._lab = Topology(a.lab_index)
    a._lab.__enter__()
    cfg = load_config(None)
    url = start_services(a._lab, a.seed, cfg)
    config = record_config(cfg, a._lab.host_ip, scratch / "record.json")
    a._sink = SpanSink((a._lab.host_ip, int(cfg["otlp"]["endpoint"].rpartition(":")[2])))
    a._sink.resume()
    cmd = [sys.executable, "-c", LOADGEN_GATE, "--url", url, "--profile", "rag_mixed_20rps",
           "--seconds", f"{a.seconds:g}", "--seed", str(a.seed), "--json"]
    recorder_args = ["--config", str(config), "--pods", str(a._lab.pods_file),
                     "--cgroup", str(a._lab.cgroup_root)]
    return cmd, recorder_args, a._lab.cgroup_root


def first_arm(arms: Mapping[str, Mapping]) -> str:
    """"with" or "without": which of a pair's two runs came first."""
    return "with" if arms["with"]["position"] < arms["without"]["position"] else "without"


def _summaries(runs: list[dict], experiment: str, keys: Sequence[str], resamples: int, seed: int
               ) -> tuple[dict[str, Summary], list[dict]]:
    """Per metric, the paired summary of one experiment; and its per-pair rows."""
    by_pair: dict[int, dict] = {}
    for r in runs:
        if r["experiment"] == experiment:
            by_pair.setdefault(r["pair"], {})[r["arm"]] = r
    ids = sorted(i for i, arms in by_pair.items() if {"with", "without"} <= set(arms))
    out: dict[str, Summary] = {}
    for key in keys:
        usable = [i for i in ids if by_pair[i]["with"].get(key) is not None and by_pair[i]["without"].get(key)]
        if usable:
            out[key] = summarize([by_pair[i]["with"][key] for i in usable],
                                 [by_pair[i]["without"][key] for i in usable],
                                 firsts=[first_arm(by_pair[i]) for i in usable], resamples=resamples, seed=seed)
    rows = []
    for i in ids:
        w, wo = by_pair[i]["with"], by_pair[i]["without"]
        row = {"experiment": experiment, "pair": i, "first": first_arm(by_pair[i])}
        for key in keys:
            row[f"{key}_ratio"] = w[key] / wo[key] if w.get(key) is not None and wo.get(key) else None
        rows.append(row)
    return out, rows


def benchmark(a: argparse.Namespace, children: Children, scratch: Path, stats: BpfStats) -> dict:
    slocap_exe = str(Path(sys.executable).parent / "slocap")
    if not os.access(slocap_exe, os.X_OK):
        slocap_exe = shutil.which("slocap") or ""
    if not slocap_exe:
        raise RuntimeError("slocap not found next to this Python nor on PATH: run `make setup` and use .venv/bin/python")

    peer_exe, peer_note = (None, "peer skipped (--no-peer)") if a.no_peer else ensure_peer(a.install_peer, say)
    say(f"peer: {peer_note}")
    bt_exe, bt_note = ((None, "bpftrace skipped (--bpftrace-runs 0)") if not a.bpftrace_runs
                       else ensure_tool("bpftrace", BPFTRACE_PACKAGE, a.install_peer, say))
    say(f"bpftrace: {bt_note}")
    stats_note = ("kernel.bpf_stats_enabled left as it is (--no-bpf-stats): "
                  + ("on" if BpfStats.on() else "off")) if a.no_bpf_stats else stats.enable()
    say(f"BPF stats: {stats_note}")

    a._cgroups = BenchCgroups()
    a._cgroups.create()
    cgroups = a._cgroups
    lab_cgroup: Path | None = None
    if a.workload == "lab":
        cmd, recorder_args, lab_cgroup = _lab_workload(a, scratch)
    else:
        cmd, recorder_args = _synthetic_workload(a, scratch), []

    in_tool_cgroup = cgroups.joiner("tool")
    tools: dict = {"slocap": Slocap(children, slocap_exe, scratch, recorder_args, preexec=in_tool_cgroup,
                                    sink=a._sink, signals=a.signals)}
    if peer_exe:
        tools["runqlat"] = Runqlat(children, peer_exe, scratch, preexec=in_tool_cgroup)
    pairs = {name: a.peer_pairs if name == "runqlat" else a.pairs for name in tools}
    if a.aa_pairs:
        pairs["A/A"] = a.aa_pairs
    extra_tools: dict = {}
    if bt_exe:
        extra_tools["bpftrace"] = Bpftrace(children, bt_exe, scratch, preexec=in_tool_cgroup)

    baseline_programs = bpf_program_names()  # other tenants' probes, there in every run alike

    def wait_for_detach(timeout_s: float = 10.0) -> None:
        """A stopped tool's programs are freed some time after it exits: wait, so its
        hooks do not run in the next run's window."""
        deadline = time.monotonic() + timeout_s
        while baseline_programs is not None and time.monotonic() < deadline:
            now = bpf_program_names()
            if now is None or len(now) <= len(baseline_programs):
                return
            time.sleep(0.1)

    def one_run(experiment: str, arm: str) -> dict:
        tool = (tools.get(experiment) or extra_tools.get(experiment)) if arm == "with" else None
        info = None
        wait_for_detach()
        foreign = bpf_program_names()
        if tool:
            tool.start()
        try:
            time.sleep(a.settle)
            m = run_workload(children, cmd, cgroups, tool.proc.pid if tool else None, lab_cgroup,
                             gated=a.workload == "lab")
            progs = m.pop("_progs")
            if tool and progs:
                names = bpf_prog_info(list(progs))
                m["bpf_programs"] = [{"tool": experiment, "prog_id": pid_, **names.get(pid_, {"name": "?",
                                                                                            "object": None}),
                                      "run_time_ns": ns, "run_cnt": cnt} for pid_, (ns, cnt) in sorted(progs.items())]
        finally:
            if tool:
                info = tool.stop()
        m["tool_attached"] = tool is not None  # A/A: "with" is just the first label, no tool either way
        m["foreign_bpf_programs"] = foreign
        if not tool:
            m["tool_cpu_s"] = None
        if info is not None:
            if "resources" in info:  # the recorder's per-second rows, inside the workload's window only
                rows = info.pop("resources")
                start_ns, end_ns = m["window_ns"]
                info["resources_rows"] = len(rows)
                info["windows"] = [r for r in rows if r.get("interval_s") and r.get("ts_ns")
                                   and inside_window(r["ts_ns"], r["interval_s"], start_ns, end_ns)]
            m["tool"] = info
        if m["failures"]:
            say(f"warning: {m['failures']} workload operations failed, first: {m['first_failure']}")
        return m

    say(f"warm-up: workload alone, then with each tool ({_workload_size(a)} per run)")
    one_run("A/A", "without")
    for name in list(tools):
        try:
            one_run(name, "with")
        except RuntimeError as exc:
            if name == "slocap":
                raise
            peer_note = f"{peer_note}; it failed in the warm-up, peer skipped: {exc}"
            say(f"peer: {peer_note}")
            del tools[name]
            del pairs[name]

    order = schedule(pairs, a.seed)
    total = 2 * len(order) + (a.bpftrace_runs if extra_tools else 0)
    load0 = os.getloadavg()
    started = time.monotonic()
    runs: list[dict] = []
    done = 0
    for experiment, i, arms in order:
        for arm in arms:
            done += 1
            m = one_run(experiment, arm)
            m.update(experiment=experiment, pair=i, arm=arm, position=done)
            runs.append(m)
            shown = arm if experiment != "A/A" else {"with": "A1", "without": "A2"}[arm]
            say(f"[{done}/{total}] {experiment} pair {i} {shown:7s}: own CPU {m['own_cpu_s']:.3f} s, "
                f"machine CPU {m['machine_cpu_s']:.2f} s, wall {m['wall_s']:.2f} s")
    # bpftrace: not paired, for its ns per run on the scheduler hooks only
    for i in range(a.bpftrace_runs if extra_tools else 0):
        done += 1
        try:
            m = one_run("bpftrace", "with")
        except RuntimeError as exc:
            bt_note = f"{bt_note}; it could not attach on this kernel: {str(exc).strip()[-300:]}"
            say(f"bpftrace: {bt_note}")
            break
        m.update(experiment="bpftrace", pair=i, arm="with", position=done)
        runs.append(m)
        say(f"[{done}/{total}] bpftrace window {i}: context switches {m['context_switches']:,}")
    elapsed = time.monotonic() - started
    load1 = os.getloadavg()

    per_pair: list[dict] = []
    summaries: dict[str, dict[str, Summary]] = {}
    latency: dict[str, dict[str, Summary]] = {}
    for experiment in pairs:
        summaries[experiment], rows = _summaries(runs, experiment, [k for k, _ in METRICS], a.resamples, a.seed)
        latency[experiment], lat_rows = _summaries(runs, experiment, [k for k, _ in LATENCY], a.resamples, a.seed)
        for row, lat in zip(rows, lat_rows):
            per_pair.append(row | {k: v for k, v in lat.items() if k.endswith("_ratio")})
    primary = primary_metric(a.workload)
    validity = control_validity(summaries.get("A/A", {}).get(primary))
    ratios = lambda e: [r[f"{primary}_ratio"] for r in per_pair if r["experiment"] == e]  # noqa: E731
    firsts = lambda e: [r["first"] for r in per_pair if r["experiment"] == e]  # noqa: E731
    net = net_of_control(ratios("slocap"), ratios("A/A"), tool_firsts=firsts("slocap"), aa_firsts=firsts("A/A"),
                         resamples=a.resamples, seed=a.seed)
    aa_needed = pairs_needed([r[f"{primary}_ratio"] for r in per_pair if r["experiment"] == "A/A"])

    ncpu = os.cpu_count() or 1
    rec = [r for r in runs if r["experiment"] == "slocap" and r["arm"] == "with"]
    windows = [w for r in rec for w in r["tool"].get("windows", [])]
    direct = direct_figures(windows, ncpu, resamples=a.resamples, seed=a.seed)
    base = [r for r in runs if r["experiment"] == "slocap" and r["arm"] == "without"]
    workload_rate = float(np.median([r["workload_cpu_s"] / r["wall_s"] for r in base])) if base else 0.0
    direct["workload_cpu_per_s"] = workload_rate
    direct["bpf_stats_runs"] = [r["tool"].get("bpf_stats") for r in rec]
    direct["manifest"] = manifest_overheads([r["tool"].get("overhead") for r in rec], resamples=a.resamples,
                                            seed=a.seed)

    records = [dict(p, hook=hook_of(p["name"]), window=r["position"])
               for r in runs if r["arm"] == "with" for p in r.get("bpf_programs", [])]
    hooks = hook_costs(records)

    return {"args": a, "peer_note": peer_note, "bpftrace_note": bt_note, "stats_note": stats_note,
            "pairs": pairs, "runs": runs, "per_pair": per_pair, "summaries": summaries, "latency": latency,
            "primary": primary, "validity": validity, "net": net, "aa_pairs_needed": aa_needed, "direct": direct,
            "hooks": hooks, "ncpu": ncpu,
            "elapsed_s": elapsed, "load": (load0, load1), "tools": tools}


def _hook_table(hooks: Mapping[str, Mapping], stats_on: bool) -> list[str]:
    """hook | ours | runqlat | bpftrace, ns per run (pooled over the tool's windows)."""
    def cell(tool: str, key: str) -> str:
        slot = hooks.get(tool, {}).get(key)
        if not slot or slot["ns_per_run"] is None:
            return "-"
        return f"{slot['ns_per_run']:,.0f} ({slot['runs']:,} runs)"

    ours = hooks.get("slocap", {})
    keys = list(SCHED_HOOKS) + sorted(k for k in ours if k.partition(" (")[0] in SCHED_HOOKS
                                      and k not in SCHED_HOOKS)
    lines = [f"{'hook':<38}{'ours (slocap)':<26}{'runqlat':<26}{'bpftrace':<26}"]
    for key in keys:
        hook, _, obj = key.partition(" (")
        label = f"{key} (runqueue)" if key in SCHED_HOOKS else f"{hook} ({obj.rstrip(')')}, ours only)"
        lines.append(f"{label:<38}{cell('slocap', key):<26}{cell('runqlat', key):<26}{cell('bpftrace', key):<26}")
    per_switch = {"ours, runqueue": ns_per_context_switch(ours, [None]),
                  "ours, runqueue + cpu_steal": ns_per_context_switch(ours),
                  "runqlat": ns_per_context_switch(hooks.get("runqlat", {})),
                  "bpftrace": ns_per_context_switch(hooks.get("bpftrace", {}))}
    others = [f"{k} {v['ns_per_run']:,.0f}" for k, v in sorted(ours.items())
              if k.partition(" (")[0] not in SCHED_HOOKS and v["ns_per_run"] is not None]
    if others:
        lines.append("ours on other hooks, ns per run: " + "; ".join(others))
    lines.append("scheduler hooks per context switch (wakeups + switches / sched_switch runs): "
                 + "; ".join(f"{k} {v:,.0f} ns" for k, v in per_switch.items() if v is not None))
    if not stats_on:
        lines.append("(BPF stats were off: run times read 0, no ns per run)")
    return lines


def slocap_label(signals: str) -> str:
    names = signals.split(",")
    return f"slocap ({len(names)} signals)" if set(names) == set(SIGNAL_NAMES) else f"slocap ({signals})"


def render(res: dict) -> str:
    a, runs, summaries = res["args"], res["runs"], res["summaries"]
    primary = res["primary"]
    labels = {"slocap": slocap_label(a.signals), "runqlat": "runqlat (peer)", "A/A": "A/A control"}
    validity: Validity = res["validity"]
    base = [r for r in runs if r["arm"] == "without"]
    rec = [r["tool"] for r in runs if r["experiment"] == "slocap" and r["arm"] == "with"]
    ncpu = res["ncpu"]
    lines = []
    if not validity.valid:
        lines += [f"{validity.headline}: {validity.reason}; the overhead figures below are not to be trusted", ""]
    lines += [
        (f"overhead = median over pairs of (with / without) - 1, in %, [CI95 bootstrap, "
         f"{a.resamples:,} resamples, seed {a.seed}]; primary metric: {dict(METRICS)[primary]}"),
        (f"workload: the lab's baseline, rag_mixed_20rps seed {a.seed} for {a.seconds:g} s per run "
         f"(gateway, retrieval, backend over TLS, DNS server; services' CPU from the lab cgroup); "
         f"runs in random order" if a.workload == "lab" else
         f"workload: bench/workload.py, {a.ops:,} ops x {a.threads} threads, 1 in 10 TLS, "
         f"DNS {'to a stub on loopback in a netns' if a.dns == 'stub' else 'from /etc/hosts'}; "
         f"runs in random order"),
        "",
        f"{'experiment':<20}{'pairs':>5}  " + "".join(
            f"{label + (' *' if key == primary else ''):<26}" for key, label in METRICS),
    ]
    for experiment, by_metric in summaries.items():
        n = max((s.n for s in by_metric.values()), default=0)
        lines.append(f"{labels.get(experiment, experiment):<20}{n:>5}  "
                     + "".join(f"{_fmt(by_metric.get(key)):<26}" for key, _ in METRICS))
    lines.append("* primary. workload+tool CPU: "
                 + ("the lab's cgroups + the load generator's" if a.workload == "lab" else "the workload's cgroup")
                 + " + the tool's, from cgroup cpu.stat (ns, blind to other tenants)"
                 + ("; divided by the load generator's own CPU in the same window, which cancels the "
                    "window-to-window swing of the whole workload (docstring)" if primary == "own_per_load" else ""))

    # the control
    aa = summaries.get("A/A", {})
    lines.append("")
    lines.append(f"validity ({dict(METRICS)[primary]}, A/A median within ±{AA_MAX_BIAS_PCT:g} % and CI95 holding 0): "
                 f"{validity.headline} - {validity.reason}")
    if aa:
        lines.append("A/A control, every metric: " + "; ".join(
            f"{label} {_fmt(aa[key]).strip()}" + ("" if aa[key].n < 2 or aa[key].contains_zero else " (CI95 excludes 0)")
            for key, label in METRICS if key in aa))
        p = aa.get(primary)
        if p is not None and p.n >= 2 and half_width_pct(p) > AA_TARGET_HALF_WIDTH_PCT:
            need = res.get("aa_pairs_needed")
            lines.append(f"A/A resolution: CI95 half-width {half_width_pct(p):.2f} % for {dict(METRICS)[primary]} "
                         f"(the defaults aim at <= {AA_TARGET_HALF_WIDTH_PCT:g} %): effects smaller than that are "
                         "not resolved by this run"
                         + (f"; at this run's A/A spread, ±{AA_TARGET_HALF_WIDTH_PCT:g} % would take about {need} "
                            "pairs" if need else ""))

    # the recorder's own accounting
    d = res["direct"]
    lines.append("")
    if rec and not d["windows"]:
        lines.append("direct accounting: no one-second row of the recorder's resources/*.parquet lies wholly inside "
                     "a workload window (windows too short)")
    elif rec:
        bpf_on = d["bpf_stats_runs"]
        rate = d["workload_cpu_per_s"]
        to_w = lambda c: {k: machine_pct_to_workload_pct(v, ncpu, rate) if k != "n" else v  # noqa: E731
                          for k, v in c.items()}
        lines.append(f"direct accounting (the recorder's resources/*.parquet, {d['windows']} one-second windows "
                     f"inside the workload of {len(rec)} runs; median [CI95 bootstrap over windows], "
                     f"% of the machine | % of the workload's CPU):")
        for key, label in (("total", "overhead (CPU + BPF run time)"), ("kernel", "kernel: probes + drain"),
                           ("intake", "intake: spans"), ("process", "recorder process CPU"),
                           ("bpf", "BPF run time")):
            c = d.get(key) or {}
            if c.get("median") is None:
                lines.append(f"  {label:<32}n/a (no such column)")
                continue
            lines.append(f"  {label:<32}{_fmt_ci(c, digits=3) + ' %':<46}| {_fmt_ci(to_w(c)) + ' %'}")
        for name, c in d.get("per_signal", {}).items():
            lines.append(f"  signal {name:<25}{_fmt_ci(c, digits=3) + ' %':<46}| {_fmt_ci(to_w(c)) + ' %'}")
        man = d.get("manifest") or {}
        if not d.get("per_signal") and man.get("per_signal"):
            lines.append(f"  per signal, from the manifests' overhead.per_signal (whole recording, start and stop "
                         f"included, so not per workload window; median [CI95] over {man['runs']} runs, % of the "
                         "machine; BPF ns per program run):")
            for name, sig in man["per_signal"].items():
                lines.append(f"    {name:<30}{_fmt_ci(sig['pct'], digits=3) + ' %':<46}"
                             + (f"{sig['bpf_ns_per_run']:,.0f} ns/run" if sig.get("bpf_ns_per_run") else ""))
        elif not d.get("per_signal"):
            lines.append("  per signal: n/a (no per-signal columns in resources, no overhead.per_signal in the "
                         "manifests)")
        if man.get("runs"):
            lines.append(f"  the manifests' own figure (overhead.pct, whole recording, median over {man['runs']} "
                         f"runs): {_fmt_ci(man['pct'], digits=3)} % of the machine; method "
                         f"{', '.join(man['methods'])}")
        lines.append("  BPF stats (manifest safety.bpf_stats): "
                     + ("on in every run" if bpf_on and all(bpf_on) else
                        "off in every run: BPF run time not included" if not any(bpf_on) else
                        f"on in {sum(bool(b) for b in bpf_on)} of {len(bpf_on)} runs")
                     + (f"; {d['bpf_ns_per_run']:,.0f} ns per BPF program run" if d.get("bpf_ns_per_run") else ""))
        bpf_w = machine_pct_to_workload_pct((d.get("bpf") or {}).get("mean"), ncpu, rate)
        if bpf_w is not None:
            lines.append(f"  the paired {dict(METRICS)[primary]} figure misses the part of the BPF run time spent in "
                         f"other tenants' tasks and idle: at most all of it, {bpf_w:.2f} % of the workload's CPU "
                         "(mean BPF run time)")
    bias = load_share_pct(res)
    if primary == "own_per_load" and bias is not None:
        lines.append(f"  the load generator's own share of the scheduler hooks cancels out of the primary figure: "
                     f"about {bias:.2f} % of its CPU (its context switches x our ns per context switch), so the "
                     "primary figure may understate by about that much")

    # what a user of the served model would feel
    lat = res["latency"]
    if any(lat.values()):
        med = lambda key, rs: float(np.median([r[key] for r in rs if r.get(key) is not None]))  # noqa: E731
        lines.append("")
        lines.append("latency of the served model (per pair the ratio of the runs' p95; median - 1 in % [CI95]):")
        lines.append(f"{'experiment':<20}" + "".join(f"{label:<26}" for _, label in LATENCY))
        for experiment, by_metric in lat.items():
            if by_metric:
                lines.append(f"{labels.get(experiment, experiment):<20}"
                             + "".join(f"{_fmt(by_metric.get(key)):<26}" for key, _ in LATENCY))
        for experiment in ("slocap",):
            w = [r for r in runs if r["experiment"] == experiment and r["arm"] == "with" and r.get("ttft_p95_ms")]
            wo = [r for r in runs if r["experiment"] == experiment and r["arm"] == "without" and r.get("ttft_p95_ms")]
            if w and wo:
                lines.append(f"median p95 without / with slocap: TTFT {med('ttft_p95_ms', wo):.1f} / "
                             f"{med('ttft_p95_ms', w):.1f} ms, E2E {med('e2e_p95_ms', wo):.1f} / "
                             f"{med('e2e_p95_ms', w):.1f} ms")

    # peers per hook
    lines.append("")
    lines.append("BPF cost per hook, ns per program run (run_time_ns / run_cnt, pooled over the tool's windows):")
    lines += _hook_table(res["hooks"], stats_on=bool(res["hooks"]) and any(
        slot["ns"] for by in res["hooks"].values() for slot in by.values()))
    lines.append(f"BPF stats: {res['stats_note']}")
    lines.append(f"bpftrace: {res['bpftrace_note']}")

    # the machine
    lines.append("")
    medr = lambda key, rs: float(np.median([r[key] for r in rs]))  # noqa: E731
    lines.append(f"without any tool (median of {len(base)} runs): workload CPU {medr('workload_cpu_s', base):.2f} s, "
                 f"machine CPU {medr('machine_cpu_s', base):.2f} s, wall {medr('wall_s', base):.2f} s, "
                 f"steal {medr('steal_s', base):.2f} s, "
                 f"{float(np.median([r['context_switches'] / r['wall_s'] for r in base])):,.0f} context switches/s")
    if rec:
        ev = float(np.median([t["events_seen"] for t in rec]))
        tool_cpu = [r["tool_cpu_s"] for r in runs if r["experiment"] == "slocap" and r["arm"] == "with"]
        est = [t["overhead_pct_mean"] for t in rec if t["overhead_pct_mean"] is not None]
        dropped = sum(t["dropped"] for t in rec)
        steps = [act.get("step", "?") for t in rec for act in t["shedding_actions"]]
        shed = f"{len(steps)} load-shedding actions" + (
            f" ({', '.join(f'{k} x{steps.count(k)}' for k in sorted(set(steps)))}, in "
            f"{sum(1 for t in rec if t['shedding_actions'])} of {len(rec)} runs)" if steps else "")
        modes = sorted({str(t["mode"]) for t in rec})
        lines.append(f"slocap per run (median of {len(rec)}): {ev:,.0f} events seen, recorder CPU in the window "
                     f"{float(np.median(tool_cpu)):.3f} s, recorder.cpu_s (whole run) "
                     f"{float(np.median([t['recorder_cpu_s'] or 0 for t in rec])):.2f} s; "
                     f"own estimate safety.overhead_pct_mean "
                     + (f"{float(np.median(est)):.2f} %" if est else "n/a"))
        lines.append(f"slocap in all runs: {dropped} events dropped, {shed}, mode {', '.join(modes)}")
    busy = float(np.median([r["machine_cpu_s"] / (ncpu * r["wall_s"]) for r in base]))
    others = medr("machine_cpu_s", [{"machine_cpu_s": r["machine_cpu_s"] - r["workload_cpu_s"]} for r in base])
    lines.append(f"machine without any tool: {busy:.0%} of {ncpu} CPUs busy in the window; "
                 f"{others:.2f} s of it not the workload's (other processes, kernel threads)")
    if busy > 0.9:
        lines.append("WARNING: the machine was saturated: other tenants fill the idle time a tool's cost would use, "
                     "so the machine-CPU ratio tracks wall time")
    s = summaries.get("slocap", {}).get(primary)
    if s:
        scope = (" (the lab's baseline profile)" if a.workload == "lab"
                 else " (synthetic stress workload, not the lab's baseline profile)")
        lines.append(f"gates on the {dict(METRICS)[primary]} ratio (CI95 must lie below): "
                     + ("no verdict: the run is NOT VALID" if not validity.valid else
                        "; ".join(f"{g} <= {lim:g} %: {gate_verdict(s, lim)}" for g, lim in GATES_PCT.items()))
                     + scope)
    foreign = [r["foreign_bpf_programs"] for r in runs if r.get("foreign_bpf_programs") is not None]
    if foreign:
        counts = [len(f) for f in foreign]
        names = sorted({n for f in foreign for n in f})
        lines.append(f"BPF programs of other processes loaded before a run: in {sum(c > 0 for c in counts)} of "
                     f"{len(counts)} runs, up to {max(counts)}"
                     + (f" ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})" if names else ""))
    lines.append(f"peer: {res['peer_note']}")
    fails = sum(r["failures"] for r in runs)
    if fails:
        lines.append(f"workload: {fails} operations failed in all runs (see --json)")
    l0, l1 = res["load"]
    lines.append(f"measured now on {platform.node()} ({platform.release()}), "
                 f"{len(runs)} runs in {res['elapsed_s'] / 60:.1f} min; "
                 f"load average 1 min {l0[0]:.2f} at start, {l1[0]:.2f} at end")
    judged = [n for e, n in res["pairs"].items() if e != "runqlat"]  # the peer's pairs only give its figure
    if min(judged) < 10:
        lines.append("exploratory: fewer than 10 pairs; no distribution claim, no gate")
    lines.append("")
    lines.append("acceptance:")
    lines += [f"  {'ok  ' if c.ok else 'FAIL'}  {c.text}" for c in acceptance(res)]
    if not validity.valid:
        lines.append(f"{validity.headline}: {validity.reason}")
    return "\n".join(lines)


def to_json(res: dict) -> dict:
    a = res["args"]

    def summary(s: Summary) -> dict:
        return asdict(s) | {"contains_zero": s.contains_zero}

    v: Validity = res["validity"]
    primary = res["primary"]
    return {
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": {"node": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count()},
        "settings": {"workload": a.workload, "seconds": a.seconds if a.workload == "lab" else None,
                     "pairs": a.pairs, "aa_pairs": a.aa_pairs, "peer_pairs": a.peer_pairs, "seed": a.seed, "ops": a.ops,
                     "threads": a.threads, "dns": a.dns, "settle_s": a.settle, "resamples": a.resamples,
                     "signals": a.signals, "quick": a.quick, "bpftrace_runs": a.bpftrace_runs,
                     "bpf_stats": not a.no_bpf_stats},
        "primary_metric": primary,
        "validity": {"valid": v.valid, "headline": v.headline, "reason": v.reason, "metric": primary,
                     "max_bias_pct": AA_MAX_BIAS_PCT,
                     "aa_pairs_needed_for_target": res.get("aa_pairs_needed"),
                     "target_half_width_pct": AA_TARGET_HALF_WIDTH_PCT},
        "peer": res["peer_note"],
        "bpftrace": res["bpftrace_note"],
        "bpf_stats": res["stats_note"],
        "elapsed_s": round(res["elapsed_s"], 1),
        "loadavg_start_end": res["load"],
        "summaries_pct": {e: {k: summary(s) for k, s in by.items()} for e, by in res["summaries"].items()},
        "slocap_minus_aa_pct": summary(res["net"]) if res.get("net") else None,
        "acceptance": [{"ok": c.ok, "check": c.text} for c in acceptance(res)],
        "latency_pct": {e: {k: summary(s) for k, s in by.items()} for e, by in res["latency"].items()},
        "direct": res["direct"],
        "load_share_pct": load_share_pct(res),
        "hooks": res["hooks"],
        "pairs": res["per_pair"],
        "runs": res["runs"],
    }


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if os.geteuid() != 0:
        print("overhead: needs root (loads BPF programs and makes a network namespace); "
              "run it as root: sudo .venv/bin/python bench/overhead.py", file=sys.stderr)
        return 1

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    children = Children()
    stats = BpfStats()
    scratch = Path(tempfile.mkdtemp(prefix="slobench-"))
    a._netns = None
    a._lab = None
    a._sink = None
    a._cgroups = None
    code = 0
    try:
        res = benchmark(a, children, scratch, stats)
        print(render(res), flush=True)
        if a.json:
            a.json.write_text(json.dumps(to_json(res), indent=1, default=str) + "\n")
            say(f"wrote {a.json}")
        code = 0 if all(c.ok for c in acceptance(res)) else 1
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        code = 130
    except (RuntimeError, SloError, subprocess.CalledProcessError, OSError) as exc:
        detail = getattr(exc, "stderr", None)
        print(f"overhead: {exc}" + (f"\n{detail.decode(errors='replace') if isinstance(detail, bytes) else detail}"
                                    if detail else ""), file=sys.stderr)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        children.kill_all()
        stats.restore()
        if a._netns is not None:
            a._netns.remove()
        if a._sink is not None:
            a._sink.pause()
        if a._lab is not None:
            a._lab.__exit__(None, None, None)
        if a._cgroups is not None:
            a._cgroups.remove()
        shutil.rmtree(scratch, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return code


if __name__ == "__main__":
    sys.exit(main())
