"""Inspection records: one row per answered /infer.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inspections",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recipe_id", sa.String(64), nullable=False, server_default="default"),
        sa.Column("role_id", sa.String(128), nullable=False),
        sa.Column("roi_id", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("memory_sha256", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("weights_sha256", sa.String(64), nullable=True),
        sa.Column("calibration_id", sa.String(32), nullable=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("decision", sa.String(2), nullable=True),
        sa.Column("score_percentile", sa.Integer(), nullable=False),
        sa.Column("n_regions", sa.Integer(), nullable=False),
        sa.Column("largest_area_mm2", sa.Float(), nullable=False),
        sa.Column("total_area_mm2", sa.Float(), nullable=False),
        sa.Column("image_width", sa.Integer(), nullable=False),
        sa.Column("image_height", sa.Integer(), nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=False),
        sa.Column("shape_kind", sa.String(16), nullable=True),
        sa.Column("mm_per_px", sa.Float(), nullable=False),
        sa.Column("correlation_id", sa.String(128), nullable=True),
        sa.Column("client", sa.String(200), nullable=True),
        sa.Column("part_id", sa.String(128), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("load_ms", sa.Float(), nullable=False),
        sa.Column("forward_ms", sa.Float(), nullable=False),
        sa.Column("total_ms", sa.Float(), nullable=False),
        sa.Column("image_path", sa.String(200), nullable=True),
        sa.Column("heatmap_path", sa.String(200), nullable=True),
        sa.Column("image_bytes", sa.Integer(), nullable=True),
    )
    op.create_index("ix_inspections_model_time", "inspections", ["role_id", "roi_id", "created_at", "id"])
    op.create_index("ix_inspections_time", "inspections", ["created_at", "id"])
    op.create_index("ix_inspections_part_id", "inspections", ["part_id"])


def downgrade() -> None:
    op.drop_table("inspections")
