"""What ``run`` connects to the line, set up and torn down in one place: the inspection record, MQTT, the PLC
handshake over Modbus TCP, and trigger mode (one frame per PLC trigger)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edge_stpm.common.bind import parse_bind
from edge_stpm.common.errors import UserError
from edge_stpm.contract.artifacts import model_sha256
from edge_stpm.runtime.line.opcua import OpcuaServer, parse_user
from edge_stpm.runtime.line.plc import ERR_INSPECTION, ERR_OUTPUT, ModbusServer, PlcSink, PlcState, TriggeredSource
from edge_stpm.runtime.loop.basler import is_basler, parse_spec, plc_trigger_refusal
from edge_stpm.runtime.loop.frames import Source
from edge_stpm.runtime.loop.sinks.base import Sink
from edge_stpm.runtime.loop.sinks.mqtt import MqttSink
from edge_stpm.runtime.loop.sinks.record import RecordSink


@dataclass
class LineSettings:
    """``run``'s line options. ``modbus`` is HOST:PORT or None; ``trigger`` is free-run or plc."""

    model: Path | None  # None: no model (collect), nothing that names one (record, MQTT)
    history_db: Path | None
    history_keep_days: float = 90.0
    history_max_mb: float = 2048.0
    mqtt: str | None = None
    mqtt_topic: str = "edge-stpm/{host}/{source}"
    mqtt_ca: Path | None = None
    mqtt_outbox: Path | None = None
    outbox_max: int = 100_000
    modbus: str | None = None
    opcua: str | None = None
    opcua_user: str | None = None
    trigger: str = "free-run"


def check_sources(specs: list[str], trigger: str) -> None:
    """Before a model or a camera is opened: every ``basler://`` spec parses, and ``--trigger plc`` gets a source it
    can trigger (a camera on a hardware trigger line is triggered by its line, not by the PLC)."""
    for spec in specs:
        refusal = plc_trigger_refusal(parse_spec(spec).trigger) if is_basler(spec) else None
        if trigger in ("plc", "http") and refusal is not None:
            raise refusal


@dataclass
class Line:
    """The sinks to add to the loop and the servers to run beside it."""

    sinks: list[Sink] = field(default_factory=list)
    plc: Any = None
    servers: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    triggered: bool = False

    def wrap(self, sources: list[Source]) -> list[Source]:
        """In trigger mode the one source yields one frame per accepted trigger."""
        if self.plc is None or not self.triggered:
            return sources

        return [TriggeredSource(sources[0], self.plc)]

    def on_inspection_error(self, text: str) -> None:
        """A frame that could not be inferred (the model server is down) shows on the PLC as code 3."""
        if self.plc is not None:
            self.plc.fail(ERR_INSPECTION, text)

    def on_error(self, text: str) -> None:
        """A required output failing (the record, say) shows on the PLC as its error bit and code 4."""
        if self.plc is not None:
            self.plc.fail(ERR_OUTPUT, text)

    def start(self) -> None:
        for s in self.servers:
            s.start()

    def close(self, ack_wait_s: float = 5.0, grace_s: float = 0.5) -> None:
        """Stop the PLC servers — but first give the PLC up to ``ack_wait_s`` to read and acknowledge a result still
        held for it (the last part of a run is not taken away mid-handshake), then ``grace_s`` to see the box ready
        (always: a PLC that acknowledged just before the run ended is still reading the state back)."""
        if self.plc is not None and self.servers:
            deadline = time.monotonic() + ack_wait_s
            while self.plc.results_ready and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(grace_s)
        for s in reversed(self.servers):
            s.close()


def setup(cfg: LineSettings, n_sources: int, log: Callable[[str], None]) -> Line:
    """Check every line option and build the sinks (nothing listens or connects yet: ``Line.start``)."""
    line = Line()
    sha = model_sha256(cfg.model) if cfg.model is not None else ""
    if cfg.history_db is not None:
        line.sinks.append(RecordSink(cfg.history_db, sha, cfg.history_keep_days, cfg.history_max_mb, log=log))
    if cfg.mqtt:
        line.sinks.append(MqttSink(cfg.mqtt, cfg.mqtt_topic, cfg.mqtt_outbox or Path("mqtt-outbox.db"), sha,
                                   cfg.outbox_max, cfg.mqtt_ca, log=log, record=cfg.history_db))
    if cfg.trigger == "plc" and not (cfg.modbus or cfg.opcua):
        raise UserError("--trigger plc needs a PLC connection: --modbus HOST:PORT or --opcua HOST:PORT")
    if cfg.modbus or cfg.opcua or cfg.trigger == "http":
        line.plc = PlcState()
        sink = PlcSink(line.plc)
        line.sinks.append(sink)
        if cfg.modbus:
            bind = parse_bind(cfg.modbus, what="--modbus")
            if not bind.loopback:
                line.notes.append(f"Modbus TCP on {bind.host}:{bind.port}: Modbus has no authentication — anyone "
                                  "who reaches this port can trigger the box and read its results (keep it on the "
                                  "machine network, behind the line's firewall)")
            line.servers.append(ModbusServer(line.plc, bind.host, bind.port))
        if cfg.opcua:
            bind = parse_bind(cfg.opcua, what="--opcua")
            ua_server = OpcuaServer(line.plc, bind.host, bind.port, parse_user(cfg.opcua_user), bind.loopback, log=log)
            line.servers.append(ua_server)
            sink.publishers.append(ua_server)
    if cfg.trigger in ("plc", "http"):
        if n_sources != 1:
            raise UserError(f"--trigger {cfg.trigger} takes exactly one --source or --camera (one frame per trigger)")
        line.triggered = True
    return line
