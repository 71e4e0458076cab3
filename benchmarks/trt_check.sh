#!/usr/bin/env bash
# For a person with TensorRT and an NVIDIA GPU (desktop or Jetson): build FP32/FP16/INT8 engines from one bundle,
# check each against ONNX Runtime, bench them, write one results file. Usage:
#   bash benchmarks/trt_check.sh BUNDLE [IMAGE_DIR]
# Needs: the runtime install + TensorRT + cuda-python matched to the driver (README, "TensorRT").
set -euo pipefail
bundle=${1:?usage: trt_check.sh BUNDLE [IMAGE_DIR]}
images=${2:-}
out="trt_check_$(hostname)_$(date +%Y%m%d_%H%M%S).json"
python3 -c "import tensorrt, sys; print('TensorRT', tensorrt.__version__)" || { echo "error: TensorRT is not importable here" >&2; exit 2; }
python3 "$(dirname "$0")/trt_check.py" "$bundle" ${images:+--images "$images"} --out "$out"
