"""File sizes of memory versions as 64-bit integers.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

A memory_fit memory of a few hundred images at input 448 passes 2 GiB (1024 rows of 4.6 KB per image);
PostgreSQL's INTEGER refused such a size, so registering the fit failed after its files were written.
SQLite stores any integer either way; batch mode rebuilds its table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = (("memory_bytes", False), ("index_bytes", True))


def upgrade() -> None:
    with op.batch_alter_table("memory_versions") as batch:
        for name, nullable in COLUMNS:
            batch.alter_column(name, type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=nullable)


def downgrade() -> None:
    with op.batch_alter_table("memory_versions") as batch:
        for name, nullable in COLUMNS:
            batch.alter_column(name, type_=sa.Integer(), existing_type=sa.BigInteger(), existing_nullable=nullable)
