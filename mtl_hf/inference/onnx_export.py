"""ONNX export: a saved model as one ONNX graph for serving stacks without PyTorch (ONNX Runtime, Triton).

    OUTPUT/model.onnx                 input `pixel_values` (batch, 3, height, width), a dynamic batch axis; one
                                      output per task, named after it: its logits as the model returns them
                                      (regression values in the targets' units), before calibration
    OUTPUT/onnx_tasks.json            the tasks (type, labels, outputs; temperature and thresholds: what turns the
                                      logits into the model's calibrated scores), the input's size and normalisation,
                                      and the check below; the same JSON is in the graph's metadata (`mtl_hf`)
    OUTPUT/config.json, preprocessor_config.json   the model's own, so the folder is all `predict` needs

The graph comes from torch's exporter (`torch.onnx.export(..., dynamo=True)`; with the backbone's eager attention
where its scaled-dot-product path does not convert) and is checked before it is kept:
ONNX Runtime and PyTorch run a batch of a size other than the traced one, and an export whose outputs differ
by more than `tolerance` (relative to the logits' scale) is refused, not written.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError, missing_extra, one_line
from .onnx_layout import DEFAULT_TOLERANCE, METADATA_KEY, ONNX_FILE, TASKS_FILE


class _LogitsGraph(torch.nn.Module):
    """The model as the exporter sees it: pixels in, a tuple of every task's logits out (in the config's order)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.task_names = list(model.config.task_names)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.model(pixel_values=pixel_values).logits
        return tuple(logits[name].float() for name in self.task_names)


def export_onnx(model: str, output: str, *, tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """Exports the saved model folder `model` into the folder `output` (see the module); returns the check."""
    for module in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            raise missing_extra("ONNX export", "onnx", module) from None
    from ..data.backbone_processor import model_image_processor
    from ..data.transforms import ImageTransforms
    from ..models.mtl_vit.modeling_mtl_vit import MultiTaskViTModel

    folder, target = Path(model), Path(output)
    if target.exists() and any(target.iterdir()):
        raise UserError(f"{output} exists and is not empty: give a new folder for the export")
    network = MultiTaskViTModel.from_pretrained(model).eval()
    # The saved processor, or the one the config implies (a notice): the export folder then holds it either way.
    processor = model_image_processor(model, network.config)
    transform = ImageTransforms.from_image_processor(processor).eval()
    height, width = transform.size
    graph = _LogitsGraph(network).eval()
    generator = torch.Generator().manual_seed(0)
    traced = torch.randn(2, 3, height, width, generator=generator)
    checked = torch.randn(5, 3, height, width, generator=generator)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / ONNX_FILE
        with torch.no_grad():  # the model as loaded: the reference, whatever attention the export needs
            reference = [value.numpy() for value in graph(checked)]
        attention = _export(graph, traced, path)
        difference = _largest_difference(path, graph.task_names, checked, reference)
        if not difference <= tolerance:
            raise UserError(
                f"the exported graph disagrees with PyTorch on a batch of {len(checked)}: largest difference "
                f"{difference:.3g} of the logits' scale (tolerance {tolerance:g}); the export is not written"
            )
        description = {
            "tasks": [
                {
                    "name": spec.name,
                    "type": spec.type,
                    "labels": spec.labels,
                    "num_outputs": spec.num_outputs,
                    **_calibration_of(network.config.calibration, spec),
                }
                for spec in network.config.task_specs
            ],
            "input": {
                "name": "pixel_values",
                "shape": ["batch", 3, height, width],
                "mean": list(transform.mean),
                "std": list(transform.std),
            },
            "attention": attention,
            "check": {"batch": len(checked), "largest_relative_difference": difference, "tolerance": tolerance},
        }
        add_metadata(path, description)
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / ONNX_FILE)
    (target / TASKS_FILE).write_text(json.dumps(description, indent=2) + "\n")
    shutil.copy(folder / "config.json", target / "config.json")
    processor.save_pretrained(target)
    return description


def _calibration_of(calibration, spec) -> dict[str, Any]:
    """What a client of the raw logits applies to answer as the model does: the task's temperature (softmax /
    sigmoid of logits / T) and each multilabel label's threshold."""
    from ..models.mtl_vit.calibration_mtl_vit import label_thresholds, task_temperature

    if spec.type == "regression":
        return {}
    entry = {"temperature": task_temperature(calibration, spec.name)}
    if spec.type == "multilabel":
        entry["thresholds"] = dict(zip(spec.labels, label_thresholds(calibration, spec.name, spec.labels), strict=True))
    return entry


def _export(graph: _LogitsGraph, pixels: torch.Tensor, path: Path) -> str:
    """Exports `graph` with the backbone's attention as loaded; where the exporter cannot convert that (Swin's
    scaled-dot-product path: a view of a transposed tensor), with the eager attention, which computes the same.
    Returns the attention the graph was made with."""
    backbone = graph.model.backbone
    loaded = getattr(backbone.config, "_attn_implementation", None) or "eager"
    attempts = [loaded] + (["eager"] if loaded != "eager" and hasattr(backbone, "set_attn_implementation") else [])
    for attention in attempts:
        if attention != loaded:
            backbone.set_attn_implementation(attention)
        try:
            torch.onnx.export(
                graph,
                (pixels,),
                str(path),
                input_names=["pixel_values"],
                output_names=graph.task_names,
                dynamo=True,
                dynamic_shapes={"pixel_values": {0: torch.export.Dim("batch")}},
                external_data=False,
                verbose=False,
            )
            return attention
        except Exception as error:  # the exporter's errors are of many kinds; each is this backbone's limit
            failure = error.__cause__ or error  # the exporter's message is advice to file an issue; its cause says why
    raise UserError(
        f"torch's ONNX exporter cannot convert this model's {graph.model.config.backbone_config.model_type} "
        f"backbone (attention tried: {', '.join(attempts)}; {type(failure).__name__}: {one_line(failure)})"
    )


def _largest_difference(path: Path, names: list[str], pixels: torch.Tensor, reference: list[np.ndarray]) -> float:
    """The largest |ONNX Runtime - PyTorch| over every task's logits, relative to the largest logit (at least 1)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    exported = session.run(names, {"pixel_values": pixels.numpy()})
    return max(
        float(np.abs(ours - theirs).max() / max(1.0, float(np.abs(theirs).max())))
        for ours, theirs in zip(exported, reference, strict=True)
    )


def add_metadata(path: Path, description: dict[str, Any]) -> None:
    """Puts `description` into the graph's metadata (`METADATA_KEY`), where ONNX Runtime's clients read it."""
    import onnx

    graph = onnx.load(str(path))
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(description)
    onnx.save(graph, str(path))


class OnnxModel:
    """An exported model behind the interface the batched inference path calls (`model(pixel_values=...)` giving
    `.logits`, a dict task -> tensor), run by ONNX Runtime on the CPU."""

    def __init__(self, folder: str, graph: str | Path | None = None):
        path = self.check(folder) if graph is None else Path(graph)
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.task_names = [output.name for output in self.session.get_outputs()]

    @staticmethod
    def check(folder: str) -> Path:
        """The exported graph of `folder`; one line where onnxruntime or the graph is missing."""
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise missing_extra("--engine onnx", "onnx", "onnxruntime") from None
        path = Path(folder) / ONNX_FILE
        if not path.is_file():
            raise UserError(f"{folder} has no {ONNX_FILE}: export the model first (mtl-hf export MODEL OUTPUT)")
        return path

    def eval(self) -> OnnxModel:
        return self

    def check_config(self, config, folder: str) -> None:
        """Refuses a folder whose config.json answers otherwise than the graph was exported (and, for an int8
        graph, gated) for: other tasks or labels, or another calibration. The graph's metadata is what it was made
        from; a config copied in later (a model trained or calibrated again) would turn its logits into answers it
        was never checked for."""
        described = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if described is None:
            return  # a graph from before the metadata existed: nothing to compare
        graph_tasks = {task["name"]: task for task in json.loads(described)["tasks"]}
        for spec in config.task_specs:
            task = graph_tasks.pop(spec.name, None)
            if task is None or task["type"] != spec.type or task["labels"] != spec.labels:
                raise UserError(
                    f"{folder}/config.json's task {spec.name!r} is not the one its {ONNX_FILE} was exported with: "
                    "export the model again (mtl-hf export MODEL OUTPUT), and do not copy a newer config into it"
                )
            if _calibration_of(config.calibration, spec) != {
                k: task[k] for k in ("temperature", "thresholds") if k in task
            }:
                raise UserError(
                    f"{folder}/config.json calibrates task {spec.name!r} otherwise than its {ONNX_FILE} was exported "
                    "(and gated) with: export the calibrated model again (mtl-hf export MODEL OUTPUT)"
                )
        if graph_tasks:
            raise UserError(
                f"{folder}/{ONNX_FILE} answers task(s) {sorted(graph_tasks)} that its config.json lacks: export the "
                "model again (mtl-hf export MODEL OUTPUT)"
            )

    def __call__(self, pixel_values: torch.Tensor, tasks=None):
        values = self.session.run(self.task_names, {"pixel_values": pixel_values.float().numpy()})
        logits = {name: torch.from_numpy(value) for name, value in zip(self.task_names, values, strict=True)}
        return _Logits({name: logits[name] for name in (tasks or self.task_names)})


class _Logits:
    def __init__(self, logits: dict[str, torch.Tensor]):
        self.logits = logits


__all__ = ["DEFAULT_TOLERANCE", "ONNX_FILE", "TASKS_FILE", "OnnxModel", "add_metadata", "export_onnx"]
