"""The review loop: version statuses, shadow versions, reviews, what a reviewer needs on a record, jobs.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

- memory_versions.status: active | staged | retired (existing rows: the model's active version is
  active, every other one retired).
- models.shadow_version / shadow_since: the staged version that scores live traffic beside the active one.
- inspections: the whole shape definition and the regions (boxes and areas), the shadow's score and
  decision, and the current review (verdict, outcome, time) denormalised from ``reviews`` so the review
  queue and the outcome filters are index scans; ``learned_version`` marks a false reject already learned;
  ``threshold_distance`` (|score / threshold - 1|, filled for the rows already there) orders the review queue,
  whose partial index holds only the unreviewed rows with a kept image.
- reviews: every verdict ever given (a later one replaces the current one on the record, the row stays).
- jobs: replay jobs, leased by the host that runs them (heartbeat), readable from every host.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

QUEUE_WHERE = "review_verdict IS NULL AND image_path IS NOT NULL AND threshold_distance IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("memory_versions") as batch:
        batch.add_column(sa.Column("status", sa.String(16), nullable=False, server_default="retired"))
    op.execute(
        "UPDATE memory_versions SET status = 'active' WHERE EXISTS (SELECT 1 FROM models WHERE "
        "models.id = memory_versions.model_id AND models.active_version = memory_versions.version)"
    )
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("shadow_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("shadow_since", sa.String(40), nullable=True))
    with op.batch_alter_table("inspections") as batch:
        batch.add_column(sa.Column("shape", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("regions", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("shadow_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("shadow_score", sa.Float(), nullable=True))
        batch.add_column(sa.Column("shadow_decision", sa.String(2), nullable=True))
        batch.add_column(sa.Column("review_verdict", sa.String(2), nullable=True))
        batch.add_column(sa.Column("review_outcome", sa.String(16), nullable=True))
        batch.add_column(sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("reviewed_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("threshold_distance", sa.Float(), nullable=True))
        batch.add_column(sa.Column("learned_version", sa.Integer(), nullable=True))
    op.create_index("ix_inspections_model_decision_time", "inspections",
                    ["role_id", "roi_id", "decision", "created_at", "id"])
    op.create_index("ix_inspections_model_outcome_time", "inspections",
                    ["role_id", "roi_id", "review_outcome", "created_at", "id"])
    op.execute("UPDATE inspections SET threshold_distance = ABS(score / threshold - 1) WHERE threshold > 0")
    op.create_index("ix_inspections_review_queue", "inspections", ["role_id", "roi_id", "threshold_distance", "id"],
                    sqlite_where=sa.text(QUEUE_WHERE), postgresql_where=sa.text(QUEUE_WHERE))
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("inspection_id", sa.String(32), nullable=False, index=True),
        sa.Column("verdict", sa.String(2), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reviewer", sa.String(128), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("recipe_id", sa.String(64), nullable=False),
        sa.Column("role_id", sa.String(128), nullable=False),
        sa.Column("roi_id", sa.String(128), nullable=False),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column("progress_done", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("progress_total", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("host", sa.String(200), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
    )
    op.create_index("ix_jobs_status", "jobs", ["status", "heartbeat_at"])


def downgrade() -> None:
    op.drop_table("jobs")
    op.drop_table("reviews")
    op.drop_index("ix_inspections_review_queue", "inspections")
    op.drop_index("ix_inspections_model_outcome_time", "inspections")
    op.drop_index("ix_inspections_model_decision_time", "inspections")
    with op.batch_alter_table("inspections") as batch:
        for name in ("learned_version", "threshold_distance", "reviewed_by", "reviewed_at", "review_outcome",
                     "review_verdict", "shadow_decision", "shadow_score", "shadow_version", "regions", "shape"):
            batch.drop_column(name)
    with op.batch_alter_table("models") as batch:
        batch.drop_column("shadow_since")
        batch.drop_column("shadow_version")
    with op.batch_alter_table("memory_versions") as batch:
        batch.drop_column("status")
