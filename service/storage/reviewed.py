"""The reviewed inspection records of one model, as learning from reviews reads them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, select

from .registry.engine import unavailable_as_503
from .registry.tables import InspectionRow


@dataclasses.dataclass(frozen=True)
class ReviewedRecord:
    id: str
    outcome: str
    learned_version: int | None
    image_path: str | None  # the kept upload, relative to the models dir
    shape: dict[str, Any] | None  # the mask it was inspected in; None: the whole image
    mm_per_px: float


def reviewed_records(
    engine: Engine, recipe_id: str, role_id: str, roi_id: str, outcomes: Sequence[str]
) -> list[ReviewedRecord]:
    """The model's records whose current review has one of ``outcomes``, oldest first."""
    c = InspectionRow
    query = (
        select(c.id, c.review_outcome, c.learned_version, c.image_path, c.shape, c.mm_per_px)
        .where(c.recipe_id == recipe_id, c.role_id == role_id, c.roi_id == roi_id,
               c.review_outcome.in_(list(outcomes)))
        .order_by(c.created_at, c.id)
    )
    with unavailable_as_503(engine), engine.connect() as connection:
        return [ReviewedRecord(*row) for row in connection.execute(query)]
