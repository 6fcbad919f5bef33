"""Model metadata: checkpoints under ``models/``, experiment results under ``experiments/`` on
S3, and one row per model version in ``model_metadata`` pointing at both."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb

from feedstore.db import connect
from feedstore.s3 import s3_client, s3_uri
from feedstore.settings import Settings, get_settings
from orchestration import lake


@dataclass(frozen=True)
class ModelRecord:
    model_id: int
    model_name: str
    version: str
    checkpoint_uri: str
    experiment_uri: str | None


def _check_name(value: str, what: str) -> str:
    if not value or "/" in value or value.startswith(".") or len(value) > 200:
        raise ValueError(f"bad {what} {value!r}: a non-empty name without '/'")
    return value


def upload_checkpoint(path: Path, model_name: str, version: str, settings: Settings | None = None) -> str:
    """Copy a checkpoint (a file, or every file of a directory) to ``models/<name>/<version>/``."""
    s = settings or get_settings()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    prefix = f"{lake.MODELS}/{_check_name(model_name, 'model name')}/{_check_name(version, 'version')}/"
    client = s3_client(s)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        key = prefix + (f.name if path.is_file() else f.relative_to(path).as_posix())
        client.upload_file(str(f), s.s3.bucket, key)
    return s3_uri(prefix, s)


def write_experiment(experiment: str, run: str, results: dict[str, Any], settings: Settings | None = None) -> str:
    """Experiment results as JSON under ``experiments/<experiment>/<run>/results.json``."""
    key = f"{lake.EXPERIMENTS}/{_check_name(experiment, 'experiment')}/{_check_name(run, 'run')}/results.json"
    return lake.put_json(key, results, settings)


def register_model(model_name: str, version: str, checkpoint: Path, *, metrics: dict[str, float] | None = None,
                   params: dict[str, Any] | None = None, experiment: str | None = None,
                   training_dataset_id: int | None = None, settings: Settings | None = None) -> ModelRecord:
    """Upload the checkpoint (and the experiment's results), then record the version; registering
    the same (name, version) again replaces its row, so a retried upload is harmless."""
    s = settings or get_settings()
    metrics, params = metrics or {}, params or {}
    json.dumps(metrics), json.dumps(params)  # fail before uploading anything if not JSON
    checkpoint_uri = upload_checkpoint(checkpoint, model_name, version, s)
    experiment_uri = None
    if experiment is not None:
        experiment_uri = write_experiment(experiment, f"{model_name}-{version}",
                                          {"model_name": model_name, "version": version, "metrics": metrics,
                                           "params": params, "checkpoint_uri": checkpoint_uri}, s)
    with connect(s) as conn:
        row = conn.execute(
            "INSERT INTO model_metadata (model_name, version, checkpoint_uri, experiment_uri, metrics, params, "
            "training_dataset_id) VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (model_name, version) DO UPDATE SET checkpoint_uri = EXCLUDED.checkpoint_uri, "
            "experiment_uri = EXCLUDED.experiment_uri, metrics = EXCLUDED.metrics, params = EXCLUDED.params, "
            "training_dataset_id = EXCLUDED.training_dataset_id RETURNING model_id",
            (model_name, version, checkpoint_uri, experiment_uri, Jsonb(metrics), Jsonb(params),
             training_dataset_id),
        ).fetchone()
    return ModelRecord(int(row[0]), model_name, version, checkpoint_uri, experiment_uri)
