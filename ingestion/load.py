"""``feedstore load users|items FILE…``: bulk import through the stream's validation and upsert.

Files are JSON lines in the seed's shapes (``.jsonl``, ``.ndjson``, ``.json``), Parquet or CSV
(list cells as JSON arrays; users may be flat: ``age_range, country, language, categories,
following`` columns). Each file is read in chunks; a chunk is validated (``ingestion.records``),
upserted in one transaction (``ingestion.upserts``: newest version wins, a second run changes
nothing) and, for items, its current embedding versions are written to the lake under a name
derived from the file's content and the chunk, so a re-run rewrites the same objects. Refused
rows go to the rejects file (JSON lines: file, row, reason, detail, record).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from feedstore.db import connect
from feedstore.logs import get_logger
from feedstore.settings import Settings, get_settings
from ingestion.catalog_stream import embedding_versions, write_versions
from ingestion.records import ITEMS, USERS, Kind, RecordValidator, validate_table
from ingestion.upserts import Upserted, upsert

log = get_logger("feedstore.load")
CHUNK_ROWS = 50_000
LINE_SUFFIXES = (".jsonl", ".ndjson", ".json")
_USER_FLAT = {"age_range": "demographics", "country": "demographics", "language": "demographics",
              "categories": "preferences", "following": "preferences"}
_JSON_CELLS = {"tags", "content_embedding", "metadata", "categories", "following", "demographics", "preferences"}

Progress = Callable[[str, int, int], None]
"""(file, units done so far, total units): bytes for line and CSV files, rows for Parquet."""


class LoadError(ValueError):
    """A file cannot be read as asked (missing, unknown format, unreadable): nothing of it loaded."""


@dataclass
class LoadSummary:
    kind: str
    files: int = 0
    rows: int = 0
    rejected: int = 0
    upserted: Upserted = field(default_factory=Upserted)
    embedding_objects: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        u = self.upserted
        return {"kind": self.kind, "files": self.files, "rows": self.rows, "inserted": u.inserted,
                "updated": u.updated, "unchanged": u.unchanged, "stale": u.stale, "rejected": self.rejected,
                "reasons": dict(sorted(self.reasons.items())), "embedding_objects": self.embedding_objects}


def file_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(LINE_SUFFIXES):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".csv"):
        return "csv"
    raise LoadError(f"{path}: unknown format (expected .jsonl/.ndjson/.json, .parquet or .csv)")


def content_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()[:16]


# ---- readers: each yields (records, payload kind, units done) ------------------------------

def _lines(path: Path, chunk_rows: int) -> Iterator[tuple[Any, str, int]]:
    with open(path, "rb") as f:
        chunk: list[bytes] = []
        for line in f:
            line = line.strip()
            if line:
                chunk.append(line)
            if len(chunk) >= chunk_rows:
                yield chunk, "json", f.tell()
                chunk = []
        yield chunk, "json", f.tell()


def _nest_user(row: dict) -> dict:
    """A flat user row (CSV, Parquet) in the seed's nested shape; nested rows pass unchanged."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        group = _USER_FLAT.get(name)
        if group is None:
            out[name] = value
        elif value is not None:
            out.setdefault(group, {})[name] = value
    return out


def _clean(row: dict, kind: Kind, csv: bool) -> dict:
    row = {k: v for k, v in row.items() if v is not None and not (csv and v == "")}
    if csv:
        for name in _JSON_CELLS & row.keys():
            try:
                row[name] = json.loads(row[name])
            except ValueError:
                pass  # left as text: validation names the field
    return _nest_user(row) if kind is USERS else row


def _parquet(path: Path, chunk_rows: int, kind: Kind) -> Iterator[tuple[Any, str, int]]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise LoadError(f"{path}: not a readable Parquet file: {exc}") from exc
    done = 0
    for batch in pf.iter_batches(batch_size=chunk_rows):
        done += batch.num_rows
        table = pa.Table.from_batches([batch])
        if kind is USERS:
            yield [_clean(r, kind, False) for r in table.to_pylist()], "objects", done
        else:
            yield table, "arrow", done


def _csv(path: Path, chunk_rows: int, kind: Kind) -> Iterator[tuple[Any, str, int]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            names = next(csv.reader(f), [])
        reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=8 << 20),
                                convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                                     strings_can_be_null=False))
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LoadError(f"{path}: not a readable CSV file: {exc}") from exc
    size, done = path.stat().st_size, 0
    for batch in reader:
        table = pa.Table.from_batches([batch])
        table = pa.table({n: table.column(n).cast(pa.string()) for n in table.column_names})
        done += table.nbytes
        yield [_clean(r, kind, True) for r in table.to_pylist()], "objects", min(done, size)


def _chunks(path: Path, fmt: str, kind: Kind, chunk_rows: int) -> Iterator[tuple[Any, str, int]]:
    if fmt == "jsonl":
        return _lines(path, chunk_rows)
    if fmt == "parquet":
        return _parquet(path, chunk_rows, kind)
    return _csv(path, chunk_rows, kind)


def _total(path: Path, fmt: str) -> int:
    return pq.ParquetFile(path).metadata.num_rows if fmt == "parquet" else path.stat().st_size


def _reject_lines(out: TextIO, path: Path, first_row: int, records: list, result) -> None:
    for i, reason in result.rejected:
        record = records.slice(i, 1).to_pylist()[0] if isinstance(records, pa.Table) else records[i]
        if isinstance(record, bytes):
            record = record.decode("utf-8", "replace")
        out.write(json.dumps({"file": str(path), "row": first_row + i + 1, "reason": str(reason),
                              "detail": result.errors.get(i), "record": record}, default=str) + "\n")


def load(kind: Kind | str, paths: list[Path], rejects: Path, settings: Settings | None = None,
         progress: Progress | None = None, chunk_rows: int = CHUNK_ROWS) -> LoadSummary:
    """Loads every file; a refused row never stops the others. Raises ``LoadError`` before
    loading anything when a file is missing or of an unknown format."""
    kind = {"items": ITEMS, "users": USERS}[kind] if isinstance(kind, str) else kind
    s = (settings or get_settings()).as_component("ingest")  # a bulk path of ingestion, with its grants
    formats = []
    for path in paths:
        if not path.is_file():
            raise LoadError(f"{path}: no such file")
        formats.append(file_format(path))
    validator = RecordValidator(kind)
    summary = LoadSummary(kind.name)
    rejects.parent.mkdir(parents=True, exist_ok=True)
    with connect(s) as conn, open(rejects, "w", encoding="utf-8") as out:
        conn.autocommit = True
        for path, fmt in zip(paths, formats):
            digest, total, row = content_digest(path), _total(path, fmt), 0
            for part, (records, mode, done) in enumerate(_chunks(path, fmt, kind, chunk_rows)):
                if mode == "json":
                    result = validator.validate(records)
                elif mode == "arrow":
                    result = validate_table(validator, records)
                else:
                    result = validator.validate_objects(records)
                done_upsert = upsert(conn, kind, result.valid)
                summary.upserted.add(done_upsert)
                if kind is ITEMS and done_upsert.current.size:
                    current = result.valid.take(pa.array(done_upsert.current))
                    summary.embedding_objects += len(write_versions(embedding_versions(current),
                                                                    f"load-{digest}-{part:05d}", s))
                _reject_lines(out, path, row, records, result)
                for _, reason in result.rejected:
                    summary.reasons[str(reason)] = summary.reasons.get(str(reason), 0) + 1
                summary.rejected += len(result.rejected)
                summary.rows += len(records) if mode != "arrow" else records.num_rows
                row += len(records) if mode != "arrow" else records.num_rows
                if progress:
                    progress(str(path), done, total)
            summary.files += 1
    log.info("load_finished", **summary.as_dict())
    return summary
