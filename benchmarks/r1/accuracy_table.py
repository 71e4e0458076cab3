"""The default-selection table (rule: benchmarks/results/accuracy/RULE.md): per candidate, image / pixel AUROC and
AUPRO@0.3 per seed, their mean and min–max, the rule's score (mean over seeds of ½·(image + pixel AUROC)), the kept
epoch and the training wall time; written to results/accuracy/TABLE.md and printed.

    python3 benchmarks/r1/accuracy_table.py [RESULTS]   (default benchmarks/results/accuracy)"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("benchmarks/results/accuracy")
    lines = ["| candidate | seeds | image AUROC mean (min–max) | pixel AUROC mean (min–max) | AUPRO mean (min–max) "
             "| rule score | kept epochs | train s/run |", "|---|---|---|---|---|---|---|---|"]
    scores = {}
    for cand in sorted(p for p in root.iterdir() if p.is_dir()):
        runs = []
        for seed in sorted(cand.glob("seed*")):
            rep, tr = seed / "report.json", seed / "training.json"
            if rep.is_file() and tr.is_file():
                runs.append((json.loads(rep.read_text())["overall"], json.loads(tr.read_text())))
        if not runs:
            continue

        def col(key: str) -> str:
            v = [r[0][key] for r in runs]
            return f"{statistics.mean(v):.4f} ({min(v):.3f}–{max(v):.3f})"

        score = statistics.mean(0.5 * (r[0]["image_auroc"] + r[0]["pixel_auroc"]) for r in runs)
        scores[cand.name] = (score, len(runs))
        lines.append(f"| {cand.name} | {len(runs)} | {col('image_auroc')} | {col('pixel_auroc')} | {col('aupro')} | "
                     f"{score:.4f} | {', '.join(str(r[1]['best_epoch']) for r in runs)} | "
                     f"{statistics.mean(r[1]['wall_seconds'] for r in runs):.0f} |")
    text = "\n".join(lines) + "\n"
    (root / "TABLE.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
