"""The "multi-task-image-classification" pipeline against the model's own outputs."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from mtl_hf import MultiTaskImageClassificationPipeline, MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.data import ImageTransforms, TaskSource, load_shop_dataset

from .conftest import tiny_vit_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    source = TaskSource(load_shop_dataset(8), ["category", "tags", "size"])
    model = MultiTaskViTModel(
        MultiTaskViTConfig(backbone_config=tiny_vit_config(patch_size=8), tasks=source.task_specs)
    )
    model.save_pretrained(folder)
    ImageTransforms(size=(32, 32)).image_processor().save_pretrained(folder)
    images = [row["image"] for row in load_shop_dataset(5, start=50)]
    with torch.no_grad():
        logits = model.eval()(torch.stack([ImageTransforms(size=(32, 32))(image) for image in images])).logits
    return folder, model, images, logits


def test_registered_task_builds_the_pipeline_with_the_saved_processor(setup):
    folder, _, _, _ = setup
    classify = pipeline("multi-task-image-classification", model=str(folder))
    assert isinstance(classify, MultiTaskImageClassificationPipeline)
    assert classify.image_processor.size == {"height": 32, "width": 32}


def test_outputs_equal_softmax_sigmoid_and_values(setup):
    folder, model, images, logits = setup
    classify = pipeline("multi-task-image-classification", model=str(folder))
    results = classify(images, top_k=5, threshold=0.3, batch_size=2)
    categories, tags = model.config.get_task("category").labels, model.config.get_task("tags").labels
    for index, result in enumerate(results):
        assert result["schema_version"] == 1 and set(result) == {"schema_version", "answers"}
        answers = result["answers"]
        probabilities = torch.softmax(logits["category"][index], -1)
        expected = sorted(zip(categories, probabilities.tolist(), strict=True), key=lambda pair: -pair[1])
        assert answers["category"]["label"] == expected[0][0]
        assert [a["label"] for a in answers["category"]["scores"]] == [label for label, _ in expected]
        assert [a["score"] for a in answers["category"]["scores"]] == pytest.approx([s for _, s in expected], abs=1e-5)
        scores = torch.sigmoid(logits["tags"][index])
        assert set(answers["tags"]["labels"]) == {tags[i] for i in range(3) if scores[i] >= 0.3}
        assert len(answers["tags"]["scores"]) == len(tags)  # every label's score (top_k 5 > 3 labels), best first
        for answer in answers["tags"]["scores"]:
            assert answer["score"] == pytest.approx(float(scores[tags.index(answer["label"])]), abs=1e-5)
        assert answers["size"] == {"value": pytest.approx(float(logits["size"][index, 0]), abs=1e-5)}


def test_the_shape_of_earlier_releases_stays_one_release_behind_an_option(setup):
    folder, model, images, logits = setup
    classify = pipeline("multi-task-image-classification", model=str(folder))
    with pytest.warns(FutureWarning, match="goes in the next release"):
        old = classify(images[0], top_k=2, threshold=0.3, legacy_answers=True)
    new = classify(images[0], top_k=2, threshold=0.3)["answers"]
    assert old["category"] == new["category"]["scores"]
    scores = {a["label"]: a["score"] for a in classify(images[0], top_k=10)["answers"]["tags"]["scores"]}
    assert [a["label"] for a in old["tags"]] == new["tags"]["labels"][:2]
    assert [a["score"] for a in old["tags"]] == pytest.approx([scores[label] for label in new["tags"]["labels"][:2]])
    assert old["size"] == [{"label": "size", "value": pytest.approx(new["size"]["value"])}]


def test_batched_paths_and_arrays_agree_with_single_pil_images(setup, tmp_path):
    folder, _, images, _ = setup
    classify = pipeline("multi-task-image-classification", model=str(folder))
    one_by_one = [classify(image) for image in images]
    paths = []
    for index, image in enumerate(images):
        paths.append(str(tmp_path / f"{index}.png"))
        image.save(paths[-1])
    for batch in (classify(paths, batch_size=4), classify([np.asarray(image) for image in images], batch_size=3)):
        for got, expected in zip(batch, one_by_one, strict=True):
            assert got["answers"].keys() == expected["answers"].keys()
            for task, answer in got["answers"].items():
                assert [a["label"] for a in answer.get("scores", [])] == [
                    a["label"] for a in expected["answers"][task].get("scores", [])
                ]


def test_options_and_errors(setup, tmp_path):
    folder, _, images, _ = setup
    classify = pipeline("multi-task-image-classification", model=str(folder))
    only = classify(images[0], tasks=["category"], top_k=2)
    assert list(only["answers"]) == ["category"] and len(only["answers"]["category"]["scores"]) == 2
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['colour'\]"):
        classify(images[0], tasks=["colour"])
    with pytest.raises(ValueError, match="top_k"):
        classify(images[0], top_k=0)
    with pytest.raises(FileNotFoundError, match="no image file"):
        classify(str(tmp_path / "missing.jpg"))
    grey = Image.new("L", (20, 30), 128)  # greyscale becomes RGB, as in training
    assert set(classify(grey)["answers"]) == {"category", "tags", "size"}
