set -e
cd /work/main
# update-memory --checkpoint (the training install) with the default method at drift level C, then both checkpoints
# exported and judged by drift_cycle.judge; writes /tmp/learn/drift/ckpt/judged.json. Needs drift_cycle.py run at C first.
W=/tmp/learn/drift/ckpt
rm -rf $W; mkdir -p $W
t0=$(date +%s)
python3 -m edge_stpm.cli update-memory --checkpoint /tmp/learn/train_seed0/model.pt --data /tmp/learn/drift/reviewed_C --out $W/model_C.pt --quiet
t1=$(date +%s); echo "update s: $((t1-t0))"
python3 -m edge_stpm.cli export --checkpoint /tmp/learn/train_seed0/model.pt --precision fp32 --out $W/base --quiet 2>&1 | tail -1
python3 -m edge_stpm.cli export --checkpoint $W/model_C.pt --precision fp32 --out $W/upd_C --quiet 2>&1 | tail -1
python3 - <<'PY'
import sys, json
sys.argv = ["x", "--base", "/tmp/learn/seed0/E"]
sys.path.insert(0, "benchmarks/learn")
import drift_cycle as d
from pathlib import Path
out = {}
for name in ("base", "upd_C"):
    b = Path("/tmp/learn/drift/ckpt") / name
    for what, data in (("drifted", Path("/tmp/learn/drift/test_C")), ("undrifted", Path("/work/shared/data/magnetic_tile"))):
        r = d.judge(b, data, 2)
        out[f"{name} {what}"] = {k: v for k, v in r.items() if k not in ("scores", "labels")}
        print(name, what, out[f"{name} {what}"], flush=True)
json.dump(out, open("/tmp/learn/drift/ckpt/judged.json", "w"), indent=1)
PY
