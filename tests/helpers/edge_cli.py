"""``edge-stpm`` commands as real processes, and the one-line error they must end with (exit 2, one ``error:`` line,
no traceback). Shared by the unit tests (tests/unit/test_schema.py) and the line tests (tests/line/test_edge.py,
tests/line/test_sinks.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: object, python: str = sys.executable, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    e = dict(os.environ) | (env or {})
    e.pop("EDGE_STPM_RUNTIME_PYTHON", None)
    return subprocess.run([python, "-m", "edge_stpm.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=e, cwd=ROOT if python == sys.executable else "/")


def one_error(r: subprocess.CompletedProcess, pattern: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "FATAL" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr
    assert pattern.lower() in r.stderr[r.stderr.index("error:"):].replace("\n", " ").lower(), r.stderr
