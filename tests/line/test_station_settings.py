"""Recipe settings changed from the web app (threshold, minimum defect area, review band) are stored where the next
start finds them (the model store's settings.json) and applied over the station file's values, said in one line; a
reload of the station file that changes the recipe makes the file the truth again."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_stpm.runtime.station import config

from test_station import _control


def test_settings_from_the_web_app_survive_a_restart(exported: Path, tmp_path: Path) -> None:
    from edge_stpm.runtime.web.preview import apply_settings

    insp, control = _control(tmp_path, exported)
    before = control.recipes.active.inspector.image_threshold
    apply_settings(control, {"recipe": "a", "threshold": 1.3, "review_band": 0.5, "min_defect_area": 40},
                   "engineer@127.0.0.1")
    changed = control.recipes.active.inspector.image_threshold
    assert changed != pytest.approx(before)
    stored = json.loads((tmp_path / "models" / "settings.json").read_text())
    assert stored["a"]["threshold"] == 1.3 and stored["a"]["by"] == "engineer@127.0.0.1"
    insp.close()

    said: list[str] = []
    insp2, control2 = _control(tmp_path, exported)  # the next start: same store, same station file
    control2.restore_settings(said.append)
    cfg = control2.recipes.active.cfg
    assert (cfg.threshold, cfg.review_band, cfg.min_defect_area) == (1.3, 0.5, 40)
    assert control2.recipes.active.inspector.image_threshold == pytest.approx(changed)
    assert len(said) == 1 and "set from the web app by engineer@127.0.0.1" in said[0]

    # a station file reload that changes this recipe: the file's values again, the stored ones forgotten
    new = config.parse({"recipes": [{"name": "a", "index": 0, "model": str(exported), "threshold": 1.1}]}, tmp_path)
    control2.station = config.parse({"recipes": [{"name": "a", "index": 0, "model": str(exported)}]}, tmp_path)
    control2.reload(new)
    assert control2.recipes.active.cfg.threshold == 1.1 and control2.recipes.active.cfg.review_band is None
    assert "a" not in json.loads((tmp_path / "models" / "settings.json").read_text())
    insp2.close()


def test_damaged_stored_settings_leave_the_station_files_values(exported: Path, tmp_path: Path) -> None:
    insp, control = _control(tmp_path, exported)
    (tmp_path / "models" / "settings.json").write_text('{"a": {"threshold": -5}}')
    said: list[str] = []
    control.restore_settings(said.append)
    assert control.recipes.active.cfg.threshold == 1.0 and "not applied" in said[0]
    (tmp_path / "models" / "settings.json").write_text("not json")
    control.restore_settings(said.append)
    assert len(said) == 1
    insp.close()
