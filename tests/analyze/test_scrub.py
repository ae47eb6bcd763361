"""sloan scrub: the scrubbed copy of real lab runs analyzes exactly like the original, and
holds none of the original identities.

The main fixture copies three committed runs of datasets/labeled (two connect_stall runs,
so the scoring split has a training run and the egress correlation check runs, and one
dns_latency run for the DNS check), correlates the copy so it carries analysis outputs
too, and scrubs it once for the module.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from analyze.attribution import attribute
from analyze.cli import main
from analyze.correlate import correlate as run_correlation
from analyze.correlate import correlate_run
from analyze.scoring import score_runs
from analyze.scrub import ALLOWED_ATTRIBUTES, Pseudonyms, key_fingerprint, scrub
from analyze.session import find_runs
from runfmt.manifest import read_manifest
from analyze.slo import evaluate, workload_of
from runfmt.config import load_config
from runfmt.errors import ConfigError, DataError
from runfmt.manifest import write_manifest
from runfmt.schema import SPANS
from tests.support.lab_run import make_run

LABELED = Path(__file__).resolve().parents[2] / "datasets" / "labeled"
RUNS = ("tag=main/scenario=connect_stall/run=20261205T064456Z-3e0e",
        "tag=main/scenario=connect_stall/run=20261205T064547Z-419b",
        "tag=main/scenario=dns_latency/run=20261205T064225Z-cbd4")
KEY = bytes(range(7, 39))  # 32 bytes


def _key_file(directory: Path, key: bytes = KEY) -> Path:
    path = directory / "scrub.key"
    path.write_bytes(key)
    return path


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """(original root, scrubbed root, Pseudonyms of KEY, summary)."""
    base = tmp_path_factory.mktemp("scrub")
    orig = base / "orig"
    for rel in RUNS:
        shutil.copytree(LABELED / rel, orig / rel)
    run_correlation([orig], window_ms=500)  # the copy carries correlated/enriched_spans/unmatched too
    summary = scrub([orig], base / "scrubbed", _key_file(base))
    return orig, base / "scrubbed", Pseudonyms(KEY), summary


def _pairs(root: Path) -> dict[str, dict]:
    return {run_dir.name: run_dir for run_dir in find_runs([root])}


# --- the copy --------------------------------------------------------------------------------


def test_copy_keeps_layout_schemas_and_rows(labelled):
    orig, scrubbed, _, summary = labelled
    assert len(summary.runs) == len(RUNS)
    files = sorted(p.relative_to(orig) for p in orig.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(scrubbed) for p in scrubbed.rglob("*") if p.is_file())
    assert any(f.name == "correlated.parquet" for f in files)
    rows = 0
    for rel in files:
        if rel.suffix != ".parquet":
            continue
        a, b = pq.ParquetFile(orig / rel), pq.ParquetFile(scrubbed / rel)
        assert b.schema_arrow.equals(a.schema_arrow, check_metadata=True), rel
        assert b.metadata.num_rows == a.metadata.num_rows, rel
        rows += a.metadata.num_rows
    assert summary.rows == rows
    assert summary.values > 0
    assert not list(orig.parent.glob(".scrubbed.scrub-*"))  # the temporary folder is gone


def test_manifest_keeps_fields_and_records_the_scrub(labelled):
    orig, scrubbed, p, _ = labelled
    for name, run_dir in _pairs(orig).items():
        before = read_manifest(run_dir)
        after = read_manifest(_pairs(scrubbed)[name])  # the analyzer still reads it
        assert set(after) == set(before) | {"scrubbed"}
        assert after["node"] == p.pseudonym("host", before["node"])
        assert after["host"]["hostname"] == p.pseudonym("host", before["host"]["hostname"])
        for kept in ("kernel", "machine", "cpus"):
            assert after["host"][kept] == before["host"][kept]
        for kept in ("run_id", "tag", "scenario", "seed", "phases", "complete", "counters", "capability",
                     "started_at", "duration_s", "files"):
            assert after[kept] == before[kept], kept
        assert after["otlp"]["http_endpoint"].startswith("ip-") and after["otlp"]["http_endpoint"].endswith(":4318")
        record = after["scrubbed"]
        assert record["key_fingerprint"] == hashlib.sha256(KEY).hexdigest()[:8] == key_fingerprint(KEY)
        assert record["scrub_version"] == 1 and record["allow_attributes"] == sorted(ALLOWED_ATTRIBUTES)
        assert record["at"]
        text = (_pairs(scrubbed)[name] / "manifest.json").read_text()
        assert KEY.hex() not in text and hashlib.sha256(KEY).hexdigest() not in text


# --- the analysis is unchanged -------------------------------------------------------------

# columns of the correlation outputs that scrub keeps as recorded
KEPT_EVENT_COLUMNS = ("ts_ns", "signal", "pid", "tid", "cgroup_id", "sport", "dport", "family", "value_ns",
                      "errno", "event_trace_id", "event_span_id", "trace_id", "span_id", "tier", "confidence")


def test_correlation_is_the_same(labelled):
    orig, scrubbed, p, _ = labelled
    a = run_correlation([orig], window_ms=500, write=False)
    b = run_correlation([scrubbed], window_ms=500, write=False)
    assert b.tiers == a.tiers and sum(a.tiers.values()) > 0
    assert a.tiers["trace_id"] > 0 and a.tiers["pod_conn"] > 0  # both DNS and egress pairs are there
    assert [(r.run_dir.name, r.tiers, r.matched, r.unmatched, r.spans_enriched) for r in b.runs] == \
        [(r.run_dir.name, r.tiers, r.matched, r.unmatched, r.spans_enriched) for r in a.runs]
    for name, run_dir in _pairs(orig).items():
        x, y = correlate_run(run_dir), correlate_run(_pairs(scrubbed)[name])
        for table in ("correlated", "unmatched"):
            tx, ty = getattr(x, table), getattr(y, table)
            assert ty.num_rows == tx.num_rows
            # the same events paired with the same spans (by trace and span id), row for row
            assert ty.select(KEPT_EVENT_COLUMNS).equals(tx.select(KEPT_EVENT_COLUMNS)), (name, table)
            for column, kind in (("pod", "pod"), ("node", "host"), ("namespace", "ns"), ("comm", "comm")):
                expect = [None if v is None else p.pseudonym(kind, v) for v in tx.column(column).to_pylist()]
                assert ty.column(column).to_pylist() == expect, (name, table, column)
            for column in ("saddr", "daddr"):
                expect = [None if v is None else p.address(v) for v in tx.column(column).to_pylist()]
                assert ty.column(column).to_pylist() == expect, (name, table, column)
        pairs = {(r["trace_id"], r["span_id"], r["matched_events"]) for r in
                 x.enriched_spans.select(["trace_id", "span_id", "matched_events"]).to_pylist()}
        assert pairs == {(r["trace_id"], r["span_id"], r["matched_events"]) for r in
                         y.enriched_spans.select(["trace_id", "span_id", "matched_events"]).to_pylist()}


def _expected(value, p: Pseudonyms, orig: Path, scrubbed: Path, key: str | None = None):
    """The original's result as the scrubbed run must give it: identities replaced by their
    pseudonyms, paths moved to the scrubbed copy."""
    if isinstance(value, dict):
        out = {k: _expected(v, p, orig, scrubbed, k) for k, v in value.items()}
        if {"workload", "pods", "service"} <= out.keys():  # derived from the (pseudonymized) pod name
            out["workload"] = workload_of(out["pods"][0] if out["pods"] else None, out["service"])
        return out
    if isinstance(value, list):
        return [_expected(v, p, orig, scrubbed, key) for v in value]
    if isinstance(value, str):
        if key in ("node", "cluster"):
            return p.pseudonym("host", value)
        if key == "namespace":
            return p.pseudonym("ns", value)
        if key == "pods":
            return p.pseudonym("pod", value)
        if value.startswith(str(orig)):
            return str(scrubbed) + value[len(str(orig)):]
    return value


def _assert_same(a, b, where="result"):
    """Equal, floats within 1e-9 relative (DuckDB may sum in another order)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b)), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_slo_attribution_and_scores_are_the_same(labelled):
    orig, scrubbed, p, _ = labelled
    config = load_config()
    slo_a, slo_b = evaluate([orig], config), evaluate([scrubbed], config)
    assert slo_a.runs[0].workload.pods  # the entry service was found, so its pods were compared
    _assert_same(_expected(slo_a.to_dict(), p, orig, scrubbed), slo_b.to_dict(), "slo")
    att_a, att_b = attribute([orig], config), attribute([scrubbed], config)
    assert any(r.windows for r in att_a.runs)
    _assert_same(_expected(att_a.to_dict(), p, orig, scrubbed), att_b.to_dict(), "attribute")
    score_a = score_runs([orig], config, resamples=200)
    score_b = score_runs([scrubbed], config, resamples=200)
    assert score_a.train_runs and score_a.test_runs
    assert score_a.correlation["dns"]["truth_pairs"] > 0 and score_a.correlation["egress"]["truth_pairs"] > 0
    _assert_same(_expected(score_a.to_dict(), p, orig, scrubbed), score_b.to_dict(), "score")
    assert score_b.gate(config) == score_a.gate(config)


# --- nothing of the original is left -----------------------------------------------------------

_TOKEN = re.compile(r"[\s/=,;:\"'()\[\]{}<>@|]+")


def _texts(arr) -> set[str]:
    """Every value of an Arrow array as text, map keys and values and nested values included."""
    if isinstance(arr, pa.ChunkedArray):
        return set().union(*(_texts(c) for c in arr.chunks)) if arr.num_chunks else set()
    t = arr.type
    if pa.types.is_dictionary(t):
        return _texts(arr.dictionary_decode())
    if pa.types.is_map(t):
        off = arr.offsets.to_numpy()
        lo, n = int(off[0]), int(off[-1] - off[0])
        return _texts(arr.keys.slice(lo, n)) | _texts(arr.items.slice(lo, n))
    if pa.types.is_struct(t):
        return set().union(*(_texts(arr.field(i)) for i in range(t.num_fields)))
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _texts(arr.flatten())
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        arr = arr.cast(pa.string())
    return {v for v in pc.unique(arr).to_pylist() if v is not None}


def _json_texts(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | set().union(set(), *(_json_texts(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(set(), *(_json_texts(v) for v in value))
    return {str(value)}


def _run_texts(run_dir: Path, skip: tuple[str, ...] = ()) -> dict[str, set[str]]:
    """file -> every string it holds (Parquet cells of every column but `skip`, manifest keys
    and values, and the manifest's raw text)."""
    out = {}
    for f in sorted(run_dir.rglob("*.parquet")):
        table = pq.read_table(f)
        out[str(f.relative_to(run_dir))] = set().union(*(_texts(table.column(c)) for c in table.column_names
                                                         if c not in skip))
    manifest = (run_dir / "manifest.json").read_text()
    out["manifest.json"] = _json_texts(json.loads(manifest)) | {manifest}
    return out


def _is_ip(v: str) -> bool:
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return False
    return True


def _originals(run_dir: Path) -> dict[str, set[str]]:
    """What the scrub must remove from one original run, per kind."""
    ev = pq.read_table(run_dir / "kernel_events")
    hist = pq.read_table(run_dir / "kernel_hist")
    spans = pq.read_table(run_dir / "spans")
    manifest = json.loads((run_dir / "manifest.json").read_text())

    def col(table, name):
        return {v for v in table.column(name).to_pylist() if v not in (None, "")}

    attrs = [kv for m in spans.column("attributes").to_pylist() if m for kv in m]
    dns_detail = {r["detail"] for r in ev.select(["signal", "detail"]).to_pylist() if r["signal"] == "dns"}
    addresses = (col(ev, "saddr") | col(ev, "daddr") | dns_detail | col(spans, "server_address")
                 | col(spans, "network_peer_address") | col(spans, "client_address")
                 | {v for k, v in attrs if k in ("network.local.address", "dns.question.name") and v})
    ips = {a for a in addresses if _is_ip(a)}
    ips |= {ip for _, v in attrs if v for ip in re.findall(r"\d+\.\d+\.\d+\.\d+", v)}  # e.g. lab.dns.answers
    ips |= {m.split(":")[0] for m in (manifest["otlp"]["http_endpoint"], manifest["otlp"]["grpc_endpoint"])}
    urls = col(spans, "url_full")
    runqueue = {r["detail"].split("after=", 1)[1] for r in ev.select(["signal", "detail"]).to_pylist()
                if r["signal"] == "runqueue"}
    # dropped attributes: values the original run holds nowhere else (a lab.request_id is also
    # the request's id, url.path also the http.route: kept there on purpose)
    elsewhere = set().union(*_run_texts(run_dir, skip=("attributes",)).values())
    elsewhere |= {v for k, v in attrs if k in ALLOWED_ATTRIBUTES and v}
    elsewhere |= {t for s in elsewhere for t in _TOKEN.split(s)}
    dropped = {v for k, v in attrs
               if k not in ALLOWED_ATTRIBUTES and v and v not in elsewhere and not re.fullmatch(r"[\d.eE+-]+", v)
               and v not in ("true", "false")}
    return {
        "ip": ips,
        "host": col(ev, "node") | col(hist, "node") | col(spans, "host_name") | col(spans, "k8s_node_name")
        | {manifest["node"], manifest["host"]["hostname"]},
        "pod": col(ev, "pod") | col(hist, "pod") | col(spans, "k8s_pod_name"),
        "namespace": col(ev, "namespace") | col(hist, "namespace") | col(spans, "k8s_namespace_name"),
        "dns": {a for a in addresses if not _is_ip(a)} | {urlsplit(u).hostname for u in urls},
        "comm": col(ev, "comm") | runqueue,
        "url": urls,
        "path": {manifest["pods_file"], manifest["cgroup_filter"]},
        "dropped attribute": dropped,
    }


def test_no_original_value_is_left(labelled):
    orig, scrubbed, _, _ = labelled
    for name, run_dir in _pairs(orig).items():
        originals = _originals(run_dir)
        for kind, values in originals.items():
            assert values, f"{name}: no {kind} to look for: the test would prove nothing"
        assert any(v.startswith("chatcmpl-") for v in originals["dropped attribute"])
        found = []
        for file, texts in _run_texts(_pairs(scrubbed)[name]).items():
            tokens = {t for s in texts for t in _TOKEN.split(s)}
            long_texts = [s for s in texts if len(s) >= 6]
            for kind, values in originals.items():
                for v in values:
                    if v in texts or v in tokens or (len(v) >= 6 and any(v in s for s in long_texts)):
                        found.append(f"{file}: {kind} {v!r}")
        assert not found, f"{name}: original values left in the scrubbed copy:\n" + "\n".join(found[:40])


# --- keys ------------------------------------------------------------------------------------


def _scrub_small(tmp_path: Path, out: str, key: bytes):
    root = tmp_path / "runs"
    if not root.exists():
        make_run(root, "r1")
    keys = tmp_path / f"key-{out}"
    keys.mkdir()
    return scrub([root], tmp_path / out, _key_file(keys, key))


def _tables(out: Path) -> dict[str, pa.Table]:
    return {str(f.relative_to(out)): pq.read_table(f) for f in sorted(out.rglob("*.parquet"))}


def test_same_key_same_pseudonyms_other_key_others(tmp_path):
    one = _scrub_small(tmp_path, "one", KEY)
    two = _scrub_small(tmp_path, "two", KEY)
    other = _scrub_small(tmp_path, "other", bytes(reversed(KEY)))
    t1, t2, t3 = _tables(one.out), _tables(two.out), _tables(other.out)
    assert t1.keys() == t2.keys() == t3.keys()
    for f in t1:
        assert t1[f].equals(t2[f]), f
    m1, m2 = (json.loads(next(s.out.rglob("manifest.json")).read_text()) for s in (one, two))
    m1["scrubbed"].pop("at"), m2["scrubbed"].pop("at")
    assert m1 == m2
    ev1, ev3 = t1["tag=main/scenario=dns_latency/run=r1/kernel_events/part-00000.parquet"], \
        t3["tag=main/scenario=dns_latency/run=r1/kernel_events/part-00000.parquet"]
    for column in ("pod", "node", "namespace", "comm", "saddr", "daddr", "detail"):
        a = set(ev1.column(column).drop_null().to_pylist())
        b = set(ev3.column(column).drop_null().to_pylist())
        assert a and not a & b, column
    # the same pod gets the same pseudonym in kernel events and spans
    sp1 = t1["tag=main/scenario=dns_latency/run=r1/spans/part-00000.parquet"]
    assert set(ev1.column("pod").to_pylist()) == set(sp1.column("k8s_pod_name").to_pylist())
    assert set(ev1.column("daddr").drop_null().to_pylist()) <= set(sp1.column("network_peer_address").to_pylist())
    assert one.key_fingerprint == two.key_fingerprint != other.key_fingerprint


def test_pseudonyms_are_keyed_and_readable():
    a, b = Pseudonyms(KEY), Pseudonyms(bytes(reversed(KEY)))
    assert re.fullmatch(r"pod-[0-9a-f]{12}", a.pseudonym("pod", "gateway-9cf7fa27f5"))
    assert a.pseudonym("pod", "x") == Pseudonyms(KEY).pseudonym("pod", "x") != b.pseudonym("pod", "x")
    assert a.pseudonym("pod", "x") != a.pseudonym("ns", "x")  # the kind is part of the input
    assert a.address("10.0.0.1").startswith("ip-") and a.address("backend.lab").startswith("dns-")
    assert a.address("fdff:5107:b9::1").startswith("ip-")


@pytest.mark.parametrize("text, gone, kept", [
    ("resolve backend.lab", ["backend.lab"], ["resolve "]),
    ("connect to 10.0.0.3:8443 refused", ["10.0.0.3"], [":8443 refused"]),
    ("peer [fdff:5107:b9::2]:443", ["fdff:5107:b9::2"], ["peer [", "]:443"]),
    ("GET https://api.example.com/v1/x?user=alice failed", ["api.example.com", "alice"], ["GET ", " failed"]),
    ("/home/alice/.cache/x.so", ["alice"], ["/home/", "/.cache/"]),
    ("SSL_do_handshake calls=2", [], ["SSL_do_handshake calls=2"]),
    ("memcg order=0 reclaimed=12", [], ["memcg order=0 reclaimed=12"]),
    ("at 2026-11-30T08:37:35.087154+00:00", [], ["2026-11-30T08:37:35.087154+00:00"]),
    ("chat lab-model", [], ["chat lab-model"]),
])
def test_free_text(text, gone, kept):
    out = Pseudonyms(KEY).text(text)
    for g in gone:
        assert g not in out, out
    for k in kept:
        assert k in out, out


# --- attributes, unknown files and columns ---------------------------------------------------


def _run_with_attributes(root: Path) -> Path:
    run_dir = root / "tag=t" / "scenario=s" / "run=a"
    (run_dir / "spans").mkdir(parents=True)
    rows = [
        {"trace_id": "a" * 32, "span_id": "1" * 16, "name": "chat m", "service_name": "gw",
         "attributes": [("http.route", "/v1/chat"), ("server.address", "10.1.2.3"), ("lab.attempt", "2"),
                        ("gen_ai.prompt", "my secret question"), ("url.full", "https://h.example/x"),
                        ("resource.service.instance.id", "5f0c-instance")]},
        {"trace_id": "a" * 32, "span_id": "2" * 16, "name": "x", "attributes": None},
        {"trace_id": "a" * 32, "span_id": "3" * 16, "name": "y", "attributes": []},
    ]
    pq.write_table(pa.Table.from_pylist([{f.name: r.get(f.name) for f in SPANS} for r in rows], schema=SPANS),
                   run_dir / "spans" / "part-00000.parquet")
    (run_dir / "notes.txt").write_text("ssh alice@10.1.2.3\n")
    (run_dir / ".recording.lock").touch()  # a recorded run has one: neither copied nor listed
    write_manifest(run_dir, {"run_id": "a", "tag": "t", "scenario": "s", "node": "n1",
                             "host": {"hostname": "n1.corp.example", "kernel": "6.1", "machine": "x86_64",
                                      "cpus": 4, "boot_id": "b-77"}})
    return run_dir


def test_attributes_allow_list_and_left_out_files(tmp_path):
    _run_with_attributes(tmp_path / "runs")
    key = _key_file(tmp_path)
    p = Pseudonyms(KEY)
    for out, allow in (("default", ()), ("more", ("lab.attempt",))):
        summary = scrub([tmp_path / "runs"], tmp_path / out, key, allow_attributes=allow)
        run = tmp_path / out / "tag=t" / "scenario=s" / "run=a"
        assert summary.runs[0].left_out == ("notes.txt",) and not (run / "notes.txt").exists()
        assert not (run / ".recording.lock").exists()
        attrs = pq.read_table(run / "spans").column("attributes").to_pylist()
        expect = [("http.route", "/v1/chat"), ("server.address", p.address("10.1.2.3"))]
        if allow:
            expect.append(("lab.attempt", "2"))
        expect.append(("url.full", p.pseudonym("url", "https://h.example/x")))
        assert attrs == [expect, None, []]
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["host"] == {"hostname": p.pseudonym("host", "n1.corp.example"), "kernel": "6.1",
                                    "machine": "x86_64", "cpus": 4, "boot_id": p.pseudonym("host", "b-77")}
        assert manifest["scrubbed"]["allow_attributes"] == sorted(ALLOWED_ATTRIBUTES | set(allow))


def test_unknown_text_column_stops_the_scrub(tmp_path):
    run_dir = make_run(tmp_path / "runs", "r1")
    f = run_dir / "requests" / "part-00000.parquet"
    table = pq.read_table(f)
    pq.write_table(table.append_column("user_note", pa.array(["hi"] * table.num_rows)), f)
    with pytest.raises(DataError, match="column user_note"):
        scrub([tmp_path / "runs"], tmp_path / "out", _key_file(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "scrub.key"]  # nothing written


def test_raw_otlp_bodies_stop_the_scrub(tmp_path):
    """A run whose spans were never flattened holds the request bodies as sent: not copied."""
    from runfmt.schema import OTLP_RAW

    run_dir = make_run(tmp_path / "runs", "r1")
    (run_dir / "otlp_raw").mkdir()
    pq.write_table(pa.table({"arrival_ns": [1], "protocol": ["http"], "content_type": ["application/json"],
                             "body": [b'{"resourceSpans": []}']}, schema=OTLP_RAW),
                   run_dir / "otlp_raw" / "part-00000.parquet")
    with pytest.raises(DataError, match="still raw OTLP bodies") as refused:
        scrub([tmp_path / "runs"], tmp_path / "out", _key_file(tmp_path))
    assert refused.value.hint == f"flatten them first: slocap repair {run_dir}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "scrub.key"]  # nothing written


def test_library_refusals(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "r1")
    key = _key_file(tmp_path)
    with pytest.raises(DataError, match="inside the input"):
        scrub([root], root / "tag=main" / "scrubbed", key)
    with pytest.raises(DataError, match="inside the input"):
        scrub([root], root, key)
    (tmp_path / "short").mkdir()
    with pytest.raises(ConfigError, match="at least 16"):
        scrub([root], tmp_path / "out", _key_file(tmp_path / "short", b"short key"))
    assert not (tmp_path / "out").exists()


# --- the command line --------------------------------------------------------------------------


def _sloan(runs: str, *args: str):
    return CliRunner().invoke(main, ["scrub", "--runs", runs, *args])


def _one_error(r, starts: str) -> None:
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    lines = r.output.splitlines()
    assert lines[0].startswith(f"error: {starts}"), r.output
    assert len(lines) == 2 and lines[1].startswith("  "), r.output  # the error on one line, then the fix


def test_cli_errors(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "r1")
    key = _key_file(tmp_path)
    r = _sloan(str(root), "--out", str(tmp_path / "out"), "--key", str(tmp_path / "missing.key"))
    _one_error(r, f"key file {tmp_path / 'missing.key'} does not exist")
    assert "head -c 32 /dev/urandom" in r.output
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 15)
    _one_error(_sloan(str(root), "--out", str(tmp_path / "out"), "--key", str(short)),
               f"key file {short} holds 15 byte(s)")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.txt").write_text("x")
    _one_error(_sloan(str(root), "--out", str(tmp_path / "full"), "--key", str(key)),
               f"--out {tmp_path / 'full'} is not empty")
    _one_error(_sloan(str(root), "--out", str(root / "public"), "--key", str(key)),
               f"--out {root / 'public'} lies inside the input {root}")
    assert not (tmp_path / "out").exists() and not (root / "public").exists()


def test_cli_scrubs_and_says_where(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "r1")
    key = _key_file(tmp_path)
    (tmp_path / "empty").mkdir()
    r = _sloan(str(root), "--out", str(tmp_path / "empty"), "--key", str(key))
    assert r.exit_code == 0, r.output
    last = r.output.splitlines()[-1]
    assert re.fullmatch(rf"scrubbed 1 run: [\d,]+ rows, [\d,]+ values replaced or dropped; "
                        rf"wrote {re.escape(str(tmp_path / 'empty'))}", last), last
    assert (tmp_path / "empty" / "tag=main" / "scenario=dns_latency" / "run=r1" / "manifest.json").is_file()
    r = _sloan(str(root / "tag=main"), "--out", str(tmp_path / "j"), "--key", str(key), "--json",
               "--allow-attr", "lab.attempt")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["runs_scrubbed"] == 1 and doc["key_fingerprint"] == hashlib.sha256(KEY).hexdigest()[:8]
    assert "lab.attempt" in doc["allow_attributes"] and doc["rows"] > 0
    assert "--allow-attr" in CliRunner().invoke(main, ["scrub", "--help"]).output
