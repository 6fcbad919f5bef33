"""Model checkpoints and experiment results as a user registers and finds them: through the
``feedstore`` command and the Python API, against the session's Postgres and bucket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date

import pytest

from feedstore.models import (
    ChecksumMismatch,
    ModelRegistryError,
    download_checkpoint,
    list_models,
    log_experiment,
    model_prefix,
    register_model,
)
from feedstore.s3 import s3_client


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "feedstore.cli", *args], env=os.environ.copy(),
                          capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture()
def checkpoint(tmp_path):
    ckpt = tmp_path / "ckpt"
    (ckpt / "weights").mkdir(parents=True)
    (ckpt / "weights" / "layer0.bin").write_bytes(os.urandom(4096))
    (ckpt / "config.json").write_text('{"dim": 32}')
    return ckpt


@pytest.fixture()
def training_set(pg):
    """A registered training set to link a model to."""
    day = date(2026, 11, 20)
    pg.execute("INSERT INTO training_datasets (name, ds, uri, row_count, positive_count, negative_count, "
               "feature_service, code_version) VALUES ('ranking_models_test', %s, 's3://x/', 10, 5, 5, 'training', "
               "'test') ON CONFLICT (name, ds) DO NOTHING", (day,))
    return f"ranking_models_test/{day.isoformat()}"


def test_register_list_show_and_download_through_the_cli(settings, checkpoint, training_set, tmp_path):
    registered = _cli("models", "register", "--name", "two_tower", "--version", "v1", "--checkpoint", str(checkpoint),
                      "--metrics", '{"auc": 0.71}', "--params", '{"lr": 0.01}', "--training-dataset", training_set,
                      "--experiment", "baseline", "--json")
    assert registered.returncode == 0, registered.stderr
    (record,) = json.loads(registered.stdout)
    assert record["checkpoint_uri"] == f"s3://{settings.s3.bucket}/models/two_tower/v1/"
    assert record["metrics"] == {"auc": 0.71} and record["params"] == {"lr": 0.01}
    assert record["training_dataset"] == training_set
    assert sorted(record["files"]) == ["config.json", "weights/layer0.bin"]

    listed = json.loads(_cli("models", "list", "--training-dataset", training_set, "--json").stdout)
    assert [(r["model_name"], r["version"]) for r in listed] == [("two_tower", "v1")]
    shown = _cli("models", "show", "two_tower", "v1")
    assert shown.returncode == 0 and record["files"]["config.json"] in shown.stdout
    results = s3_client(settings).get_object(Bucket=settings.s3.bucket,
                                             Key="experiments/baseline/two_tower-v1/results.json")["Body"].read()
    assert json.loads(results)["metrics"] == {"auc": 0.71}

    fetched = _cli("models", "download", "two_tower", "v1", str(tmp_path / "out"))
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "out" / "weights" / "layer0.bin").read_bytes() == \
        (checkpoint / "weights" / "layer0.bin").read_bytes()


def test_an_existing_version_is_refused_unless_overwritten(settings, checkpoint):
    register_model("refused", "v1", checkpoint, metrics={"auc": 0.5})
    again = _cli("models", "register", "--name", "refused", "--version", "v1", "--checkpoint", str(checkpoint))
    assert again.returncode == 2 and "registered already" in again.stderr and "Traceback" not in again.stderr
    (checkpoint / "weights" / "layer0.bin").unlink()
    replaced = register_model("refused", "v1", checkpoint, metrics={"auc": 0.6}, overwrite=True)
    assert replaced.metrics == {"auc": 0.6} and sorted(replaced.files) == ["config.json"]
    keys = [o["Key"] for o in s3_client(settings).list_objects_v2(
        Bucket=settings.s3.bucket, Prefix=model_prefix("refused", "v1"))["Contents"]]
    assert keys == ["models/refused/v1/config.json"]  # the old version's other file is gone


def test_a_training_set_that_does_not_exist_is_refused(settings, checkpoint):
    with pytest.raises(ModelRegistryError, match="no training set"):
        register_model("orphan", "v1", checkpoint, training_dataset="nope/2026-01-01")
    assert list_models("orphan") == []
    bad = _cli("models", "register", "--name", "orphan", "--version", "v1", "--checkpoint", str(checkpoint),
               "--training-dataset", "not-a-ref")
    assert bad.returncode == 2 and "NAME/YYYY-MM-DD" in bad.stderr


def test_the_checksum_is_verified_on_download(settings, checkpoint, tmp_path):
    register_model("tampered", "v1", checkpoint)
    s3_client(settings).put_object(Bucket=settings.s3.bucket, Key=model_prefix("tampered", "v1") + "config.json",
                                   Body=b'{"dim": 64}')
    with pytest.raises(ChecksumMismatch, match="config.json"):
        download_checkpoint("tampered", "v1", tmp_path / "out")
    assert _cli("models", "download", "tampered", "v1", str(tmp_path / "cli")).returncode == 1


def test_a_large_checkpoint_goes_up_in_parts(settings, tmp_path):
    big = tmp_path / "model.bin"
    big.write_bytes(os.urandom(12 * 1024 * 1024))
    record = register_model("large", "v1", big, part_bytes=5 * 1024 * 1024)
    head = s3_client(settings).head_object(Bucket=settings.s3.bucket, Key=model_prefix("large", "v1") + "model.bin")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object's ETag counts its parts
    assert download_checkpoint("large", "v1", tmp_path / "out") and \
        (tmp_path / "out" / "model.bin").read_bytes() == big.read_bytes()
    assert record.files["model.bin"] != ""


def test_an_experiment_run_with_artefacts(settings, tmp_path):
    plot = tmp_path / "roc.csv"
    plot.write_text("fpr,tpr\n0,0\n1,1\n")
    uri = log_experiment("ablation", "no-embeddings", {"auc": 0.64}, params={"embeddings": False}, artefacts=[plot])
    assert uri == f"s3://{settings.s3.bucket}/experiments/ablation/no-embeddings/"
    client = s3_client(settings)
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=settings.s3.bucket,
                                                           Prefix="experiments/ablation/no-embeddings/")["Contents"])
    assert keys == ["experiments/ablation/no-embeddings/artefacts/roc.csv",
                    "experiments/ablation/no-embeddings/results.json"]
    out = _cli("experiments", "log", "ablation", "second", "--metrics", '{"auc": 0.66}')
    assert out.returncode == 0 and out.stdout.strip().endswith("experiments/ablation/second/")
