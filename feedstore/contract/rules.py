"""The validation rules as data: vocabularies and bounds shared by the consumer's validator,
the synthetic generator and the Great Expectations suites, so they cannot drift apart. The
feature views and their columns are in ``feedstore.contract.features``."""

from __future__ import annotations

from enum import StrEnum

EVENT_TYPES: tuple[str, ...] = ("view", "like", "share", "comment")
ENGAGEMENT_TYPES: tuple[str, ...] = ("like", "share", "comment")
DEVICES: tuple[str, ...] = ("mobile", "desktop", "tablet")
PLATFORMS: tuple[str, ...] = ("ios", "android", "web")
MEDIA_TYPES: tuple[str, ...] = ("video", "image", "text")
CATEGORIES: tuple[str, ...] = (
    "tech", "sports", "music", "news", "gaming", "food", "travel", "fashion",
    "science", "movies", "art", "finance", "health", "education", "comedy", "pets",
)
AGE_RANGES: tuple[str, ...] = ("13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")
COUNTRIES: tuple[str, ...] = ("US", "GB", "IN", "BR", "DE", "FR", "JP", "CA", "MX", "ES", "IT", "AU", "NG", "ID")
LANGUAGES: tuple[str, ...] = ("en", "es", "pt", "de", "fr", "ja", "hi", "it", "id")

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
    TOO_OLD = "too_old"                # older than the age bound
    IN_FUTURE = "in_future"            # beyond the future skew
    BAD_EVENT_TYPE = "bad_event_type"  # not in EVENT_TYPES
    BAD_DWELL = "bad_dwell"            # negative or over MAX_DWELL_MS
    BAD_CONTEXT = "bad_context"        # context not an object, or a value of the wrong kind
    UNKNOWN_USER = "unknown_user"
    UNKNOWN_ITEM = "unknown_item"
    INTERNAL_ERROR = "internal_error"  # validating it raised; the DLQ ``error`` header names the exception
    CRASHED_CONSUMER = "crashed_consumer"  # the consumer died on it alone, repeatedly; set aside unread
    DUPLICATE = "duplicate"


DLQ_REASONS: tuple[Reason, ...] = tuple(r for r in Reason if r is not Reason.DUPLICATE)
