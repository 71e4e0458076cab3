"""MQTT results with a durable outbox: one JSON message per result, QoS 1, published in order.

Each result is first committed to an SQLite outbox on disk (WAL, fsync per commit) and leaves it only when the
broker has acknowledged it (PUBACK). A broker that is down for minutes, a network cut, or the box killed and
restarted loses no result and keeps their order: the publisher sends the outbox head, up to ``window`` messages in
flight on one connection (so in order), deletes what the broker acknowledged, and starts again from the head
after every reconnect or restart. QoS 1 is at-least-once: a message whose PUBACK was lost in a cut is sent again
(at most one window per cut), so consumers deduplicate by ``result_id`` (the record's id).

Bound: at most ``max_rows`` unsent messages; when full, the oldest unsent are dropped (counted, said once) —
the inspection record still has every result. A message that cannot enter the outbox (a full disk, an I/O error) is
retried and kept in memory (``record.Retrying``): what is finally dropped is counted (``mqtt_outbox_lost``) and said.
No message carries a secret: the source spec is redacted (``common.redact``). Message schema:
``edge-stpm/result/1`` (docs/line.md).
"""
from __future__ import annotations

import json
import logging
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlparse

from edge_stpm.common.errors import UserError
from edge_stpm.common.redact import redact
from edge_stpm.runtime.loop.sinks.base import Result, Sink
from edge_stpm.runtime.loop.sinks.record import (
    COLUMNS,
    Retrying,
    WriteFailed,
    connect,
    result_row,
    rolled_back_on_error,
    select_columns,
)

SCHEMA = "edge-stpm/result/1"


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None


def parse_url(text: str) -> BrokerUrl:
    """``mqtt://[user:pass@]host[:port]`` (1883) or ``mqtts://…`` (TLS, 8883)."""
    u = urlparse(text.strip())
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise UserError(f"--mqtt takes mqtt://[user:pass@]host[:port] or mqtts://…, not {text!r}")
    try:
        port = u.port if u.port is not None else (8883 if u.scheme == "mqtts" else 1883)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:  # before: port 0 silently became 1883
        raise UserError(f"--mqtt {text!r}: the port is not a number from 1 to 65535")
    return BrokerUrl(u.hostname, port, u.scheme == "mqtts", unquote(u.username) if u.username else None,
                     unquote(u.password) if u.password else None)


def check_topic(template: str) -> str:
    if not template or any(c in template for c in "+#\0") or template.startswith("$"):
        raise UserError(f"--mqtt-topic {template!r}: give a topic without wildcards (+, #), "
                        "e.g. plant/line1/{source}")
    try:
        template.format(host="h", source=0)
    except (KeyError, IndexError, ValueError):
        raise UserError(f"--mqtt-topic {template!r}: the only placeholders are {{host}} and {{source}}") from None
    return template


OUTBOX_APPLICATION_ID = 0x4553544F  # "ESTO": SQLite's application_id of an edge-stpm MQTT outbox


class Outbox:
    """The durable queue: rows in id order; ``head`` reads, ``remove`` deletes after the broker's ack."""

    def __init__(self, path: Path, max_rows: int) -> None:
        self.path, self.max_rows = Path(path), max_rows
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not self.path.exists() or self.path.stat().st_size == 0
            self.con = sqlite3.connect(str(self.path), timeout=10, check_same_thread=False)
            if not fresh:
                self._identify()
            self.con.execute(f"PRAGMA application_id={OUTBOX_APPLICATION_ID}")
            self.con.execute("PRAGMA journal_mode=WAL")
            self.con.execute("PRAGMA synchronous=FULL")
            self.con.execute("CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                             "result_id TEXT NOT NULL UNIQUE, topic TEXT NOT NULL, payload TEXT NOT NULL)")
            # the newest result ever queued (kept after its row is acknowledged): where a killed run stopped
            self.con.execute("CREATE TABLE IF NOT EXISTS outbox_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self.con.commit()
            self.con.execute("BEGIN IMMEDIATE")
            self.con.rollback()
        except (sqlite3.DatabaseError, OSError) as exc:
            raise UserError(f"cannot use the MQTT outbox {self.path}: {exc}") from None
        self.lock = threading.Lock()
        self.dropped = 0

    def _identify(self) -> None:
        """Refuse any SQLite file but an outbox (ours by application id, or one made before ids by its table)."""
        app = self.con.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in self.con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app == OUTBOX_APPLICATION_ID or (app == 0 and "outbox" in tables):
            return
        self.con.close()
        raise UserError(f"{self.path} is not an edge-stpm MQTT outbox (SQLite application id {app:#x}, tables "
                        f"{', '.join(sorted(tables)) or 'none'}); it is left untouched — give another --mqtt-outbox")

    def put(self, result_id: str, topic: str, payload: str) -> int:
        """Commit one message; returns how many old ones were dropped to stay within the bound."""
        return self.put_many([(result_id, topic, payload)])

    def put_many(self, messages: list[tuple[str, str, str]]) -> int:
        """Commit messages (result_id, topic, payload) in one transaction; returns how many old ones were dropped
        to stay within the bound."""
        with self.lock, rolled_back_on_error(self.con):
            self.con.executemany("INSERT OR IGNORE INTO outbox (result_id, topic, payload) VALUES (?, ?, ?)", messages)
            if messages:
                self.con.execute("INSERT INTO outbox_meta VALUES ('last_queued', ?) ON CONFLICT (key) DO UPDATE SET "
                                 "value = max(value, excluded.value)", (max(m[0] for m in messages),))
            over = self.depth_locked() - self.max_rows
            if over > 0:
                self.con.execute("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)", (over,))
                self.dropped += over
                return over
        return 0

    def last_queued(self) -> str | None:
        with self.lock:
            row = self.con.execute("SELECT value FROM outbox_meta WHERE key = 'last_queued'").fetchone()
        return row[0] if row else None

    def depth_locked(self) -> int:
        return self.con.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def depth(self) -> int:
        with self.lock:
            return self.depth_locked()

    def head(self, n: int = 1) -> list[tuple[int, str, str]]:
        """The ``n`` oldest messages (id, topic, payload)."""
        with self.lock:
            return self.con.execute("SELECT id, topic, payload FROM outbox ORDER BY id LIMIT ?", (n,)).fetchall()

    def remove(self, *row_ids: int) -> None:
        """Delete an acknowledged row. Without an fsync of its own (synchronous=NORMAL for this commit): a power
        cut can undo a delete — the message is then sent once more (QoS 1: at least once) — never an insert,
        which is committed with a full sync (``put_many``)."""
        with self.lock:
            self.con.execute("PRAGMA synchronous=NORMAL")
            with self.con:
                self.con.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in row_ids])
            self.con.execute("PRAGMA synchronous=FULL")

    def close(self) -> None:
        with self.lock:
            self.con.close()


class MqttSink(Sink):
    """Results to an MQTT broker through the outbox (lossless into the outbox; the publisher runs beside)."""

    name = "mqtt"
    lossless = True
    queue_size = 4096

    def __init__(self, url: str, topic: str, outbox: Path, model_sha256: str, max_rows: int = 100_000,
                 ca_file: Path | None = None, client_id: str | None = None, drain_s: float = 5.0, window: int = 16,
                 log: Callable[[str], None] | None = None, record: Path | None = None) -> None:
        self.url, self.topic = parse_url(url), check_topic(topic)
        self.record = Path(record) if record is not None else None
        self.outbox_path, self.max_rows, self.ca_file = Path(outbox), max_rows, ca_file
        self.sha, self.drain_s = model_sha256, drain_s
        self.window = window
        self.host = socket.gethostname()
        self.client_id = client_id or f"edge-stpm-{self.host}"
        self.log = log or logging.getLogger(__name__).warning
        self.outbox: Outbox | None = None
        self.retry = Retrying(f"MQTT outbox {self.outbox_path}", self._put, self.log)
        self.final_gauges: dict[str, tuple[str, float]] = {}
        self.connected = threading.Event()
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.sent = 0
        self.warned: set[str] = set()

    # --- lifecycle -----------------------------------------------------------------------------------------

    def open(self) -> None:
        import paho.mqtt.client as mqtt

        self.outbox = Outbox(self.outbox_path, self.max_rows)
        self.catch_up()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True)
        if self.url.username:
            c.username_pw_set(self.url.username, self.url.password)
        if self.url.tls:
            try:
                c.tls_set(ca_certs=str(self.ca_file) if self.ca_file else None)
            except (OSError, ValueError) as exc:
                raise UserError(f"--mqtt-ca {self.ca_file}: {exc}") from None
        c.max_inflight_messages_set(self.window)
        c.reconnect_delay_set(0.5, 4)  # type: ignore[arg-type]  # seconds, any number (paho's hint says int)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        self.client = c
        try:
            c.connect_async(self.url.host, self.url.port, keepalive=15)
        except (OSError, ValueError) as exc:
            raise UserError(f"--mqtt {self.url.host}:{self.url.port}: {exc}") from None
        c.loop_start()
        self.publisher = threading.Thread(target=self._publish_loop, name="mqtt-publisher", daemon=True)
        self.publisher.start()

    def catch_up(self) -> int:
        """Results of the run that was stopped hard which reached the inspection record but not the outbox (they
        were still in this sink's queue at the kill) are queued now, before this run's; one note. Only that run's
        rows newer than the last one it queued: never results of runs that had no MQTT."""
        assert self.outbox is not None
        last = self.outbox.last_queued()
        if last is None or self.record is None or not self.record.is_file():
            return 0

        run = last.rsplit("-", 1)[0]
        con = connect(self.record, readonly=True)
        try:
            rows = con.execute(f"SELECT {select_columns(con)} FROM inspections "
                               "WHERE result_id > ? AND result_id LIKE ? ORDER BY id", (last, run + "-%")).fetchall()
        finally:
            con.close()
        msgs = []
        for values in rows:
            row = dict(zip(COLUMNS, values, strict=True))
            row["camera"] = json.loads(row["camera"]) if row["camera"] else None
            msgs.append(self.message(row))
        if msgs:
            self.outbox.put_many(msgs)
            self.log(f"{len(msgs)} results of the run that was stopped hard were in the inspection record but not yet "
                     f"in the MQTT outbox: queued now, before this run's")
        return len(msgs)

    batch_max = 256
    batch_linger_s = 0.02  # group commit into the outbox: at most ~20 ms of results wait for their fsync

    def message(self, row: dict[str, Any]) -> tuple[str, str, str]:
        """(result id, topic, payload) of one result's row (``record.result_row``: a result's, or a record row's);
        the source spec redacted (a record written before redaction may still hold a password)."""
        row = row | {"source_spec": redact(str(row.get("source_spec") or ""))}
        return (row["result_id"], self.topic.format(host=self.host, source=row["source"]),
                json.dumps({"schema": SCHEMA, "host": self.host} | row, separators=(",", ":")))

    def take(self, r: Result) -> None:
        self.take_batch([r])

    def take_batch(self, results: list[Result]) -> None:
        """Into the outbox in one transaction (one fsync), then the publisher is woken; a failed write is retried
        and kept (``Retrying``: WriteFailed says what is kept and what is dropped)."""
        self.retry.write([self.message(result_row(r, self.sha)) for r in results])

    def _put(self, messages: list[tuple[str, str, str]]) -> None:
        assert self.outbox is not None
        dropped = self.outbox.put_many(messages)
        if dropped and "full" not in self.warned:
            self.warned.add("full")
            self.log(f"MQTT outbox full ({self.max_rows} unsent): the oldest unsent results are dropped from it "
                     "(the inspection record keeps them)")
        self.wake.set()

    def close(self) -> None:
        """Give the publisher up to ``drain_s`` to empty the outbox (reconnecting if need be), then stop; what is
        left stays in the outbox for the next run. Messages kept in memory after a failed outbox write get one more
        try first; what still cannot enter is dropped, counted and said (WriteFailed, after the rest is closed)."""
        failed: WriteFailed | None = None
        try:
            self.retry.flush()
        except WriteFailed as exc:
            failed = exc
        deadline = time.monotonic() + self.drain_s
        while self.outbox is not None and self.outbox.depth() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.stop.set()
        self.wake.set()
        self.publisher.join(10)
        self.client.disconnect()
        self.client.loop_stop()
        if self.outbox is not None:
            left = self.outbox.depth()
            if left:
                self.log(f"{left} MQTT results not yet acknowledged stay in {self.outbox_path} and are sent on the "
                         "next run")
            self.final_gauges = self.gauges()
            self.outbox.close()
            self.outbox = None
        if failed is not None:
            raise failed

    def gauges(self) -> dict[str, tuple[str, float]]:
        if self.outbox is None:
            return self.final_gauges
        return {"mqtt_outbox_depth": ("MQTT results in the outbox, not yet acknowledged by the broker",
                                      self.outbox.depth()),
                "mqtt_outbox_dropped": ("MQTT results dropped from a full outbox (still in the record)",
                                        self.outbox.dropped),
                "mqtt_outbox_pending": ("MQTT results kept in memory after a failed outbox write, retried",
                                        len(self.retry.pending)),
                "mqtt_outbox_lost": ("MQTT results that could not enter the outbox and were dropped (still in the "
                                     "record)", self.retry.lost),
                "mqtt_connected": ("1 while connected to the MQTT broker", float(self.connected.is_set())),
                "mqtt_sent": ("MQTT results acknowledged by the broker", self.sent)}

    # --- the publisher -------------------------------------------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            self._warn("auth", f"MQTT broker {self.url.host}:{self.url.port} refused the connection ({reason})")
            return
        self.connected.set()
        self.wake.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
        self.connected.clear()
        self.wake.set()

    def _warn(self, key: str, text: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            self.log(text)

    def _publish_loop(self) -> None:
        """Send the outbox head, wait for its PUBACK, delete it; after a disconnect, start again from the head."""
        started = time.monotonic()
        while not self.stop.is_set():
            if not self.connected.is_set():
                if time.monotonic() - started > 3.0:
                    self._warn("down", f"MQTT broker {self.url.host}:{self.url.port} unreachable: results wait in "
                               f"the outbox {self.outbox_path} (depth in /metrics) and are sent once it answers")
                self.wake.wait(0.5)
                self.wake.clear()
                continue
            rows = self.outbox.head(self.window) if self.outbox is not None else []
            if not rows:
                self.wake.wait(0.5)
                self.wake.clear()
                continue
            infos = [(row_id, self.client.publish(topic, payload, qos=1)) for row_id, topic, payload in rows]
            acked = []
            for row_id, info in infos:  # PUBACKs come in order on one connection
                if info.rc != 0 or not self._wait_ack(info):
                    break
                acked.append(row_id)
            if acked:
                self.outbox.remove(*acked)  # type: ignore[union-attr]  # open while the sender runs
                self.sent += len(acked)
            elif infos and infos[0][1].rc != 0:
                time.sleep(0.1)

    def _wait_ack(self, info: Any, resend_after_s: float = 5.0) -> bool:
        """Wait for the PUBACK of ``info``. Across a reconnect paho sends the in-flight message again itself, so
        it is waited for, not published anew — unless it is still unacknowledged ``resend_after_s`` after the
        connection is back (then the head is published again: at least once)."""
        since_connected: float | None = time.monotonic() if self.connected.is_set() else None
        while not self.stop.is_set():
            try:
                info.wait_for_publish(0.2)
            except (RuntimeError, ValueError):
                pass
            if info.is_published():
                return True
            if not self.connected.is_set():
                since_connected = None
            elif since_connected is None:
                since_connected = time.monotonic()
            elif time.monotonic() - since_connected > resend_after_s:
                return False
        return info.is_published()
