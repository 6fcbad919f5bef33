"""One fingerprint of a retrieval result, whatever engine produced it.

DuckDB and Spark return the same rows in different orders and types: pandas ``Int64`` or
``float64`` with ``NaN`` for a missing int, numpy arrays or lists for a list feature, ``NaT`` or
``None``. ``digest`` hashes each cell as a canonical JSON value (numbers as doubles, missing as
null, timestamps in UTC) with columns by name and rows sorted, so two frames agree exactly when
they hold the same values."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd


def canonical(value: Any) -> Any:
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, (np.ndarray, list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
        return None if math.isnan(number) else number
    if isinstance(value, (pd.Timestamp, datetime, np.datetime64)):
        ts = pd.Timestamp(value)
        return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).isoformat()
    return str(value)


def rows(frame: pd.DataFrame) -> list[str]:
    """Each row as canonical JSON (columns by name), sorted."""
    columns = sorted(frame.columns)
    return sorted(json.dumps([canonical(v) for v in row], separators=(",", ":"))
                  for row in frame[columns].itertuples(index=False, name=None))


def digest(frame: pd.DataFrame) -> str:
    h = hashlib.sha256(json.dumps(sorted(frame.columns)).encode())
    for row in rows(frame):
        h.update(row.encode())
        h.update(b"\n")
    return h.hexdigest()
