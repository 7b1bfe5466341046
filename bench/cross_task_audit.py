"""Cross-task evidence: does another task's given label help find a task's label errors?

    python bench/cross_task_audit.py          # bench/results/cross_task_audit.md

A catalogue where price follows category (the test suite's own-catalogue generator, tests/own_catalogue.py: drawn
products, not the built-in data), 1,200 rows, 60 category labels flipped; a model trained on the noisy table (the
demo recipe at 64 px); 5-fold heads on its embeddings alone (what `mtl-hf audit` does), against the same heads given
each row's other labels as well (log price, colour one-hot), so that a "mug" priced like a coat stands out.
"""

import csv
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from mtl_hf import MultiTaskViTModel  # noqa: E402
from mtl_hf.commands.main import main as cli  # noqa: E402
from mtl_hf.data import ImageTransforms, TaskSource  # noqa: E402
from mtl_hf.data.backbone_processor import model_image_processor  # noqa: E402
from mtl_hf.metrics.label_issues import embedded_rows, out_of_fold, ranked_issues  # noqa: E402
from tests.own_catalogue import write_catalogue  # noqa: E402

root = REPO / "outputs" / "bench-cross-task"
shutil.rmtree(root, ignore_errors=True)
started = time.perf_counter()
lines = []
table = write_catalogue(root, 1200, broken=False, blank=0.0)
rows = list(csv.DictReader(open(table)))
rng = np.random.default_rng(0)
cats = sorted({r["category"] for r in rows})
flipped = set()
for i in rng.choice(len(rows), 60, replace=False):
    rows[i]["category"] = [c for c in cats if c != rows[i]["category"]][rng.integers(len(cats) - 1)]
    flipped.add(rows[i]["sku"])
noisy = root / "noisy.csv"
with open(noisy, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
tasks = {"category": "category", "colour": "colour", "price": "price"}
backbone = {"model_type": "vit", "image_size": 64, "patch_size": 8, "hidden_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 128}  # fmt: skip
recipe = [str(REPO / "recipes" / "configs" / "demo.yaml"), "--dataset", str(noisy), "--tasks", json.dumps(tasks)]
table_flags = ["--image_column", "image_path", "--id_column", "sku", "--dataset_options", "{}"]
run_flags = ["--output_dir", str(root / "model"), "--report_to", "none", "--save_strategy", "no"]
code = cli(["train", *recipe, *table_flags, *run_flags, "--backbone_config", json.dumps(backbone)])
assert code == 0
model = MultiTaskViTModel.from_pretrained(root / "model").eval()
transform = ImageTransforms.from_image_processor(model_image_processor(str(root / "model"), model.config)).eval()
source = TaskSource(str(noisy), tasks, image_column="image_path", id_column="sku", split="train")
emb = embedded_rows(model, transform, source, 64)
spec = model.config.get_task("category")
skus = [source.dataset[int(p)]["sku"] for p in emb.positions]
planted = flipped & set(skus)
features = emb.features["category"]
price = emb.targets["price"].reshape(-1, 1)
colour = np.eye(model.config.get_task("colour").num_outputs)[emb.targets["colour"].astype(int)]
for name, extra in (
    ("embeddings alone", None),
    ("embeddings + price, colour given", np.hstack([np.log(price), colour])),
):
    x = features if extra is None else np.hstack([features, extra * 3])
    probs = out_of_fold(spec, x, emb.targets["category"], 5)
    issues = ranked_issues(spec, probs, emb.targets["category"])
    ranked = [skus[i["index"]] for i in issues]
    top = ranked[: len(planted)]
    found = set(ranked) & planted
    if extra is None:
        base, gained, lost = found, "-", "-"
    else:
        gained, lost = len(found - base), len(base - found)
    lines.append(
        f"| {name} | {len(planted)} | {len(ranked)} | {len(set(top) & planted) / len(top):.2f} | "
        f"{len(found) / len(planted):.2f} | {gained} | {lost} |"
    )
report = "\n".join(
    [
        f"# bench/cross_task_audit.py, {time.strftime('%Y-%m-%d')}",
        "",
        f"`python bench/cross_task_audit.py` ({time.perf_counter() - started:.0f} s). "
        + __doc__.split("\n\n", 2)[2].strip(),
        "",
        "| out-of-sample heads on | flipped among the audited rows (N) | suspects named | "
        "precision (= recall) in top N | recall of all named | flips found only with the other labels | "
        "flips found only without them |",
        "|---|---|---|---|---|---|---|",
        *lines,
        "",
    ]
)
(root / "cross_task_audit.md").write_text(report)
print(report)
