"""Registry tables. They index what is on disk (never the only copy of anything): a model per
(recipe, role, roi), one row per memory version, one row per calibration (the history), one row per
named recipe (its locked mm_per_px, from the recipe's recipe.json). Besides, the inspection records: audit data
that lives only here (and in the kept images), bounded by retention settings."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Model(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("recipe_id", "role_id", "roi_id", name="uq_models_recipe_role_roi"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recipe_id: Mapped[str] = mapped_column(
        String(64), default="default", server_default="default", doc="namespace; 'default' for clients naming none"
    )
    role_id: Mapped[str] = mapped_column(String(128))
    roi_id: Mapped[str] = mapped_column(String(128))
    folder: Mapped[str] = mapped_column(String(600), doc="model folder, relative to the models dir")
    active_version: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[str] = mapped_column(String(40))
    updated_at: Mapped[str] = mapped_column(String(40))
    shadow_version: Mapped[int | None] = mapped_column(Integer, doc="staged version scoring live traffic beside")
    shadow_since: Mapped[str | None] = mapped_column(String(40))

    versions: Mapped[list[MemoryVersion]] = relationship(
        back_populates="model", cascade="all, delete-orphan", passive_deletes=True
    )
    calibrations: Mapped[list[Calibration]] = relationship(
        back_populates="model", cascade="all, delete-orphan", passive_deletes=True
    )


class MemoryVersion(Base):
    __tablename__ = "memory_versions"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_memory_versions_model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    n_embeddings: Mapped[int] = mapped_column(Integer)
    coreset_size: Mapped[int] = mapped_column(Integer)
    coreset_rate_requested: Mapped[float | None] = mapped_column(Float)
    coreset_rate_applied: Mapped[float | None] = mapped_column(Float)
    token_h: Mapped[int] = mapped_column(Integer)
    token_w: Mapped[int] = mapped_column(Integer)
    embed_dim: Mapped[int] = mapped_column(Integer)
    extractor: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    memory_path: Mapped[str] = mapped_column(String(700))
    memory_sha256: Mapped[str] = mapped_column(String(64))
    memory_bytes: Mapped[int] = mapped_column(BigInteger)
    index_path: Mapped[str | None] = mapped_column(String(700))
    index_sha256: Mapped[str | None] = mapped_column(String(64))
    index_bytes: Mapped[int | None] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(16), doc="fit | append | migrated")
    legacy_path: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[str] = mapped_column(String(40))
    parent_version: Mapped[int | None] = mapped_column(Integer, doc="an append's: the version it grew from")
    ancestors: Mapped[list[int] | None] = mapped_column(JSON, doc="an append's: parent first, back to the fit")
    covering_radius: Mapped[float | None] = mapped_column(Float, doc="null for versions fitted before 0003")
    train_width: Mapped[int | None] = mapped_column(Integer, doc="width of the images it was fitted on (0008)")
    train_height: Mapped[int | None] = mapped_column(Integer, doc="height of the images it was fitted on (0008)")
    status: Mapped[str] = mapped_column(String(16), server_default="retired", doc="active | staged | retired")

    model: Mapped[Model] = relationship(back_populates="versions")


class Calibration(Base):
    __tablename__ = "calibrations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True, doc="id of the history.jsonl entry")
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    memory_version: Mapped[int | None] = mapped_column(Integer, doc="active memory version when calibrated")
    threshold: Mapped[float] = mapped_column(Float)
    ok_mean: Mapped[float | None] = mapped_column(Float)
    ng_mean: Mapped[float | None] = mapped_column(Float)
    p99_ok: Mapped[float | None] = mapped_column(Float)
    p5_ng: Mapped[float | None] = mapped_column(Float)
    mm_per_px: Mapped[float | None] = mapped_column(Float)
    area_mm2_thr: Mapped[float | None] = mapped_column(Float)
    score_percentile: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16), doc="api | cli | legacy")
    correlation_id: Mapped[str | None] = mapped_column(String(128))
    client: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[str | None] = mapped_column(String(40))

    model: Mapped[Model] = relationship(back_populates="calibrations")


class Recipe(Base):
    """A named recipe's mm_per_px lock (the first value a fit, infer or dataset upload sent)."""

    __tablename__ = "recipes"

    recipe_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    mm_per_px: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[str] = mapped_column(String(40))


REVIEW_QUEUE_WHERE = text("review_verdict IS NULL AND image_path IS NOT NULL AND threshold_distance IS NOT NULL")
"""The rows the review queue can list (``ix_inspections_review_queue`` holds only these)."""


class InspectionRow(Base):
    """One answered /infer (audit data): what judged what, when, for whom. Written by the records writer
    (``service.storage.records``), never read by the inspection path."""

    __tablename__ = "inspections"
    __table_args__ = (
        # "this model, this time range", newest first, with (created_at, id) as the keyset of the pages; the
        # recipe is a residual filter so that the common query without a recipe still walks the index in order
        Index("ix_inspections_model_time", "role_id", "roi_id", "created_at", "id"),
        Index("ix_inspections_time", "created_at", "id"),
        Index("ix_inspections_part_id", "part_id"),
        Index("ix_inspections_seq", "seq", unique=True),
        # the review queue and the decision / outcome filters of one model, newest first
        Index("ix_inspections_model_decision_time", "role_id", "roi_id", "decision", "created_at", "id"),
        Index("ix_inspections_model_outcome_time", "role_id", "roi_id", "review_outcome", "created_at", "id"),
        # the review queue of one model: its unreviewed records with a kept image, nearest the threshold first
        Index("ix_inspections_review_queue", "role_id", "roi_id", "threshold_distance", "id",
              sqlite_where=REVIEW_QUEUE_WHERE, postgresql_where=REVIEW_QUEUE_WHERE),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    recipe_id: Mapped[str] = mapped_column(String(64), server_default="default")
    role_id: Mapped[str] = mapped_column(String(128))
    roi_id: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer, doc="memory version that judged")
    memory_sha256: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(128), doc="backbone")
    weights_sha256: Mapped[str | None] = mapped_column(String(64))
    calibration_id: Mapped[str | None] = mapped_column(String(32), doc="uid of the calibration; null: uncalibrated")
    score: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    decision: Mapped[str | None] = mapped_column(String(2), doc="ok | ng | null (uncalibrated)")
    score_percentile: Mapped[int] = mapped_column(Integer)
    n_regions: Mapped[int] = mapped_column(Integer)
    largest_area_mm2: Mapped[float] = mapped_column(Float)
    total_area_mm2: Mapped[float] = mapped_column(Float)
    image_width: Mapped[int] = mapped_column(Integer)
    image_height: Mapped[int] = mapped_column(Integer)
    image_sha256: Mapped[str] = mapped_column(String(64))
    shape_kind: Mapped[str | None] = mapped_column(String(16), doc="rect | circle | annulus | null (whole image)")
    mm_per_px: Mapped[float] = mapped_column(Float)
    correlation_id: Mapped[str | None] = mapped_column(String(128))
    client: Mapped[str | None] = mapped_column(String(200))
    part_id: Mapped[str | None] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(16), doc="api | cli")
    load_ms: Mapped[float] = mapped_column(Float, doc="registry check, decoding and memory lookup")
    forward_ms: Mapped[float] = mapped_column(Float, doc="waiting for and running the backbone forward")
    total_ms: Mapped[float] = mapped_column(Float)
    image_path: Mapped[str | None] = mapped_column(String(200), doc="kept upload, relative to the models dir")
    heatmap_path: Mapped[str | None] = mapped_column(String(200))
    image_bytes: Mapped[int | None] = mapped_column(Integer, doc="bytes of the kept upload and heatmap together")
    seq: Mapped[int] = mapped_column(
        BigInteger, doc="write sequence: taken at insert, increasing in commit order (following new records)"
    )
    warnings: Mapped[list[str] | None] = mapped_column(JSON, doc="what the answer warned about (size mismatch...)")
    heatmap_low: Mapped[float | None] = mapped_column(Float, doc="map value encoded as grey 0")
    heatmap_high: Mapped[float | None] = mapped_column(Float, doc="map value encoded as grey 255")
    shape: Mapped[dict[str, Any] | None] = mapped_column(JSON, doc="the whole mask definition; null: whole image")
    regions: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, doc="boxes and areas, as answered")
    shadow_version: Mapped[int | None] = mapped_column(Integer)
    shadow_score: Mapped[float | None] = mapped_column(Float)
    shadow_decision: Mapped[str | None] = mapped_column(String(2))
    review_verdict: Mapped[str | None] = mapped_column(String(2), doc="current review (history in reviews)")
    review_outcome: Mapped[str | None] = mapped_column(String(16))
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    reviewed_by: Mapped[str | None] = mapped_column(String(128), doc="who gave the current review")
    threshold_distance: Mapped[float | None] = mapped_column(
        Float, doc="|score / threshold - 1|: how near the threshold the decision was (null: uncalibrated)"
    )
    learned_version: Mapped[int | None] = mapped_column(Integer, doc="a false reject learned into this version")


class InspectionSequence(Base):
    """The last write sequence number given to an inspection record (one row). Its row lock (PostgreSQL) or
    the write lock (SQLite) is held from numbering to commit, so records commit in sequence order."""

    __tablename__ = "inspection_sequence"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)


class Review(Base):
    """Every verdict a person gave on a record; the newest is the record's current review."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    inspection_id: Mapped[str] = mapped_column(String(32), index=True)
    verdict: Mapped[str] = mapped_column(String(2), doc="ok | ng")
    outcome: Mapped[str] = mapped_column(String(16), doc="confirmed_ok | confirmed_ng | false_reject | ...")
    reviewer: Mapped[str | None] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(Text)
    reviewed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Job(Base):
    """A long task run off the request path (replay), leased by the host running it: a job whose heartbeat
    stops is failed by any host that reads it."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status", "status", "heartbeat_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), doc="queued | running | done | failed")
    recipe_id: Mapped[str] = mapped_column(String(64))
    role_id: Mapped[str] = mapped_column(String(128))
    roi_id: Mapped[str] = mapped_column(String(128))
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    progress_done: Mapped[int] = mapped_column(Integer, server_default="0")
    progress_total: Mapped[int] = mapped_column(Integer, server_default="0")
    host: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str | None] = mapped_column(String(128))
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ApiKey(Base):
    """A named key with a role; only the token's sha256 is kept (tokens are long and random). A revoked key
    keeps its row so the audit trail can still name it."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16), doc="inspector | setup | engineer | admin")
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[str] = mapped_column(String(40))
    created_by: Mapped[str | None] = mapped_column(String(128))
    revoked_at: Mapped[str | None] = mapped_column(String(40))


class AuditEntry(Base):
    """One change (fit, calibrate, activate, review, key_add...): who, when, from where, what before and after.
    Written in the transaction of the change it records; never pruned by record retention."""

    __tablename__ = "audit"
    __table_args__ = (
        Index("ix_audit_at", "at", "id"),
        Index("ix_audit_model_at", "role_id", "roi_id", "at", "id"),
        Index("ix_audit_action_at", "action", "at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str | None] = mapped_column(String(128), doc="key name; cli:<user>; null when open")
    role: Mapped[str | None] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32))
    recipe_id: Mapped[str | None] = mapped_column(String(64))
    role_id: Mapped[str | None] = mapped_column(String(128))
    roi_id: Mapped[str | None] = mapped_column(String(128))
    version_before: Mapped[int | None] = mapped_column(Integer)
    version_after: Mapped[int | None] = mapped_column(Integer)
    threshold_before: Mapped[float | None] = mapped_column(Float)
    threshold_after: Mapped[float | None] = mapped_column(Float)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    correlation_id: Mapped[str | None] = mapped_column(String(128))
    host: Mapped[str | None] = mapped_column(String(200))
    client: Mapped[str | None] = mapped_column(String(200))
