"""Atomic file writing: every artefact is written to a temporary name in the same folder, fsynced, renamed, and the
folder fsynced (so the rename itself survives a power cut). The process umask is never touched (it is process-wide:
changing it, even for a moment, races with other threads creating files)."""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from edge_stpm.contract.errors import UserError


def data_dir() -> Path:
    """Where a box keeps its state: ``$XDG_DATA_HOME/edge-stpm`` (``~/.local/share/edge-stpm``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "edge-stpm"


def ensure_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and check it is writable; raise UserError otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {path}: {exc.strerror or exc}") from None
    if not path.is_dir():
        raise UserError(f"output path {path} exists and is not a folder")
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UserError(f"output folder {path} is not writable: {exc.strerror or exc}") from None
    return path


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only if the block succeeds."""
    final = Path(final)
    if final.is_dir():
        raise UserError(f"{final} is a folder: give a file name")
    ensure_dir(final.parent)
    tmp_path, mode = _new_temporary(final)
    try:
        try:
            yield tmp_path
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp_path, mode)  # a writer that replaced the temporary gets the mode a plain new file has
            os.replace(tmp_path, final)
            fsync_dir(final.parent)
        except OSError as exc:  # a full disk, a vanished folder…: the file already there is kept as it was
            raise UserError(f"cannot write {final}: {exc.strerror or exc} (nothing written; an earlier "
                            f"{final.name} is unchanged)") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


# what atomic_path names a temporary: ".NAME.<8 random>.tmp<suffix>"
TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[^.]*)?$")
TEMP_MIN_AGE_S = 30.0  # younger temporaries may belong to a write still under way in another process


def clean_temporaries(folder: Path, min_age_s: float = TEMP_MIN_AGE_S, also: tuple[re.Pattern, ...] = ()) -> list[str]:
    """Temporaries of atomic writes that a killed process left in ``folder`` (never a finished file: those were
    renamed) — and files matching ``also`` (a command's own hidden work files) — are removed; returns one line per
    file removed. Those changed in the last ``min_age_s`` s are left."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    said = []
    for p in sorted(folder.iterdir()):
        ours = TEMP_NAME.match(p.name) or any(pat.match(p.name) for pat in also)
        if p.is_file() and ours and time.time() - p.stat().st_mtime >= min_age_s:
            with contextlib.suppress(OSError):
                p.unlink()
                said.append(f"removed {p}: the unfinished temporary of a write that was stopped hard (the finished "
                            f"file, if any, is untouched)")
    return said


def output_dir(path: Path, also: tuple[re.Pattern, ...] = ()) -> Path:
    """``ensure_dir`` for a command's output folder, and what an earlier, killed run left there cleaned (a note each;
    ``also``: the command's own hidden work files)."""
    from edge_stpm.contract.progress import console

    folder = ensure_dir(path)
    for line in clean_temporaries(folder, also=also):
        console.print(f"note: {line}", highlight=False, markup=False, soft_wrap=True)
    return folder


def _new_temporary(final: Path) -> tuple[Path, int]:
    """A new empty file ``.NAME.<8 random>.tmp<suffix>`` beside ``final`` and its permission bits: created with mode
    0o666, so the kernel applies the umask itself (0o644 under umask 022, as any new file) — no umask read or set."""
    for _ in range(100):
        tmp = final.parent / f".{final.name}.{secrets.token_hex(4)}.tmp{final.suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise UserError(f"cannot write {final}: {exc.strerror or exc}") from None
        try:
            return tmp, stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
    raise UserError(f"cannot write {final}: no free temporary name beside it")


def fsync_dir(folder: Path) -> None:
    """Make a rename (or a new file) in ``folder`` durable: fsync the folder itself. Best effort: platforms or file
    systems that cannot open or fsync a folder (Windows, some network mounts) are left as they are."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(folder, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(final: Path, data: bytes) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def zip_tree(folder: Path, top_level: bool = False) -> bytes:
    """A folder's files as one zip in memory (stored: PNG frames and ONNX graphs do not compress). ``top_level``:
    only the files directly in it, named by their own name (a bundle); otherwise every file under it, named under
    the folder's own name (a dataset or a collection unpacks into one folder). Hidden files are left out."""
    import io
    import zipfile

    folder = Path(folder)
    files = sorted(folder.iterdir() if top_level else folder.rglob("*"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for f in files:
            if f.is_file() and not f.name.startswith("."):
                z.write(f, f.name if top_level else f.relative_to(folder.parent).as_posix())
    return buf.getvalue()


def write_text(final: Path, text: str) -> Path:
    return write_bytes(final, text.encode("utf-8"))


def write_json(final: Path, obj: Any) -> Path:
    return write_text(final, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
