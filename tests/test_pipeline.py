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
        probabilities = torch.softmax(logits["category"][index], -1)
        expected = sorted(zip(categories, probabilities.tolist(), strict=True), key=lambda pair: -pair[1])
        assert [a["label"] for a in result["category"]] == [label for label, _ in expected]
        assert [a["score"] for a in result["category"]] == pytest.approx([s for _, s in expected], abs=1e-5)
        scores = torch.sigmoid(logits["tags"][index])
        assert {a["label"] for a in result["tags"]} == {tags[i] for i in range(3) if scores[i] >= 0.3}
        for answer in result["tags"]:
            assert answer["score"] == pytest.approx(float(scores[tags.index(answer["label"])]), abs=1e-5)
        assert result["size"] == [{"label": "size", "value": pytest.approx(float(logits["size"][index, 0]), abs=1e-5)}]


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
            assert got.keys() == expected.keys()
            for task in got:
                assert [a["label"] for a in got[task]] == [a["label"] for a in expected[task]]


def test_options_and_errors(setup, tmp_path):
    folder, _, images, _ = setup
    classify = pipeline("multi-task-image-classification", model=str(folder))
    only = classify(images[0], tasks=["category"], top_k=2)
    assert list(only) == ["category"] and len(only["category"]) == 2
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['colour'\]"):
        classify(images[0], tasks=["colour"])
    with pytest.raises(ValueError, match="top_k"):
        classify(images[0], top_k=0)
    with pytest.raises(FileNotFoundError, match="no image file"):
        classify(str(tmp_path / "missing.jpg"))
    grey = Image.new("L", (20, 30), 128)  # greyscale becomes RGB, as in training
    assert set(classify(grey)) == {"category", "tags", "size"}
