"""What the quality engineer's console reads about the models: one line per model (active version, threshold, NG
rates, drift verdict) and one model's versions, calibration history and recent scores. Read-only: every change
the console offers goes through the same core parts as the API's routes."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from ..errors import NotFound
from ..settings import Settings
from ..storage import ModelState, ModelStore, RecordFilter, RecordStore, Registry
from ..storage.records import parse_moment
from ..storage.reviews import ReviewStore
from .drift import DriftLimits, analyse_drift
from .request import checked_recipe

DAY = dt.timedelta(days=1)
WEEK = dt.timedelta(days=7)
DRIFT_WINDOW = WEEK
"""The window the console's drift verdict looks at, as ``bdi models drift`` does by default."""
PENDING_SHOWN = 999
"""The overview counts a model's review queue up to this many (a page of the queue, an index scan), then says more."""


class ModelOverview:
    def __init__(self, settings: Settings, store: ModelStore, registry: Registry, records: RecordStore) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.records = records
        self.reviews = ReviewStore(registry.engine)

    def limits(self) -> DriftLimits:
        return DriftLimits(self.settings.drift_min_inspections, self.settings.drift_max_shift,
                           self.settings.drift_max_near_increase)

    def _ng_rate(self, state: ModelState, since: dt.datetime) -> dict[str, int]:
        """Decided inspections and NG among them since ``since`` (two indexed counts)."""
        where = RecordFilter(recipe_id=state.recipe_id, role_id=state.role_id, roi_id=state.roi_id, since=since)
        ok = self.records.count(dataclasses.replace(where, decision="ok"))
        ng = self.records.count(dataclasses.replace(where, decision="ng"))
        return {"n": ok + ng, "ng": ng}

    def _pending(self, state: ModelState) -> dict[str, Any]:
        """How many of the model's records wait in the review queue (``more``: over PENDING_SHOWN)."""
        where = RecordFilter(recipe_id=state.recipe_id, role_id=state.role_id, roi_id=state.roi_id)
        items, next_cursor = self.reviews.queue(where, PENDING_SHOWN)
        return {"n": len(items), "more": next_cursor is not None}

    def _shadow(self, state: ModelState) -> dict[str, Any] | None:
        """The shadow version and its agreement with the answered decisions since it was set (None: no shadow)."""
        if state.shadow is None:
            return None
        where = RecordFilter(recipe_id=state.recipe_id, role_id=state.role_id, roi_id=state.roi_id,
                             since=parse_moment(state.shadow.since))
        tally = self.reviews.shadow_tally(where, state.shadow.version)
        return {"version": state.shadow.version, "since": state.shadow.since, **dataclasses.asdict(tally)}

    def _drift(self, state: ModelState, now: dt.datetime) -> tuple[dict[str, Any] | None, Any]:
        if state.active_version is None or state.calibration is None:
            return None, None
        return analyse_drift(self.store, self.records, state, now - DRIFT_WINDOW, now, self.limits())

    def _line(self, state: ModelState, now: dt.datetime, drift: dict[str, Any] | None) -> dict[str, Any]:
        calibration = state.calibration.values if state.calibration is not None else None
        return {
            "recipe_id": state.recipe_id, "role_id": state.role_id, "roi_id": state.roi_id,
            "version": state.active_version,
            "threshold": calibration["threshold"] if calibration else None,
            "calib_stale": state.calib_stale,
            "day": self._ng_rate(state, now - DAY), "week": self._ng_rate(state, now - WEEK),
            "drift": drift["verdict"] if drift else None,
            "drift_reasons": drift["reasons"] if drift else [],
            "pending_reviews": self._pending(state),
            "shadow": self._shadow(state),
        }

    def models(self, now: dt.datetime | None = None) -> list[dict[str, Any]]:
        """Every model, the default namespace first, with what the overview shows of it."""
        now = now or dt.datetime.now(dt.timezone.utc)
        return [self._line(state, now, self._drift(state, now)[0]) for state in self.registry.states()]

    def model(self, role_id: str, roi_id: str, *, recipe_id: str | None = None,
              now: dt.datetime | None = None) -> dict[str, Any]:
        """One model: its line, its versions (newest first), its calibrations with the scores they were made
        from (newest first), and the drift report with the series of the last ``DRIFT_WINDOW``."""
        recipe = checked_recipe(role_id, roi_id, recipe_id)
        state = self.registry.state_or_import(self.store, role_id, roi_id, recipe_id=recipe)
        if state is None:
            raise NotFound(f"There is no model role_id={role_id!r}, roi_id={roi_id!r} in recipe {recipe!r}; the "
                           "console's overview lists the models this service knows.")
        now = now or dt.datetime.now(dt.timezone.utc)
        versions, _ = self.registry.history(role_id, roi_id, recipe_id=recipe)
        calibrations = [
            {**entry["calibration"], "uid": entry.get("uid"), "created_at": entry.get("created_at"),
             "source": entry.get("source"), "memory_version": entry.get("memory_version"),
             "ok_scores": entry.get("ok_scores") or [], "ng_scores": entry.get("ng_scores") or []}
            for entry in reversed(self.store.calibration_history(self.store.root / state.folder))
        ]
        drift, series = self._drift(state, now)
        return {"line": self._line(state, now, drift), "versions": versions, "calibrations": calibrations,
                "drift": drift, "series": series}
