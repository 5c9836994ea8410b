"""Reviews: a person's verdict on a recorded inspection, the queue of records worth reviewing, and the tally of a
shadow version's decisions against the answered ones.

A review writes three rows in one transaction: the record's current review (``inspections.review_*``, which the
lists filter on), the history row in ``reviews`` (every verdict ever given stays) and the audit row. The queue
pages on the keyset (threshold_distance, id) over the partial index ``ix_inspections_review_queue``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy import Engine, and_, case, func, insert, or_, select, true, update

from ..errors import BadRequest
from .audit import AuditEvent, write_audit
from .records import InspectionRecord, RecordFilter, utc
from .registry.engine import unavailable_as_503
from .registry.tables import REVIEW_QUEUE_WHERE, InspectionRow, Review

_TABLE = InspectionRow.__table__
_REVIEWS = Review.__table__

VERDICTS = ("ok", "ng")
OUTCOMES = ("confirmed_ok", "confirmed_ng", "false_reject", "missed_defect", "labelled_ok", "labelled_ng")
_OUTCOME = {
    ("ok", "ok"): "confirmed_ok",
    ("ng", "ng"): "confirmed_ng",
    ("ng", "ok"): "false_reject",
    ("ok", "ng"): "missed_defect",
    (None, "ok"): "labelled_ok",
    (None, "ng"): "labelled_ng",
}


def review_outcome(decision: str | None, verdict: str) -> str:
    """What a verdict says about the service's decision (CONTRACT-REVIEW.md's table)."""
    return _OUTCOME[(decision, verdict)]


@dataclasses.dataclass(frozen=True)
class ReviewResult:
    inspection_id: str
    verdict: str
    decision: str | None
    outcome: str
    reviewer: str | None
    note: str | None
    reviewed_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class ShadowTally:
    """A shadow version's decisions against the answered ones, over the records it scored."""

    n: int
    agree: int
    ok_to_ng: int
    ng_to_ok: int


class ReviewStore:
    """The review writes and the reads that order or count records by what a review or a shadow said."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = engine.execution_options(sqlite_immediate=True)

    def review(
        self, record_id: str, verdict: str, reviewer: str | None, note: str | None, audit: AuditEvent
    ) -> ReviewResult | None:
        """Give ``record_id`` its current review (replacing one it had), keep it in the history and audit it, in
        one transaction; None when there is no such record."""
        c = _TABLE.c
        now = dt.datetime.now(dt.timezone.utc)
        with unavailable_as_503(self.engine), self._writer.begin() as connection:
            row = connection.execute(
                select(c.recipe_id, c.role_id, c.roi_id, c.version, c.decision, c.review_verdict)
                .where(c.id == record_id)
            ).first()
            if row is None:
                return None
            outcome = review_outcome(row.decision, verdict)
            connection.execute(update(_TABLE).where(c.id == record_id).values(
                review_verdict=verdict, review_outcome=outcome, reviewed_at=now, reviewed_by=reviewer))
            connection.execute(insert(_REVIEWS).values(
                inspection_id=record_id, verdict=verdict, outcome=outcome, reviewer=reviewer, note=note,
                reviewed_at=now))
            write_audit(connection, audit.about(
                recipe_id=row.recipe_id, role_id=row.role_id, roi_id=row.roi_id, version_before=row.version,
                version_after=row.version,
                details={"inspection_id": record_id, "verdict": verdict, "outcome": outcome,
                         "verdict_before": row.review_verdict, "note": note},
            ))
        return ReviewResult(record_id, verdict, row.decision, outcome, reviewer, note, now)

    def history(self, record_id: str) -> list[ReviewResult]:
        """Every review ``record_id`` was given, oldest first (``decision``: the record's)."""
        r, c = _REVIEWS.c, _TABLE.c
        query = (select(r.inspection_id, r.verdict, c.decision, r.outcome, r.reviewer, r.note, r.reviewed_at)
                 .join(_TABLE, c.id == r.inspection_id).where(r.inspection_id == record_id).order_by(r.id))
        with unavailable_as_503(self.engine), self.engine.connect() as connection:
            return [ReviewResult(*row[:-1], utc(row.reviewed_at)) for row in connection.execute(query)]

    def queue(
        self, where: RecordFilter, limit: int, cursor: str | None = None
    ) -> tuple[list[InspectionRecord], str | None]:
        """Up to ``limit`` unreviewed records with a kept image, nearest their threshold first (|score / threshold
        - 1| ascending, whatever the decision), after ``cursor``; and the cursor of the next page (None: last)."""
        c = _TABLE.c
        clauses = [*where.clauses(), REVIEW_QUEUE_WHERE]
        if cursor:
            distance, record_id = _decode_queue_cursor(cursor)
            clauses += [c.threshold_distance >= distance,
                        or_(c.threshold_distance > distance, c.id > record_id)]
        query = (select(_TABLE).where(and_(true(), *clauses)).order_by(c.threshold_distance, c.id)
                 .limit(limit + 1))
        with unavailable_as_503(self.engine), self.engine.connect() as connection:
            rows = [InspectionRecord.from_row(row) for row in connection.execute(query)]
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, _encode_queue_cursor(rows[-1]) if more else None

    def shadow_tally(self, where: RecordFilter, version: int) -> ShadowTally:
        """How ``version``'s decisions compare with the answered ones on the matching records it scored."""
        c = _TABLE.c

        def count(condition: Any) -> Any:
            return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

        query = select(
            func.count(),
            count(c.shadow_decision == c.decision),
            count(and_(c.decision == "ok", c.shadow_decision == "ng")),
            count(and_(c.decision == "ng", c.shadow_decision == "ok")),
        ).where(and_(true(), *where.clauses(), c.shadow_version == version, c.shadow_score.is_not(None)))
        with unavailable_as_503(self.engine), self.engine.connect() as connection:
            n, agree, ok_to_ng, ng_to_ok = connection.execute(query).one()
        return ShadowTally(int(n), int(agree), int(ok_to_ng), int(ng_to_ok))


def _encode_queue_cursor(record: InspectionRecord) -> str:
    return base64.urlsafe_b64encode(f"q {record.threshold_distance!r} {record.id}".encode()).decode().rstrip("=")


def _decode_queue_cursor(cursor: str) -> tuple[float, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        mark, distance, record_id = text.split(" ")
        if mark != "q":
            raise ValueError(mark)
        return float(distance), record_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest(
            f"cursor {cursor[:40]!r} is not one the review queue made; pass back the next_cursor of the previous "
            "queue page unchanged, or leave it out for the first page."
        ) from None
