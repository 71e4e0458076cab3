"""The third verdict, REVIEW (issue 30): a recipe's review band below its threshold. `run --config` on a PLC
trigger; a real pymodbus client reads status bit 6, a real asyncua client reads Verdict / IsReview / ReviewParts,
an MQTT subscriber on a real mosquitto gets the verdict, and the record and `history --verdict REVIEW` keep it.
Each verdict is checked against the recipe's model run here on the same image with the same band."""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge_stpm.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
N = 24


def _expected(bundle: Path, images: list[Path]) -> tuple[float, list[str]]:
    """A band that puts some OK parts of this folder into REVIEW (the median of the scores between the scale's 0 —
    a typical good part — and the threshold: a band must be above 0, and half the good parts score below 0), and each
    image's verdict with it."""
    from edge_stpm.runtime.inspector import Inspector

    insp = Inspector.load(bundle, "onnxruntime", 1.0)
    scores = [insp.inspect(cv2.imread(str(p))).normalised_score for p in images]
    insp.close()
    below = sorted(s for s in scores if s < 1.0)
    assert len(below) >= 4 and len(below) < len(scores), "the fixture needs OK and NG parts"
    above_zero = [s for s in below if s > 0]
    assert len(above_zero) >= 2, f"the fixture needs OK parts above the scale's 0: {below}"
    band = round(float(np.median(above_zero)), 4)
    return band, ["NG" if s >= 1.0 else "REVIEW" if s >= band else "OK" for s in scores]


def _station(tmp_path: Path, bundle: Path, band: float, line: str) -> Path:
    f = tmp_path / f"station-{abs(hash(line)) % 1000}.toml"
    f.write_text(f"""version = 1
recipe = "tile"
[[recipes]]
name = "tile"
index = 0
model = "{bundle}"
review_band = {band}
[[sources]]
spec = "{tmp_path / 'parts'}"
[run]
trigger = "plc"
headless = true
[history]
db = "{tmp_path / 'h.db'}"
{line}""")
    return f


def _cycles(station: Path, plc_side, port: int) -> list:
    """`run --config station` while ``plc_side(port, N, proc)`` plays the PLC; the verdicts it read, in order."""
    p = subprocess.Popen([sys.executable, "-m", "edge_stpm.cli", "run", "--config", str(station), "--max-frames",
                          str(N)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        seen, _ = plc_side(port, N, p, check_busy=False)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    return [s[1] for s in seen]


@pytest.mark.skipif(shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
                    reason="mosquitto not installed")
def test_review_reaches_modbus_bit6_opcua_mqtt_record_and_history(exported: Path, synth_dir: Path,
                                                                   tmp_path: Path) -> None:
    pytest.importorskip("pymodbus")
    pytest.importorskip("asyncua")
    from helpers.line_parts import OPCUA_USER, Subscriber, broker, free_port, image_folder, modbus_cycles, opcua_cycles

    images = image_folder(synth_dir, tmp_path / "parts", N)
    band, want = _expected(exported, images)
    assert "REVIEW" in want and "OK" in want
    with broker(tmp_path) as b:
        sub = Subscriber(b.port, "inspect/#")
        assert sub.subscribed.wait(10)
        port = free_port()
        seen = _cycles(_station(tmp_path, exported, band, f'[modbus]\nbind = "127.0.0.1:{port}"\n[mqtt]\n'
                                                          f'url = "mqtt://127.0.0.1:{b.port}"\n'
                                                          f'topic = "inspect/{{source}}"\n'
                                                          f'outbox = "{tmp_path / "outbox.db"}"\n'), modbus_cycles, port)
        sub.wait_for(N, 20)
        sub.close()
    assert seen == want, "Modbus: bit 6 on exactly the parts in the band, OK/NG bits on the rest"
    con = sqlite3.connect(str(tmp_path / "h.db"))
    rows = con.execute("SELECT result_id, verdict, frame FROM inspections ORDER BY id").fetchall()
    con.close()
    assert [r[1] for r in rows] == want and [r[2] for r in rows] == list(range(N))
    mq = {m["result_id"]: m["verdict"] for m in sub.messages}
    assert mq == {r[0]: r[1] for r in rows}, "MQTT carries the same verdict as the record"
    h = runner.invoke(app, ["history", "--history-db", str(tmp_path / "h.db"), "--verdict", "REVIEW", "--format",
                            "json", "--limit", "1000"])
    assert h.exit_code == 0, h.output
    assert sorted(x["result_id"] for x in json.loads(h.output)) == sorted(r[0] for r in rows if r[1] == "REVIEW")

    # OPC UA: the same parts again (a second run on the same record), the verdict read by a real asyncua client
    port = free_port()
    assert _cycles(_station(tmp_path, exported, band, f'[opcua]\nbind = "127.0.0.1:{port}"\nuser = "{":".join(OPCUA_USER)}"\n'), opcua_cycles,
                   port) == want


def test_review_band_in_the_recipe_and_its_range(exported: Path, synth_dir: Path, tmp_path: Path) -> None:
    """A part under the threshold but in the band is REVIEW (not OK, not NG); the band's range is checked in one
    line naming its key."""
    from edge_stpm.runtime.station import config
    from edge_stpm.runtime.station.recipes import StationInspector, load_recipes

    st = config.parse({"recipes": [{"name": "a", "index": 0, "model": str(exported)}]}, tmp_path)
    plain = StationInspector(load_recipes(st.recipes, st.recipes[0], "onnxruntime"))
    # the good part scoring highest below the threshold (on the score scale a good part may score below 0)
    frames = [cv2.imread(str(p)) for p in sorted((synth_dir / "test" / "good").glob("*.png"))]
    scored = sorted(((r.normalised_score, i) for i, r in enumerate(map(plain.inspect, frames))
                     if r.normalised_score < 1), reverse=True)
    frame = frames[scored[0][1]]
    base = plain.inspect(frame)
    plain.close()
    assert base.verdict == "OK" and 0 < base.normalised_score < 1
    band = base.normalised_score * 0.9
    st = config.parse({"recipes": [{"name": "a", "index": 0, "model": str(exported), "review_band": band}]}, tmp_path)
    insp = StationInspector(load_recipes(st.recipes, st.recipes[0], "onnxruntime"))
    r = insp.inspect(frame)
    good = insp.recipes.summary()[0]["good_scores"]  # where to start a band: the calibration's p50 / p95
    md = insp.recipes.active.inspector.backend.metadata["thresholds"]
    # on the score scale the calibration's good median is 0 by definition
    assert good["scale"] == "good" and good["p50"] == pytest.approx(0.0, abs=1e-4) and 0 < good["p95"] < 1
    insp.close()
    assert r.verdict == "REVIEW" and not r.ng and r.review and any("review band" in n for n in r.notes)
    for bad in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(Exception) as e:
            config.parse({"recipes": [{"name": "a", "index": 0, "model": str(exported), "review_band": bad}]},
                         tmp_path)
        assert "recipes[0].review_band" in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_schema_2_record_is_migrated_and_takes_review(tmp_path: Path) -> None:
    """A record written before REVIEW (schema 2, its CHECK allows OK and NG) is copied into schema 3 when opened
    for writing: every row kept, REVIEW then accepted."""
    from edge_stpm.runtime.loop.sinks import record

    db = tmp_path / "old.db"
    con = sqlite3.connect(str(db))
    con.executescript(record.SCHEMA.replace("'NG', 'REVIEW'", "'NG'"))
    con.execute(f"PRAGMA application_id={record.APPLICATION_ID}")
    con.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    cols = ", ".join(record.COLUMNS_V3)
    for i, v in enumerate(("OK", "NG", "OK")):
        con.execute(f"INSERT INTO inspections ({cols}) VALUES ({', '.join('?' * len(record.COLUMNS_V3))})",
                    (f"r{i}", 1.0 + i, "t", 0, "s", i, None, v, 0.1, 0.2, 1.0, 1.0, "sha", None, 1.0, None, None,
                     None, None))
    con.commit()
    with pytest.raises(sqlite3.IntegrityError):
        con.execute(f"INSERT INTO inspections ({cols}) VALUES ({', '.join('?' * len(record.COLUMNS_V3))})",
                    ("x", 9.0, "t", 0, "s", 9, None, "REVIEW", 0.1, 0.2, 1.0, 1.0, "sha", None, 1.0, None, None,
                     None, None))
    con.close()
    con = record.connect(db)
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(record.SCHEMA_VERSION)
    assert [r[0] for r in con.execute("SELECT verdict FROM inspections ORDER BY id")] == ["OK", "NG", "OK"]
    with con:
        con.execute(f"INSERT INTO inspections ({cols}) VALUES ({', '.join('?' * len(record.COLUMNS_V3))})",
                    ("x", 9.0, "t", 0, "s", 9, None, "REVIEW", 0.1, 0.2, 1.0, 1.0, "sha", None, 1.0, None, None,
                     None, None))
    assert con.execute("SELECT COUNT(*) FROM inspections").fetchone()[0] == 4
    con.close()
