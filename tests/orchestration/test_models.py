"""Model checkpoints and experiment results on S3, indexed in model_metadata."""

import json

import pytest

from feedstore.s3 import s3_client
from orchestration import lake
from orchestration.models import register_model


def test_register_model_uploads_and_records(settings, pg, tmp_path):
    ckpt = tmp_path / "ckpt"
    (ckpt / "weights").mkdir(parents=True)
    (ckpt / "weights" / "layer0.bin").write_bytes(b"\x00\x01" * 100)
    (ckpt / "config.json").write_text('{"dim": 32}')
    record = register_model("two_tower", "v1", ckpt, metrics={"auc": 0.71}, params={"lr": 0.01},
                            experiment="baseline")
    assert record.checkpoint_uri == f"s3://{settings.s3.bucket}/models/two_tower/v1/"
    assert lake.list_keys("models/two_tower/v1/", settings) == [
        "models/two_tower/v1/config.json", "models/two_tower/v1/weights/layer0.bin"]
    body = s3_client(settings).get_object(Bucket=settings.s3.bucket,
                                          Key="experiments/baseline/two_tower-v1/results.json")["Body"].read()
    assert json.loads(body)["metrics"] == {"auc": 0.71}
    row = pg.execute("SELECT checkpoint_uri, experiment_uri, metrics, params FROM model_metadata "
                     "WHERE model_name = 'two_tower' AND version = 'v1'").fetchone()
    assert row == (record.checkpoint_uri, record.experiment_uri, {"auc": 0.71}, {"lr": 0.01})

    again = register_model("two_tower", "v1", ckpt, metrics={"auc": 0.72})
    assert again.model_id == record.model_id
    assert pg.execute("SELECT metrics FROM model_metadata WHERE model_id = %s", (record.model_id,)).fetchone()[0] \
        == {"auc": 0.72}


def test_bad_names_and_missing_checkpoint_are_refused(settings, tmp_path):
    with pytest.raises(ValueError, match="model name"):
        register_model("a/b", "v1", tmp_path)
    with pytest.raises(FileNotFoundError):
        register_model("m", "v1", tmp_path / "nope")
