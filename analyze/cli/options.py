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

    def invoke(self, ctx: click.Context):
        # before the command: a cut or degraded run explains odd numbers, and an error too
        if ctx.params.get("runs_paths"):
            from analyze.session import warnings_below

            print_notes("warning", warnings_below(list(ctx.params["runs_paths"])))
        return super().invoke(ctx)


def print_notes(kind: str, notes) -> None:
    """One line on stderr per note, `kind:` first (warning, skipped); paths are data, never markup."""
    from rich.console import Console
    from rich.markup import escape

    err = Console(stderr=True, highlight=False)
    for note in notes:
        err.print(f"[yellow]{kind}:[/] {escape(note)}", soft_wrap=True)


def print_skipped(skipped) -> None:
    """The files --skip-bad left out, one line each on stderr."""
    print_notes("skipped", skipped)


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


# --- --format: every table-printing command shows its tables through Output ------------------

def format_option_with(default: str = "table", extra: tuple[str, ...] = ()):
    """--format with another default, or more choices (sloan sql adds parquet)."""
    from analyze.formatting import FORMATS

    return click.option(
        "--format", "out_format", type=click.Choice(FORMATS + extra), default=default, show_default=True,
        help="table: rich tables on a terminal, plain aligned columns in pipes and CI logs (never cut); "
             "markdown; csv (the tables only, notes to stderr); json (the --json document).")


format_option = format_option_with()


def emit_result(doc, json_out: str | None, out_format: str) -> bool:
    """--json [FILE] and --format json: the document where they say; True when it went to stdout,
    which then holds nothing else."""
    to_file = json_out not in (None, "-")
    if to_file:
        emit_json(doc, json_out)
    if json_out == "-" or out_format == "json":
        return emit_json(doc, "-")
    return False


class Output:
    """A command's tables (analyze.formatting.Grid) and lines of text, shown on leaving the `with`
    block as --format says. table: rich tables on a terminal, folding long cells; elsewhere plain
    aligned columns, whole. markdown: a document. csv: the tables only (with more than one, each
    after a '# title' line, a blank line between); the lines go to stderr."""

    def __init__(self, out_format: str = "table"):
        self.format = out_format
        self.items: list = []

    def __enter__(self) -> Output:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.show()

    def line(self, text: str, markup: bool = False) -> None:
        self.items.append((text, markup))

    def table(self, grid) -> None:
        self.items.append(grid)

    def show(self) -> None:
        from rich.text import Text

        from analyze.formatting import Grid, cell_text, render

        def plain(item) -> str:
            return Text.from_markup(item[0]).plain if item[1] else item[0]

        items, self.items = self.items, []
        if self.format == "csv":
            grids = [i for i in items if isinstance(i, Grid)]
            for item in items:
                if not isinstance(item, Grid):
                    click.echo(plain(item), err=True)
            blocks = [(f"# {g.title or ''}\n" if len(grids) > 1 else "") + render(g, "csv") for g in grids]
            click.echo("\n".join(blocks), nl=False)
            return
        if self.format == "markdown":
            click.echo("\n".join(render(i, "markdown") if isinstance(i, Grid) else plain(i) + "\n" for i in items),
                       nl=False)
            return
        from runfmt.console import rich_table

        c = console()
        terminal = _isatty(c.file)
        before = None
        for item in items:
            if before is not None and (isinstance(item, Grid) or isinstance(before, Grid)):
                click.echo()
            if not isinstance(item, Grid):
                c.print(item[0], markup=item[1], soft_wrap=True)
            elif terminal:
                rows = [[cell if isinstance(cell, str) else cell_text(cell) for cell in row] for row in item.rows]
                c.print(rich_table(item.title, item.columns, rows, item.right, item.sections, c.width))
            else:
                click.echo(render(item, "table"), nl=False)
            before = item


def _isatty(stream) -> bool:
    """A real terminal, not one FORCE_COLOR or TTY_COMPATIBLE claims: CI logs get whole tables."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def load_config(path: Path | None) -> dict:
    from runfmt.config import load_config as load

    return load(path)
