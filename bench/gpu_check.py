"""Every balancing method for a few training steps on CUDA in bf16: does it run, how fast, how much memory; and
tagging photos on the batched inference path in bf16 against the CPU's float32 answers.

    python bench/gpu_check.py                      # 1 process on GPU 0, then 2 processes if 2 GPUs are present
    python bench/gpu_check.py --device cpu         # the same steps on the CPU (what CI can run)
    python bench/gpu_check.py --methods equal,famo,upgrad --steps 4

Prints one row per method (and gradient space): ok or failed (with the error), median step time,
peak device memory, and the host syncs per step that mtl_hf's own code caused (CUDA's sync debug
mode, attributed by source file; gradient methods make one by design, the Gramian's copy to the
host, and logging steps one more). On a machine without CUDA the CUDA rows say so and are skipped.
Then the inference check: a model tags 512 photos (`Tagger`, bf16 autocast on CUDA), timed after a warm-up pass,
with the share of the category answers that match the CPU's float32 ones, the largest difference of a score,
and the host syncs per batch (one by design: the batch's logits come to the host in one copy).
About 2 minutes on one data-centre GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings

import torch
from transformers import TrainerCallback, ViTConfig

from mtl_hf import MultiTaskTrainer, MultiTaskTrainingArguments, MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.balancing import WEIGHTING_METHODS
from mtl_hf.data import TaskSource, load_shop_dataset

TASKS = ["category", "colour", "pattern", "tags", "size"]
BACKBONE = dict(
    image_size=64, patch_size=8, hidden_size=192, num_hidden_layers=6, num_attention_heads=3, intermediate_size=768
)
BATCH = 32
LOGGING_STEPS = 1000  # no logging step inside the timed window


class StepTimer(TrainerCallback):
    def __init__(self, device: torch.device):
        self.device, self.stamps = device, []

    def on_step_end(self, args, state, control, **kwargs):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.stamps.append(time.perf_counter())

    def median(self) -> float:
        gaps = [b - a for a, b in zip(self.stamps[1:], self.stamps[2:], strict=False)]  # the first step warms up
        return statistics.median(gaps) if gaps else float("nan")


def cases(methods: list[str]) -> list[tuple[str, str]]:
    return [
        (name, space)
        for name in methods
        for space in (
            ("representation", "parameters") if WEIGHTING_METHODS[name].uses_gradients else ("representation",)
        )
    ]


def run_case(name: str, space: str, device: torch.device, steps: int, out: str) -> dict:
    """Trains `steps` steps; returns ok / error, seconds per step, peak memory and mtl_hf's syncs per step."""
    data = load_shop_dataset(steps * BATCH * 2, seed=0, missing_rate=0.2, image_size=64)
    source = TaskSource(data, TASKS, name="shop")
    torch.manual_seed(0)
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=ViTConfig(**BACKBONE), tasks=source.task_specs))
    timer = StepTimer(device)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    args = MultiTaskTrainingArguments(
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=BATCH,
        learning_rate=1e-3,
        bf16=True,
        use_cpu=device.type == "cpu",
        report_to="none",
        save_strategy="no",
        logging_steps=LOGGING_STEPS,
        disable_tqdm=True,
        seed=0,
        weighting=name,
        gradient_space=space,
        batch_mode="mixed",
        **({"ddp_backend": "gloo"} if distributed and device.type == "cpu" else {}),
    )
    syncs = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        trainer = MultiTaskTrainer(model, args, train_dataset=source, callbacks=[timer])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("warn")
            try:
                trainer.train()
            finally:
                if device.type == "cuda":
                    torch.cuda.set_sync_debug_mode("default")
        syncs = [w for w in caught if "synchroniz" in str(w.message) and f"{os.sep}mtl_hf{os.sep}" in w.filename]
        error = None
    except Exception as exception:  # a failed method is a row of the table, not the end of the check
        error = f"{type(exception).__name__}: {str(exception).splitlines()[0][:150]}"
        traceback.print_exc(file=sys.stderr)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    places = sorted({f"{os.path.basename(w.filename)}:{w.lineno}" for w in syncs})
    return {
        "method": name,
        "space": space,
        "ok": error is None,
        "error": error,
        "seconds": timer.median(),
        "peak_gib": peak,
        "syncs_per_step": len(syncs) / steps,
        "sync_places": places,
    }


def child(device_name: str, methods: list[str], steps: int, result_file: str | None) -> list[dict]:
    if device_name == "cuda" and "LOCAL_RANK" in os.environ:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    device = torch.device(device_name, torch.cuda.current_device()) if device_name == "cuda" else torch.device("cpu")
    results = []
    with tempfile.TemporaryDirectory() as out:
        for name, space in cases(methods):
            results.append(run_case(name, space, device, steps, out))
    if result_file and int(os.environ.get("RANK", "0")) == 0:
        with open(result_file, "w") as file:
            json.dump(results, file)
    return results


def two_processes(methods: list[str], steps: int) -> list[dict] | str:
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or "accelerate"
    with tempfile.TemporaryDirectory() as out:
        result_file = os.path.join(out, "results.json")
        command = [
            accelerate,
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--mixed_precision",
            "bf16",
            __file__,
            "--child",
            "cuda",
            "--methods",
            ",".join(methods),
            "--steps",
            str(steps),
            "--result-file",
            result_file,
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if result.returncode != 0 or not os.path.exists(result_file):
            return f"accelerate launch failed (exit {result.returncode}): {result.stderr.strip().splitlines()[-1:]}"
        with open(result_file) as file:
            return json.load(file)


def inference_check(device: torch.device, photos: int = 512, batch: int = 64) -> dict:
    """Tags `photos` shop photos on `device` and on the CPU (float32): speed, agreement, syncs per batch."""
    import io

    import pyarrow as pa

    from mtl_hf.data import ImageTransforms
    from mtl_hf.inference.tagger import Tagger, TaggingOptions

    cells = []
    for image in load_shop_dataset(photos, seed=1, image_size=64)["image"]:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        cells.append({"bytes": buffer.getvalue(), "path": None})
    table = pa.table({"image": pa.array(cells)})
    options = TaggingOptions(batch_size=batch, num_workers=0)
    with tempfile.TemporaryDirectory() as folder:
        specs = TaskSource(load_shop_dataset(64, image_size=64), TASKS).task_specs
        torch.manual_seed(0)
        MultiTaskViTModel(MultiTaskViTConfig(backbone_config=ViTConfig(**BACKBONE), tasks=specs)).save_pretrained(
            folder
        )
        ImageTransforms(size=(64, 64)).image_processor().save_pretrained(folder)

        def tag(tagger):
            return tagger.tag(table, options, image_column="image", base_folder=None, shard="check")[0]

        reference = tag(Tagger(folder, device="cpu"))
        tagger = Tagger(folder, device=str(device))
        tag(tagger)  # warm-up
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("warn")
            try:
                started = time.perf_counter()
                answers = tag(tagger)
                seconds = time.perf_counter() - started
            finally:
                if device.type == "cuda":
                    torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message) and f"{os.sep}mtl_hf{os.sep}" in w.filename]
    same = sum(a == b for a, b in zip(answers["category"].to_pylist(), reference["category"].to_pylist(), strict=True))
    scores = [
        abs(a[0]["score"] - b[0]["score"])
        for a, b in zip(answers["category_scores"].to_pylist(), reference["category_scores"].to_pylist(), strict=True)
    ]
    return {
        "device": str(device),
        "images_per_second": photos / seconds,
        "agreement": same / photos,
        "largest_score_difference": max(scores),
        "syncs_per_batch": len(syncs) / -(-photos // batch),
        "sync_places": sorted({f"{os.path.basename(w.filename)}:{w.lineno}" for w in syncs}),
    }


def print_inference(row: dict) -> None:
    print(f"\nTagging 512 photos on {row['device']} (bf16 autocast on CUDA) vs the CPU in float32\n")
    print("| device | images/s | category answers as on the CPU | largest score difference | syncs/batch |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| {row['device']} | {row['images_per_second']:.1f} | {row['agreement']:.3f} | "
        f"{row['largest_score_difference']:.2e} | {row['syncs_per_batch']:.2f} |"
    )
    if row["sync_places"]:
        print(f"syncs at {', '.join(row['sync_places'])}")


def print_table(title: str, rows: list[dict] | str, methods: list[str]) -> None:
    print(f"\n{title}\n")
    print(f"| {'method':<30} | {'result':<60} | {'s/step':>7} | {'peak GiB':>8} | {'syncs/step':>10} |")
    print(f"|{'-' * 32}|{'-' * 62}|{'-' * 8}:|{'-' * 9}:|{'-' * 11}:|")
    if isinstance(rows, str):
        for name, space in cases(methods):
            print(f"| {name + ' (' + space + ')':<30} | {rows[:60]:<60} | {'-':>7} | {'-':>8} | {'-':>10} |")
        return
    for row in rows:
        label = f"{row['method']} ({row['space']})"
        result = "ok" if row["ok"] else f"FAILED {row['error']}"
        print(
            f"| {label:<30} | {result[:60]:<60} | {row['seconds']:>7.4f} | {row['peak_gib']:>8.2f} | "
            f"{row['syncs_per_step']:>10.2f} |"
        )
        if row["sync_places"]:
            print(f"|   syncs at {', '.join(row['sync_places'])[:150]} | | | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--methods", default=",".join(WEIGHTING_METHODS), help="comma-separated methods")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--child", choices=["cuda", "cpu"], help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = [name for name in methods if name not in WEIGHTING_METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; use some of {', '.join(WEIGHTING_METHODS)}")
    if args.child:
        child(args.child, methods, args.steps, args.result_file)
        return

    print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}, GPUs: {torch.cuda.device_count()}")
    has_cuda = torch.cuda.is_available()
    if args.device == "cuda" and not has_cuda:
        parser.error("--device cuda: this machine has no CUDA device")
    if args.device == "cpu" or (args.device == "auto" and not has_cuda):
        if not has_cuda:
            print_table("CUDA, 1 process, bf16", "skipped: no CUDA device on this machine", methods)
        print_table("CPU, 1 process, bf16 autocast", child("cpu", methods, args.steps, None), methods)
        print_inference(inference_check(torch.device("cpu")))
        return
    print(f"GPU: {torch.cuda.get_device_name(0)}")
    print_table("CUDA, 1 process, bf16", child("cuda", methods, args.steps, None), methods)
    if torch.cuda.device_count() >= 2:
        print_table(
            "CUDA, 2 processes (accelerate launch --multi_gpu), bf16", two_processes(methods, args.steps), methods
        )
    else:
        print_table("CUDA, 2 processes", "skipped: fewer than 2 GPUs", methods)
    print_inference(inference_check(torch.device("cuda", 0)))


if __name__ == "__main__":
    main()
