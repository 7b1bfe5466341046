"""One answer shape for every client: the pipeline, `mtl-hf predict IMAGE --json`, `mtl-hf serve`'s predictor, the
Inference Endpoints handler and the Parquet rows of `mtl-hf predict --output` (read back with `answer_from_row`) give
the same answer object for the same photos, read one way (docs/answers.md)."""

from __future__ import annotations

import base64
import json

import pyarrow.parquet as pq
import pytest
from transformers import pipeline

from mtl_hf.commands.main import main as cli
from mtl_hf.data import load_shop_dataset
from mtl_hf.inference.answers import answer_from_row
from mtl_hf.models.mtl_vit.answers_mtl_vit import PARQUET_VERSION_KEY, SCHEMA_VERSION
from mtl_hf.models.mtl_vit.endpoint_handler import EndpointHandler
from mtl_hf.serving.predictor import ImagePredictor

from .test_predict_catalogue import save_model


def read(answer: dict) -> dict:
    """What a client takes from an answer object: per task its answer and its scores (the way every client reads)."""
    assert answer["schema_version"] == SCHEMA_VERSION
    read = {}
    for task, value in answer["answers"].items():
        decided = value.get("label", value.get("labels", value.get("value")))
        scores = [(s["label"], pytest.approx(s["score"], abs=1e-5)) for s in value.get("scores", [])]
        read[task] = (decided if "value" not in value else pytest.approx(decided, abs=1e-5), scores)
    return read


def test_every_client_gives_the_same_answer_object(tmp_path, capsys):
    folder = tmp_path / "model"
    model = save_model(folder)
    photos = tmp_path / "photos"
    photos.mkdir()
    paths = []
    for index, row in enumerate(load_shop_dataset(4, start=300)):
        paths.append(photos / f"{index}.png")
        row["image"].save(paths[-1])

    classify = pipeline("multi-task-image-classification", model=str(folder))
    clients = {"pipeline": classify(list(map(str, paths)), top_k=3)}
    assert cli(["predict", str(folder), *map(str, paths), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [answer.pop("image") for answer in printed] == list(map(str, paths))
    clients["predict --json"] = printed
    predictor = ImagePredictor(str(folder), top_k=3)
    clients["serve"] = predictor.answer([predictor.prepare(path.read_bytes(), name=path.name) for path in paths])
    handler = EndpointHandler(str(folder))
    encoded = [base64.b64encode(path.read_bytes()).decode() for path in paths]
    clients["handler"] = handler({"inputs": encoded, "parameters": {"top_k": 3}})
    assert cli(["predict", str(folder), str(photos), "--output", str(tmp_path / "tagged")]) == 0
    shards = pq.read_table(tmp_path / "tagged" / "predictions")
    assert shards.schema.metadata[PARQUET_VERSION_KEY] == str(SCHEMA_VERSION).encode()
    rows = sorted(shards.to_pylist(), key=lambda row: row["image"])
    clients["parquet"] = [answer_from_row(model.config.task_specs, row) for row in rows]

    reference = [read(answer) for answer in clients["pipeline"]]
    assert set(reference[0]) == {"category", "colour", "tags", "size"}
    for name, answers in clients.items():
        assert [set(answer) for answer in answers] == [{"schema_version", "answers"}] * len(paths), name
        assert [read(answer) for answer in answers] == reference, name
