"""What every sloan command shares: how runs are named (--runs), how JSON comes out
(--json [FILE]), the common options, and the console that keeps tables whole in CI
logs. One convention each, so every command reads the same in --help."""

from __future__ import annotations

import json
from pathlib import Path

import click

from runfmt.errors import SloError


class SloanCommand(click.Command):
    """A sloan command: run directories come with --runs. A leftover positional
    argument (the old spelling, `sloan score RUN`) gets a one-line hint."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("context_settings", {})["allow_extra_args"] = True
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rest = super().parse_args(ctx, args)
        if ctx.args:
            runs = " ".join(f"--runs {a}" for a in ctx.args)
            raise click.UsageError(f"unexpected argument {ctx.args[0]!r}; runs are given with --runs: "
                                   f"sloan {self.name} {runs}", ctx)
        return rest


def command(name: str | None = None, **kwargs):
    """@click.command for sloan: SloanCommand, -h as --help."""
    kwargs.setdefault("context_settings", {})["help_option_names"] = ["-h", "--help"]
    return click.command(name, cls=SloanCommand, **kwargs)


runs_option = click.option(
    "--runs", "runs_paths", multiple=True, type=click.Path(path_type=Path), default=[Path("runs")],
    show_default=True, help="Run directory or runs root (repeatable); every run below it is read.")
json_option = click.option(
    "--json", "json_out", is_flag=False, flag_value="-", default=None, metavar="[FILE]",
    help="The result as one JSON document: to FILE, or alone (or '-') to stdout instead of the tables.")
config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="JSON config merged over config/defaults.json.")
budget_option = click.option(
    "--budget", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
    help="Error budget per SLI, a fraction (default: config slo.error_rate.warning, 0.02).")
seed_option = click.option("--seed", type=int, default=42, show_default=True,
                           help="Seed of the split and the bootstrap.")
resamples_option = click.option("--resamples", type=click.IntRange(100, 1_000_000), default=10_000,
                                show_default=True, help="Bootstrap resamples for the CI95.")
skip_bad_option = click.option("--skip-bad", is_flag=True,
                               help="Skip corrupt or incomplete files, name them, read the rest.")
profile_option = click.option("--profile", default=None,
                              help="Use only runs of this profile (smoke, full); needed when a tag mixes them.")
scenario_option = click.option("--scenario", "scenarios", multiple=True,
                               help="Use only runs of this scenario (repeatable).")
model_option = click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                            help="A trained model (sloan score --save-model); default: the untrained prior model.")


def emit_json(doc, json_out: str | None) -> bool:
    """Writes `doc` where --json said; True when it went to stdout, which then holds nothing else."""
    if json_out is None:
        return False
    text = json.dumps(doc, indent=2)
    if json_out == "-":
        click.echo(text)
        return True
    write_text(Path(json_out), text + "\n")
    return False


def write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as exc:
        raise SloError(f"cannot write {path}: {exc.strerror}", "pass a writable path, or - for stdout") from None


def emit_lines(docs, output: Path, what: str) -> bool:
    """JSON lines to a file (saying so on stderr), or to stdout for '-'; True when they
    went to stdout, which then holds nothing else."""
    if str(output) == "-":
        for doc in docs:
            click.echo(json.dumps(doc))
        return True
    n = 0
    try:
        with open(output, "w") as fh:
            for doc in docs:
                fh.write(json.dumps(doc) + "\n")
                n += 1
    except OSError as exc:
        raise SloError(f"cannot write {output}: {exc.strerror}", "pass a writable path, or - for stdout") from None
    click.echo(f"wrote {n:,} {what} to {output}", err=True)
    return False


def console():
    """Full-width tables on a terminal; 200 columns in CI logs and pipes."""
    from rich.console import Console

    c = Console(highlight=False)
    return c if c.is_terminal else Console(highlight=False, width=200)


def load_config(path: Path | None) -> dict:
    from runfmt.config import load_config as load

    return load(path)
