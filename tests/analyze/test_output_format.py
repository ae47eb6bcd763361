"""How sloan shows its tables: whole when stdout is not a terminal (CliRunner's stdout is
not one), and the same tables as --format table, markdown, csv and json.

Over the committed lab runs in datasets/labeled/ (see tests/analyze/test_scoring.py) and
small tables made here."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from analyze.formatting import Fixed, Grid, Styled, render

DATASET = Path(__file__).resolve().parents[2] / "datasets" / "labeled"
BOX = set("│┃━─┏┓┗┛┡┩└┘╇╋┼")

needs_dataset = pytest.mark.skipif(not any(DATASET.rglob("labels.parquet")),
                                   reason=f"no labelled runs committed at {DATASET}")


def cells(line: str) -> list[str]:
    """The cells of a plain table row: columns two spaces or more apart."""
    return re.split(r" {2,}", line.strip())


def assert_whole(text: str) -> None:
    assert "…" not in text
    assert not BOX & set(text), "box drawing in a pipe"


def first_run() -> Path:
    return min(DATASET.glob("tag=*/scenario=*/run=*"))


# --- not a terminal: every name in full ---------------------------------------------------


@needs_dataset
def test_score_in_a_pipe_names_every_column_and_row_in_full(sloan, tmp_path):
    r = sloan("score", "--runs", DATASET, "--resamples", 100, "--json", tmp_path / "score.json")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "score.json").read_text())
    assert_whole(r.output)
    lines = r.output.splitlines()
    # the confusion matrix: its header names every predicted class, each row starts with its truth
    truths = list(doc["confusion"])
    predicted = sorted({p for row in doc["confusion"].values() for p in row})
    assert len(set(truths)) == len(truths) > 1
    at = lines.index("confusion (rows truth, columns top prediction)")
    assert cells(lines[at + 1]) == ["truth", *predicted]
    for truth in truths:
        row = next(line for line in lines[at:] if line.startswith(truth + " "))
        assert cells(row) == [truth, *(str(doc["confusion"][truth].get(p, 0)) for p in predicted)]
    # the attribution table: every domain, then macro
    header = lines[lines.index("attribution (violating windows of test runs; CI95 bootstrap over runs)") + 1]
    assert cells(header) == ["domain", "precision", "recall", "F1", "TP", "FP", "FN"]
    for domain, m in doc["per_domain"].items():
        assert cells(next(line for line in lines if line.startswith(domain + " ")))[-3:] == [
            str(m["tp"]), str(m["fp"]), str(m["fn"])]
    assert any(line.startswith("macro ") for line in lines)


@needs_dataset
def test_phase_summary_in_a_pipe_prints_every_scenario_run_and_phase(sloan):
    r = sloan("sql", "--named", "phase_summary", "--runs", DATASET, "--format", "csv")
    assert r.exit_code == 0, r.output
    rows = list(csv.reader(io.StringIO(r.stdout)))
    r = sloan("sql", "--named", "phase_summary", "--runs", DATASET)
    assert r.exit_code == 0, r.output
    assert_whole(r.output)
    lines = r.stdout.splitlines()
    assert cells(lines[0]) == rows[0]  # every column name, whole
    assert set(lines[1]) <= {"-", " "}
    assert len(lines) == 2 + len(rows) - 1
    for line, row in zip(lines[2:], rows[1:]):
        assert cells(line)[:3] == row[:3]  # scenario, run, phase: never cut
    assert any(len(row[0]) > 30 for row in rows[1:])  # names longer than an 80-column table leaves


@needs_dataset
def test_a_terminal_gets_rich_tables_that_fold_instead_of_cutting(sloan, monkeypatch):
    from rich.console import Console

    from analyze.cli import options

    monkeypatch.setattr(options, "_isatty", lambda stream: True)
    monkeypatch.setattr(options, "console", lambda: Console(width=40, highlight=False))
    name = "memory_pressure+provider_throttle+network_dns"
    r = sloan("sql", f"SELECT '{name}' AS scenario_of_the_run, 1234567 AS requests_in_the_fault_phase",
              "--runs", DATASET)
    assert r.exit_code == 0, r.output
    assert "┃" in r.stdout and "…" not in r.stdout
    folded = "".join(line.strip("│ ").split("│")[0].strip() for line in r.stdout.splitlines() if line.startswith("│"))
    assert name in folded


# --- one command, every --format ----------------------------------------------------------


@needs_dataset
@pytest.mark.parametrize("out_format", ["table", "markdown", "csv", "json"])
def test_slo_in_every_format(sloan, out_format):
    run = first_run()
    doc = json.loads(sloan("slo", "--runs", run, "--json").stdout)
    r = sloan("slo", "--runs", run, "--format", out_format)
    assert r.exit_code == 0, r.output
    assert_whole(r.output)
    summary = doc["runs"][0]["summary"]
    if out_format == "json":
        assert json.loads(r.stdout) == doc  # the --json document
        return
    if out_format == "csv":
        blocks = r.stdout.split("\n\n")
        assert len(blocks) == 2  # the SLI table and the windows table
        assert all(b.startswith("# ") for b in blocks)
        slis = list(csv.DictReader(io.StringIO(blocks[0].split("\n", 1)[1])))
        assert [row["SLI"] for row in slis] == list(summary)
        for row in slis:
            assert int(row["measured"]) == summary[row["SLI"]]["measured"]  # numbers bare, no separators
        windows = list(csv.DictReader(io.StringIO(blocks[1].split("\n", 1)[1])))
        assert len(windows) == len(doc["runs"][0]["windows"])
        assert "windows page" in r.stderr  # the lines go to stderr
        return
    if out_format == "markdown":
        assert "| SLI | measured | ok | warning | breach | p50 | p95 | unit |" in r.stdout
        assert "|---|---:|---:|---:|---:|---:|---:|---|" in r.stdout
        for sli in summary:
            assert f"| {sli} | " in r.stdout
        return
    lines = r.stdout.splitlines()
    header = next(line for line in lines if line.startswith("SLI "))
    assert cells(header) == ["SLI", "measured", "ok", "warning", "breach", "p50", "p95", "unit"]
    for sli in summary:
        assert any(line.startswith(sli + " ") for line in lines)
    assert lines[-1].endswith("windows page.")


@needs_dataset
def test_sql_as_markdown(sloan):
    r = sloan("sql", "SELECT 'a|b' AS name, 1200 AS n, NULL AS gone", "--runs", DATASET, "--format", "markdown")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == ["| name | n | gone |", "|---|---:|---|", "| a\\|b | 1,200 |  |"]


@needs_dataset
def test_format_json_is_the_json_flag_and_both_work(tmp_path, sloan):
    out = tmp_path / "repro.json"
    r = sloan("repro", "--runs", DATASET, "--format", "json", "--json", out)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == json.loads(out.read_text())
    assert json.loads(sloan("repro", "--runs", DATASET, "--json").stdout) == json.loads(r.stdout)


def test_every_table_printing_command_takes_format():
    from analyze.cli import main

    for name in ("sql", "score", "slo", "attribute", "correlate", "compare", "gate", "repro"):
        params = {p.name: p for p in main.commands[name].params}
        assert "out_format" in params, name
        assert {"table", "markdown", "csv", "json"} <= set(params["out_format"].type.choices), name


# --- the renderers ------------------------------------------------------------------------


def grid() -> Grid:
    g = Grid("cases | of a title", ["truth", "n", "flag"], right={"n"})
    g.add_row("cpu_throttle+network_dns", 12345, Styled("> 10 %", "bold red"), end_section=True)
    g.add_row("x|y", Fixed(1234.56, 1), {"k": [1, 2]})
    return g


def test_plain_table_aligns_whole_cells_and_marks_sections():
    assert render(grid(), "table").splitlines() == [
        "cases | of a title",
        "truth                           n  flag",
        "------------------------  -------  -------------",
        "cpu_throttle+network_dns   12,345  > 10 %",
        "------------------------  -------  -------------",
        'x|y                       1,234.6  {"k": [1, 2]}',
    ]


def test_markdown_escapes_pipes_and_right_aligns_numbers():
    assert render(grid(), "markdown").splitlines() == [
        "**cases \\| of a title**", "",
        "| truth | n | flag |", "|---|---:|---|",
        "| cpu_throttle+network_dns | 12,345 | > 10 % |",
        '| x\\|y | 1,234.6 | {"k": [1, 2]} |',
    ]


def test_csv_and_json_read_back():
    rows = list(csv.reader(io.StringIO(render(grid(), "csv"))))
    assert rows == [["truth", "n", "flag"], ["cpu_throttle+network_dns", "12345", "> 10 %"],
                    ["x|y", "1234.6", '{"k": [1, 2]}']]
    assert json.loads(render(grid(), "json")) == [
        {"truth": "cpu_throttle+network_dns", "n": 12345, "flag": "> 10 %"},
        {"truth": "x|y", "n": 1234.6, "flag": {"k": [1, 2]}}]


def test_a_row_must_fill_the_columns():
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        grid().add_row("a", 1)
