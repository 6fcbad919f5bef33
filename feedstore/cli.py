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


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def dagster(ctx: typer.Context) -> None:
    """Run ``dagster dev`` on the daily pipeline, with DAGSTER_HOME prepared (extra args pass through)."""
    import os
    import shutil

    from orchestration.instance import dagster_env, prepare_home

    exe = shutil.which("dagster")
    if exe is None:
        fail("the `dagster` command is not installed in this environment")
    home = prepare_home()
    console.print(f"DAGSTER_HOME={home}")
    os.environ.update(dagster_env(home))
    os.execv(exe, [exe, "dev", "-m", "orchestration.definitions", *ctx.args])


@app.command()
def demo() -> None:
    """The main job end to end on the `small` feed: stack, schema, data, features, training set."""
    stack_up()
    migrate()


def main() -> None:
    app(prog_name="feedstore")


if __name__ == "__main__":
    sys.exit(main())
