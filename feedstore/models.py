"""Model checkpoints and experiment results: the files under ``models/<name>/<version>/`` and
``experiments/<experiment>/<run>/`` on S3, and one ``model_metadata`` row per model version with
its metrics, parameters, the training set it was trained on, the code version and a SHA-256 per
file, so that a download can prove it got the bytes that were registered.

Training code calls ``register_model`` / ``log_experiment``; ``feedstore models …`` and
``feedstore experiments log`` are the same from the shell.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
from boto3.s3.transfer import TransferConfig
from psycopg.types.json import Jsonb

from feedstore.contract.lake import EXPERIMENTS, MODELS
from feedstore.db import connect
from feedstore.provenance import code_version
from feedstore.s3 import s3_client, s3_uri
from feedstore.settings import Settings, get_settings

PART_BYTES = 8 * 1024 * 1024
"""Files larger than this go up in parts of this size (S3 multipart upload)."""


class ModelRegistryError(ValueError):
    """Something the caller can fix: a bad name, a version that exists, an unknown training set."""


class ChecksumMismatch(RuntimeError):
    """A downloaded file is not the one that was registered."""


@dataclass(frozen=True)
class ModelRecord:
    model_id: int
    model_name: str
    version: str
    checkpoint_uri: str
    experiment_uri: str | None
    metrics: dict[str, Any]
    params: dict[str, Any]
    training_dataset: str | None
    """``name/ds`` of the training set, as ``--training-dataset`` takes it."""
    files: dict[str, str] = field(default_factory=dict)
    code_version: str | None = None
    created_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _name(value: str, what: str) -> str:
    if not value or "/" in value or value.startswith(".") or len(value) > 200 or not value.isprintable():
        raise ModelRegistryError(f"bad {what} {value!r}: a non-empty name without '/'")
    return value


def _files(path: Path) -> dict[str, Path]:
    """Relative name -> file: the file itself, or every file below a directory."""
    if not path.exists():
        raise ModelRegistryError(f"no checkpoint at {path}")
    if path.is_file():
        return {path.name: path}
    files = {p.relative_to(path).as_posix(): p for p in sorted(path.rglob("*")) if p.is_file()}
    if not files:
        raise ModelRegistryError(f"checkpoint directory {path} holds no file")
    return files


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def model_prefix(model_name: str, version: str) -> str:
    return f"{MODELS}/{_name(model_name, 'model name')}/{_name(version, 'version')}/"


def _training_dataset_id(conn: psycopg.Connection, ref: str) -> int:
    name, sep, ds = ref.rpartition("/")
    try:
        day = date.fromisoformat(ds)
    except ValueError:
        day = None
    if not sep or not name or day is None:
        raise ModelRegistryError(f"--training-dataset wants NAME/YYYY-MM-DD, got {ref!r}")
    row = conn.execute("SELECT dataset_id FROM training_datasets WHERE name = %s AND ds = %s", (name, day)).fetchone()
    if row is None:
        raise ModelRegistryError(f"no training set {ref} is registered")
    return int(row[0])


def register_model(model_name: str, version: str, checkpoint: Path | str, *, metrics: dict[str, Any] | None = None,
                   params: dict[str, Any] | None = None, training_dataset: str | None = None,
                   experiment: str | None = None, overwrite: bool = False, settings: Settings | None = None,
                   part_bytes: int = PART_BYTES) -> ModelRecord:
    """Upload a checkpoint (a file or a directory) and record the version. An existing version is
    refused unless ``overwrite``; nothing is uploaded before the row's inputs are known to be good."""
    s = settings or get_settings()
    prefix = model_prefix(model_name, version)
    metrics, params = metrics or {}, params or {}
    try:
        json.dumps(metrics), json.dumps(params)
    except (TypeError, ValueError) as exc:
        raise ModelRegistryError(f"metrics and params must be JSON: {exc}") from exc
    files = _files(Path(checkpoint))
    with connect(s) as conn:
        dataset_id = _training_dataset_id(conn, training_dataset) if training_dataset else None
        exists = conn.execute("SELECT 1 FROM model_metadata WHERE model_name = %s AND version = %s",
                              (model_name, version)).fetchone()
    if exists and not overwrite:
        raise ModelRegistryError(f"model {model_name} version {version} is registered already (--overwrite replaces it)")
    checksums = {name: sha256(path) for name, path in files.items()}
    _upload(files, prefix, s, part_bytes)
    checkpoint_uri = s3_uri(prefix, s)
    experiment_uri = None
    if experiment is not None:
        experiment_uri = log_experiment(experiment, f"{model_name}-{version}", metrics, params=params,
                                        extra={"model_name": model_name, "version": version,
                                               "checkpoint_uri": checkpoint_uri}, settings=s)
    with connect(s) as conn:
        conn.execute(
            "INSERT INTO model_metadata (model_name, version, checkpoint_uri, experiment_uri, metrics, params, "
            "training_dataset_id, files, code_version) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (model_name, version) DO UPDATE SET checkpoint_uri = EXCLUDED.checkpoint_uri, "
            "experiment_uri = EXCLUDED.experiment_uri, metrics = EXCLUDED.metrics, params = EXCLUDED.params, "
            "training_dataset_id = EXCLUDED.training_dataset_id, files = EXCLUDED.files, "
            "code_version = EXCLUDED.code_version, created_at = now()",
            (model_name, version, checkpoint_uri, experiment_uri, Jsonb(metrics), Jsonb(params), dataset_id,
             Jsonb(checksums), code_version()),
        )
    return get_model(model_name, version, s)


def _upload(files: dict[str, Path], prefix: str, s: Settings, part_bytes: int) -> None:
    client = s3_client(s)
    config = TransferConfig(multipart_threshold=part_bytes, multipart_chunksize=part_bytes)
    stale = {o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=s.s3.bucket, Prefix=prefix)
             for o in page.get("Contents", [])}
    for name, path in files.items():
        client.upload_file(str(path), s.s3.bucket, prefix + name, Config=config)
        stale.discard(prefix + name)
    for key in sorted(stale):  # an overwrite leaves no file of the old version behind
        client.delete_object(Bucket=s.s3.bucket, Key=key)


_SELECT = (
    "SELECT m.model_id, m.model_name, m.version, m.checkpoint_uri, m.experiment_uri, m.metrics, m.params, "
    "t.name || '/' || t.ds::text, m.files, m.code_version, m.created_at::text "
    "FROM model_metadata m LEFT JOIN training_datasets t ON t.dataset_id = m.training_dataset_id "
)


def _record(row: tuple) -> ModelRecord:
    return ModelRecord(int(row[0]), row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9], row[10])


def get_model(model_name: str, version: str, settings: Settings | None = None) -> ModelRecord:
    with connect(settings) as conn:
        row = conn.execute(_SELECT + "WHERE m.model_name = %s AND m.version = %s", (model_name, version)).fetchone()
    if row is None:
        raise ModelRegistryError(f"no model {model_name} version {version} is registered")
    return _record(row)


def list_models(model_name: str | None = None, training_dataset: str | None = None,
                settings: Settings | None = None) -> list[ModelRecord]:
    """Every registered version, newest first; by name and/or by the training set (``name/ds``)."""
    with connect(settings) as conn:
        rows = conn.execute(
            _SELECT + "WHERE (%(name)s::text IS NULL OR m.model_name = %(name)s) "
            "AND (%(ds)s::text IS NULL OR t.name || '/' || t.ds::text = %(ds)s) ORDER BY m.created_at DESC, m.model_id DESC",
            {"name": model_name, "ds": training_dataset}).fetchall()
    return [_record(r) for r in rows]


def download_checkpoint(model_name: str, version: str, dest: Path | str, settings: Settings | None = None) -> Path:
    """Every file of the version into ``dest``, each checked against its registered SHA-256."""
    s = settings or get_settings()
    record = get_model(model_name, version, s)
    prefix, dest = model_prefix(model_name, version), Path(dest)
    client = s3_client(s)
    for name, expected in sorted(record.files.items()):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(s.s3.bucket, prefix + name, str(target))
        if sha256(target) != expected:
            target.unlink()
            raise ChecksumMismatch(f"{prefix}{name} is not the file registered for {model_name} {version}")
    return dest


def log_experiment(experiment: str, run: str, metrics: dict[str, Any], *, params: dict[str, Any] | None = None,
                   artefacts: list[Path] | None = None, extra: dict[str, Any] | None = None,
                   settings: Settings | None = None) -> str:
    """``experiments/<experiment>/<run>/results.json`` (metrics, params) and the artefacts beside it."""
    s = settings or get_settings()
    prefix = f"{EXPERIMENTS}/{_name(experiment, 'experiment')}/{_name(run, 'run')}/"
    client = s3_client(s)
    names = []
    for path in artefacts or []:
        for name, file in _files(Path(path)).items():
            client.upload_file(str(file), s.s3.bucket, prefix + "artefacts/" + name)
            names.append(name)
    results = {"experiment": experiment, "run": run, "metrics": metrics, "params": params or {},
               "artefacts": names, "code_version": code_version(), **(extra or {})}
    client.put_object(Bucket=s.s3.bucket, Key=prefix + "results.json", Body=json.dumps(results, indent=2).encode(),
                      ContentType="application/json")
    return s3_uri(prefix, s)
