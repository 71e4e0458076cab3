"""Round 3 table (rule: benchmarks/results/accuracy/RULE_R3.md): per candidate and seed, image / pixel AUROC,
AUPRO@0.3, per-defect image and pixel AUROC, precision / recall at the stored threshold, the no-defect proxy and
the fit time; then the mean over seeds and the rule score (mean of ½·(image + pixel AUROC)) with its Δ against the
current default. Writes benchmarks/results/accuracy/TABLE_R3.md and prints it.

    python3 benchmarks/r3/table.py CURRENT CANDIDATE...   (folder names under benchmarks/results/accuracy)"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROOT = Path("benchmarks/results/accuracy")
DEFECTS = ("blowhole", "break", "crack", "fray", "uneven")


def runs(name: str) -> list[dict]:
    out = []
    for seed in sorted((ROOT / name).glob("seed*")):
        rep, tr = seed / "report.json", seed / "training.json"
        if rep.is_file() and tr.is_file():
            out.append({"seed": seed.name, "report": json.loads(rep.read_text()), "train": json.loads(tr.read_text())})
    return out


def score(rs: list[dict]) -> float:
    return statistics.mean(0.5 * (r["report"]["overall"]["image_auroc"] + r["report"]["overall"]["pixel_auroc"])
                           for r in rs)


def row(name: str, r: dict) -> str:
    o, a = r["report"]["overall"], r["report"]["at_stored_threshold"]
    pd = r["report"]["per_defect"]
    proxy = (r["report"].get("no_defect_check") or {}).get("mean")
    return (f"| {name} | {r['seed']} | {o['image_auroc']:.3f} | {o['pixel_auroc']:.3f} | {o['aupro']:.3f} | "
            + " | ".join(f"{pd[d]['image_auroc']:.3f} / {pd[d]['pixel_auroc']:.3f}" for d in DEFECTS)
            + f" | {a['recall']:.3f} | {a['precision']:.3f} | {'–' if proxy is None else f'{proxy:.3f}'} | "
            f"{r['train']['wall_seconds']:.0f} |")


def main() -> int:
    current, *cands = sys.argv[1:]
    head = ("| candidate | seed | image AUROC | pixel AUROC | AUPRO | " + " | ".join(f"{d} img / px" for d in DEFECTS)
            + " | recall @thr | precision @thr | proxy | fit s |")
    lines = ["# Round 3 on magnetic tile (rule: RULE_R3.md)", "", head, "|" + "---|" * (head.count("|") - 1)]
    summary = ["", "| candidate | seeds | rule score | Δ vs current | image AUROC mean (min–max) | pixel | AUPRO | "
               "crack img | recall @thr | precision @thr | fit s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    base = score(runs(current))
    for name in [current, *cands]:
        rs = runs(name)
        if not rs:
            continue
        lines += [row(name, r) for r in rs]
        m = lambda f: statistics.mean(f(r) for r in rs)  # noqa: E731
        img = [r["report"]["overall"]["image_auroc"] for r in rs]
        summary.append(
            f"| {name} | {len(rs)} | {score(rs):.4f} | {score(rs) - base:+.4f} | {statistics.mean(img):.4f} "
            f"({min(img):.3f}–{max(img):.3f}) | {m(lambda r: r['report']['overall']['pixel_auroc']):.4f} | "
            f"{m(lambda r: r['report']['overall']['aupro']):.4f} | "
            f"{m(lambda r: r['report']['per_defect']['crack']['image_auroc']):.3f} | "
            f"{m(lambda r: r['report']['at_stored_threshold']['recall']):.3f} | "
            f"{m(lambda r: r['report']['at_stored_threshold']['precision']):.3f} | "
            f"{m(lambda r: r['train']['wall_seconds']):.0f} |")
    text = "\n".join(lines + summary) + "\n"
    (ROOT / "TABLE_R3.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
