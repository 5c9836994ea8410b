"""What a record and a version need to explain an inspection: the training images' size, warnings, the heatmap's scale.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

A version records the size of the images it was fitted on (an inspection of a differently sized crop is
answered with a warning); a record keeps its warnings and the (low, high) scale its heatmap was encoded
with, so a viewer can redraw every map on one threshold-anchored scale.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("memory_versions") as batch:
        batch.add_column(sa.Column("train_width", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("train_height", sa.Integer(), nullable=True))
    with op.batch_alter_table("inspections") as batch:
        batch.add_column(sa.Column("warnings", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("heatmap_low", sa.Float(), nullable=True))
        batch.add_column(sa.Column("heatmap_high", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inspections") as batch:
        for name in ("heatmap_high", "heatmap_low", "warnings"):
            batch.drop_column(name)
    with op.batch_alter_table("memory_versions") as batch:
        for name in ("train_height", "train_width"):
            batch.drop_column(name)
