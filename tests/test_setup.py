"""`make setup` prepares a fresh machine, and CI notices when it stops doing so."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

# what the kernel, BCC and lab tests need from set-up, as make would run it
INSTALL_STEPS = {
    "Debian packages": "apt-get install",
    "tracefs": "mount -t tracefs",
    "venv": "-m venv",
    "the project and its test extras": "pip install",
    "kernel types for CO-RE": "btf dump",
    "the probes": "-target bpf",
    "the trace library": "libslotrace.so",
    "BCC and its kernel headers": "bcc_setup.sh",
}


def _make(*args: str) -> str:
    done = subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_setup_runs_every_install_step():
    plan = _make("-n", "-B", "setup")  # -B: what a fresh machine runs, even where this one is set up
    missing = [what for what, command in INSTALL_STEPS.items() if command not in plan]
    assert not missing, f"make setup no longer runs: {', '.join(missing)}"


def test_every_prerequisite_of_setup_has_a_rule():
    # a phony target without a rule does nothing, silently: that is how BCC set-up was lost
    prerequisites = re.search(r"^setup:(.*)$", _database(), re.M).group(1).split()
    assert prerequisites
    for target in prerequisites:
        plan = _make("-n", "-B", target)
        assert plan.strip() and "Nothing to be done" not in plan, f"make {target} does nothing"


def _database() -> str:
    """make's rule database: the targets as make read them."""
    return subprocess.run(["make", "-p", "-n", "setup"], cwd=ROOT, capture_output=True, text=True).stdout


@pytest.mark.parametrize("outcome, code", [("pytest.skip('tool missing')", 1), ("pass", 0)])
def test_a_skipped_test_fails_a_ci_run(pytester, monkeypatch, outcome, code):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    pytester.makepyfile(f"import pytest\n\ndef test_it():\n    {outcome}\n")
    result = pytester.runpytest_subprocess("-p", "ci_guard")
    assert result.ret == code
    if code:
        result.stdout.fnmatch_lines(["*skipped in CI (a set-up step is missing)*", "*test_it: *tool missing*"])


def test_a_kernel_dependent_skip_is_allowed_when_marked(pytester, monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    pytester.makeini("[pytest]\nmarkers =\n    may_skip_in_ci: kernel's reason\n")
    pytester.makepyfile("import pytest\n\n@pytest.mark.may_skip_in_ci\n"
                        "def test_it():\n    pytest.skip('no reclaim stall this time')\n")
    assert pytester.runpytest_subprocess("-p", "ci_guard").ret == 0


def test_a_module_skipped_for_a_missing_extra_fails_a_ci_run(pytester, monkeypatch):
    """pytest.importorskip at module level skips at collection, outside the per-test reports."""
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    pytester.makepyfile(test_extra="import pytest\npytest.importorskip('no_such_extra_zz')\n\n"
                                   "def test_it():\n    pass\n",
                        test_other="def test_fine():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "ci_guard")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*skipped in CI (a set-up step is missing)*", "*no_such_extra_zz*"])
