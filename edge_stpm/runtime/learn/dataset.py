"""``edge-stpm dataset --from-history DB --recipe NAME --out DIR``: the saved frames of a recipe's reviewed results as
an MVTec-layout folder — reviewed *good* (false calls) into ``train/good`` with a held-out share in ``test/good`` (at
least one part of two or more), reviewed *defect* into ``test/<defect type>`` (``test/defect`` without one), sampled
OK frames into ``train/good`` on request — and ``manifest.json`` naming, for every file, its record row, the model
that judged it and the review. Torch-free: the box can build it for a workstation. The split is seeded by the result
id (the same review gives the same file the same place)."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

from edge_stpm.common.errors import UserError
from edge_stpm.common.files import OnceFile, ZipBuilds, output_dir, write_json
from edge_stpm.runtime.loop.sinks.record import connect

SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _draw(result_id: str) -> float:
    return int(hashlib.sha256(result_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def _held_ids(rows: list[dict[str, Any]], share: float) -> set[str]:
    """Result ids of the good rows held out: those whose id draws under ``share``; with a share above 0 and at least
    two good rows, at least one (the lowest draw), so that a small review set still leaves parts to check against."""
    good = sorted((_draw(r["result_id"]), r["result_id"]) for r in rows if r["mark"] != "defect")
    held = {rid for h, rid in good if h < share}
    if not held and share > 0 and len(good) >= 2:
        held.add(good[0][1])
    return held


def _rows(db: Path, recipe: str, include_ok: bool) -> list[dict[str, Any]]:
    con = connect(Path(db), readonly=True)
    try:
        if con.execute("SELECT 1 FROM sqlite_master WHERE name = 'reviews'").fetchone() is None:
            raise UserError(f"{db} has no review marks (a record from before reviews): review results first")
        known = {r[0] for r in con.execute("SELECT DISTINCT recipe_name FROM inspections "
                                           "WHERE recipe_name IS NOT NULL")}
        if recipe not in known:
            raise UserError(f"recipe {recipe!r} is not in {db} (it has: {', '.join(sorted(known)) or 'none'})")
        sql = ("SELECT i.result_id, i.time_iso, i.verdict, i.normalised_score, i.model_sha256, i.recipe_index, "
               "e.frame, e.kind, r.mark, r.defect_type, r.who, r.time FROM inspections i JOIN evidence e ON "
               "e.result_id = i.result_id LEFT JOIN reviews r ON r.result_id = i.result_id WHERE i.recipe_name = ? "
               "AND (r.mark IS NOT NULL" + (" OR e.kind = 'ok')" if include_ok else ")") + " ORDER BY i.id")
        cols = ("result_id", "time_iso", "verdict", "normalised_score", "model_sha256", "recipe_index", "frame",
                "kind", "mark", "defect_type", "who", "reviewed_at")
        return [dict(zip(cols, r, strict=True)) for r in con.execute(sql, (recipe,))]
    finally:
        con.close()


def _plan(db: Path, recipe: str, held_out: float, include_ok: bool) -> tuple[list[tuple[str, Path]], dict[str, Any]]:
    """Where each saved frame goes (path in the dataset, frame in the evidence folder) and the manifest. One
    UserError for no reviewed rows, missing frames, an unknown recipe."""
    if not 0 <= held_out < 1:
        raise UserError("--held-out must be in 0..0.95")
    rows = _rows(db, recipe, include_ok)
    if not any(r["mark"] for r in rows):
        raise UserError(f"no reviewed results of recipe {recipe!r} with a saved frame in {db}: review some first "
                        "(the web app's Review page)")
    missing = [r["frame"] for r in rows if not Path(r["frame"]).is_file()]
    if missing:
        raise UserError(f"{len(missing)} saved frames are missing from the evidence folder (retention, or moved), "
                        f"first {missing[0]}: nothing written")
    pairs, files = [], []
    held = _held_ids(rows, held_out)
    for r in rows:
        if r["mark"] == "defect":
            sub = "test/" + (SAFE.sub("_", r["defect_type"]).strip("_.") or "defect" if r["defect_type"] else "defect")
        else:
            sub = "test/good" if r["result_id"] in held else "train/good"
        rel = f"{sub}/{r['result_id']}.png"
        pairs.append((rel, Path(r["frame"])))
        files.append({"file": rel, **{k: r[k] for k in r if k != "frame"},
                      "source": "review" if r["mark"] else "sampled OK"})
    counts: dict[str, int] = {}
    for f in files:
        counts[str(Path(f["file"]).parent)] = counts.get(str(Path(f["file"]).parent), 0) + 1
    manifest = {"format": "edge-stpm-dataset", "record": str(db), "recipe": recipe, "held_out": held_out,
                "include_ok": include_ok, "counts": counts, "files": files,
                "note": "no defect masks: pixel-level figures need ground_truth/<type>/<name>_mask.png"}
    return pairs, manifest


def build(db: Path, recipe: str, out: Path, held_out: float = 0.2, include_ok: bool = False) -> dict[str, Any]:
    """Write the folder; returns the manifest. One UserError for no reviewed rows, missing frames, an unknown
    recipe."""
    pairs, manifest = _plan(db, recipe, held_out, include_ok)
    out = output_dir(Path(out))
    for rel, frame in pairs:
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(frame, dst)
    write_json(out / "manifest.json", manifest)
    return manifest


# the web app's dataset downloads: one build at a time, into a hidden folder beside the record (the station's data
# folder, on the disk that holds the record and, by default, the evidence) — not /tmp, often a RAM-backed tmpfs
DOWNLOADS = ZipBuilds("dataset")


def work_dir(db: Path) -> Path:
    """Where dataset zips are built: ``<record's folder>/.downloads``."""
    return Path(db).resolve().parent / ".downloads"


def build_zip(db: Path, recipe: str, held_out: float = 0.2,
              include_ok: bool = False) -> tuple[OnceFile, dict[str, Any]]:
    """The same folder as ``build``, as one zip for a workstation (the web app's download): built on disk, the
    frames copied straight from the evidence folder, never the whole zip in memory. Returns the zip open and
    already unlinked (``OnceFile``: send it, then close it) and the manifest. ``Busy`` while another dataset zip is
    being built."""
    with DOWNLOADS.one():
        pairs, manifest = _plan(db, recipe, held_out, include_ok)
        top = f"{SAFE.sub('_', recipe)}-reviewed"
        members: list[tuple[str, Path | bytes]] = [(f"{top}/{rel}", frame) for rel, frame in pairs]
        members.append((f"{top}/manifest.json", (json.dumps(manifest, indent=2) + "\n").encode()))
        return DOWNLOADS.write(work_dir(db), members), manifest
