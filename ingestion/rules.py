"""The validation rules as data: vocabularies and bounds shared by the consumer's validator,
the synthetic generator and the Great Expectations suites, so they cannot drift apart."""

from __future__ import annotations

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
