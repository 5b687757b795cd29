"""Training jobs of the TrainingService: spec, state, progress, exported model, promotion.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
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
        "training_jobs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("work_dir", sa.String(1024), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("token", sa.String(64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("message", sa.String(4096), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=True),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("registry_path", sa.String(1024), nullable=True),
        sa.Column("val_voldice", sa.JSON(), nullable=True),
        sa.Column("promotion", sa.JSON(), nullable=True),
    )
    op.create_index("ix_training_jobs_job_id", "training_jobs", ["job_id"], unique=True)
    op.create_index("ix_training_jobs_state", "training_jobs", ["state"])


def downgrade() -> None:
    op.drop_index("ix_training_jobs_state", table_name="training_jobs")
    op.drop_index("ix_training_jobs_job_id", table_name="training_jobs")
    op.drop_table("training_jobs")
