"""Real line parts for the tests, on loopback and bounded in time: a mosquitto broker, an MQTT subscriber, a
paced source that stands in for a live camera."""
from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from edge_stpm.app.sources import Frame, Source

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """``mosquitto`` on 127.0.0.1:port as a child process (no persistence: a restart forgets everything)."""

    def __init__(self, port: int, folder: Path) -> None:
        self.port, self.folder = port, folder
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
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
    """Collects every message on ``topic`` (QoS 1, a persistent session so a broker-side restart is survived
    by reconnecting)."""

    def __init__(self, port: int, topic: str = "#") -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[dict] = []
        self.lock = threading.Lock()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{port}")
        c.on_connect = lambda cl, *a: cl.subscribe(topic, qos=1)
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
