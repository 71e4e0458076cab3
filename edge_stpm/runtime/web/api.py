"""The JSON API under the web app's pages (and for a plant's MES, with the same roles): results with their evidence
and review marks, review marks, recipes and model versions, threshold preview and change, deploy and rollback,
health, audit. One page of docs: docs/api.md."""
from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from edge_stpm.common.cells import safe_row
from edge_stpm.common.errors import Conflict, UserError
from edge_stpm.common.files import Busy
from edge_stpm.contract.options import small_int
from edge_stpm.contract.tiles import TileGrid, parse_tiles
from edge_stpm.runtime.learn.dataset import build, build_zip
from edge_stpm.runtime.learn.jobs import FitJob, collection_folder, same_teacher, teacher_for
from edge_stpm.runtime.learn.pack import TEACHER_JSON
from edge_stpm.runtime.loop.sinks.evidence import usage
from edge_stpm.runtime.loop.sinks.record import connect, parse_time, select_columns
from edge_stpm.runtime.station.audit import query
from edge_stpm.runtime.web.bodies import RECIPE_BODY, body_to_file
from edge_stpm.runtime.web.keys import CLIENT, ROLE, WHO
from edge_stpm.runtime.web.preview import apply_settings, preview

MARKS = ("good", "defect")
DEFECT_TYPE_MAX = 64


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number here")


def _strict_loads(text: str) -> Any:
    """JSON without Infinity / NaN, and no number too large for a float."""
    out = json.loads(text, parse_constant=_refuse_constant)
    if isinstance(out, dict) and any(isinstance(v, float) and not math.isfinite(v) for v in out.values()):
        raise ValueError("a number is too large")
    return out


async def json_body(request: Any, cap: int | None = None) -> dict[str, Any]:
    """The request's JSON object; anything else (not JSON, not an object, empty) is 400 with one line; over ``cap``
    bytes 413 (a chunked body, which declares no length the guard could refuse first)."""
    has_body = request.can_read_body  # (False once read: the body is kept for json())
    size = len(await request.read()) if cap is not None and has_body else 0
    if cap is not None and size > cap:
        raise web.HTTPRequestEntityTooLarge(max_size=cap, actual_size=size)
    try:
        body = await request.json(loads=_strict_loads) if has_body else {}
    except ValueError:
        raise web.HTTPBadRequest(text="the body is not JSON (numbers must be finite)") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object")
    return body


def _who(request: Any) -> str:
    return str(request.get(WHO) or f"anonymous@{request.remote or '?'}")


def _tiles(value: Any) -> TileGrid | None:
    """A fit body's ``tiles`` ("ROWSxCOLS", as ``fit --tiles``; "1x1" = the whole frame) → a grid, or one UserError
    line. None when absent (the fit keeps its teacher bundle's grid)."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 16:
        raise UserError("tiles: expected ROWSxCOLS, e.g. 2x2 (1x1 = the whole frame)")
    return parse_tiles(value, name="tiles")


class Api:
    """Handlers over the view (``LiveView``: status, record path) and the station (``StationControl``)."""

    SHIFT_TTL_S = 5.0  # the shift's counts are read from the record at most this often, for every page at once

    def __init__(self, view: Any, control: Any, sessions: Any) -> None:
        self.view, self.control, self.sessions = view, control, sessions
        self.t0 = time.time()
        self._shift: tuple[float, dict[str, Any]] | None = None
        self._shift_lock = asyncio.Lock()
        self._upload = asyncio.Lock()
        self._live: dict[str, tuple[float, bytes]] = {}  # role → (when, the live page's JSON)
        self._fit: Any = None  # runtime/learn/jobs.FitJob, made on first use (a station with a collect folder)

    @property
    def record(self) -> Path | None:
        return self.view.history

    # --- plumbing -------------------------------------------------------------------------------------------

    async def off_loop(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        except Conflict as exc:
            raise web.HTTPConflict(text=str(exc)) from None
        except UserError as exc:
            raise web.HTTPUnprocessableEntity(text=str(exc)) from None
        except (TypeError, ValueError, OverflowError, AttributeError) as exc:  # a value of the wrong kind in a body
            raise web.HTTPUnprocessableEntity(text=f"a value of the wrong kind: {exc}") from None

    def con(self) -> Any:
        if self.record is None:
            raise web.HTTPNotFound(text="this run keeps no record (--no-history)")
        return connect(self.record, readonly=True)

    # --- login ----------------------------------------------------------------------------------------------

    async def login(self, request: Any) -> Any:
        try:
            body = await request.json() if request.can_read_body else {}
            token = str(body.get("token", "")) if isinstance(body, dict) else ""
        except ValueError:
            raise web.HTTPBadRequest(text='send JSON: {"token": "…"}') from None
        guard, client = self.view.guard, request.get(CLIENT) or request.remote or "?"
        got = self.sessions.login(token) if token else None
        if got is None:
            refusal = guard.refuse_bad(client, "login")
            await guard.flush()
            return refusal
        self._audit(f"{got[1]}@{client}", "login", None, None, {"role": got[1]})
        return web.json_response({"session": got[0], "role": got[1], "idle_s": self.sessions.idle_s})

    async def logout(self, request: Any) -> Any:
        sid = request.headers.get("X-Session")
        if sid and self.sessions.role_of_session(sid):
            self.sessions.logout(sid)
            self._audit(f"session@{request.get(CLIENT) or request.remote}", "logout")
        return web.json_response({"ok": True})

    def _audit(self, who: str, action: str, recipe: str | None = None, before: Any = None, after: Any = None) -> None:
        if self.control is not None:
            self.control.audit.write(who, action, recipe, before, after)

    async def me(self, request: Any) -> Any:
        return web.json_response({"role": request.get(ROLE), "idle_s": self.sessions.idle_s})

    # --- results, evidence, reviews -------------------------------------------------------------------------

    def results(self, q: dict[str, str], limit: int) -> list[dict[str, Any]]:
        where: list[str] = []
        args: list[float | int | str] = []
        if q.get("since"):
            where.append("i.time >= ?")
            args.append(parse_time(q["since"]))
        for key, col in (("verdict", "i.verdict"), ("source", "i.source"), ("recipe", "i.recipe_name")):
            if q.get(key):
                where.append(f"{col} = ?")
                args.append(int(q[key]) if key == "source" else q[key])
        if q.get("reviewed") in ("yes", "no"):
            where.append("r.mark IS " + ("NOT NULL" if q["reviewed"] == "yes" else "NULL"))
        if q.get("evidence") == "yes":
            where.append("e.frame IS NOT NULL")
        con = self.con()
        try:
            cols = ", ".join("i." + c.split(" AS ")[0] if " AS " not in c else c
                             for c in select_columns(con).split(", "))
            sql = (f"SELECT {cols}, e.frame, e.heatmap, r.mark, r.defect_type, r.who, r.time FROM inspections i "
                   "LEFT JOIN evidence e ON e.result_id = i.result_id LEFT JOIN reviews r ON r.result_id = i.result_id"
                   + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY i.id DESC LIMIT ?")
            rows = con.execute(sql, (*args, limit)).fetchall()
            names = [c.split(" AS ")[-1] for c in select_columns(con).split(", ")]
        finally:
            con.close()
        out = []
        for r in rows:
            d = dict(zip(names, r[: len(names)], strict=True))
            frame, heat, mark, dtype, who, t = r[len(names):]
            d["camera"] = json.loads(d["camera"]) if d.get("camera") else None
            d["evidence"] = ({"frame": f"/api/evidence/{d['result_id']}/frame.png",
                              "heatmap": f"/api/evidence/{d['result_id']}/heat.jpg"} if frame else None)
            d["review"] = {"mark": mark, "defect_type": dtype, "who": who, "time": t} if mark else None
            out.append(d)
        return out

    async def results_handler(self, request: Any) -> Any:
        try:
            limit = max(1, min(100_000, int(request.query.get("limit", "100"))))
            rows = await self.off_loop(self.results, dict(request.query), limit)
        except ValueError:
            raise web.HTTPBadRequest(text="limit and source are numbers") from None
        if request.query.get("format") == "csv":
            buf = io.StringIO()
            keys = ([k for k in rows[0] if k not in ("evidence", "review")] + ["review_mark", "review_who"]
                    if rows else [])
            w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
            w.writeheader()
            for r in rows:
                w.writerow(safe_row(r | {"camera": json.dumps(r["camera"]) if r["camera"] else "",
                                         "review_mark": (r["review"] or {}).get("mark", ""),
                                         "review_who": (r["review"] or {}).get("who", "")}))
            return web.Response(text=buf.getvalue(), content_type="text/csv",
                                headers={"Content-Disposition": "attachment; filename=results.csv"})
        signer, role = self.view.guard.signer, request.get(ROLE) or "viewer"
        for r in rows:
            if r["evidence"]:
                r["evidence"] = {k: signer.sign(u, role) for k, u in r["evidence"].items()}
        return web.json_response(rows)

    async def evidence(self, request: Any) -> Any:
        rid, what = request.match_info["rid"], request.match_info["what"]
        con = self.con()
        try:
            row = con.execute("SELECT frame, heatmap FROM evidence WHERE result_id = ?", (rid,)).fetchone()
        finally:
            con.close()
        name = None if row is None else (row[0] if what == "frame.png" else row[1])
        path = Path(name) if name else None
        if path is None or not path.is_file():
            raise web.HTTPNotFound(text="no evidence for this result (never saved, or deleted by retention)")
        return web.FileResponse(path, headers={"Cache-Control": "max-age=3600"})

    def mark(self, rid: str, mark: str, defect_type: str | None, who: str) -> dict[str, Any]:
        if mark not in MARKS:
            raise UserError(f"mark must be one of {', '.join(MARKS)}")
        if defect_type is not None and (not isinstance(defect_type, str) or len(defect_type) > DEFECT_TYPE_MAX
                                        or not defect_type.isprintable()):
            raise UserError(f"defect type: text of at most {DEFECT_TYPE_MAX} printable characters")
        con = connect(self.record)  # type: ignore[arg-type]  # the review routes exist only with a record
        try:
            if con.execute("SELECT 1 FROM inspections WHERE result_id = ?", (rid,)).fetchone() is None:
                raise UserError(f"no result {rid!r} in the record")
            before = con.execute("SELECT mark, defect_type, who FROM reviews WHERE result_id = ?", (rid,)).fetchone()
            with con:
                con.execute("INSERT OR REPLACE INTO reviews VALUES (?, ?, ?, ?, ?)",
                            (rid, mark, defect_type or None, who, time.time()))
        finally:
            con.close()
        return {"result_id": rid, "mark": mark, "defect_type": defect_type, "who": who,
                "before": list(before) if before else None}

    async def review(self, request: Any) -> Any:
        body = await json_body(request)
        r = await self.off_loop(self.mark, str(body.get("result_id", "")), str(body.get("mark", "")),
                                body.get("defect_type"), _who(request))
        self.control.audit.write(_who(request), "review", None, r["before"], {"result_id": r["result_id"],
                                                                              "mark": r["mark"],
                                                                              "defect_type": r["defect_type"]})
        return web.json_response(r)

    # --- recipes, preview, settings, deploy -----------------------------------------------------------------

    async def recipes(self, request: Any) -> Any:
        out, created = [], self.control.created()
        for r in self.control.recipes.summary():
            prev = self.control.store.previous(r["name"])  # what a rollback would load (None: nothing)
            made = created.get(r["name"])
            out.append(r | {"versions": self.control.store.versions(r["name"])["versions"],
                            "rollback_to": None if prev is None else prev["version"],
                            "created": made is not None, "created_by": (made or {}).get("created_by")})
        return web.json_response(out)

    async def create_recipe(self, request: Any) -> Any:
        """POST {name, plc_index?, copy_from?}: a new recipe with no model yet, stored where the next start finds it
        (runtime/station/control.py ``create_recipe``); a refusal is 422 with one line."""
        body = await json_body(request, RECIPE_BODY)
        return web.json_response(await self.off_loop(self.control.create_recipe, body, _who(request)))

    async def edit_recipe(self, request: Any) -> Any:
        """POST /api/recipes/{name} {name?, plc_index?}: a created recipe renamed or re-numbered
        (runtime/station/control.py ``edit_recipe``); 409 for a station-file or the active recipe, 422 otherwise."""
        body = await json_body(request, RECIPE_BODY)
        return web.json_response(await self.off_loop(self.control.edit_recipe, request.match_info["name"], body,
                                                     _who(request)))

    async def delete_recipe(self, request: Any) -> Any:
        """DELETE /api/recipes/{name}: a created recipe taken out (runtime/station/control.py ``delete_recipe``); 409
        for a station-file or the active recipe, 422 for an unknown one."""
        return web.json_response(await self.off_loop(self.control.delete_recipe, request.match_info["name"],
                                                     _who(request)))

    async def preview(self, request: Any) -> Any:
        body = await json_body(request)
        return web.json_response(await self.off_loop(preview, self.control, self.record, body))

    async def settings(self, request: Any) -> Any:
        body = await json_body(request)
        return web.json_response(await self.off_loop(apply_settings, self.control, body, _who(request)))

    async def deploy(self, request: Any) -> Any:
        """The body (a zip of a bundle's files) streamed to disk under the upload cap, one upload at a time, then
        verified, self-tested and swapped in (runtime/station/control.py)."""
        if self._upload.locked():
            raise web.HTTPTooManyRequests(text="another upload is in progress: try again when it is done")
        async with self._upload:
            path = await body_to_file(request, self.control.store.root / ".uploads",
                                      int(self.view.server.max_upload_mb * 2**20))
            try:
                return web.json_response(await self.off_loop(self.control.deploy_zip, request.query.get("recipe", ""),
                                                             path, _who(request),
                                                             request.query.get("source", "upload")))
            finally:
                path.unlink(missing_ok=True)

    async def models(self, request: Any) -> Any:
        return web.json_response({r.cfg.name: self.control.store.versions(r.cfg.name) | {"loaded": r.version}
                                  for r in self.control.recipes.recipes.values()})

    async def dataset(self, request: Any) -> Any:
        """The recipe's reviewed results as an MVTec-layout dataset, zipped (runtime/learn/dataset.py)."""
        if self.record is None:
            raise web.HTTPNotFound(text="this run keeps no record: no reviews to build a dataset from")
        recipe = request.query.get("recipe", "")
        try:
            held = float(request.query.get("held_out", "0.2"))
        except ValueError:
            raise web.HTTPBadRequest(text="held_out is a number in 0..0.95") from None
        try:  # built on disk beside the record, sent in chunks, gone once sent (or the client left)
            z, m = await self.off_loop(build_zip, self.record, recipe, held, request.query.get("include_ok") == "yes")
        except Busy as exc:
            raise web.HTTPTooManyRequests(text=str(exc)) from None
        self.control.audit.write(_who(request), "dataset download", recipe, None, m["counts"])
        return await z.send(request, web.StreamResponse(headers={
            "Content-Type": "application/zip", "Content-Disposition": f"attachment; filename={recipe}-reviewed.zip",
            "X-Counts": json.dumps(m["counts"])}))

    async def collect(self, request: Any) -> Any:
        """GET: what the on-demand collection is doing; POST {"count", "min_change"} (engineer): collect the next
        good parts of the active recipe (runtime/learn/collect.py)."""
        if self.view.collect is None:
            raise web.HTTPNotFound(text="this run collects nothing (a station with a record and [evidence] does)")
        if request.method == "GET":
            return web.json_response(self.view.collect.status())
        body = await json_body(request)
        try:
            count, change = int(body.get("count", 200)), float(body.get("min_change", 3.0))
        except (TypeError, ValueError, OverflowError):
            raise web.HTTPBadRequest(text="count and min_change are numbers") from None
        recipe = self.control.recipes.active.cfg.name
        st = await self.off_loop(self.view.collect.arm, recipe, count, change)
        self.control.audit.write(_who(request), "collect", recipe, None, {"count": count, "folder": st["folder"]})
        return web.json_response(st)

    async def collect_zip(self, request: Any) -> Any:
        if self.view.collect is None:
            raise web.HTTPNotFound(text="this run collects nothing")
        try:  # built on disk beside the collections, sent in chunks, gone once sent (or the client left)
            z = await self.off_loop(self.view.collect.zip)
        except Busy as exc:
            raise web.HTTPTooManyRequests(text=str(exc)) from None
        return await z.send(request, web.StreamResponse(headers={
            "Content-Type": "application/zip", "Content-Disposition": "attachment; filename=collected.zip"}))

    # --- the box's own fit (runtime/learn/jobs.py) ---------------------------------------------------------------

    @property
    def fit_job(self) -> Any:
        if self.view.collect is None:
            raise UserError("this station collects nothing: fitting on the box needs its [evidence] (collections)")
        if self._fit is None:
            self._fit = FitJob(self.view.collect.root.parent / "fits")
        return self._fit

    async def fit(self, request: Any) -> Any:
        """GET: the fit job's state (progress, ETA, then the report card); POST {recipe, collection?, tiles?}: fit a
        new model from a collection (``tiles`` "ROWSxCOLS", "1x1" = whole frame; absent: the live model's grid);
        POST {recipe, source: "reviewed"}: the live model updated with the reviewed good parts (and compared with it
        on the reviewed parts)."""
        if request.method == "GET":
            if self.view.collect is None:  # not an error for the page: it says why it cannot fit
                return web.json_response({"state": "unavailable", "error": "this station collects nothing (fitting "
                                          "on the box fits a collection: enable [evidence])"})
            return web.json_response(await self.off_loop(lambda: self.fit_job.status()))
        body = await json_body(request)
        st = await self.off_loop(self._fit_start, body, _who(request))
        self.control.audit.write(_who(request), st.get("kind", "fit"), st.get("recipe"), None,
                                 {"data": Path(st.get("data", "")).name})
        return web.json_response(st)

    def _fit_start(self, body: dict[str, Any], who: str) -> dict[str, Any]:
        recipe = str(body.get("recipe", ""))
        rec = self.control.recipes.by_name(recipe)
        if rec is None:
            raise UserError(f"no recipe named {recipe!r}")
        if body.get("source", "collection") == "reviewed":
            if rec.cfg.model is None:
                raise UserError(f"recipe {recipe} has no model yet to update: fit its first one from a collection")
            return self._update_start(recipe, Path(rec.cfg.model), who)
        tiles = _tiles(body.get("tiles"))
        data = collection_folder(self.view.collect.root, recipe, body.get("collection"))
        teacher = teacher_for(Path(rec.cfg.model) if rec.cfg.model else None)
        same_teacher(teacher, rec.inspector.backend.metadata, recipe)
        return dict(self.fit_job.start(recipe, teacher, data, who, tiles=tiles,
                                       tiles_given=body.get("tiles") is not None))

    def _update_start(self, recipe: str, live: Path, who: str) -> dict[str, Any]:
        """The reviewed parts of ``recipe`` (the record's reviews, as GET /api/dataset builds them) into the live
        model's memory, as a job: the feedback cycle closed on the box."""
        if self.record is None:
            raise UserError("this run keeps no record: no reviewed parts to learn from")
        if not (live / TEACHER_JSON).is_file():
            raise UserError(f"the live model of {recipe} carries no teacher pack (it was not made by fit or "
                            "update-memory --bundle): fit a new version from a collection first, or update it on a "
                            "workstation (dataset download, then update-memory --checkpoint)")
        data = self.fit_job.work / f".reviewed-{recipe}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        m = build(self.record, recipe, data)
        if not any(k.endswith("/good") for k in m["counts"]):
            shutil.rmtree(data, ignore_errors=True)
            raise UserError(f"no reviewed good parts of {recipe} yet (reviewed: {m['counts']}): mark false calls "
                            "good on the Review page first")
        return dict(self.fit_job.start_update(recipe, live, data, who, owned=True))

    async def fit_action(self, request: Any) -> Any:
        """POST /api/fit/{cancel|discard|deploy}: deploy goes through the station's verify → self-test → swap."""
        return web.json_response(await self.off_loop(self._fit_decide, request.match_info["what"], _who(request)))

    def _fit_decide(self, what: str, who: str) -> dict[str, Any]:
        if what not in ("cancel", "discard", "deploy"):
            raise UserError(f"unknown fit decision {what[:40]!r}: cancel, discard or deploy")
        job = self.fit_job
        if what in ("cancel", "discard"):
            recipe = job.status().get("recipe")
            st = dict(job.cancel() if what == "cancel" else job.discard())
            self.control.audit.write(who, f"fit {what}", recipe)
            return st
        recipe, bundle = job.take()
        try:
            return dict(self.control.deploy(recipe, bundle, who, "fit on the box"))
        finally:
            shutil.rmtree(bundle, ignore_errors=True)  # the store keeps its own copy

    async def rollback(self, request: Any) -> Any:
        return web.json_response(await self.off_loop(self.control.rollback, request.query.get("recipe", ""),
                                                     _who(request)))

    SHIFT_STARTS = (6, 14, 22)  # local hours: three 8-hour shifts

    def shift_counts(self) -> dict[str, Any]:
        """Results of the current shift by verdict (from the record), and when the shift began."""
        lt = time.localtime()
        start_h = max((h for h in self.SHIFT_STARTS if h <= lt.tm_hour), default=self.SHIFT_STARTS[-1])
        t0 = time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday, start_h, 0, 0, 0, 0, -1))
        if start_h > lt.tm_hour:  # before the first shift of the day: the night shift began yesterday
            t0 -= 86400
        if self.record is None:
            return {"since": t0, "counts": {}}
        con = self.con()
        try:
            rows = con.execute("SELECT verdict, COUNT(*) FROM inspections WHERE time >= ? GROUP BY verdict",
                               (t0,)).fetchall()
        finally:
            con.close()
        return {"since": t0, "since_iso": time.strftime("%H:%M", time.localtime(t0)), "counts": dict(rows)}

    async def shift(self) -> dict[str, Any]:
        """The shift's counts, read from the record at most every ``SHIFT_TTL_S`` for all pages together."""
        async with self._shift_lock:
            now = time.monotonic()
            if self._shift is None or now - self._shift[0] > self.SHIFT_TTL_S:
                self._shift = (now, await self.off_loop(self.shift_counts))
            return self._shift[1]

    LIVE_TTL_S = 0.25  # the live page's figures are computed at most this often, for every page at once

    async def live(self, request: Any) -> Any:
        """The live page's figures: each source's newest verdict, the run's counts, the shift, the recipe — one JSON
        body per role shared by every page polling within ``LIVE_TTL_S`` (pages never multiply the loop's cost)."""
        role, now = request.get(ROLE) or "viewer", time.monotonic()
        got = self._live.get(role)
        if got is None or now - got[0] > self.LIVE_TTL_S:
            out = [self.view.latest_meta(i) for i in range(len(self.view.sources))]
            st = self.view.status()
            signed = self.view.signed_ng(st["recent_ng"], role)
            body = json.dumps({"sources": out, "status": {"frames": st["frames"], "ng": st["ng"], "fps": st["fps"],
                                                          "recent_ng": signed},
                               "shift": await self.shift(), "recipe": self.control.recipes.active.info})
            got = self._live[role] = (now, body.encode())
        return web.Response(body=got[1], content_type="application/json")

    async def live_jpg(self, request: Any) -> Any:
        """A source's newest picture with that same frame's verdict (encoded once per frame for every page)."""
        source = small_int(request.match_info["source"])
        if not 0 <= source < len(self.view.sources):
            raise web.HTTPNotFound(text="no such source")
        meta, jpg = await self.view.latest_picture_async(source)
        if jpg is None or meta is None:
            raise web.HTTPNotFound(text="no picture yet")
        return web.Response(body=jpg, content_type="image/jpeg",
                            headers={"X-Frame": str(meta["frame"]), "X-Verdict": meta["verdict"],
                                     "X-Score": f"{meta['normalised_score']:.4f}", "X-Recipe": meta.get("recipe") or "",
                                     "X-Result-Id": meta.get("result_id") or "", "Cache-Control": "no-store"})

    # --- health, audit --------------------------------------------------------------------------------------

    async def health(self, request: Any) -> Any:
        ok, problems = self.view.health()
        st = self.view.status()
        disk = shutil.disk_usage(self.record.parent if self.record else Path.cwd())
        evidence: dict[str, Any] = {}
        if self.record is not None:
            evidence = await self.off_loop(usage, self.record)
        return web.json_response({
            "ok": ok, "problems": problems, "uptime_s": time.time() - self.t0, "sources": st["sources"],
            "sinks": st.get("sinks", []), "error": st.get("error"), "model": st["model"],
            "recipe": self.control.recipes.active.info, "disk": {"total_gb": disk.total / 2**30,
                                                                 "free_gb": disk.free / 2**30},
            "evidence": evidence, "outbox_depth": _gauge(self.view, "mqtt_outbox_depth"),
            "drift": self.view.drift.snapshot() if self.view.drift is not None else []})

    async def audit(self, request: Any) -> Any:
        try:
            limit = max(1, min(10_000, int(request.query.get("limit", "200"))))
        except ValueError:
            raise web.HTTPBadRequest(text="limit must be a number") from None
        if self.record is None:
            raise web.HTTPNotFound(text="this run keeps no record: no audit log")
        rows = await self.off_loop(query, self.record, None, request.query.get("action") or None, limit)
        return web.json_response(rows[::-1])


def _gauge(view: Any, name: str) -> float | None:
    g = view.m_extra.get(name)
    try:
        return float(g._value.get()) if g is not None else None
    except AttributeError:
        return None
