"""API keys with roles, and the audit trail of every change.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

Keys are stored as the sha256 of the token (tokens are long and random, so a slow hash adds nothing); a
revoked key keeps its row so the audit trail can still name it. Audit rows are never pruned by record
retention: they are the plant's answer to "who changed this model, when and why".
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("key_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=True),
        sa.Column("revoked_at", sa.String(40), nullable=True),
    )
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(128), nullable=True),
        sa.Column("role", sa.String(16), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("recipe_id", sa.String(64), nullable=True),
        sa.Column("role_id", sa.String(128), nullable=True),
        sa.Column("roi_id", sa.String(128), nullable=True),
        sa.Column("version_before", sa.Integer(), nullable=True),
        sa.Column("version_after", sa.Integer(), nullable=True),
        sa.Column("threshold_before", sa.Float(), nullable=True),
        sa.Column("threshold_after", sa.Float(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.Column("correlation_id", sa.String(128), nullable=True),
        sa.Column("host", sa.String(200), nullable=True),
        sa.Column("client", sa.String(200), nullable=True),
    )
    op.create_index("ix_audit_at", "audit", ["at", "id"])
    op.create_index("ix_audit_model_at", "audit", ["role_id", "roi_id", "at", "id"])
    op.create_index("ix_audit_action_at", "audit", ["action", "at", "id"])


def downgrade() -> None:
    op.drop_table("audit")
    op.drop_table("api_keys")
