"""How well the no-defect check ranks models: for each (checkpoint, labelled data, label) the proxy image AUROC on
synthetic anomalies of the checkpoint's held-out good images (training/synthetic_defects.py) beside the real image
AUROC on the labelled test split; Spearman's rank correlation per data set and overall; a scatter plot.

    python benchmarks/r3/proxy_study.py OUT_DIR CKPT:DATA:LABEL [...]

A report.json beside the checkpoint's run (…/run/model.pt → …/report/report.json, as r1/accuracy_run.sh leaves it)
is reused when it holds both figures; otherwise the checkpoint is evaluated here (PyTorch, CPU)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def figures(ckpt: Path, data: Path, work: Path) -> dict:
    rep = ckpt.parent.parent / "report" / "report.json"
    if rep.is_file():
        r = json.loads(rep.read_text())
        if r.get("no_defect_check"):
            return r
    from edge_stpm.training.evaluate import evaluate

    return evaluate(ckpt, data, work, device="cpu", quiet=True)


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic) if len(a) > 2 else float("nan")


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, arg in enumerate(sys.argv[2:]):
        ckpt, data, label = arg.split(":", 2)
        r = figures(Path(ckpt), Path(data), out / f"eval{i}")
        rows.append({"checkpoint": ckpt, "data": Path(data).name, "label": label,
                     "proxy": r["no_defect_check"]["mean"],
                     "proxy_kinds": {k: v["image_auroc"] for k, v in r["no_defect_check"]["kinds"].items()},
                     "image_auroc": r["overall"]["image_auroc"], "pixel_auroc": r["overall"]["pixel_auroc"]})
        print(f"{label:28s} {Path(data).name:16s} proxy {rows[-1]['proxy']:.3f}  real image {rows[-1]['image_auroc']:.3f}")
    result = {"rows": rows, "spearman": {}}
    for name in sorted({r["data"] for r in rows}) + ["all"]:
        sel = [r for r in rows if name in ("all", r["data"])]
        result["spearman"][name] = {"n": len(sel), "image": spearman([r["proxy"] for r in sel],
                                                                     [r["image_auroc"] for r in sel]),
                                    "pixel": spearman([r["proxy"] for r in sel], [r["pixel_auroc"] for r in sel])}
    (out / "proxy_study.json").write_text(json.dumps(result, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    for name, marker in zip(sorted({r["data"] for r in rows}), "os^"):
        sel = [r for r in rows if r["data"] == name]
        ax.scatter([r["proxy"] for r in sel], [r["image_auroc"] for r in sel], marker=marker,
                   label=f"{name} (Spearman {result['spearman'][name]['image']:.2f}, n={len(sel)})")
        for r in sel:
            ax.annotate(r["label"], (r["proxy"], r["image_auroc"]), fontsize=6, xytext=(3, 2),
                        textcoords="offset points")
    ax.set_xlabel("proxy image AUROC (synthetic anomalies of held-out good images)")
    ax.set_ylabel("real image AUROC (labelled test split)")
    ax.set_title("the no-defect check against the real figures")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "proxy_study.png")
    print(json.dumps(result["spearman"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
