"""bench/correlate_throughput.py at a tiny size, on GENERATED data (seeded numpy, nothing
recorded): the generator exercises every tier, and `sloan correlate`'s DuckDB path and the
pandas merge_asof implementation give every event the same tier and span. With --lanes 1
(the default) no two spans of a tier's group overlap in time, so they must agree exactly."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

pytest.importorskip("pandas", reason="pandas is the bench extra: pip install -e '.[bench]'")

from analyze.correlate import TIERS  # noqa: E402
from bench.correlate_throughput import (  # noqa: E402
    compare_outputs,
    correlate_duckdb,
    correlate_pandas,
    generate_run,
    parse_size,
)

EVENTS, SPANS = 20_000, 2_000


@pytest.fixture(scope="module")
def correlated(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    run_dir = root / "tag=bench" / "scenario=generated" / "run=generated"
    made = generate_run(run_dir, EVENTS, SPANS, seed=42)
    duck = correlate_duckdb(run_dir)
    pand = correlate_pandas(run_dir, root / "pandas")
    return run_dir, root / "pandas", made, duck, pand


def test_generated_run_exercises_every_tier(correlated):
    _, _, made, duck, _ = correlated
    assert made["generated"] is True
    assert (made["events"], made["spans"]) == (EVENTS, SPANS)
    assert duck["events"] == EVENTS and duck["spans"] == SPANS
    for tier in TIERS:
        assert duck["tiers"][tier] > EVENTS // 20, tier
    assert EVENTS - sum(duck["tiers"].values()) > EVENTS // 20  # events without any candidate


def test_duckdb_and_pandas_agree_per_tier_and_with_the_construction(correlated):
    run_dir, pandas_dir, made, duck, pand = correlated
    assert pand["tiers"] == duck["tiers"]
    assert (pand["matched"], pand["unmatched"], pand["spans_enriched"]) == (
        duck["matched"], duck["unmatched"], duck["spans_enriched"])
    assert {t: made["expected_tiers"][t] for t in TIERS} == duck["tiers"]
    agreement = compare_outputs(run_dir, pandas_dir)
    assert agreement["duckdb_tiers"] == agreement["pandas_tiers"] == made["expected_tiers"]
    assert agreement["tier_agreement"] == 1.0 and agreement["span_agreement"] == 1.0, agreement["examples"]


def test_pandas_writes_the_same_outputs(correlated):
    run_dir, pandas_dir, *_ = correlated
    for name in ("correlated.parquet", "unmatched.parquet"):
        duck, pand = (pq.read_table(d / name).sort_by("cgroup_id") for d in (run_dir, pandas_dir))
        assert duck.equals(pand), name
    keys = [("trace_id", "ascending"), ("span_id", "ascending")]
    duck, pand = (pq.read_table(d / "enriched_spans.parquet").sort_by(keys) for d in (run_dir, pandas_dir))
    assert duck.schema.equals(pand.schema)
    for column in duck.column_names:
        if column.endswith("_ms_sum"):  # summed in another order: equal to the last ulp or so
            assert duck.column(column).to_pylist() == pytest.approx(pand.column(column).to_pylist()), column
        else:
            assert duck.column(column).equals(pand.column(column)), column


def test_generation_is_seeded(tmp_path):
    a = generate_run(tmp_path / "a", 2_000, 200, seed=7)
    b = generate_run(tmp_path / "b", 2_000, 200, seed=7)
    generate_run(tmp_path / "c", 2_000, 200, seed=8)
    assert a["categories"] == b["categories"]
    tables = {k: pq.read_table(tmp_path / k / "kernel_events") for k in "abc"}
    assert tables["a"].equals(tables["b"])
    assert not tables["a"].equals(tables["c"])


def test_sizes_parse():
    assert [parse_size(s) for s in ("1M", "2.5m", "20k", "1_000")] == [1_000_000, 2_500_000, 20_000, 1_000]


def test_a_run_made_in_chunks_keeps_every_event_and_its_tier(tmp_path, monkeypatch):
    """Big sizes (100M) are generated a chunk of events at a time: every event is numbered
    once, the parts do not collide, and correlation still gives each tier its constructed count."""
    import numpy as np

    import bench.correlate_throughput as bench

    monkeypatch.setattr(bench, "CHUNK_EVENTS", 7_000)
    run_dir = tmp_path / "tag=bench" / "scenario=generated" / "run=chunked"
    made = generate_run(run_dir, 20_000, 2_000, seed=42, part_rows=3_000)
    numbers = np.sort(pq.read_table(run_dir / "kernel_events").column("cgroup_id").to_numpy())
    assert (numbers == np.arange(1, 20_001)).all()
    duck = correlate_duckdb(run_dir)
    assert duck["tiers"] == {t: made["expected_tiers"][t] for t in TIERS}


def test_io_floor_times_a_read_and_a_write_of_every_event(capsys):
    from bench.io_floor import main

    assert main(["--events", "20k", "--repeat", "1", "--threads", "1"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("20,000 events, median of 1: read every column ")
    assert "write one zstd Parquet row per event" in line
