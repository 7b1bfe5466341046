"""What int8 and bf16 do to each task of trained models: the precision gate's figures on test photos.

    OMP_NUM_THREADS=2 python bench/precision_gate.py          # the published run (bench/results/precision_gate.md)
    python bench/precision_gate.py --quick                    # a few steps: a test of the script

The models are bench/trust.py's, trained as a user would (`mtl-hf train`, calibrated at the end of training), and
read back from its output folder where they are there:
- shop: recipes/configs/demo.yaml as it ships (5 tasks of the built-in product photos), tested on 2,000 photos drawn
  after its training and validation rows;
- digits-table: scikit-learn's 1,797 scanned digits as a catalogue table (not made by this package), its test split.

Per model, the full-precision ONNX graph against the int8 graphs `mtl-hf export --quantize int8` makes (dynamic;
static, its scales from the first 64 test photos, left out of its figures) and against PyTorch's bf16 autocast: per
task the gate's measure (top-1 agreement, the worst label's decision agreement, the largest regression error as a
share of the answers' spread) and the calibration error of each engine's scores, with the default limits
(`GateLimits`) marked.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from trust import trained_models  # noqa: E402

from mtl_hf.metrics.agreement import GateLimits, engine_agreement  # noqa: E402

OPEN = GateLimits(min_agreement=0.0, max_regression_error=math.inf, max_ece_increase=math.inf)
"""Limits every engine passes: this bench reports the figures the gate holds against the default limits."""


@dataclass
class TestRows:
    source: object
    description: str


def figures(model: Path, rows: TestRows) -> dict[str, dict]:
    """Per engine, per task: its `TaskAgreement` against full precision on `rows`."""
    import torch

    from mtl_hf.data.backbone_processor import model_image_processor
    from mtl_hf.data.transforms import ImageTransforms
    from mtl_hf.inference.onnx_export import OnnxModel, export_onnx
    from mtl_hf.inference.precision_gate import engine_logits
    from mtl_hf.inference.quantization import quantized_export
    from mtl_hf.models.mtl_vit.modeling_mtl_vit import MultiTaskViTModel

    network = MultiTaskViTModel.from_pretrained(model).eval()
    config, specs = network.config, network.config.task_specs
    measured = {}
    with tempfile.TemporaryDirectory() as scratch:
        full = Path(scratch) / "fp32"
        export_onnx(str(model), str(full))
        for method in ("dynamic", "static"):
            described = quantized_export(full, Path(scratch) / method, rows=rows, method=method, limits=OPEN)
            measured[f"int8 {method}"] = {row["task"]: row for row in described["quantization"]["gate"]["tasks"]}
        transform = ImageTransforms.from_image_processor(model_image_processor(str(model), config)).eval()
        reference, targets = engine_logits(OnnxModel(str(full)), specs, transform, rows.source)
        half, _ = engine_logits(
            network, specs, transform, rows.source, autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16)
        )
    bf16 = engine_agreement(specs, reference, half, calibration=config.calibration, targets=targets)
    measured["bf16"] = {task.task: task.record() for task in bf16}
    return measured


def table_rows(name: str, measured: dict[str, dict]) -> list[str]:
    limits = GateLimits()
    rows = []
    engines = list(measured)
    for task, first in measured[engines[0]].items():
        cells = []
        for engine in engines:
            row = measured[engine][task]
            passed = (
                row["value"] <= limits.max_regression_error
                if first["measure"].startswith("largest")
                else row["value"] >= limits.min_agreement
            )
            worst = f" ({row['worst_label']})" if row.get("worst_label") else ""
            cells.append(f"{row['value']:.4f}{worst}{'' if passed else ' **fails**'}")
        errors = [measured[engine][task]["ece"] for engine in engines if "ece" in measured[engine][task]]
        ece = " / ".join(f"{e['full_precision']:.4f} -> {e['this_engine']:.4f}" for e in errors)
        rows.append(f"| {name} | {task} | {first['measure']} | {' | '.join(cells)} | {ece} |")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="a few steps, few rows: a test of the script")
    parser.add_argument("--output_dir", default=str(REPO / "outputs" / "bench-trust"), help="bench/trust.py's")
    args = parser.parse_args(argv)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    shop_test, digits_test, _ = trained_models(output, args.quick, digits_test_rows=150)

    lines = []
    for name, folder, source, where in (
        ("shop", output / "shop", shop_test, "2,000 test photos drawn after the training rows"),
        ("digits-table", output / "digits-table", digits_test, "the table's test split"),
    ):
        measured = figures(folder, TestRows(source, where))
        lines += table_rows(name, measured)
    limits = GateLimits()
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    report = "\n".join(
        [
            f"# bench/precision_gate.py, {time.strftime('%Y-%m-%d')}",
            "",
            f"`OMP_NUM_THREADS={threads} python bench/precision_gate.py "
            f"{' '.join(argv if argv is not None else sys.argv[1:])}` ({time.perf_counter() - started:.0f} s this "
            "run; models already trained under the output folder are read back). Every engine against the "
            "full-precision ONNX graph on test photos (static int8: after the 64 that fixed its scales); "
            f"**fails**: outside the default gate (agreement >= {limits.min_agreement:g}, regression error <= "
            f"{limits.max_regression_error:g} of the spread, calibration error up by at most "
            f"{limits.max_ece_increase:g}).",
            "",
            "| model | task | measure | int8 dynamic | int8 static | bf16 | calibration error, fp32 -> this engine: "
            "int8 dynamic / int8 static (its rows) / bf16 |",
            "|---|---|---|---|---|---|---|",
            *lines,
            "",
        ]
    )
    (output / "precision_gate.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
