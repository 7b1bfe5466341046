"""Model cards, pushing to a (local) Hub endpoint, and loading with and without the package."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from transformers import AutoModel, ViTConfig

from mtl_hf import MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.data import ImageTransforms, TaskSource, load_shop_dataset
from mtl_hf.hub.card import build_model_card, card_from_folder, task_scores

from .hub.local_hub import LocalHub

HERE = Path(__file__).resolve().parent
LOADER = HERE / "hub" / "load_without_mtl_hf.py"
TASKS = ["category", "colour", "tags", "size"]
TOKEN = "hf_testtoken_do_not_print_0123456789"
METRICS = {
    "eval_category_accuracy": 0.91,
    "eval_category_macro_f1": 0.9,
    "eval_colour_accuracy": 0.99,
    "eval_colour_macro_f1": 0.98,
    "eval_tags_micro_f1": 0.8,
    "eval_tags_macro_f1": 0.7,
    "eval_tags_mAP": 0.75,
    "eval_size_r2": 0.5,
    "eval_size_mse": 0.01,
    "eval_size_mae": 0.08,
    "eval_average_score": 0.8,
    "eval_category_loss": 0.3,
}


def tiny_model() -> MultiTaskViTModel:
    torch.manual_seed(0)
    source = TaskSource(load_shop_dataset(8), TASKS)
    backbone = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    return MultiTaskViTModel(MultiTaskViTConfig(backbone_config=backbone, tasks=source.task_specs)).eval()


@pytest.fixture
def saved(tmp_path):
    model = tiny_model()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    ImageTransforms(size=(32, 32)).image_processor().save_pretrained(folder)
    pixel_values = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.save(pixel_values, tmp_path / "inputs.pt")
    with torch.no_grad():
        reference = {task: value for task, value in model(pixel_values).logits.items()}
    return folder, tmp_path / "inputs.pt", reference


# -- the card --------------------------------------------------------------------------------------


def test_card_metadata_and_content():
    model = tiny_model()
    card = build_model_card(
        model.config,
        model_name="shop-tagger",
        model_id="shop/shop-tagger",
        metrics=METRICS,
        datasets=["ashraq/fashion-product-images-small"],
        curves_file="training_curves.png",
        training={
            "sources": [{"name": "shop", "rows": 4000, "tasks": TASKS}],
            "sampling_strategy": "proportional",
            "batch_mode": "homogeneous",
            "when_exhausted": "recycle",
            "weighting": "famo",
            "weighting_options": {"gamma": 0.01},
            "hyperparameters": {"learning_rate": 0.002},
        },
    )
    parsed = ModelCard(str(card))  # what the Hub reads back
    data = parsed.data
    # No pipeline tag: every Hub tag promises one pipeline's output, and this model answers a dict of tasks.
    assert data.library_name == "transformers" and data.pipeline_tag is None and data.inference is False
    assert {"mtl_hf", "multi-task", "image-classification"} <= set(data.tags)
    assert data.datasets == ["ashraq/fashion-product-images-small"]
    name, results = model_index_to_eval_results(data.to_dict()["model-index"])
    assert name == "shop-tagger"
    expected = {
        (f"{task} {label}", value)
        for task, label, value in [
            ("category", "Accuracy", 0.91),
            ("category", "Macro F1", 0.9),
            ("colour", "Accuracy", 0.99),
            ("colour", "Macro F1", 0.98),
            ("tags", "Micro F1", 0.8),
            ("tags", "Macro F1", 0.7),
            ("tags", "mean Average Precision", 0.75),
            ("size", "R^2", 0.5),
            ("size", "Mean squared error", 0.01),
            ("size", "Mean absolute error", 0.08),
        ]
    }
    assert {(result.metric_name, result.metric_value) for result in results} == expected

    text = parsed.text
    assert "| `category` | classification | 5 | Accuracy | 0.9100 |" in text
    assert "| `tags` | multilabel | 3 | Micro F1 | 0.8000 |" in text
    assert "| `size` | regression | 1 | R^2 | 0.5000 |" in text
    assert "- `colour` labels: red, green, blue, yellow, purple, orange, black, white" in text
    assert "famo" in text and "shop (4000 rows" in text and "| learning_rate | 0.002 |" in text
    assert "![Per-task loss and metric curves](training_curves.png)" in text
    assert 'pipeline("multi-task-image-classification", model="shop/shop-tagger")' in text
    assert "## Limitations" in text


def test_local_validator_rejects_broken_metadata():
    from .hub.local_hub import card_metadata_errors

    good = str(build_model_card(tiny_model().config, model_name="m", metrics=METRICS))
    assert card_metadata_errors(good) == []
    broken = good.replace("inference: false", "inference: false\npipeline_tag: multi-task-image-classification")
    assert broken != good
    assert card_metadata_errors(broken) == [
        "\"pipeline_tag\" 'multi-task-image-classification' is not a known pipeline tag"
    ]


def test_card_without_scores_says_so(tmp_path):
    from transformers import ViTModel

    ViTModel(tiny_model().config.backbone_config).save_pretrained(tmp_path / "vit")
    model = MultiTaskViTModel.from_backbone(str(tmp_path / "vit"), tiny_model().config.task_specs)
    card = build_model_card(model.config, model_name="m")
    assert card.data.base_model is None  # a local folder: not linked as a Hub model (tests/test_backbone_processor.py)
    assert card.data.eval_results is None and "No evaluation results" in card.text
    assert task_scores(model.config, {"eval_category_accuracy": float("nan")}) == {}


def test_card_from_a_bare_folder_reads_its_results(saved):
    folder, _, _ = saved
    (folder / "all_results.json").write_text(json.dumps(METRICS))
    card = card_from_folder(folder, model_id="shop/tagger")
    assert "| `colour` | classification | 8 | Accuracy | 0.9900 |" in card.text
    assert card.data.model_name == "tagger"


# -- remote code -----------------------------------------------------------------------------------


def test_saved_folder_carries_its_code_and_auto_map(saved):
    folder, _, _ = saved
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_mtl_vit.MultiTaskViTConfig",
        "AutoModel": "modeling_mtl_vit.MultiTaskViTModel",
    }
    for name in ("configuration_mtl_vit.py", "modeling_mtl_vit.py"):
        code = (folder / name).read_text()
        assert not re.search(r"^\s*(import|from) mtl_hf", code, re.MULTILINE)  # self-contained: no package imports


def run_loader(model_id: str, inputs: Path, *flags: str, env: dict | None = None) -> dict:
    result = subprocess.run(
        [sys.executable, str(LOADER), model_id, str(inputs), *flags],
        capture_output=True,
        text=True,
        timeout=300,
        env=env or os.environ.copy(),
        cwd=inputs.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_loading_without_the_package_needs_trust_remote_code(saved, tmp_path):
    folder, inputs, reference = saved
    marker = tmp_path / "remote_code_ran"
    modeling = folder / "modeling_mtl_vit.py"
    modeling.write_text(modeling.read_text() + f"\nimport pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home")}  # a fresh modules cache

    refused = run_loader(str(folder), inputs, env=env)
    assert refused["mtl_hf_importable"] is False
    assert "trust_remote_code" in refused["error"]
    assert not marker.exists(), "without trust_remote_code nothing from the folder may run"

    loaded = run_loader(str(folder), inputs, "--trust", env=env)
    assert loaded["mtl_hf_importable"] is False and marker.exists()
    assert loaded["class"].endswith("modeling_mtl_vit.MultiTaskViTModel")
    assert not loaded["class"].startswith("mtl_hf")
    for task, value in reference.items():
        torch.testing.assert_close(torch.tensor(loaded["logits"][task]), value, rtol=1e-5, atol=1e-5)


def test_loading_with_the_package_needs_no_remote_code(saved):
    folder, inputs, reference = saved
    model = AutoModel.from_pretrained(folder)  # `import mtl_hf` registered the classes
    assert type(model) is MultiTaskViTModel
    with torch.no_grad():
        logits = model(torch.load(inputs)).logits
    for task, value in reference.items():
        torch.testing.assert_close(logits[task], value)


# -- push ------------------------------------------------------------------------------------------


def hub_env(hub: LocalHub, tmp_path: Path) -> dict:
    return {
        **os.environ,
        "HF_ENDPOINT": hub.endpoint,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


def test_cli_push_round_trip_through_a_local_endpoint(saved, tmp_path):
    folder, inputs, reference = saved
    (folder / "all_results.json").write_text(json.dumps(METRICS))
    (folder / "checkpoint-5").mkdir()
    (folder / "checkpoint-5" / "optimizer.pt").write_bytes(b"not for the Hub")
    with LocalHub(tmp_path / "hub") as hub:
        env = hub_env(hub, tmp_path)
        result = subprocess.run(
            [sys.executable, "-m", "mtl_hf", "push", str(folder), "shop/tagger", "--token", TOKEN],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert TOKEN not in result.stdout + result.stderr
        assert all(r["authorization"] == f"Bearer {TOKEN}" for r in hub.requests if r["method"] == "POST")

        arrived = hub.repo_folder("shop/tagger")
        names = {str(p.relative_to(arrived)) for p in arrived.rglob("*") if p.is_file()}
        assert {
            "config.json",
            "model.safetensors",
            "preprocessor_config.json",
            "README.md",
            "configuration_mtl_vit.py",
            "modeling_mtl_vit.py",
        } <= names
        assert not any(name.startswith("checkpoint-") for name in names)

        model = MultiTaskViTModel.from_pretrained(arrived).eval()
        with torch.no_grad():
            logits = model(torch.load(inputs)).logits
        for task, value in reference.items():
            torch.testing.assert_close(logits[task], value)
        card = ModelCard.load(arrived / "README.md")
        assert set(hub.validated_cards) == {str(card)}  # the client had the endpoint validate the metadata
        assert (
            'model="shop/tagger"' in card.text and "| `colour` | classification | 8 | Accuracy | 0.9900 |" in card.text
        )

        # A user without mtl_hf loads it by repo id, through the Hub client, as remote code.
        loaded = run_loader("shop/tagger", inputs, "--trust", env=env)
        assert loaded["mtl_hf_importable"] is False
        for task, value in reference.items():
            torch.testing.assert_close(torch.tensor(loaded["logits"][task]), value, rtol=1e-5, atol=1e-5)


def test_trainer_push_to_hub_sends_model_card_and_curves(tmp_path):
    script = HERE / "hub" / "train_and_push.py"
    with LocalHub(tmp_path / "hub") as hub:
        result = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "out"), "shop/trained", TOKEN],
            capture_output=True,
            text=True,
            timeout=300,
            env=hub_env(hub, tmp_path),
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert TOKEN not in result.stdout + result.stderr
        arrived = hub.repo_folder("shop/trained")
        names = {str(p.relative_to(arrived)) for p in arrived.rglob("*") if p.is_file()}
        assert {"README.md", "training_curves.png", "model.safetensors", "modeling_mtl_vit.py"} <= names
        assert not any(name.startswith("checkpoint-") for name in names)
        card = ModelCard.load(arrived / "README.md")
        assert str(card) in hub.validated_cards
        assert card.data.model_name == "trained"
        assert 'model="shop/trained"' in card.text
        scores = {r.metric_name: r.metric_value for r in card.data.eval_results}
        assert set(scores) >= {"category Accuracy", "tags Micro F1", "size R^2"}
        local = json.loads(result.stdout.strip().splitlines()[-1])
        assert scores["category Accuracy"] == round(local["eval_category_accuracy"], 4)


def test_the_cards_usage_code_runs(saved, tmp_path, monkeypatch):
    folder, _, _ = saved
    card = card_from_folder(folder, model_id=str(folder))
    code = card.text.split("```python\n", 1)[1].split("```", 1)[0]
    load_shop_dataset(1, start=7)[0]["image"].save(tmp_path / "product.jpg")
    monkeypatch.chdir(tmp_path)  # the snippet opens "product.jpg"
    namespace: dict = {}
    exec(compile(code, "model card", "exec"), namespace)  # noqa: S102 - the card's own example, as a reader runs it
    answer = namespace["classifier"]("product.jpg")
    assert set(answer["answers"]) == set(TASKS)
    assert type(namespace["model"]) is MultiTaskViTModel
    assert namespace["processor"].size == {"height": 32, "width": 32}


def test_recipe_pushes_when_asked(tmp_path):
    root = HERE.parent
    command = [
        sys.executable,
        str(root / "recipes" / "train.py"),
        str(root / "recipes" / "configs" / "demo.yaml"),
        "--output_dir",
        str(tmp_path / "out"),
        "--max_steps",
        "2",
        "--dataset_options",
        '{"num_rows": 64, "eval_rows": 32}',
        "--save_strategy",
        "no",
        "--eval_strategy",
        "no",
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
        "--push_to_hub",
        "true",
        "--hub_model_id",
        "shop/demo",
        "--hub_token",
        TOKEN,
    ]
    with LocalHub(tmp_path / "hub") as hub:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=hub_env(hub, tmp_path))
        assert result.returncode == 0, result.stderr[-3000:]
        assert TOKEN not in result.stdout + result.stderr
        arrived = hub.repo_folder("shop/demo")
        assert {"README.md", "all_results.json", "model.safetensors", "training_curves.png"} <= {
            p.name for p in arrived.iterdir()
        }
        card = ModelCard.load(arrived / "README.md")
        assert {r.metric_name for r in card.data.eval_results} >= {"category Accuracy", "size R^2"}


# -- finding a model by Hub id ------------------------------------------------------------------------


def test_a_path_under_a_local_folder_is_never_looked_up_on_the_hub(tmp_path, monkeypatch, capsys):
    import urllib.request

    from mtl_hf.commands.main import main as cli

    (tmp_path / "outputs" / "demo").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("the Hub was asked"))
    assert cli(["eval", "outputs/dmeo", "builtin:shop"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        "mtl-hf eval: error: no model folder at outputs/dmeo: outputs/ is a local folder, so this is a local path, "
        "not a Hub id, and it has no 'dmeo'; did you mean outputs/demo?"
    )
    assert cli(["predict", "outputs/zzz", "photo.png"]) == 2
    assert "it has no 'zzz'; it holds ['demo']" in capsys.readouterr().err


class SilentServer:
    """Accepts connections on 127.0.0.1 and never answers: a Hub that hangs. Counts the connections."""

    def __init__(self):
        import socket
        import threading

        self.socket = socket.create_server(("127.0.0.1", 0))
        self.connections = []
        self.endpoint = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.connections.append(self.socket.accept()[0])
            except OSError:
                return

    def connection_count(self) -> int:
        """The connections made, once the accepting thread has caught up with the kernel's queue."""
        import time

        deadline = time.monotonic() + 5
        while not self.connections and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # a second connection, were there one, would be queued by now
        return len(self.connections)

    def close(self):
        for connection in self.connections:
            connection.close()
        self.socket.close()


@pytest.fixture
def silent_hub(monkeypatch, tmp_path):
    from huggingface_hub import constants

    from mtl_hf.hub import lookup

    server = SilentServer()
    monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(lookup, "PROBE_TIMEOUT_SECONDS", 0.5)
    yield server
    server.close()


def test_an_unreachable_hub_is_asked_once_then_one_line(silent_hub, capsys):
    from mtl_hf.commands.main import main as cli

    assert cli(["eval", "shop/tagger", "builtin:shop"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and silent_hub.connection_count() == 1
    assert f"no model at shop/tagger: no local folder of that name, and the Hub ({silent_hub.endpoint}) did not " in (
        error
    )
    assert "answer within 0.5 s" in error and "HF_HUB_OFFLINE=1 to use the cache" in error


def test_an_unreachable_hub_falls_back_to_the_cached_copy_with_a_notice(silent_hub, saved, tmp_path, capsys):
    import shutil

    from huggingface_hub import constants

    from mtl_hf.commands.main import main as cli

    folder, _, _ = saved
    revision = "0" * 40
    cached = Path(constants.HF_HUB_CACHE) / "models--shop--tagger"
    (cached / "refs").mkdir(parents=True)
    (cached / "refs" / "main").write_text(revision)
    shutil.copytree(folder, cached / "snapshots" / revision)
    photo = tmp_path / "photo.png"
    load_shop_dataset(1)[0]["image"].save(photo)

    assert cli(["predict", "shop/tagger", str(photo), "--json"]) == 0
    captured = capsys.readouterr()
    answers = json.loads(captured.out)
    assert set(answers[0]["answers"]) == set(TASKS) and silent_hub.connection_count() == 1, captured.err
    assert captured.err.strip().startswith(f"the Hub ({silent_hub.endpoint}) did not answer")
    assert f"using the cached copy of shop/tagger at {cached / 'snapshots' / revision}" in captured.err


def test_a_model_on_a_reachable_hub_loads_by_its_id(saved, tmp_path):
    import shutil

    folder, _, _ = saved
    photo = tmp_path / "photo.png"
    load_shop_dataset(1)[0]["image"].save(photo)
    with LocalHub(tmp_path / "hub") as hub:
        shutil.copytree(folder, hub.repo_folder("shop/tagger"))
        result = subprocess.run(
            [sys.executable, "-m", "mtl_hf", "predict", "shop/tagger", str(photo), "--json"],
            capture_output=True,
            text=True,
            timeout=300,
            env=hub_env(hub, tmp_path),
        )
    assert result.returncode == 0, result.stderr[-3000:]
    assert set(json.loads(result.stdout)[0]["answers"]) == set(TASKS)
    assert hub.requests[0] == {"method": "HEAD", "path": "/shop/tagger/resolve/main/config.json", "authorization": None}


def fresh_venv(folder: Path) -> Path:
    """A virtual environment with this one's packages (torch, transformers, Pillow ...) but not mtl_hf: its
    site-packages folder is on the path (a .pth line), while the .pth file that installs mtl_hf (editable) there
    is not run. Nothing is downloaded. Returns its interpreter."""
    import sysconfig
    import venv

    venv.create(folder, with_pip=False)
    python = folder / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "test_venv_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_a_pushed_model_deploys_where_mtl_hf_is_not_installed(saved, tmp_path):
    """config.json names the remote-code pipeline: `pipeline(model=repo, trust_remote_code=True)` runs in a fresh
    venv with torch, transformers and Pillow but not mtl_hf; the pushed handler.py answers there as Inference
    Endpoints call it; both as mtl_hf's own pipeline answers."""
    from transformers import pipeline

    folder, _, _ = saved
    photo = tmp_path / "photo.png"
    load_shop_dataset(1, start=50)[0]["image"].save(photo)
    expected = pipeline("multi-task-image-classification", model=str(folder))(str(photo))
    assert json.loads((folder / "config.json").read_text())["custom_pipelines"] == {
        "mtl-vit-image-classification": {
            "impl": "pipeline_mtl_vit.MultiTaskImageClassificationPipeline",
            "pt": ["AutoModel"],
            "tf": [],
            "type": "image",
        }
    }
    with LocalHub(tmp_path / "hub") as hub:
        env = hub_env(hub, tmp_path)
        pushed = subprocess.run(
            [sys.executable, "-m", "mtl_hf", "push", str(folder), "shop/tagger", "--token", TOKEN],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert pushed.returncode == 0, pushed.stderr[-3000:]
        names = {p.name for p in hub.repo_folder("shop/tagger").iterdir()}
        assert {"handler.py", "requirements.txt", "pipeline_mtl_vit.py", "images_mtl_vit.py"} <= names
        python = fresh_venv(tmp_path / "fresh")
        deployed = subprocess.run(
            [
                str(python),
                str(Path(__file__).parent / "hub" / "deploy_without_mtl_hf.py"),
                "shop/tagger",
                str(photo),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env={key: value for key, value in env.items() if key != "PYTHONPATH"},  # mtl_hf stays out
            cwd=tmp_path,
        )
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    report = json.loads(deployed.stdout.strip().splitlines()[-1])
    assert report["mtl_hf_importable"] is False
    assert report["pipeline_class"].endswith("pipeline_mtl_vit.MultiTaskImageClassificationPipeline")
    assert not report["pipeline_class"].startswith("mtl_hf")
    for answers in (report["pipeline"], report["handler_image"], *report["handler_list"]):
        assert answers["schema_version"] == expected["schema_version"]
        for task, value in expected["answers"].items():
            shown = answers["answers"][task]
            for key in ("label", "labels"):
                assert shown.get(key) == value.get(key), task
            if "value" in value:
                assert shown["value"] == pytest.approx(value["value"], abs=1e-5), task
    assert [len(a["answers"]["category"]["scores"]) for a in report["handler_list"]] == [1, 1]  # parameters arrived
    assert report["requirements"] == ["transformers>=5.0,<6", "torch", "pillow"]


@pytest.mark.parametrize("strategy", ["every_save", "checkpoint"])
def test_checkpoints_pushed_during_training_load_without_mtl_hf_and_resume(strategy, tmp_path):
    """hub_strategy every_save / checkpoint: the repository's top level loads without mtl_hf and deploys (remote
    code, handler, card) from the first pushed checkpoint on; with `checkpoint`, the pushed `last-checkpoint`
    carries the multi-task state, and resuming from it (downloaded) ends where resuming from the local copy does."""
    script = str(HERE / "hub" / "push_checkpoints.py")
    with LocalHub(tmp_path / "hub") as hub:
        env = hub_env(hub, tmp_path)

        def run(*args):
            result = subprocess.run(
                [sys.executable, script, *args], capture_output=True, text=True, timeout=300, env=env
            )
            assert result.returncode == 0, result.stderr[-3000:]
            return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""

        run("push", str(tmp_path / "out"), "shop/live", TOKEN, strategy)
        arrived = hub.repo_folder("shop/live")
        top = {p.name for p in arrived.iterdir() if p.is_file()}
        assert {
            "config.json",
            "model.safetensors",
            "modeling_mtl_vit.py",
            "pipeline_mtl_vit.py",
            "handler.py",
            "requirements.txt",
            "README.md",
            "preprocessor_config.json",
        } <= top, top
        assert "mtl_hf" in ModelCard.load(arrived / "README.md").data.tags
        inputs = tmp_path / "inputs.pt"
        torch.save(torch.randn(2, 3, 32, 32), inputs)
        loaded = run_loader("shop/live", inputs, "--trust", env=env)
        assert loaded["mtl_hf_importable"] is False and "error" not in loaded, loaded
        if strategy != "checkpoint":
            return
        pushed = sorted(p.name for p in (arrived / "last-checkpoint").iterdir())
        assert json.loads((arrived / "last-checkpoint" / "trainer_state.json").read_text())["global_step"] == 4
        assert {"multitask_state.safetensors", "multitask_state.json", "optimizer.pt", "trainer_state.json"} <= set(
            pushed
        )
        downloaded = tmp_path / "downloaded"
        download = (
            "import sys\nfrom huggingface_hub import hf_hub_download\nfor name in sys.argv[2:]:\n"
            "    hf_hub_download('shop/live', f'last-checkpoint/{name}', local_dir=sys.argv[1])"
        )
        fetched = subprocess.run(
            [sys.executable, "-c", download, str(downloaded), *pushed], capture_output=True, text=True, env=env
        )
        assert fetched.returncode == 0, fetched.stderr[-3000:]
        from_hub = run("resume", str(tmp_path / "from_hub"), str(downloaded / "last-checkpoint"))
        from_disk = run("resume", str(tmp_path / "from_disk"), str(tmp_path / "out" / "checkpoint-4"))
    assert from_hub == from_disk and len(from_hub) == 64


def test_results_on_a_hub_dataset_are_written_in_the_eval_results_format_too(tmp_path):
    """`.eval_results/mtl_hf.yaml` (the Hub's current format, parsed with huggingface_hub) holds the model-index's
    results on a Hub dataset, one entry per task and metric; local data has none, and no file."""
    import yaml
    from huggingface_hub import parse_eval_result_entries

    from mtl_hf.hub.card import EVAL_RESULTS_FILE, eval_results_yaml, write_eval_results

    config = tiny_model().config
    card = build_model_card(config, model_name="m", metrics=METRICS, datasets=["ashraq/fashion-product-images-small"])
    entries = parse_eval_result_entries(yaml.safe_load(eval_results_yaml(card)))
    legacy = card.data.eval_results
    assert len(entries) == len(legacy) > 0
    for entry, result in zip(entries, legacy, strict=True):
        assert entry.dataset_id == "ashraq/fashion-product-images-small" and entry.value == result.metric_value
        assert entry.task_id == f"{result.metric_name.split(' ')[0]}_{result.metric_type}"
        assert entry.notes.startswith("split: eval")
    assert {e.task_id for e in entries} >= {"category_accuracy", "tags_micro_f1", "size_r2"}
    write_eval_results(card, tmp_path)
    assert parse_eval_result_entries(yaml.safe_load((tmp_path / EVAL_RESULTS_FILE).read_text())) == entries
    local = build_model_card(config, model_name="m", metrics=METRICS)
    assert eval_results_yaml(local) is None
    write_eval_results(local, tmp_path)
    assert not (tmp_path / EVAL_RESULTS_FILE).exists()
