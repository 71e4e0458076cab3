"""One feedback cycle on a drifted line, on real data (benchmarks/results/learn/drift/RULE.md, written first).

    nice -n 19 python3 benchmarks/learn/drift_cycle.py --base /tmp/learn/seed0/E [--levels A,B] [--only U0,U1]

``--base`` is the default model's bundle (``edge-stpm fit`` on magnetic tile, seed 0). For each drift level: the
test split and 50 of the model's training images are drifted (gamma, then a Gaussian blur); each candidate's
``update-memory`` runs on the base bundle with the 50 reviewed parts (U1 through the runtime install's CLI, U0 in
process: it is the same module in another mode); every bundle judges the drifted and the undrifted test split at its
stored thresholds. Writes benchmarks/results/learn/drift/result.json and README table rows (result.md).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
LEVELS = {"A": (1.6, 1.5), "B": (1.3, 1.0)}  # (gamma, blur sigma px)
# RULE.md addendum 3: level C = the point (1 + 0.6 t, 1.5 t) whose base false calls come closest to the 43.7 %
C_STEPS, C_TARGET = (0.2, 0.3, 0.4, 0.5), 0.437
LEVELS["C"] = (1.3, 0.75)  # what that choice gave in round 3 (base false calls 43.7 %; --choose-c runs it again)
# U2, U3 and U4 ran with the look at the model's resolution (look.py before addendum 5's U5, commit 6a97d7c and
# earlier); "transfer" is U5's look since then, so U2–U4 are not reproduced by this script any more
CANDIDATES = {"U0": "reselect", "U1": "extend", "U2": "transfer", "U3": "transfer", "U4": "transfer",
              "U5": "transfer"}
GROWTH = {"U3": 2.0}  # RULE.md addendum 2: U3 = U2 with the bank allowed to grow by 2× its entries (default 1×)
# diagnostics added after the first run (reference rows, not candidates): D1 = every new patch joins the bank (the
# most the memory can take from 40 images); D2 = U1's bank with its image threshold from the 10 drifted held-out
# parts alone (logsigma k 2: what thresholds calibrated on the new look alone would do)
# D3 (addendum 3) = the ceiling: the defaults fitted from scratch on the whole train/good drifted like the line
# D4 (addendum 4) = U2 carrying the training images drifted exactly (D3's files) instead of the estimated look;
# U4 = U2 with the look estimated against every training image and the defocus searched in 0.125 px steps (model
# resolution: no longer in look.py)
DIAGNOSTICS = ("D1", "D2", "D3", "D4")
REVIEWED, HELD = 50, 10


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", type=Path, required=True)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "magnetic_tile")
    p.add_argument("--work", type=Path, default=Path("/tmp/learn/drift"))
    p.add_argument("--keep", type=Path, default=ROOT / "benchmarks" / "results" / "learn" / "drift")
    p.add_argument("--levels", default="A,B")
    p.add_argument("--only", default="U0,U1,U2,D1,D2")
    p.add_argument("--choose-c", action="store_true", help="choose level C again (RULE.md addendum 3)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tag", default="", help="results as result_TAG.json / .md (a later round keeps the first's files)")
    p.add_argument("--reuse", action="store_true", help="reuse updated bundles already in --work (not their scores)")
    p.add_argument("--runtime-python", type=Path,
                   default=Path(os.environ.get("EDGE_STPM_RUNTIME_PYTHON", ROOT / ".venv-runtime" / "bin" / "python")))
    return p.parse_args()


def drift(img: np.ndarray, gamma: float, sigma: float) -> np.ndarray:
    lut = (255.0 * (np.arange(256) / 255.0) ** gamma).round().astype(np.uint8)
    return cv2.GaussianBlur(cv2.LUT(img, lut), (0, 0), sigma)


def drift_copy(src: Path, dst: Path, gamma: float, sigma: float) -> None:
    img = cv2.imread(str(src), cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"cannot read {src}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(dst.with_suffix(".png")), drift(img, gamma, sigma))


def drifted_test(data: Path, out: Path, gamma: float, sigma: float) -> Path:
    if (out / "done").is_file():
        return out
    for sub in sorted((data / "test").iterdir()):
        for f in sorted(sub.iterdir()):
            drift_copy(f, out / "test" / sub.name / f.name, gamma, sigma)
    for sub in sorted((data / "ground_truth").iterdir()):
        (out / "ground_truth").mkdir(parents=True, exist_ok=True)
        os.symlink(sub.resolve(), out / "ground_truth" / sub.name)
    (out / "done").write_text("")
    return out


def reviewed(base: dict[str, Any], out: Path, gamma: float, sigma: float) -> Path:
    """50 of the base model's training images, drifted, split 40 / 10 as dataset --from-history does."""
    shutil.rmtree(out, ignore_errors=True)
    pool = sorted(base["train_image_paths"])
    pick = np.random.default_rng(0).choice(len(pool), REVIEWED, replace=False)
    for n, i in enumerate(pick):
        where = "test" if n < HELD else "train"
        drift_copy(Path(pool[i]), out / where / "good" / Path(pool[i]).name, gamma, sigma)
    return out


def judge(bundle: Path, data: Path, threads: int) -> dict[str, Any]:
    from edge_stpm.common.images import labelled_test_images, load_images
    from edge_stpm.contract.scale import ScoreScale
    from edge_stpm.runtime.backends.onnxruntime_backend import OnnxBackend
    from edge_stpm.training import metrics

    b = OnnxBackend(bundle / "model_fp32.onnx", threads)
    thr = b.metadata["thresholds"]
    items = labelled_test_images(data)
    x = load_images([i.path for i in items], b.metadata["image_size"], b.metadata["fit"])
    scores = np.concatenate([np.asarray(b.infer_any(x[i : i + 8])[1], np.float64).reshape(-1)
                             for i in range(0, len(x), 8)])
    b.close()
    labels = np.array([i.label for i in items])
    scale = ScoreScale.of(thr)
    good = scores[labels == 0]
    return {"scores": scores.tolist(), "labels": labels.tolist(), "image_auroc": float(metrics.image_auroc(scores, labels)),
            "false_calls": float(np.mean(good >= thr["image"])), "recall": float(np.mean(scores[labels == 1] >= thr["image"])),
            "good_median_scale": float(np.median([scale.image(float(s)) for s in good])), "image_threshold": float(thr["image"])}


def drifted_train(data: Path, out: Path, gamma: float, sigma: float) -> Path:
    """The whole train/good drifted, the same file names (so ``fit --seed 0`` splits it as the base model)."""
    if not (out / "done").is_file():
        for f in sorted((data / "train" / "good").iterdir()):
            drift_copy(f, out / "train" / "good" / f.name, gamma, sigma)
        (out / "done").write_text("")
    return out


def level_c(a: argparse.Namespace) -> tuple[float, float, dict[str, float]]:
    """Addendum 3: (gamma, sigma) of level C, chosen on the base model's drifted false calls alone."""
    seen: dict[str, float] = {}
    for t in C_STEPS:
        g, s = round(1 + 0.6 * t, 3), round(1.5 * t, 3)
        seen[f"{g},{s}"] = judge(a.base, drifted_test(a.data, a.work / f"test_C{t}", g, s), a.threads)["false_calls"]
        print("level C candidate", g, s, "base false calls", seen[f"{g},{s}"], flush=True)
    best = min(seen, key=lambda k: abs(seen[k] - C_TARGET))
    g, s = (float(v) for v in best.split(","))
    return g, s, seen


def patched_transfer(a: argparse.Namespace, name: str, data: Path, out: Path, t0: float) -> dict[str, Any]:
    """D4: ``update-memory --method transfer`` with its look replaced by the exactly drifted training images."""
    from edge_stpm.common.images import load_images
    from edge_stpm.runtime.learn import look as lk
    from edge_stpm.runtime.learn import update as upd

    keep = upd.carry_look
    if name == "D4":
        exact = a.work / f"train_{data.name.split('_')[-1]}" / "train" / "good"  # data: reviewed_<level>

        def carry(train_paths, new, old_val, size, fit_mode, grid, on_step=None):  # type: ignore[no-untyped-def]
            names = lambda ps: [exact / Path(p).with_suffix(".png").name for p in ps if Path(p).is_file()]  # noqa: E731
            ident = lk.Look(np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1), -1.0)  # "exact"
            load = lambda ps: load_images(names(ps), size, fit_mode, tiles=grid)  # noqa: E731
            return load(train_paths), (load(old_val) if len(old_val) else old_val), ident

        upd.carry_look = carry  # type: ignore[assignment]
    try:
        upd.update(upd.UpdateConfig(a.base, data, out, threads=a.threads, mode="transfer"))
    finally:
        upd.carry_look = keep
    rep = json.loads((out / "fit.json").read_text())
    return {"wall_s": time.perf_counter() - t0, "step": rep["memory_updates"][-1], "seconds": rep["seconds"],
            "thresholds": {k: rep["thresholds"][k] for k in ("image", "pixel")}}


def run_update(a: argparse.Namespace, name: str, data: Path, out: Path) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    if name == "D3":
        base = json.loads((a.base / "fit.json").read_text())
        r = subprocess.run([str(a.runtime_python), "-m", "edge_stpm.cli", "fit", "--teacher", str(base["teacher"]),
                            "--data", str(data), "--out", str(out), "--seed", str(base["seed"]),
                            "--threads", str(a.threads), "--quiet"], capture_output=True, text=True, cwd="/")
        if r.returncode != 0:
            raise SystemExit(f"fit D3 failed: {r.stderr[-2000:]}")
        rep = json.loads((out / "fit.json").read_text())
        return {"wall_s": time.perf_counter() - t0, "step": {"entries_before": 0, "entries_after":
                rep["memory"]["entries"]}, "seconds": rep["seconds"],
                "thresholds": {k: rep["thresholds"][k] for k in ("image", "pixel")}}
    if name == "U4":
        raise SystemExit("U4 ran with the look at the model's resolution, which look.py no longer has")
    if name == "D4":
        return patched_transfer(a, name, data, out, t0)
    if name == "D1":
        from edge_stpm.runtime.learn import update as upd

        keep = upd.spacing
        upd.spacing = lambda bank: 0.0  # type: ignore[assignment]
        try:
            upd.update(upd.UpdateConfig(a.base, data, out, threads=a.threads, growth=10.0, mode="extend"))
        finally:
            upd.spacing = keep
    elif CANDIDATES[name] == "extend":
        r = subprocess.run([str(a.runtime_python), "-m", "edge_stpm.cli", "update-memory", "--bundle", str(a.base),
                            "--data", str(data), "--out", str(out), "--method", "extend", "--quiet"],
                           capture_output=True, text=True, cwd="/")
        if r.returncode != 0:
            raise SystemExit(f"update {name} failed: {r.stderr[-2000:]}")
    else:
        from edge_stpm.runtime.learn.update import UpdateConfig, update

        update(UpdateConfig(a.base, data, out, threads=a.threads, mode=CANDIDATES[name],
                            growth=GROWTH.get(name, 1.0)))
    rep = json.loads((out / "fit.json").read_text())
    return {"wall_s": time.perf_counter() - t0, "step": rep["memory_updates"][-1], "seconds": rep["seconds"],
            "thresholds": {k: rep["thresholds"][k] for k in ("image", "pixel")}}


def rethreshold(c: dict[str, Any], parts: Path, threads: int) -> dict[str, Any]:
    """D2: U1's drifted-test scores judged at an image threshold from the drifted held-out parts alone."""
    from edge_stpm.common.images import list_images, load_images
    from edge_stpm.runtime.backends.onnxruntime_backend import OnnxBackend
    from edge_stpm.runtime.learn.thresholds import default_k, good_threshold
    from edge_stpm.training import metrics

    b = OnnxBackend(Path(c["bundle"]) / "model_fp32.onnx", threads)
    held = load_images(list_images(parts / "test" / "good"), b.metadata["image_size"], b.metadata["fit"])
    hs = np.asarray(b.infer_any(held)[1], np.float64).reshape(-1)
    b.close()
    thr = good_threshold(hs, "logsigma", 0.99, default_k("memory"))
    out = {}
    for what in ("drifted", "undrifted"):
        s, lab = np.asarray(c[what]["scores"]), np.asarray(c[what]["labels"])
        out[what] = {"image_auroc": float(metrics.image_auroc(s, lab)), "false_calls": float(np.mean(s[lab == 0] >= thr)),
                     "recall": float(np.mean(s[lab == 1] >= thr)), "image_threshold": float(thr),
                     "good_median_scale": float("nan")}
    return out


def main() -> None:
    a = parse()
    base = json.loads((a.base / "fit.json").read_text())
    rec: dict[str, Any] = {"base": str(a.base), "loadavg_start": list(os.getloadavg()), "levels": {},
                           "undrifted_base": judge(a.base, a.data, a.threads)}
    print("base, undrifted:", rec["undrifted_base"], flush=True)
    for lv in a.levels.split(","):
        if lv == "C" and a.choose_c:
            g, s, rec["level_c_choice"] = level_c(a)
            LEVELS["C"] = (g, s)
        gamma, sigma = LEVELS[lv]
        test = drifted_test(a.data, a.work / f"test_{lv}", gamma, sigma)
        parts = a.work / f"reviewed_{lv}"
        if not (a.reuse and parts.is_dir()):
            parts = reviewed(base, parts, gamma, sigma)
        row: dict[str, Any] = {"gamma": gamma, "sigma": sigma, "base_drifted": judge(a.base, test, a.threads)}
        print(lv, "base, drifted:", row["base_drifted"], flush=True)
        for name in a.only.split(","):
            if name == "D2":
                if "U1" in row:
                    row["D2"] = rethreshold(row["U1"], parts, a.threads) | {"step": row["U1"]["step"], "wall_s": 0.0}
                continue
            out = a.work / f"{name}_{lv}"
            tr = drifted_train(a.data, a.work / f"train_{lv}", gamma, sigma) if name in ("D3", "D4") else None
            src = tr if name == "D3" and tr is not None else parts
            if a.reuse and (out / "fit.json").is_file() and name != "D3":
                rep = json.loads((out / "fit.json").read_text())
                c = {"wall_s": rep["seconds"]["total"], "step": rep["memory_updates"][-1], "seconds": rep["seconds"],
                     "thresholds": {k: rep["thresholds"][k] for k in ("image", "pixel")}}
            else:
                c = run_update(a, name, src, out)
            c["bundle"] = str(out)
            c["drifted"] = judge(out, test, a.threads)
            c["undrifted"] = judge(out, a.data, a.threads)
            row[name] = c
            print(lv, name, json.dumps({k: {m: v for m, v in c[k].items() if m not in ("scores", "labels")}
                                        for k in ("drifted", "undrifted")}), c["step"]["entries_after"], flush=True)
        rec["levels"][lv] = row
    rec["loadavg_end"] = list(os.getloadavg())
    a.keep.mkdir(parents=True, exist_ok=True)
    name = f"result_{a.tag}" if a.tag else "result"
    (a.keep / f"{name}.json").write_text(json.dumps(rec, indent=1))
    (a.keep / f"{name}.md").write_text(table(rec))
    print(table(rec))


def table(rec: dict[str, Any]) -> str:
    b0 = rec["undrifted_base"]
    rows = [f"Base model, undrifted test: image AUROC {b0['image_auroc']:.4f}, false calls {100 * b0['false_calls']:.1f} %, "
            f"recall {b0['recall']:.3f}.", "",
            "| level | model | entries | image thr | drifted: false calls | recall | AUROC | good median (scale) "
            "| undrifted: AUROC | false calls | recall | update s |", "|" + "---|" * 12]
    for lv, row in rec["levels"].items():
        d = row["base_drifted"]
        rows.append(f"| {lv} (γ {row['gamma']}, σ {row['sigma']}) | base | — | {d['image_threshold']:.4g} | "
                    f"{100 * d['false_calls']:.1f} % | {d['recall']:.3f} | {d['image_auroc']:.4f} | "
                    f"{d['good_median_scale']:.2f} | {b0['image_auroc']:.4f} | {100 * b0['false_calls']:.1f} % | "
                    f"{b0['recall']:.3f} | — |")
        for name in (*CANDIDATES, *DIAGNOSTICS):
            if name not in row:
                continue
            c = row[name]
            d, u = c["drifted"], c["undrifted"]
            rows.append(f"| {lv} | {name} | {c['step']['entries_before']} → {c['step']['entries_after']} | "
                        f"{d['image_threshold']:.4g} | {100 * d['false_calls']:.1f} % | {d['recall']:.3f} | "
                        f"{d['image_auroc']:.4f} | {d['good_median_scale']:.2f} | {u['image_auroc']:.4f} | "
                        f"{100 * u['false_calls']:.1f} % | {u['recall']:.3f} | {c['wall_s']:.0f} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    main()
