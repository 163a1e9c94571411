"""ONNX export of the trigger-word detectors and the CTC recognizer, and their onnxruntime runtime.

>>> from seqflow.export import export_onnx, load_onnx_model
>>> export_onnx("models:/seqflow-asr-ctc@champion", "exports/asr-ctc")          # doctest: +SKIP
>>> load_onnx_model("exports/asr-ctc").transcribe(wav)                           # doctest: +SKIP
"""

from seqflow.export.onnx_export import ExportError, export_onnx, export_package
from seqflow.export.onnx_runtime import OnnxDetector, OnnxTranscriber, load_export, load_onnx_model

__all__ = ["ExportError", "export_onnx", "export_package", "OnnxDetector", "OnnxTranscriber", "load_export",
           "load_onnx_model"]
