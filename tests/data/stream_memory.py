"""Streams every row of a Parquet shop folder through the data path and reports memory (run as a script)."""

import json
import sys

from mtl_hf.data import ImageTransforms, MultiTaskCollator, TaskMixture, TaskSource


def resident_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main(folder: str) -> None:
    source = TaskSource(folder, ["category", "colour", "pattern", "tags", "size"], streaming=True, name="shop")
    mixture = TaskMixture(source, batch_size=64, when_exhausted="stop", shuffle_buffer_size=256, seed=0)
    loader = mixture.dataloader(MultiTaskCollator(mixture.task_specs, ImageTransforms(size=(32, 32))))
    before = resident_bytes()
    samples, rows = [], 0
    for batch in loader:
        rows += len(batch["pixel_values"])
        samples.append(resident_bytes())
    quarter = len(samples) // 4
    print(
        json.dumps(
            {
                "rows": rows,
                "declared_rows": source.num_rows,
                "before": before,
                "peak_first_quarter": max(samples[:quarter]),
                "peak": max(samples),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
