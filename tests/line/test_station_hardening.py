"""Hardening of what reaches the box (issue 37): untrusted zips unpacked under caps (common/safezip.py) for the
upload and the drop folder; the drop folder refuses each bad item into ``.refused/`` with its reason and goes on to
the next; a version folder a failed deploy left does not block the next deploy, and a full disk is one UserError;
rollback returns to the model that ran before, from a history kept in the store."""
from __future__ import annotations

import errno
import json
import re
import shutil
import stat
import zipfile
from io import BytesIO
from pathlib import Path

import pytest
from test_station import _control

from edge_stpm.common.errors import UserError
from edge_stpm.common.safezip import ZipLimits, extract_flat


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _special(name: str, data: bytes, mode: int | None = None) -> bytes:
    """A zip of one member named exactly ``name`` (``..``, absolute) and, with ``mode``, those unix mode bits."""
    info = zipfile.ZipInfo(name)
    if mode is not None:
        info.create_system, info.external_attr = 3, mode << 16
    buf = BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(info, data)
    assert zipfile.ZipFile(BytesIO(buf.getvalue())).namelist() == [name]
    return buf.getvalue()


def _encrypted() -> bytes:
    """The 'encrypted' flag (bit 0) set in the local header and the central directory, as an encrypting zip tool
    writes it (zipfile cannot encrypt)."""
    data = bytearray(_zip({"model_fp32.onnx": b"x" * 1000}))
    data[data.find(b"PK\x03\x04") + 6] |= 1
    data[data.find(b"PK\x01\x02") + 8] |= 1
    return bytes(data)


def _corrupt_deflate() -> bytes:
    """A deflated member whose compressed bytes are garbage (0xFF: a reserved deflate block type)."""
    data = bytearray(_zip({"model_fp32.onnx": bytes(range(256)) * 400}))
    info = zipfile.ZipFile(BytesIO(bytes(data))).infolist()[0]
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start:start + info.compress_size] = b"\xff" * info.compress_size
    return bytes(data)


def _lying_size() -> bytes:
    """A stored member of 100 bytes whose central directory declares 10 (more data than it says)."""
    data = bytearray(_zip({"model_fp32.onnx": b"y" * 100}, zipfile.ZIP_STORED))
    cd = data.find(b"PK\x01\x02")
    data[cd + 24:cd + 28] = (10).to_bytes(4, "little")
    return bytes(data)


BAD_ZIPS = {  # name → (zip bytes, what the refusal says)
    "encrypted": (_encrypted, "is encrypted"),
    "corrupt-deflate": (_corrupt_deflate, "is damaged"),
    "bomb": (lambda: _zip({"model_fp32.onnx": bytes(16 * 2**20)}), "zip bomb"),
    "too-many-members": (lambda: _zip({f"f{i}": b"" for i in range(10_001)}, zipfile.ZIP_STORED),
                         "10001 members, more than 10000"),
    "symlink-member": (lambda: _special("model_fp32.onnx", b"/etc/passwd", stat.S_IFLNK | 0o777),
                       "is a symbolic link"),
    "dotdot": (lambda: _special("../model_fp32.onnx", b"x"), "climbs out of its folder"),
    "absolute": (lambda: _special("/tmp/model_fp32.onnx", b"x"), "absolute path"),
    "not-a-zip": (lambda: b"this is not a zip\n" * 20, "is not a zip"),
    "empty": (lambda: _zip({}), "holds no files"),
}


@pytest.mark.parametrize("kind", [*BAD_ZIPS, "lying-size", "duplicate", "over-cap"])
def test_unsafe_zips_are_refused_with_why_and_nothing_escapes(kind: str, tmp_path: Path) -> None:
    make, why = BAD_ZIPS.get(kind, (None, None))
    limits = ZipLimits()
    if kind == "lying-size":
        make, why = _lying_size, "is damaged"
    elif kind == "duplicate":
        make, why = (lambda: _zip({"a/model.onnx": b"1", "b/model.onnx": b"2"})), "two members are named 'model.onnx'"
    elif kind == "over-cap":
        make, why, limits = (lambda: _zip({"a": b"1" * 600, "b": b"2" * 600})), "unpacks to", ZipLimits(1000)
    data = make()
    (tmp_path / "in.zip").write_bytes(data)
    for i, src in enumerate((data, tmp_path / "in.zip")):  # bytes in memory, or a file on disk
        (tmp_path / f"out{i}").mkdir()
        with pytest.raises(UserError, match=re.escape(why)):
            extract_flat(src, tmp_path / f"out{i}", limits, what="the zip")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zip", "out0", "out1"], "nothing written beside"


def test_a_good_zip_unpacks_flat_from_bytes_or_a_file(tmp_path: Path) -> None:
    data = _zip({"bundle/model_fp32.onnx": b"m" * 3000, "bundle/manifest.json": b"{}", "bundle/.DS_Store": b"x",
                 "bundle/sub/": b""})
    for i, src in enumerate((data, tmp_path / "in.zip")):
        (tmp_path / "in.zip").write_bytes(data)
        dest = tmp_path / f"out{i}"
        dest.mkdir()
        assert sorted(extract_flat(src, dest)) == ["manifest.json", "model_fp32.onnx"]
        assert (dest / "model_fp32.onnx").read_bytes() == b"m" * 3000 and not (dest / ".DS_Store").exists()


def _tampered(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    with open(dst / "model_fp32.onnx", "r+b") as fh:
        fh.seek(-20, 2)
        fh.write(b"\x00" * 8)
    return dst


def test_drop_folder_refuses_each_bad_item_and_deploys_the_good_one_after_them(exported: Path, exported_memory: Path,
                                                                                tmp_path: Path) -> None:
    """Eleven bad items, then a good bundle: each bad one lands in .refused/ with its reason (none blocks the next),
    the good one goes live, every attempt is audited."""
    from edge_stpm.contract.artifacts import model_sha256
    from edge_stpm.runtime.station.audit import query
    from edge_stpm.runtime.station.control import zip_bundle
    from edge_stpm.runtime.station.dropfolder import DropWatcher

    insp, control = _control(tmp_path, exported)
    w = DropWatcher(control, tmp_path / "drop", lambda line: None)
    (w.root / "a").mkdir(parents=True)
    why = {f"{i:02d}-{kind}.zip": reason for i, (kind, (_, reason)) in enumerate(BAD_ZIPS.items())}
    for i, (kind, (make, _)) in enumerate(BAD_ZIPS.items()):
        (w.root / "a" / f"{i:02d}-{kind}.zip").write_bytes(make())
    linked = shutil.copytree(exported_memory, w.root / "a" / "20-folder-with-link")
    (linked / "extra.onnx").symlink_to("/etc/hostname")
    why["20-folder-with-link"] = "holds a symbolic link, extra.onnx"
    (w.root / "a" / "21-tampered.zip").write_bytes(zip_bundle(_tampered(exported_memory, tmp_path / "tampered")))
    why["21-tampered.zip"] = "does not match manifest.json"
    (w.root / "a" / "99-good.zip").write_bytes(zip_bundle(exported_memory))
    w.poll()
    w.poll()
    assert control.recipes.active.sha256 == model_sha256(exported_memory) and control.recipes.active.version == 1
    assert [p.name for p in (w.root / "a").iterdir() if not p.name.startswith(".")] == [], "every item taken"
    assert [p.name[16:] for p in (w.root / "a" / ".done").iterdir()] == ["99-good.zip"]
    refused = w.root / "a" / ".refused"
    for name, reason in why.items():
        txt = list(refused.glob(f"*-{name}.txt"))
        assert len(txt) == 1 and reason in txt[0].read_text(), (name, [t.read_text() for t in txt])
        assert len(list(refused.glob(f"*-{name}"))) == 1, f"{name} moved beside its reason"
    assert (w.refused, w.deployed) == (len(why), 1)
    rows = [(a["action"], a["outcome"]) for a in query(tmp_path / "h.db")]
    assert rows == [("deploy", "refused")] * len(why) + [("deploy", "ok")]
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".upload-")], "no unpacked leftovers"
    insp.close()


def test_a_half_made_version_and_a_full_disk_do_not_block_the_next_deploy(exported: Path, exported_memory: Path,
                                                                         tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_stpm.contract.artifacts import model_sha256
    from edge_stpm.runtime.station import store as store_mod
    from edge_stpm.runtime.station.audit import query

    insp, control = _control(tmp_path, exported)
    half = tmp_path / "models" / "a" / "v1"  # what a deploy stopped between copying and the index left
    half.mkdir(parents=True)
    (half / "model_fp32.onnx").write_bytes(b"half")
    real = shutil.copytree

    def disk_full(src: Path, dst: Path, **kw: object) -> None:
        Path(dst).mkdir(parents=True)
        (Path(dst) / "part").write_bytes(b"x")
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(store_mod.shutil, "copytree", disk_full)
    with pytest.raises(UserError, match="No space left on device"):
        control.deploy("a", exported_memory, "test", "fixture")
    monkeypatch.setattr(store_mod.shutil, "copytree", real)
    assert control.recipes.active.version == 0 and sorted(p.name for p in half.parent.iterdir()) == ["versions.json"]
    half.mkdir()
    (half / "model_fp32.onnx").write_bytes(b"half")
    r = control.deploy("a", exported_memory, "test", "fixture")
    assert r["after"]["version"] == 1 and control.recipes.active.sha256 == model_sha256(exported_memory)
    assert model_sha256(half) == model_sha256(exported_memory), "the half-made folder replaced by the real v1"
    rows = [(a["action"], a["outcome"]) for a in query(tmp_path / "h.db")]
    assert rows == [("deploy", "refused"), ("deploy", "ok")]
    insp.close()


def test_rollback_returns_to_the_model_that_ran_before(exported: Path, exported_memory: Path, tmp_path: Path) -> None:
    """A (v0) live; deploy B, roll back, deploy B again, roll back: A is live — not v1, B's first copy — and the
    history survives a new store object (a restart); one more rollback has nothing before and is refused."""
    from edge_stpm.contract.artifacts import model_sha256
    from edge_stpm.runtime.station.audit import query
    from edge_stpm.runtime.station.control import zip_bundle
    from edge_stpm.runtime.station.store import ModelStore

    insp, control = _control(tmp_path, exported)
    sha_a, sha_b = model_sha256(exported), model_sha256(exported_memory)
    control.deploy("a", exported_memory, "test", "B")
    control.rollback("a", "test")
    control.deploy_zip("a", zip_bundle(exported_memory), "test", "B again")  # the zip's bytes, as an upload
    assert ModelStore(tmp_path / "models").previous("a")["version"] == 0, "what ran before v2 is v0, after a restart"
    r = control.rollback("a", "test")
    assert r["after"] == {"version": 0, "sha256": sha_a} and control.recipes.active.sha256 == sha_a
    assert control.recipes.active.version == 0 and control.store.versions("a")["history"] == [0]
    with pytest.raises(UserError, match="no earlier model to roll back to"):
        control.rollback("a", "test")
    assert control.recipes.active.sha256 == sha_a
    audit = query(tmp_path / "h.db")  # before / after decoded
    rows = [(a["action"], a["outcome"], a["before"]["version"], a["after"] and a["after"]["version"]) for a in audit]
    assert rows == [("deploy", "ok", 0, 1), ("rollback", "ok", 1, 0), ("deploy", "ok", 0, 2), ("rollback", "ok", 2, 0),
                    ("rollback", "refused", 0, None)]
    assert audit[2]["after"]["sha256"] == sha_b and "the model that ran before v2" in audit[3]["detail"]
    insp.close()


def test_an_index_from_before_the_history_rolls_back_as_it_did(tmp_path: Path) -> None:
    from edge_stpm.runtime.station.store import ModelStore

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "versions.json").write_text(json.dumps({"recipe": "a", "current": 2, "versions": [
        {"version": v, "sha256": str(v), "path": str(tmp_path / f"v{v}"), "status": s}
        for v, s in ((0, "retired"), (1, "retired"), (2, "live"), (3, "refused"))]}))
    store = ModelStore(tmp_path)
    assert store.previous("a")["version"] == 1
    store.set_current("a", 1, rollback=True)
    assert store.previous("a")["version"] == 0 and store.versions("a")["history"] == [0, 1]


def test_a_restart_runs_the_version_that_was_live(exported: Path, exported_memory: Path, tmp_path: Path) -> None:
    """Deploy B, stop, start again with the same station file: B runs (and is reported) — before this, the box ran
    the station file's model A while its store said v1; a version that no longer loads falls back to A, said."""
    import shutil as sh

    from edge_stpm.contract.artifacts import model_sha256

    insp, control = _control(tmp_path, exported)
    control.deploy("a", exported_memory, "test", "B")
    insp.close()
    said: list[str] = []
    insp, control = _control(tmp_path, exported)  # _control adopts without a log: adopt again to see the line
    control.adopt(log=said.append)
    assert control.recipes.active.sha256 == model_sha256(exported_memory) and control.recipes.active.version == 1
    insp.close()
    v1 = Path(control.store.versions("a")["versions"][1]["path"])
    sh.rmtree(v1)
    said.clear()
    insp, control = _control(tmp_path, exported)
    control.adopt(log=said.append)
    assert control.recipes.active.sha256 == model_sha256(exported) and control.recipes.active.version == 0
    assert any("does not load" in s for s in said), said
    insp.close()
