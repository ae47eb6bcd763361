"""slocap record/doctor as an SRE runs them: exit codes, messages, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from capture import preflight
from capture.cli import main

SLOCAP = str(Path(sys.executable).parent / "slocap")


def _invoke(*args):
    return CliRunner().invoke(main, list(args))


def test_not_root_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(preflight, "effective_caps", lambda: dict.fromkeys(preflight.CAPS, False))
    r = _invoke("record", "--out", str(tmp_path), "--duration", "1")
    assert r.exit_code == 1
    assert r.output.startswith("error: slocap needs root to load eBPF probes: uid ")
    assert "run it as root (sudo slocap ...)" in r.output
    assert "Traceback" not in r.output
    assert not any(tmp_path.iterdir())  # nothing half-made


@pytest.mark.parametrize("mode", ["core", "auto"])
def test_missing_btf_is_one_clear_error(monkeypatch, tmp_path, mode):
    # auto falls back to BCC when it can; here it cannot
    monkeypatch.setattr(preflight, "effective_caps", lambda: dict.fromkeys(preflight.CAPS, True))
    monkeypatch.setattr(preflight, "BTF_PATH", tmp_path / "no-vmlinux")
    monkeypatch.setattr(preflight, "_bcc_usable", lambda: False)
    r = _invoke("record", "--out", str(tmp_path / "runs"), "--duration", "1", "--mode", mode)
    assert r.exit_code == 1
    assert r.output.splitlines()[0] == f"error: no kernel BTF at {tmp_path / 'no-vmlinux'}: CO-RE probes cannot be relocated on this kernel"
    assert "CONFIG_DEBUG_INFO_BTF=y" in r.output
    assert "Traceback" not in r.output


def test_tracefs_not_mountable_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(preflight, "effective_caps", lambda: dict.fromkeys(preflight.CAPS, True))
    monkeypatch.setattr(preflight, "BTF_PATH", Path(__file__))  # any existing file
    monkeypatch.setattr(preflight, "tracefs_mounted", lambda: False)
    monkeypatch.setattr(preflight, "tracefs_mountable", lambda: False)
    r = _invoke("record", "--out", str(tmp_path / "runs"), "--duration", "1")
    assert r.exit_code == 1
    assert r.output.startswith("error: tracefs is not mounted and this kernel does not offer it")
    assert "Traceback" not in r.output


def test_unknown_signal_names_the_choices(tmp_path):
    r = _invoke("record", "--out", str(tmp_path), "--signals", "dns,bogus")
    assert r.exit_code == 2  # click's usage error
    assert "unknown signal 'bogus'; choose from dns, retransmit, connect" in r.output


def test_bad_config_names_the_json_path(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"sampling": {"events_per_second_limit": -1}}))
    r = _invoke("record", "--out", str(tmp_path), "--config", str(cfg))
    assert r.exit_code == 1
    assert "$.sampling.events_per_second_limit" in r.output


@pytest.mark.kernel
def test_doctor_json_reports_core_full_with_hooks():
    r = subprocess.run([SLOCAP, "doctor", "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["mode"] == "core_full"
    assert d["tracefs"] == "mounted" and d["btf"] and d["root"]
    for name, hook in [("dns", "uprobe:"), ("retransmit", "tp_btf/tcp_retransmit_skb"),
                       ("connect", "tp_btf/inet_sock_set_state")]:
        assert d["signals"][name]["available"], d["signals"][name]
        assert any(h.startswith(hook) for h in d["signals"][name]["hooks"])


@pytest.mark.kernel
def test_sigint_leaves_valid_parts_and_an_honest_manifest(tmp_path):
    cfg = tmp_path / "fast-parts.json"
    cfg.write_text(json.dumps({"capture": {"part_max_seconds": 0.3}}))
    out = tmp_path / "runs"
    proc = subprocess.Popen([SLOCAP, "record", "--out", str(out), "--config", str(cfg),
                             "--signals", "dns,connect"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not list(out.glob("tag=*/scenario=*/run=*/manifest.json")):
            assert time.monotonic() < deadline, "recorder did not start"
            time.sleep(0.1)
        end = time.monotonic() + 2.0
        while time.monotonic() < end:  # lookups keep parts rotating
            socket.getaddrinfo("localhost", 80)
            time.sleep(0.002)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    run_dir = next(out.glob("tag=*/scenario=*/run=*"))
    assert str(run_dir) in stdout.replace("\n", "")
    assert "cut short (SIGINT)" in stdout
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["complete"] is False
    assert manifest["stop_reason"] == "SIGINT"
    parts = sorted((run_dir / "kernel_events").glob("part-*.parquet"))
    assert len(parts) >= 3, "expected several rotated parts"
    assert manifest["files"]["kernel_events"] == [p.name for p in parts]
    total = 0
    for p in parts:  # every part opens on its own
        total += duckdb.sql(f"SELECT count(*) FROM read_parquet('{p}')").fetchall()[0][0]
    counters = manifest["counters"]
    assert set(counters) == {"dns", "connect"}
    assert counters["dns"]["written"] > 0
    assert sum(c["written"] for c in counters.values()) == total
    for c in counters.values():
        assert c["seen"] == c["written"] + c["dropped"]


@pytest.mark.kernel
def test_mode_bcc_records_dns_in_the_same_schema_and_says_degraded(tmp_path):
    from capture.bcc import bcc_available
    from runfmt.schema import KERNEL_EVENTS

    reason = bcc_available()
    if reason and not os.environ.get("CI"):
        pytest.skip(f"BCC not usable here: {reason}")
    out = tmp_path / "runs"
    proc = subprocess.Popen([SLOCAP, "record", "--mode", "bcc", "--signals", "dns,retransmit,connect",
                             "--out", str(out), "--duration", "6"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(out.glob("tag=*/scenario=*/run=*/manifest.json")):
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else "slow"
            time.sleep(0.1)
        time.sleep(0.5)
        socket.getaddrinfo("localhost", 80)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    run_dir = next(out.glob("tag=*/scenario=*/run=*"))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["capability"]["mode"] == "bcc_degraded"
    signals = manifest["capability"]["signals"]
    assert set(manifest["capability"]["missing"]) == set(signals) - {"dns", "retransmit"}
    assert signals["dns"]["attached"] and signals["retransmit"]["attached"]
    assert signals["connect"]["error"]  # requested, but BCC mode has no connect probe
    import pyarrow.parquet as pq

    table = pq.read_table(run_dir / "kernel_events")
    assert table.schema.remove_metadata() == KERNEL_EVENTS
    rows = [r for r in table.to_pylist() if r["signal"] == "dns" and r["pid"] == os.getpid()]
    assert rows and rows[0]["detail"] == "localhost" and rows[0]["value_ns"] > 0


@pytest.mark.kernel
def test_a_reused_run_id_is_one_line_and_changes_nothing(tmp_path):
    run_dir = tmp_path / "tag=adhoc" / "scenario=adhoc" / "run=again"
    run_dir.mkdir(parents=True)
    (run_dir / "keep.txt").write_text("earlier run")
    r = _invoke("record", "--out", str(tmp_path), "--run-id", "again", "--duration", "1", "--no-otlp")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.output.splitlines() == [f"error: run directory {run_dir} exists: run id 'again' was used before",
                                     "  pass another --run-id, or leave it out for a new one"]
    assert [p.name for p in run_dir.iterdir()] == ["keep.txt"]


@pytest.mark.kernel
def test_run_files_are_the_owners_only(tmp_path):
    # what a run holds (addresses, DNS names, span attributes) is not for other users
    done = subprocess.run([SLOCAP, "record", "--out", str(tmp_path), "--duration", "1.5", "--signals", "dns",
                           "--no-otlp"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (run_dir,) = tmp_path.glob("tag=*/scenario=*/run=*")
    assert (run_dir.stat().st_mode & 0o777) == 0o700
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert files and all((p.stat().st_mode & 0o077) == 0 for p in files), [oct(p.stat().st_mode) for p in files]
