"""`sloan correlate --engine spark` against the DuckDB engine, on the same run directories.

Both engines run the same sql/correlate_*.sql files (analyze/correlate_spark.py translates them
with sqlglot), so they must agree row for row: every event the same tier and the same span (trace_id,
span_id, tier, confidence), every enriched span the same aggregates, the same unmatched rows, the same
column types and the same summary. Only the order of rows of equal ts_ns (equal start_ns for spans)
may differ, so the outputs are compared as sorted tables and their order by time as written.

Checked on the hand-made runs of test_correlate.py (every tier's boundaries), on runs of the committed
labelled set (all 21 agree; they take about 2.5 min under Spark local[2] on 2 cores, so two are
checked here: one with every tier, one of the largest, its requests retried), and on a GENERATED run of
1 M kernel events (bench/correlate_throughput.py's generator; about a minute under Spark on 2 cores).
One Spark session (local[2]) serves the whole module: the JVM starts once.
"""

from __future__ import annotations

import gc
import json
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

pytest.importorskip("pyspark", reason="the spark extra: make setup installs it (pip install -e '.[spark]')")

from analyze.cli import main  # noqa: E402
from analyze.correlate import OUTPUTS, STEPS, WHOLE_RUN, _params, correlate  # noqa: E402
from analyze.correlate_spark import correlate as correlate_spark  # noqa: E402
from analyze.correlate_spark import spark_session, spark_sql, translate  # noqa: E402
from bench.correlate_throughput import compare_outputs, generate_run  # noqa: E402
from runfmt.errors import DataError, SloError  # noqa: E402
from tests.analyze import test_correlate as hand_made  # noqa: E402
from tests.analyze.test_correlate import LABELED, ev, sp, span, trace, write_run  # noqa: E402

runs = hand_made.runs  # the fixture: two hand-made runs, each event's detail naming the tier it tests

LABELED_RUNS = (
    "tag=main/scenario=tcp_loss+retrieval_slowdown/run=20261205T065821Z-ab9d",  # all four tiers
    "tag=main/scenario=provider_throttle+memory_pressure/run=20261205T070001Z-e945",  # 16k events, retries
)
GENERATED_EVENTS = 1_000_000


# pyspark reads every collected result from a local socket it leaves to the garbage collector
# (pyspark.util._load_from_socket): collected here, within these tests, its ResourceWarning ignored
pytestmark = pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")


@pytest.fixture(autouse=True)
def _collect_pysparks_sockets():
    yield
    gc.collect()


@pytest.fixture(scope="module")
def spark():
    with spark_session("local[2]") as session:
        yield session


# --- comparing the outputs ------------------------------------------------------------------

def _sorted(table: pa.Table) -> pa.Table:
    """Rows in the order of every column that can be sorted (all but the attributes map)."""
    keys = [(f.name, "ascending") for f in table.schema if not pa.types.is_map(f.type)]
    return table.sort_by(keys)


def _first_difference(a: pa.Table, b: pa.Table) -> str:
    for column in a.column_names:
        x, y = a.column(column).to_pylist(), b.column(column).to_pylist()
        for i, (u, v) in enumerate(zip(x, y)):
            if u != v:
                return f"row {i} (sorted), column {column}: DuckDB {a.slice(i, 1).to_pylist()[0]}, " \
                       f"Spark {b.slice(i, 1).to_pylist()[0]}"
    return "none found"


def assert_same_outputs(duck_run: Path, spark_run: Path) -> None:
    for file in OUTPUTS:
        a, b = pq.read_table(duck_run / file), pq.read_table(spark_run / file)
        assert a.schema.equals(b.schema), (file, a.schema, b.schema)
        assert a.num_rows == b.num_rows, file
        order = ["ts_ns"] if "ts_ns" in a.column_names else ["start_ns", "trace_id", "span_id"]
        assert a.select(order).equals(b.select(order)), f"{file}: written in another order"
        a, b = _sorted(a), _sorted(b)
        assert a.equals(b), f"{file}: {_first_difference(a, b)}"


_summary = hand_made._relative_summary  # the summary with run paths made relative


def _copies(root: Path, runs: dict[str, Path]) -> tuple[Path, Path]:
    """Each run (relative path -> source) copied under root/duckdb and root/spark."""
    for engine in ("duckdb", "spark"):
        for relative, source in runs.items():
            shutil.copytree(source, root / engine / relative)
    return root / "duckdb", root / "spark"


# --- the translation --------------------------------------------------------------------------

def test_every_query_translates_with_its_parameters_bound():
    params = _params(500, *WHOLE_RUN)
    for name, _, wanted in [*STEPS, *((name, None, ()) for name in OUTPUTS.values())]:
        statements = spark_sql(name, {k: params[k] for k in wanted})
        assert statements[-1].view is None and all(st.view for st in statements[:-1]), name
        for st in statements:
            assert "$" not in st.sql and ":" not in st.sql.replace("::", ""), (name, st.sql)
    with pytest.raises(SloError, match=r"sql/correlate_events.sql: parameter\(s\) \$ts_first, \$ts_last not bound"):
        spark_sql("correlate_events", {})


def test_materialized_ctes_become_views_computed_once():
    statements = translate("WITH a AS MATERIALIZED (SELECT 1 AS x), b AS (SELECT x FROM a) "
                           "SELECT * FROM b JOIN a ON a.x = b.x", name="q")
    assert [(st.view, st.materialized) for st in statements] == [("q__a", True), ("q__b", False), (None, False)]
    assert statements[1].sql == "SELECT x FROM q__a AS a"
    assert statements[2].sql == "SELECT * FROM q__b AS b JOIN q__a AS a ON a.x = b.x"


def test_parameters_are_bound_as_literals_of_duckdbs_types(spark):
    (st,) = translate("SELECT $f AS f, $i AS i, $lo AS lo, $s AS s, row_number() OVER () AS n",
                      {"f": 0.7, "i": 500, "lo": WHOLE_RUN[0], "s": "it's"})
    row = spark.sql(st.sql)
    assert [(f.name, f.dataType.simpleString()) for f in row.schema] == [
        ("f", "double"), ("i", "int"), ("lo", "bigint"), ("s", "string"), ("n", "bigint")]
    assert tuple(row.first()) == (0.7, 500, WHOLE_RUN[0], "it's", 1)


# --- agreement ----------------------------------------------------------------------------------

def test_hand_made_runs_agree_at_every_boundary(spark, runs, tmp_path):
    duck_root, spark_root = _copies(tmp_path, {p.relative_to(runs): p for p in runs.glob("tag=t/scenario=s/run=*")})
    duck = correlate([duck_root])
    got = correlate_spark([spark_root], spark=spark)
    assert _summary(got, spark_root) == _summary(duck, duck_root)
    for run in sorted(duck_root.glob("tag=t/scenario=s/run=*")):
        assert_same_outputs(run, spark_root / run.relative_to(duck_root))
    # a window of 99 ms caps every tier in both (test_correlate.py: test_window_caps_every_tier); counts only
    assert _summary(correlate_spark([spark_root], window_ms=99, write=False, spark=spark), spark_root) == \
        _summary(correlate([duck_root], window_ms=99, write=False), duck_root)


@pytest.mark.parametrize("run", LABELED_RUNS)
def test_labeled_runs_agree(spark, tmp_path, run):
    duck_root, spark_root = _copies(tmp_path, {run: LABELED / run})
    duck = correlate([duck_root])
    got = correlate_spark([spark_root], spark=spark)
    assert _summary(got, spark_root) == _summary(duck, duck_root)
    assert got.matched > 0 and got.unmatched > 0 and got.spans_enriched > 0
    assert_same_outputs(duck_root / run, spark_root / run)


def test_a_generated_run_of_1m_events_agrees(spark, tmp_path):
    relative = "tag=bench/scenario=generated/run=generated"
    made = generate_run(tmp_path / "generated" / relative, GENERATED_EVENTS, GENERATED_EVENTS // 10, seed=42)
    duck_root, spark_root = _copies(tmp_path, {relative: tmp_path / "generated" / relative})
    duck = correlate([duck_root])
    got = correlate_spark([spark_root], spark=spark)
    assert _summary(got, spark_root) == _summary(duck, duck_root)
    agreement = compare_outputs(duck_root / relative, spark_root / relative, other="spark")  # by cgroup_id
    assert agreement["tier_agreement"] == 1.0 and agreement["span_agreement"] == 1.0, agreement["examples"]
    assert agreement["duckdb_tiers"] == agreement["spark_tiers"] == made["expected_tiers"]
    assert_same_outputs(duck_root / relative, spark_root / relative)


def test_no_spans_and_no_events(spark, tmp_path):
    lonely = write_run(tmp_path / "a", "r", [ev("lonely", 1000, pod="pod-b", pid=20)], [])
    summary = correlate_spark([lonely], spark=spark)
    assert (summary.events, summary.unmatched, summary.spans) == (1, 1, 0)
    assert pq.read_table(lonely / "enriched_spans.parquet").num_rows == 0
    assert pq.read_table(lonely / "unmatched.parquet").column("tier").to_pylist() == [None]
    empty = write_run(tmp_path / "b", "r", [], [sp(trace("a"), span(1), "s", 1000, 2000)])
    with pytest.raises(DataError, match="nothing to correlate: no kernel events recorded"):
        correlate_spark([empty], spark=spark)
    assert not list(empty.glob("*.parquet")) and not list(empty.glob(".spark-*"))


# --- the command line ---------------------------------------------------------------------------

def test_cli_engine_spark(spark, runs):
    r = CliRunner().invoke(main, ["correlate", "--runs", str(runs), "--json"])
    assert r.exit_code == 0, r.output
    duck = json.loads(r.output)
    r = CliRunner().invoke(main, ["correlate", "--runs", str(runs), "--engine", "spark", "--master", "local[2]",
                                  "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == duck
    assert spark.range(1).count() == 1  # the session the command found running is left running


def test_cli_help_and_misuse(runs):
    r = CliRunner().invoke(main, ["correlate", "--help"])
    assert "--engine [duckdb|spark]" in r.output and "--master URL" in r.output and "local[2]" in r.output
    r = CliRunner().invoke(main, ["correlate", "--runs", str(runs), "--engine", "spark", "--memory-limit", "1GB"])
    assert r.exit_code == 2 and "--memory-limit is DuckDB's" in r.output
    r = CliRunner().invoke(main, ["correlate", "--runs", str(runs), "--master", "local[2]"])
    assert r.exit_code == 2 and "--master is for --engine spark" in r.output


def test_cli_says_pyspark_is_missing(runs, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark fails
    r = CliRunner().invoke(main, ["correlate", "--runs", str(runs), "--engine", "spark"])
    assert r.exit_code == 1
    assert r.output.startswith("error: --engine spark needs pyspark, which is not installed"), r.output
    assert "make setup" in r.output


def test_cli_says_java_is_missing(runs, monkeypatch, tmp_path):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    r = CliRunner().invoke(main, ["correlate", "--runs", str(runs), "--engine", "spark"])
    assert r.exit_code == 1
    assert r.output.startswith(f"error: --engine spark needs Java 17 or later, and there is no java on "
                               f"JAVA_HOME={tmp_path / 'no-jdk'}"), r.output
    assert "make setup" in r.output
