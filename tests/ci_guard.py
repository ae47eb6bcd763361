"""pytest plugin: in CI, a skipped test fails the run."""

from __future__ import annotations

import os

import pytest

# In CI every test must run: a skip there hides a set-up step that stopped
# installing something (as when `make setup` silently stopped setting up BCC).
# A test whose skip depends on the kernel's behaviour, not on set-up, says so
# with the may_skip_in_ci marker.
_SKIPPED_IN_CI: list[str] = []


def pytest_runtest_logreport(report):
    if (os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail")
            and "may_skip_in_ci" not in report.keywords):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPPED_IN_CI.append(f"{report.nodeid}: {reason}")


def pytest_collectreport(report):
    # a module-level skip (pytest.importorskip of a missing extra) is a collection report
    if os.environ.get("CI") and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPPED_IN_CI.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if _SKIPPED_IN_CI and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if _SKIPPED_IN_CI:
        terminalreporter.section("skipped in CI (a set-up step is missing)", red=True)
        for line in _SKIPPED_IN_CI:
            terminalreporter.write_line(line)
