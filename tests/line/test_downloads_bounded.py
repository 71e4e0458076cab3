"""Issue 37 (hardening): downloads and collection are bounded. The dataset zip and the collection zip are built on
disk beside the data and streamed (the station's memory stays far below the zip's size), the temporary file is gone
after the response and after a client that leaves early, a second build meanwhile is refused with 429; collecting
on a running station stops at its disk budget or its free-space floor, saying why, the kept parts counted
honestly."""
from __future__ import annotations

import asyncio
import io
import os
import shutil
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

# imported here, not first under tracemalloc: a module's code is allocations too (several MB for aiohttp's)
import aiohttp.test_utils
import aiohttp.web  # noqa: F401
import numpy as np
import pytest
from test_feedback import _record

import edge_stpm.runtime.learn.collect
import edge_stpm.runtime.learn.dataset
import edge_stpm.runtime.loop.sinks.record
import edge_stpm.runtime.web.api  # noqa: F401

ZIP_MB = 50  # incompressible frames in the zips of the memory tests


# --- an in-process web app with just the two download handlers ------------------------------------------------------

class _Audit:
    def __init__(self) -> None:
        self.lines: list[tuple[Any, ...]] = []

    def write(self, *a: Any) -> None:
        self.lines.append(a)


class _Control:
    def __init__(self) -> None:
        self.audit = _Audit()


class _View:
    def __init__(self, history: Path | None, collect: Any) -> None:
        self.history, self.collect = history, collect


def _serve(history: Path | None, collect: Any, client: Any, timeout_s: float = 120.0) -> Any:
    """Run ``client(session, base_url)`` against an aiohttp app on loopback serving ``/api/dataset`` and
    ``/api/collect.zip`` (the station's own ``Api`` handlers, no login in front), bounded in time."""
    from aiohttp import ClientSession, web
    from aiohttp.test_utils import TestServer

    from edge_stpm.runtime.web.api import Api

    async def main() -> Any:
        api = Api(_View(history, collect), _Control(), None)
        app = web.Application()
        app.router.add_get("/api/dataset", api.dataset)
        app.router.add_get("/api/collect.zip", api.collect_zip)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            async with ClientSession() as s:
                return await asyncio.wait_for(client(s, str(server.make_url(""))), timeout_s)
        finally:
            await server.close()

    return asyncio.run(main())


async def _download(s: Any, url: str, out: Path) -> tuple[int, dict[str, str], int]:
    """GET ``url`` into the file ``out`` piece by piece (the client holds no more than a piece): status, headers,
    bytes received."""
    async with s.get(url) as r:
        n = 0
        with open(out, "wb") as fh:  # noqa: ASYNC230 - a test's client, writing pieces as they come
            async for chunk in r.content.iter_chunked(1 << 16):
                fh.write(chunk)
                n += len(chunk)
        return r.status, dict(r.headers), n


def _open_under(folder: Path) -> list[str]:
    """This process's open files under ``folder`` (an unlinked one shows as "… (deleted)")."""
    got = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder.resolve())):
            got.append(target)
    return got


def _traced_peak(fn: Any) -> tuple[Any, int]:
    """``fn()`` under tracemalloc (every thread): its result and the peak of traced allocations, in bytes."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _big_dataset(tmp: Path, n: int = ZIP_MB) -> tuple[Path, dict[str, bytes]]:
    """A record of ``n`` reviewed results whose saved frames are 1 MiB of random bytes each (incompressible)."""
    reviews = {i: ("defect", "scratch") if i % 5 == 0 else ("good", None) for i in range(n)}
    db = _record(tmp, reviews, n)
    rng = np.random.default_rng(0)
    frames = {}
    for i in range(n):
        data = rng.bytes(1 << 20)
        (tmp / "ev" / f"run-{i:03d}.png").write_bytes(data)
        frames[f"run-{i:03d}.png"] = data
    return db, frames


def _frame(rng: np.random.Generator, size: int = 96) -> Any:
    from edge_stpm.runtime.learn.collect import PassThrough
    from edge_stpm.runtime.loop.sinks.base import Result

    img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Result(0, 0, "test", 0, img, PassThrough().inspect(img), 0.0, 0.0, 0.0, 0.0, 0.0)


# --- the dataset zip ------------------------------------------------------------------------------------------------

def test_dataset_zip_is_built_on_disk_streamed_and_gone_after(tmp_path: Path) -> None:
    db, frames = _big_dataset(tmp_path)
    out = tmp_path / "got.zip"
    (status, headers, n), peak = _traced_peak(lambda: _serve(db, None, lambda s, base: _download(
        s, f"{base}/api/dataset?recipe=tile&held_out=0.2", out)))
    assert status == 200, headers
    assert n >= ZIP_MB * 2**20 and n == int(headers["Content-Length"]) == out.stat().st_size
    assert peak < 0.2 * n, f"peak traced memory {peak / 2**20:.1f} MB for a {n / 2**20:.0f} MB zip"
    assert headers["Content-Type"] == "application/zip"
    assert headers["Content-Disposition"] == "attachment; filename=tile-reviewed.zip"
    assert sum(__import__("json").loads(headers["X-Counts"]).values()) == len(frames)
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
        assert "tile-reviewed/manifest.json" in names and len(names) == len(frames) + 1
        assert z.read("tile-reviewed/test/scratch/run-005.png") == frames["run-005.png"]
    # built beside the record (its work folder exists), nothing left there, nothing held open
    work = db.parent / ".downloads"
    assert work.is_dir() and not any(work.iterdir()) and not _open_under(work)


def test_dataset_zip_a_client_that_leaves_early_leaves_nothing(tmp_path: Path) -> None:
    db, _ = _big_dataset(tmp_path, 20)
    work = db.parent / ".downloads"

    async def leave(s: Any, base: str) -> list[str]:
        async with s.get(f"{base}/api/dataset?recipe=tile") as r:
            assert r.status == 200
            await r.content.readexactly(1 << 16)
            # being sent: open, its name already gone from the folder (its space comes back when it is closed)
            assert [x.endswith(" (deleted)") for x in _open_under(work)] == [True] and not any(work.iterdir())
            r.close()  # the connection dropped with most of the zip unsent
        for _ in range(100):  # the server sees it at its next write
            if not _open_under(work):
                break
            await asyncio.sleep(0.05)
        return _open_under(work)

    assert _serve(db, None, leave) == []
    assert not any(work.iterdir())


def test_a_second_dataset_build_meanwhile_is_429(tmp_path: Path) -> None:
    from edge_stpm.runtime.learn.dataset import DOWNLOADS

    db = _record(tmp_path, {1: ("good", None)})

    async def get(s: Any, base: str) -> tuple[int, str]:
        async with s.get(f"{base}/api/dataset?recipe=tile") as r:
            return r.status, (await r.read()).decode(errors="replace")

    with DOWNLOADS.one():  # a build under way
        status, text = _serve(db, None, get)
    assert status == 429 and len(text.strip().splitlines()) == 1 and "being built" in text, text
    assert _serve(db, None, get)[0] == 200  # and once it is done, the next one is served


# --- the collection zip ---------------------------------------------------------------------------------------------

def test_collection_zip_is_built_on_disk_streamed_and_gone_after(tmp_path: Path) -> None:
    from edge_stpm.runtime.learn.collect import StationCollect

    sc = StationCollect(tmp_path / "collect")
    sc.arm("tile", 5, 0.0)
    rng = np.random.default_rng(1)
    for _ in range(3):
        sc.take(_frame(rng))
    good = sc.folder / "train" / "good"
    for i in range(ZIP_MB):  # and a large collection beside the frames just kept
        (good / f"big{i:03d}.png").write_bytes(rng.bytes(1 << 20))
    out = tmp_path / "c.zip"
    (status, headers, n), peak = _traced_peak(lambda: _serve(None, sc, lambda s, base: _download(
        s, f"{base}/api/collect.zip", out)))
    assert status == 200 and headers["Content-Disposition"] == "attachment; filename=collected.zip", headers
    assert n >= ZIP_MB * 2**20 and n == int(headers["Content-Length"])
    assert peak < 0.2 * n, f"peak traced memory {peak / 2**20:.1f} MB for a {n / 2**20:.0f} MB zip"
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
    top = sc.folder.name
    assert len([x for x in names if x.startswith(f"{top}/train/good/")]) == 3 + ZIP_MB
    downloads = tmp_path / "collect" / ".downloads"
    assert not any(downloads.iterdir()) and not _open_under(downloads)


def test_a_second_collection_build_meanwhile_is_429(tmp_path: Path) -> None:
    from edge_stpm.runtime.learn.collect import StationCollect

    sc = StationCollect(tmp_path / "collect")
    sc.arm("tile", 1, 0.0)
    sc.take(_frame(np.random.default_rng(2)))

    async def get(s: Any, base: str) -> tuple[int, str]:
        async with s.get(f"{base}/api/collect.zip") as r:
            return r.status, (await r.read()).decode(errors="replace")

    with sc.downloads.one():
        status, text = _serve(None, sc, get)
    assert status == 429 and len(text.strip().splitlines()) == 1 and "being built" in text, text
    status, _ = _serve(None, sc, get)
    assert status == 200


def test_a_crashed_build_leftover_is_removed_by_the_next(tmp_path: Path) -> None:
    from edge_stpm.common.files import ZIP_STALE_S, ZipBuilds

    work = tmp_path / ".downloads"
    work.mkdir()
    old, fresh = work / "dataset-0badc0de.zip", work / "dataset-12345678.zip"
    for p in (old, fresh):
        p.write_bytes(b"x" * 100)
    os.utime(old, (0, os.path.getmtime(old) - ZIP_STALE_S - 1))
    (tmp_path / "f.png").write_bytes(b"y" * 10)
    z = ZipBuilds("dataset").build(work, [("a/f.png", tmp_path / "f.png")])
    try:
        data = z.read(1 << 20)
    finally:
        z.close()
    assert zipfile.ZipFile(io.BytesIO(data)).read("a/f.png") == b"y" * 10
    assert sorted(p.name for p in work.iterdir()) == [fresh.name], "the stale one removed, a fresh one left"


# --- the collection's disk budget -----------------------------------------------------------------------------------

def test_collection_stops_at_its_disk_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_stpm.common.errors import UserError
    from edge_stpm.runtime.learn import collect

    calls = []
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: calls.append(p) or real(p))
    root = tmp_path / "collect"
    (root / "older").mkdir(parents=True)
    (root / "older" / "x.png").write_bytes(b"z" * 100_000)  # an earlier collection counts against the budget
    budget_mb = 0.25
    sc = collect.StationCollect(root, budget_mb=budget_mb, min_free_mb=0, check_s=3600)
    sc.arm("tile", 100, 0.0)
    rng = np.random.default_rng(3)
    for _ in range(20):
        sc.take(_frame(rng))
    st = sc.status()
    kept = sorted((sc.folder / "train" / "good").glob("*.png"))
    assert st["state"].startswith("stopped: the disk budget"), st
    assert 0 < st["kept"] == len(kept) < 20 and st["seen"] == st["kept"] + 1  # the refused one not counted
    total = 100_000 + sum(p.stat().st_size for p in kept)
    assert total <= budget_mb * 2**20 < total + kept[0].stat().st_size * 1.1
    assert len(calls) == 1, "the disk's free space read once (check_s), not per frame"
    assert (sc.folder / "contact_sheet.jpg").is_file()
    sc.take(_frame(rng))  # stopped: nothing more
    assert len(list((sc.folder / "train" / "good").glob("*.png"))) == len(kept)
    with pytest.raises(UserError, match="not collecting: the disk budget"):
        sc.arm("tile", 10, 0.0)


def test_collection_stops_at_the_free_space_floor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_stpm.common.errors import UserError
    from edge_stpm.runtime.learn import collect

    free = {"b": 600 * 2**20 + 100_000}  # 100 kB above a 600 MB floor
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 0, free["b"]))
    sc = collect.StationCollect(tmp_path / "collect", min_free_mb=600, check_s=3600)
    sc.arm("tile", 100, 0.0)
    rng = np.random.default_rng(4)
    for _ in range(20):
        sc.take(_frame(rng))
    st = sc.status()
    kept = list((sc.folder / "train" / "good").glob("*.png"))
    # the free space read once and counted down by what was kept: stopped before the floor
    assert st["state"].startswith("stopped: the free-space floor") and 0 < st["kept"] == len(kept) < 20, st
    assert sum(p.stat().st_size for p in kept) <= 100_000
    free["b"] = 10 * 2**20
    with pytest.raises(UserError, match="not collecting: the free-space floor"):
        sc.arm("tile", 10, 0.0)
