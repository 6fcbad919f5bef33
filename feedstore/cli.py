"""The ``feedstore`` command. Each command is a thin shell over a module; errors users can
fix are one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import sys
import time
from typing import NoReturn

import typer
from rich.console import Console
from rich.table import Table

from feedstore.settings import get_settings

app = typer.Typer(
    help="feedstore: data collection and feature store for a feed ranker.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
stack_app = typer.Typer(help="Run the local stack: PostgreSQL, Redis, Kafka, SeaweedFS S3.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@stack_app.command("up")
def stack_up() -> None:
    """Install what is missing and start every service; running ones are left alone."""
    from feedstore.stack import StackError, services

    for service in services(get_settings()):
        started = time.monotonic()
        with console.status(f"starting {service.name}…"):
            try:
                was_started = service.up()
            except StackError as exc:
                fail(str(exc))
        what = "started" if was_started else "already running"
        console.print(f"[green]✓[/] {service.name:<10} {what} ({time.monotonic() - started:.1f}s)  {service.endpoint()}")


@stack_app.command("down")
def stack_down() -> None:
    """Stop every service; data stays in the stack directory for the next ``up``."""
    from feedstore.stack import services

    for service in reversed(services(get_settings())):
        service.stop()
        console.print(f"[yellow]■[/] {service.name} stopped")


@stack_app.command("status")
def stack_status() -> None:
    """Exit non-zero when any service is not answering."""
    from feedstore.stack import services

    table = Table("service", "state", "endpoint", "log")
    healthy = True
    for service in services(get_settings()):
        up = service.ready()
        healthy &= up
        table.add_row(service.name, "[green]up[/]" if up else "[red]down[/]", service.endpoint(), str(service.log_file))
    Console().print(table)
    if not healthy:
        raise typer.Exit(1)


@stack_app.command("env")
def stack_env() -> None:
    """Print ``export`` lines: ``eval "$(feedstore stack env)"``."""
    from feedstore.stack import env_lines

    for line in env_lines(get_settings()):
        print(line)


@app.command()
def migrate() -> None:
    """Apply the schema in sql/ (idempotent, safe to run concurrently)."""
    import psycopg

    from feedstore.db import connect
    from feedstore.migrate import MigrationError
    from feedstore.migrate import migrate as run_migrations

    try:
        with connect() as conn:
            applied = run_migrations(conn)
    except (MigrationError, psycopg.OperationalError) as exc:
        fail(str(exc).strip().splitlines()[0])
    names = ", ".join(f"{m.version:03d}_{m.name}" for m in applied) or "nothing new"
    console.print(f"[green]✓[/] migrations applied: {names}")


@app.command()
def validate(
    suite: str = typer.Argument(..., help="activity_events, items, users, user_features, item_features, training_dataset"),
    target: str = typer.Argument(..., help="postgres:TABLE, s3://bucket/prefix, or a local Parquet file/directory"),
    param: list[str] = typer.Option([], "--param", "-p", help="suite parameter KEY=VALUE (repeatable)"),
    docs: str | None = typer.Option(None, help="write Data Docs (static HTML) to this directory"),
    docs_s3: str | None = typer.Option(None, help="upload Data Docs under this key prefix of the bucket"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON on stdout"),
) -> None:
    """Validate TARGET against a Great Expectations SUITE; exit 1 when it fails."""
    import json

    params: dict[str, str] = {}
    for item in param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--param wants KEY=VALUE, got {item!r}")
        params[key.strip()] = value.strip()

    from expectations.runner import ValidationError
    from expectations.runner import validate as run

    try:
        summary = run(suite, target, docs_dir=docs, docs_s3_prefix=docs_s3, **params)
    except ValidationError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        table = Table("rule", "column", "expectation", "unexpected", "examples")
        for f in summary.failures:
            table.add_row(f.rule, f.column or "", f.expectation, str(f.unexpected_count if f.unexpected_count is not None
                                                                     else f.observed), str(f.examples or f.error or ""))
        if summary.failures:
            Console().print(table)
        state = "[green]passed[/]" if summary.success else "[red]FAILED[/]"
        console.print(f"{suite} on {summary.target}: {state} ({summary.row_count} rows, {summary.evaluated} "
                      f"expectations, {len(summary.failures)} failed, {summary.seconds:.1f}s)")
        if summary.docs:
            console.print(f"Data Docs: {summary.docs}")
    if not summary.success:
        raise typer.Exit(1)


@app.command()
def demo() -> None:
    """The main job end to end on the `small` feed: stack, schema, data, features, training set."""
    stack_up()
    migrate()


def main() -> None:
    app(prog_name="feedstore")


if __name__ == "__main__":
    sys.exit(main())
