#!/usr/bin/env bash
# A real Triton Inference Server for the Triton tests, without internet beyond the package registry: the
# nvidia-pytriton 0.7.0 wheel ships tritonserver 2.51 (CPU) with the Python backend. Its server binary is used
# directly (pytriton's own wrapper is not needed). Unpacked once into ~/.cache/edge-stpm/triton (or $EDGE_STPM_TRITON):
#   pytriton/tritonserver/bin/tritonserver, its backends/, nvidia_pytriton.libs/ (LD_LIBRARY_PATH), and env/ — the
#   Python-backend models' EXECUTION_ENV_PATH: numpy 1.x (the 2.51 backend stub mis-sizes numpy 2 outputs) and
#   onnxruntime. Idempotent; any failure leaves the Triton tests to skip with their reason.
set -euo pipefail
PY=${PYTHON:-python3}
dest=${EDGE_STPM_TRITON:-$HOME/.cache/edge-stpm/triton}
wheels=$HOME/.cache/edge-stpm/wheels
ver=$($PY -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
mkdir -p "$dest" "$wheels"
if [ ! -x "$dest/pytriton/tritonserver/bin/tritonserver" ]; then
  ls "$wheels"/nvidia_pytriton-0.7.0-*.whl >/dev/null 2>&1 || $PY -m pip download -q --no-deps "nvidia-pytriton==0.7.0" -d "$wheels"
  $PY -m zipfile -e "$(ls "$wheels"/nvidia_pytriton-0.7.0-*.whl | head -1)" "$dest"
  chmod +x "$dest/pytriton/tritonserver/bin/tritonserver"
fi
stub="$dest/pytriton/tritonserver/python_backend_stubs/$ver/triton_python_backend_stub"
cmp -s "$stub" "$dest/pytriton/tritonserver/backends/python/triton_python_backend_stub" \
  || cp "$stub" "$dest/pytriton/tritonserver/backends/python/triton_python_backend_stub"
chmod +x "$dest/pytriton/tritonserver/backends/python/triton_python_backend_stub"
if [ ! -x "$dest/env/bin/python" ] || ! "$dest/env/bin/python" -c 'import numpy, onnxruntime; assert numpy.__version__ < "2"'; then
  $PY -m venv "$dest/env"
  "$dest/env/bin/python" -m pip install -q "numpy<2" onnxruntime
fi
echo "triton server ready: $dest/pytriton/tritonserver/bin/tritonserver (Python $ver stub, env $dest/env)"
