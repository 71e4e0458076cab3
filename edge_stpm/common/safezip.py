"""Unpacking a zip that came from outside (an HTTP upload, the drop folder) without trusting it: capped in total
uncompressed size, member count and per-member compression ratio (a zip bomb), and refusing encrypted, damaged
(CRC, inflate) and symbolic-link members, absolute paths and ``..`` — each in one UserError saying why. Members are
streamed to disk in chunks: neither the archive nor a member is ever held whole in memory (the archive may be a
file on disk or bytes already in memory).
"""
from __future__ import annotations

import contextlib
import lzma
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from io import BufferedIOBase, BytesIO
from pathlib import Path
from typing import Iterator

from edge_stpm.common.errors import UserError

MAX_TOTAL_BYTES = 2 * 2**30  # all members together, uncompressed (bytes)
MAX_MEMBERS = 10_000
MAX_RATIO = 100.0  # one member's uncompressed size / its compressed size
RATIO_FLOOR_BYTES = 2**20  # members smaller than this (uncompressed, bytes) are not held to MAX_RATIO
CHUNK_BYTES = 2**20  # read and written per step (bytes)

# what unpacking a member raises when its data is damaged or cannot be read (zipfile passes these through)
_DAMAGED = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError, RuntimeError, ValueError)


@dataclass(frozen=True)
class ZipLimits:
    """The caps an untrusted zip is held to (sizes in bytes)."""
    max_total_bytes: int = MAX_TOTAL_BYTES
    max_members: int = MAX_MEMBERS
    max_ratio: float = MAX_RATIO


def member_problem(info: zipfile.ZipInfo, limits: ZipLimits) -> str | None:
    """Why a member must not be unpacked (from the central directory alone), or None."""
    name = info.filename
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return f"member {name!r} has an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return f"member {name!r} climbs out of its folder (..)"
    if info.flag_bits & 0x1:
        return f"member {name!r} is encrypted"
    if stat.S_ISLNK(info.external_attr >> 16):
        return f"member {name!r} is a symbolic link"
    if info.file_size > RATIO_FLOOR_BYTES and info.file_size > limits.max_ratio * max(info.compress_size, 1):
        return (f"member {name!r} expands {info.file_size / max(info.compress_size, 1):.0f}× "
                f"({info.file_size / 2**20:.0f} MB; at most {limits.max_ratio:g}×): a zip bomb")
    return None


def _plan(z: zipfile.ZipFile, limits: ZipLimits, what: str) -> list[tuple[zipfile.ZipInfo, str]]:
    """(member, file name to write) for every member to unpack, after checking all of them; UserError otherwise."""
    infos = z.infolist()
    if len(infos) > limits.max_members:
        raise UserError(f"{what} has {len(infos)} members, more than {limits.max_members}")
    total = sum(i.file_size for i in infos)
    if total > limits.max_total_bytes:
        raise UserError(f"{what} unpacks to {total / 2**20:.0f} MB, more than {limits.max_total_bytes / 2**20:.0f} MB")
    plan: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        problem = member_problem(info, limits)
        if problem:
            raise UserError(f"{what}: {problem}")
        name = re.split(r"[/\\]", info.filename)[-1]
        if info.is_dir() or not name or name.startswith("."):
            continue
        if name in plan:
            raise UserError(f"{what}: two members are named {name!r} ({plan[name].filename!r}, {info.filename!r})")
        plan[name] = info
    if not plan:
        raise UserError(f"{what} holds no files")
    return [(info, name) for name, info in plan.items()]


def _stream(z: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, budget: int, what: str) -> int:
    """One member into ``dest`` in chunks; returns the bytes written. UserError when it is damaged, writes more than
    it declared or than ``budget`` (bytes), or cannot be written."""
    written = 0
    try:
        with z.open(info) as src, open(dest, "xb") as out:
            while chunk := src.read(CHUNK_BYTES):
                written += len(chunk)
                if written > info.file_size or written > budget:
                    raise UserError(f"{what}: member {info.filename!r} unpacks to more than it declares or the "
                                    f"cap allows ({written / 2**20:.0f} MB so far): a zip bomb")
                out.write(chunk)
    except _DAMAGED as exc:
        raise UserError(f"{what}: member {info.filename!r} is damaged or cannot be read ({exc})") from None
    except OSError as exc:
        raise UserError(f"{what}: cannot unpack member {info.filename!r} to {dest.parent}: "
                        f"{exc.strerror or exc}") from None
    return written


def _declared_members(fh: BufferedIOBase) -> int:
    """The member count the end record declares (0 when there is none or it cannot be read here): checked before
    zipfile reads the central directory whole into memory."""
    reader = getattr(zipfile, "_EndRecData", None)  # the stdlib's own reader of the end record
    end = reader(fh) if reader is not None else None
    fh.seek(0)
    return int(end[getattr(zipfile, "_ECD_ENTRIES_TOTAL", 4)]) if end else 0


@contextlib.contextmanager
def _open(src: bytes | Path, what: str, limits: ZipLimits) -> Iterator[zipfile.ZipFile]:
    """The zip ``src`` open for reading; UserError when it is no zip, cannot be read or declares too many members."""
    with contextlib.ExitStack() as stack:
        try:
            fh = stack.enter_context(BytesIO(src) if isinstance(src, (bytes, bytearray, memoryview))
                                     else open(src, "rb"))
            n = _declared_members(fh)
            if n > limits.max_members:
                raise UserError(f"{what} has {n} members, more than {limits.max_members}")
            z = stack.enter_context(zipfile.ZipFile(fh))
        except (zipfile.BadZipFile, EOFError, ValueError) as exc:
            raise UserError(f"{what} is not a zip ({exc})") from None
        except OSError as exc:
            raise UserError(f"{what} cannot be read: {exc.strerror or exc}") from None
        yield z


def extract_flat(src: bytes | Path, dest: Path, limits: ZipLimits = ZipLimits(), what: str = "the zip") -> list[str]:
    """Unpack the zip ``src`` (bytes, or a path to a zip file) into the existing folder ``dest``, every file by its own
    name (folders inside the zip flattened, hidden names and folders skipped; two files of one name refused), all
    members checked before the first is written. Returns the names written; UserError naming the first problem
    (what was written so far stays in ``dest``: the caller removes the folder)."""
    with _open(src, what, limits) as z:
        plan = _plan(z, limits, what)
        left = limits.max_total_bytes
        for info, name in plan:
            left -= _stream(z, info, Path(dest) / name, left, what)
    return [name for _, name in plan]
