"""Drift of one model: do the scores of recent inspections still look like the OK scores it was
calibrated on? A slow change of lighting or castings moves OK scores towards the threshold long before
it turns into a wave of false rejects; this says so while there is time to refit or recalibrate.

Compared, over a window (``since``..``until``) of the records the active memory version judged, with
the calibration's OK scores (stored with each calibration in history.jsonl since records exist; older
calibrations keep only their mean and ``p99_ok``, and the report says it compares with those):
- the median, p95 and p99 of the OK-decided scores, and the median of all scores;
- the NG rate per day;
- the share of scores within 10 % below the threshold ([0.9 t, t)) against the calibration's share.

Verdict (thresholds from settings or the command's options, README "Traceability and monitoring"):
``too few inspections`` below ``min_inspections`` records; ``drifting`` when the median of all scores
moved by more than ``max_shift`` of the gap between the calibration's OK median and the threshold (either
way: falling scores can mean a blurred camera), or when the near-threshold share grew by more than
``max_near_increase``; else ``stable``. The median is taken of all scores, not of the OK-decided ones: a
drift pushes OK parts over the threshold and out of the OK-decided set, which would then look steady just
when good parts start to be rejected (real defects are too rare to move a median).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import numpy as np

from ..storage import ModelState, ModelStore, RecordFilter, RecordStore

STABLE, DRIFTING, TOO_FEW = "stable", "drifting", "too few inspections"
NEAR_BAND = 0.10
"""Scores in [(1 - NEAR_BAND) * threshold, threshold) are "near the threshold"."""


@dataclasses.dataclass(frozen=True)
class DriftLimits:
    min_inspections: int = 30
    max_shift: float = 0.25
    max_near_increase: float = 0.10


@dataclasses.dataclass(frozen=True)
class DriftSeries:
    """What the plot draws: every recent record, and the calibration's references."""

    times: list[dt.datetime]
    scores: list[float]
    decisions: list[str | None]
    threshold: float
    reference_median: float


def _stats(scores: np.ndarray) -> dict[str, float | None]:
    if scores.size == 0:
        return {"median": None, "p95": None, "p99": None}
    return {name: float(np.percentile(scores, q)) for name, q in (("median", 50), ("p95", 95), ("p99", 99))}


def near_share(scores: np.ndarray, threshold: float) -> float | None:
    if scores.size == 0:
        return None
    return float(np.mean((scores >= (1 - NEAR_BAND) * threshold) & (scores < threshold)))


def calibration_scores(store: ModelStore, state: ModelState) -> list[float] | None:
    """The OK scores the active calibration was made from, when its history entry stored them."""
    if state.calibration is None or state.calibration.uid is None:
        return None
    for entry in store.calibration_history(store.root / state.folder):
        if entry.get("uid") == state.calibration.uid and isinstance(entry.get("ok_scores"), list):
            return [float(score) for score in entry["ok_scores"]]
    return None


def analyse_drift(
    store: ModelStore, records: RecordStore, state: ModelState, since: dt.datetime, until: dt.datetime,
    limits: DriftLimits,
) -> tuple[dict[str, Any], DriftSeries]:
    """The report (JSON-ready) and the series to plot; ``state`` must have an active version and a calibration."""
    assert state.calibration is not None and state.active_version is not None
    calibration = state.calibration.values
    threshold = float(calibration["threshold"])
    rows = records.scores(RecordFilter(recipe_id=state.recipe_id, role_id=state.role_id, roi_id=state.roi_id,
                                       version=state.active_version, since=since, until=until))
    times = [row[0] for row in rows]
    scores = np.array([row[1] for row in rows], dtype=np.float64)
    decisions = [row[2] for row in rows]
    ok = scores[np.array([d == "ok" for d in decisions], dtype=bool)]
    stored = calibration_scores(store, state)
    notes = []
    if stored:
        reference = np.array(stored, dtype=np.float64)
        reference_stats = {**_stats(reference), "n": len(stored)}
        centre = reference_stats["median"]
        reference_near = near_share(reference, threshold)
    else:
        centre = calibration.get("ok_mean")
        reference_stats = {"mean": centre, f"p{calibration.get('score_percentile')}": calibration.get("p99_ok"),
                           "n": None}
        reference_near = None
        notes.append("The active calibration stored no OK scores (made before inspection records existed): recent "
                     "scores are compared with its OK mean and percentile, and the near-threshold check is skipped. "
                     "Recalibrate to compare with the full OK distribution.")
    recent = _stats(ok)
    median_all = float(np.median(scores)) if scores.size else None
    recent_near = near_share(scores, threshold)
    gap = threshold - centre if centre is not None else None
    shift = (median_all - centre) / gap if median_all is not None and gap and gap > 0 else None

    reasons = []
    if scores.size < limits.min_inspections:
        verdict = TOO_FEW
        reasons.append(f"{scores.size} inspection(s) of version {state.active_version} since {_iso(since)} (every "
                       f"decision: {ok.size} OK, {decisions.count('ng')} NG, {decisions.count(None)} uncalibrated); at "
                       f"least {limits.min_inspections} are needed for a verdict.")
    else:
        if shift is not None and abs(shift) > limits.max_shift:
            reasons.append(f"The median of all {scores.size} scores (every decision) moved from {centre:.4g} (the "
                           f"calibration's OK {'median' if stored else 'mean'}) to {median_all:.4g}: "
                           f"{shift:+.0%} of the gap to the threshold {threshold:.4g} (limit ±{limits.max_shift:.0%}).")
        if recent_near is not None and reference_near is not None \
                and recent_near - reference_near > limits.max_near_increase:
            reasons.append(f"{recent_near:.0%} of the scores lie within {NEAR_BAND:.0%} below the threshold, "
                           f"against {reference_near:.0%} of the calibration's OK scores (limit "
                           f"+{limits.max_near_increase:.0%}).")
        verdict = DRIFTING if reasons else STABLE
        if reasons:
            reasons.append("Find the cause (lighting, camera, castings), then refit on current OK parts or recalibrate.")
    per_day: dict[str, list[int]] = {}
    for stamp, decision in zip(times, decisions):
        if decision is not None:
            counts = per_day.setdefault(stamp.date().isoformat(), [0, 0])
            counts[0] += 1
            counts[1] += decision == "ng"
    report = {
        "role_id": state.role_id,
        "roi_id": state.roi_id,
        "recipe_id": state.recipe_id,
        "version": state.active_version,
        "since": _iso(since),
        "until": _iso(until),
        "verdict": verdict,
        "reasons": reasons,
        "notes": notes,
        "threshold": threshold,
        "calibration": {"id": state.calibration.uid, "created_at": state.calibration.created_at,
                        "ok_scores_stored": bool(stored), **reference_stats, "near_threshold_share": reference_near},
        "recent": {"n": len(rows), "n_ok": int(ok.size), "n_ng": decisions.count("ng"),
                   "n_uncalibrated": decisions.count(None), **recent, "median_all": median_all,
                   "near_threshold_share": recent_near},
        "median_shift": shift,
        "ng_rate_per_day": [{"day": day, "n": n, "ng": ng, "rate": ng / n} for day, (n, ng) in sorted(per_day.items())],
        "limits": dataclasses.asdict(limits),
    }
    series = DriftSeries(times, scores.tolist(), decisions, threshold,
                         centre if centre is not None else float("nan"))
    return report, series


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")

