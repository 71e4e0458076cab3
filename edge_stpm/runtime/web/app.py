"""The web app's pages: server-rendered page shells (Jinja2, from the package; no data in them — each page's script
asks the JSON API, which needs a login) and their static assets (from the package: no CDN, nothing fetched). The
routes themselves are in the one route table (runtime/web/server.py). Chosen stack: Jinja2 + one small hand-written
script (fetch, DOM, keys) — no front-end build, no framework: the pages are lists, forms and pictures, and a box on
a line must run it with the torch-free install."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, select_autoescape

HERE = Path(__file__).resolve().parent
PAGES = (("live", "Live"), ("history", "History"), ("review", "Review"), ("recipes", "Recipes & models"),
         ("health", "Health"), ("audit", "Audit"))


def page_shell(which: tuple[str, str] | None, idle_s: float) -> Any:
    """The handler of one page shell (``which`` = (name, title)); None: the app's root, which goes to Live."""
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))

    async def handler(request: Any) -> Any:
        if which is None:
            raise web.HTTPFound("/app/live")
        name, title = which
        html = env.get_template(f"{name}.html").render(page=name, title=title, pages=PAGES, idle_s=idle_s)
        return web.Response(text=html, content_type="text/html")

    return handler
