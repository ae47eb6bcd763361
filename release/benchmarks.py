"""BENCHMARKS.md, the benchmark appendix of a release: rendered from JSON, never typed.

Inputs, in BENCH_DIR (`make release-bench` writes them, each with NAME.meta.json: the
command, its git commit, the machine, start and end):

  overhead.json              bench/overhead.py --json
  correlate_throughput.json  bench/correlate_throughput.py --json
  score.json                 sloan score --runs RUNS --json FILE
  repro.json                 sloan repro --runs RUNS --json FILE
  compare.json               sloan compare BASE CANDIDATE --runs RUNS --json FILE

Every figure is printed from these files. A missing file is a section that says "not
measured for this release" with the command that makes it; a file that is not what its
command writes stops the release (ReleaseError) rather than print a wrong figure.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from release.artifacts import ReleaseError
from release.benchrun import meta_path


@dataclass(frozen=True)
class Bench:
    name: str  # BENCH_DIR/<name>.json, make release-bench-<name>
    title: str
    what: str
    needs: tuple[str, ...]  # top-level keys its JSON has


BENCHES = (
    Bench("overhead", "Recorder overhead",
          "What `slocap record` with all 7 signals costs the machine: per pair of runs of a fixed workload with "
          "and without the recorder, the ratio with/without; overhead = median ratio - 1.",
          ("summaries_pct", "settings", "host")),
    Bench("correlate_throughput", "Correlation throughput (GENERATED data)",
          "`sloan correlate` (DuckDB) beside pandas merge_asof on generated kernel events and spans "
          "(seeded; no figure here comes from a recording).",
          ("results", "params", "machine")),
    Bench("score", "Attribution accuracy",
          "Precision, recall and F1 of the fault-domain attribution on the violating windows of held-out "
          "labelled runs (`sloan score`).",
          ("precision", "recall", "f1", "per_domain", "n_runs", "exploratory")),
    Bench("repro", "Incident reproducibility",
          "Coefficient of variation of each metric across reruns of the same scenario, tag, seed and profile "
          "(`sloan repro`).",
          ("rows", "cv_gate")),
    Bench("compare", "Release comparison",
          "Per metric the median over runs per tag and the difference against the reference tag "
          "(`sloan compare`).",
          ("tags", "reference", "metrics", "exploratory")),
)


# -- formatting -------------------------------------------------------------------

def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def num(v, digits: int = 2) -> str:
    if _missing(v):
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:,.{digits}f}"


def ci(low, high, digits: int = 2) -> str:
    if _missing(low) or _missing(high):
        return "n/a"
    return f"[{num(low, digits)}, {num(high, digits)}]"


def _digits(unit: str) -> int:
    return {"ms": 1, "s": 2, "%": 2, "": 4}.get(unit, 2)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def _host(h: dict) -> str:
    parts = [str(h.get("node") or h.get("hostname") or "?")]
    if h.get("kernel"):
        parts.append(f"kernel {h['kernel']}")
    if h.get("cpus"):
        parts.append(f"{h['cpus']} CPUs")
    if h.get("cpu_model"):
        parts.append(str(h["cpu_model"]))
    if h.get("memory_gib"):
        parts.append(f"{h['memory_gib']} GiB")
    if h.get("platform"):
        parts.append(str(h["platform"]))
    return ", ".join(parts)


def _counted(d: dict) -> str:
    return "; ".join(f"{k} ({v} run{'s' if v != 1 else ''})" for k, v in sorted(d.items())) or "none"


# -- inputs -------------------------------------------------------------------------

def _read(path: Path, label: str):
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise ReleaseError(label, f"cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise ReleaseError(label, f"not valid JSON ({exc})") from None


def load(bench_dir: Path, bench: Bench, label: str) -> tuple[dict | None, dict | None]:
    """(the benchmark's JSON, its meta) or (None, None) when it was not measured."""
    path = bench_dir / f"{bench.name}.json"
    if not path.is_file():
        return None, None
    doc = _read(path, f"{label}/{path.name}")
    if not isinstance(doc, dict) or any(k not in doc for k in bench.needs):
        raise ReleaseError(f"{label}/{path.name}", f"not the JSON its command writes (expected the keys "
                                                   f"{', '.join(bench.needs)})")
    meta = meta_path(path)
    return doc, (_read(meta, f"{label}/{meta.name}") if meta.is_file() else None)


def _source(bench: Bench, doc: dict, meta: dict | None, release_git: dict, machine: str | None,
            label: str) -> list[str]:
    """Command, machine, git commit and time of one benchmark input."""
    meta_name = meta_path(Path(f"{bench.name}.json")).name
    if meta:
        cmd = f"`{meta['command']}`"
        git = meta.get("git") or {}
        sha = git.get("commit")
        commit = f"`{sha}`" + (" with uncommitted changes" if git.get("dirty") else "") if sha else "not recorded"
        if sha and sha != release_git["commit"]:
            commit += f" (not this release's commit `{release_git['commit'][:12]}`)"
        when = f"{meta.get('started', '?')} to {meta.get('finished', '?')} (UTC)"
        ran_on = _host(meta.get("host") or {})
    else:
        cmd = f"not recorded ({label}/{bench.name}.json has no {meta_name}: it was not made by " \
              f"`make release-bench-{bench.name}`)"
        commit = "not recorded"
        when = doc.get("measured_at") or "not recorded"
        ran_on = None
    lines = [f"- Input: `{label}/{bench.name}.json`", f"- Command: {cmd}"]
    if machine:
        lines.append(f"- Machine: {machine}")
    if ran_on:
        lines.append(f"- Machine that ran it: {ran_on}")
    if not machine and not ran_on:
        lines.append("- Machine: not recorded")
    lines += [f"- Git commit: {commit}", f"- When: {when}"]
    runs = (meta or {}).get("runs")
    if runs:
        lines.append(f"- Runs read: {runs['runs']} under {', '.join(f'`{p}`' for p in runs['paths'])}; recorded on "
                     f"{_counted(runs['hosts'])}; at git commit {_counted(runs['git_shas'])}")
    return lines


# -- one section per benchmark --------------------------------------------------------

def _overhead(doc: dict, min_runs: int) -> tuple[list[str], str]:
    s = doc["settings"]
    size = (f"{num(s.get('seconds'), 0)} s of the lab's rag_mixed_20rps per run" if s.get("workload") == "lab"
            else f"{num(s.get('ops'))} operations x {s.get('threads')} threads per run")
    out = [(f"Settings: workload {s.get('workload')} ({size}), {s.get('pairs')} pairs per tool, "
           f"{s.get('aa_pairs')} A/A pairs, seed {s.get('seed')}, {num(s.get('resamples'))} bootstrap resamples; "
           f"peer: {doc.get('peer', 'n/a')}."), ""]
    labels = {"machine_cpu_s": "machine CPU", "own_cpu_s": "workload+tool CPU", "wall_s": "wall"}
    rows = []
    for experiment, by_metric in doc["summaries_pct"].items():
        for key, sm in by_metric.items():
            n = sm.get("n", 0)
            interval = ci(sm.get("low_pct"), sm.get("high_pct"))
            rows.append([experiment, labels.get(key, key), f"{num(sm.get('median_pct'))} %",
                         f"{interval} %" if interval != "n/a" else "n/a (< 2 pairs)",
                         f"{n} pair{'s' if n != 1 else ''} ({2 * n} runs)",
                         f"yes (< {min_runs} pairs)" if n < min_runs else "no"])
    out += _table(["experiment", "metric", "overhead (median)", "CI95 (bootstrap over pairs)", "run count",
                   "exploratory"], rows)
    h = doc["host"]
    return out, _host(h) + " (from the JSON)"


def _correlate(doc: dict) -> tuple[list[str], str]:
    p = doc["params"]
    out = [(f"Data: {doc.get('data', 'GENERATED')}. Settings: seed {p.get('seed')}, spans = events x "
           f"{p.get('span_ratio')}, lanes {p.get('lanes')}, window {p.get('window_ms')} ms, threads "
           f"{p.get('threads') or 'all'}. One timed run per size and implementation: no CI95, so every "
           "figure is exploratory."), ""]
    rows = []
    for r in doc["results"]:
        d, pd_, g = r["duckdb"], r["pandas"], r.get("agreement", {})
        rows.append([num(r["events"]), num(r["spans"]),
                     num(d["seconds"]), num(d.get("events_per_s"), 0), num(d["peak_rss_bytes"] / 2**30),
                     num(pd_["seconds"]), num(pd_.get("events_per_s"), 0), num(pd_["peak_rss_bytes"] / 2**30),
                     f"{num(100 * g['tier_agreement'], 3)} %" if "tier_agreement" in g else "n/a",
                     f"{num(100 * g['span_agreement'], 3)} %" if "span_agreement" in g else "n/a",
                     "1 per side", "none (one run)", "yes (one run)"])
    out += _table(["events", "spans", "DuckDB s", "DuckDB events/s", "DuckDB peak RSS GiB", "pandas s",
                   "pandas events/s", "pandas peak RSS GiB", "same tier", "same span", "run count", "CI95",
                   "exploratory"], rows)
    m = doc["machine"]
    versions = ", ".join(f"{k} {m[k]}" for k in ("python", "duckdb", "pyarrow", "numpy", "pandas") if k in m)
    return out, f"{m.get('cpus', '?')} CPUs, {m.get('platform', '?')}; {versions} (from the JSON)"


def _metric(d: dict, digits: int = 4) -> tuple[str, str]:
    if not isinstance(d, dict):
        return num(d, digits), "n/a"
    c = d.get("ci95")
    return num(d.get("value"), digits), (ci(c[0], c[1], digits) if c else "n/a (too few runs)")


def _score(doc: dict) -> tuple[list[str], str | None]:
    expl = "yes" if doc["exploratory"] else "no"
    out = [(f"Settings: seed {doc.get('seed')}, {num(doc.get('resamples'))} bootstrap resamples over runs; "
           f"{doc['n_runs']} test runs, {len(doc.get('train_runs', []))} training runs, {num(doc.get('windows'))} "
           "violating windows."), ""]
    rows = []
    for key, label in (("precision", "macro precision"), ("recall", "macro recall"), ("f1", "macro F1"),
                       ("abstain_rate", "abstain rate"), ("abstain_rate_fault", "abstain rate, fault windows"),
                       ("abstain_rate_none", "abstain rate, no-fault windows")):
        if key in doc:
            value, interval = _metric(doc[key])
            rows.append([label, value, interval, str(doc["n_runs"]), expl])
    if "detection_delay_s" in doc:
        value, interval = _metric(doc["detection_delay_s"], 2)
        rows.append([f"detection delay s ({doc.get('detected', '?')} of {doc.get('faulted', '?')} faults detected)",
                     value, interval, str(doc["n_runs"]), expl])
    balance = doc.get("class_balance", {})
    unseen = []
    for domain, m in doc["per_domain"].items():
        if not (m.get("support") or m.get("fp")):
            unseen.append(domain)  # no window of it in the test runs, none predicted: no figure
            continue
        for key in ("precision", "recall", "f1"):
            value, interval = _metric(m[key])
            rows.append([f"{domain} {key}", value, interval, str(balance.get(domain, 0)), expl])
    out += _table(["figure", "value", "CI95", "run count (test runs)", "exploratory"], rows)
    if unseen:
        out += ["", f"No test window of, and no prediction of: {', '.join(unseen)}."]
    if doc["exploratory"]:
        out += ["", "Exploratory: " + "; ".join(doc.get("exploratory_reasons", [])) + "."]
    gate = doc.get("gate")
    if gate:
        out += ["", f"Attribution gate: {'passed' if gate.get('passed') else 'not passed'}"
                + (f" ({'; '.join(gate.get('reasons', []))})" if gate.get("reasons") else "") + "."]
    nodes = sorted({r.get("node") for r in doc.get("runs", []) if r.get("node")})
    return out, (f"runs recorded on {', '.join(nodes)} (node names from the JSON)" if nodes else None)


def _repro(doc: dict, reruns: int) -> tuple[list[str], None]:
    gate = doc["cv_gate"]
    out = [(f"CV = sample standard deviation / mean over reruns; flagged above {num(100 * gate, 0)} %. The "
           f"reproducibility rule asks for {reruns} reruns: fewer make a row exploratory. A CV has no CI95."), ""]
    rows = []
    for r in doc["rows"]:
        unit = r.get("unit", "")
        runs = r.get("runs", 0)
        rows.append([r.get("tag", ""), r.get("scenario", ""), str(r.get("seed", "")), r.get("profile", ""),
                     r.get("label", r.get("metric", "")), f"{num(r.get('mean'), _digits(unit))} {unit}".strip(),
                     "n/a (< 2 runs)" if _missing(r.get("cv")) else f"{num(100 * r['cv'])} %",
                     "yes" if r.get("flagged") else "no", str(runs), "n/a (CV)",
                     f"yes (< {reruns} reruns)" if runs < reruns else "no"])
    out += _table(["tag", "scenario", "seed", "profile", "metric", "mean", "CV", "flagged", "run count", "CI95",
                   "exploratory"], rows)
    return out, None


def _tag_value(m: dict, tag: str, digits: int) -> str:
    """A tag's median; with its CI95 when the metric is pooled (one value per tag)."""
    v = num(m["values"].get(tag), digits)
    c = (m.get("tag_ci95") or {}).get(tag)
    return f"{v} {ci(c[0], c[1], digits)}" if c else v


def _compare(doc: dict) -> tuple[list[str], None]:
    ref = doc["reference"]
    runs = {t["tag"]: t for t in doc.get("runs", [])}
    boot = doc.get("bootstrap", {})
    out = [f"Tags {', '.join(doc['tags'])}; reference {ref}; profile {doc.get('profile')}; runs per tag: "
           + ", ".join(f"{t} {runs[t]['runs']}" if t in runs else f"{t} ?" for t in doc["tags"])
           + f". CI95: bootstrap over runs ({num(boot.get('resamples'))} resamples, seed {boot.get('seed')}); "
           f"p: Mann-Whitney U, two-sided. Exploratory when a tag has fewer than {doc.get('min_runs')} runs.", ""]
    scoring_expl = doc.get("scoring_exploratory", {})
    rows = []
    for m in doc["metrics"]:
        unit, digits = m.get("unit", ""), _digits(m.get("unit", ""))

        for tag, d in m.get("diffs", {}).items():
            expl = []
            if doc["exploratory"]:
                expl.append(f"< {doc.get('min_runs')} runs per tag")
            if m.get("source") == "scoring" and (scoring_expl.get(tag) or scoring_expl.get(ref)):
                expl.append("scoring exploratory")
            rows.append([m.get("label", m["key"]), unit or "ratio", f"{ref} / {tag}",
                         f"{_tag_value(m, ref, digits)} / {_tag_value(m, tag, digits)}", num(d.get("diff"), digits),
                         "n/a" if _missing(d.get("pct")) else f"{num(d['pct'])} %",
                         ci(d.get("ci_low"), d.get("ci_high"), digits), num(d.get("p_value"), 3),
                         f"{num(d.get('cliffs_delta'), 3)} ({d['magnitude']})" if d.get("magnitude") else "n/a",
                         f"{m['n'].get(ref, 0)} / {m['n'].get(tag, 0)}",
                         f"yes ({'; '.join(expl)})" if expl else "no"])
    out += _table(["metric", "unit", "tags", "median (ref / candidate)", "Δ", "Δ %", "CI95 Δ", "p", "Cliff's δ",
                   "run count (ref / candidate)", "exploratory"], rows)
    if doc.get("notes"):
        out += [""] + [f"Note: {n}" for n in doc["notes"]]
    return out, None


def _constants() -> tuple[int, int]:
    """The project's own rules: runs for a distribution claim, reruns for reproducibility."""
    from analyze.repro import REPRO_RERUNS
    from analyze.stats import MIN_RUNS

    return MIN_RUNS, REPRO_RERUNS


def render(bench_dir: Path, *, version: str, git: dict, commands: dict[str, str], label: str | None = None) -> str:
    """The whole BENCHMARKS.md. commands: bench name -> the command that makes its input."""
    label = label or str(bench_dir)
    min_runs, reruns = _constants()
    sections: list[list[str]] = []
    status: list[list[str]] = []
    for bench in BENCHES:
        doc, meta = load(bench_dir, bench, label)
        head = [f"## {bench.title}", "", bench.what, ""]
        make = f"make release-bench-{bench.name} BENCH_DIR={label}"
        if doc is None:
            sections.append(head + [
                ("**Not measured for this release.** "
                f"`{make}` produces it: `{commands.get(bench.name, '(see mk/release.mk)')}`.")])
            status.append([bench.title, f"`{bench.name}.json`", "not measured for this release"])
            continue
        if bench.name == "overhead":
            body, machine = _overhead(doc, min_runs)
        elif bench.name == "correlate_throughput":
            body, machine = _correlate(doc)
        elif bench.name == "score":
            body, machine = _score(doc)
        elif bench.name == "repro":
            body, machine = _repro(doc, reruns)
        else:
            body, machine = _compare(doc)
        sections.append(head + _source(bench, doc, meta, git, machine, label) + [""] + body)
        sha = (meta or {}).get("git", {}).get("commit")
        status.append([bench.title, f"`{bench.name}.json`",
                       f"measured at `{sha[:12]}`" if sha else "measured (commit not recorded)"])
    dirty = " (with uncommitted changes)" if git.get("dirty") else ""
    lines = [
        f"# Benchmarks: llm-slo-ebpf-toolkit {version}", "",
        (f"Generated by `make release` from the JSON files in `{label}` (BENCH_DIR) at commit "
        f"`{git['commit']}`{dirty}; no figure here is typed by hand. Each section names the command that "
        "produced its input, the machine and the git commit it ran at; each figure its run count, CI95 and "
        "whether it is exploratory (too few runs for a distribution claim). `make release-bench` measures "
        "all of them (docs/release.md)."), "",
        *_table(["benchmark", "input", "status"], status), "",
    ]
    for s in sections:
        lines += s + [""]
    return "\n".join(lines).rstrip("\n") + "\n"
