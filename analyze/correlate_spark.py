"""`sloan correlate --engine spark`: the tiers of sql/correlate_*.sql run on Apache Spark.

The same SQL files as the DuckDB engine (analyze/correlate.py), in the same order (STEPS, then
OUTPUTS), translated by sqlglot from DuckDB's dialect to Spark's (translate). There is no second
copy of the tiers: a change to a sql/correlate_*.sql file changes both engines. The translation
binds the $name parameters as literals (DuckDB binds them; Spark SQL here takes literals), and
covers what Spark does otherwise:

  WITH x AS [MATERIALIZED] (...)  each CTE becomes a temp view <query>__x, the MATERIALIZED ones
                                  computed once and kept, as DuckDB does. Spark would inline
                                  every CTE where it is read, and the tiers' chain of CTEs, each
                                  read twice, then makes plans that grow exponentially.
  row_number() OVER ()            numbering in reading order, which Spark refuses without an
                                  ORDER BY: monotonically_increasing_id() + 1, unique and rising
                                  in reading order, not dense. Only event_no is numbered so; it
                                  identifies an event between the steps and is in no output.

Each run is correlated on its own, in one whole-run pass (Spark needs no time slices), so no
event is paired with a span of another run. Every step but the VIEWS of analyze.correlate is
computed once and kept (a local checkpoint: Spark's memory, spilling to its local disk) as its
temp view; the three outputs are written by Spark into a hidden folder beside the run, then
streamed with the DuckDB engine's writer into correlated.parquet, enriched_spans.parquet and
unmatched.parquet, with the column types DuckDB writes. Rows, tiers and spans are DuckDB's
(tests/analyze/test_correlate_spark.py); within equal ts_ns the order of the rows may differ, as
event_no does.

Spark reads the Parquet files analyze.session.open_runs accepted (footer and schema checked,
--skip-bad leaves damaged ones out). With a --master other than local[...], the run directories
must be reachable under the same path by the driver (this process) and every executor.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analyze.correlate import (
    DEFAULT_WINDOW_MS, ENRICH_BATCH_ROWS, OUTPUTS, STEPS, TIERS, VIEWS, WHOLE_RUN, CorrelationSummary, Progress,
    RunCorrelation, _Counted, _Files, _params, check_window, no_events_error,
)
from runfmt import queries
from runfmt.errors import DataError, SloError

DEFAULT_MASTER = "local[2]"
MIN_JAVA = 17  # pyspark 4.0
# every session: quiet, UTC, no web UI; local masters also get few shuffle partitions
SESSION_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
}
LOCAL_CONF = {"spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "4"}
LOG_LEVEL = "ERROR"
VECTORIZED = "spark.sql.parquet.enableVectorizedReader"  # off for a run whose files it cannot decode
# the JVM's own log (log4j2), WARN and above, into the file its stderr goes to
_LOG4J2 = """\
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = stderr
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n%ex
"""
_SETUP_HINT = "run `make setup` (it installs pyspark and Java 17), or use --engine duckdb"


# --- the translation -------------------------------------------------------------------------

def _literal(name: str, value):
    from sqlglot import exp

    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int):
        return exp.Literal.number(value)
    if isinstance(value, float):  # DuckDB binds a Python float as DOUBLE; a bare 0.7 is DECIMAL in Spark
        return exp.cast(exp.Literal.number(repr(value)), "DOUBLE")
    if isinstance(value, str):
        return exp.Literal.string(value)
    raise TypeError(f"parameter ${name}: no literal for {type(value).__name__}")


@dataclass(frozen=True)
class Statement:
    """One Spark SQL statement of a translated query."""

    sql: str
    view: str | None = None  # the temp view it becomes (a CTE of the query); None: the query itself
    materialized: bool = False  # computed once and kept, as DuckDB does a CTE AS MATERIALIZED


def translate(sql: str, params: dict | None = None, name: str = "query") -> list[Statement]:
    """A DuckDB query in Spark's dialect (sqlglot), `$name` parameters bound as literals: each CTE of
    its WITH as a temp view `<name>__<cte>`, in order, then the query that reads them (last)."""
    import sqlglot
    from sqlglot import exp

    params = params or {}
    unbound: list[str] = []

    def for_spark(node):
        if isinstance(node, (exp.Placeholder, exp.Parameter)):
            key = node.name
            if key not in params:
                unbound.append(key)
                return node
            return _literal(key, params[key])
        if (isinstance(node, exp.Window) and isinstance(node.this, exp.RowNumber)
                and not node.args.get("partition_by") and not node.args.get("order")):
            return exp.Add(this=exp.Anonymous(this="monotonically_increasing_id"), expression=exp.Literal.number(1))
        return node

    (tree,) = sqlglot.parse(sql, read="duckdb")
    tree = tree.transform(for_spark)
    if unbound:
        raise SloError(f"sql/{name}.sql: parameter(s) {', '.join('$' + k for k in dict.fromkeys(unbound))} "
                       "not bound", "a bug in sloan: please report it")
    key = "with_" if "with_" in tree.arg_types else "with"
    with_ = tree.args.get(key)
    ctes = list(with_.expressions) if with_ is not None else []
    views = {cte.alias: f"{name}__{cte.alias}" for cte in ctes}
    # Spark inlines every deterministic CTE where it is read: a chain of CTEs each read twice grows
    # the plan exponentially (seconds of planning, a JVM out of memory). As temp views, the
    # materialized ones kept, each is planned and computed once.
    for table in tree.find_all(exp.Table):
        if table.name in views and not table.args.get("db"):
            if not table.alias:
                table.set("alias", exp.TableAlias(this=exp.to_identifier(table.name)))
            table.set("this", exp.to_identifier(views[table.name]))
    tree.set(key, None)
    return [*(Statement(cte.this.sql(dialect="spark", comments=False), views[cte.alias],
                        bool(cte.args.get("materialized"))) for cte in ctes),
            Statement(tree.sql(dialect="spark", comments=False))]


def spark_sql(name: str, params: dict | None = None) -> list[Statement]:
    """sql/<name>.sql in Spark's dialect, with the parameters it takes bound (translate)."""
    return translate(queries.load(name), params, name)


# --- the session -----------------------------------------------------------------------------

def _java_version(java: str) -> int | None:
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if m is None:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def check_spark() -> None:
    """SloError unless pyspark is importable and a Java of MIN_JAVA or later runs."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise SloError("--engine spark needs pyspark, which is not installed in this Python environment",
                       _SETUP_HINT + " (or: pip install 'llm-slo-ebpf-toolkit[spark]')") from None
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    where = f"JAVA_HOME={home}" if home else "PATH"
    if not java or not os.access(java, os.X_OK):
        raise SloError(f"--engine spark needs Java {MIN_JAVA} or later, and there is no java on {where}", _SETUP_HINT)
    version = _java_version(java)
    if version is None or version < MIN_JAVA:
        found = "an unknown version" if version is None else f"Java {version}"
        raise SloError(f"--engine spark needs Java {MIN_JAVA} or later; {java} is {found}",
                       _SETUP_HINT + ", or point JAVA_HOME at a newer JDK")


@contextmanager
def spark_session(master: str = DEFAULT_MASTER, conf: dict[str, str] | None = None) -> Iterator:
    """A quiet Spark session for correlation, stopped on exit. The JVM's console output and log
    (WARN and above) go to a file in a temporary folder, named in the error should Spark not
    start. `conf`: more Spark settings (spark.driver.memory ...), applied when the JVM starts.
    A session this process already runs (a notebook's, a test's) is used as it is, and left running."""
    check_spark()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    folder = Path(tempfile.mkdtemp(prefix="sloan-spark-"))
    log = folder / "spark.log"
    (folder / "log4j2.properties").write_text(_LOG4J2)
    builder = SparkSession.builder.master(master).appName("sloan-correlate")
    settings = {**SESSION_CONF, **(LOCAL_CONF if master.startswith("local") else {}),
                "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{folder / 'log4j2.properties'}",
                **(conf or {})}
    for key, value in settings.items():
        builder = builder.config(key, value)
    saved = os.dup(2)  # the JVM inherits stderr when it starts: it gets the log file instead
    try:
        with open(log, "ab") as f:
            os.dup2(f.fileno(), 2)
        spark = builder.getOrCreate()
    except Exception as exc:
        os.dup2(saved, 2)
        said = log.read_text(errors="replace").splitlines() if log.exists() else []
        # the JVM's own reason: its last ERROR, else the exception it died of, else pyspark's
        reasons = [line.split(" ERROR ", 1)[1] for line in said if " ERROR " in line] or [
            m.group(1) for line in said if (m := re.match(r'Exception in thread "[^"]*" (.+)', line))]
        why = reasons[-1] if reasons else (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SloError(f"Spark did not start (master {master}): {why}",
                       f"its log: {log}; check --master, or {_SETUP_HINT}") from None
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    spark.sparkContext.setLogLevel(LOG_LEVEL)
    try:
        yield spark
    finally:
        spark.stop()
        shutil.rmtree(folder, ignore_errors=True)


# --- one run ---------------------------------------------------------------------------------

def _spark_type(t: pa.DataType):
    """The Spark type a column of Arrow type `t` is read as (Parquet uint64: decimal(20,0))."""
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import DecimalType

    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_uint64(t):
        return DecimalType(20, 0)
    return from_arrow_type(t)


def _read_table(spark, files: list[str], schema: pa.Schema):
    """A run's table from its files; columns of `schema` in none of them read as null (as
    analyze.session does), and no file gives an empty table with the columns."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StructField, StructType

    if files:
        df = spark.read.option("mergeSchema", "true").parquet(*files)
    else:
        df = spark.createDataFrame([], StructType([StructField(f.name, _spark_type(f.type)) for f in schema]))
    for f in schema:
        if f.name not in df.columns:
            df = df.withColumn(f.name, F.lit(None).cast(_spark_type(f.type)))
    return df


def _target_types(con) -> dict[str, pa.DataType]:
    """Output column -> the Arrow type the DuckDB engine writes it with: that of the input view's
    column it comes from (the event's trace context renamed, as sql/correlate_events.sql does)."""
    types: dict[str, pa.DataType] = {}
    for view, renamed in (("spans", {}), ("kernel_events", {"trace_id": "event_trace_id",
                                                            "span_id": "event_span_id"})):
        for f in con.table(view).limit(0).to_arrow_table().schema:
            types[renamed.get(f.name, f.name)] = f.type
    return types


def _batches(df, staging: Path, types: dict[str, pa.DataType]) -> Iterator[pa.Table]:
    """The rows of `df` in its order, in batches (at least one, maybe empty): written by Spark into
    the folder `staging`, then read back part by part (Spark numbers the parts in the order of the
    rows), with the column types of `types` where it names the column, every column nullable (as
    the DuckDB engine writes them)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    df.write.mode("overwrite").option("compression", "zstd").parquet(str(staging))
    schema = pa.schema([pa.field(f.name, types.get(f.name, f.type)) for f in to_arrow_schema(df.schema)])
    parts = sorted(staging.glob("part-*.parquet"))
    yield schema.empty_table()
    for part in parts:
        for batch in pq.ParquetFile(part).iter_batches(batch_size=ENRICH_BATCH_ROWS):
            yield pa.Table.from_batches([batch]).select(schema.names).cast(schema)
        part.unlink()


def _unsupported_encoding(metadata: pq.FileMetaData) -> bool:
    """Whether a Parquet file holds a column chunk that Spark's vectorized reader cannot decode:
    BYTE_STREAM_SPLIT, which pyarrow writes floating-point columns with (spans' gen_ai_* times)."""
    return any("BYTE_STREAM_SPLIT" in metadata.row_group(i).column(j).encodings
               for i in range(metadata.num_row_groups) for j in range(metadata.num_columns))


class _Session:
    """The queries of one run on a Spark session: the temp views they leave and the data they keep,
    all dropped by close()."""

    def __init__(self, spark) -> None:
        self.spark = spark
        self.views: list[str] = []
        self.kept: list = []
        self.vectorized_was: str | None = None

    def query(self, name: str, params: dict | None = None):
        """The DataFrame of sql/<name>.sql; its CTEs are made temp views first (translate)."""
        *ctes, last = spark_sql(name, params)
        for st in ctes:
            self.view(st.view, self.spark.sql(st.sql), keep=st.materialized)
        return self.spark.sql(last.sql)

    def view(self, name: str, df, *, keep: bool) -> None:
        """`df` as temp view `name`; with `keep`, computed now and kept (in memory, spilling to disk)."""
        if keep:
            df = df.localCheckpoint(eager=True)
            self.kept.append(df)
        df.createOrReplaceTempView(name)
        self.views.append(name)

    def vectorized(self, on: bool) -> None:
        """Spark's vectorized Parquet reader on or off, until close()."""
        if self.vectorized_was is None:
            self.vectorized_was = self.spark.conf.get(VECTORIZED, "true")
        self.spark.conf.set(VECTORIZED, "true" if on else "false")

    def close(self) -> None:
        if self.vectorized_was is not None:
            self.spark.conf.set(VECTORIZED, self.vectorized_was)
        for df in self.kept:
            _release(df)
        for name in self.views:
            self.spark.catalog.dropTempView(name)
        self.kept.clear()
        self.views.clear()


def _release(df) -> None:
    """Frees the blocks of a local checkpoint now; else the JVM's cleaner does once it is unreferenced."""
    try:
        df._jdf.queryExecution().logical().rdd().unpersist(False)
    except Exception:  # not a checkpoint's plan, or another pyspark: left to the cleaner
        pass


def _counts(spark) -> dict:
    """Events, matched events and events per tier, from the kept steps (corr_best: an event's pair)."""
    best = spark.sql("SELECT tier, count(*) AS n, count_if(enriches) AS matched FROM corr_best GROUP BY tier").collect()
    return {"events": spark.table("corr_events").count(), "matched": sum(r["matched"] for r in best),
            "tiers": dict.fromkeys(TIERS, 0) | {r["tier"]: r["n"] for r in best}}


def _correlate_run(spark, run_dir: Path, window_ms: int, write: bool, *, skip_bad: bool,
                   progress: Progress | None) -> RunCorrelation:
    from analyze.session import open_runs
    from runfmt.schema import TABLES

    runs = open_runs([run_dir], skip_bad=skip_bad, offer_skip_bad=True)
    session = _Session(spark)
    staging = run_dir / f".spark-{uuid.uuid4().hex[:12]}"
    sink = _Files(run_dir) if write else _Counted()
    try:
        footers = {view: [pq.ParquetFile(f).metadata for f in runs.tables.get(view, [])]
                   for view in ("kernel_events", "spans")}
        total = sum(md.num_rows for md in footers["kernel_events"])
        if total == 0:
            raise no_events_error(run_dir, runs.skipped)
        if progress is not None:
            progress(run_dir, 0, total)
        for view in ("kernel_events", "spans"):
            # files the vectorized reader cannot decode are read row by row, once, and kept
            row_by_row = any(_unsupported_encoding(md) for md in footers[view])
            session.vectorized(not row_by_row)
            session.view(view, _read_table(spark, runs.tables.get(view, []), TABLES[view][0]), keep=row_by_row)
            session.vectorized(True)
        params = _params(window_ms, *WHOLE_RUN)
        for name, table, wanted in STEPS:  # a temp table in DuckDB is kept; a view stays one
            session.view(table, session.query(name, {k: params[k] for k in wanted}), keep=table not in VIEWS)
        counts = _counts(spark) | {"spans": 0, "spans_enriched": 0}
        types = _target_types(runs.con)
        for file, name in OUTPUTS.items():
            spans = file == "enriched_spans.parquet"
            if not write and not spans:
                continue
            df = session.query(name)
            if not write:  # the spans' counts only
                got = df.selectExpr("count(*) AS n", "count_if(matched_events > 0) AS enriched").first()
                counts |= {"spans": got["n"], "spans_enriched": got["enriched"]}
                continue
            for table in _batches(df, staging / file, types):
                if spans:
                    counts["spans"] += table.num_rows
                    counts["spans_enriched"] += int(pc.sum(pc.greater(table.column("matched_events"), 0)).as_py() or 0)
                sink.add(file, table)
        written = sink.finish()
    except BaseException as exc:
        sink.abort()
        if _is_spark_error(exc):
            raise DataError(f"{run_dir}: Spark failed: {_spark_message(exc)}",
                            "a damaged data page (try --skip-bad, or --engine duckdb, which names the file), "
                            "or too little memory for Spark (spark.driver.memory)") from None
        raise
    finally:
        session.close()
        shutil.rmtree(staging, ignore_errors=True)
        runs.con.close()
    if progress is not None:
        progress(run_dir, total, total)
    row = runs.rows[0] if runs.rows else {}
    return RunCorrelation(
        run_dir=run_dir, events=counts["events"], matched=counts["matched"],
        unmatched=counts["events"] - counts["matched"], diagnostic=counts["tiers"]["service_node"],
        spans=counts["spans"], spans_enriched=counts["spans_enriched"], tiers=counts["tiers"],
        written=tuple(written), state=row.get("state"), degraded=bool(row.get("degraded")),
        skipped=tuple(runs.skipped))


def _spark_message(exc: BaseException) -> str:
    """The first line of what Spark said: the Java exception's, where the error came from the JVM."""
    java = getattr(exc, "java_exception", None)
    try:
        text = str(java.toString()) if java is not None else str(exc)
    except Exception:  # the JVM may be gone
        text = str(exc)
    return (text.strip().splitlines() or [type(exc).__name__])[0]


def _is_spark_error(exc: BaseException) -> bool:
    try:
        from py4j.protocol import Py4JError
        from pyspark.errors import PySparkException
    except ImportError:
        return False
    return isinstance(exc, (PySparkException, Py4JError))


def correlate(runs_paths: Iterable[Path], window_ms: int = DEFAULT_WINDOW_MS, write: bool = True, *,
              skip_bad: bool = False, master: str = DEFAULT_MASTER, spark=None,
              progress: Progress | None = None) -> CorrelationSummary:
    """analyze.correlate.correlate on Spark: every run under `runs_paths`, one at a time, its outputs
    written beside it (`write`). `spark`: a session to use (spark_session); else one is started on
    `master` and stopped at the end. `progress(run_dir, events done, events in the run)` before and
    after each run."""
    from analyze.session import find_runs

    check_window(window_ms)
    run_dirs = find_runs([Path(p) for p in runs_paths])
    if spark is None:
        with spark_session(master) as session:
            return correlate(run_dirs, window_ms, write, skip_bad=skip_bad, spark=session, progress=progress)
    results = [_correlate_run(spark, run_dir, window_ms, write, skip_bad=skip_bad, progress=progress)
               for run_dir in run_dirs]
    return CorrelationSummary(window_ms, tuple(results))
