"""The package map of docs/architecture.md, held against the code's imports."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runfmt", "capture", "analyze", "replay")


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import in a file, function-level imports included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def _imported_packages(package: str) -> dict[str, set[str]]:
    """project package -> the files of `package` that import it."""
    seen: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        for module, _ in _imports(path):
            top = module.split(".")[0]
            if top in PACKAGES and top != package:
                seen.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return seen


@pytest.mark.parametrize("package, forbidden", [
    ("runfmt", {"capture", "analyze", "replay"}),  # the bottom: imports none of them
    ("capture", {"analyze", "replay"}),  # the recorder knows neither the analyzer nor the lab
    ("analyze", {"capture", "replay"}),  # the analyzer reads run directories only
])
def test_dependencies_point_one_way(package, forbidden):
    wrong = {p: files for p, files in _imported_packages(package).items() if p in forbidden}
    assert not wrong, f"{package} imports {wrong}"


def test_the_lab_uses_of_the_recorder_only_its_client_side():
    # the lab's services are traced processes: they publish their trace context
    # through capture.tracing; and the lab runs `slocap record`, so it checks the
    # host for it first (capture.preflight). Nothing else of the recorder.
    uses = {module for path in (ROOT / "replay").rglob("*.py") for module, _ in _imports(path)
            if module.split(".")[0] == "capture"}
    assert uses <= {"capture.tracing", "capture.preflight"}, uses


def test_benchmarks_import_no_private_names():
    private = [f"{path.name}: {module}.{name}" for path in (ROOT / "bench").glob("*.py")
               for module, names in _imports(path) if module.split(".")[0] in PACKAGES
               for name in names if name.startswith("_")]
    assert not private


def test_signal_names_have_one_source():
    from capture.signals import SIGNALS
    from runfmt import CONFIG_DIR
    from runfmt.signals import SIGNAL_NAMES

    assert tuple(SIGNALS) == SIGNAL_NAMES
    schema = json.loads((CONFIG_DIR / "toolkit.schema.json").read_text())
    enum = schema["properties"]["signal_set"]["properties"]["enabled"]["items"]["enum"]
    assert tuple(enum) == SIGNAL_NAMES


def test_fault_domains_come_from_the_contract():
    from analyze.attribution import DOMAINS
    from replay.faults import SCENARIOS

    schema = json.loads((ROOT / "docs/contracts/v1/incident-attribution.schema.json").read_text())
    assert set(DOMAINS) | {"unknown"} == set(schema["$defs"]["fault_domain"]["enum"])
    assert {s.domain for s in SCENARIOS.values()} <= set(DOMAINS)


def test_slocap_lab_is_registered_by_the_lab():
    from capture.cli import main

    assert main.commands["lab"].callback.__module__ == "replay.cli"
