"""The benchmark scripts run where CI runs: the GPU check on a CPU-only machine, a short overhead table."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run(script, *arguments, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *arguments], capture_output=True, text=True, timeout=timeout, env=env
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def table_rows(output: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in output.splitlines()
        if line.startswith("| ") and not line.startswith("| method") and not line.startswith("| run")
    ]


def test_gpu_check_skips_cuda_and_trains_every_requested_method_on_the_cpu():
    output = run("gpu_check.py", "--methods", "equal,upgrad", "--steps", "3")
    assert "CUDA, 1 process, bf16" in output and "skipped: no CUDA device on this machine" in output
    cpu = output.split("CPU, 1 process, bf16 autocast")[1].split("Tagging 512 photos")[0]
    rows = {row[0]: row for row in table_rows(cpu)}
    assert set(rows) == {
        "equal (representation)",
        "upgrad (representation)",
        "upgrad (parameters)",
    }
    for label, row in rows.items():
        assert row[1] == "ok", (label, row)
        assert float(row[2]) > 0, label  # seconds per step
    tagging = output.split("Tagging 512 photos on cpu")[1]
    device, speed, agreement, difference, syncs = table_rows(tagging)[-1]
    assert device == "cpu" and float(speed) > 0 and float(agreement) == 1.0 and float(difference) == 0.0


def test_gpu_check_names_an_unknown_method():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, str(BENCH / "gpu_check.py"), "--methods", "gradnorm"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 2 and "unknown method(s) ['gradnorm']" in result.stderr


@pytest.mark.parametrize("methods", ["famo,pcgrad"])
def test_trainer_overhead_prints_a_row_per_method_and_gradient_space(methods):
    output = run("trainer_overhead.py", "--steps", "2", "--repeats", "1", "--methods", methods, "--no-vit-base")
    labels = [row[0] for row in table_rows(output)]
    for label in (
        "weighting famo, 4 tasks",
        "weighting famo (update_every=4), 4 tasks",
        "weighting pcgrad (representation), 4 tasks",
        "weighting pcgrad (parameters), 4 tasks",
    ):
        assert label in labels, labels
    ratios = {row[0]: row[2] for row in table_rows(output)}
    assert float(ratios["weighting pcgrad (parameters), 4 tasks"]) > 0


def test_jpeg_decode_bench_prints_both_decodes_and_the_workers_a_gpu_needs():
    output = run("jpeg_decode.py", "--images", "6", "--image_size", "480", "--repeats", "1")
    pattern = r"^(train|eval) +([\d.]+) +([\d.]+) +([\d.]+)x$"
    rows = {match[1]: match.groups()[1:] for match in re.finditer(pattern, output, re.MULTILINE)}
    assert set(rows) == {"train", "eval"}
    for row in rows.values():
        full, draft, ratio = map(float, row)
        assert full > 0 and draft > 0 and ratio > 0  # the median of per-repeat ratios
    assert "full decode mean 0.000, max 0.0" in output  # without draft mode the eval transform is the processor
    workers = [line.split()[2] for line in output.splitlines() if line.startswith(("  full decode", "  draft mode"))]
    assert len(workers) == 2 and all(int(count) >= 1 for count in workers)


def test_inference_throughput_bench_prints_every_configuration_against_its_baseline():
    output = run(
        "inference_throughput.py",
        "--images",
        "6",
        "--image_size",
        "256",
        "--repeats",
        "1",
        "--batch_size",
        "4",
        "--models",
        "data-bound stand-in",
    )
    rows = {row[0]: row[1:] for row in table_rows(output) if not row[0].startswith(("configuration", "engine"))}
    expected = [
        "pipeline, one image at a time",
        *(f"mtl-hf predict, {w} workers" for w in (0, 1, 2)),
        *(f"mtl-hf predict --engine onnx, {w} workers" for w in (0, 1)),
        "PyTorch eager",
        "ONNX Runtime",
        *(f"evaluate, {w} workers" for w in (0, 1, 2)),
    ]
    assert list(rows) == expected
    for name, (speed, ratio) in rows.items():
        assert float(speed) > 0 and ratio.endswith("x") and float(ratio[:-1]) > 0, name
    for baseline in ("pipeline, one image at a time", "PyTorch eager", "evaluate, 0 workers"):
        assert rows[baseline][1] == "1.00x"


def test_famo_analysis_tabulates_each_variant_and_the_scale_of_its_weights(tmp_path):
    output = run(
        "famo_analysis.py",
        *("--steps", "3", "--seeds", "1", "--variants", "equal,famo,famo scaled"),
        *("--output_dir", str(tmp_path)),
    )
    rows = {row[0]: row for row in table_rows(output) if row[0] != "variant"}
    assert list(rows) == ["equal", "famo", "famo scaled"]
    # the weights' sum over the first steps: equal's are 1 per task, FAMO's a weighted mean (1), scaled FAMO's 3
    assert [float(rows[name][-2]) for name in rows] == pytest.approx([3.0, 1.0, 3.0], abs=1e-3)
    assert (tmp_path / "digits" / "famo_analysis.png").read_bytes()[:4] == b"\x89PNG"
    logged = json.loads((tmp_path / "digits" / "famo" / "seed-0" / "result.json").read_text())
    assert logged["steps"] == [1, 2, 3] and set(logged["weights"]) == {"digit", "traits", "ink"}


@pytest.mark.slow  # three servers and a 640 MP request (about a minute); serve's limits themselves: tests/test_serve.py
def test_serve_hostile_runs_friendly_and_hostile_loads_and_the_limits_refuse_the_oversized():
    """A short bench/serve_hostile.py: three runs, no good request lost, and with the default limits the
    oversized photos and requests refused (413) where, the limits lifted, the 16 x 40 MP request is decoded."""
    output = run("serve_hostile.py", "--seconds", "4", "--clients", "10", timeout=400)
    rows = {row[0]: row for row in table_rows(output)}
    assert set(rows) == {"friendly", "hostile", "hostile, limits lifted"}
    for name, row in rows.items():
        idle, peak = map(float, row[1].split(" / "))
        assert 0 < idle <= peak, name
        assert int(row[2]) > 0 and row[3] == "0", name  # good requests answered, none failed
    bounded, lifted = output.split("hostile, limits lifted, hostile requests by outcome:")
    assert "- 48 MP flat PNG: 413:" in bounded and "- 16 x 40 MP in one request: 413:" in bounded
    assert "- truncated JPEG: 422:" in bounded
    assert "- 16 x 40 MP in one request: 200:" in lifted


def test_learning_curve_prints_both_starts_per_size_and_writes_its_plot(tmp_path):
    output = run("learning_curve.py", "--quick", "--settings", "digits", "--output_dir", str(tmp_path))
    rows = [row for row in table_rows(output) if row[0].isdigit()]
    assert [(row[0], row[1]) for row in rows] == [
        ("4", "scratch"),
        ("4", "pretrained"),
        ("16", "scratch"),
        ("16", "pretrained"),
    ]
    for row in rows:
        score, chance = row[2].split(" (")
        assert 0.0 <= float(score.split(" +- ")[0]) <= 1.0 and 0.0 < float(chance.rstrip(")")) < 1.0
    assert "Mean gain over the labelled tasks, pretrained minus scratch: 4 per label" in output
    assert (tmp_path / "learning_curve.png").stat().st_size > 0 and (tmp_path / "learning_curve.md").is_file()


@pytest.mark.slow
def test_transfer_prints_every_start_and_mode_and_the_old_tasks_change(tmp_path):
    output = run(
        "transfer.py", "--quick", "--settings", "digits", "--output_dir", str(tmp_path), "--pretrained_dir",
        str(tmp_path / "pretrained"), timeout=900,
    )  # fmt: skip
    rows = [row for row in table_rows(output) if row[0] in ("nothing", "pretrained", "single", "multi")]
    assert [(row[0], row[1]) for row in rows] == [
        ("nothing", "full"),
        *[(start, mode) for start in ("pretrained", "single", "multi") for mode in ("heads", "lora", "full")],
    ]
    for row in rows:
        assert all(0.0 <= float(cell) <= 1.0 for cell in row[2:4])  # the new task's accuracy at N = 25 and 100
    by_arm = {(row[0], row[1]): row[5] for row in rows}
    # heads and lora leave the old tasks' scores exactly as they were; full moves them (by how much is measured).
    for start in ("single", "multi"):
        for mode in ("heads", "lora"):
            assert "traits (micro_f1) +0.000 (worst +0.000)" in by_arm[start, mode], by_arm[start, mode]
    assert by_arm["nothing", "full"] == "n/a (no old tasks)"
    assert (tmp_path / "transfer.png").stat().st_size > 0 and (tmp_path / "transfer.md").is_file()


def test_task_adapter_cost_prints_a_row_per_way_of_asking():
    output = run("task_adapter_cost.py", "--batch", "2", "--repeats", "1")
    rows = [row for row in table_rows(output) if row[0] != "model"]
    assert [(row[0], row[1]) for row in rows] == [
        ("no adapter", "every task"),
        ("adapter on pattern", "old tasks only"),
        ("adapter on pattern", "pattern only"),
        ("adapter on pattern", "every task"),
    ]
    assert all(float(row[2]) > 0 and float(row[3]) > 0 for row in rows) and rows[0][4] == "1.00"


@pytest.mark.slow
def test_trust_prints_each_tasks_calibration_and_review_rows(tmp_path):
    output = run("trust.py", "--quick", "--output_dir", str(tmp_path), timeout=900)
    rows = table_rows(output)
    calibrated = [row for row in rows if row[0] in ("shop", "digits-table", "digits-80") and len(row) == 10]
    assert [(row[0], row[1]) for row in calibrated] == [
        *[("shop", task) for task in ("category", "colour", "pattern", "tags")],
        *[(setting, task) for setting in ("digits-table", "digits-80") for task in ("digit", "traits")],
    ]
    for row in calibrated:
        raw, calibrated_ece = float(row[8]), float(row[9])
        assert 0.0 <= raw <= 1.0 and 0.0 <= calibrated_ece <= 1.0
    review = [row for row in rows if row[0] in ("shop", "digits-table", "digits-80") and row[3] in ("bound", "plain")]
    assert len(review) == 8 * 3 * 2  # each task, target and rule: a cut, or why there is none
    assert (tmp_path / "trust.md").is_file()


@pytest.mark.slow
def test_label_audit_prints_precision_and_recall_per_catalogue_and_task(tmp_path):
    output = run("label_audit.py", "--quick", "--output_dir", str(tmp_path), timeout=900)
    rows = [row for row in table_rows(output) if row[0] in ("shop", "digits")]
    tasks = {"shop": ("category", "colour", "pattern", "tags"), "digits": ("digit", "traits")}
    assert [(row[0], row[1]) for row in rows] == [
        (catalogue, task) for catalogue, names in tasks.items() for _ in range(2) for task in names
    ]
    assert {row[3] for row in rows} == {
        "embeddings of the model trained on the noisy labels",
        "5-fold fine-tuning of the recipe",
    }
    for row in rows:
        assert int(row[5]) > 0 and all(0.0 <= float(cell) <= 1.0 for cell in (row[6], row[7], row[9], row[10]))
    assert (tmp_path / "label_audit.md").is_file()


def test_the_quality_benchs_finished_runs_survive_a_new_checkout(tmp_path):
    """bench/quality.py archives each finished run's result and restores it into a fresh output folder, where the
    comparison reads it back instead of training it again; the archive's bytes depend on the runs alone."""
    sys.path.insert(0, str(BENCH))
    try:
        from quality import archive_runs, restore_runs
    finally:
        sys.path.remove(str(BENCH))
    first = tmp_path / "first"
    results = {
        "shop/scratch/convergence/runs/multi-equal/seed-0": {"steps": 10, "scores": {"category": 0.5}},
        "shop/scratch/convergence/runs/single-colour/seed-2": {"steps": 7, "scores": {"colour": 0.9}},
    }
    for run, result in results.items():
        (first / run).mkdir(parents=True)
        (first / run / "result.json").write_text(json.dumps(result))
    (first / "shop/scratch/convergence/runs/multi-famo/seed-0").mkdir(parents=True)  # unfinished: no result
    archive = tmp_path / "runs.jsonl.gz"
    assert archive_runs(first, archive) == 2
    packed = archive.read_bytes()
    assert archive_runs(first, archive) == 2 and archive.read_bytes() == packed
    fresh = tmp_path / "fresh"
    assert restore_runs(archive, fresh) == (2, 0) and restore_runs(archive, fresh) == (0, 0)
    for run, result in results.items():
        assert json.loads((fresh / run / "result.json").read_text()) == result
    assert not (fresh / "shop/scratch/convergence/runs/multi-famo").exists()
    # Runs finished later join the archive; those it held stay.
    (fresh / "digits/pretrained/convergence/runs/multi-equal/seed-1").mkdir(parents=True)
    (fresh / "digits/pretrained/convergence/runs/multi-equal/seed-1/result.json").write_text("{}")
    assert archive_runs(fresh, archive) == 3


def test_the_quality_benchs_archive_says_which_package_code_trained_each_run(tmp_path):
    """A run is archived with the package code that trained it (the last commit that changed mtl_hf/ or recipes/):
    runs kept across sessions may come from code whose arithmetic differs, and the report says how many came from
    which; archiving the same runs again keeps what was recorded (and the same bytes)."""
    sys.path.insert(0, str(BENCH))
    try:
        from quality import archive_runs, code_versions, package_code_version
    finally:
        sys.path.remove(str(BENCH))
    assert re.fullmatch(r"[0-9a-f]{12,40}(\+changes)?|unknown \(not a git checkout\)", package_code_version())
    output = tmp_path / "out"
    runs = ("shop/scratch/convergence/runs/multi-equal/seed-0", "shop/scratch/convergence/runs/single-size/seed-0")
    for run in runs:
        (output / run).mkdir(parents=True)
        (output / run / "result.json").write_text(json.dumps({"steps": 5}))
    archive = tmp_path / "runs.jsonl.gz"
    archive_runs(output, archive, "aaaaaaaaaaaa")
    packed = archive.read_bytes()
    archive_runs(output, archive, "bbbbbbbbbbbb")  # nothing retrained
    assert archive.read_bytes() == packed
    (output / runs[1] / "result.json").write_text(json.dumps({"steps": 6}))  # trained again by newer code
    archive_runs(output, archive, "bbbbbbbbbbbb")
    assert code_versions(archive, "shop/") == "aaaaaaaaaaaa (1 run), bbbbbbbbbbbb (1 run)"
    assert code_versions(archive, "digits/") == "no runs"


def test_the_quality_bench_never_mixes_runs_from_two_pretrained_backbones(tmp_path):
    """A pretrained backbone rebuilt on another machine or by other code is another start: runs archived from the
    first are not restored beside the second's (they are trained again), and an output folder whose runs started
    from another backbone is refused in one line, not read back into the tables."""
    sys.path.insert(0, str(BENCH))
    try:
        from quality import archive_runs, restore_runs, stamp_start
    finally:
        sys.path.remove(str(BENCH))
    first_backbone, second_backbone = tmp_path / "backbone-a", tmp_path / "backbone-b"
    for folder, weights in ((first_backbone, b"first weights"), (second_backbone, b"second weights")):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(weights)
    first = tmp_path / "first"
    fingerprint = stamp_start(first / "shop" / "pretrained", first_backbone)
    assert fingerprint == stamp_start(first / "shop" / "pretrained", first_backbone)  # the same backbone again
    runs = ("shop/pretrained/convergence/runs/multi-equal/seed-0", "shop/scratch/convergence/runs/multi-equal/seed-0")
    for run in runs:
        (first / run).mkdir(parents=True)
        (first / run / "result.json").write_text(json.dumps({"steps": 5}))
    archive = tmp_path / "runs.jsonl.gz"
    assert archive_runs(first, archive) == 2

    fresh = tmp_path / "fresh"
    other = stamp_start(fresh / "shop" / "pretrained", second_backbone)
    assert other != fingerprint
    assert restore_runs(archive, fresh, "shop/pretrained/convergence/", other) == (0, 1)
    assert not (fresh / runs[0]).exists()
    assert restore_runs(archive, fresh, "shop/scratch/convergence/", None) == (1, 0)
    assert restore_runs(archive, tmp_path / "third", "shop/pretrained/convergence/", fingerprint) == (1, 0)

    with pytest.raises(SystemExit, match=r"started from a backbone .* move .*first/shop/pretrained aside"):
        stamp_start(first / "shop" / "pretrained", second_backbone)
    unrecorded = tmp_path / "unrecorded" / "shop" / "pretrained"
    (unrecorded / "convergence/runs/multi-equal/seed-0").mkdir(parents=True)
    (unrecorded / "convergence/runs/multi-equal/seed-0/result.json").write_text("{}")
    with pytest.raises(SystemExit, match="no record of the backbone"):
        stamp_start(unrecorded, first_backbone)


def test_inference_throughput_bench_measures_each_precision_against_the_machines_ceiling():
    output = run(
        "inference_throughput.py",
        *("--images", "4", "--image_size", "128", "--repeats", "1", "--batch_size", "2"),
        *("--models", "data-bound stand-in", "--sections", "precision"),
    )
    ceiling = r"ceiling on \d+ threads: fp32 \(PyTorch\) \d+ GFLOP/s, bf16 \(PyTorch\) \d+ GFLOP/s, int8"
    assert re.search(ceiling, output)
    rows = {row[0]: row[1:] for row in table_rows(output) if not row[0].startswith(("engine", "configuration"))}
    engines = ["PyTorch fp32", "PyTorch bf16 (autocast)", "ONNX Runtime fp32"]
    engines += ["ONNX Runtime int8 (dynamic)", "ONNX Runtime int8 (static)"]
    predicts = [f"mtl-hf predict --engine onnx, {kind} graph" for kind in ("fp32", "int8 dynamic")]
    assert list(rows) == engines + predicts
    assert rows["ONNX Runtime fp32"][1] == "1.00x" and rows[predicts[0]][1] == "1.00x"
    for name in engines:
        speed, ratio, achieved, share = rows[name]
        assert float(speed) > 0 and ratio.endswith("x") and float(achieved) >= 0 and share.endswith("%")


@pytest.mark.slow  # trains two models / writes and reads a catalogue: make test-slow
def test_the_precision_gate_bench_reports_every_task_of_both_models_for_each_engine(tmp_path):
    output = run("precision_gate.py", "--quick", "--output_dir", str(tmp_path))
    rows = [row for row in table_rows(output) if row[0] in ("shop", "digits-table")]
    assert [(row[0], row[1]) for row in rows] == [
        *(("shop", task) for task in ("category", "colour", "pattern", "tags", "size")),
        ("digits-table", "digit"),
        ("digits-table", "traits"),
    ]
    for row in rows:
        values = [float(cell.split()[0]) for cell in row[3:6]]
        assert all(0.0 <= value <= 1.0 for value in values) or row[1] == "size", row
        assert (row[6].count("->") == 3) == (row[1] not in ("size",)), row  # every calibrated task, every engine
    assert (tmp_path / "precision_gate.md").read_text().strip() in output


@pytest.mark.slow  # trains two models / writes and reads a catalogue: make test-slow
def test_the_data_path_bench_measures_float32_against_uint8_pixels_from_the_workers():
    output = run(
        "data_throughput.py",
        *("--rows", "640", "--batches", "2", "--steps", "2", "--transport_batches", "2", "--pixel_size", "64"),
    )
    rows = [row for row in table_rows(output) if row[0] in ("1", "2")]
    assert [(row[0], row[1]) for row in rows] == [(w, kind) for w in ("1", "2") for kind in ("float32", "uint8")]
    for float_row, uint8_row in (rows[0:2], rows[2:4]):
        assert float(float_row[2]) == pytest.approx(4 * float(uint8_row[2]), rel=0.1)  # 64 x 3 x 64 x 64 bytes
        assert float_row[4] == "1.00x" and float(uint8_row[3]) > 0
