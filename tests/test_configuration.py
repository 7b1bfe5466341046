import json

import pytest
from transformers import AutoConfig, DeiTConfig, ViTConfig

from mtl_hf import MultiTaskViTConfig, TaskSpec
from tests.conftest import SHOP_TASKS, tiny_vit_config


def test_task_defaults_are_filled_in(shop_config):
    category, tags, price = shop_config.task_specs
    assert category.num_outputs == 3 and category.id2label == {0: "shirt", 1: "shoe", 2: "bag"}
    assert tags.label2id == {"red": 0, "striped": 1, "leather": 2, "sale": 3}
    assert price.num_outputs == 1 and price.labels is None
    assert all(t.loss_weight == 1.0 and t.pooling is None and t.dropout == 0.0 for t in shop_config.task_specs)
    assert shop_config.task_names == ["category", "tags", "price"]
    assert shop_config.get_task("tags") == tags


def test_classification_labels_default_from_num_outputs():
    spec = TaskSpec(name="digit", type="classification", num_outputs=3)
    assert spec.labels == ["LABEL_0", "LABEL_1", "LABEL_2"]


def test_task_spec_objects_are_accepted_and_stored_as_dicts():
    config = MultiTaskViTConfig(
        backbone_config=tiny_vit_config(), tasks=[TaskSpec(name="size", type="regression", num_outputs=2)]
    )
    assert config.tasks == [
        {
            "name": "size",
            "type": "regression",
            "labels": None,
            "num_outputs": 2,
            "loss_weight": 1.0,
            "pooling": None,
            "dropout": 0.0,
            "hidden_size": None,
            "target_scaling": "standard",
            "target_statistics": None,
            "label_smoothing": None,
            "class_weights": None,
            "pos_weight": None,
            "label_counts": None,
            "loss": "mse",
            "huber_delta": None,
        }
    ]


def test_round_trip_through_save_pretrained_and_auto_config(tmp_path, shop_config):
    shop_config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "mtl_vit" and saved["backbone_config"]["model_type"] == "vit"

    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is MultiTaskViTConfig
    assert type(loaded.backbone_config) is ViTConfig
    assert loaded.backbone_config.to_dict() == shop_config.backbone_config.to_dict()
    assert loaded.tasks == shop_config.tasks
    assert loaded.task_specs == shop_config.task_specs


def test_round_trip_through_dict_keeps_another_backbone_family():
    deit = DeiTConfig(image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
    config = MultiTaskViTConfig(backbone_config=deit, tasks=SHOP_TASKS[:1])
    again = MultiTaskViTConfig.from_dict(config.to_dict())
    assert type(again.backbone_config) is DeiTConfig
    assert again.backbone_config.hidden_size == 64
    assert again.tasks == config.tasks


def test_backbone_config_dict_defaults_to_vit():
    config = MultiTaskViTConfig(backbone_config={"hidden_size": 32, "num_attention_heads": 2}, tasks=SHOP_TASKS[:1])
    assert type(config.backbone_config) is ViTConfig and config.backbone_config.hidden_size == 32


def test_default_backbone_is_vit_base():
    config = MultiTaskViTConfig(tasks=SHOP_TASKS[:1])
    assert type(config.backbone_config) is ViTConfig and config.backbone_config.hidden_size == 768


def task(**fields):
    return {"name": "colour", "type": "classification", "labels": ["red", "blue"], **fields}


@pytest.mark.parametrize(
    ("tasks", "error", "message"),
    [
        (None, ValueError, "no tasks given"),
        ([], ValueError, "no tasks given"),
        ("colour", TypeError, "tasks must be a list"),
        ([task(), task()], ValueError, r"duplicate task names \['colour'\]"),
        ([task(name="base colour")], ValueError, "invalid task name 'base colour'"),
        ([task(name="")], ValueError, "invalid task name ''"),
        ([task(name="a.b")], ValueError, "invalid task name 'a.b'"),
        ([task(name="1st")], ValueError, "invalid task name '1st'"),
        ([task(type="segmentation")], ValueError, "task 'colour': unknown type 'segmentation'"),
        ([task(labels=[])], ValueError, "task 'colour': labels is empty"),
        ([task(labels=["red", "red", "blue"])], ValueError, r"task 'colour': duplicate labels \['red'\]"),
        ([task(labels="red,blue")], ValueError, "labels must be a list of class names"),
        ([task(labels=["red", 3])], ValueError, "labels must be non-empty strings"),
        ([task(labels=["red"])], ValueError, "needs at least 2 labels"),
        ([task(labels=None)], ValueError, "task 'colour': a classification task needs `labels`"),
        ([task(num_outputs=5)], ValueError, "num_outputs=5 disagrees with the 2 labels"),
        ([task(type="regression")], ValueError, "task 'colour': labels given for a regression task"),
        ([task(type="regression", labels=None, num_outputs=0)], ValueError, "num_outputs must be a positive"),
        ([task(loss_weight=-1.0)], ValueError, "task 'colour': loss_weight must be a finite number >= 0"),
        ([task(loss_weight=float("nan"))], ValueError, "loss_weight must be a finite number"),
        ([task(loss_weight="1")], ValueError, "loss_weight must be a finite number"),
        ([task(pooling="max")], ValueError, "task 'colour': unknown pooling 'max'"),
        ([task(dropout=1.0)], ValueError, r"dropout must be in \[0, 1\)"),
        ([task(hidden_size=0)], ValueError, "hidden_size must be a positive integer"),
        ([task(colour_space="rgb")], ValueError, r"task 'colour': unknown fields \['colour_space'\]"),
        ([{"name": "colour"}], ValueError, "lacks type"),
        (["colour"], TypeError, "a task spec must be a dict or TaskSpec"),
    ],
)
def test_bad_tasks_are_refused_with_a_clear_error(tasks, error, message):
    with pytest.raises(error, match=message):
        MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=tasks)


def test_bad_backbone_config_is_refused():
    with pytest.raises(ValueError, match="backbone_config: unknown model_type 'not_a_model'"):
        MultiTaskViTConfig(backbone_config={"model_type": "not_a_model"}, tasks=SHOP_TASKS)
    with pytest.raises(TypeError, match="backbone_config must be a PreTrainedConfig"):
        MultiTaskViTConfig(backbone_config="vit", tasks=SHOP_TASKS)


def test_bad_initializer_range_is_refused():
    with pytest.raises(ValueError, match="initializer_range must be a positive number"):
        MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=SHOP_TASKS, initializer_range=0)


def test_get_task_names_the_known_tasks(shop_config):
    with pytest.raises(
        KeyError, match=r"unknown task 'colour'; this model's tasks are \['category', 'tags', 'price'\]"
    ):
        shop_config.get_task("colour")
