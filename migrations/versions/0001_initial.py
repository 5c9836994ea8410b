"""Initial registry: models, memory versions, calibrations.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("role_id", sa.String(128), nullable=False),
        sa.Column("roi_id", sa.String(128), nullable=False),
        sa.Column("folder", sa.String(600), nullable=False),
        sa.Column("active_version", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("updated_at", sa.String(40), nullable=False),
        sa.UniqueConstraint("role_id", "roi_id", name="uq_models_role_roi"),
    )
    op.create_table(
        "memory_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_id", sa.Integer(), sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("n_embeddings", sa.Integer(), nullable=False),
        sa.Column("coreset_size", sa.Integer(), nullable=False),
        sa.Column("coreset_rate_requested", sa.Float(), nullable=True),
        sa.Column("coreset_rate_applied", sa.Float(), nullable=True),
        sa.Column("token_h", sa.Integer(), nullable=False),
        sa.Column("token_w", sa.Integer(), nullable=False),
        sa.Column("embed_dim", sa.Integer(), nullable=False),
        sa.Column("extractor", sa.JSON(), nullable=True),
        sa.Column("memory_path", sa.String(700), nullable=False),
        sa.Column("memory_sha256", sa.String(64), nullable=False),
        sa.Column("memory_bytes", sa.Integer(), nullable=False),
        sa.Column("index_path", sa.String(700), nullable=True),
        sa.Column("index_sha256", sa.String(64), nullable=True),
        sa.Column("index_bytes", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("legacy_path", sa.String(1000), nullable=True),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.UniqueConstraint("model_id", "version", name="uq_memory_versions_model_version"),
    )
    op.create_index("ix_memory_versions_model_id", "memory_versions", ["model_id"])
    op.create_table(
        "calibrations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("uid", sa.String(32), nullable=False, unique=True),
        sa.Column("model_id", sa.Integer(), sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
        sa.Column("memory_version", sa.Integer(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("ok_mean", sa.Float(), nullable=True),
        sa.Column("ng_mean", sa.Float(), nullable=True),
        sa.Column("p99_ok", sa.Float(), nullable=True),
        sa.Column("p5_ng", sa.Float(), nullable=True),
        sa.Column("mm_per_px", sa.Float(), nullable=True),
        sa.Column("area_mm2_thr", sa.Float(), nullable=True),
        sa.Column("score_percentile", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("correlation_id", sa.String(128), nullable=True),
        sa.Column("client", sa.String(200), nullable=True),
        sa.Column("created_at", sa.String(40), nullable=True),
    )
    op.create_index("ix_calibrations_model_id", "calibrations", ["model_id"])


def downgrade() -> None:
    op.drop_table("calibrations")
    op.drop_table("memory_versions")
    op.drop_table("models")
