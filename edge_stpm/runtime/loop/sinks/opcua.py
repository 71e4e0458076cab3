"""The PLC handshake and the last result as an OPC UA server (asyncua), in the shape of the OPC UA Machine Vision
companion specification (OPC 40100-1) where that can be done simply — not a conformant implementation.

Address space (namespace ``urn:edge-stpm``), under Objects/VisionSystem:
  State                      String   Operational | Busy | ResultReady | Error (the handshake's state; a refused
                                      trigger only sets ErrorCode)
  ErrorCode, ErrorText       UInt16, String (the codes of the Modbus map)
  ResultManagement/LastResult/
      ResultId String, TriggerId UInt32, IsPartGood Boolean, Verdict String, NormalisedScore Double,
      RawThreshold Double, CreationTime DateTime, ProcessingTimeMs Double (trigger seen → result ready),
      CameraFrameId UInt64, CameraTimestamp UInt64 (what an industrial camera reported; 0 for other sources)
      RecipeIndex UInt16, RecipeName String (the recipe that judged the result)
  Counters/ Parts UInt64, NgParts UInt64
  Recipe/ Index UInt16, Name String (the active recipe)
  Trigger()  → TriggerId UInt32  (BadResourceUnavailable while not ready: busy, result not acknowledged, or the
               recipe index written is unknown)
  AckResult()
  SelectRecipe(Index UInt16) → Ok Boolean (False: unknown index — error 6 and triggers refused until a known one)
Node ids are strings in the product's namespace, the node's browse path (``ns=<urn:edge-stpm>;s=VisionSystem.State``,
``…;s=VisionSystem.ResultManagement.LastResult.Verdict``): adding a node never renumbers the others, so a PLC
program may configure them statically. The server names itself edge-stpm (product name and URI, version,
manufacturer) with an application URI unique to the box (``urn:edge-stpm:<hostname>``).
Security: anonymous only on a loopback address; any other address needs --opcua-user USER:PASSWORD (asyncua's
user manager; without a certificate the password travels in clear — use it on the machine network only).
"""
from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timezone
from typing import Any

from edge_stpm.contract.errors import UserError
from edge_stpm.runtime.loop.sinks.base import Result
from edge_stpm.runtime.loop.sinks.plc import ERR_BUSY, ERR_NOT_ACKED, ERROR_TEXT, PlcState

NAMESPACE = "urn:edge-stpm"


class OpcuaServer:
    """asyncua's server on its own thread and event loop; ``publish`` schedules the writes of one result."""

    def __init__(self, state: PlcState, host: str, port: int, user: tuple[str, str] | None = None,
                 loopback: bool = True) -> None:
        if not loopback and user is None:
            raise UserError(f"--opcua {host}:{port} is not a loopback address: give --opcua-user USER:PASSWORD "
                            "(anonymous access is allowed on loopback only)")
        self.state, self.host, self.port, self.user = state, host, port, user
        self.endpoint = f"opc.tcp://{host}:{port}/edge-stpm/"
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.nodes: dict[str, Any] = {}
        self.server: Any = None
        self._stop: asyncio.Event | None = None

    async def _build(self) -> None:
        from asyncua import Server, ua

        s = Server(user_manager=_Users(self.user) if self.user else None)
        await s.init()
        s.set_endpoint(self.endpoint)
        await _identify(s)
        s.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        if self.user:
            s.set_security_IDs(["Username"])
        idx = await s.register_namespace(NAMESPACE)
        node = lambda *path: ua.NodeId(".".join(path), idx)  # noqa: E731 — the stable string id of a browse path
        vs = await s.nodes.objects.add_object(node("VisionSystem"), f"{idx}:VisionSystem")
        n = self.nodes
        n["State"] = await vs.add_variable(node("VisionSystem", "State"), f"{idx}:State", "Operational")
        n["ErrorCode"] = await vs.add_variable(node("VisionSystem", "ErrorCode"), f"{idx}:ErrorCode", 0, ua.VariantType.UInt16)
        n["ErrorText"] = await vs.add_variable(node("VisionSystem", "ErrorText"), f"{idx}:ErrorText", "none")
        rm = await vs.add_object(node("VisionSystem", "ResultManagement"), f"{idx}:ResultManagement")
        last = await rm.add_object(node("VisionSystem", "ResultManagement", "LastResult"), f"{idx}:LastResult")
        for name, value, vt in (("ResultId", "", ua.VariantType.String), ("TriggerId", 0, ua.VariantType.UInt32),
                                ("IsPartGood", False, ua.VariantType.Boolean), ("Verdict", "", ua.VariantType.String),
                                ("IsReview", False, ua.VariantType.Boolean),
                                ("NormalisedScore", 0.0, ua.VariantType.Double),
                                ("RawThreshold", 0.0, ua.VariantType.Double),
                                ("CreationTime", datetime.now(timezone.utc), ua.VariantType.DateTime),
                                ("ProcessingTimeMs", 0.0, ua.VariantType.Double),
                                ("CameraFrameId", 0, ua.VariantType.UInt64),
                                ("CameraTimestamp", 0, ua.VariantType.UInt64),
                                ("RecipeIndex", 0, ua.VariantType.UInt16), ("RecipeName", "", ua.VariantType.String)):
            n[name] = await last.add_variable(node("VisionSystem", "ResultManagement", "LastResult", name), f"{idx}:{name}",
                                              value, vt)
        counters = await vs.add_object(node("VisionSystem", "Counters"), f"{idx}:Counters")
        n["Parts"] = await counters.add_variable(node("VisionSystem", "Counters", "Parts"), f"{idx}:Parts", 0,
                                                 ua.VariantType.UInt64)
        n["NgParts"] = await counters.add_variable(node("VisionSystem", "Counters", "NgParts"), f"{idx}:NgParts", 0,
                                                   ua.VariantType.UInt64)
        n["ReviewParts"] = await counters.add_variable(node("VisionSystem", "Counters", "ReviewParts"),
                                                       f"{idx}:ReviewParts", 0, ua.VariantType.UInt64)
        recipe = await vs.add_object(node("VisionSystem", "Recipe"), f"{idx}:Recipe")
        n["Recipe.Index"] = await recipe.add_variable(node("VisionSystem", "Recipe", "Index"), f"{idx}:Index",
                                                      self.state.recipe_index, ua.VariantType.UInt16)
        n["Recipe.Name"] = await recipe.add_variable(node("VisionSystem", "Recipe", "Name"), f"{idx}:Name", "",
                                                     ua.VariantType.String)
        await vs.add_method(node("VisionSystem", "Trigger"), f"{idx}:Trigger", self._trigger, [], [ua.VariantType.UInt32])
        await vs.add_method(node("VisionSystem", "AckResult"), f"{idx}:AckResult", self._ack, [], [])
        await vs.add_method(node("VisionSystem", "SelectRecipe"), f"{idx}:SelectRecipe", self._select,
                            [ua.VariantType.UInt16], [ua.VariantType.Boolean])
        self.server = s
        self.ng = self.review = 0

    async def _select(self, parent: Any, index: Any) -> list[Any]:
        from asyncua import ua

        ok = self.state.write_recipe(int(getattr(index, "Value", index)))
        await self.nodes["Recipe.Index"].write_value(ua.Variant(self.state.recipe_index, ua.VariantType.UInt16))
        await self.nodes["Recipe.Name"].write_value(self.state.recipe_name())
        await self._write_state()
        return [ua.Variant(ok, ua.VariantType.Boolean)]

    async def _trigger(self, parent: Any) -> list[Any]:
        from asyncua import ua

        tid = self.state.trigger()
        await self._write_state()
        if tid is None:
            return ua.StatusCode(ua.StatusCodes.BadResourceUnavailable)  # type: ignore[return-value]
        return [ua.Variant(tid, ua.VariantType.UInt32)]

    async def _ack(self, parent: Any) -> list[Any]:
        self.state.ack()
        await self._write_state()
        return []

    async def _write_state(self) -> None:
        st = self.state
        with st.lock:
            handshake = st.error_code in (ERR_BUSY, ERR_NOT_ACKED)  # a refused trigger: the code says so
            text = ("ResultReady" if st.results_ready else "Busy" if st.busy
                    else "Error" if st.error_code and not handshake else "Operational")
            code = st.error_code
        await self.nodes["State"].write_value(text)
        from asyncua import ua

        await self.nodes["ErrorCode"].write_value(ua.Variant(code, ua.VariantType.UInt16))
        await self.nodes["ErrorText"].write_value(ERROR_TEXT.get(code, str(code)))

    async def _write_result(self, r: Result) -> None:
        from asyncua import ua

        n, ins = self.nodes, r.inspection
        self.ng += int(ins.verdict == "NG")
        self.review += int(ins.verdict == "REVIEW")
        values = {"ResultId": (r.result_id, ua.VariantType.String),
                  "TriggerId": (r.trigger_id or 0, ua.VariantType.UInt32),
                  "IsPartGood": (ins.verdict == "OK", ua.VariantType.Boolean), "Verdict": (ins.verdict, ua.VariantType.String),
                  "IsReview": (ins.verdict == "REVIEW", ua.VariantType.Boolean),
                  "NormalisedScore": (float(ins.normalised_score), ua.VariantType.Double),
                  "RawThreshold": (float(ins.image_threshold), ua.VariantType.Double),
                  "CreationTime": (datetime.fromtimestamp(r.wall_time, timezone.utc), ua.VariantType.DateTime),
                  "ProcessingTimeMs": (float(self.state.cycle_ms), ua.VariantType.Double),
                  "CameraFrameId": (int(r.camera.get("frame_id", 0)), ua.VariantType.UInt64),
                  "CameraTimestamp": (int(r.camera.get("timestamp", 0)), ua.VariantType.UInt64),
                  "Parts": (self.state.count, ua.VariantType.UInt64), "NgParts": (self.ng, ua.VariantType.UInt64),
                  "ReviewParts": (self.review, ua.VariantType.UInt64),
                  "RecipeIndex": (int((ins.recipe or {}).get("index", 0)), ua.VariantType.UInt16),
                  "RecipeName": (str((ins.recipe or {}).get("name", "")), ua.VariantType.String)}
        for name, (v, vt) in values.items():
            await n[name].write_value(ua.Variant(v, vt))
        await self._write_state()

    def publish(self, r: Result) -> None:
        """Called from the sink's thread after the handshake state took the result; waits for the writes."""
        if self.loop is not None:
            asyncio.run_coroutine_threadsafe(self._write_result(r), self.loop).result(10)

    def start(self) -> "OpcuaServer":
        import logging

        for name in ("asyncua", "asyncua.server", "asyncua.uaprotocol"):
            # CRITICAL: asyncua logs a failed bind with its traceback at ERROR before raising; the box reports it in
            # one line itself (below)
            logging.getLogger(name).setLevel(logging.CRITICAL)
        ready = threading.Event()
        box: dict[str, Any] = {}

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop

            async def main() -> None:
                self._stop = asyncio.Event()
                try:
                    await self._build()
                    await self.server.start()
                except BaseException as exc:  # noqa: BLE001 — reported on the caller's thread
                    box["error"] = exc
                    ready.set()
                    return
                ready.set()
                await self._stop.wait()
                await self.server.stop()

            loop.run_until_complete(main())

        self.thread = threading.Thread(target=serve, name="opcua", daemon=True)
        self.thread.start()
        if not ready.wait(30) or "error" in box:
            self.loop = None
            raise UserError(f"--opcua {self.host}:{self.port}: cannot serve ({box.get('error', 'timed out')})")
        return self

    def close(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        if self.thread is not None:
            self.thread.join(15)


async def _identify(s: Any) -> None:
    """The server's identity: edge-stpm's name, version and manufacturer, an application URI unique to this box."""
    import socket

    from edge_stpm import __version__

    host = socket.gethostname() or "box"
    s.set_server_name(f"edge-stpm vision system ({host})")
    await s.set_application_uri(f"urn:edge-stpm:{host}")
    await s.set_build_info("https://pypi.org/project/edge-stpm/", "edge-stpm project", "edge-stpm", __version__,
                           __version__, datetime.now(timezone.utc))


class _Users:
    """asyncua user manager: one USER:PASSWORD."""

    def __init__(self, user: tuple[str, str]) -> None:
        self.name, self.password = user

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> Any:
        from asyncua.crypto.permission_rules import User, UserRole

        if username == self.name and password == self.password:
            return User(role=UserRole.User)
        return None


def parse_user(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise UserError("--opcua-user takes USER:PASSWORD")
    return user, password
