"""Export of the inspection pipeline: ONNX graphs (FP32/FP16/INT8), artefact metadata, TensorRT engines."""
