"""Backends behind one interface: TensorRT engines, ONNX Runtime graphs, PyTorch checkpoints."""
