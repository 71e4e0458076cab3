"""Round 4, step S (benchmarks/results/accuracy/RULE_R4.md): map smoothing σ 4 (today, = step P's P0), 2 and 1 on
the same trained magnetic-tile checkpoints — the scoring pipeline rebuilt on the same bank, thresholds recalibrated
on the held-out good images with step P's winner (P0, logsigma k 3) — evaluated with the segmentation metrics.

    nice -n 19 python3 benchmarks/r4/smoothing.py --seed 0 --checkpoint /tmp/r4/baseline_seed0/run/model.pt
    python3 benchmarks/r4/smoothing.py --table benchmarks/results/r4/S_seed*.json   (the 3-seed table, rule)

S4 is not rerun: it is step P's P0 of the same seed (``P_seedSEED.json``), copied into the record. Writes
benchmarks/results/r4/S_seedSEED.json and .md; ``--table`` writes S_table.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pixel_threshold as P  # noqa: E402  (the step-P script: table, rule and helpers shared)

CANDIDATES = {"S4": 4.0, "S2": 2.0, "S1": 1.0}  # name → smoothing σ (model-input pixels)
CHEAPEST_FIRST = ("S1", "S2", "S4")  # a smaller σ is a smaller kernel


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--data", type=Path, default=P.ROOT.parent / "shared" / "data" / "magnetic_tile")
    p.add_argument("--work", type=Path, default=Path("/tmp/r4S"))
    p.add_argument("--keep", type=Path, default=P.ROOT / "benchmarks" / "results" / "r4")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--table", nargs="+", type=Path, default=None)
    return p.parse_args(argv)


def one_seed(a: argparse.Namespace) -> dict[str, Any]:
    from edge_stpm.training import checkpoint
    from edge_stpm.training.calibrate import recalibrate
    from edge_stpm.training.devices import set_threads
    from edge_stpm.training.evaluate import evaluate

    set_threads(a.threads)
    work = a.work / f"seed{a.seed}"
    trained = checkpoint.read(a.checkpoint)
    prev = json.loads((a.keep / f"P_seed{a.seed}.json").read_text())
    rec: dict[str, Any] = {"seed": a.seed, "checkpoint": str(a.checkpoint), "data": str(a.data),
                           "commit": P.commit(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                           "loadavg_start": list(os.getloadavg()), "trained_sigma": trained.get("smoothing_sigma"),
                           "candidates": {"S4": prev["candidates"]["P0"] | {"sigma": 4.0, "from": "P_seed json, P0"}}}
    for name, sigma in CANDIDATES.items():
        if name == "S4":
            continue
        ck = work / name / "model.pt"
        ck.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(a.checkpoint, ck)
        t0 = time.perf_counter()
        thr = recalibrate(ck, sigma=sigma, quiet=True)
        t1 = time.perf_counter()
        rep = evaluate(ck, a.data, work / name / "report", quiet=True)
        rec["candidates"][name] = {"pixel_method": "logsigma k 3", "sigma": sigma, "thresholds": thr,
                                   "recalibrate_s": t1 - t0, "evaluate_s": time.perf_counter() - t1, "report": rep}
        print(f"seed {a.seed} {name}: {P.line(rec['candidates'][name])}", flush=True)
    rec["loadavg_end"] = list(os.getloadavg())
    return rec


def table_md(records: list[dict[str, Any]]) -> str:
    P.CANDIDATES = dict.fromkeys(CANDIDATES)  # the shared rule over S names
    m = P.means(records)
    m = {"P0": m["S4"]} | {k: v for k, v in m.items() if k != "S4"}  # P.decide compares against "P0" (= S4)
    P.CANDIDATES = dict.fromkeys(m)
    P.CHEAPEST_FIRST = ("S1", "S2", "P0")
    d = P.decide(m)
    d["winner"] = "S4" if d["winner"] == "P0" else d["winner"]
    lines = ["# Round 4, step S: map smoothing on magnetic tile (RULE_R4.md)", ""]
    for r in sorted(records, key=lambda r: r["seed"]):
        lines += [f"## Seed {r['seed']} (`{r['checkpoint']}`, commit {r['commit']})", "", P.seed_table(r), ""]
    lines += ["## Means over seeds", "", "| candidate | seeds | mean SegF1 | mean image AUROC |", "|---|---|---|---|"]
    lines += [f"| {'S4' if n == 'P0' else n} | {','.join(map(str, v['seeds']))} | {P._f(v['segf1'])} | "
              f"{P._f(v['image_auroc'], '.4f')} |" for n, v in m.items()]
    lines += ["", f"**Rule:** {d['why'].replace('P0', 'S4')}.",
              *[f"- {n.replace('P0', 'S4')}" for n in d.get("notes", [])], ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    a = parse(argv)
    from edge_stpm.common.files import ensure_dir, write_json, write_text

    keep = ensure_dir(a.keep)
    if a.table:
        md = table_md([json.loads(p.read_text()) for p in a.table])
        write_text(keep / "S_table.md", md)
        print(md)
        return 0
    if a.checkpoint is None or not a.checkpoint.is_file():
        sys.exit(f"--checkpoint {a.checkpoint}: no such model.pt")
    rec = one_seed(a)
    write_json(keep / f"S_seed{a.seed}.json", rec)
    write_text(keep / f"S_seed{a.seed}.md", f"# Step S, seed {a.seed}\n\n{P.seed_table(rec)}\n")
    print(P.seed_table(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
