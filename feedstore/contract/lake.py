"""The lake's layout on S3, in one place: every prefix the project writes, and how a daily
partition and its objects are named. Reading and writing live in ``orchestration.lake`` and the
sinks; they take the names from here."""

from __future__ import annotations

from datetime import date

LANDED = "events"
"""Events as the consumer landed them: ``events/dt=<day>/hour=<hh>/<topic>-p<partition>-….parquet``."""
ARCHIVE = "archive/activity"
"""The daily archive: the landed events of a day, compacted and deduplicated."""
CATALOG_ITEMS = "catalog/items"
"""Catalog snapshots: the full catalog once, then the items changed each day (``_manifest.json`` says which)."""
FEATURES = "features"
"""Feature tables, one root per view: ``features/<view>/dt=<day>/`` (the Feast sources)."""
SNAPSHOTS = "snapshots"
"""Drops of the user's own systems: ``snapshots/items/dt=<day>/`` carries the content embeddings."""
EMBEDDINGS = "embeddings/items"
"""Content-embedding versions, each with the time it became valid: ``embeddings/items/dt=<day>/…``
(item_id, content_embedding, valid_from; ``dt`` is the day of valid_from). The stream and
``feedstore load`` write here; readers take, per item, the newest version valid at their time."""
TRAINING = "training"
MODELS = "models"
EXPERIMENTS = "experiments"
PART = "part-00000.parquet"
"""The single object of a daily partition written by the pipeline."""
MANIFEST = "_manifest.json"

PREFIXES: tuple[str, ...] = (LANDED, ARCHIVE, CATALOG_ITEMS, FEATURES, SNAPSHOTS, EMBEDDINGS, TRAINING, MODELS, EXPERIMENTS)


def day_prefix(root: str, day: date) -> str:
    return f"{root}/dt={day.isoformat()}/"


def feature_root(view: str) -> str:
    return f"{FEATURES}/{view}"


def feature_prefix(view: str, day: date) -> str:
    """One day of a feature table, where the view's Feast source reads it."""
    return day_prefix(feature_root(view), day)


def feature_glob(view: str) -> str:
    """Every day of a view's table as a key glob (DuckDB and Feast need a glob, not a bare prefix)."""
    return f"{feature_root(view)}/dt=*/*.parquet"
