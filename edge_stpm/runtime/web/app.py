"""The web app's routes on the run's HTTP server: server-rendered page shells (Jinja2, from the package), static
assets (from the package: no CDN, nothing fetched), the JSON API (``api.Api``) and the live page's picture/verdict
pairs. Chosen stack: Jinja2 + one small hand-written script (fetch, DOM, keys) — no front-end build, no framework:
the pages are lists, forms and pictures, and a box on a line must run it with the torch-free install."""
from __future__ import annotations

from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PAGES = (("live", "Live"), ("history", "History"), ("review", "Review"), ("recipes", "Recipes & models"),
         ("health", "Health"), ("audit", "Audit"))


def add_routes(app: Any, view: Any, control: Any, sessions: Any) -> None:
    from aiohttp import web
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    from edge_stpm.runtime.web.api import Api

    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    api = Api(view, control, sessions)

    def page(name: str, title: str) -> Any:
        async def handler(request: Any) -> Any:
            html = env.get_template(f"{name}.html").render(page=name, title=title, pages=PAGES,
                                                           idle_s=sessions.idle_s)
            return web.Response(text=html, content_type="text/html")
        return handler

    async def root(request: Any) -> Any:
        raise web.HTTPFound("/app/live")

    async def live(request: Any) -> Any:
        api.need(request, "viewer", "live")
        out = []
        for i in range(len(view.sources)):
            meta, _ = view.latest_picture(i)
            out.append(meta)
        st = view.status()
        return web.json_response({"sources": out, "status": {k: st[k] for k in ("frames", "ng", "fps", "recent_ng")},
                                  "shift": await api.off_loop(api.shift_counts), "recipe": control.recipes.active.info})

    async def live_jpg(request: Any) -> Any:
        api.need(request, "viewer", "live")
        meta, jpg = view.latest_picture(int(request.match_info["source"]))
        if jpg is None:
            raise web.HTTPNotFound(text="no picture yet")
        return web.Response(body=jpg, content_type="image/jpeg",
                            headers={"X-Frame": str(meta["frame"]), "X-Verdict": meta["verdict"],
                                     "X-Score": f"{meta['normalised_score']:.4f}", "X-Recipe": meta.get("recipe") or "",
                                     "X-Result-Id": meta.get("result_id") or "", "Cache-Control": "no-store"})

    app.add_routes([web.get("/app", root), web.get("/app/", root), web.get("/app/login", page("login", "log in"))]
                   + [web.get(f"/app/{p}", page(p, label)) for p, label in PAGES]
                   + [web.static("/static", HERE / "static"),
                      web.post("/api/login", api.login), web.get("/api/me", api.me),
                      web.get("/api/live", live), web.get(r"/api/live/{source:\d+}.jpg", live_jpg),
                      web.get("/api/results", api.results_handler),
                      web.get("/api/evidence/{rid}/{what:frame.png|heat.jpg}", api.evidence),
                      web.post("/api/review", api.review), web.get("/api/recipes", api.recipes),
                      web.post("/api/preview", api.preview), web.post("/api/recipe-settings", api.settings),
                      web.post("/api/deploy", api.deploy), web.post("/api/rollback", api.rollback),
                      web.get("/api/dataset", api.dataset),
                      web.get("/api/collect", api.collect), web.post("/api/collect", api.collect),
                      web.get("/api/collect.zip", api.collect_zip),
                      web.get("/api/health", api.health), web.get("/api/audit", api.audit)])
