"""Atomic file writing: every artefact is written to a temporary name in the same folder, fsynced, renamed, and the
folder fsynced (so the rename itself survives a power cut). The process umask is never touched (it is process-wide:
changing it, even for a moment, races with other threads creating files)."""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from edge_stpm.common.errors import UserError
from edge_stpm.common.progress import console


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


def tree_members(folder: Path, top_level: bool = False) -> list[tuple[str, Path]]:
    """A folder's files as (name in a zip, file): ``top_level``: only the files directly in it, named by their own
    name (a bundle); otherwise every file under it, named under the folder's own name (a dataset or a collection
    unpacks into one folder). Hidden files are left out."""
    folder = Path(folder)
    files = sorted(folder.iterdir() if top_level else folder.rglob("*"))
    return [(f.name if top_level else f.relative_to(folder.parent).as_posix(), f) for f in files
            if f.is_file() and not f.name.startswith(".")]


def zip_members(out: BinaryIO, members: Iterable[tuple[str, Path | bytes]]) -> None:
    """``members`` (name in the zip, a file to copy or the bytes themselves) as a stored zip written to ``out`` as it
    goes (PNG frames and ONNX graphs do not compress): zipfile copies a file in 8 KiB pieces, so the memory used is a
    piece, whatever the zip's size."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for name, src in members:
            if isinstance(src, bytes):
                z.writestr(name, src)
            else:
                z.write(src, name)


def zip_tree(folder: Path, top_level: bool = False) -> bytes:
    """A folder's files (``tree_members``) as one zip in memory — for a bundle (a few graphs). A download that may
    be large (a dataset, a collection) is built on disk instead: ``ZipBuilds``."""
    buf = io.BytesIO()
    zip_members(buf, tree_members(folder, top_level))
    return buf.getvalue()


ZIP_CHUNK = 1 << 18  # bytes read from disk and sent to the client at a time
ZIP_STALE_S = 60.0  # a work file unchanged this long is a leftover of a process killed while building (removed)
ZIP_KEEP_FREE_MB = 512.0  # a zip is not built if it would leave less than this free (the [evidence] floor's default)


class Busy(Exception):
    """A zip of this kind is being built for another download (the web app answers 429). Not a UserError: the
    request was right, only too early."""


class OnceFile:
    """A built zip, open for reading and at once unlinked where the platform allows (POSIX): its name is gone from
    the folder, and its disk space comes back when it is closed — after the response, when the client went away,
    or when the process ends, whatever happens; elsewhere it is removed at ``close``. ``size`` in bytes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.fh = open(self.path, "rb")  # noqa: SIM115 - held open until the response is sent
        self.size = os.fstat(self.fh.fileno()).st_size
        with contextlib.suppress(OSError):
            self.path.unlink()

    def read(self, n: int = ZIP_CHUNK) -> bytes:
        return self.fh.read(n)

    def close(self) -> None:
        self.fh.close()
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)

    async def send(self, request: Any, resp: Any) -> Any:
        """Stream the file into ``resp`` (an aiohttp ``StreamResponse``, headers set) in ``ZIP_CHUNK`` pieces read
        off the event loop; closed in every case (a client that disconnects ends the write with an error)."""
        loop = asyncio.get_running_loop()
        try:
            resp.content_length = self.size
            await resp.prepare(request)
            while chunk := await loop.run_in_executor(None, self.read, ZIP_CHUNK):
                await resp.write(chunk)
            await resp.write_eof()
        finally:
            self.close()
        return resp


class ZipBuilds:
    """Download zips of one kind (``kind``: "dataset", "collection"), one build at a time (another request meanwhile:
    ``Busy``), each written into ``work`` — a hidden folder beside the data, on the disk that holds it, never the
    system's /tmp (often a RAM-backed tmpfs, which would put the zip back in memory, or a small partition) — and
    handed over as a ``OnceFile``. A build refuses, in one line, a zip that would leave less than ``keep_free_mb``
    free on that disk."""

    def __init__(self, kind: str, keep_free_mb: float = ZIP_KEEP_FREE_MB) -> None:
        self.kind, self.keep_free_mb = kind, keep_free_mb
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def one(self) -> Iterator[None]:
        """Hold the kind's single build slot, or raise ``Busy`` at once."""
        if not self.lock.acquire(blocking=False):
            raise Busy(f"a {self.kind} zip is being built for another download: try again when it is done")
        try:
            yield
        finally:
            self.lock.release()

    def build(self, work: Path, members: Sequence[tuple[str, Path | bytes]]) -> OnceFile:
        """``members`` as a zip in ``work``, open and unlinked (``OnceFile``). Takes the build slot itself."""
        with self.one():
            return self.write(work, members)

    def write(self, work: Path, members: Sequence[tuple[str, Path | bytes]]) -> OnceFile:
        """``build`` for a caller that already holds ``one()``."""
        work = ensure_dir(work)
        self._clean(work)
        path = work / f"{self.kind}-{secrets.token_hex(4)}.zip"
        try:
            self._room(work, members)
            with open(path, "wb") as fh:
                zip_members(fh, members)
            return OnceFile(path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
            if isinstance(exc, OSError):  # a full disk, a frame removed by retention meanwhile…
                raise UserError(f"cannot build the {self.kind} zip in {work}: {exc.strerror or exc}"
                                f"{f' ({exc.filename})' if exc.filename else ''}; nothing kept") from None
            raise

    def _room(self, work: Path, members: Sequence[tuple[str, Path | bytes]]) -> None:
        """Refuse a zip that would leave less than ``keep_free_mb`` free on ``work``'s disk."""
        need = sum(len(m) if isinstance(m, bytes) else m.stat().st_size for _, m in members)
        free = shutil.disk_usage(work).free
        if free - need < self.keep_free_mb * 2**20:
            raise UserError(f"the {self.kind} zip needs {need / 2**20:.0f} MB and {work}'s disk has "
                            f"{free / 2**20:.0f} MB free, of which {self.keep_free_mb:.0f} MB must stay free for "
                            "the record and evidence")

    def _clean(self, work: Path) -> None:
        """What a process killed while building left (this kind's files, unchanged for ``ZIP_STALE_S``)."""
        for p in work.glob(f"{self.kind}-*.zip"):
            with contextlib.suppress(OSError):
                if time.time() - p.stat().st_mtime >= ZIP_STALE_S:
                    p.unlink()


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
