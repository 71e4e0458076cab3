"""The typed run configuration (runtime/station/app.RunConfig) is what the station file and the flags both fill:
every run key of the station file names a RunConfig field, and a flag given on the command line wins over the
file's key, never the reverse."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from edge_stpm.runtime.station.app import RunConfig, settle
from edge_stpm.runtime.station.config import RUN_KEYS


def test_every_station_key_sets_a_run_config_field() -> None:
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    assert set(RUN_KEYS.values()) <= fields, set(RUN_KEYS.values()) - fields


def test_a_flag_overrides_the_file_and_not_the_reverse(exported: Path, tmp_path: Path) -> None:
    f = tmp_path / "st.toml"
    f.write_text(f'version = 2\n[[recipes]]\nname = "a"\nindex = 0\nmodel = "{exported}"\n[[sources]]\n'
                 'spec = "x.mp4"\n[run]\nthreads = 1\nalpha = 0.3\n')
    given = {"threads": 2, "alpha": 0.5}
    c = settle(given, f, lambda name: name == "threads")  # --threads 2 typed; --alpha left at its default
    assert c.threads == 2 and c.alpha == 0.3 and c.source == ["x.mp4"]
    c = settle(given, f, lambda name: False)
    assert c.threads == 1 and c.alpha == 0.3
