"""The Python snippets of the README and of docs/ run as written, and so do the Large catalogues commands.

Every ```python block in README.md and docs/*.md carries a marker comment just above it:
`<!-- readme-test: ID[, slow][, after ID ID...][, given ...] -->`, or `<!-- readme-test: skip, WHY -->`
for a snippet that needs the network. A snippet runs in a fresh interpreter in an empty folder,
after the snippets it comes `after` (it uses their names), then a few checks of what it promises.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKED_SNIPPET = re.compile(r"<!-- readme-test: (?P<marker>[^>]*?) -->\n```python\n(?P<code>.*?)```", re.S)
ENV = {
    **os.environ,
    "CUDA_VISIBLE_DEVICES": "",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "PYTHONPATH": str(ROOT),
}

# What a snippet is `given` (the README says where it comes from, e.g. `make demo`), built small here.
GIVEN = {
    "pipeline": """
from transformers import ViTConfig
from mtl_hf import MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.data import ImageTransforms, TaskSource, load_shop_dataset
rows = load_shop_dataset(3)
shop = TaskSource(rows, ["category", "colour", "pattern", "tags", "size"])
backbone = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64)
MultiTaskViTModel(MultiTaskViTConfig(backbone_config=backbone, tasks=shop.task_specs)).save_pretrained("outputs/demo")
ImageTransforms(size=(32, 32)).image_processor().save_pretrained("outputs/demo")
rows[0]["image"].save("photo.png")
list_of_images = list(rows["image"])
""",
}

# What each snippet promises, checked after it ran.
CHECKS = {
    "quickstart": """
assert type(model).__name__ == "MultiTaskViTModel" and model.config.task_names == ["category", "tags", "price"]
assert out.logits["tags"].shape == (4, 4) and out.logits["price"].shape == (4, 1) and out.loss.isfinite()
""",
    "trainer": """
metrics = trainer.evaluate()
print({key: round(value, 3) for key, value in metrics.items() if key.endswith(("accuracy", "micro_f1", "r2"))},
      "train_runtime", [log["train_runtime"] for log in trainer.state.log_history if "train_runtime" in log])
# The README's figures: category 0.96, colour 1.00, tags 1.00, size R^2 0.92 (chance 0.234 / 0.144 / 0.465 / 0).
assert trainer.state.global_step == 1240
assert metrics["eval_category_accuracy"] > 0.8 and metrics["eval_colour_accuracy"] > 0.95
assert metrics["eval_tags_micro_f1"] > 0.95 and metrics["eval_size_r2"] > 0.5
""",
    "pipeline": """
answer = classify("photo.png")
assert answer["schema_version"] == 1 and set(answer["answers"]) == {"category", "colour", "pattern", "tags", "size"}
assert len(answer["answers"]["category"]["scores"]) == 5
several = classify(list_of_images, top_k=1, tasks=["category", "colour"])
assert [set(a["answers"]) for a in several] == [{"category", "colour"}] * 3
""",
    "data": """
batch = next(iter(loader))  # left half-read at exit on purpose: the streams must still close quietly
assert batch["pixel_values"].shape == (64, 3, 32, 32) and set(batch["labels"]) >= set(batch["tasks"])
assert model.config.task_names == mixture.task_names
""",
    "training": """
assert trainer.state.global_step == 600 and trainer.state.best_model_checkpoint is not None
# The last line resumed a finished run: nothing more trained or saved.
assert sorted(p.name for p in Path("outputs/shop").glob("checkpoint-*")) == [f"checkpoint-{s}" for s in (200, 400, 600)]
""",
}


DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def readme_snippets() -> dict[str, tuple[str, list[str], bool]]:
    """Snippet id -> (code, the ids it runs after, slow); skipped snippets under 'skip: WHY'."""
    snippets = {}
    for document in DOCUMENTS:
        text = document.read_text()
        marked = MARKED_SNIPPET.findall(text)
        assert text.count("```python") == len(marked), f"a ```python block in {document.name} has no marker"
        snippets.update(_snippets_of(text, taken=snippets))
    return snippets


def _snippets_of(text: str, taken) -> dict[str, tuple[str, list[str], bool]]:
    snippets = {}
    for match in MARKED_SNIPPET.finditer(text):
        name, *options = [part.strip() for part in match["marker"].split(",")]
        after = next((option.split()[1:] for option in options if option.startswith("after ")), [])
        if name == "skip":
            name = f"skip: {', '.join(options)}"
        assert name not in taken and name not in snippets, f"two snippets are named {name!r}"
        snippets[name] = (match["code"], after, "slow" in options)
    return snippets


SNIPPETS = readme_snippets()


def snippet_params():
    for name, (_, _, slow) in SNIPPETS.items():
        marks = [pytest.mark.skip(reason=name)] if name.startswith("skip") else [pytest.mark.slow] if slow else []
        yield pytest.param(name, id=name.split(":")[0] if name.startswith("skip") else name, marks=marks)


def test_every_snippet_that_runs_has_checks():
    assert sorted(name for name in SNIPPETS if not name.startswith("skip")) == sorted(CHECKS)
    assert set(GIVEN) <= set(CHECKS)


@pytest.mark.parametrize("name", list(snippet_params()))
def test_readme_snippet_runs_as_written(name, tmp_path):
    code, after, _ = SNIPPETS[name]
    earlier = [SNIPPETS[snippet][0] for snippet in after]
    program = "\n".join(["from pathlib import Path", *earlier, GIVEN.get(name, ""), code, CHECKS[name]])
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=900
    )
    print(result.stdout[-2000:])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Exception ignored" not in result.stderr, result.stderr[-4000:]


# -- the README's shell commands (the "Large catalogues" section) -------------------------------------------------

MARKED_SHELL = re.compile(r"<!-- readme-shell: (?P<marker>[^>]*?) -->\n```bash\n(?P<code>.*?)```", re.S)
LARGE_CATALOGUES = ROOT / "docs" / "large-catalogues.md"

# What a block is given before it runs (the README says where it comes from): a shop's own catalogue table.
SHELL_GIVEN = {
    "own-photos": "python -c \"from tests.own_catalogue import write_catalogue; write_catalogue('shop', 320)\"",
    # The model the own-photos walkthrough trains, untrained here: this block tags, it does not score.
    "tag-catalogue": 'python -c "from tests.own_catalogue import write_catalogue, write_untrained_model; '
    "write_catalogue('shop', 320); write_untrained_model('shop/products.csv', 'outputs/products')\"",
}
SHELL_GIVEN["serve"] = SHELL_GIVEN["tag-catalogue"]

# What each block promises, checked in its folder after it ran (Python, `out` holding its output).
SHELL_CHECKS = {
    "own-photos": """
import re
recipe = Path("recipe.yaml").read_text()
assert 'labels: ["cap", "mug", "shoe", "tshirt"]' in recipe and "max_bad_image_fraction: 0.03" in recipe
config = json.loads(Path("outputs/products/config.json").read_text())
assert [record["split"] for record in config["training_data"]] == ["train"]
rows = re.findall(r"^(\\w+) +(\\w+) +(-?[\\d.]+) +(-?[\\d.]+)$", out, re.M)  # task, metric, score, chance
scores = {f"{task} {metric}": (float(score), float(chance)) for task, metric, score, chance in rows}
# The test split's 35 rows (README: category 0.94, colour 1.00, tags 0.80, price R^2 0.80), far above chance.
for row, least in {"category accuracy": 0.75, "colour accuracy": 0.9, "tags micro_f1": 0.65, "price r2": 0.5}.items():
    score, chance = scores[row]
    assert score > least and score > chance + 0.25, (row, score, chance)
assert "shop/photos/p0001.jpg\\n  category" in out
""",
    "tag-catalogue": """
import pyarrow.parquet as pq
summaries = [json.loads(Path(f"outputs/{run}/predict_summary.json").read_text()) for run in ("tags", "tags-onnx")]
for summary in summaries:  # README: 320 rows in, 316 tagged, the two missing and the two broken photos listed
    assert (summary["rows_in"], summary["rows_out"], summary["shards"]) == (320, 316, 4), summary
    assert sum(summary["dropped_by_reason"].values()) == 4 and summary["dropped_by_reason"]["FileNotFoundError"] == 2
torch_rows, onnx_rows = (pq.read_table(f"outputs/{run}/predictions").to_pylist() for run in ("tags", "tags-onnx"))
assert [row["sku"] for row in onnx_rows] == [row["sku"] for row in torch_rows]
assert [row["category"] for row in onnx_rows] == [row["category"] for row in torch_rows]
assert set(torch_rows[0]) == {"sku", "image_path", "category", "category_scores", "colour", "colour_scores", "tags",
                              "tags_scores", "price"}
assert "category_scores" in out and len(Path("outputs/tags/bad_images.jsonl").read_text().splitlines()) == 4
""",
    "serve": """
answer = json.loads(out.strip().splitlines()[-1])
assert answer["model"] == "products" and answer["revision"].startswith("sha256:")
prediction = answer["predictions"][0]["answers"]
assert answer["predictions"][0]["schema_version"] == 1
assert set(prediction) == {"category", "colour", "tags", "price"} and len(prediction["category"]["scores"]) == 3
assert isinstance(prediction["tags"]["labels"], list) and isinstance(prediction["price"]["value"], float)
""",
    "prepare": """
summary = json.loads(Path("outputs/catalogue-shards/prepare_summary.json").read_text())
assert (summary["rows_in"], summary["rows_out"], len(summary["shards"])) == (2000, 1982, 12)  # 4 partitions x 3 splits
assert summary["splits"] == {"train": 1589, "validation": 198, "test": 195}
assert json.loads(Path("outputs/catalogue/all_results.json").read_text())["eval_colour_accuracy"] > 0.9
""",
    "object-storage": """
assert "rows: 2000 in, 1982 out, 18 dropped" in out
assert json.loads(Path("outputs/catalogue-s3/all_results.json").read_text())["train_loss"] > 0
""",
    "workers": """
assert "draft mode" in out and "workers per GPU" in out
""",
    "multi-node": """
assert "| devices | 2 |" in Path("outputs/multi-node/README.md").read_text()
assert json.loads(Path("outputs/multi-node/trainer_state.json").read_text())["global_step"] == 20
""",
}


def readme_shell_blocks() -> dict[str, tuple[str, list[str], bool]]:
    """The marked bash blocks of the README (its own-photos walkthrough) and of docs/large-catalogues.md, where
    every bash block is marked."""
    section = LARGE_CATALOGUES.read_text()
    assert section.count("```bash") == len(MARKED_SHELL.findall(section)), "a ```bash block there has no marker"
    blocks = {}
    for document in (ROOT / "README.md", LARGE_CATALOGUES):
        for match in MARKED_SHELL.finditer(document.read_text()):
            name, *options = [part.strip() for part in match["marker"].split(",")]
            after = next((option.split()[1:] for option in options if option.startswith("after ")), [])
            blocks[name] = (match["code"], after, "slow" in options)
    return blocks


def test_every_marked_command_block_is_run_and_checked():
    assert sorted(readme_shell_blocks()) == sorted(SHELL_CHECKS)


# Seconds: serving one photo with a tiny model. (The tagging walkthrough, a minute with Spark's start-up and an
# ONNX export, is slow; tests/test_predict_catalogue.py and test_onnx_export.py check the same on smaller data.)
FAST_SHELL_BLOCKS = ["serve"]


@pytest.mark.parametrize("name", FAST_SHELL_BLOCKS)
def test_readme_shell_block_runs_as_written(name, tmp_path):
    run_shell_block(name, tmp_path)


# Minutes each (Spark, training, the bench), and each repeats what a fast test checks on smaller data:
# test_prepare, test_object_storage, test_draft_decoding / test_bench_scripts, test_multi_node.
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(SHELL_CHECKS) - set(FAST_SHELL_BLOCKS)))
def test_readme_shell_block(name, tmp_path):
    run_shell_block(name, tmp_path)


def run_shell_block(name, tmp_path):
    """Runs the marked bash block `name` (after the blocks it names) in `tmp_path`, then its checks."""
    blocks = readme_shell_blocks()
    for folder in ("recipes", "bench"):
        (tmp_path / folder).symlink_to(ROOT / folder)
    env = {**ENV, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    out = ""
    if name in SHELL_GIVEN:
        env["PYTHONPATH"] = str(ROOT)
        subprocess.run(["bash", "-c", SHELL_GIVEN[name]], cwd=tmp_path, env=env, check=True)
    for block in [*blocks[name][1], name]:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", blocks[block][0]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert result.returncode == 0, f"{block}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        out = result.stdout
    check = "import json\nfrom pathlib import Path\nimport sys\nout = sys.stdin.read()\n" + SHELL_CHECKS[name]
    result = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, input=out, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
