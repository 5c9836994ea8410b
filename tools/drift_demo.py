"""Drift demo: a week of a line whose lamp slowly dims, recorded through the service, then the verdict
and plot of ``bdi models drift``.

    .venv/bin/python tools/drift_demo.py --models-dir models --role Inspection --roi annulus \
        --plot tools/demo/drift.png

The model must be fitted (the README's synth -> fit demo). As a line does after its first shift, the demo
first calibrates it on ``--calibration-parts`` new OK parts under full light. Then each day's parts are
new synthetic OK samples (tools/synth.py) lit by that day's lamp: full brightness on the first day,
``--dimming`` less on the last. Every part is scored and recorded as /infer does (source ``cli``, part
ids ``demo-DDD-NN``). The run takes minutes, not a week, so the record times are then spread over the
past ``--days`` days, one simulated day per day: the only step that is not the service's own.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
import uuid
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import update

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.core import InspectionService, RequestContext, Upload
from service.quality import DriftLimits, analyse_drift, plot_drift
from service.settings import Settings
from service.storage import RecordFilter
from service.storage.registry.tables import InspectionRow
from tools.synth import make_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--role", default="Inspection")
    parser.add_argument("--roi", default="annulus", help="also the synthetic ROI kind: annulus or rect")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--per-day", type=int, default=15)
    parser.add_argument("--dimming", type=float, default=0.15, help="light lost by the last day (0.15: 15%%)")
    parser.add_argument("--calibration-parts", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7, help="not the dataset's seed: parts the memory never saw")
    parser.add_argument("--plot", type=Path, default=Path("drift.png"))
    args = parser.parse_args()

    service = InspectionService(Settings.load(models_dir=args.models_dir))
    service.start()
    try:
        state = service.model_state(args.role, args.roi)
        if state is None or state.active is None:
            raise SystemExit(f"{args.role} / {args.roi} is not fitted; run the README demo first.")
        run = uuid.uuid4().hex
        context = RequestContext(correlation_id=run, source="cli", record=True)

        def score(index: int, gain: float, part_id: str | None = None) -> float:
            sample = make_sample(args.roi, args.size, args.seed, index)
            image = np.clip(sample.image.astype(np.float32) * gain, 0, 255).astype(np.uint8)
            data = cv2.imencode(".png", image)[1].tobytes()
            inspection = service.inspect(args.role, args.roi, sample.mm_per_px, Upload("part.png", data),
                                         json.dumps(sample.shape), dataclasses.replace(context, part_id=part_id,
                                                                                       record=part_id is not None))
            return inspection.response["score"]

        first_shift = [score(100_000 + i, 1.0) for i in range(args.calibration_parts)]
        values = service.calibrate(args.role, args.roi, first_shift, context=context)
        print(f"calibrated on {len(first_shift)} OK parts: threshold {values['threshold']:.4f}", flush=True)
        for day in range(args.days):
            gain = 1 - args.dimming * day / max(args.days - 1, 1)
            for part in range(args.per_day):
                score(day * args.per_day + part, gain, f"demo-{day:03d}-{part:02d}")
            print(f"day {day + 1:2d}/{args.days}: lamp at {gain:.0%}", flush=True)
        service.recorder.flush()
        midnight = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        start = midnight - dt.timedelta(days=args.days)  # the simulated days end yesterday, one shift (6-18 h) each
        records = [record for record in service.records.iterate(RecordFilter(role_id=args.role, roi_id=args.roi))
                   if record.correlation_id == run]
        with service.records.engine.begin() as connection:
            for record in records:
                day, part = (int(x) for x in record.part_id.split("-")[1:])
                when = start + dt.timedelta(days=day, hours=6 + 12 * part / args.per_day)
                connection.execute(update(InspectionRow).where(InspectionRow.id == record.id).values(created_at=when))
        now = dt.datetime.now(dt.timezone.utc)
        report, series = analyse_drift(service.store, service.records, service.model_state(args.role, args.roi),
                                       start, now, DriftLimits())
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot_drift(series, report, args.plot)
    finally:
        service.close()
    print(json.dumps({key: report[key] for key in ("verdict", "reasons", "median_shift", "threshold")}, indent=2))
    print(json.dumps({"calibration": report["calibration"], "recent": report["recent"]}, indent=2))
    print(f"plot: {args.plot}  (`bdi models drift {args.role} {args.roi} --since {args.days + 1}d` says the same)")


if __name__ == "__main__":
    main()
