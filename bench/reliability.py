"""Runs tests/reliability (and the abuse cases tested elsewhere, ELSEWHERE) and writes
their outcomes as the README's Reliability table.

Each test is one abuse case; its docstring's first line (or its name) says the
case and the expected outcome. The table between the README's markers is
replaced with what this run observed: passed, failed or skipped, and how long.

    python bench/reliability.py            # run, print the table, update README.md
    python bench/reliability.py --check    # run and print only (exit 1 if any case failed)
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests" / "reliability"
# cases tested beside the code they check, run here too
ELSEWHERE = (
    "tests/analyze/test_sql_cli.py::test_sql_reads_the_runs_and_nothing_else",
    "tests/analyze/test_bad_input.py::test_damaged_data_page_is_one_line_naming_the_file",
    "tests/analyze/test_bad_input.py::test_sql_skip_bad_leaves_a_damaged_page_out",
    "tests/analyze/test_bad_input.py::test_correlate_skip_bad_leaves_a_damaged_page_out",
    "tests/analyze/test_run_state.py::test_every_command_warns_of_a_cut_run",
    "tests/analyze/test_run_state.py::test_a_degraded_run_says_what_was_shed",
)
README = ROOT / "README.md"
BEGIN, END = "<!-- reliability:begin -->", "<!-- reliability:end -->"


def _cases() -> dict[tuple[str, str], str]:
    """(module, test name) -> the case in words: the docstring's first line, else the name."""
    cases = {}
    for path in sorted(TESTS.glob("test_*.py")) + sorted({ROOT / e.split("::")[0] for e in ELSEWHERE}):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                doc = ast.get_docstring(node)
                words = doc.splitlines()[0] if doc else node.name[5:].replace("_", " ")
                cases[(path.stem, node.name)] = words[0].upper() + words[1:]
    return cases


def _run() -> list[tuple[str, str, str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        subprocess.run([sys.executable, "-m", "pytest", str(TESTS), *ELSEWHERE, "-q", "-p", "no:cacheprovider",
                        f"--junitxml={xml}"], cwd=ROOT, check=False)
        suite = ET.parse(xml).getroot()
    cases, rows = _cases(), []
    for tc in suite.iter("testcase"):
        module, name = tc.get("classname", "").rsplit(".", 1)[-1], tc.get("name", "")
        base = name.split("[")[0]
        outcome = ("failed" if tc.find("failure") is not None or tc.find("error") is not None
                   else "skipped" if tc.find("skipped") is not None else "passed")
        case = cases.get((module, base), base)
        if name != base:
            case += f" ({name[len(base) + 1:-1]})"
        rows.append((module.removeprefix("test_").replace("_", " "), case, outcome, float(tc.get("time", 0))))
    return rows


def _table(rows) -> str:
    lines = ["| area | case | outcome | s |", "|---|---|---|---|"]
    lines += [f"| {area} | {case} | {outcome} | {secs:.1f} |" for area, case, outcome, secs in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="print the table, leave README.md alone")
    args = parser.parse_args()
    rows = _run()
    table = _table(rows)
    print(table)
    failed = [r for r in rows if r[2] != "passed"]
    if not args.check:
        text = README.read_text()
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        if not rest:
            sys.exit(f"README.md has no {BEGIN} ... {END} markers to write the table between")
        README.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
        print(f"README.md: Reliability table updated ({len(rows)} cases, {len(failed)} not passed)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
