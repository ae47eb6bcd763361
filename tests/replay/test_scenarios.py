"""Every fault scenario, one smoke rep each: the fault must be visible in the
recorded Parquet (fault phase against the same run's baseline phase), and the
lab must leave nothing behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from replay.faults import SCENARIOS
from replay.runner import PORTS, LabOptions, run_lab
from runfmt.config import load_config

MS = 1_000_000


class Run:
    """The fault window from labels.parquet and the baseline phase before it."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        [label] = pq.read_table(run_dir / "labels.parquet").to_pylist()[:1]
        self.f0, self.f1 = label["start_ns"], label["end_ns"]
        self.con = duckdb.connect()
        for table in ("kernel_events", "kernel_hist", "spans", "requests"):
            self.con.sql(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{run_dir}/{table}/*.parquet')")
        self.b0 = self.value("SELECT min(sent_ns) FROM requests")

    def value(self, sql: str):
        return self.con.sql(sql).fetchall()[0][0]

    def window(self, phase: str, ts: str = "ts_ns") -> str:
        lo, hi = (self.b0, self.f0) if phase == "baseline" else (self.f0, self.f1)
        return f"{ts} BETWEEN {lo} AND {hi}"

    def seconds(self, phase: str) -> float:
        return ((self.f0 - self.b0) if phase == "baseline" else (self.f1 - self.f0)) / 1e9

    def gateway(self, signal: str, agg: str, phase: str):
        return self.value(f"SELECT {agg} FROM kernel_events WHERE signal = '{signal}' "
                          f"AND pod LIKE 'gateway-%' AND {self.window(phase)}")

    def runqueue_p95_us(self, phase: str) -> float:
        """p95 of the gateway cgroup's wakeup→run delay from the kernel's log2 buckets."""
        rows = self.con.sql(f"SELECT buckets FROM kernel_hist WHERE signal = 'runqueue' AND kind = 'cgroup' "
                            f"AND pod LIKE 'gateway-%' AND {self.window(phase)}").fetchall()
        counts = np.sum([r[0] for r in rows], axis=0)
        cum = np.cumsum(counts) / counts.sum()
        return float(2 ** (int(np.argmax(cum >= 0.95)) + 1))  # the bucket's upper bound


def check_dns_latency(r: Run) -> None:
    # the lab DNS server holds each answer (900 ms by default): at least 300 ms
    assert r.gateway("dns", "quantile_cont(value_ns, 0.5)", "fault") >= 300 * MS
    assert r.gateway("dns", "quantile_cont(value_ns, 0.5)", "baseline") < 300 * MS


def check_tcp_loss(r: Run) -> None:
    # segments to the backend are dropped at its ingress: the gateway's sockets retransmit
    def rate(phase: str) -> float:
        n = r.value(f"SELECT count(*) FROM kernel_events WHERE signal = 'retransmit' AND {r.window(phase)} "
                    f"AND dport = {PORTS['backend']} AND pod LIKE 'gateway-%'")
        return n / r.seconds(phase)
    assert rate("fault") > 3 * rate("baseline") + 1


def check_connect_stall(r: Run) -> None:
    # a dropped SYN is retransmitted after 1 s
    assert r.gateway("connect", "max(value_ns)", "fault") >= 1000 * MS
    assert r.gateway("connect", "count(*) FILTER (WHERE value_ns >= 1000e6)", "baseline") == 0


def check_tls_slowdown(r: Run) -> None:
    # the backend holds each handshake 300 ms
    assert r.gateway("tls", "quantile_cont(value_ns, 0.5)", "fault") >= 300 * MS
    assert r.gateway("tls", "quantile_cont(value_ns, 0.5)", "baseline") < 300 * MS


def check_cpu_contention(r: Run) -> None:
    assert r.runqueue_p95_us("fault") >= 2 * r.runqueue_p95_us("baseline")


def _provider_answers(r: Run, status: int) -> None:
    """The provider answered `status` in the fault phase only (as its server spans and the
    gateway's client spans saw it), and the gateway retried."""
    def answered(phase: str, ts: str) -> int:
        return r.value(f"SELECT count(*) FROM spans WHERE http_response_status_code = {status} "
                       f"AND {r.window(phase, ts)}")
    # a call in flight when the fault starts began in the baseline: judge the baseline by the
    # calls that also ended in it
    assert answered("fault", "start_ns") > 10 and answered("baseline", "end_ns") == 0
    retried = r.value(f"SELECT count(*) FROM requests WHERE attempts > 1 AND {r.window('fault', 'sent_ns')}")
    assert retried > 10


def check_provider_throttle(r: Run) -> None:
    _provider_answers(r, 429)


def check_provider_error(r: Run) -> None:
    _provider_answers(r, 500)


def check_retrieval_slowdown(r: Run) -> None:
    def median_ms(phase: str) -> float:
        return r.value(f"SELECT median(duration_ns) / 1e6 FROM spans WHERE service_name = 'rag-gateway' "
                       f"AND name = 'POST /retrieve' AND {r.window(phase, 'start_ns')}")
    # retrieval adds 400 ms
    assert median_ms("fault") >= median_ms("baseline") + 300


def check_memory_pressure(r: Run) -> None:
    def stalls(phase: str) -> int:
        return r.value(f"SELECT count(*) FROM kernel_events WHERE signal = 'mem_reclaim' "
                       f"AND pod LIKE 'backend-%' AND {r.window(phase)}")
    assert stalls("fault") > max(10, 3 * stalls("baseline"))


CHECKS = {name: globals()[f"check_{name}"] for name in SCENARIOS}


def _lab_leftovers() -> list[str]:
    left = [ns for ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
            if ns.startswith("slo-lab-")]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    left += [line.split(":")[1].strip() for line in links.splitlines() if "slo-br" in line or "slo-lab" in line]
    left += [str(p) for p in Path("/sys/fs/cgroup/unified").glob("slo-lab-*")]
    left += [str(p) for c in ("cpu", "cpuacct", "memory") for p in Path(f"/sys/fs/cgroup/{c}").glob("slo-lab-*")]
    left += [str(p) for p in Path("/etc/netns").glob("slo-lab-*")]
    return left


@pytest.mark.kernel
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_each_fault_is_visible_in_the_recorded_parquet(scenario, tmp_path):
    opts = LabOptions(scenarios=[scenario], reps=1, tag="ci", profile="smoke", runs_root=tmp_path,
                      config=load_config(), lab_index=96)
    [run] = run_lab(opts)
    assert run.complete
    CHECKS[scenario](Run(run.run_dir))
    assert _lab_leftovers() == []
