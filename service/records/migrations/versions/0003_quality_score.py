"""The label-free quality score in the quality records: the score, its flag and its signals.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: records written before the score existed have none.
    with op.batch_alter_table("study_quality") as batch:
        batch.add_column(sa.Column("quality_score", sa.Float(), nullable=True))
        batch.add_column(sa.Column("quality_flagged", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("quality_signals", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("study_quality") as batch:
        batch.drop_column("quality_signals")
        batch.drop_column("quality_flagged")
        batch.drop_column("quality_score")
