"""Real line parts for the tests, on loopback and bounded in time: a mosquitto broker, an MQTT subscriber, a
paced source that stands in for a live camera, a folder of parts from a new material batch (drifted)."""
from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from edge_stpm.runtime.loop.sources import Frame, Source

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """``mosquitto`` on 127.0.0.1:port as a child process, with persistence in ``folder`` as a broker on a line is
    run: a message it acknowledged (PUBACK) but had not yet delivered to a subscriber is saved when it stops and
    delivered after the restart. Without it a stop loses what the broker had already acknowledged — a loss no box
    can prevent, which a test of the box must not count (a CI run once saw 11 such messages vanish)."""

    def __init__(self, port: int, folder: Path) -> None:
        self.port, self.folder = port, folder
        self.conf = folder / "mosquitto.conf"
        # run as root, mosquitto would switch to user 'mosquitto' and could not write its store into ``folder``
        me = pwd.getpwuid(os.geteuid()).pw_name
        self.conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser {me}\n"
                             f"persistence true\npersistence_location {folder}/\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Broker":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return self
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


@contextlib.contextmanager
def broker(folder: Path) -> Iterator[Broker]:
    b = Broker(free_port(), folder).start()
    try:
        yield b
    finally:
        b.stop()


class Subscriber:
    """Collects every message on ``topic`` (QoS 1) in a persistent session (``clean_session=False``), so what the
    broker queued for it survives a broker restart. It reconnects after a restart and subscribes again —
    ``subscribed`` is set each time that is done, so a test can wait for it before anything is published."""

    def __init__(self, port: int, topic: str = "#") -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[dict] = []
        self.lock = threading.Lock()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{port}",
                        clean_session=False)
        self.subscribed = threading.Event()
        c.on_connect = lambda cl, *a: cl.subscribe(topic, qos=1)
        c.on_subscribe = lambda *a: self.subscribed.set()
        c.on_message = self._on_message
        c.reconnect_delay_set(0.2, 1)
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append(json.loads(msg.payload))

    def ids(self) -> list[str]:
        with self.lock:
            return [m["result_id"] for m in self.messages]

    def wait_for(self, n: int, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(set(self.ids())) < n:
            time.sleep(0.05)
        return self.ids()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class PacedSource(Source):
    """``n`` frames from ``images`` (cycled) at ``fps``, like a live camera (newest frame, no backlog)."""

    live = False  # every frame is inspected (recordings would be lossless), but frames come at the camera's pace

    def __init__(self, images: list[np.ndarray], n: int, fps: float) -> None:
        self.images, self.n, self.period = images, n, 1.0 / fps
        self.i = 0
        self.t_next = time.monotonic()

    def read(self, timeout: float = 5.0) -> Frame | None:
        if self.i >= self.n:
            self.ended = True
            return None
        delay = self.t_next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.t_next = max(self.t_next + self.period, time.monotonic())
        f = Frame(self.i, self.images[self.i % len(self.images)], time.monotonic(), 0.0)
        self.i += 1
        return f


def _wait_bit(c, bit: int, on: bool, timeout: float = 20.0, poll_s: float = 0.001) -> list[int]:
    from edge_stpm.runtime.line import plc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        regs = c.read_holding_registers(0, count=9, device_id=1).registers
        if bool(regs[plc.STATUS] & bit) == on:
            return regs
        time.sleep(poll_s)  # a PLC's scan cycle: polling flat out would steal the box's CPU
    raise AssertionError(f"status bit {bit} not {'on' if on else 'off'} within {timeout} s: {regs}")


def modbus_cycles(port: int, n: int, proc=None, check_busy: bool = True,
                  poll_s: float = 0.001) -> tuple[list[tuple], list[float]]:
    """A PLC's side of the handshake with a real pymodbus client: ``n`` × (wait trigger ready, trigger, wait results
    ready, read, ack, wait results cleared). Returns (trigger id, verdict, score register, part counter, camera frame
    id) per cycle
    and the client-side cycle times (ms). With ``check_busy`` the first cycle also sends a second trigger before its
    result is acknowledged and checks the error code."""
    from pymodbus.client import ModbusTcpClient

    from edge_stpm.runtime.line import plc

    c = ModbusTcpClient("127.0.0.1", port=port, timeout=5)
    deadline = time.monotonic() + 120
    while not c.connect():
        if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
            raise AssertionError("the box's Modbus server did not come up" +
                                 (f": {proc.stderr.read()}" if proc is not None and proc.poll() is not None else ""))
        time.sleep(0.2)
    seen, cycles = [], []
    try:
        for k in range(n):
            regs = _wait_bit(c, plc.BIT_TRIGGER_READY, True, poll_s=poll_s)
            assert not regs[plc.STATUS] & plc.BIT_RESULTS_READY
            t0 = time.perf_counter()
            c.write_register(plc.COMMAND, plc.CMD_TRIGGER, device_id=1)
            if check_busy and k == 0:
                c.write_register(plc.COMMAND, 0, device_id=1)
                c.write_register(plc.COMMAND, plc.CMD_TRIGGER, device_id=1)
                r2 = c.read_holding_registers(0, count=2, device_id=1).registers
                assert r2[plc.STATUS] & plc.BIT_ERROR and r2[plc.ERROR_CODE] in (plc.ERR_BUSY, plc.ERR_NOT_ACKED), r2
            regs = _wait_bit(c, plc.BIT_RESULTS_READY, True, poll_s=poll_s)
            cycles.append((time.perf_counter() - t0) * 1e3)
            bits = {v: bool(regs[plc.STATUS] & b) for v, b in (("OK", plc.BIT_OK), ("NG", plc.BIT_NG),
                                                                ("REVIEW", plc.BIT_REVIEW))}
            assert sum(bits.values()) == 1, regs  # exactly one verdict bit
            seen.append((regs[plc.TRIGGER_ID], next(v for v, on in bits.items() if on), regs[plc.SCORE],
                         (regs[plc.COUNT_HI] << 16) | regs[plc.COUNT_LO], regs[plc.FRAME_ID]))
            c.write_register(plc.COMMAND, plc.CMD_ACK, device_id=1)
            regs = _wait_bit(c, plc.BIT_RESULTS_READY, False, poll_s=poll_s)
            assert not regs[plc.STATUS] & (plc.BIT_OK | plc.BIT_NG | plc.BIT_REVIEW)
            c.write_register(plc.COMMAND, 0, device_id=1)
    finally:
        c.close()
    return seen, cycles


OPCUA_USER = ("plc", "line-test-password")  # the box's --opcua-user plc:line-test-password (anonymous is read-only)


def opcua_cycles(port: int, n: int, proc=None, check_busy: bool = True, poll_s: float = 0.001,
                 user: tuple[str, str] = OPCUA_USER) -> tuple[list, list]:
    """A PLC's side of the handshake over OPC UA with a real asyncua client, logged in as ``user``: ``n`` × (call
    Trigger, wait State = ResultReady, read LastResult, call AckResult). Returns (trigger id, verdict, result id,
    parts) per cycle and the client-side cycle times (ms)."""
    import asyncio

    from asyncua import Client, ua

    async def main() -> tuple[list, list]:
        url = f"opc.tcp://127.0.0.1:{port}/edge-stpm/"
        deadline = time.monotonic() + 120
        while True:
            try:
                client = Client(url, timeout=10)
                client.set_user(user[0])
                client.set_password(user[1])
                await client.connect()
                break
            except (OSError, asyncio.TimeoutError, ua.UaError):
                if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
                    raise AssertionError("the box's OPC UA server did not come up")
                await asyncio.sleep(0.3)
        try:
            idx = await client.get_namespace_index("urn:edge-stpm")
            vs = await client.nodes.objects.get_child([f"{idx}:VisionSystem"])
            state = await vs.get_child([f"{idx}:State"])
            last = await vs.get_child([f"{idx}:ResultManagement", f"{idx}:LastResult"])
            names = ("TriggerId", "Verdict", "ResultId", "IsPartGood", "IsReview")
            fields = {k: await last.get_child([f"{idx}:{k}"]) for k in names}
            parts = await vs.get_child([f"{idx}:Counters", f"{idx}:Parts"])
            seen, cycles = [], []

            async def until(node, value: str, timeout: float = 20.0) -> None:
                end = time.monotonic() + timeout
                while (got := await node.read_value()) != value:
                    if time.monotonic() > end:
                        raise AssertionError(f"State stayed {got!r}, not {value!r}, for {timeout} s")
                    await asyncio.sleep(poll_s)

            for k in range(n):
                t0 = time.perf_counter()
                tid = await vs.call_method(f"{idx}:Trigger")
                if check_busy and k == 0:
                    try:
                        await vs.call_method(f"{idx}:Trigger")
                        raise AssertionError("a trigger while busy was accepted")
                    except ua.UaStatusCodeError as exc:
                        assert exc.code == ua.StatusCodes.BadResourceUnavailable, exc
                await until(state, "ResultReady")
                cycles.append((time.perf_counter() - t0) * 1e3)
                v = {k: await f.read_value() for k, f in fields.items()}
                assert v["IsPartGood"] == (v["Verdict"] == "OK") and v["IsReview"] == (v["Verdict"] == "REVIEW")
                seen.append((v["TriggerId"], v["Verdict"], v["ResultId"], await parts.read_value()))
                assert v["TriggerId"] == tid, (v, tid)
                await vs.call_method(f"{idx}:AckResult")
                await until(state, "Operational")
            return seen, cycles
        finally:
            await client.disconnect()

    return asyncio.run(main())


TRITON_HOME = Path(os.environ.get("EDGE_STPM_TRITON", Path.home() / ".cache" / "edge-stpm" / "triton"))
TRITON_BIN = TRITON_HOME / "pytriton" / "tritonserver" / "bin" / "tritonserver"
TRITON_ENV = TRITON_HOME / "env"


def triton_missing() -> str | None:
    """Why the real Triton server cannot run here (None: it can)."""
    if not TRITON_BIN.is_file():
        return f"no tritonserver at {TRITON_BIN}: run .ci/fetch_triton.sh"
    if not (TRITON_ENV / "bin" / "python").exists():
        return f"no Python-backend environment at {TRITON_ENV}: run .ci/fetch_triton.sh"
    try:
        import tritonclient.grpc  # noqa: F401
    except ImportError:
        return "tritonclient not installed (pip install 'edge-stpm[triton]')"
    return None


class TritonServer:
    """The tritonserver binary of the nvidia-pytriton wheel on loopback (CPU), serving one model of ``repo``."""

    def __init__(self, repo: Path, model: str, log: Path) -> None:
        self.repo, self.model, self.log = repo, model, log
        self.http, self.grpc, self.metrics = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> "TritonServer":
        import urllib.request

        tri = TRITON_BIN.parents[1]
        env = os.environ | {"LD_LIBRARY_PATH": str(TRITON_HOME / "nvidia_pytriton.libs")}
        self.proc = subprocess.Popen([str(TRITON_BIN), "--model-repository", str(self.repo), "--backend-directory",
                                      str(tri / "backends"), "--model-control-mode", "explicit", "--load-model",
                                      self.model, "--http-address", "127.0.0.1", "--grpc-address", "127.0.0.1",
                                      "--http-port", str(self.http), "--grpc-port", str(self.grpc),
                                      "--metrics-port", str(self.metrics), "--allow-gpu-metrics", "false"],
                                     stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/v2/models/{self.model}/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"tritonserver not ready in {timeout:g} s: {self.log.read_text()[-2000:]}")

    @property
    def url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc}/{self.model}"

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


def image_folder(synth_dir: Path, dst: Path, n: int) -> list[Path]:
    """``n`` images in ``dst`` (links to the synthetic test images, in turn): a folder source whose frame index
    names the image."""
    import os

    src = sorted((synth_dir / "test").glob("*/*.png"))
    dst.mkdir()
    out = []
    for i in range(n):
        p = dst / f"{i:05d}.png"
        os.symlink(src[i % len(src)], p)
        out.append(p)
    return out


def drifted_parts(goods: list[Path], defects: list[Path], folder: Path) -> dict[int, str]:
    """A new material batch on the line: ``goods`` brightened (×1.3 + 30 grey levels: every one a false call of a
    model that learned the old look) and ``defects`` brightened alike, written as ``folder/000.png`` … in that order
    — a folder source's frame order, so a frame's truth is ``truth[frame % len(truth)]``. A file already there is
    replaced atomically: a station that reads the folder in a loop sees the old part or the new one, never half a
    file. Returns each file index's truth ("good" or "defect")."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i, src in enumerate(list(goods) + list(defects)):
        ok, png = cv2.imencode(".png", cv2.convertScaleAbs(cv2.imread(str(src)), alpha=1.3, beta=30))
        assert ok, src
        tmp = folder / f".{i:03d}.tmp"
        tmp.write_bytes(png.tobytes())
        os.replace(tmp, folder / f"{i:03d}.png")
        truth[i] = "good" if i < len(goods) else "defect"
    return truth
