"""What the ninth session's round-4 harnesses share (``pca_bank.py``, ``whiten.py``, ``small_sets.py``): the
command line over ``stride4.py``'s cached features."""
from __future__ import annotations

import argparse
from pathlib import Path

import stride4 as s4


def parser(doc: str) -> argparse.ArgumentParser:
    """--data (magnetic tile), --cache (the cached features), --seed, --table."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=s4.ROOT.parent / "shared" / "data" / "magnetic_tile")
    p.add_argument("--cache", type=Path, default=Path("/tmp/r4I"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--table", action="store_true")
    return p
