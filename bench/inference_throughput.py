"""Inference throughput on product JPEGs, in one run: the pipeline one image at a time vs `mtl-hf predict`
(batched, DataLoader workers, draft decoding) vs ONNX Runtime, and evaluation by worker count.

    python bench/inference_throughput.py [--images 256] [--image_size 800] [--batch_size 32] [--repeats 3]
        [--models "ViT-Tiny/16,data-bound stand-in"] [--sections tagging,forward,evaluate,precision]

The catalogue is bench/jpeg_decode.py's: shop photos drawn at `--image_size` px with camera grain, saved as
JPEG (quality 90) in a folder. Two models with the shop's four tasks, built from config (speed does not depend on
the weights' values), at 224 px:

- ViT-Tiny/16 (5.5M parameters: hidden 192, 12 layers, 3 heads): on this CPU its forward takes most of the time;
- a data-bound stand-in (ViT, patch 32, hidden 64, 2 layers): a forward that costs little beside decoding a
  photo, as a ViT-B/16's does on a data-centre GPU (bench/jpeg_decode.py), so that the data path is measured.

For each model:

1. Tagging the folder, images/s: a loop calling `pipeline("multi-task-image-classification")` on one path at a
   time (what a user writes without this package's batch path), against `mtl-hf predict FOLDER --output OUT`
   (`tag_catalogue`) with 0, 1 and 2 workers, and `--engine onnx` with 0 and 1. Model loading is outside every
   timing. Each configuration runs `--repeats` times, in turn; the table gives the median, and each ratio is the
   median of the ratios within a repeat.
2. The forward alone on one batch (`--batch_size` x 3 x 224 x 224): PyTorch eager vs ONNX Runtime, images/s.
3. `MultiTaskTrainer.evaluate` over the same photos (as a labelled source) with 0, 1 and 2 DataLoader workers;
   0 workers decode in the main process, as evaluation did before it moved onto the batched inference path.
4. Precision (`--sections precision`; ViT-Small/16, hidden 384, 12 layers, 6 heads, 22M parameters, is one of
   `--models` for it): the forward on one batch with PyTorch fp32 and bf16 (autocast) and ONNX Runtime fp32 and int8
   (dynamic and static, as `mtl-hf export --quantize int8` makes them), images/s and the GFLOP/s they reach (the
   forward's floating-point operations counted by torch's FlopCounterMode, a multiply-add as two), against the
   machine's ceiling measured the same way: a 2048 x 2048 x 2048 matrix product in fp32 and bf16 (PyTorch) and int8
   (ONNX Runtime's MatMulInteger) on the same threads. Then `mtl-hf predict --engine onnx` end to end with the fp32
   and the int8 graph. The weights are random (speed does not depend on them); what int8 and bf16 do to the answers
   is the precision gate's to measure, on trained models (tests/test_quantization.py, bench/results/).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import PrinterCallback, ViTConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jpeg_decode import photos  # noqa: E402

from mtl_hf import MultiTaskTrainer, MultiTaskTrainingArguments, MultiTaskViTConfig, MultiTaskViTModel  # noqa: E402
from mtl_hf.data import ImageTransforms, TaskSource, load_shop_dataset  # noqa: E402
from mtl_hf.inference.onnx_export import export_onnx  # noqa: E402
from mtl_hf.inference.tagging import TaggingOptions, tag_catalogue  # noqa: E402

TASKS = ["category", "colour", "tags", "size"]
SECTIONS = ("tagging", "forward", "evaluate", "precision")
MODELS = {
    "ViT-Tiny/16": dict(
        image_size=224,
        patch_size=16,
        hidden_size=192,
        num_hidden_layers=12,
        num_attention_heads=3,
        intermediate_size=768,
    ),
    "ViT-Small/16": dict(
        image_size=224,
        patch_size=16,
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=1536,
    ),
    "data-bound stand-in": dict(
        image_size=224, patch_size=32, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
    ),
}


def build_catalogue(root: Path, count: int, image_size: int) -> Path:
    """The JPEG folder."""
    folder = root / "photos"
    folder.mkdir()
    for index, data in enumerate(photos(count, image_size)):
        (folder / f"{index:05d}.jpg").write_bytes(data)
    return folder


def build_model(root: Path, backbone: dict) -> Path:
    """A saved model (with its image processor) for the shop's tasks."""
    labelled = TaskSource(load_shop_dataset(64), TASKS)
    torch.manual_seed(0)
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=ViTConfig(**backbone), tasks=labelled.task_specs))
    model.save_pretrained(root / "model")
    ImageTransforms(size=(224, 224)).image_processor().save_pretrained(root / "model")
    return root / "model"


def pipeline_loop(model: Path, paths: list[Path]):
    from transformers import pipeline

    classify = pipeline("multi-task-image-classification", model=str(model), device=-1)

    def run() -> float:
        started = time.perf_counter()
        for path in paths:
            classify(str(path))
        return len(paths) / (time.perf_counter() - started)

    return run


def predict_run(model: Path, folder: Path, root: Path, *, workers: int, batch_size: int, engine: str = "torch"):
    counter = iter(range(10**6))

    def run() -> float:
        options = TaggingOptions(batch_size=batch_size, num_workers=workers)
        out = root / f"out-{model.name}-{engine}-{workers}-{next(counter)}"
        summary = tag_catalogue(str(model), str(folder), str(out), options, engine=engine)
        return summary["images_per_second"]

    return run


def forward_only(model: Path, onnx_folder: Path, batch_size: int, repeats: int) -> dict[str, float]:
    import onnxruntime

    network = MultiTaskViTModel.from_pretrained(model).eval()
    session = onnxruntime.InferenceSession(str(onnx_folder / "model.onnx"), providers=["CPUExecutionProvider"])
    pixels = torch.randn(batch_size, 3, 224, 224)
    timings = {"PyTorch eager": [], "ONNX Runtime": []}
    with torch.no_grad():
        network(pixel_values=pixels)
        session.run(None, {"pixel_values": pixels.numpy()})
        for _ in range(repeats):
            started = time.perf_counter()
            network(pixel_values=pixels)
            timings["PyTorch eager"].append(batch_size / (time.perf_counter() - started))
            started = time.perf_counter()
            session.run(None, {"pixel_values": pixels.numpy()})
            timings["ONNX Runtime"].append(batch_size / (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in timings.items()}


def evaluation_run(model: Path, folder: Path, root: Path, *, workers: int, batch_size: int):
    # The shop rows the photos were drawn from (same indices): their labels, the JPEG files as the images.
    files = sorted(folder.glob("*.jpg"))
    table = load_shop_dataset(len(files)).remove_columns("image").add_column("image", [str(p) for p in files])
    source = TaskSource(table, TASKS, name="photos")
    network = MultiTaskViTModel.from_pretrained(model)
    from transformers import AutoImageProcessor

    args = MultiTaskTrainingArguments(
        output_dir=str(root / f"eval-{workers}"),
        per_device_eval_batch_size=batch_size,
        dataloader_num_workers=workers,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
    )
    trainer = MultiTaskTrainer(network, args, processing_class=AutoImageProcessor.from_pretrained(model))
    trainer.remove_callback(PrinterCallback)  # the metrics are not what this bench reports

    def run() -> float:
        return trainer.evaluate(source)["eval_samples_per_second"]

    return run


def compare(runs: dict[str, callable], repeats: int, baseline: str) -> list[tuple[str, float, float]]:
    speeds = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            speeds[name].append(run())
    rows = []
    for name, values in speeds.items():
        ratios = [value / base for value, base in zip(values, speeds[baseline], strict=True)]
        rows.append((name, statistics.median(values), statistics.median(ratios)))
    return rows


def print_table(title: str, rows, baseline: str) -> None:
    print(f"\n{title}\n")
    print(f"| configuration | images/s | vs {baseline} |")
    print("|---|---:|---:|")
    for name, speed, ratio in rows:
        print(f"| {name} | {speed:.1f} | {ratio:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--image_size", type=int, default=800)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--models", default="ViT-Tiny/16,data-bound stand-in", help=f"comma-separated, of {list(MODELS)}"
    )
    parser.add_argument("--sections", default="tagging,forward,evaluate", help=f"comma-separated, of {SECTIONS}")
    args = parser.parse_args()
    for kind, given, known in (("model", args.models, MODELS), ("section", args.sections, SECTIONS)):
        unknown = [name for name in given.split(",") if name not in known]
        if unknown:
            parser.error(f"unknown {kind}(s) {unknown}; choose from {list(known)}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {args.images} JPEGs at {args.image_size} px, models at 224 px, "
        f"batch {args.batch_size}, median of {args.repeats} repeats"
    )
    with tempfile.TemporaryDirectory() as scratch:
        folder = build_catalogue(Path(scratch), args.images, args.image_size)
        for name in args.models.split(","):
            backbone = MODELS[name]
            root = Path(scratch) / name.replace("/", "-").replace(" ", "-")
            root.mkdir()
            print(f"\n## {name}")
            measure(build_model(root, backbone), folder, root, args)


def measure(model: Path, folder: Path, root: Path, args: argparse.Namespace) -> None:
    sections = args.sections.split(",")
    export_onnx(str(model), str(root / "onnx"))
    if "tagging" in sections:
        tagging(model, folder, root, args)
    if "forward" in sections:
        forward = forward_only(model, root / "onnx", args.batch_size, max(3, args.repeats))
        print(f"\nForward only, batch {args.batch_size} x 3 x 224 x 224 (median of {max(3, args.repeats)}):\n")
        print("| engine | images/s | vs PyTorch eager |")
        print("|---|---:|---:|")
        for name, speed in forward.items():
            print(f"| {name} | {speed:.1f} | {speed / forward['PyTorch eager']:.2f}x |")
    if "evaluate" in sections:
        evaluations = {
            f"evaluate, {workers} workers": evaluation_run(
                model, folder, root, workers=workers, batch_size=args.batch_size
            )
            for workers in (0, 1, 2)
        }
        baseline = "evaluate, 0 workers"
        print_table(
            "MultiTaskTrainer.evaluate over the same JPEGs (0 workers: decoding in the main process, as before)",
            compare(evaluations, args.repeats, baseline),
            baseline,
        )
    if "precision" in sections:
        precision(model, folder, root, args)


def tagging(model: Path, folder: Path, root: Path, args: argparse.Namespace) -> None:
    paths = sorted(folder.glob("*.jpg"))
    runs = {"pipeline, one image at a time": pipeline_loop(model, paths)}
    for workers in (0, 1, 2):
        runs[f"mtl-hf predict, {workers} workers"] = predict_run(
            model, folder, root, workers=workers, batch_size=args.batch_size
        )
    for workers in (0, 1):
        runs[f"mtl-hf predict --engine onnx, {workers} workers"] = predict_run(
            root / "onnx", folder, root, workers=workers, batch_size=args.batch_size, engine="onnx"
        )
    baseline = "pipeline, one image at a time"
    rows = compare(runs, args.repeats, baseline)
    print_table("Tagging a folder of JPEGs (decode, transform, forward, answers)", rows, baseline)


# -- precision ---------------------------------------------------------------------------------------


def forward_flops(model: Path, batch_size: int) -> float:
    """The forward's floating-point operations per image (a multiply-add counted as two)."""
    from torch.utils.flop_counter import FlopCounterMode

    network = MultiTaskViTModel.from_pretrained(model).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(pixel_values=torch.randn(batch_size, 3, 224, 224))
    return counter.get_total_flops() / batch_size


def int8_folder(onnx_folder: Path, root: Path, method: str, batch_size: int) -> Path:
    """The export folder with its graph quantised by `method`, as `export --quantize int8` makes it (no gate: the
    weights are random)."""
    import shutil

    from mtl_hf.inference.quantization import quantize_graph

    target = root / f"onnx-int8-{method}"
    shutil.copytree(onnx_folder, target)
    calibration = [torch.randn(batch_size, 3, 224, 224).numpy() for _ in range(2)] if method == "static" else ()
    quantize_graph(onnx_folder / "model.onnx", target / "model.onnx", method, calibration)
    return target


def ceiling(repeats: int, size: int = 2048) -> dict[str, float]:
    """GFLOP/s (GOP/s for int8) of a `size`-cubed matrix product: PyTorch fp32 and bf16, ONNX Runtime int8."""
    import numpy as np
    import onnxruntime
    from onnx import TensorProto, helper

    flops = 2 * size**3
    measured = {}
    for name, dtype in (("fp32 (PyTorch)", torch.float32), ("bf16 (PyTorch)", torch.bfloat16)):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        torch.mm(a, b)
        measured[name] = max(flops / _seconds(lambda a=a, b=b: torch.mm(a, b)) for _ in range(repeats)) / 1e9
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
        "int8_matmul",
        [
            helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size]),
            helper.make_tensor_value_info("b", TensorProto.INT8, [size, size]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [size, size])],
    )
    session = onnxruntime.InferenceSession(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    rng = np.random.default_rng(0)
    feeds = {
        "a": rng.integers(0, 255, (size, size), dtype=np.uint8),
        "b": rng.integers(-127, 127, (size, size), dtype=np.int8),
    }
    session.run(None, feeds)
    measured["int8 (ONNX Runtime MatMulInteger)"] = (
        max(flops / _seconds(lambda: session.run(None, feeds)) for _ in range(repeats)) / 1e9
    )
    return measured


def _seconds(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def precision(model: Path, folder: Path, root: Path, args: argparse.Namespace) -> None:
    import onnxruntime

    repeats = max(3, args.repeats)
    batch = args.batch_size
    flops = forward_flops(model, batch)
    network = MultiTaskViTModel.from_pretrained(model).eval()
    pixels = torch.randn(batch, 3, 224, 224)
    graphs = {"ONNX Runtime fp32": root / "onnx"}
    for method in ("dynamic", "static"):
        graphs[f"ONNX Runtime int8 ({method})"] = int8_folder(root / "onnx", root, method, batch)
    sessions = {
        name: onnxruntime.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
        for name, path in graphs.items()
    }
    engines = {
        "PyTorch fp32": lambda: network(pixel_values=pixels),
        "PyTorch bf16 (autocast)": lambda: _autocast(network, pixels),
        **{
            name: (lambda s=session: s.run(None, {"pixel_values": pixels.numpy()}))
            for name, session in sessions.items()
        },
    }
    speeds = {name: [] for name in engines}
    with torch.no_grad():
        for work in engines.values():
            work()  # warm-up
        for _ in range(repeats):  # in turn, so that a disturbance hits every engine alike
            for name, work in engines.items():
                speeds[name].append(batch / _seconds(work))
    limits = ceiling(repeats)
    print(
        f"\nPrecision: the forward on one batch of {batch} x 3 x 224 x 224 (median of {repeats}), "
        f"{flops / 1e9:.2f} GFLOP an image; the machine's matrix-product ceiling on {torch.get_num_threads()} "
        f"threads: " + ", ".join(f"{name} {value:.0f} GFLOP/s" for name, value in limits.items()) + "\n"
    )
    print("| engine | images/s | vs ONNX Runtime fp32 | GFLOP/s | share of its ceiling |")
    print("|---|---:|---:|---:|---:|")
    reference = statistics.median(speeds["ONNX Runtime fp32"])
    for name, values in speeds.items():
        speed = statistics.median(values)
        kind = "int8" if "int8" in name else "bf16" if "bf16" in name else "fp32"
        top = next(value for key, value in limits.items() if key.startswith(kind))
        achieved = speed * flops / 1e9
        print(f"| {name} | {speed:.1f} | {speed / reference:.2f}x | {achieved:.0f} | {achieved / top:.0%} |")
    runs = {
        f"mtl-hf predict --engine onnx, {kind} graph": predict_run(
            graphs[name], folder, root, workers=0, batch_size=batch, engine="onnx"
        )
        for kind, name in (("fp32", "ONNX Runtime fp32"), ("int8 dynamic", "ONNX Runtime int8 (dynamic)"))
    }
    baseline = "mtl-hf predict --engine onnx, fp32 graph"
    print_table(
        "Tagging the JPEG folder end to end, ONNX Runtime fp32 against int8",
        compare(runs, args.repeats, baseline),
        baseline,
    )


def _autocast(network, pixels):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return network(pixel_values=pixels)


if __name__ == "__main__":
    main()
