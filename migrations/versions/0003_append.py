"""Memory versions grown by appends: parent version, ancestors, covering radius.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

Nullable columns only, so existing rows stay valid (their versions were fitted before the covering
radius was recorded). Batch mode keeps it runnable on SQLite; on PostgreSQL it is a plain ALTER TABLE.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("memory_versions") as batch:
        batch.add_column(sa.Column("parent_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("ancestors", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("covering_radius", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("memory_versions") as batch:
        batch.drop_column("covering_radius")
        batch.drop_column("ancestors")
        batch.drop_column("parent_version")
