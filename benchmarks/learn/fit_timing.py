"""How long ``edge-stpm fit`` takes on the runtime install for N collected good parts (issue 40's "200 parts → a
deployable bundle in ≤ 60 s on an idle box"), with the machine's load average before and after named in the result.

    python3 benchmarks/learn/fit_timing.py --pack /tmp/learn/pack --images 200 [--repeat 3]

The parts are the first N of magnetic tile's train/good (sorted names), linked into a folder as a collection would
be. Each repeat writes a fresh bundle; the median wall time and the stage times of each run are printed as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pack", type=Path, required=True)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "magnetic_tile" / "train" / "good")
    p.add_argument("--runtime-python", type=Path,
                   default=Path(os.environ.get("EDGE_STPM_RUNTIME_PYTHON", ROOT / ".venv-runtime" / "bin" / "python")))
    p.add_argument("--nice", type=int, default=0, help="niceness of the fit (the web app's job uses 10)")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fit-timing-"))
    parts = work / "parts"
    parts.mkdir()
    for f in sorted(a.data.iterdir())[: a.images]:
        (parts / f.name).symlink_to(f.resolve())
    runs = []
    try:
        for i in range(a.repeat):
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            out = work / f"bundle{i}"
            cmd = ["nice", "-n", str(a.nice), str(a.runtime_python), "-m", "edge_stpm.cli", "fit", "--teacher",
                   str(a.pack), "--data", str(parts), "--out", str(out), "--quiet"]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            rep = json.loads((out / "fit.json").read_text())
            runs.append({"wall_s": round(wall, 2), "stages_s": {k: round(v, 2) for k, v in rep["seconds"].items()},
                         "entries": rep["memory"]["entries"], "load_before": round(load0, 2),
                         "load_after": round(os.getloadavg()[0], 2)})
            shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"images": a.images, "nice": a.nice, "cpu": os.cpu_count(),
                      "median_wall_s": statistics.median(r["wall_s"] for r in runs), "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
