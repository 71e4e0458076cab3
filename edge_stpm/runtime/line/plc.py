"""The PLC handshake and its Modbus TCP server: the line controller triggers an inspection and reads its verdict.

Handshake (as LandingAI's LandingEdge and smart cameras do it): the PLC raises *Trigger* while *Trigger Ready* is
on; the box takes exactly one frame for it, inspects it and raises *Results Ready* with *OK* or *NG*, the score,
the trigger id and the part counter; the result is held until the PLC raises *Results Ack*, which clears the
result signals and turns *Trigger Ready* on again. A trigger while not ready is answered with *Error* and an error
code (busy, or results not acknowledged) — never silently dropped, never queued.

Register map (holding registers, 0-based, function codes 3 / 6 / 16): see ``REGISTERS`` and docs/line.md.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from typing import Any, Protocol

import numpy as np

from edge_stpm.common.errors import UserError
from edge_stpm.runtime.loop.basler import plc_trigger_refusal
from edge_stpm.runtime.loop.frames import Frame, Source
from edge_stpm.runtime.loop.sinks.base import TIMING_WINDOW, Result, Sink

# outputs (box → PLC), read-only
STATUS, ERROR_CODE, TRIGGER_ID, SCORE, HEARTBEAT, CYCLE, COUNT_HI, COUNT_LO, FRAME_ID = range(9)
# inputs (PLC → box)
COMMAND, RECIPE = 10, 11
N_REGISTERS = 16
BIT_TRIGGER_READY, BIT_RESULTS_READY, BIT_OK, BIT_NG, BIT_ERROR, BIT_BUSY, BIT_REVIEW = (1 << i for i in range(7))
CMD_TRIGGER, CMD_ACK = 1, 2
ERR_NONE, ERR_BUSY, ERR_NOT_ACKED, ERR_INSPECTION, ERR_OUTPUT, ERR_SOURCE, ERR_RECIPE, ERR_NO_MODEL = range(8)
ERROR_TEXT = {ERR_NONE: "none", ERR_BUSY: "trigger while busy inspecting",
              ERR_NOT_ACKED: "trigger before the last result was acknowledged",
              ERR_INSPECTION: "the inspection failed", ERR_OUTPUT: "a required output is failing",
              ERR_SOURCE: "the source ended or is lost", ERR_RECIPE: "unknown recipe index",
              ERR_NO_MODEL: "the active recipe has no model yet"}
REGISTERS = {
    STATUS: "status bits: 0 trigger ready, 1 results ready, 2 OK, 3 NG, 4 error, 5 busy, 6 REVIEW (a recipe's review "
            "band: neither OK nor NG is set — divert the part to a person)",
    ERROR_CODE: "error code (0 none, 1 busy, 2 result not acknowledged, 3 inspection failed, 4 output failing, "
                "5 source ended, 6 unknown recipe, 7 no model yet: the active recipe learns its first one — Trigger "
                "Ready stays off and every trigger is refused with 7 until a model is deployed)",
    TRIGGER_ID: "trigger id of the result (the box counts accepted triggers from 1; uint16, wraps)",
    SCORE: "normalised score × 1000 on the score scale (0 = a typical good part or better, 1000 = threshold; "
           "uint16, clamped at 0, saturates at 65535)",
    HEARTBEAT: "heartbeat: +1 every second (uint16, wraps)",
    CYCLE: "cycle time of the result, trigger seen → results ready, in 0.1 ms (uint16, saturates)",
    COUNT_HI: "part counter, high word (results since start)",
    COUNT_LO: "part counter, low word",
    FRAME_ID: "the camera's frame id of the result (industrial cameras; uint16, wraps; 0 when the source has none)",
    COMMAND: "command (PLC writes): bit 0 trigger, bit 1 results ack — each acts on its rising edge",
    RECIPE: "recipe index (PLC writes; takes effect at the next trigger; an unknown index sets error 6 and every "
            "trigger is refused with 6, nothing inspected, until a known index is written; without a station file "
            "only 0 = the loaded model)",
}


class RecipePort(Protocol):
    """What the line selects a recipe through (the station's ``RecipeSet``): register 11 / OPC UA SelectRecipe →
    ``PlcState.write_recipe`` → ``select``."""

    def select(self, index: int) -> bool:
        """Make the recipe of this index the active one; False when there is none (nothing changes)."""
        ...

    @property
    def active_index(self) -> int: ...

    def names(self) -> dict[int, str]:
        """Every recipe's index and name."""
        ...

    def ready(self) -> bool:
        """Whether the active recipe has a model (a station's recipe may have none yet)."""
        ...


class OneModel:
    """The port of a run without a station: one model, recipe 0."""

    active_index = 0

    def select(self, index: int) -> bool:
        return index == 0

    def names(self) -> dict[int, str]:
        return {}

    def ready(self) -> bool:
        return True


class PlcState:
    """The handshake, protocol-independent and thread-safe; the Modbus (or OPC UA) server maps it to registers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.triggers: queue.Queue[tuple[int, float]] = queue.Queue()
        self.trigger_ready, self.results_ready, self.busy = True, False, False
        self.ok = self.ng = self.review = False
        self.error_code = ERR_NONE
        self.next_trigger = 1
        self.last_trigger = 0
        self.score = 0.0
        self.cycle_ms = 0.0
        self.count = 0
        self.frame_id = 0
        self.result_id = ""
        self.command = 0
        self.t_trigger: dict[int, float] = {}
        self.cycles: deque[float] = deque(maxlen=TIMING_WINDOW)  # the newest cycles: bounded in a 24/7 run
        self.rejected = 0
        self.t0 = time.monotonic()
        self.failing: str | None = None
        self.recipes: RecipePort = OneModel()  # the port recipes are selected through (``connect_recipes``)
        self.recipe_index = 0
        self.recipe_invalid: int | None = None  # the unknown index written, while it stands
        self.recipe_names: dict[int, str] = {}

    def connect_recipes(self, port: RecipePort) -> None:
        """Select recipes through ``port`` (a station's recipe set) from now on; its active recipe is the PLC's."""
        with self.lock:
            self.recipes = port
            self.recipe_index = port.active_index
            self.recipe_names = port.names()

    def recipe_name(self) -> str:
        return self.recipe_names.get(self.recipe_index, "")

    def write_recipe(self, index: int) -> bool:
        """The PLC wrote the recipe register. An unknown index leaves the active recipe as it is, sets error 6 and
        makes every trigger fail with 6 until a known index is written (which clears the 6)."""
        ok = self.recipes.select(int(index))
        with self.lock:
            if ok:
                self.recipe_index, self.recipe_invalid = int(index), None
                self.recipe_names = self.recipes.names()  # recipes created, renamed or deleted on the web app
                if self.error_code == ERR_RECIPE:
                    self.error_code, self.failing = ERR_NONE, None
            else:
                self.recipe_invalid = int(index)
                self.error_code, self.failing = ERR_RECIPE, f"unknown recipe {int(index)}"
        return ok

    def trigger(self) -> int | None:
        """A trigger from the PLC: its id, or None (error code set) when the box is not ready or the recipe
        register names an unknown recipe."""
        with self.lock:
            if self.recipe_invalid is not None:
                self.error_code = ERR_RECIPE
                self.rejected += 1
                return None
            if not self.recipes.ready():
                self.error_code, self.failing = ERR_NO_MODEL, f"recipe {self.recipe_index} has no model yet"
                self.rejected += 1
                return None
            if not self.trigger_ready:
                self.error_code = ERR_BUSY if self.busy else ERR_NOT_ACKED
                self.rejected += 1
                return None
            tid = self.next_trigger
            self.next_trigger += 1
            self.trigger_ready, self.busy, self.error_code = False, True, ERR_NONE
            self.t_trigger[tid] = time.monotonic()
        self.triggers.put((tid, self.t_trigger[tid]))
        return tid

    def ack(self) -> None:
        with self.lock:
            if self.results_ready:
                self.results_ready = self.ok = self.ng = self.review = False
                self.trigger_ready = not self.busy
                if self.error_code in (ERR_BUSY, ERR_NOT_ACKED):
                    self.error_code = ERR_NONE

    def result(self, r: Result) -> None:
        with self.lock:
            t = self.t_trigger.pop(r.trigger_id, None) if r.trigger_id is not None else None
            self.cycle_ms = (time.monotonic() - t) * 1e3 if t is not None else 0.0
            if t is not None:
                self.cycles.append(self.cycle_ms)
            v = r.inspection.verdict
            self.ok, self.ng, self.review = v == "OK", v == "NG", v == "REVIEW"
            self.score = r.inspection.normalised_score
            self.last_trigger = r.trigger_id or 0
            self.frame_id = int(r.camera.get("frame_id", 0)) if r.camera else 0
            self.result_id = r.result_id
            self.count += 1
            self.busy, self.results_ready = False, True

    def fail(self, code: int, text: str) -> None:
        """An error the PLC must see (error bit and code). A cycle it ends (no result will come) leaves the box
        ready for the next trigger; a result waiting for its acknowledgement stays."""
        with self.lock:
            self.error_code, self.failing, self.busy = code, text, False
            if not self.results_ready:
                self.trigger_ready = True

    def write_command(self, value: int) -> None:
        """The PLC wrote the command register: act on rising edges."""
        rising = value & ~self.command
        self.command = value
        if rising & CMD_ACK:
            self.ack()
        if rising & CMD_TRIGGER:
            self.trigger()

    def code(self) -> int:
        """The error code in force (call with the lock held): the last error's, else 7 while the active recipe has no
        model yet; a 7 clears itself once the recipe has one."""
        ready = self.recipes.ready()
        if self.error_code == ERR_NO_MODEL and ready:
            self.error_code, self.failing = ERR_NONE, None
        return self.error_code or (ERR_NONE if ready else ERR_NO_MODEL)

    def registers(self) -> list[int]:
        ready = self.recipes.ready()  # no model yet: no Trigger Ready, error 7 (until a model is deployed)
        with self.lock:
            code = self.code()
            status = ((BIT_TRIGGER_READY if self.trigger_ready and ready else 0)
                      | (BIT_RESULTS_READY if self.results_ready else 0)
                      | (BIT_OK if self.ok else 0) | (BIT_NG if self.ng else 0) | (BIT_REVIEW if self.review else 0)
                      | (BIT_ERROR if code else 0) | (BIT_BUSY if self.busy else 0))
            out = [0] * N_REGISTERS
            out[STATUS], out[ERROR_CODE] = status, code
            out[TRIGGER_ID] = self.last_trigger & 0xFFFF
            out[SCORE] = min(65535, max(0, round(self.score * 1000)))
            out[HEARTBEAT] = int(time.monotonic() - self.t0) & 0xFFFF
            out[CYCLE] = min(65535, round(self.cycle_ms * 10))
            out[COUNT_HI], out[COUNT_LO] = (self.count >> 16) & 0xFFFF, self.count & 0xFFFF
            out[FRAME_ID] = self.frame_id & 0xFFFF
            out[COMMAND] = self.command
            return out

    def result_of(self, tid: int) -> dict[str, Any] | None:
        """The held result if it answers trigger ``tid`` (for the HTTP trigger), else None."""
        with self.lock:
            if not (self.results_ready and self.last_trigger == tid):
                return None
            return {"trigger_id": tid, "result_id": self.result_id,
                    "verdict": "NG" if self.ng else "REVIEW" if self.review else "OK",
                    "normalised_score": self.score, "cycle_ms": self.cycle_ms, "count": self.count,
                    "camera_frame_id": self.frame_id or None}

    def cycle_stats(self) -> dict[str, float]:
        with self.lock:
            c = list(self.cycles)
        if not c:
            return {"cycles": 0}
        return {"cycles": len(c), "cycle_ms_p50": float(np.percentile(c, 50)),
                "cycle_ms_p99": float(np.percentile(c, 99))}


class TriggeredSource(Source):
    """One frame of ``base`` per accepted trigger, carrying the trigger's id (the capture time is the trigger's).
    ``read`` waits up to ``timeout`` for a trigger and returns None when none came (the loop polls again).
    A camera in software-trigger mode (``software_trigger()``) is fired by each PLC trigger, so the frame is
    exposed after the trigger; any other source gives its newest frame."""

    def __init__(self, base: Source, state: PlcState) -> None:
        self.base, self.state = base, state
        mode = getattr(base, "mode", None)
        if mode is not None:
            refusal = plc_trigger_refusal(mode)
            if refusal is not None:
                raise refusal
        self.fire = getattr(base, "software_trigger", None) if mode == "software" else None
        if self.fire is not None:
            base.externally_triggered = True  # type: ignore[attr-defined]  # a camera source's flag, not Source's
        self.live = base.live
        self.fps = base.fps

    @property
    def dropped(self) -> int:  # type: ignore[override]  # a property over Source's plain attribute
        return self.base.dropped

    def read(self, timeout: float = 5.0) -> Frame | None:
        try:
            tid, t_trigger = self.state.triggers.get(timeout=min(timeout, 0.5))
        except queue.Empty:
            return None
        if self.fire is not None and not self.fire():
            self.state.fail(ERR_SOURCE, "the camera was not ready for a software trigger")
            return None
        frame = self.base.read(5.0)
        if frame is None:
            self.state.fail(ERR_SOURCE, self.base.end_reason)
            if self.base.ended:
                self.ended, self.end_reason = True, self.base.end_reason
            return None
        frame.trigger_id, frame.t_capture = tid, t_trigger
        return frame

    def stats(self) -> dict[str, Any]:
        return self.base.stats() if hasattr(self.base, "stats") else {}

    def close(self) -> None:
        self.base.close()


class PlcSink(Sink):
    """The verdict to the PLC's outputs (Modbus registers, OPC UA variables), straight after inference
    (lossless, required)."""

    name = "plc"
    lossless = True
    required = True
    queue_size = 64

    def __init__(self, state: PlcState, publishers: list[Any] | None = None) -> None:
        self.state = state
        self.publishers = publishers if publishers is not None else []

    def take(self, r: Result) -> None:
        """The handshake state takes the result (Modbus reads it from there); servers that push values (OPC UA)
        are then given it, in the same order."""
        self.state.result(r)
        for p in self.publishers:
            p.publish(r)

    def gauges(self) -> dict[str, tuple[str, float]]:
        c = self.state.cycle_stats()
        g = {"plc_triggers": ("Triggers accepted", float(self.state.next_trigger - 1)),
             "plc_rejected_triggers": ("Triggers refused (busy / result not acknowledged)", float(self.state.rejected)),
             "plc_error_code": ("The PLC error code in force", float(self.state.error_code))}
        if c.get("cycles"):
            g["plc_cycle_ms_p50"] = ("Trigger seen → results ready, median (ms)", c["cycle_ms_p50"])
            g["plc_cycle_ms_p99"] = ("Trigger seen → results ready, 99th percentile (ms)", c["cycle_ms_p99"])
        return g


class ModbusServer:
    """The handshake as a Modbus TCP server (pymodbus) on its own thread and event loop. Writes to output
    registers are refused (illegal address); the command register acts on rising edges."""

    def __init__(self, state: PlcState, host: str, port: int, device_id: int = 1) -> None:
        self.state, self.host, self.port, self.device_id = state, host, port, device_id
        self.thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: Any = None

    async def _action(self, function_code: int, start_address: int, address: int, count: int,
                      current_registers: list[int], set_values: Any) -> Any:
        from pymodbus.constants import ExcCodes

        if set_values is not None:
            written = range(address, address + len(set_values))
            if any(a not in (COMMAND, RECIPE) for a in written):
                return ExcCodes.ILLEGAL_ADDRESS
            values = dict(zip(written, set_values, strict=True))
            if RECIPE in values:  # a recipe written with a trigger in one request applies to that trigger
                self.state.write_recipe(int(values[RECIPE]))
            if COMMAND in values:
                self.state.write_command(int(values[COMMAND]))
        regs = self.state.registers()
        for i, v in enumerate(regs):
            j = i - start_address
            if 0 <= j < len(current_registers) and i not in (COMMAND, RECIPE):
                current_registers[j] = v
        return None

    def start(self) -> "ModbusServer":
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        logging.getLogger("pymodbus").setLevel(logging.ERROR)
        dev = SimDevice(id=self.device_id, simdata=[SimData(address=0, count=N_REGISTERS, values=0,
                                                            datatype=DataType.REGISTERS)], action=self._action)
        ready = threading.Event()
        box: dict[str, Any] = {}

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop
            try:
                async def boot() -> None:
                    self.server = ModbusTcpServer(context=dev, address=(self.host, self.port))
                    await self.server.serve_forever(background=True)

                loop.run_until_complete(boot())
                if not self.server.is_active():
                    raise OSError("the port is in use or the address is not this machine's")
                box["ok"] = True
            except BaseException as exc:  # noqa: BLE001 — reported on the caller's thread
                box["error"] = exc
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self.thread = threading.Thread(target=serve, name="modbus", daemon=True)
        self.thread.start()
        ready.wait(10)
        if "error" in box or "ok" not in box:
            exc = box.get("error")
            self.server = None  # nothing listens: close() has nothing to shut down (and no loop runs to do it)
            raise UserError(f"--modbus {self.host}:{self.port}: cannot listen ({exc or 'timed out'})")
        return self

    def close(self) -> None:
        if self.loop is not None and self.server is not None:
            fut = asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop)
            try:
                fut.result(10)
            except Exception:  # noqa: BLE001
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread is not None:
            self.thread.join(10)
