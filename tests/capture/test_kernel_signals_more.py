"""tls, mem_reclaim, runqueue, cpu_steal and trace stamping with real triggers."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel


def _self_signed(tmp_path: Path) -> tuple[str, str]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


def test_python_ssl_handshake_to_a_local_tls_server_is_recorded(recording, tmp_path):
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)

    with recording(["tls"]) as rec:
        server = threading.Thread(target=serve)
        server.start()
        client_ctx = ssl.create_default_context(cafile=cert)
        tid = threading.get_native_id()
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"x")
        server.join(10)
    listener.close()
    mine = [r for r in rec.rows("tls") if r["tid"] == tid]
    assert len(mine) == 1, rec.rows("tls")
    row = mine[0]
    assert row["pid"] == os.getpid()
    assert row["value_ns"] > 0
    assert row["errno"] == 0
    assert row["detail"] == "SSL_do_handshake calls=1"
    # the server side in this process handshook too, on its own thread
    assert any(r["tid"] != tid and r["pid"] == os.getpid() for r in rec.rows("tls"))


def test_a_slow_non_blocking_handshake_is_one_row_with_its_whole_latency(recording, tmp_path):
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        time.sleep(0.2)  # the server holds its side of the handshake
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)

    with recording(["tls"]) as rec:
        server = threading.Thread(target=serve)
        server.start()
        client_ctx = ssl.create_default_context(cafile=cert)
        tid = threading.get_native_id()
        # a timeout makes the socket non-blocking underneath: SSL_do_handshake
        # returns WANT_READ and Python calls it again when data arrives
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"x")
        server.join(10)
    listener.close()
    [row] = [r for r in rec.rows("tls") if r["tid"] == tid]
    assert row["value_ns"] >= 200_000_000
    calls = int(row["detail"].rsplit("=", 1)[1])
    assert row["detail"].startswith("SSL_do_handshake") and calls >= 2


def test_trace_context_of_a_span_stamps_its_dns_lookup(recording):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from capture.tracing import KernelTraceContextProcessor

    with recording(["dns", "connect"]) as rec:
        provider = TracerProvider()
        provider.add_span_processor(KernelTraceContextProcessor())
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
            endpoint=f"http://{rec.otlp_endpoint}/v1/traces")))
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span("retrieve") as span:
            socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
            ctx = span.get_span_context()
        socket.getaddrinfo("localhost", 81, type=socket.SOCK_STREAM)  # after the span: unstamped
        provider.shutdown()  # exports the span to the recorder before it stops
    rows = [r for r in rec.rows("dns") if r["pid"] == os.getpid() and r["detail"] == "localhost"]
    assert len(rows) == 2, rows
    inside, after = sorted(rows, key=lambda r: r["ts_ns"])
    assert inside["trace_id"] == f"{ctx.trace_id:032x}"
    assert inside["span_id"] == f"{ctx.span_id:016x}"
    assert after["trace_id"] is None and after["span_id"] is None
    manifest = json.loads((rec.run_dir / "manifest.json").read_text())
    assert manifest["capability"]["trace_stamping"]["enabled"] is True
    # the span itself arrived over OTLP and sits beside the kernel event
    import pyarrow.parquet as pq

    spans = pq.read_table(rec.run_dir / "spans").to_pylist()
    assert [(s["trace_id"], s["span_id"], s["name"]) for s in spans] == [
        (inside["trace_id"], inside["span_id"], "retrieve")]
    assert manifest["otlp"]["spans_written"] == 1


def test_stamping_reaches_threads_traced_before_the_recorder_started_and_only_them(recording):
    from opentelemetry.sdk.trace import TracerProvider

    from capture.tracing import KernelTraceContextProcessor

    provider = TracerProvider()
    provider.add_span_processor(KernelTraceContextProcessor())
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("before"):  # registers this thread's slot, no recorder yet
        pass
    seen: dict[str, int] = {}

    def untraced() -> None:  # another thread of the same process, in no span
        seen["tid"] = threading.get_native_id()
        socket.getaddrinfo("localhost", 83, type=socket.SOCK_STREAM)

    with recording(["dns"]) as rec:
        time.sleep(1.1)  # the slot is registered again within a second of the next span
        with tracer.start_as_current_span("later") as span:
            socket.getaddrinfo("localhost", 82, type=socket.SOCK_STREAM)
            ctx = span.get_span_context()
            t = threading.Thread(target=untraced)
            t.start()
            t.join()
    provider.shutdown()
    rows = {r["tid"]: r for r in rec.rows("dns") if r["pid"] == os.getpid() and r["detail"] == "localhost"}
    assert rows[threading.get_native_id()]["trace_id"] == f"{ctx.trace_id:032x}"
    assert rows[seen["tid"]]["trace_id"] is None


HOG = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end: pass\n"
SLEEPER = ("import time\nend = time.monotonic() + {s}\n"
           "while time.monotonic() < end: time.sleep(0.001)\n")

CG = Path("/sys/fs/cgroup/unified")


def _cgroup(name: str) -> Path:
    path = CG / name
    path.mkdir(exist_ok=True)
    return path


def _start_in(cgroup: Path, code: str) -> subprocess.Popen:
    # the child moves itself before it starts the work, so all of it is charged there
    return subprocess.Popen(["python3", "-c",
                             f"open('{cgroup}/cgroup.procs','w').write('0')\n" + code])


@pytest.mark.parametrize("variant", ["tp_btf", "raw_tp"])
def test_cpu_hogs_in_one_cgroup_wait_longer_than_an_idle_control(recording, variant):
    busy, idle = _cgroup("slo-test-busy"), _cgroup("slo-test-idle")
    procs = []
    try:
        with recording(["runqueue"], variant=variant, hist_slice_ms=500, runqueue_min_delay_ns=5_000_000) as rec:
            procs = [_start_in(busy, HOG.format(s=3)) for _ in range(4)]
            procs.append(_start_in(idle, SLEEPER.format(s=3)))
            for p in procs:
                p.wait(30)
        busy_id, idle_id = busy.stat().st_ino, idle.stat().st_ino
    finally:
        for p in procs:
            p.kill()
        busy.rmdir()
        idle.rmdir()
    import duckdb

    rows = duckdb.sql(f"""
        SELECT cgroup_id, sum(count) AS n, sum(sum_ns) / sum(count) AS mean_ns, max(max_ns) AS max_ns
        FROM read_parquet('{rec.run_dir}/kernel_hist/*.parquet')
        WHERE signal = 'runqueue' AND kind = 'cgroup' AND cgroup_id IN ({busy_id}, {idle_id})
        GROUP BY cgroup_id""").fetchall()
    by_id = {r[0]: r[1:] for r in rows}
    assert busy_id in by_id and idle_id in by_id, rows
    assert by_id[busy_id][1] > by_id[idle_id][1], f"busy {by_id[busy_id]} vs idle {by_id[idle_id]}"
    # one kernel histogram per process and cgroup, rolled up by the drain: every delay is in
    # a pid row and in a cgroup row, and each hog has its pid rows
    totals = dict(duckdb.sql(f"""
        SELECT kind, sum(count) FROM read_parquet('{rec.run_dir}/kernel_hist/*.parquet')
        WHERE signal = 'runqueue' GROUP BY kind""").fetchall())
    assert totals["pid"] == totals["cgroup"] > 0, totals
    pids = {r[0] for r in duckdb.sql(f"""
        SELECT DISTINCT pid FROM read_parquet('{rec.run_dir}/kernel_hist/*.parquet')
        WHERE signal = 'runqueue' AND kind = 'pid'""").fetchall()}
    assert {p.pid for p in procs} <= pids
    # 4 hogs on 2 CPUs: some wakeup-to-run delays pass the 5 ms event threshold
    assert any(r["cgroup_id"] == busy_id and r["value_ns"] >= 5_000_000 for r in rec.rows("runqueue"))


# a hog that prints the kernel's sum of its run-queue waits (/proc/self/schedstat, 2nd field) last
HOG_TELLING_ITS_WAITS = HOG + "print(open('/proc/self/schedstat').read().split()[1], flush=True)\n"


@pytest.mark.parametrize("variant", ["tp_btf", "raw_tp"])
def test_runqueue_waits_add_up_to_the_kernels_own_sum_per_process(recording, variant):
    """One program on sched_switch gives each wait that ends: over a process's life the
    recorded waits sum to what the kernel itself summed for it (every wait, none twice,
    the first from its fork), up to a wait after the child read its sum."""
    busy = _cgroup("slo-test-waits")
    procs = []
    try:
        with recording(["runqueue"], variant=variant, hist_slice_ms=500) as rec:
            procs = [subprocess.Popen(["python3", "-c", f"open('{busy}/cgroup.procs','w').write('0')\n"
                                       + HOG_TELLING_ITS_WAITS.format(s=2)], stdout=subprocess.PIPE, text=True)
                     for _ in range(4)]
            told = {p.pid: int(p.communicate(timeout=30)[0]) for p in procs}
    finally:
        for p in procs:
            p.kill()
        busy.rmdir()
    import duckdb

    ours = dict(duckdb.sql(f"""
        SELECT pid, sum(sum_ns) FROM read_parquet('{rec.run_dir}/kernel_hist/*.parquet')
        WHERE signal = 'runqueue' AND kind = 'pid' GROUP BY pid""").fetchall())
    for pid, kernel_sum in told.items():
        assert kernel_sum > 100_000_000, f"4 hogs on 2 CPUs wait: {told}"  # the test means something
        assert kernel_sum <= ours.get(pid, 0) <= kernel_sum + 50_000_000, (pid, kernel_sum, ours.get(pid))


@pytest.mark.parametrize("variant", ["tp_btf", "raw_tp"])
@pytest.mark.parametrize("signals", [["cpu_steal"], ["runqueue", "cpu_steal"]], ids=["alone", "riding"])
def test_cpu_steal_rows_are_consistent_with_proc_stat(recording, variant, signals):
    def proc_steal_ns() -> int:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
        return int(fields[8]) * 10_000_000  # USER_HZ is 100: 10 ms ticks

    before = proc_steal_ns()
    with recording(signals, variant=variant, hist_slice_ms=500) as rec:
        procs = [subprocess.Popen(["python3", "-c", HOG.format(s=2)]) for _ in range(3)]
        for p in procs:
            p.wait(30)
    proc_delta = proc_steal_ns() - before
    import duckdb

    parts = f"{rec.run_dir}/kernel_hist/*.parquet"
    # when riding, runqueue writes histograms too: look at cpu_steal's rows only
    per_kind = {}
    if list(rec.run_dir.glob("kernel_hist/*.parquet")):
        per_kind = dict(duckdb.sql(f"SELECT kind, sum(sum_ns) FROM read_parquet('{parts}') "
                                   "WHERE signal = 'cpu_steal' GROUP BY kind").fetchall())
    if not per_kind:
        # no steal at all in the window: /proc/stat must agree within its tick resolution
        assert proc_delta <= 20_000_000 * os.cpu_count()
        return
    # every delta is charged to a CPU, a process and a cgroup: the three totals agree
    assert per_kind["cpu"] == per_kind["pid"] == per_kind["cgroup"]
    cpus = [r[0] for r in duckdb.sql(f"SELECT DISTINCT cpu FROM read_parquet('{parts}') "
                                     "WHERE signal = 'cpu_steal' AND kind = 'cpu'").fetchall()]
    assert all(0 <= c < os.cpu_count() for c in cpus)
    # /proc/stat counts 10 ms ticks per CPU over a slightly wider window
    slack = 20_000_000 * os.cpu_count() + 0.2 * proc_delta
    assert abs(per_kind["cpu"] - proc_delta) <= slack, (per_kind["cpu"], proc_delta)


@pytest.mark.parametrize("variant", ["tp_btf", "raw_tp"])
def test_cpu_steal_rides_on_runqueue_sched_switch(recording, variant):
    """With both signals, one program per context switch: runqueue's charges the steal
    into cpu_steal's maps, and cpu_steal's own program never runs."""
    with recording(["runqueue", "cpu_steal"], variant=variant, hist_slice_ms=500,
                   safety={"bpf_run_time": True}) as rec:
        procs = [subprocess.Popen(["python3", "-c", HOG.format(s=1)]) for _ in range(3)]
        for p in procs:
            p.wait(30)
    manifest = json.loads((rec.run_dir / "manifest.json").read_text())
    hook = "tp_btf/sched_switch" if variant == "tp_btf" else "raw_tp/sched_switch"
    steal = manifest["capability"]["signals"]["cpu_steal"]
    assert steal["attached"] and steal["hooks"] == [f"{hook} (runqueue's program)"]
    per_signal = manifest["overhead"]["per_signal"]
    assert per_signal["cpu_steal"]["bpf_runs"] == 0
    assert per_signal["runqueue"]["bpf_runs"] > 0
    import duckdb

    kinds = {r[0] for r in duckdb.sql(f"SELECT DISTINCT kind FROM read_parquet('{rec.run_dir}/kernel_hist/*.parquet') "
                                      "WHERE signal = 'runqueue'").fetchall()}
    assert {"pid", "cgroup"} <= kinds  # runqueue's own work goes on beside the steal


MEMCG = Path("/sys/fs/cgroup/memory")
WRITER = """
import os, sys
open(sys.argv[1] + '/cgroup.procs', 'w').write('0')
print(os.getpid(), flush=True)
chunk = b'x' * (1 << 20)
with open(sys.argv[2], 'wb') as f:
    for _ in range(256):  # 256 MiB of page cache against a 32 MiB limit
        f.write(chunk)
"""


# the kernel may write back without a reclaim stall for this writer
@pytest.mark.may_skip_in_ci
def test_page_cache_over_a_memory_limit_is_recorded_as_reclaim(recording):
    if not (MEMCG / "memory.limit_in_bytes").exists():
        pytest.skip("no cgroup-v1 memory controller at /sys/fs/cgroup/memory to set a limit with")
    cg = MEMCG / f"slo-test-reclaim-{os.getpid()}"
    cg.mkdir()
    data = Path("/var/tmp") / f"slo-test-reclaim-{os.getpid()}.bin"
    try:
        (cg / "memory.limit_in_bytes").write_text(str(32 << 20))
        with recording(["mem_reclaim"]) as rec:
            child = subprocess.Popen(["python3", "-c", WRITER, str(cg), str(data)],
                                     stdout=subprocess.PIPE, text=True)
            pid = int(child.stdout.readline())
            assert child.wait(120) == 0
            child.stdout.close()
    finally:
        data.unlink(missing_ok=True)
        for _ in range(50):  # the cgroup empties once the child is reaped
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.1)
    rows = [r for r in rec.rows("mem_reclaim") if r["pid"] == pid]
    if not rows:
        pytest.skip("the kernel wrote back and reclaimed without a memcg reclaim stall for this writer")
    assert all(r["detail"].startswith(("memcg ", "direct ")) for r in rows)
    assert all(r["value_ns"] > 0 for r in rows)
    assert sum(int(r["detail"].rsplit("=", 1)[1]) for r in rows) > 0  # pages reclaimed


def test_recorder_over_its_overhead_limit_sheds_load_and_says_so(recording):
    with recording(["runqueue", "dns"], safety={"max_overhead_pct": 0.0001, "bpf_run_time": True}) as rec:
        time.sleep(4.5)  # three samples over the limit → the first step
    manifest = json.loads((rec.run_dir / "manifest.json").read_text())
    actions = manifest["safety"]["actions"]
    assert actions and actions[0]["step"] == "raise_thresholds"
    assert actions[0]["overhead_pct"] > 0.0001
    assert manifest["safety"]["bpf_stats"] is True
    import pyarrow.parquet as pq

    res = pq.read_table(rec.run_dir / "resources").to_pylist()
    assert len(res) >= 3
    assert all(r["rss_bytes"] > 0 and r["overhead_pct"] > 0 for r in res)
    assert any(r["bpf_run_ns"] > 0 for r in res)  # BPF run time is measured, not assumed


POD_UID = "6f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b"
CONTAINER_ID = "ab" * 32
LOOKUP = "import socket, sys\nopen(sys.argv[1] + '/cgroup.procs', 'w').write('0')\nsocket.getaddrinfo('localhost', 80)\n"


def test_events_of_a_process_in_a_kubelet_pod_cgroup_carry_its_pod(recording, tmp_path):
    slice_ = CG / "kubepods.slice" / "kubepods-burstable.slice"
    pod_dir = slice_ / f"kubepods-burstable-pod{POD_UID.replace('-', '_')}.slice"
    container_dir = pod_dir / f"cri-containerd-{CONTAINER_ID}.scope"
    pods = tmp_path / "pods.json"
    pods.write_text(json.dumps({"kind": "PodList", "items": [{
        "metadata": {"name": "rag-gateway-7d9f", "namespace": "llm", "uid": POD_UID},
        "status": {"qosClass": "Burstable", "containerStatuses": [
            {"name": "gateway", "containerID": f"containerd://{CONTAINER_ID}"}]}}]}))
    made = [d for d in (CG / "kubepods.slice", slice_, pod_dir, container_dir) if not d.exists()]
    for d in made:
        d.mkdir()
    inode = container_dir.stat().st_ino  # = the cgroup id the kernel reports
    try:
        with recording(["dns"], pods_file=pods) as rec:
            child = subprocess.run(["python3", "-c", LOOKUP, str(container_dir)], timeout=30)
            assert child.returncode == 0
    finally:
        for d in reversed(made):
            d.rmdir()
    rows = [r for r in rec.rows("dns") if r["cgroup_id"] == inode]
    assert rows, "no dns row from the pod's cgroup"
    assert {(r["pod"], r["namespace"], r["container"]) for r in rows} == {("rag-gateway-7d9f", "llm", "gateway")}



def test_cgroup_filter_keeps_only_tasks_under_the_directory(recording):
    inside = _cgroup("slo-test-filter")
    try:
        with recording(["dns"], cgroup=inside) as rec:
            child = subprocess.run(["python3", "-c", LOOKUP, str(inside)], timeout=30)
            assert child.returncode == 0
            socket.getaddrinfo("localhost", 80)  # this process is outside: not recorded
        inode = inside.stat().st_ino
    finally:
        inside.rmdir()
    rows = rec.rows("dns")
    assert rows, "the child's lookup under the cgroup was not recorded"
    assert {r["cgroup_id"] for r in rows} == {inode}


@pytest.mark.parametrize("variant", ["tp_btf", "raw_tp"])
def test_cgroup_filter_keeps_runqueue_to_tasks_under_the_directory(recording, variant):
    # the woken task is rarely the current one: the filter reads its cgroup's ancestors
    parent = _cgroup("slo-test-rq-filter")
    inside, outside = _cgroup("slo-test-rq-filter/pod"), _cgroup("slo-test-rq-outside")
    procs = []
    try:
        with recording(["runqueue"], cgroup=parent, variant=variant, hist_slice_ms=500) as rec:
            procs = [_start_in(inside, HOG.format(s=2)) for _ in range(3)]
            procs += [_start_in(outside, HOG.format(s=2)) for _ in range(3)]
            for p in procs:
                p.wait(30)
        inside_id, outside_id = inside.stat().st_ino, outside.stat().st_ino
    finally:
        for p in procs:
            p.kill()
        inside.rmdir()
        parent.rmdir()
        outside.rmdir()
    import duckdb

    ids = {r[0] for r in duckdb.sql(f"""
        SELECT DISTINCT cgroup_id FROM read_parquet('{rec.run_dir}/kernel_hist/*.parquet')
        WHERE signal = 'runqueue' AND kind = 'cgroup'""").fetchall()}
    assert inside_id in ids
    assert outside_id not in ids


@pytest.mark.parametrize("variant", ["tp_btf", "raw_tp"])
def test_cgroups_made_and_removed_while_recording_keep_their_own_ids_and_verdicts(recording, variant):
    # the program caches each cgroup's id and verdict per CPU (bpf/runqueue.bpf.c): a cgroup
    # made after the start, or one taking a removed cgroup's place, must not get another's
    parent = _cgroup("slo-test-rq-churn")
    made: list[tuple[int, bool]] = []  # (cgroup id, under the filter)
    with recording(["runqueue"], cgroup=parent, variant=variant, hist_slice_ms=500) as rec:
        for i in range(4):
            for inside in (True, False):
                cg = _cgroup(f"slo-test-rq-churn/c{i}" if inside else f"slo-test-rq-churn-out{i}")
                try:
                    procs = [_start_in(cg, HOG.format(s=0.5)) for _ in range(3)]
                    for p in procs:
                        assert p.wait(30) == 0
                    made.append((cg.stat().st_ino, inside))
                finally:
                    cg.rmdir()
    parent.rmdir()
    import duckdb

    ids = {r[0] for r in duckdb.sql(f"""
        SELECT DISTINCT cgroup_id FROM read_parquet('{rec.run_dir}/kernel_hist/*.parquet')
        WHERE signal = 'runqueue' AND kind = 'cgroup'""").fetchall()}
    assert {i for i, inside in made if inside} <= ids
    assert not {i for i, inside in made if not inside} & ids
