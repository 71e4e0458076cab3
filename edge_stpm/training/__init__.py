"""The training side (``edge-stpm[train]``, PyTorch): synthetic data, backbones and the STPM model, training,
thresholds, evaluation and its metrics and figures, export to ONNX / INT8 / TensorRT, the demo; and the PyTorch
backend that runs a checkpoint like a bundle. It may use the contract and the runtime side."""
