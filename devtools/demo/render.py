"""The demo's printout: one section per question a reader has after the run (did every tier
get every event, where did the bad ones go, did the checks pass, what does serving return, is
the training set point-in-time correct, where is it all), each ending in a ✓ or ✗."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from devtools.demo import audit
from devtools.demo.prepare import database_name
from devtools.demo.report import CheckOutcome, DemoReport
from feedstore.settings import Settings, get_settings

TRAINING_COLUMNS = ["user_id", "item_id", "event_timestamp", "label", "sample_type", "interactions_7d",
                    "like_rate_7d", "top_category_30d", "category", "views_7d", "engagement_rate_7d"]


def render(report: DemoReport, console: Console, settings: Settings | None = None) -> None:
    s = settings or get_settings()
    _tiers(report, console, s)
    _dead_letters(report, console, s)
    _validation(report, console)
    _serving(report, console)
    _training(report, console)
    _where(report, console)
    console.rule(f"{_mark(report.ok)} [bold]{'demo complete' if report.ok else 'demo finished with inconsistencies'}")


# ---- formatting -------------------------------------------------------------------------------

def _fmt(value: Any) -> str:
    return escape(_text(value))


def _text(value: Any) -> str:
    if hasattr(value, "item") and not hasattr(value, "__len__"):
        value = value.item()
    if isinstance(value, pd.Timestamp | datetime):
        return f"{value:%m-%d %H:%M:%S}"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    if hasattr(value, "__len__") and not isinstance(value, str):
        return _list_text(list(value))
    return str(value)


def _list_text(values: list) -> str:
    """Long lists (embeddings) cut to their head, so a table row stays one line."""
    if len(values) > 6:
        return "[" + ", ".join(_text(v) for v in values[:3]) + f", … {len(values)} values]"
    return "[" + ", ".join(_text(v) for v in values) + "]"


def _mark(ok: bool) -> str:
    return "[green]✓[/]" if ok else "[bold red]✗[/]"


def _say(console: Console, text: str, soft_wrap: bool | None = True) -> None:
    # No highlighting: the ✓/✗ marks carry the colour. Soft wrap keeps paths, URIs and commands whole,
    # so they can be copied.
    console.print(text, highlight=False, soft_wrap=soft_wrap)


def _frame_table(frame: pd.DataFrame, title: str, rank: bool = False) -> Table:
    table = Table(*(["rank"] if rank else []), *frame.columns, title=title)
    for i, row in enumerate(frame.itertuples(index=False), 1):
        table.add_row(*([str(i)] if rank else []), *[_fmt(v) for v in row])
    return table


# ---- sections ---------------------------------------------------------------------------------

def _tiers(report: DemoReport, console: Console, s: Settings) -> None:
    t = report.tiers
    console.rule("[bold]What landed where")
    tiers = Table("tier", "where", "events", "")
    tiers.add_row("generated", f"{report.scale} feed", _fmt(report.events), "")
    tiers.add_row("Kafka", f"topic {s.kafka.topic_activity}, this run",
                  _fmt(report.consumed.get("messages")), f"incl. {sum(report.bad_events_sent.values())} bad, "
                  f"{report.resent} re-sent")
    tiers.add_row("cold (landed)", report.lake_uris.get("landed events", ""), _fmt(t.landed_distinct),
                  f"{t.landed_rows:,} rows with re-sent duplicates")
    tiers.add_row("warm", f"Postgres {database_name(s)}.user_activity", _fmt(t.postgres_distinct),
                  f"{t.postgres_rows:,} rows")
    tiers.add_row("cold (archive)", report.lake_uris.get("daily archive", ""), _fmt(t.archive_rows),
                  f"days {report.days[0]} … {report.days[-1]}: Postgres has {t.postgres_archived:,}; "
                  "a day is archived once it is over")
    tiers.add_row("hot", "Redis user:* counters", _fmt(t.hot_events), f"{t.hot_users:,} users")
    console.print(tiers)
    _say(console, f"{_mark(report.tiers_equal)} every tier holds each of the {report.events:,} generated events "
                  "once (the archive: those of the days that are over)")
    console.print(_online_keys_table(t))


def _online_keys_table(t: audit.TierCounts) -> Table:
    online = Table("feature view", "entities in Redis", title="Feast online store (Redis)")
    for view, n in t.online_keys.items():
        online.add_row(view, f"{n:,}")
    return online


def _dead_letters(report: DemoReport, console: Console, s: Settings) -> None:
    console.rule("[bold]Dead-letter queue")
    dlq = Table("reason", "messages", title=f"topic {s.kafka.topic_dlq}, this run")
    for reason, n in sorted(report.dlq.items()):
        dlq.add_row(reason, str(n))
    console.print(dlq)
    _say(console, f"{_mark(report.dlq_as_sent)} {sum(report.dlq.values())} dead letters, each with the reason it "
                  "was sent for", soft_wrap=None)


def _validation(report: DemoReport, console: Console) -> None:
    console.rule("[bold]Validation (Great Expectations, blocking Dagster checks)")
    console.print(_checks_table(report))
    if report.archive:
        _say(console, "archive reconciliation: " + "; ".join(
            f"{a['day']} {a['archive_rows']:,} rows = Postgres {a['postgres_rows']:,}"
            f"{'' if a['reconciled'] else ' [red]MISMATCH[/]'}" for a in report.archive), soft_wrap=None)
    _say(console, f"{_mark(report.checks_passed)} {sum(c.passed for c in report.checks)} of {len(report.checks)} "
                  "checks passed", soft_wrap=None)
    if report.data_docs:
        _say(console, f"Data Docs ({report.days[-1]}): {report.data_docs}")


def _checks_table(report: DemoReport) -> Table:
    """One row per check, one column per day: a check that fails on one day stands out."""
    checks = Table("asset", "check", *[d.isoformat() for d in report.days])
    by_key: dict[tuple[str, str], dict[str, CheckOutcome]] = {}
    for c in report.checks:
        by_key.setdefault((c.asset, c.check), {})[c.day] = c
    for (asset, check), per_day in by_key.items():
        checks.add_row(asset, check, *[_check_cell(per_day.get(d.isoformat())) for d in report.days])
    return checks


def _check_cell(c: CheckOutcome | None) -> str:
    if c is None:
        return ""
    return (f"{'[green]pass[/]' if c.passed else '[red]FAIL[/]'}"
            + (f" {c.rows:,}" if isinstance(c.rows, int) else ""))


def _serving(report: DemoReport, console: Console) -> None:
    console.rule(f"[bold]Serving: get_online_features for user {report.user_id}")
    feats = Table("feature", "value")
    for ref, value in report.user_features.items():
        feats.add_row(ref, _fmt(value))
    console.print(feats)
    if report.candidates is not None and len(report.candidates):
        console.print(_frame_table(report.candidates, "top candidates (user_candidates + item views)", rank=True))
    if report.candidates_note:
        _say(console, f"[yellow]note:[/] {escape(report.candidates_note)}")
    _online_agreement(report, console)
    _liveness(report, console)


def _online_agreement(report: DemoReport, console: Console) -> None:
    agree = ", ".join(f"{c.view} {c.live}/{c.entities}" for c in report.online)
    _say(console, f"{_mark(report.online_equal)} online values equal the materialised Parquet rows of "
                  f"{report.days[-1]}, and rows past their view's TTL are not served (live/compared: {agree})")
    for c in report.online:
        for entity, name, got, want in c.mismatches[:3]:
            _say(console, f"  {c.view} {entity} {name}: online {_fmt(got)}, lake {_fmt(want)}", soft_wrap=None)
        if not c.entities:
            _say(console, f"  {c.view}: no rows to compare", soft_wrap=None)


def _liveness(report: DemoReport, console: Console) -> None:
    if not report.liveness:
        _say(console, f"{_mark(False)} no user was active in the last hour: liveness not checked")
        return
    shown = ", ".join(f"{v.view} {v.served}/{v.expected}" for v in report.liveness)
    _say(console, f"{_mark(report.all_live)} every view of the ranking service is live for the users active in the "
                  f"last hour and their candidates' items (served/with a value: {shown})")


def _training(report: DemoReport, console: Console) -> None:
    console.rule("[bold]Training set (get_historical_features, point in time)")
    if report.training_counts is not None:
        console.print(_frame_table(report.training_counts, "rows per day and label balance"))
    if report.training_sample is not None:
        sample = report.training_sample[[c for c in TRAINING_COLUMNS if c in report.training_sample.columns]]
        console.print(_frame_table(sample, "a sample of the newest day"))
    if report.pit is not None:
        p = report.pit
        _say(console, f"{_mark(not p.mismatches)} {p.rows:,} training rows checked against a hand-made "
                      f"point-in-time join of the Parquet features ({p.values:,} values, {len(p.mismatches)} "
                      f"differ; {p.with_features:,} rows have features)")


def _where(report: DemoReport, console: Console) -> None:
    console.rule("[bold]Where things are")
    for name, uri in report.lake_uris.items():
        _say(console, f"{name:<14} {uri}")
    _say(console, f"{'step logs':<14} {report.log_dir}")
    training = report.lake_uris.get("training sets", "").removeprefix("s3://")
    _say(console, "Read the lake:  .venv/bin/python -c \"import pyarrow.dataset as ds; from feedstore.s3 import "
                  f"arrow_fs; print(ds.dataset('{training}', filesystem=arrow_fs(), format='parquet', "
                  "partitioning='hive').to_table().num_rows)\"")
    _say(console, "Dagster UI:     ./run dagster            → http://127.0.0.1:3000 (this run's assets are "
                  "in its catalog)")
    _say(console, "Feature server: ./run serve --port 6566  (or stock Feast: ./run feast serve; "
                  "its UI: ./run feast ui)")
    _say(console, "                curl -s -H 'Content-Type: application/json' localhost:6566/get-online-features "
                  "-d '{\"feature_service\": "
                  f"\"ranking\", \"entities\": {{\"user_id\": [{report.user_id}], \"item_id\": [1]}}}}'")

