"""Recipes: models are identified by (recipe_id, role_id, roi_id); existing models become the default
namespace. A ``recipes`` table holds each named recipe's locked mm_per_px.

The dataset store needs no table: its folders are the truth and listing one is all a request needs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("recipe_id", sa.String(64), nullable=False, server_default="default"))
        batch.drop_constraint("uq_models_role_roi", type_="unique")
        batch.create_unique_constraint("uq_models_recipe_role_roi", ["recipe_id", "role_id", "roi_id"])
    op.create_table(
        "recipes",
        sa.Column("recipe_id", sa.String(64), primary_key=True),
        sa.Column("mm_per_px", sa.Float(), nullable=True),
        sa.Column("created_at", sa.String(40), nullable=False),
    )


def downgrade() -> None:
    """Back to one namespace: the rows of named recipes' models are dropped (their files stay under @recipes/,
    which the code of revision 0001 does not read), else two rows could share (role, roi)."""
    op.drop_table("recipes")
    op.execute(sa.text("DELETE FROM models WHERE recipe_id <> 'default'"))
    with op.batch_alter_table("models") as batch:
        batch.drop_constraint("uq_models_recipe_role_roi", type_="unique")
        batch.create_unique_constraint("uq_models_role_roi", ["role_id", "roi_id"])
        batch.drop_column("recipe_id")
