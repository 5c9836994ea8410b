"""Reading the inspection records: pages of them, one record, and the image or heatmap it kept."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from ..errors import BadRequest, NotFound
from ..settings import Settings
from ..storage import MEDIA_TYPES, InspectionRecord, RecordFilter, RecordStore
from ..storage.reviews import OUTCOMES
from ..validation import normalize_recipe, validate_id

MAX_PAGE = 1000
RECORD_ID = re.compile(r"[0-9a-f]{32}")


class RecordReader:
    def __init__(self, settings: Settings, records: RecordStore) -> None:
        self.settings = settings
        self.records = records

    def page(
        self, where: RecordFilter, limit: int = 100, cursor: str | None = None, after_seq: int | None = None
    ) -> dict[str, Any]:
        """One page of records: newest first by time (``next_cursor`` pages on), or with ``after_seq`` the
        records written after that sequence number, oldest write first (``next_after_seq`` follows on). Paging
        by time can miss a record written late (its time is when it was inspected); following misses none."""
        where = self.checked(where, limit)
        if after_seq is None:
            items, next_cursor = self.records.page(where, limit, cursor)
            return {"items": [item.as_dict() for item in items], "next_cursor": next_cursor, "next_after_seq": None}
        if cursor is not None:
            raise BadRequest("Pass either `cursor` (pages newest first by time) or `after_seq` (follows the records "
                             "in the order they were written), not both.")
        items, next_after_seq = self.records.follow(where, after_seq, limit)
        return {"items": [item.as_dict() for item in items], "next_cursor": None, "next_after_seq": next_after_seq}

    @staticmethod
    def checked(where: RecordFilter, limit: int) -> RecordFilter:
        """The filter and page size of a list, checked (400 with a sentence); the recipe as stored."""
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"limit must be 1 to {MAX_PAGE}, got {limit}; page through more with next_cursor.")
        for name in ("role_id", "roi_id", "part_id"):
            if getattr(where, name) is not None:
                validate_id(name, getattr(where, name))
        if where.review not in (None, "pending", "reviewed"):
            raise BadRequest(f"review must be 'pending' or 'reviewed', got {where.review!r:.40}.")
        if where.outcome is not None and where.outcome not in OUTCOMES:
            raise BadRequest(f"outcome {where.outcome!r:.40} is not one of {', '.join(OUTCOMES)}.")
        if where.recipe_id is not None:
            where = dataclasses.replace(where, recipe_id=normalize_recipe(where.recipe_id))
        return where

    def get(self, record_id: str) -> InspectionRecord:
        if not RECORD_ID.fullmatch(record_id):
            raise BadRequest(f"{record_id[:64]!r} is not an inspection record id (32 hexadecimal digits: the id "
                             "GET /inspections lists).")
        record = self.records.get(record_id)
        if record is None:
            raise NotFound(f"There is no inspection record {record_id[:64]!r}; GET /inspections lists the kept ones "
                           f"(records older than BDI_RECORD_RETENTION_DAYS are deleted).")
        return record

    def file(self, record_id: str, kind: str) -> tuple[bytes, str]:
        """(bytes, media type) of a kept ``image`` or ``heatmap``; 404 with the reason when not kept."""
        record = self.get(record_id)
        path = record.image_path if kind == "image" else record.heatmap_path
        if path is None:
            raise NotFound(
                f"The {kind} of inspection {record_id} was not kept: images are kept per BDI_RECORD_IMAGES (now "
                f"{self.settings.record_images!r}: none, ng, review or all) and the oldest are deleted past "
                "BDI_RECORD_MAX_MB."
            )
        try:
            data = (self.settings.models_dir / path).read_bytes()
        except FileNotFoundError:
            data = b""
        if not data:  # gone, or left empty by a crash between creating and writing it
            raise NotFound(f"The {kind} of inspection {record_id} is no longer on disk (pruned, removed by hand, or "
                           "lost in a crash before it was written).")
        return data, MEDIA_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")
