"""The built wheel, installed into a fresh venv, works outside the checkout.

SQL, config, contracts, BPF objects, BCC sources and the trace library must come
from the installed package, never from the repository around it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "datasets" / "labeled" / "tag=main"
# runs of two scenarios, enough for every sloan command to have something to say
SCENARIOS = ("baseline", "dns_latency")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    done = subprocess.run(["make", "--no-print-directory", "wheel", f"DIST={dist}"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    (found,) = dist.glob("*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel, and an empty working directory outside the checkout."""
    where = tmp_path_factory.mktemp("installed")
    subprocess.run([sys.executable, "-m", "venv", str(where / "venv")], check=True)
    done = subprocess.run([str(where / "venv/bin/pip"), "install", "-q", str(wheel)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return where


def _run(installed: Path, *args: str, ok=(0,), timeout=300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    cwd = installed / "work"
    cwd.mkdir(exist_ok=True)
    done = subprocess.run([str(installed / "venv/bin" / args[0]), *args[1:]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode in ok, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_the_wheel_is_tagged_for_the_platform_it_carries_binaries_for(wheel):
    assert wheel.name.endswith("-py3-none-linux_x86_64.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("capture/_trace/libslotrace.so", "capture/_bpf/dns.bpf.o", "capture/_bpf_src/bcc/dns.c",
                    "capture/_bpf_src/common.h", "runfmt/sql/phase_summary.sql", "runfmt/config/defaults.json",
                    "runfmt/config/toolkit.schema.json", "runfmt/contracts/v1/slo-event.schema.json"):
        assert shipped in names


def test_the_installed_package_reads_its_data_from_site_packages(installed):
    code = ("import runfmt, capture.bcc, capture.libraries, capture.signals; "
            "print(runfmt.SQL_DIR, runfmt.CONFIG_DIR, runfmt.CONTRACTS_DIR, capture.bcc.SOURCE_DIR, "
            "capture.libraries.SLOTRACE, capture.signals.OBJECT_DIR)")
    paths = _run(installed, "python", "-c", code).stdout.split()
    for path in paths:
        assert "site-packages" in path and Path(path).exists(), path
        assert not Path(path).resolve().is_relative_to(ROOT)


@pytest.fixture(scope="module")
def runs(installed) -> Path:
    """Committed labelled runs under two tags, copied beside the installed package."""
    root = installed / "work" / "runs"
    for tag in ("main", "v0.2-rc"):
        for scenario in SCENARIOS:
            shutil.copytree(DATASET / f"scenario={scenario}", root / f"tag={tag}" / f"scenario={scenario}")
    return root


def test_every_sloan_command_runs_from_the_wheel(installed, runs):
    main = str(runs / "tag=main")
    assert "correlate" in _run(installed, "sloan", "--help").stdout
    out = _run(installed, "sloan", "sql", "SELECT count(*) AS n FROM kernel_events", "--runs", main,
               "--format", "json").stdout
    assert json.loads(out.splitlines()[0])["n"] > 0  # JSON lines
    assert "scenario" in _run(installed, "sloan", "sql", "--named", "phase_summary", "--runs", main,
                              "--format", "csv").stdout
    assert json.loads(_run(installed, "sloan", "correlate", "--runs", main, "--json").stdout)["events"] > 0
    _run(installed, "sloan", "slo", "--runs", main)
    _run(installed, "sloan", "attribute", "--runs", main)
    _run(installed, "sloan", "score", "--runs", main)
    _run(installed, "sloan", "report", "--runs", main, "-o", "report.md")
    assert (installed / "work" / "report.md").stat().st_size > 0
    _run(installed, "sloan", "compare", "main", "v0.2-rc", "--runs", str(runs))
    # the committed runs predate direct overhead accounting: that check cannot judge them (2)
    gate = _run(installed, "sloan", "gate", "--runs", str(runs), "--base", "main", "--candidate", "v0.2-rc",
                "--allow-exploratory", ok=(0, 1, 2))
    assert "## Release gate: v0.2-rc against main" in gate.stdout
    _run(installed, "sloan", "repro", "--runs", main)


def test_slocap_commands_run_from_the_wheel(installed):
    assert "record" in _run(installed, "slocap", "--help").stdout
    assert "dns_latency" in _run(installed, "slocap", "lab", "list").stdout


@pytest.mark.kernel
def test_slocap_doctor_and_record_from_the_wheel(installed):
    report = json.loads(_run(installed, "slocap", "doctor", "--json", ok=(0, 1)).stdout)
    assert report
    _run(installed, "slocap", "record", "--out", "recorded", "--duration", "3", "--signals", "dns,connect")
    (manifest,) = (installed / "work" / "recorded").glob("tag=*/scenario=*/run=*/manifest.json")
    assert json.loads(manifest.read_text())["complete"] is True


@pytest.mark.kernel
def test_a_lab_run_from_the_wheel(installed):
    _run(installed, "slocap", "lab", "run", "--scenario", "dns_latency", "--profile", "smoke", "--tag", "wheel",
         "--out", "lab-runs", "--lab-index", "7", timeout=600)
    (run_dir,) = (installed / "work" / "lab-runs").glob("tag=wheel/scenario=dns_latency/run=*")
    assert list((run_dir / "kernel_events").glob("*.parquet")) and (run_dir / "labels.parquet").exists()
