"""Old model against new on the reviewed set (``edge-stpm evaluate --compare OLD NEW --data DIR``).

Both models (a checkpoint, a bundle folder, a graph: anything ``run`` takes) score every image of ``DIR/test/``
(the held-out share of a ``dataset --from-history`` folder: reviewed good parts in ``test/good``, confirmed defects
in ``test/<type>``), each at its own stored threshold. Reported per model: the false-call rate (good parts judged
NG), the recall on the confirmed defects, per defect type, and image AUROC where both kinds are there. A figure
shows the two side by side and each model's scores against its threshold.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_stpm.common.errors import UserError
from edge_stpm.common.files import write_json
from edge_stpm.common.images import labelled_test_images, read_image
from edge_stpm.runtime.inspector import Inspector
from edge_stpm.training.figures import _save, plt
from edge_stpm.training.metrics import image_auroc


def _figures(models: dict[str, Path], items: list[Any]) -> dict[str, Any]:
    labels = np.array([i.label for i in items])
    out: dict[str, Any] = {}
    frames = [read_image(i.path) for i in items]
    for name, path in models.items():
        insp = Inspector.load(path, "auto")
        try:
            norm = np.array([insp.inspect(f).normalised_score for f in frames])
        finally:
            insp.close()
        ng = norm >= 1.0
        good, bad = labels == 0, labels == 1
        per = {t: float(ng[[i.defect == t for i in items]].mean()) for t in sorted({i.defect for i in items if i.label})}
        out[name] = {"model": str(path), "good": int(good.sum()), "defects": int(bad.sum()),
                     "false_calls": int((ng & good).sum()), "false_call_rate": float(ng[good].mean()) if good.any() else None,
                     "missed": int((~ng & bad).sum()), "recall": float(ng[bad].mean()) if bad.any() else None,
                     "recall_per_defect": per,
                     "image_auroc": image_auroc(norm, labels) if good.any() and bad.any() else None,
                     "normalised_scores": [round(float(x), 5) for x in norm]}
    return out


def compare(old: Path, new: Path, data: Path, out_dir: Path) -> dict[str, Any]:
    items = labelled_test_images(Path(data))
    for p in (old, new):
        if not Path(p).exists():
            raise UserError(f"no model at {p}")
    res = {"data": str(data), "images": [str(i.path) for i in items], **_figures({"old": old, "new": new}, items)}
    out_dir = Path(out_dir)
    write_json(out_dir / "compare.json", res)
    res["figure"] = str(figure(res, [i.label for i in items], out_dir / "compare.png"))
    return res


def figure(res: dict[str, Any], labels: list[int], path: Path) -> Path:
    """Left: false-call rate and recall, old vs new. Right: every image's normalised score per model (good grey,
    defect red) against the threshold (1.0)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    keys = [("false_call_rate", "false calls (good parts NG)"), ("recall", "recall (confirmed defects)")]
    x = np.arange(len(keys))
    for j, (name, colour) in enumerate((("old", "#8a8a8a"), ("new", "#2a7ab8"))):
        vals = [res[name][k] if res[name][k] is not None else 0.0 for k, _ in keys]
        bars = a.bar(x + (j - 0.5) * 0.38, vals, 0.38, label=name, color=colour)
        a.bar_label(bars, labels=[f"{v:.0%}" for v in vals], fontsize=8)
    a.set_xticks(x, [t for _, t in keys], fontsize=8)
    a.set_ylim(0, 1.12)
    a.legend(fontsize=8)
    a.set_title(f"on {res['old']['good']} reviewed good, {res['old']['defects']} confirmed defects", fontsize=9)
    lab = np.array(labels)
    rng = np.random.default_rng(0)
    for j, name in enumerate(("old", "new")):
        s = np.array(res[name]["normalised_scores"])
        jitter = j + rng.uniform(-0.15, 0.15, len(s))
        b.scatter(jitter[lab == 0], s[lab == 0], s=10, c="#8a8a8a", label="good" if j == 0 else None)
        b.scatter(jitter[lab == 1], s[lab == 1], s=10, c="#d0342c", label="defect" if j == 0 else None)
    b.axhline(1.0, color="k", ls=":", lw=1, label="threshold")
    b.set_xticks([0, 1], ["old", "new"])
    b.set_yscale("log")
    b.yaxis.set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
    b.yaxis.set_minor_formatter(plt.matplotlib.ticker.NullFormatter())
    b.set_ylabel("normalised score (own threshold = 1)")
    fig.subplots_adjust(wspace=0.3)
    b.legend(fontsize=8)
    return _save(fig, path)
