"""Inspection records get a write sequence number, so a client can follow new records without missing one.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

Records are written in batches off the request path: one stamped before a page was read can be inserted after
it, so following by time skips it. ``seq`` is taken from ``inspection_sequence`` at insert, under a lock held
until commit, so a client that asks for ``seq`` above the last one it saw misses nothing. Existing rows are
numbered in time order; batch mode rebuilds the SQLite table for the NOT NULL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inspection_sequence",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
    )
    with op.batch_alter_table("inspections") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE inspections SET seq = numbered.n FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY created_at, id) AS n "
        "FROM inspections) AS numbered WHERE numbered.id = inspections.id"
    )
    op.execute("INSERT INTO inspection_sequence (id, last_seq) SELECT 1, COALESCE(MAX(seq), 0) FROM inspections")
    with op.batch_alter_table("inspections") as batch:
        batch.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        batch.create_index("ix_inspections_seq", ["seq"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("inspections") as batch:
        batch.drop_index("ix_inspections_seq")
        batch.drop_column("seq")
    op.drop_table("inspection_sequence")
