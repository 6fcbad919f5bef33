"""The daily Dagster job over the generated days, one partition at a time and oldest first, as
the schedule would have run it: each day's features build on the day before."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from devtools.demo.report import CheckOutcome, DemoOptions, DemoReport
from devtools.demo.steps import progress_bar
from orchestration import lake

if TYPE_CHECKING:
    import dagster as dg

    from devtools.synthetic.generator import GenerationSpec

ARCHIVE_FIELDS = ("source", "landed_rows", "archive_rows", "duplicates_dropped", "postgres_rows", "reconciled")


def generated_days(spec: GenerationSpec, now: datetime | None = None) -> list[date]:
    """The UTC days the feed touches that are over: a daily partition exists once its day has
    ended, so today's events stay in the hot, warm and landed tiers until tomorrow's run."""
    now = now or datetime.now(timezone.utc)
    first, last = spec.start.date(), (spec.end - timedelta(microseconds=1)).date()
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return [d for d in days if lake.day_end(d) <= now]


def run_pipeline(days: list[date], docs_dir: Path, options: DemoOptions, console: Console,
                 report: DemoReport) -> None:
    """Every asset and blocking check of the daily job, one partition at a time, oldest first;
    Data Docs for the last day's validations."""
    instance = _dagster_instance(options)
    with progress_bar(console) as progress:
        task = progress.add_task("daily partitions", total=len(days))
        for day in days:
            progress.update(task, description=f"partition {day}")
            result = _materialize(day, docs_dir if day == days[-1] else None, instance)
            _collect(day, result, report)
            if not result.success:
                raise RuntimeError(f"partition {day}: {_failures(result)}")
            progress.advance(task)
            progress.console.print(f"   [green]✓[/] partition {day}: "
                                   f"{len(result.get_asset_materialization_events())} assets, "
                                   f"{sum(1 for c in report.checks if c.day == day.isoformat())} checks",
                                   highlight=False)
        if days and refresh_due(days[-1]):
            result = _materialize(days[-1], None, instance, refresh=True)
            _collect(days[-1], result, report)
            if not result.success:
                raise RuntimeError(f"candidates refresh of {days[-1]}: {_failures(result)}")
            progress.console.print(f"   [green]✓[/] candidates refresh of {days[-1]} (its 12:15 schedule has passed)",
                                   highlight=False)


def refresh_due(day: date, now: datetime | None = None) -> bool:
    """Whether the midday refresh of ``day`` would have run by now, as its schedule ships."""
    from orchestration.assets.features import refresh_time

    return (now or datetime.now(timezone.utc)) >= refresh_time(day) + timedelta(minutes=15)


def write_docs_index(report: DemoReport, docs_dir: Path) -> Path | None:
    """One page linking each validation's Data Docs (GX builds one site per validation)."""
    pages = [c for c in report.checks if c.docs]
    if not pages:
        return None
    rows = "\n".join(
        f'<tr><td>{c.asset}</td><td>{c.check}</td><td>{"passed" if c.passed else "FAILED"}</td>'
        f'<td>{c.rows if c.rows is not None else ""}</td>'
        f'<td><a href="{Path(c.docs).relative_to(docs_dir)}">Data Docs</a></td></tr>' for c in pages)
    index = docs_dir / "index.html"
    index.write_text(f"<!doctype html><title>feedstore demo: validations of {pages[0].day}</title>"
                     f"<h1>Validations of partition {pages[0].day}</h1><table border=1 cellpadding=4>"
                     f"<tr><th>asset</th><th>check</th><th>result</th><th>rows</th><th></th></tr>{rows}</table>")
    return index


def _materialize(day: date, docs: Path | None, instance: dg.DagsterInstance,
                 refresh: bool = False) -> dg.ExecuteInProcessResult:
    import dagster as dg

    from orchestration.definitions import ASSETS, CHECKS, DAILY, REFRESH
    from orchestration.resources import GreatExpectationsResource, resources

    return dg.materialize([*ASSETS, *CHECKS], partition_key=day.isoformat(), instance=instance,
                          resources={**resources(), "gx": GreatExpectationsResource(
                              docs_dir=str(docs) if docs else None)},
                          selection=REFRESH if refresh else DAILY, raise_on_error=False)


def _dagster_instance(options: DemoOptions) -> dg.DagsterInstance:
    import dagster as dg

    if options.dagster_home is None:
        return dg.DagsterInstance.ephemeral()
    from dagster._core.instance.ref import InstanceRef

    from orchestration.instance import prepare_home

    home = prepare_home(options.dagster_home)
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))


def _meta_value(meta: dict, name: str) -> Any:
    value = meta.get(name)
    return getattr(value, "value", getattr(value, "text", value))


def _collect(day: date, result: dg.ExecuteInProcessResult, report: DemoReport) -> None:
    for ev in result.get_asset_check_evaluations():
        meta = dict(ev.metadata)
        rows = _meta_value(meta, "row_count") or _meta_value(meta, "archive_rows")
        report.checks.append(CheckOutcome(day.isoformat(), ev.asset_key.to_user_string(), ev.check_name,
                                          bool(ev.passed), rows, _meta_value(meta, "data_docs")))
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        if mat.asset_key.to_user_string() == "activity_archive":
            meta = {k: _meta_value(mat.metadata, k) for k in mat.metadata}
            report.archive.append({"day": day.isoformat(), **{k: meta.get(k) for k in ARCHIVE_FIELDS}})


def _failures(result: dg.ExecuteInProcessResult) -> str:
    failed = [f"{e.step_key}: {e.step_failure_data.error.message.strip().splitlines()[0]}"
              for e in result.get_step_failure_events()]
    checks = [f"{e.asset_key.to_user_string()}/{e.check_name}" for e in result.get_asset_check_evaluations()
              if not e.passed]
    parts = ([f"failed steps {'; '.join(failed)}"] if failed else []) + \
            ([f"failed checks {', '.join(checks)}"] if checks else [])
    return "; ".join(parts) or "the run did not succeed"
