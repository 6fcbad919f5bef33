"""A synthetic social feed: users, the item catalog with content embeddings, and activity.

Pure and deterministic: the same ``GenerationSpec`` (scale, seed, end, days) gives the same
tables byte for byte, whatever reads them, because every random stream is keyed by
(seed, stream, chunk) and chunk sizes are fixed here. Everything is vectorised (numpy /
pyarrow): the ``seed`` scale is 10M items and 1M events a day, so nothing may loop per row
in Python except the SHA-1 of event ids.

Shapes it aims for, so features computed downstream look like a real feed's:
- item popularity is Zipf by a random rank; item ids grow with ``created_at`` and events
  only touch items that existed when their session started;
- users consume mostly (``PREFERRED_SHARE``) their ``preferred_categories``;
- activity comes in sessions (one device/platform, several views back to back); likes,
  shares and comments follow a view of the same item in the same session;
- dwell is log-normal by media type, longer when the view led to engagement;
- embeddings are a category centroid plus noise, L2-normalised.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property, lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feedstore.contract.events import EVENT_SCHEMA
from feedstore.contract.rules import (
    AGE_RANGES,
    CATEGORIES,
    COUNTRIES,
    DEVICES,
    EMBEDDING_DIM,
    EVENT_TYPES,
    LANGUAGES,
    MAX_DWELL_MS,
    MEDIA_TYPES,
    PLATFORMS,
)
from ingestion.events import EVENT_NAMESPACE


@dataclass(frozen=True)
class Scale:
    name: str
    users: int
    items: int
    events_per_day: int
    days: int                 # default length of the event window
    item_history_days: int    # items are created over this many days before ``end``
    follows_per_user: float


SCALES: dict[str, Scale] = {s.name: s for s in (
    Scale("tiny", users=200, items=2_000, events_per_day=2_500, days=2, item_history_days=90, follows_per_user=8),
    Scale("small", users=2_000, items=50_000, events_per_day=34_000, days=3, item_history_days=180,
          follows_per_user=20),
    # a fifth of seed, to profile the daily pipeline between seed-scale runs
    Scale("medium", users=20_000, items=2_000_000, events_per_day=200_000, days=1, item_history_days=200,
          follows_per_user=25),
    Scale("seed", users=100_000, items=10_000_000, events_per_day=1_000_000, days=1, item_history_days=200,
          follows_per_user=25),
)}

ZIPF_EXPONENT = 1.0
PREFERRED_SHARE = 0.8
CREATOR_IN_PREFERRED_SHARE = 0.7
ENGAGEMENT_RATES = {"like": 0.08, "share": 0.02, "comment": 0.03}
MEAN_VIEWS_PER_SESSION = 5.0
MEAN_GAP_MS = 1_500
DWELL_MEDIAN_MS = {"video": 12_000, "image": 2_500, "text": 4_000}
DWELL_SIGMA = 0.9
ENGAGED_DWELL_FACTOR = 2.5
MIN_DWELL_MS = 100
EMBEDDING_NOISE = 0.15
USER_HISTORY_DAYS = 3 * 365
ITEM_CHUNK = 250_000          # fixed: the random streams of item details are keyed by chunk

AGE_WEIGHTS = (0.06, 0.24, 0.28, 0.18, 0.12, 0.08, 0.04)
COUNTRY_WEIGHTS = (0.30, 0.08, 0.14, 0.08, 0.05, 0.05, 0.05, 0.04, 0.05, 0.03, 0.03, 0.03, 0.04, 0.03)
COUNTRY_LANGUAGE = {"US": "en", "GB": "en", "IN": "hi", "BR": "pt", "DE": "de", "FR": "fr", "JP": "ja", "CA": "en",
                    "MX": "es", "ES": "es", "IT": "it", "AU": "en", "NG": "en", "ID": "id"}
NATIVE_LANGUAGE_SHARE = 0.85
MEDIA_WEIGHTS = (0.35, 0.40, 0.25)
# (device, platform) pairs a session can run on, and how common each is.
CLIENTS = (("mobile", "ios"), ("mobile", "android"), ("desktop", "web"), ("tablet", "ios"), ("tablet", "android"),
           ("tablet", "web"))
CLIENT_WEIGHTS = (0.29, 0.36, 0.25, 0.06, 0.03, 0.01)
PRIMARY_CLIENT_SHARE = 0.8
TAGS: dict[str, tuple[str, ...]] = {
    "tech": ("ai", "machine-learning", "python", "gadgets", "startups", "cloud", "security", "open-source"),
    "sports": ("football", "basketball", "tennis", "running", "cycling", "highlights", "transfers", "olympics"),
    "music": ("pop", "rock", "hip-hop", "jazz", "live", "playlist", "indie", "classical"),
    "news": ("politics", "world", "local", "economy", "breaking", "climate", "elections", "analysis"),
    "gaming": ("esports", "rpg", "fps", "indie-games", "speedrun", "retro", "console", "mobile-games"),
    "food": ("recipes", "vegan", "baking", "street-food", "restaurants", "coffee", "bbq", "healthy-eating"),
    "travel": ("backpacking", "beaches", "city-guide", "road-trip", "hiking", "budget-travel", "luxury", "islands"),
    "fashion": ("streetwear", "runway", "vintage", "sneakers", "outfits", "beauty", "accessories", "sustainable"),
    "science": ("space", "physics", "biology", "chemistry", "climate-science", "research", "astronomy", "math"),
    "movies": ("trailers", "reviews", "box-office", "streaming", "horror", "sci-fi", "animation", "behind-scenes"),
    "art": ("painting", "illustration", "photography", "sculpture", "digital-art", "street-art", "design", "museum"),
    "finance": ("investing", "crypto", "stocks", "personal-finance", "markets", "real-estate", "budgeting", "fintech"),
    "health": ("fitness", "nutrition", "mental-health", "yoga", "sleep", "wellness", "medicine", "workout"),
    "education": ("tutorial", "study-tips", "languages", "history", "coding", "exam-prep", "lectures", "howto"),
    "comedy": ("memes", "standup", "sketch", "parody", "pranks", "satire", "funny-animals", "improv"),
    "pets": ("dogs", "cats", "puppies", "kittens", "birds", "aquarium", "pet-care", "rescue"),
}
TAGS_PER_CATEGORY = 8
MAX_PREFERRED = 4
MAX_TAGS = 4

# Random stream ids; fixed forever so a seed keeps meaning the same data.
_USERS, _FOLLOWS, _ITEMS, _ITEM_DETAILS, _CENTROIDS, _EVENTS = range(6)
_DAY_MS = 86_400_000

USERS_SCHEMA = pa.schema([
    pa.field("user_id", pa.int64(), nullable=False),
    pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("age_range", pa.string()),
    pa.field("country", pa.string()),
    pa.field("language", pa.string()),
    pa.field("preferred_categories", pa.list_(pa.string())),
    pa.field("following", pa.list_(pa.int64())),
])
FOLLOWS_SCHEMA = pa.schema([
    pa.field("user_id", pa.int64(), nullable=False),
    pa.field("followed_id", pa.int64(), nullable=False),
    pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
])
ITEMS_SCHEMA = pa.schema([
    pa.field("item_id", pa.int64(), nullable=False),
    pa.field("creator_id", pa.int64(), nullable=False),
    pa.field("category", pa.string()),
    pa.field("tags", pa.list_(pa.string())),
    pa.field("media_type", pa.string(), nullable=False),
    pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("content_embedding", pa.list_(pa.float32())),
])


def _rng(seed: int, stream: int, chunk: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, chunk]))


def _probabilities(weights) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    return w / w.sum()


CATEGORY_WEIGHTS = _probabilities(1.0 / (np.arange(len(CATEGORIES)) + 3.0) ** 0.7)


def default_end(now: datetime | None = None) -> datetime:
    """The top of the current UTC hour: stable for an hour, so a re-run regenerates the same data."""
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return now.replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class GenerationSpec:
    """What to generate. ``end`` is exclusive; events fall in ``[end - days, end)``."""

    scale: Scale
    seed: int = 0
    end: datetime = field(default_factory=default_end)
    days: int | None = None

    def __post_init__(self) -> None:
        if self.end.tzinfo is None:
            raise ValueError("end must be timezone-aware (UTC)")
        if self.window_days <= 0:
            raise ValueError("days must be positive")
        if self.seed < 0:
            raise ValueError("seed must be non-negative")

    @property
    def window_days(self) -> int:
        return self.days if self.days is not None else self.scale.days

    @property
    def end_ms(self) -> int:
        return int(self.end.timestamp() * 1000)

    @property
    def start_ms(self) -> int:
        return self.end_ms - self.window_days * _DAY_MS

    @property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.window_days)

    @property
    def item_history_days(self) -> int:
        """At least a week longer than the window, so every category has items before it opens."""
        return max(self.scale.item_history_days, self.window_days + 7)

    @property
    def expected_events(self) -> int:
        return self.scale.events_per_day * self.window_days

    @property
    def item_chunks(self) -> int:
        return -(-self.scale.items // ITEM_CHUNK)


def spec_for(scale: str, seed: int = 0, end: datetime | None = None, days: int | None = None) -> GenerationSpec:
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    return GenerationSpec(SCALES[scale], seed, end or default_end(), days)


def _topk_without_replacement(rng: np.random.Generator, n: int, weights: np.ndarray, k: int) -> np.ndarray:
    """``n`` weighted draws of ``k`` distinct indices each (Gumbel top-k), shape (n, k)."""
    keys = np.log(weights)[None, :] - np.log(-np.log(rng.random((n, len(weights)))))
    return np.argsort(-keys, axis=1)[:, :k]


def _string_array(vocab: tuple[str, ...], codes: np.ndarray) -> pa.Array:
    return pa.array(vocab, pa.string()).take(pa.array(codes))


def _list_array(offsets: np.ndarray, values: pa.Array) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)


def _timestamps(us: np.ndarray) -> pa.Array:
    return pa.array(us.astype(np.int64), pa.timestamp("us", tz="UTC"))


def _zipf_weights(rng: np.random.Generator, n: int) -> np.ndarray:
    """Zipf weight of a random popularity rank per position."""
    return 1.0 / (rng.permutation(n) + 1.0) ** ZIPF_EXPONENT


class World:
    """The users and catalog arrays every table is drawn from, built once per spec."""

    def __init__(self, spec: GenerationSpec) -> None:
        self.spec = spec
        self._build_users()
        self._build_items()

    def _build_users(self) -> None:
        s, n = self.spec, self.spec.scale.users
        rng = _rng(s.seed, _USERS)
        self.user_ids = np.arange(1, n + 1, dtype=np.int64)
        newest = s.end_ms - s.item_history_days * _DAY_MS - _DAY_MS
        self.user_created_ms = rng.integers(newest - USER_HISTORY_DAYS * _DAY_MS, newest, n)
        self.age = rng.choice(len(AGE_RANGES), n, p=_probabilities(AGE_WEIGHTS))
        self.country = rng.choice(len(COUNTRIES), n, p=_probabilities(COUNTRY_WEIGHTS))
        native = np.array([LANGUAGES.index(COUNTRY_LANGUAGE[c]) for c in COUNTRIES])[self.country]
        self.language = np.where(rng.random(n) < NATIVE_LANGUAGE_SHARE, native, LANGUAGES.index("en"))
        self.n_preferred = 1 + rng.binomial(MAX_PREFERRED - 1, 0.4, n)
        self.preferred = _topk_without_replacement(rng, n, CATEGORY_WEIGHTS, MAX_PREFERRED)
        self.primary_client = rng.choice(len(CLIENTS), n, p=_probabilities(CLIENT_WEIGHTS))
        self.activity = rng.lognormal(0.0, 1.0, n)
        self.propensity = rng.lognormal(-0.125, 0.5, n)
        self.creator_weight = _zipf_weights(rng, n)

    def _build_items(self) -> None:
        s, m = self.spec, self.spec.scale.items
        rng = _rng(s.seed, _ITEMS)
        oldest = s.end_ms - s.item_history_days * _DAY_MS
        self.item_created_ms = np.sort(rng.integers(oldest, s.end_ms, m))
        creators = rng.choice(len(self.user_ids), m, p=_probabilities(self.creator_weight))
        self.creator_ids = self.user_ids[creators]
        slot = (rng.random(m) * self.n_preferred[creators]).astype(np.int64)
        own = self.preferred[creators, slot]
        other = rng.choice(len(CATEGORIES), m, p=CATEGORY_WEIGHTS)
        category = np.where(rng.random(m) < CREATOR_IN_PREFERRED_SHARE, own, other).astype(np.int8)
        first = min(m, len(CATEGORIES))
        category[:first] = np.arange(first)  # the oldest items cover every category
        self.item_category = category
        self.item_weight = _zipf_weights(rng, m)
        if m >= len(CATEGORIES) and self.item_created_ms[first - 1] >= s.start_ms:
            raise ValueError("item history too short: some category has no item before the event window")

    @cached_property
    def by_category(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per category: item indices (oldest first), their creation times, cumulative popularity."""
        out = []
        for c in range(len(CATEGORIES)):
            idx = np.flatnonzero(self.item_category == c)
            out.append((idx, self.item_created_ms[idx], np.cumsum(self.item_weight[idx])))
        return out

    @cached_property
    def media(self) -> np.ndarray:
        """Media type code per item, drawn chunk by chunk like the other item details."""
        return np.concatenate([self._item_details(i)[0] for i in range(self.spec.item_chunks)])

    def _item_details(self, chunk: int) -> tuple[np.ndarray, np.random.Generator]:
        lo, hi = chunk * ITEM_CHUNK, min((chunk + 1) * ITEM_CHUNK, self.spec.scale.items)
        rng = _rng(self.spec.seed, _ITEM_DETAILS, chunk)
        return rng.choice(len(MEDIA_TYPES), hi - lo, p=_probabilities(MEDIA_WEIGHTS)), rng

    @cached_property
    def centroids(self) -> np.ndarray:
        c = _rng(self.spec.seed, _CENTROIDS).standard_normal((len(CATEGORIES), EMBEDDING_DIM))
        return c / np.linalg.norm(c, axis=1, keepdims=True)

    def sample_items(self, rng: np.random.Generator, category: np.ndarray, before_ms: np.ndarray) -> np.ndarray:
        """Item index per draw: Zipf-weighted within ``category`` among items created before ``before_ms``."""
        out = np.empty(len(category), dtype=np.int64)
        for c, (idx, created, cum) in enumerate(self.by_category):
            rows = np.flatnonzero(category == c)
            if not len(rows):
                continue
            existing = np.searchsorted(created, before_ms[rows], side="left")
            if (existing == 0).any():
                raise ValueError(f"no {CATEGORIES[c]} item exists before an event")
            target = rng.random(len(rows)) * cum[existing - 1]
            pick = np.minimum(np.searchsorted(cum, target, side="right"), existing - 1)
            out[rows] = idx[pick]
        return out


@lru_cache(maxsize=2)
def world(spec: GenerationSpec) -> World:
    return World(spec)


# ---- users -------------------------------------------------------------------------------

def users_table(spec: GenerationSpec) -> pa.Table:
    w = world(spec)
    n = len(w.user_ids)
    pref_offsets = np.concatenate([[0], np.cumsum(w.n_preferred)])
    mask = np.arange(MAX_PREFERRED)[None, :] < w.n_preferred[:, None]
    follows = follows_table(spec)
    counts = np.bincount(follows["user_id"].to_numpy() - 1, minlength=n)
    follow_offsets = np.concatenate([[0], np.cumsum(counts)])
    return pa.table([
        pa.array(w.user_ids),
        _timestamps(w.user_created_ms * 1000),
        _string_array(AGE_RANGES, w.age),
        _string_array(COUNTRIES, w.country),
        _string_array(LANGUAGES, w.language),
        _list_array(pref_offsets, _string_array(CATEGORIES, w.preferred[mask])),
        _list_array(follow_offsets, follows["followed_id"].combine_chunks()),
    ], schema=USERS_SCHEMA)


@lru_cache(maxsize=2)
def follows_table(spec: GenerationSpec) -> pa.Table:
    """Who follows whom: popular creators gather most followers; sorted by (user_id, followed_id)."""
    w = world(spec)
    rng = _rng(spec.seed, _FOLLOWS)
    n = len(w.user_ids)
    counts = np.minimum(rng.poisson(spec.scale.follows_per_user * rng.lognormal(-0.5, 1.0, n)), n - 1)
    follower = np.repeat(np.arange(n), counts)
    followed = rng.choice(n, len(follower), p=_probabilities(w.creator_weight))
    keep = follower != followed
    pair = np.unique(follower[keep] * n + followed[keep])
    follower, followed = pair // n, pair % n
    after = np.maximum(w.user_created_ms[follower], w.user_created_ms[followed])
    created = after + (rng.random(len(pair)) * (spec.start_ms - after)).astype(np.int64)
    return pa.table([
        pa.array(w.user_ids[follower]), pa.array(w.user_ids[followed]), _timestamps(created * 1000),
    ], schema=FOLLOWS_SCHEMA)


# ---- items -------------------------------------------------------------------------------

def item_chunk(spec: GenerationSpec, chunk: int) -> pa.Table:
    """Items ``[chunk * ITEM_CHUNK, …)`` with tags and embeddings; ids grow with ``created_at``."""
    w = world(spec)
    lo = chunk * ITEM_CHUNK
    media, rng = w._item_details(chunk)
    n = len(media)
    category = w.item_category[lo:lo + n].astype(np.int64)

    n_tags = rng.integers(1, MAX_TAGS + 1, n)
    choice = _topk_without_replacement(rng, n, np.ones(TAGS_PER_CATEGORY), MAX_TAGS)
    mask = np.arange(MAX_TAGS)[None, :] < n_tags[:, None]
    tag_codes = (category[:, None] * TAGS_PER_CATEGORY + choice)[mask]
    vocab = tuple(t for c in CATEGORIES for t in TAGS[c])
    tags = _list_array(np.concatenate([[0], np.cumsum(n_tags)]), _string_array(vocab, tag_codes))

    emb = w.centroids[category] + EMBEDDING_NOISE * rng.standard_normal((n, EMBEDDING_DIM))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    embedding = _list_array(np.arange(0, EMBEDDING_DIM * (n + 1), EMBEDDING_DIM), pa.array(emb.ravel()))

    return pa.table([
        pa.array(np.arange(lo + 1, lo + n + 1, dtype=np.int64)),
        pa.array(w.creator_ids[lo:lo + n]),
        _string_array(CATEGORIES, category),
        tags,
        _string_array(MEDIA_TYPES, media),
        _timestamps(w.item_created_ms[lo:lo + n] * 1000),
        embedding,
    ], schema=ITEMS_SCHEMA)


def iter_item_chunks(spec: GenerationSpec) -> Iterator[pa.Table]:
    for chunk in range(spec.item_chunks):
        yield item_chunk(spec, chunk)


def items_table(spec: GenerationSpec) -> pa.Table:
    return pa.concat_tables(iter_item_chunks(spec))


# ---- events ------------------------------------------------------------------------------

@dataclass
class _Events:
    """Columns of events in the making, as codes."""

    user: np.ndarray
    item: np.ndarray
    etype: np.ndarray
    ts_ms: np.ndarray
    dwell: np.ndarray
    client: np.ndarray
    session: np.ndarray  # uint64, printed as 16 hex digits

    def take(self, idx: np.ndarray) -> _Events:
        return _Events(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))

    @staticmethod
    def concat(parts: list[_Events]) -> _Events:
        return _Events(*(np.concatenate([getattr(p, f) for p in parts]) for f in _Events.__dataclass_fields__))


def _diurnal_minute_weights() -> np.ndarray:
    minutes = np.arange(1440)
    return _probabilities(1.0 + 0.6 * np.sin(2 * np.pi * (minutes / 60.0 - 9.0) / 24.0))


def _day_events(spec: GenerationSpec, day: int) -> _Events:
    """Sessions that start on day ``day`` of the window, with all their events (some spill past midnight)."""
    w = world(spec)
    rng = _rng(spec.seed, _EVENTS, day)
    views_and_engagements = MEAN_VIEWS_PER_SESSION * (1 + sum(ENGAGEMENT_RATES.values()))
    n_sessions = max(1, round(spec.scale.events_per_day / views_and_engagements))

    day_start = spec.start_ms + day * _DAY_MS
    minute = rng.choice(1440, n_sessions, p=_diurnal_minute_weights())
    t0 = day_start + minute * 60_000 + rng.integers(0, 60_000, n_sessions)
    user = rng.choice(len(w.user_ids), n_sessions, p=_probabilities(w.activity))
    random_client = rng.choice(len(CLIENTS), n_sessions, p=_probabilities(CLIENT_WEIGHTS))
    client = np.where(rng.random(n_sessions) < PRIMARY_CLIENT_SHARE, w.primary_client[user], random_client)
    session_id = rng.integers(0, 2**63, n_sessions, dtype=np.int64).astype(np.uint64)
    n_views = rng.geometric(1.0 / MEAN_VIEWS_PER_SESSION, n_sessions)

    sess = np.repeat(np.arange(n_sessions), n_views)
    v_user = user[sess]
    n = len(sess)
    slot = (rng.random(n) * w.n_preferred[v_user]).astype(np.int64)
    category = np.where(rng.random(n) < PREFERRED_SHARE, w.preferred[v_user, slot],
                        rng.choice(len(CATEGORIES), n, p=CATEGORY_WEIGHTS))
    item = w.sample_items(rng, category, t0[sess])

    engaged = {t: rng.random(n) < np.minimum(rate * w.propensity[v_user], 0.9) for t, rate in ENGAGEMENT_RATES.items()}
    any_engaged = np.logical_or.reduce(list(engaged.values()))
    medians = np.array([DWELL_MEDIAN_MS[m] for m in MEDIA_TYPES], dtype=np.float64)[w.media[item]]
    dwell = medians * rng.lognormal(0.0, DWELL_SIGMA, n) * np.where(any_engaged, ENGAGED_DWELL_FACTOR, 1.0)
    dwell = np.clip(dwell, MIN_DWELL_MS, MAX_DWELL_MS).astype(np.int64)

    step = dwell + rng.exponential(MEAN_GAP_MS, n).astype(np.int64) + 1
    ends = np.cumsum(step)
    first = np.concatenate([[0], np.cumsum(n_views)[:-1]])
    offset = ends - step - (ends - step)[first][sess]  # time since the session's first view
    view_ts = t0[sess] + offset

    parts = [_Events(v_user, item, np.zeros(n, np.int8), view_ts, dwell, client[sess], session_id[sess])]
    for t, flags in engaged.items():
        rows = np.flatnonzero(flags)
        into = np.maximum(1, (dwell[rows] * rng.uniform(0.3, 1.0, len(rows))).astype(np.int64))
        parts.append(_Events(v_user[rows], item[rows], np.full(len(rows), EVENT_TYPES.index(t), np.int8),
                             view_ts[rows] + into, into, client[sess][rows], session_id[sess][rows]))
    return _Events.concat(parts)


def _hex_strings(raw: np.ndarray, dashes: tuple[int, ...] = ()) -> pa.Array:
    """Lower-case hex of each row of a (n, k) uint8 array, with '-' before the given byte positions."""
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    n, k = raw.shape
    width = 2 * k + len(dashes)
    out = np.full((n, width), ord("-"), dtype=np.uint8)
    pos = 2 * np.arange(k) + np.searchsorted(np.array(dashes, dtype=np.int64), np.arange(k), side="right")
    out[:, pos] = digits[raw >> 4]
    out[:, pos + 1] = digits[raw & 0x0F]
    offsets = np.arange(0, width * (n + 1), width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(out.tobytes()))


def format_timestamps(ts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Vectorised ``ingestion.events.format_timestamp`` for millisecond timestamps."""
    us = np.asarray(pc.cast(ts, pa.int64()).to_numpy(zero_copy_only=False))
    text = pa.array(np.datetime_as_string((us // 1000).astype("datetime64[ms]"), unit="ms"))
    text = pc.replace_substring_regex(text, r"\.000$", "")
    text = pc.replace_substring_regex(text, r"(\.\d*?)0+$", r"\1")
    return pc.binary_join_element_wise(text, "Z", "")


def derive_event_ids(user: pa.Array, item: pa.Array, event_type: pa.Array, ts_text: pa.Array,
                     session: pa.Array) -> pa.Array:
    """``ingestion.events.derive_event_id`` for whole columns: SHA-1 per row, the rest in numpy."""
    names = pc.binary_join_element_wise(
        pc.cast(user, pa.string()), pc.cast(item, pa.string()), event_type, ts_text, session, "|")
    prefix = EVENT_NAMESPACE.bytes
    sha1 = hashlib.sha1
    digests = b"".join([sha1(prefix + name).digest() for name in pc.cast(names, pa.binary()).to_pylist()])
    raw = np.frombuffer(digests, dtype=np.uint8).reshape(-1, 20)[:, :16].copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x50
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    return _hex_strings(raw, dashes=(4, 6, 8, 10))


def _events_to_table(ev: _Events, world_: World) -> pa.Table:
    session = _hex_strings(ev.session.astype(">u8").view(np.uint8).reshape(-1, 8))
    user = pa.array(world_.user_ids[ev.user])
    item = pa.array(ev.item + 1)
    etype = _string_array(EVENT_TYPES, ev.etype)
    ts = _timestamps(ev.ts_ms * 1000)
    return pa.table([
        derive_event_ids(user, item, etype, format_timestamps(ts), session),
        user, item, etype, ts,
        pa.array(ev.dwell.astype(np.int32)),
        _string_array(DEVICES, np.array([DEVICES.index(d) for d, _ in CLIENTS])[ev.client]),
        _string_array(PLATFORMS, np.array([PLATFORMS.index(p) for _, p in CLIENTS])[ev.client]),
        session,
    ], schema=EVENT_SCHEMA)


def iter_event_chunks(spec: GenerationSpec) -> Iterator[pa.Table]:
    """One table per day of the window, in time order; sessions spilling past midnight carry over."""
    w = world(spec)
    carry: _Events | None = None
    for day in range(spec.window_days):
        ev = _day_events(spec, day)
        if carry is not None:
            ev = _Events.concat([carry, ev])
        cutoff = min(spec.start_ms + (day + 1) * _DAY_MS, spec.end_ms)
        late = ev.ts_ms >= cutoff
        carry = ev.take(np.flatnonzero(late)) if day + 1 < spec.window_days else None
        ev = ev.take(np.flatnonzero(~late))
        yield _events_to_table(ev.take(np.argsort(ev.ts_ms, kind="stable")), w)


def events_table(spec: GenerationSpec) -> pa.Table:
    return pa.concat_tables(iter_event_chunks(spec))


# ---- event JSON --------------------------------------------------------------------------

def event_json(events: pa.Table) -> pa.Array:
    """The wire JSON of each event (the seed's shape plus ``event_id``); every value is safe to splice."""
    def text(name: str) -> pa.Array:
        return pc.cast(events[name], pa.string())

    return pc.binary_join_element_wise(
        '{"user_id": "', text("user_id"), '", "item_id": "', text("item_id"),
        '", "event_type": "', events["event_type"], '", "timestamp": "', format_timestamps(events["timestamp"]),
        '", "context": {"device": "', events["device"], '", "platform": "', events["platform"],
        '", "session_id": "', events["session_id"], '"}, "dwell_time_ms": ', text("dwell_time_ms"),
        ', "event_id": "', events["event_id"], '"}', "",
    )


def event_keys(events: pa.Table) -> pa.Array:
    """Kafka key of each event: the user id as ASCII digits."""
    return pc.cast(pc.cast(events["user_id"], pa.string()), pa.binary())
