"""How fresh the online store is, per view: the age of the newest value written to it, beside
what the feature contract allows (its TTL, and the worst age its refresh schedule gives).

The online store records the newest event time it wrote per view (``layout.newest_key``), on
every materialisation and push; reading it is one ``HGETALL``, cheap enough for every scrape.
A view whose newest value is older than its TTL serves nothing at all: it has gone dark.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from feedstore.contract.features import VIEWS
from feedstore.feast.online import layout

AGE_METRIC = "feedstore_online_newest_value_age_seconds"
TTL_METRIC = "feedstore_online_ttl_seconds"
WORST_METRIC = "feedstore_online_allowed_age_seconds"


@dataclass(frozen=True)
class Freshness:
    view: str
    ttl: timedelta
    refresh: str
    allowed: timedelta
    """The oldest a served value gets while the schedules run within their budget."""
    newest: datetime | None

    def age(self, now: datetime) -> timedelta | None:
        return None if self.newest is None else now - self.newest

    def status(self, now: datetime) -> str:
        age = self.age(now)
        if age is None:
            return "never written"
        if age >= self.ttl:
            return "dark"
        return "late" if age > self.allowed else "ok"


def newest_online(client, project: str) -> dict[str, datetime]:
    """View -> event time of the newest value the online store ever wrote for it."""
    raw = client.hgetall(layout.newest_key(project))
    return {k.decode(): datetime.fromtimestamp(int(v) / 1e6, tz=timezone.utc) for k, v in raw.items()}


def freshness(client, project: str) -> list[Freshness]:
    newest = newest_online(client, project)
    return [Freshness(v.name, v.ttl, v.refresh.name, v.refresh.worst_age if not v.pushed else v.ttl,
                      newest.get(v.name)) for v in VIEWS.values()]


def hours(span: timedelta) -> str:
    return f"{span.total_seconds() / 3600:.4g} h"


def now() -> datetime:
    return datetime.fromtimestamp(layout.now_micros() / 1e6, tz=timezone.utc)


class FreshnessCollector:
    """Prometheus collector computed at scrape time from the store's own record."""

    def __init__(self, client, project: str) -> None:
        self.client, self.project = client, project

    def collect(self) -> Iterator:
        from prometheus_client.core import GaugeMetricFamily

        age = GaugeMetricFamily(AGE_METRIC, "Age of the newest value in the online store, per feature view "
                                            "(absent: never written)", labels=["view"])
        ttl = GaugeMetricFamily(TTL_METRIC, "The feature view's TTL: older values are never served", labels=["view"])
        allowed = GaugeMetricFamily(WORST_METRIC, "The oldest a served value gets while its refresh runs on time",
                                    labels=["view"])
        at = now()
        for f in freshness(self.client, self.project):
            ttl.add_metric([f.view], f.ttl.total_seconds())
            allowed.add_metric([f.view], f.allowed.total_seconds())
            if f.newest is not None:
                age.add_metric([f.view], max(0.0, (at - f.newest).total_seconds()))
        yield from (age, ttl, allowed)
