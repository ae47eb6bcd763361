"""sloan scrub: a copy of runs with every identity replaced (analyze/scrub.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from analyze.cli.options import command, emit_json, json_option, runs_option


@command()
@runs_option
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="A new or empty folder for the scrubbed copy (tag=/scenario=/run= layout). Never inside RUN.")
@click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Secret key file, at least 16 bytes (head -c 32 /dev/urandom > FILE). Keep it private.")
@click.option("--allow-attr", "allow_attr", multiple=True, metavar="NAME",
              help="Also keep this span attribute (repeatable), as stored in the attributes map, e.g. "
                   "lab.attempt or resource.service.version.")
@json_option
def scrub(runs_paths: tuple[Path, ...], out: Path, key_file: Path, allow_attr: tuple[str, ...],
          json_out: str | None) -> None:
    """Copy runs with every identity replaced, before they are published or uploaded.

    \b
    Replaced by keyed pseudonyms (HMAC-SHA256 with the key: the same value and key give
    the same pseudonym in every table and run, so the copy correlates and scores like
    the original): IP addresses (ip-...), host and node names (host-...), pods (pod-...),
    namespaces (ns-...), containers (ctr-...), pod UIDs (uid-...), DNS names (dns-...),
    comm (comm-...), URLs (url-...); the same inside span names, status messages,
    request errors and kernel details; the manifest's hostname, node, endpoints, paths.

    \b
    Dropped: span attributes off the allow-list (ALLOWED_ATTRIBUTES in analyze/scrub.py:
    status codes, methods, routes, retries, gen_ai model/usage/tokens, ports, DNS
    question). Prompts, completions, ids and lab.* go; --allow-attr keeps one more.

    \b
    Kept as recorded: trace and span ids, timestamps, numbers, signal, service and
    model names, labels, request metrics; kernel version, machine, cpu count.
    The key stays with you: the manifest records its fingerprint only. docs/scrub.md.

    \b
    Example:
      head -c 32 /dev/urandom > ~/.sloan-scrub.key
      sloan scrub --runs runs/tag=main --out runs-public --key ~/.sloan-scrub.key
    """
    from rich.console import Console

    from analyze.scrub import scrub as run_scrub

    progress = None
    bar = None
    if sys.stdout.isatty() and json_out != "-":
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        bar = Progress(TextColumn("scrubbing"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.description}"), transient=True)
        task = None

        def progress(done: int, total: int, run_dir: Path | None) -> None:
            nonlocal task
            if task is None:
                task = bar.add_task("", total=total)
            bar.update(task, completed=done, description="" if run_dir is None else run_dir.name)

        bar.start()
    try:
        summary = run_scrub(list(runs_paths), out, key_file, allow_attributes=allow_attr, progress=progress)
    finally:
        if bar is not None:
            bar.stop()
    if emit_json(summary.to_dict(), json_out):
        return
    err = Console(stderr=True, highlight=False)
    for r in summary.runs:
        for name in r.left_out:
            err.print(f"left out (not a run file scrub knows): {r.source / name}", markup=False, soft_wrap=True)
    kinds = ", ".join(f"{n:,} {kind}" for kind, n in summary.pseudonyms.items()) or "none"
    c = Console(highlight=False)
    c.print(f"distinct values pseudonymized: {kinds}; key fingerprint {summary.key_fingerprint}",
            markup=False, soft_wrap=True)
    n = len(summary.runs)
    c.print(f"scrubbed {n:,} run{'s' if n != 1 else ''}: {summary.rows:,} rows, {summary.values:,} values "
            f"replaced or dropped; wrote {summary.out}", markup=False, soft_wrap=True)
