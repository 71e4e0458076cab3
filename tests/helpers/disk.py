"""A real small disk for the full-disk tests: a tmpfs mounted under a test's folder (root only)."""
from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_tmpfs(where: Path, size_kb: int, leave_kb: int | None = None) -> Iterator[Path]:
    """A tmpfs of ``size_kb`` at ``where`` (made), with a filler file leaving ``leave_kb`` free when given; skips
    the test with the reason when it cannot be mounted; unmounted after."""
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(where)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or 'not root'})")
    try:
        if leave_kb is not None:
            with open(where / "filler.bin", "wb") as fh:
                fh.write(os.urandom((size_kb - leave_kb) * 1024))
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
