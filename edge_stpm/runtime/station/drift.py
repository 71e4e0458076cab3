"""Drift of the good parts, seen before false calls pile up: per recipe, over a sliding window of the latest
parts, the median normalised score of all parts and the p95 of the parts not judged NG, against the same figures of
the held-out good images the thresholds were calibrated on (stored in the model's metadata:
``thresholds.good_scores``).

Shifts are measured in units of the calibrated spread, the distance from the good images' p50 to their p95 (a
model whose good parts score 0.90–0.96 of its threshold has little room below it; one scoring 0.3–0.6 has much).
When the median moves by more than ``margin`` spreads (either way), or the p95 rises by more than ``margin``
spreads, the recipe's drift alarm is raised: ``/metrics`` (``edge_stpm_drift_alarm{recipe}``), the web app's health
page, and one log line. It clears (one line) when both are back within half the margin.

Why the median of *all* parts: the parts judged OK alone are cut off at the threshold — as the good parts drift,
they turn NG one after another and leave the window, which then keeps the undrifted ones. The drifting-line scenario
showed it: two first versions tracked only the OK parts (a margin of 0.15 normalised, then 1 spread) and their
alarm never fired (benchmarks/results/feedback/RULE.md). The median stays a figure of the good parts as long as
fewer than half the parts are defective; the p95 would not (5 % defects are the top 5 %), so it is taken over the
parts not judged NG. Defaults from the stable line's noise (window 100: the median's sampling error ≈ 0.06 spreads,
the calibration's own ≈ 0.1): margin 0.5.

Scores are on the model's score scale at the threshold in force (``contract/scale.py``: 0 = the calibration's good
median, 1.0 = threshold), and the calibrated figures are put on the same scale, so a recipe's threshold changes both
the same way; shifts in spreads are the same on any affine scale (a model on the old scale alarms as before).
Models calibrated before p95 was stored compare with their p99 (a higher baseline: the alarm comes later, never
falsely earlier).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from prometheus_client.core import GaugeMetricFamily

from edge_stpm.runtime.loop.sinks.base import Result, Sink


@dataclass(frozen=True)
class DriftPolicy:
    window: int = 100  # the last this many parts, per recipe
    min_parts: int = 50  # no figure (and no alarm) before this many
    margin: float = 0.5  # in calibrated spreads (good p95 − good p50, normalised)


def calibrated(metadata: dict[str, Any]) -> tuple[float, float, str] | None:
    """(good p50, good p95, which stored figure stands for p95) in raw score, from a model's metadata."""
    good = (metadata.get("thresholds") or {}).get("good_scores") or {}
    if "p50" not in good:
        return None
    if "p95" in good:
        return float(good["p50"]), float(good["p95"]), "p95"
    if "p99" in good:
        return float(good["p50"]), float(good["p99"]), "p99"
    return None


class DriftTracker:
    """Thread-safe: ``add`` from the loop's sink thread, ``snapshot`` from the web server."""

    def __init__(self, policy: DriftPolicy, log: Callable[[str], None] = print) -> None:
        self.policy, self.log = policy, log
        self.lock = threading.Lock()
        self.windows: dict[str, deque[tuple[float, bool]]] = {}
        self.state: dict[str, dict[str, Any]] = {}

    def add(self, recipe: str, normalised: float, base_p50: float, base_p95: float, base_kind: str = "p95",
            ng: bool = False) -> None:
        """One part: its normalised score and whether it was judged NG."""
        p = self.policy
        with self.lock:
            w = self.windows.setdefault(recipe, deque(maxlen=p.window))
            w.append((float(normalised), bool(ng)))
            st = self.state.setdefault(recipe, {"recipe": recipe, "alarm": False, "since": None, "alarms": 0})
            st.update(parts=len(w), calibrated_p50=base_p50, calibrated_p95=base_p95, calibrated_from=base_kind)
            if len(w) < p.min_parts:
                return
            a = np.array([x for x, _ in w])
            kept = np.array([x for x, bad in w if not bad])
            med = float(np.median(a))
            p95 = float(np.percentile(kept, 95)) if kept.size else None  # every part NG: the median says it
            spread = max(base_p95 - base_p50, 1e-3)
            shift = max(abs(med - base_p50), p95 - base_p95 if p95 is not None else 0.0) / spread
            st.update(median=med, p95=p95, shift=shift)
            raise_, clear = not st["alarm"] and shift > p.margin, st["alarm"] and shift < p.margin / 2
            if raise_:
                st.update(alarm=True, since=time.time(), alarms=st["alarms"] + 1)
            elif clear:
                st.update(alarm=False, since=None)
        if raise_:
            self.log(f"drift: recipe {recipe} — the good parts' scores moved: median {med:.2f} (calibrated "
                     f"{base_p50:.2f}), p95 {_f(p95)} (calibrated {base_kind} {base_p95:.2f}): {shift:.1f} calibrated "
                     f"spreads, past the margin {p.margin:g}; review recent parts before false calls rise "
                     "(docs/feedback.md)")
        elif clear:
            self.log(f"drift: recipe {recipe} back within the margin (median {med:.2f}, p95 {_f(p95)})")

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(s) for s in self.state.values()]

    def alarmed(self) -> list[str]:
        with self.lock:
            return [k for k, s in self.state.items() if s["alarm"]]


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


class DriftSink(Sink):
    """Feeds the tracker from every verdict (a verdict sink; lossy: a drift figure can miss a part, the line never
    waits for it). ``metadata_of(result)`` gives the metadata of the model that judged the result."""

    name = "drift"
    queue_size = 1024

    def __init__(self, tracker: DriftTracker, metadata_of: Callable[[Result], dict[str, Any]]) -> None:
        self.tracker, self.metadata_of = tracker, metadata_of

    def take(self, r: Result) -> None:
        base = calibrated(self.metadata_of(r))  # a few dict lookups: a deployed model brings its own figures
        if base is None:
            return
        ins = r.inspection
        name = (ins.recipe or {}).get("name") or "model"
        self.tracker.add(name, float(ins.normalised_score), ins.on_scale(base[0]), ins.on_scale(base[1]), base[2],
                         ins.ng)


def metadata_lookup(recipes: Any) -> Callable[[Result], dict[str, Any]]:
    """The metadata of the model that judged a result: its recipe's model (``recipes``: the station's recipe set),
    else the active recipe's."""

    def of(r: Result) -> dict[str, Any]:
        if r.inspection.recipe:
            rec = recipes.by_name(r.inspection.recipe.get("name", ""))
            if rec is not None:
                return dict(rec.inspector.backend.metadata)
        return dict(recipes.active.inspector.backend.metadata)

    return of


class DriftCollector:
    """``/metrics``: per recipe ``edge_stpm_drift_median``, ``_p95``, ``_shift`` and ``_alarm`` (0/1)."""

    def __init__(self, tracker: DriftTracker) -> None:
        self.tracker = tracker

    def collect(self) -> Any:
        fams = {k: GaugeMetricFamily(f"edge_stpm_drift_{k}", doc, labels=["recipe"]) for k, doc in (
            ("median", "Median normalised score of the recent parts"),
            ("p95", "95th percentile of the recent parts not judged NG"),
            ("shift", "How far they moved from the calibration"),
            ("alarm", "1 while the recipe's drift alarm is raised"))}
        for st in self.tracker.snapshot():
            for k in ("median", "p95", "shift"):
                if st.get(k) is not None:
                    fams[k].add_metric([st["recipe"]], st[k])
            fams["alarm"].add_metric([st["recipe"]], 1.0 if st["alarm"] else 0.0)
        yield from fams.values()


def attach(station: Any, recipes: Any, sinks: list[Sink], log: Callable[[str], None]) -> DriftTracker | None:
    """A station run's drift tracking (its ``[drift]`` section; ``recipes``: its recipe set): the sink added to
    ``sinks``; the tracker returned for the HTTP view (``show``)."""
    if station is None or recipes is None or not station.drift.enabled:
        return None
    d = station.drift
    tracker = DriftTracker(DriftPolicy(d.window, d.min_parts, d.margin), log)
    sinks.append(DriftSink(tracker, metadata_lookup(recipes)))
    return tracker
