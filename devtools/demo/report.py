"""What the demo is asked to do and what it found: the options, and the report the steps fill
in and ``render`` prints, kept apart from both so that tests can read one run's outcome."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from devtools.demo import audit


@dataclass
class DemoOptions:
    scale: str = "small"
    seed: int = 0
    log_dir: Path | None = None        # default: <stack dir>/demo
    dagster_home: Path | None = None   # None: an ephemeral Dagster instance
    defects: bool = True               # also send malformed events, to fill the DLQ
    idle_seconds: float = 3.0          # the consumer stops after the topic was empty this long
    stall_seconds: float = 180.0       # ... and the demo gives up if nothing moves for this long
    allow_remote: bool = False


@dataclass
class CheckOutcome:
    day: str
    asset: str
    check: str
    passed: bool
    rows: int | None
    docs: str | None


@dataclass
class DemoReport:
    scale: str
    window: tuple[datetime, datetime]
    days: list[date]
    generated: dict[str, int] = field(default_factory=dict)
    sent_to_kafka: int = 0
    bad_events_sent: Counter = field(default_factory=Counter)   # by DLQ reason
    resent: int = 0                                              # duplicates of generated events
    consumed: dict[str, int] = field(default_factory=dict)
    dlq: Counter = field(default_factory=Counter)
    tiers: audit.TierCounts | None = None
    archive: list[dict[str, Any]] = field(default_factory=list)
    checks: list[CheckOutcome] = field(default_factory=list)
    user_id: int | None = None
    user_features: dict[str, Any] = field(default_factory=dict)
    candidates: pd.DataFrame | None = None
    candidates_note: str | None = None
    online: list[audit.OnlineComparison] = field(default_factory=list)
    liveness: list[audit.Liveness] = field(default_factory=list)
    training_counts: pd.DataFrame | None = None
    training_sample: pd.DataFrame | None = None
    pit: audit.PitComparison | None = None
    data_docs: Path | None = None
    log_dir: Path | None = None
    lake_uris: dict[str, str] = field(default_factory=dict)

    @property
    def events(self) -> int:
        return self.generated.get("events", 0)

    @property
    def tiers_equal(self) -> bool:
        return self.tiers is not None and self.tiers.equal(self.events)

    @property
    def checks_passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def online_equal(self) -> bool:
        return bool(self.online) and all(not c.mismatches and c.entities for c in self.online)

    @property
    def all_live(self) -> bool:
        return bool(self.liveness) and all(v.expected and v.served == v.expected for v in self.liveness)

    @property
    def dlq_as_sent(self) -> bool:
        return self.dlq == self.bad_events_sent

    @property
    def ok(self) -> bool:
        return (self.tiers_equal and self.checks_passed and self.online_equal and self.dlq_as_sent
                and self.all_live and self.pit is not None and not self.pit.mismatches)
