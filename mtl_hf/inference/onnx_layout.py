"""What an `mtl-hf export` folder holds, and the check's default tolerance: the names the command's parser and the
ONNX engine need without importing torch or onnxruntime."""

ONNX_FILE, TASKS_FILE = "model.onnx", "onnx_tasks.json"
METADATA_KEY = "mtl_hf"
DEFAULT_TOLERANCE = 1e-4
"""The largest difference from PyTorch's logits, relative to their scale, that the export's check accepts."""

__all__ = ["DEFAULT_TOLERANCE", "METADATA_KEY", "ONNX_FILE", "TASKS_FILE"]
