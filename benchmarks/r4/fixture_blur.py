"""The input blur on the test suite's 128² synthetic parts (benchmarks/results/r4/README.md, "Other input sizes"):
a memory-head train per σ given (model pixels), the good test parts' coloured share at the stored pixel threshold (p999,
then logsigma k 3 by recalibration) and the no-defect check per kind.

    python3 benchmarks/r4/fixture_blur.py 0 1 0.5
"""
import sys, numpy as np, torch, cv2
from pathlib import Path
from edge_stpm.training.synth import SynthConfig, generate
from edge_stpm.training.train import TrainConfig, train
from edge_stpm.training import checkpoint
from edge_stpm.training.calibrate import recalibrate
from edge_stpm.training.segmetrics import coloured_shares
from edge_stpm.common.images import load_images
torch.set_num_threads(2)
out = Path("/tmp/fx/synth")
if not out.exists():
    generate(out, SynthConfig(size=128, n_train=60, n_test_good=10, n_test_defect=5, video_frames=60, seed=1))
goods = sorted((out/"test"/"good").glob("*.png"))
for blur in [float(x) for x in sys.argv[1:]]:
    run = Path(f"/tmp/fx/run_{blur:g}")
    if not (run/"model.pt").exists():
        train(TrainConfig(out, run, backbone="mobilenet_v2", batch_size=8, image_size=128, head="memory", quiet=True, input_blur=blur))
    for pm in ("p999", "logsigma"):
        if pm == "logsigma":
            import shutil; shutil.copy(run/"model.pt", run/"k3.pt")
            ck = torch.load(run/"k3.pt", weights_only=False); ck["thresholds"].pop("pixel_method", None); torch.save(ck, run/"k3.pt")
            recalibrate(run/"k3.pt", quiet=True)
            path = run/"k3.pt"
        else:
            path = run/"model.pt"
        pipe, meta = checkpoint.load_pipeline(path)
        thr = meta["thresholds"]; zp = thr["score_scale"]["pixel_zero"]
        imgs = load_images(goods, 128, meta["fit"])
        with torch.no_grad():
            maps, scores = pipe(torch.from_numpy(imgs))
        sh = coloured_shares(maps[:,0].numpy(), thr["pixel"], 0.5, zp)
        nd = meta["training"]["no_defect_check"]
        print(f"blur {blur:g} {pm}: pixel_method={thr.get('pixel_method')} coloured median {np.median(sh):.4f} max {np.max(sh):.4f}; kinds", {k: round(v['image_auroc'],3) for k,v in nd['kinds'].items()}, flush=True)
