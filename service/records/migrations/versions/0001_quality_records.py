"""Quality records: one row per study plus its stored prediction.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "study_quality",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("study_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("num_instances", sa.Integer(), nullable=False),
        sa.Column("class_volumes_ml", sa.JSON(), nullable=False),
        sa.Column("lung_volume_ml", sa.Float(), nullable=True),
        sa.Column("involvement_percent", sa.Float(), nullable=True),
        sa.Column("grade", sa.String(8), nullable=True),
        sa.Column("consistency_transform", sa.String(16), nullable=True),
        sa.Column("consistency_voldice", sa.JSON(), nullable=True),
        sa.Column("consistency_min", sa.Float(), nullable=True),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("reference_voldice", sa.JSON(), nullable=True),
        sa.Column("reference_cdice", sa.JSON(), nullable=True),
        sa.Column("reference_type", sa.String(16), nullable=True),
        sa.Column("reference_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stage_seconds", sa.JSON(), nullable=False),
    )
    op.create_index("ix_study_quality_study_hash", "study_quality", ["study_hash"], unique=True)
    op.create_index("ix_study_quality_created_at", "study_quality", ["created_at"])
    op.create_index("ix_study_quality_model_version", "study_quality", ["model_version"])
    op.create_index("ix_study_quality_flagged", "study_quality", ["flagged"])
    op.create_table(
        "study_prediction",
        sa.Column(
            "study_hash",
            sa.String(64),
            sa.ForeignKey("study_quality.study_hash", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("geometry", sa.String(2048), nullable=False),
        sa.Column("labels_zlib", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("study_prediction")
    op.drop_index("ix_study_quality_flagged", table_name="study_quality")
    op.drop_index("ix_study_quality_model_version", table_name="study_quality")
    op.drop_index("ix_study_quality_created_at", table_name="study_quality")
    op.drop_index("ix_study_quality_study_hash", table_name="study_quality")
    op.drop_table("study_quality")
