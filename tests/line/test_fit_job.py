"""The box's fit as a background job (runtime/learn/jobs.py, the web app's /api/fit): progress, a report card, deploy
through the station's verify → self-test → swap path or discard; cancel leaves nothing; collections and teacher
packs are found only where the station keeps them."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from conftest import SIZE
from edge_stpm.common.errors import UserError
from edge_stpm.runtime.learn.fit import FitConfig, fit
from edge_stpm.runtime.learn.jobs import FitJob, collection_folder, teacher_for


@pytest.fixture(scope="module")
def pack(mobilenet_weights: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edge_stpm.training.export.teacher_pack import write_teacher_pack

    out = tmp_path_factory.mktemp("jobpack") / "teacher"
    write_teacher_pack(out, "mobilenet_v2", SIZE)
    return out


def _wait(job: FitJob, timeout: float = 300.0) -> dict:
    t0 = time.monotonic()
    while job.status()["state"] == "running" and time.monotonic() - t0 < timeout:
        time.sleep(0.2)
    return job.status()


def test_fit_job_report_card_then_deploy_as_a_new_version(pack: Path, synth_dir: Path, exported: Path,
                                                          tmp_path: Path) -> None:
    from test_station import _control

    insp, control = _control(tmp_path, exported)
    job = FitJob(tmp_path / "fits")
    job.start("a", pack, synth_dir, "engineer@127.0.0.1")
    with pytest.raises(UserError, match="one at a time"):
        job.start("a", pack, synth_dir, "engineer@127.0.0.1")
    st = _wait(job)
    assert st["state"] == "done", st
    card = st["card"]
    assert card["no_defect_check"] > 0.9 and card["entries"] > 0 and card["held_out"] == 12
    assert card["good_p50"] == pytest.approx(0.0, abs=1e-6) and 0 < card["good_p95"] < 1
    recipe, bundle = job.take()
    assert job.status()["state"] == "idle" and recipe == "a"
    r = control.deploy(recipe, bundle, "engineer@127.0.0.1", "fit on the box")
    assert r["after"]["version"] == 1 and control.recipes.active.inspector.backend.metadata["head"] == "memory"
    insp.close()


def test_update_job_with_reviewed_parts_compares_then_deploys(pack: Path, synth_dir: Path, exported: Path,
                                                               tmp_path: Path) -> None:
    """The feedback cycle on the box: drifted good parts reviewed good (and one reviewed defect) → the live fitted
    model updated as a job → the card compares both models on the reviewed parts → deployed as the next version;
    the dataset folder made for the job is gone when it ends. Bounds: the live model judges every drifted good part
    NG (measured 2026-12-07: all of them), the updated one at most 1 of them; the defect stays caught."""
    import cv2
    import numpy as np

    from test_station import _control

    insp, control = _control(tmp_path, exported)
    live = tmp_path / "live"
    fit(FitConfig(pack, synth_dir, live))
    control.deploy("a", live, "engineer@127.0.0.1", "fit on the box")
    live_path = Path(control.recipes.by_name("a").cfg.model)
    data = tmp_path / "fits" / ".reviewed-a"
    lut = (255.0 * (np.arange(256) / 255.0) ** 1.6).round().astype(np.uint8)
    for i, p in enumerate(sorted((synth_dir / "train" / "good").glob("*.png"))[:20]):
        where = data / ("test" if i % 5 == 0 else "train") / "good"
        where.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(where / p.name), cv2.GaussianBlur(cv2.LUT(cv2.imread(str(p)), lut), (0, 0), 1.5))
    (data / "test" / "crack").mkdir(parents=True)
    shutil.copy(sorted((synth_dir / "test" / "crack").glob("*.png"))[0], data / "test" / "crack" / "x.png")
    job = FitJob(tmp_path / "fits")
    job.start_update("a", live_path, data, "engineer@127.0.0.1", owned=True)
    st = _wait(job)
    assert st["state"] == "done", st
    c = st["card"]["compare"]
    assert c["good"] == 20 and c["held_out_good"] == 4 and c["defects"] == 1  # test/good: the 4 not learned
    assert c["live"]["held_out_good_ng"] == 4 and c["new"]["held_out_good_ng"] <= c["new"]["good_ng"], c
    assert c["live"]["good_ng"] == 20 and c["new"]["good_ng"] <= 1, c
    assert c["live"]["defects_ng"] == 1 and c["new"]["defects_ng"] == 1, c
    assert st["card"]["update"]["entries_after"] > st["card"]["update"]["entries_before"]
    assert not data.exists()
    recipe, bundle = job.take()
    r = control.deploy(recipe, bundle, "engineer@127.0.0.1", "update on the box")
    assert r["after"]["version"] == 2
    insp.close()


def test_cancel_leaves_nothing_and_discard_removes_the_bundle(pack: Path, synth_dir: Path, tmp_path: Path) -> None:
    job = FitJob(tmp_path / "fits")
    job.cancel_event.set()  # cancelled before its first progress step: deterministic
    job.state = {"state": "running"}
    out = tmp_path / "fits" / "a-x"
    job._run(lambda o: fit(FitConfig(pack, synth_dir, o), job._progress), out)
    assert job.status()["state"] == "cancelled" and not out.exists()
    assert not (tmp_path / "fits").exists() or not list((tmp_path / "fits").iterdir())
    job.cancel_event.clear()
    job.state = {"state": "idle"}
    job.start("a", pack, synth_dir, "engineer@127.0.0.1")
    st = _wait(job)
    assert st["state"] == "done" and Path(st["bundle"]).is_dir()
    job.discard()
    assert not Path(st["bundle"]).exists() and job.status()["state"] == "idle"
    with pytest.raises(UserError, match="no finished fit"):
        job.take()


def test_collections_and_teacher_packs_only_where_the_station_keeps_them(pack: Path, synth_dir: Path,
                                                                         tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "collect"
    for name in ("a-20261207T010000Z", "a-20261207T020000Z", "b-20261207T030000Z"):
        (root / name / "train" / "good").mkdir(parents=True)
    assert collection_folder(root, "a").name == "a-20261207T020000Z"
    assert collection_folder(root, "b", "b-20261207T030000Z").name == "b-20261207T030000Z"
    for bad in ("../x", "/etc", ".downloads", "a/../../x", "nope"):
        with pytest.raises(UserError, match="no collection named"):
            collection_folder(root, "a", bad)
    with pytest.raises(UserError, match="collect good parts first"):
        collection_folder(root, "c")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    with pytest.raises(UserError, match="no teacher pack on this box"):
        teacher_for(tmp_path / "some-bundle")
    shutil.copytree(pack, tmp_path / "data" / "edge-stpm" / "teacher")
    assert teacher_for(tmp_path / "some-bundle") == tmp_path / "data" / "edge-stpm" / "teacher"


def test_a_teacher_pack_for_another_model_is_refused_before_any_work(pack: Path) -> None:
    from edge_stpm.runtime.learn.jobs import same_teacher

    same_teacher(pack, {"backbone": "mobilenet_v2", "image_size": SIZE}, "a")  # the same: accepted
    with pytest.raises(UserError, match="for backbone mobilenet_v2, the live model of a has resnet18"):
        same_teacher(pack, {"backbone": "resnet18", "image_size": SIZE}, "a")
    with pytest.raises(UserError, match="image_size"):
        same_teacher(pack, {"backbone": "mobilenet_v2", "image_size": SIZE * 2}, "a")
