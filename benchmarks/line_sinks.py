"""The loop's frame rate and capture→verdict latency with the line sinks on (inspection record, MQTT through the
outbox to a real mosquitto on loopback, event log) against the same loop without them — same model, same video,
same process, runs alternated (ABAB…), medians reported.

usage: python benchmarks/line_sinks.py MODEL VIDEO [REPEATS] [OUT.json]
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.line_parts import Subscriber, broker  # noqa: E402

from edge_stpm.runtime.loop.pipeline import RunOptions, run  # noqa: E402
from edge_stpm.runtime.loop.sinks.mqtt import MqttSink  # noqa: E402
from edge_stpm.runtime.loop.sinks.record import RecordSink  # noqa: E402
from edge_stpm.runtime.loop.sources import open_source  # noqa: E402
from edge_stpm.runtime.inspector import Inspector  # noqa: E402


def main() -> None:
    model, video = Path(sys.argv[1]), sys.argv[2]
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    out = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    insp = Inspector.load(model, "onnxruntime")
    rows: dict[str, list[dict]] = {"no sinks": [], "record + MQTT + events": []}
    with tempfile.TemporaryDirectory() as tmp, broker(Path(tmp)) as b:
        sub = Subscriber(b.port)
        time.sleep(0.3)
        for k in range(repeats):
            for name in rows:
                sinks = []
                if name != "no sinks":
                    sinks = [RecordSink(Path(tmp) / f"h{k}.db", "bench"),
                             MqttSink(f"mqtt://127.0.0.1:{b.port}", "bench/{source}", Path(tmp) / "o.db", "bench")]
                s = run(insp, open_source(video), RunOptions(headless=True, sinks=sinks,
                                                             events=Path(tmp) / "e.jsonl" if sinks else None))
                rows[name].append({"fps": s.fps, "verdict_p50": s.latency_ms["verdict"]["p50"],
                                   "verdict_p99": s.latency_ms["verdict"]["p99"], "frames": s.frames,
                                   "sinks": s.sinks})
                print(f"{name}: {s.frames} frames, {s.fps:.1f} fps, verdict p50 {s.latency_ms['verdict']['p50']:.2f} ms",
                      flush=True)
        received = len(set(sub.ids()))
        sub.close()
    insp.close()
    med = {n: {k: statistics.median(r[k] for r in v) for k in ("fps", "verdict_p50", "verdict_p99")} for n, v in rows.items()}
    ratio = med["record + MQTT + events"]["fps"] / med["no sinks"]["fps"]
    print(f"backend: {insp.backend.describe()}")
    print("| loop | FPS (median) | capture→verdict p50 ms | p99 ms |\n|---|---|---|---|")
    for n, m in med.items():
        print(f"| {n} | {m['fps']:.1f} | {m['verdict_p50']:.2f} | {m['verdict_p99']:.2f} |")
    print(f"ratio with/without: {ratio:.3f}; MQTT messages received by a subscriber: {received}")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"model": str(model), "video": video, "runs": rows, "medians": med, "ratio": ratio,
                                   "mqtt_received": received}, indent=1))


if __name__ == "__main__":
    main()
