"""What an `mtl-hf export` folder holds, the check's default tolerance and the int8 choices: the names the command's
parser and the ONNX engine need without importing torch or onnxruntime."""

ONNX_FILE, TASKS_FILE = "model.onnx", "onnx_tasks.json"
METADATA_KEY = "mtl_hf"
DEFAULT_TOLERANCE = 1e-4
"""The largest difference from PyTorch's logits, relative to their scale, that the export's check accepts."""

QUANTIZE_SCHEMES = ("int8",)
INT8_METHODS = ("dynamic", "static")
DEFAULT_INT8_METHOD = "dynamic"
"""`export --quantize`: the schemes and ONNX Runtime's two ways of making int8 graphs (`inference/quantization.py`)."""

__all__ = [
    "DEFAULT_INT8_METHOD",
    "DEFAULT_TOLERANCE",
    "INT8_METHODS",
    "METADATA_KEY",
    "ONNX_FILE",
    "QUANTIZE_SCHEMES",
    "TASKS_FILE",
]
