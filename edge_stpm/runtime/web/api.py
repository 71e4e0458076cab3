"""The JSON API under the web app's pages (and for a plant's MES, with the same roles): results with their evidence
and review marks, review marks, recipes and model versions, threshold preview and change, deploy and rollback,
health, audit. One page of docs: docs/api.md."""
from __future__ import annotations

import asyncio
import csv
import io
import json
import shutil
import time
from pathlib import Path
from typing import Any

from edge_stpm.contract.errors import UserError
from edge_stpm.runtime.web.auth import allows

MARKS = ("good", "defect")
DEFECT_TYPE_MAX = 64


def _who(request: Any) -> str:
    return f"{request.get('role') or 'anonymous'}@{request.remote or '?'}"


class Api:
    """Handlers over the view (``LiveView``: status, record path) and the station (``StationControl``)."""

    def __init__(self, view: Any, control: Any, sessions: Any) -> None:
        self.view, self.control, self.sessions = view, control, sessions
        self.t0 = time.time()

    @property
    def record(self) -> Path | None:
        return self.view.history

    # --- plumbing -------------------------------------------------------------------------------------------

    def need(self, request: Any, role: str, action: str) -> None:
        from aiohttp import web

        if not allows(request.get("role"), role):
            if request.get("role") is None:
                raise web.HTTPUnauthorized(text="log in (POST /api/login) or send a token")
            self.control.audit.write(_who(request), action, None, None, None, "refused", f"needs the {role} role")
            raise web.HTTPForbidden(text=f"{action} needs the {role} role")

    async def off_loop(self, fn: Any, *args: Any) -> Any:
        from aiohttp import web

        try:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        except UserError as exc:
            raise web.HTTPUnprocessableEntity(text=str(exc)) from None

    def con(self) -> Any:
        from aiohttp import web

        from edge_stpm.runtime.loop.sinks.record import connect

        if self.record is None:
            raise web.HTTPNotFound(text="this run keeps no record (--no-history)")
        return connect(self.record, readonly=True)

    # --- login ----------------------------------------------------------------------------------------------

    async def login(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.json() if request.can_read_body else {}
        got = self.sessions.login(str(body.get("token", "")))
        if got is None:
            self.control.audit.write(f"anonymous@{request.remote}", "login", None, None, None, "refused", "bad token")
            raise web.HTTPUnauthorized(text="unknown token")
        self.control.audit.write(f"{got[1]}@{request.remote}", "login", None, None, {"role": got[1]})
        return web.json_response({"session": got[0], "role": got[1], "idle_s": self.sessions.idle_s})

    async def me(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response({"role": request.get("role"), "idle_s": self.sessions.idle_s})

    # --- results, evidence, reviews -------------------------------------------------------------------------

    def results(self, q: dict[str, str], limit: int) -> list[dict[str, Any]]:
        from edge_stpm.runtime.loop.sinks.record import parse_time, select_columns

        where, args = [], []
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
            cols = ", ".join("i." + c.split(" AS ")[0] if " AS " not in c else c for c in select_columns(con).split(", "))
            sql = (f"SELECT {cols}, e.frame, e.heatmap, r.mark, r.defect_type, r.who, r.time FROM inspections i "
                   "LEFT JOIN evidence e ON e.result_id = i.result_id LEFT JOIN reviews r ON r.result_id = i.result_id"
                   + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY i.id DESC LIMIT ?")
            rows = con.execute(sql, (*args, limit)).fetchall()
            names = [c.split(" AS ")[-1] for c in select_columns(con).split(", ")]
        finally:
            con.close()
        out = []
        for r in rows:
            d = dict(zip(names, r[: len(names)]))
            frame, heat, mark, dtype, who, t = r[len(names):]
            d["camera"] = json.loads(d["camera"]) if d.get("camera") else None
            d["evidence"] = ({"frame": f"/api/evidence/{d['result_id']}/frame.png",
                              "heatmap": f"/api/evidence/{d['result_id']}/heat.jpg"} if frame else None)
            d["review"] = {"mark": mark, "defect_type": dtype, "who": who, "time": t} if mark else None
            out.append(d)
        return out

    async def results_handler(self, request: Any) -> Any:
        from aiohttp import web

        self.need(request, "viewer", "read results")
        try:
            limit = max(1, min(100_000, int(request.query.get("limit", "100"))))
            rows = await self.off_loop(self.results, dict(request.query), limit)
        except ValueError:
            raise web.HTTPBadRequest(text="limit and source are numbers") from None
        if request.query.get("format") == "csv":
            buf = io.StringIO()
            keys = [k for k in rows[0] if k not in ("evidence", "review")] + ["review_mark", "review_who"] if rows else []
            w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
            w.writeheader()
            for r in rows:
                w.writerow(r | {"camera": json.dumps(r["camera"]) if r["camera"] else "",
                                "review_mark": (r["review"] or {}).get("mark", ""),
                                "review_who": (r["review"] or {}).get("who", "")})
            return web.Response(text=buf.getvalue(), content_type="text/csv",
                                headers={"Content-Disposition": "attachment; filename=results.csv"})
        return web.json_response(rows)

    async def evidence(self, request: Any) -> Any:
        from aiohttp import web

        self.need(request, "viewer", "read evidence")
        rid, what = request.match_info["rid"], request.match_info["what"]
        con = self.con()
        try:
            row = con.execute("SELECT frame, heatmap FROM evidence WHERE result_id = ?", (rid,)).fetchone()
        finally:
            con.close()
        path = None if row is None else Path(row[0] if what == "frame.png" else row[1])
        if path is None or not path.is_file():
            raise web.HTTPNotFound(text="no evidence for this result (never saved, or deleted by retention)")
        return web.FileResponse(path, headers={"Cache-Control": "max-age=3600"})

    def mark(self, rid: str, mark: str, defect_type: str | None, who: str) -> dict[str, Any]:
        from edge_stpm.runtime.loop.sinks.record import connect

        if mark not in MARKS:
            raise UserError(f"mark must be one of {', '.join(MARKS)}")
        if defect_type is not None and (len(defect_type) > DEFECT_TYPE_MAX or not defect_type.isprintable()):
            raise UserError(f"defect type: at most {DEFECT_TYPE_MAX} printable characters")
        con = connect(self.record)  # type: ignore[arg-type]
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
        from aiohttp import web

        self.need(request, "operator", "review")
        body = await request.json()
        r = await self.off_loop(self.mark, str(body.get("result_id", "")), str(body.get("mark", "")),
                                body.get("defect_type"), _who(request))
        self.control.audit.write(_who(request), "review", None, r["before"], {"result_id": r["result_id"],
                                                                              "mark": r["mark"],
                                                                              "defect_type": r["defect_type"]})
        return web.json_response(r)

    # --- recipes, preview, settings, deploy -----------------------------------------------------------------

    async def recipes(self, request: Any) -> Any:
        from aiohttp import web

        self.need(request, "viewer", "read recipes")
        out = []
        for r in self.control.recipes.summary():
            out.append(r | {"versions": self.control.store.versions(r["name"])["versions"]})
        return web.json_response(out)

    async def preview(self, request: Any) -> Any:
        from aiohttp import web

        from edge_stpm.runtime.web.preview import preview

        self.need(request, "engineer", "preview")
        body = await request.json()
        return web.json_response(await self.off_loop(preview, self.control, self.record, body))

    async def settings(self, request: Any) -> Any:
        from aiohttp import web

        from edge_stpm.runtime.web.preview import apply_settings

        self.need(request, "engineer", "recipe settings")
        body = await request.json()
        return web.json_response(await self.off_loop(apply_settings, self.control, body, _who(request)))

    async def deploy(self, request: Any) -> Any:
        from aiohttp import web

        self.need(request, "engineer", "deploy")
        data = await request.read()
        return web.json_response(await self.off_loop(self.control.deploy_zip, request.query.get("recipe", ""), data,
                                                     _who(request), request.query.get("source", "upload")))

    async def dataset(self, request: Any) -> Any:
        """The recipe's reviewed results as an MVTec-layout dataset, zipped (runtime/feedback/dataset.py)."""
        from aiohttp import web

        from edge_stpm.runtime.feedback.dataset import build_zip

        self.need(request, "engineer", "dataset download")
        if self.record is None:
            raise web.HTTPNotFound(text="this run keeps no record: no reviews to build a dataset from")
        recipe = request.query.get("recipe", "")
        try:
            held = float(request.query.get("held_out", "0.2"))
        except ValueError:
            raise web.HTTPBadRequest(text="held_out is a number in 0..0.95") from None
        data, m = await self.off_loop(build_zip, self.record, recipe, held, request.query.get("include_ok") == "yes")
        self.control.audit.write(_who(request), "dataset download", recipe, None, m["counts"])
        return web.Response(body=data, content_type="application/zip", headers={
            "Content-Disposition": f"attachment; filename={recipe}-reviewed.zip",
            "X-Counts": json.dumps(m["counts"])})

    async def collect(self, request: Any) -> Any:
        """GET: what the on-demand collection is doing; POST {"count", "min_change"} (engineer): collect the next
        good parts of the active recipe (runtime/feedback/collect.py)."""
        from aiohttp import web

        if self.view.collect is None:
            raise web.HTTPNotFound(text="this run collects nothing (a station with a record and [evidence] does)")
        if request.method == "GET":
            self.need(request, "viewer", "read collect")
            return web.json_response(self.view.collect.status())
        self.need(request, "engineer", "collect")
        body = await request.json()
        try:
            count, change = int(body.get("count", 200)), float(body.get("min_change", 3.0))
        except (TypeError, ValueError):
            raise web.HTTPBadRequest(text="count and min_change are numbers") from None
        recipe = self.control.recipes.active.cfg.name
        st = await self.off_loop(self.view.collect.arm, recipe, count, change)
        self.control.audit.write(_who(request), "collect", recipe, None, {"count": count, "folder": st["folder"]})
        return web.json_response(st)

    async def collect_zip(self, request: Any) -> Any:
        from aiohttp import web

        self.need(request, "engineer", "collect download")
        if self.view.collect is None:
            raise web.HTTPNotFound(text="this run collects nothing")
        data = await self.off_loop(self.view.collect.zip)
        return web.Response(body=data, content_type="application/zip",
                            headers={"Content-Disposition": "attachment; filename=collected.zip"})

    async def rollback(self, request: Any) -> Any:
        from aiohttp import web

        self.need(request, "engineer", "rollback")
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

    # --- health, audit --------------------------------------------------------------------------------------

    async def health(self, request: Any) -> Any:
        from aiohttp import web

        self.need(request, "viewer", "read health")
        ok, problems = self.view.health()
        st = self.view.status()
        disk = shutil.disk_usage(self.record.parent if self.record else Path.cwd())
        evidence: dict[str, Any] = {}
        if self.record is not None:
            from edge_stpm.runtime.loop.sinks.evidence import usage

            evidence = await self.off_loop(usage, self.record)
        return web.json_response({
            "ok": ok, "problems": problems, "uptime_s": time.time() - self.t0, "sources": st["sources"],
            "sinks": st.get("sinks", []), "error": st.get("error"), "model": st["model"],
            "recipe": self.control.recipes.active.info, "disk": {"total_gb": disk.total / 2**30,
                                                                 "free_gb": disk.free / 2**30},
            "evidence": evidence, "outbox_depth": _gauge(self.view, "mqtt_outbox_depth"),
            "drift": self.view.drift.snapshot() if self.view.drift is not None else []})

    async def audit(self, request: Any) -> Any:
        from aiohttp import web

        from edge_stpm.runtime.station.audit import query

        self.need(request, "viewer", "read audit")
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
