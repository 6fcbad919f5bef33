"""The feature contract: every feature view once, with its entity, TTL, refresh, columns (type,
description, the rules its values obey) and where its table lives in the lake.

Feast definitions (``feedstore.feast.definitions``), Arrow schemas, the Great Expectations
suites, the Dagster asset lists and the demo all derive from ``VIEWS``; adding a view means
adding it here and writing the code that computes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

import pyarrow as pa

from feedstore.contract import lake
from feedstore.contract.rules import (
    AGE_RANGES,
    CATEGORIES,
    COUNTRIES,
    EMBEDDING_DIM,
    EVENT_TYPES,
    LANGUAGES,
    LONG_DWELL_MS,
    MEDIA_TYPES,
)

MIN_ENGAGED_WEIGHT_MS = 1_000
"""A like with no recorded view still counts for a user embedding."""

TIMESTAMP = pa.timestamp("us", tz="UTC")
EVENT_TIMESTAMP = "event_timestamp"


class Kind(StrEnum):
    """A feature's value type; each maps to one Arrow type and one Feast type."""

    INT64 = "int64"
    FLOAT64 = "float64"
    STRING = "string"
    INT64_LIST = "int64_list"
    FLOAT32_LIST = "float32_list"
    STRING_LIST = "string_list"


ARROW_TYPES: dict[Kind, pa.DataType] = {
    Kind.INT64: pa.int64(), Kind.FLOAT64: pa.float64(), Kind.STRING: pa.string(),
    Kind.INT64_LIST: pa.list_(pa.int64()), Kind.FLOAT32_LIST: pa.list_(pa.float32()),
    Kind.STRING_LIST: pa.list_(pa.string()),
}


RUN_BUDGET = timedelta(hours=1)
"""How long a scheduled run may take before a value it writes could be late online: 4x the daily
pipeline's 15-minute target at seed scale (355 s measured, bench/REPORT.md)."""


@dataclass(frozen=True)
class Refresh:
    """How a view's online values are renewed. A value stamped at t is replaced by the next one,
    stamped at t + ``every``, at the latest ``lag`` after that stamp (schedule offset + run budget);
    so with a TTL of at least ``every + lag`` an entity that has a value never goes dark between
    runs, and no served value is older than ``every + lag`` (nor ever than the TTL)."""

    name: str
    text: str
    every: timedelta
    lag: timedelta

    @property
    def worst_age(self) -> timedelta:
        """The oldest a served value gets while the schedules run within their budget."""
        return self.every + self.lag


DAILY = Refresh("daily", "daily run at 01:00 UTC for yesterday's partition, rows stamped at its end (00:00)",
                timedelta(days=1), timedelta(hours=1) + RUN_BUDGET)
DAILY_AND_MIDDAY = Refresh(
    "daily_and_midday", "daily run (rows stamped 00:00) and the 12:15 UTC candidates refresh (rows stamped 12:00)",
    timedelta(hours=12), timedelta(hours=1) + RUN_BUDGET)
PUSH = Refresh("push", "pushed by the ingestion consumer for every batch of new events (and landed offline daily)",
               timedelta(0), timedelta(minutes=1))
"""A pushed value is renewed by the user's next event; one absent past its TTL means no activity since."""


@dataclass(frozen=True)
class Bound:
    """``lo <= value <= hi`` (``lo < value`` when ``strict_min``), reported under ``rule``."""

    rule: str
    lo: float | None = None
    hi: float | None = None
    strict_min: bool = False


COUNT = Bound("count_non_negative", 0)
RATE = Bound("rate_in_unit_interval", 0, 1)


@dataclass(frozen=True)
class Vocabulary:
    """The values a string (or each element of a string list) may take, reported under ``rule``."""

    rule: str
    values: tuple[str, ...]


CATEGORY = Vocabulary("category_in_vocabulary", CATEGORIES)


@dataclass(frozen=True)
class Feature:
    name: str
    kind: Kind
    description: str
    bound: Bound | None = None
    vocabulary: Vocabulary | None = None
    dim: int | None = None
    """Fixed length of a list feature (embeddings, distributions)."""
    distribution: bool = False
    """A non-negative vector that sums to 1 (or is all zeros)."""
    at_most: tuple[str, ...] = ()
    """Other features of the same row this one never exceeds (a 7-day count and its 30-day one)."""

    @property
    def arrow_type(self) -> pa.DataType:
        return ARROW_TYPES[self.kind]


@dataclass(frozen=True)
class Entity:
    name: str
    join_key: str
    description: str


USER = Entity("user", "user_id", "A member of the feed; ids are INT64 everywhere.")
ITEM = Entity("item", "item_id", "A catalog item (post, video, image) a user can be shown.")
ENTITIES = (USER, ITEM)


@dataclass(frozen=True)
class View:
    name: str
    entity: Entity
    ttl: timedelta
    refresh: Refresh
    description: str
    features: tuple[Feature, ...]
    tier: str
    service: str = "ranking"
    """The feature service the view serves online; ``training`` holds every view with a table offline."""
    push_source: str | None = None
    """The Feast push source a pushed view is written through."""
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ttl < self.refresh.worst_age:
            raise ValueError(f"{self.name}: TTL {self.ttl} < refresh interval + lag {self.refresh.worst_age}: "
                             "its online values would expire before the next ones land")

    @property
    def pushed(self) -> bool:
        return self.refresh is PUSH

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def prefix(self) -> str:
        """Root of the view's table in the lake (``dt=<day>/`` folders below it)."""
        return lake.feature_root(self.name)

    def arrow_schema(self, *extra: pa.Field) -> pa.Schema:
        """The view's table as the pipeline writes it: join key, event time, features, then ``extra``."""
        return pa.schema([pa.field(self.entity.join_key, pa.int64()), pa.field(EVENT_TIMESTAMP, TIMESTAMP),
                          *(pa.field(f.name, f.arrow_type) for f in self.features), *extra])


def _counts(*specs: tuple) -> tuple[Feature, ...]:
    """INT64 counts: (name, description, *the features it never exceeds)."""
    return tuple(Feature(name, Kind.INT64, description, COUNT, at_most=tuple(at_most))
                 for name, description, *at_most in specs)


def _rates(*specs: tuple[str, str]) -> tuple[Feature, ...]:
    return tuple(Feature(name, Kind.FLOAT64, description, RATE) for name, description in specs)


def _embedding(name: str, description: str) -> Feature:
    return Feature(name, Kind.FLOAT32_LIST, description, dim=EMBEDDING_DIM)


_RATE = ("{what} per view over {days} days: {what} / views, at most 1 (an engagement may arrive without its "
         "view); 0 without any {what}")
_DWELL = "Mean dwell_time_ms of the views that carry one, over {days} days; 0 without such views"

USER_ACTIVITY = View(
    "user_activity_features", USER, timedelta(days=2), DAILY,
    "Windowed engagement aggregates of a user's activity before the row's time, recomputed daily.",
    (
        *_counts(("interactions_7d", "Events of any type in the last 7 days", "interactions_30d"),
                 ("interactions_30d", "Events of any type in the last 30 days"),
                 ("unique_items_7d", "Distinct items interacted with, 7 days", "unique_items_30d", "interactions_7d"),
                 ("unique_items_30d", "Distinct items interacted with, 30 days", "interactions_30d")),
        Feature("active_days_7d", Kind.INT64, "UTC days with at least one event, of the last 7",
                Bound("active_days_bounds", 0, 7), at_most=("active_days_30d",)),
        Feature("active_days_30d", Kind.INT64, "UTC days with at least one event, of the last 30",
                Bound("active_days_bounds", 0, 30)),
        *_rates(("like_rate_7d", _RATE.format(what="likes", days=7)),
                ("like_rate_30d", _RATE.format(what="likes", days=30)),
                ("share_rate_7d", _RATE.format(what="shares", days=7)),
                ("share_rate_30d", _RATE.format(what="shares", days=30)),
                ("comment_rate_30d", _RATE.format(what="comments", days=30))),
        Feature("avg_dwell_ms_7d", Kind.FLOAT64, _DWELL.format(days=7), COUNT),
        Feature("avg_dwell_ms_30d", Kind.FLOAT64, _DWELL.format(days=30), COUNT),
        Feature("category_dist_30d", Kind.FLOAT32_LIST,
                "Share of events per category (feedstore.contract.rules.CATEGORIES order), sums to 1; zeros if idle",
                dim=len(CATEGORIES), distribution=True),
        Feature("top_category_30d", Kind.STRING,
                "Category with the most events over 30 days (ties: first in CATEGORIES order); null if idle",
                vocabulary=CATEGORY),
    ),
    tier="daily",
)
USER_PROFILE = View(
    "user_profile_features", USER, timedelta(days=7), DAILY,
    "Profile snapshot of a user: demographics and declared preferences.",
    (
        Feature("age_range", Kind.STRING, "Declared age bucket, e.g. 25-34",
                vocabulary=Vocabulary("age_range_in_vocabulary", AGE_RANGES)),
        Feature("country", Kind.STRING, "ISO country code", vocabulary=Vocabulary("country_in_vocabulary", COUNTRIES)),
        Feature("language", Kind.STRING, "ISO language code",
                vocabulary=Vocabulary("language_in_vocabulary", LANGUAGES)),
        Feature("account_age_days", Kind.INT64, "Days since the account was created", COUNT),
        Feature("following_count", Kind.INT64, "Creators the user follows", COUNT),
        Feature("preferred_categories", Kind.STRING_LIST, "Categories the user picked",
                vocabulary=Vocabulary("list_in_vocabulary", CATEGORIES)),
    ),
    tier="daily",
)
USER_EMBEDDING = View(
    "user_embedding", USER, timedelta(hours=30), DAILY, "User taste vector in the item-embedding space.",
    (_embedding("user_embedding",
                f"{EMBEDDING_DIM}-d unit vector: the mean of the content embeddings of the items the user liked, "
                f"shared, commented or viewed for {LONG_DWELL_MS // 1000} s or more in 30 days, each weighted by its "
                f"views' total dwell (at least {MIN_ENGAGED_WEIGHT_MS // 1000} s)"),),
    tier="embedding",
)
USER_REALTIME = View(
    "user_realtime_features", USER, timedelta(hours=1), PUSH,
    "The user's hot counters as the stream consumer keeps them; absent after an hour without events.",
    (
        *_counts(("rt_interactions_1h", "Events since the user's current run of activity began (a run ends after an "
                                        "hour without events: the hot counter's TTL)"),
                 ("rt_dwell_ms_1h", "Total dwell_time_ms of the events of that run")),
        Feature("rt_last_item_id", Kind.INT64, "Item of the most recent event"),
        Feature("rt_last_event_type", Kind.STRING, "Type of the most recent event",
                vocabulary=Vocabulary("event_type_allowed", EVENT_TYPES)),
    ),
    tier="realtime", push_source="user_realtime_push",
)
USER_CANDIDATES = View(
    "user_candidates", USER, timedelta(hours=16), DAILY_AND_MIDDAY,
    "Top candidate items per user from the retrieval stage (what to rank, not a feature of a pair).",
    (
        Feature("candidate_item_ids", Kind.INT64_LIST,
                "The week's most viewed items the user did not touch in the 7 days before, best first by "
                "0.8 x embedding cosine + 0.2 x log views normalised to [0, 1]"),
        Feature("candidate_scores", Kind.FLOAT32_LIST, "The score of each candidate, same order"),
    ),
    tier="candidates", service="retrieval",
)
ITEM_CATALOG = View(
    "item_catalog_features", ITEM, timedelta(days=30), DAILY, "Catalog attributes of an item.",
    (
        Feature("category", Kind.STRING, "Catalog category", vocabulary=CATEGORY),
        Feature("media_type", Kind.STRING, "video, image or text",
                vocabulary=Vocabulary("media_type_allowed", MEDIA_TYPES)),
        Feature("creator_id", Kind.INT64, "User id of the creator"),
        Feature("tags", Kind.STRING_LIST, "Free-form tags"),
        Feature("item_age_days", Kind.FLOAT64, "Days since the item was created", COUNT),
    ),
    tier="daily",
)
ITEM_EMBEDDING = View(
    "item_embedding", ITEM, timedelta(days=7), DAILY, "Pre-computed content embedding of an item.",
    (_embedding("item_embedding", f"{EMBEDDING_DIM}-d content embedding scaled to unit length"),), tier="embedding",
)
ITEM_ENGAGEMENT = View(
    "item_engagement_features", ITEM, timedelta(days=2), DAILY,
    "How the audience responds to an item, recomputed daily.",
    (
        *_counts(("views_1d", "Views in the last day", "views_7d"), ("views_7d", "Views in the last 7 days", "views_30d"),
                 ("views_30d", "Views in the last 30 days"),
                 ("unique_viewers_7d", "Distinct viewers in the last 7 days", "views_7d")),
        *_rates(("engagement_rate_7d", "(likes + shares + comments) / views over 7 days, at most 1; 0 without views"),
                ("avg_implicit_rating_7d",
                 f"Mean over the item's users of 7 days of their rating: 1 if they liked, shared or commented, "
                 f"else min(1, their dwell / {LONG_DWELL_MS // 1000} s)")),
        Feature("freshness_score", Kind.FLOAT64, "exp(-days since creation / 7), in (0,1]",
                Bound("rate_in_unit_interval", 0, 1, strict_min=True)),
    ),
    tier="daily",
)

VIEWS: dict[str, View] = {v.name: v for v in (
    USER_ACTIVITY, USER_PROFILE, USER_EMBEDDING, USER_REALTIME, USER_CANDIDATES,
    ITEM_CATALOG, ITEM_EMBEDDING, ITEM_ENGAGEMENT,
)}
BATCH_VIEWS: tuple[str, ...] = tuple(v.name for v in VIEWS.values() if not v.pushed)
"""Written by the daily pipeline and materialised from the lake (the rest are pushed)."""
TRAINING_VIEWS: tuple[str, ...] = tuple(v.name for v in VIEWS.values() if v.service == "ranking")
"""Every view the ranker scores with: each has point-in-time rows offline (pushed ones too)."""
SERVICES: dict[str, tuple[str, ...]] = {
    "ranking": tuple(v.name for v in VIEWS.values() if v.service == "ranking"),
    "retrieval": tuple(v.name for v in VIEWS.values() if v.service == "retrieval"),
    "training": TRAINING_VIEWS,
}
SERVICE_DESCRIPTIONS: dict[str, str] = {
    "ranking": "Everything the online ranker reads for one (user, candidate item) pair.",
    "retrieval": "Which items to rank for a user: the candidates, read once per request.",
    "training": "Point-in-time features for training sets: every feature of the ranking service.",
}


def views_of(entity: Entity) -> tuple[View, ...]:
    return tuple(v for v in VIEWS.values() if v.entity == entity)


def all_features() -> tuple[Feature, ...]:
    """Every feature of every view, each name once (names are unique across views)."""
    return tuple(f for v in VIEWS.values() for f in v.features)
