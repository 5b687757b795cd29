"""Applicability checks in the quality records: the reasons and what was measured.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: records written before the checks existed have none (not "applicable").
    with op.batch_alter_table("study_quality") as batch:
        batch.add_column(sa.Column("applicability_reasons", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("applicability_measurements", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("study_quality") as batch:
        batch.drop_column("applicability_measurements")
        batch.drop_column("applicability_reasons")
