"""Replay: what would change if a version of a model were active, judged on what the line already inspected.

A replay job scores ``version`` (its own calibration when it has one, else the one its learn proposed, else the
active threshold) on the kept images of the model's last ``last`` records plus every reviewed record with a kept image, each with the record's
shape (null: the whole image) and mm_per_px, and compares with what was answered then (``compare``). It changes
nothing. Its forwards go through the /infer batcher's background lane (``MicroBatcher.extract_later``): /infer
images always go first, and the next replay image is decoded while the current one's forward runs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadRequest, NotFound, ServiceError
from ..pipeline import FeatureExtractor, MicroBatcher, decode_image, image_score, parse_shape, shape_mask
from ..settings import Settings
from ..storage import InspectionRecord, ModelState, Registry
from ..storage.jobs import JobInfo, records_to_replay
from ..validation import DEFAULT_RECIPE
from .inspection import Inspector
from .jobs import JobRunner, Progress
from .memory import ActiveMemories, unknown_version
from .request import LOGGER_NAME, RequestContext, about_model, checked_recipe

logger = logging.getLogger(LOGGER_NAME)

KIND = "replay"
DEFAULT_LAST = 500
MAX_LAST = 10_000


def compare(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The counts of a replay's items: flips of the decision, and what became of the reviewed mistakes (a reviewed
    record's outcome follows from its old decision and the verdict: ng + ok is a false reject, ok + ng a missed
    defect, ng + ng a confirmed NG). A record without an old or a new decision flips nothing."""
    def count(old: str, verdict: str | None, new: str) -> int:
        return sum(1 for item in items if item["old_decision"] == old and item["new_decision"] == new
                   and (verdict is None or item["verdict"] == verdict))

    return {
        "n": len(items),
        "flips": {"ok_to_ng": count("ok", None, "ng"), "ng_to_ok": count("ng", None, "ok")},
        "reviews": {
            "false_rejects_fixed": count("ng", "ok", "ok"),
            "false_rejects_left": count("ng", "ok", "ng"),
            "missed_defects_caught": count("ok", "ng", "ng"),
            "missed_defects_left": count("ok", "ng", "ok"),
            "confirmed_ng_lost": count("ng", "ng", "ok"),
        },
    }


class Replay:
    """Start replay jobs (``start``: queued in the service's job runner; ``run_here``: in the calling thread, the
    CLI) and compute them (``_score_all``)."""

    def __init__(self, settings: Settings, extractor: FeatureExtractor, registry: Registry, records_root: Path,
                 memories: ActiveMemories, inspector: Inspector, batcher: MicroBatcher, jobs: JobRunner) -> None:
        self.settings = settings
        self.extractor = extractor
        self.registry = registry
        self.records_root = records_root
        self.memories = memories
        self.inspector = inspector
        self.batcher = batcher
        self.jobs = jobs

    @about_model
    def start(self, role_id: str, roi_id: str, version: int, last: int = DEFAULT_LAST,
              context: RequestContext = RequestContext(), *, recipe_id: str | None = None) -> dict[str, str]:
        """Queue a replay of ``version``: ``{"job_id"}`` at once (404 unknown model or version, 400 bad ``last``)."""
        state, params = self._checked(role_id, roi_id, version, last, recipe_id)
        job = self.jobs.submit(KIND, (state.recipe_id, role_id, roi_id), params,
                               lambda progress: self._score_all(state, version, last, progress),
                               created_by=context.actor)
        return {"job_id": job.job_id}

    @about_model
    def run_here(self, role_id: str, roi_id: str, version: int, last: int = DEFAULT_LAST,
                 context: RequestContext = RequestContext(), *, recipe_id: str | None = None,
                 on_progress: Progress | None = None) -> JobInfo:
        """The same replay run in the calling thread (the CLI); the finished (or failed) job."""
        state, params = self._checked(role_id, roi_id, version, last, recipe_id)
        return self.jobs.run_here(KIND, (state.recipe_id, role_id, roi_id), params,
                                  lambda progress: self._score_all(state, version, last, progress),
                                  on_progress=on_progress, created_by=context.actor)

    def _checked(self, role_id: str, roi_id: str, version: int, last: int,
                 recipe_id: str | None) -> tuple[ModelState, dict[str, Any]]:
        recipe = checked_recipe(role_id, roi_id, recipe_id)
        if not 1 <= last <= MAX_LAST:
            raise BadRequest(f"last must be 1 to {MAX_LAST} records, not {last}.")
        state = self.registry.state(role_id, roi_id, recipe_id=recipe)
        if state is None or state.active is None:
            where = f" in recipe {recipe!r}" if recipe != DEFAULT_RECIPE else ""
            raise NotFound(f"No model role_id={role_id!r}, roi_id={roi_id!r}{where}; there is nothing to replay.")
        versions, _ = self.registry.history(role_id, roi_id, recipe_id=recipe)
        if version not in {info.version for info in versions}:
            raise unknown_version(state, version)
        return state, {"version": version, "last": last}

    def _score_all(self, state: ModelState, version: int, last: int, progress: Progress) -> dict[str, Any]:
        """The job's work: score every record to replay, one background forward each, the next image decoded
        while the current forward runs."""
        fresh = self.registry.state(state.role_id, state.roi_id, recipe_id=state.recipe_id)  # queued meanwhile
        if fresh is None or fresh.active is None:
            raise NotFound(f"The model role_id={state.role_id!r}, roi_id={state.roi_id!r} was deleted before its "
                           "replay ran.")
        state = fresh
        index = self.memories.of_version(state, version)
        _, calibrations = self.registry.history(state.role_id, state.roi_id, recipe_id=state.recipe_id)
        own = next((c.values for c in calibrations if c.memory_version == version), None)
        active = state.calibration
        # as shadow scoring does: a calibration made for the version, else the one its learn proposed, else active
        judging = own or self.inspector.proposed_calibration(state, version) or (
            active.values if active is not None else None)
        threshold = judging["threshold"] if judging is not None else None
        percentile = (judging.get("score_percentile") if judging is not None else None) \
            or self.settings.score_percentile
        records = records_to_replay(self.registry.engine, state.recipe_id, state.role_id, state.roi_id, last)
        items: list[dict[str, Any]] = []
        progress(0, len(records))
        pending = None
        for record in [*records, None]:
            prepared = self._queue_forward(record) if record is not None else None
            if pending is not None:
                items.append(self._judge(index, *pending, threshold, percentile))
                progress(len(items), len(records))
            pending = prepared
        scored = [item for item in items if item is not None]
        return {
            "version": version,
            "compared_with": {"version": state.active_version,
                              "threshold": active.values["threshold"] if active is not None else None},
            **compare(scored),
            "items": scored,
        }

    def _queue_forward(self, record: InspectionRecord) -> tuple[InspectionRecord, Any, np.ndarray | None, Any]:
        """Decode the record's kept image and queue its forward in the background lane; (record, queued forward,
        mask, size). A kept image deleted since the query (pruned) or unreadable is skipped (logged): no forward, no
        mask; the replay goes on with the others."""
        assert record.image_path is not None
        try:
            data = (self.records_root / record.image_path).read_bytes()
            bgr = decode_image(data, record.image_path, self.settings.max_image_pixels)
        except (OSError, ServiceError) as exc:
            logger.warning("Replay skips inspection %s: its kept image can't be read (%s)", record.id, exc)
            return record, None, None, None
        height, width = bgr.shape[:2]
        shape = parse_shape(json.dumps(record.shape)) if record.shape is not None else None
        return record, self.batcher.extract_later(bgr, background=True), shape_mask(shape, width, height), \
            (width, height)

    def _judge(self, index: Any, record: InspectionRecord, forward: Any, mask: np.ndarray | None, size: Any,
               threshold: float | None, percentile: int) -> dict[str, Any] | None:
        if forward is None or mask is None:
            return None
        amap = self.inspector.anomaly_map(index, forward.result(), *size)
        score = image_score(amap, mask, percentile)
        return {
            "inspection_id": record.id, "old_score": record.score, "old_decision": record.decision,
            "new_score": score, "new_decision": None if threshold is None else ("ng" if score >= threshold else "ok"),
            "verdict": record.review_verdict,
        }
