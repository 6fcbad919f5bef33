"""The validation rules as data: vocabularies (from ``vocabularies.toml``) and bounds shared by the consumer's validator,
the synthetic generator and the Great Expectations suites, so they cannot drift apart. The
feature views and their columns are in ``feedstore.contract.features``."""

from __future__ import annotations

from enum import StrEnum

from feedstore.contract.vocabularies import current as _vocabularies  # noqa: E402

EVENT_TYPES: tuple[str, ...] = ("view", "like", "share", "comment")
ENGAGEMENT_TYPES: tuple[str, ...] = ("like", "share", "comment")
# The open vocabularies, from the one editable file (feedstore/contract/vocabularies.toml) as this
# process started; code that builds validators or suites asks ``vocabularies.current()`` instead.
_VOCAB = _vocabularies()
DEVICES: tuple[str, ...] = _VOCAB.devices
PLATFORMS: tuple[str, ...] = _VOCAB.platforms
MEDIA_TYPES: tuple[str, ...] = _VOCAB.media_types
CATEGORIES: tuple[str, ...] = _VOCAB.categories
AGE_RANGES: tuple[str, ...] = _VOCAB.age_ranges
COUNTRIES: tuple[str, ...] = _VOCAB.countries
LANGUAGES: tuple[str, ...] = _VOCAB.languages

BIGINT_MAX = 2**63 - 1
MIN_ID = 1

MAX_DWELL_MS = 4 * 60 * 60 * 1000
MAX_EVENT_AGE_SECONDS = 3600
MAX_FUTURE_SKEW_SECONDS = 300
MAX_SESSION_ID_LENGTH = 128

EMBEDDING_DIM = 32
LONG_DWELL_MS = 10_000
SHORT_DWELL_MS = 2_000

# Training samples and their label balance (positives / all rows).
SAMPLE_TYPES: tuple[str, ...] = ("positive", "random_negative", "hard_negative")
POSITIVE_SAMPLE_TYPE = "positive"
MIN_POSITIVE_FRACTION = 0.05
MAX_POSITIVE_FRACTION = 0.75

# Float tolerance for distributions that must sum to 1.
DISTRIBUTION_SUM_TOLERANCE = 1e-4

# Ingestion (consumer validator, DLQ headers, GX agreement tests).
MAX_MESSAGE_BYTES = 64 * 1024
# A dead letter carries at most this much of the message (the rest is still at its source offset),
# so it fits a DLQ topic with the broker's default limits whatever the producer sent.
DLQ_MAX_VALUE_BYTES = MAX_MESSAGE_BYTES
DLQ_MAX_KEY_BYTES = 1024
REPLAY_MAX_EVENT_AGE_SECONDS = 10 * 366 * 24 * 3600
REQUIRED_EVENT_FIELDS: tuple[str, ...] = ("user_id", "item_id", "event_type", "timestamp")
OPTIONAL_EVENT_FIELDS: tuple[str, ...] = ("context", "dwell_time_ms", "event_id")
CONTEXT_FIELDS: tuple[str, ...] = ("device", "platform", "session_id")
HOT_COUNTER_TTL_SECONDS = 3600

# Catalog and profile records (topics item-catalog / user-profiles, `feedstore load`).
MIN_CREATED_AT = "1900-01-01T00:00:00+00:00"
"""The earliest ``created_at`` (and ``updated_at``) accepted; items from before 1970 are fine."""
MAX_RECORD_FUTURE_SKEW_SECONDS = MAX_FUTURE_SKEW_SECONDS
"""How far ahead of its arrival a record's ``created_at``/``updated_at`` may be."""
MAX_TAGS = 64
MAX_TAG_LENGTH = 100
MAX_FOLLOWING = 10_000
REQUIRED_ITEM_FIELDS: tuple[str, ...] = ("item_id", "creator_id", "media_type", "created_at")
REQUIRED_USER_FIELDS: tuple[str, ...] = ("user_id", "created_at")
UNKNOWN_GRACE_SECONDS = 600
"""How long an event for an item or user not seen yet waits for it before ``unknown_*``."""


class Reason(StrEnum):
    """Why an event was refused; the value travels in the DLQ ``reason`` header.

    ``DUPLICATE`` is not a refusal: the event is valid and stored once, so it never goes to
    the DLQ; it is listed so a labelled line can say "dropped as a repeat".
    """

    TOO_LARGE = "too_large"            # message over MAX_MESSAGE_BYTES
    BAD_ENCODING = "bad_encoding"      # not UTF-8
    BAD_JSON = "bad_json"              # not parseable JSON
    NOT_AN_OBJECT = "not_an_object"    # JSON, but an array / number / string / null
    MISSING_FIELD = "missing_field"    # a REQUIRED_EVENT_FIELDS entry absent or null
    WRONG_TYPE = "wrong_type"          # a field of the wrong JSON type
    BAD_ID = "bad_id"                  # user_id / item_id not a digit string or integer
    ID_OUT_OF_RANGE = "id_out_of_range"  # id outside [MIN_ID, BIGINT_MAX]
    BAD_EVENT_ID = "bad_event_id"      # event_id present but not a UUID
    BAD_TIMESTAMP = "bad_timestamp"    # not ISO-8601 with a zone
    OUTSIDE_PARTITION_WINDOW = "outside_partition_window"  # its day is outside the days the consumer may create
    TOO_OLD = "too_old"                # older than the age bound
    IN_FUTURE = "in_future"            # beyond the future skew
    BAD_EVENT_TYPE = "bad_event_type"  # not in EVENT_TYPES
    BAD_DWELL = "bad_dwell"            # negative or over MAX_DWELL_MS
    BAD_CONTEXT = "bad_context"        # context not an object, or a value of the wrong kind
    UNKNOWN_USER = "unknown_user"
    UNKNOWN_ITEM = "unknown_item"
    BAD_VOCABULARY = "bad_vocabulary"  # a category, country, ... not in vocabularies.toml (``error`` names it)
    BAD_EMBEDDING = "bad_embedding"    # content_embedding not EMBEDDING_DIM finite numbers
    BAD_RECORD = "bad_record"          # a catalog/profile field out of its bounds (``error`` names it)
    INTERNAL_ERROR = "internal_error"  # validating it raised; the DLQ ``error`` header names the exception
    CRASHED_CONSUMER = "crashed_consumer"  # the consumer died on it alone, repeatedly; set aside unread
    DUPLICATE = "duplicate"


DLQ_REASONS: tuple[Reason, ...] = tuple(r for r in Reason if r is not Reason.DUPLICATE)
RECORD_ONLY_REASONS: tuple[Reason, ...] = (Reason.BAD_VOCABULARY, Reason.BAD_EMBEDDING, Reason.BAD_RECORD)
"""Reasons only catalog and profile records earn (an event's bad device is ``bad_context``)."""
