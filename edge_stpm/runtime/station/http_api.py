"""The station's HTTP API beside the live view: models per recipe, deploy (a zip of a bundle's files), rollback,
the audit log. Changing endpoints need the engineer role (the station file's ``http.engineer_token``); a request
without it is refused with 403 and the refusal is audited."""
from __future__ import annotations

import asyncio
from typing import Any

from edge_stpm.contract.errors import UserError


def _who(request: Any) -> str:
    return f"{request.get('role', 'viewer')}@{request.remote or '?'}"


def add_routes(app: Any, control: Any) -> None:
    from aiohttp import web

    def engineer(request: Any, action: str) -> None:
        if request.get("role") != "engineer":
            control.audit.write(_who(request), action, request.query.get("recipe"), None, None, "refused",
                                "needs the engineer role")
            raise web.HTTPForbidden(text=f"{action} needs the engineer role (the station's http.engineer_token)")

    async def run(fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        except UserError as exc:
            raise web.HTTPUnprocessableEntity(text=str(exc)) from None

    async def models(request: Any) -> Any:
        return web.json_response({r.cfg.name: control.store.versions(r.cfg.name) | {"loaded": r.version}
                                  for r in control.recipes.recipes.values()})

    async def deploy(request: Any) -> Any:
        engineer(request, "deploy")
        recipe = request.query.get("recipe", "")
        data = await request.read()
        return web.json_response(await run(control.deploy_zip, recipe, data, _who(request),
                                           request.query.get("source", "upload")))

    async def rollback(request: Any) -> Any:
        engineer(request, "rollback")
        return web.json_response(await run(control.rollback, request.query.get("recipe", ""), _who(request)))

    async def audit(request: Any) -> Any:
        from edge_stpm.runtime.station.audit import query

        try:
            limit = max(1, min(10000, int(request.query.get("limit", "200"))))
        except ValueError:
            raise web.HTTPBadRequest(text="limit must be a number") from None
        if control.audit.db is None:
            raise web.HTTPNotFound(text="this run keeps no record (--no-history): the audit log is not kept")
        return web.json_response(await run(query, control.audit.db, None, request.query.get("action"), limit))

    app.add_routes([web.get("/models.json", models), web.post("/deploy", deploy), web.post("/rollback", rollback),
                    web.get("/audit.json", audit)])
