"""The study's typed outcome as one JSON column: the records row renders the schema.

Until 0004 each outcome field had a column of its own, so every new field needed a migration and
a hand mapping. From here ``study_quality.outcome`` holds ``service.core.study_outcome.
StudyOutcome`` as JSON; the columns that lists filter on (``model_version``, ``flagged``,
``review_required``) stay beside it. Old rows are converted on upgrade, so records written by
earlier versions read back as outcomes (the consistency threshold, never stored before, is 0).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

#: The per-field columns of 0001-0003 that the outcome column replaces, with their types.
_OLD_COLUMNS: dict[str, Any] = {
    "model_name": sa.String(),
    "provider": sa.String(),
    "num_instances": sa.Integer(),
    "class_volumes_ml": sa.JSON(),
    "lung_volume_ml": sa.Float(),
    "involvement_percent": sa.Float(),
    "grade": sa.String(),
    "consistency_transform": sa.String(),
    "consistency_voldice": sa.JSON(),
    "consistency_min": sa.Float(),
    "stage_seconds": sa.JSON(),
    "applicability_reasons": sa.JSON(),
    "applicability_measurements": sa.JSON(),
    "quality_score": sa.Float(),
    "quality_flagged": sa.Boolean(),
    "quality_signals": sa.JSON(),
}
_LESIONS = ("ggo", "consolidation")


def _outcome(row: Any) -> dict[str, Any]:
    """A 0004 row as the outcome it recorded (what the schema of that time could say)."""
    volumes = dict(row.class_volumes_ml or {})
    lung = row.lung_volume_ml
    lesion = sum(v for k, v in volumes.items() if k in _LESIONS) if lung is not None else None
    outcome: dict[str, Any] = {
        "study_uid_hash": row.study_hash,
        "class_volumes_ml": volumes,
        "num_instances": row.num_instances,
        "model_name": row.model_name,
        "model_version": row.model_version,
        "provider": row.provider,
        "stage_seconds": dict(row.stage_seconds or {}),
        "clinical": {
            "class_volumes_ml": volumes,
            "lung_volume_ml": lung,
            "lesion_volume_ml": lesion,
            "involvement_percent": row.involvement_percent,
            "severity_grade": row.grade,
        },
        "consistency": None,
        "flagged": bool(row.flagged),
        "applicability": None,
        "quality": None,
    }
    if row.consistency_voldice is not None:
        outcome["consistency"] = {
            "transform": row.consistency_transform or "",
            "voldice": row.consistency_voldice,
            "threshold": 0.0,
            "flagged": bool(row.flagged),
        }
    if row.applicability_reasons is not None:
        reasons = list(row.applicability_reasons)
        measurements = row.applicability_measurements or {}
        outcome["applicability"] = {
            "applicable": not reasons,
            "reasons": reasons,
            "details": {},
            "measurements": {k: v for k, v in measurements.items() if v is not None},
            "contrast_agent": "",
        }
    if row.quality_score is not None:
        signals = dict(row.quality_signals or {})
        outcome["quality"] = {
            "score": row.quality_score,
            "flagged": bool(row.quality_flagged),
            "threshold": float(signals.pop("threshold", 0.0) or 0.0),
            "variant": str(signals.pop("variant", "")),
            "signals": {k: float(v) for k, v in signals.items() if isinstance(v, int | float)},
        }
    return outcome


def _review_required(outcome: dict[str, Any]) -> bool:
    quality = outcome["quality"] or {}
    applicability = outcome["applicability"] or {"applicable": True}
    return bool(outcome["flagged"] or quality.get("flagged") or not applicability["applicable"])


def upgrade() -> None:
    with op.batch_alter_table("study_quality") as batch:
        batch.add_column(sa.Column("outcome", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("review_required", sa.Boolean(), nullable=True))
    table = sa.table(
        "study_quality",
        sa.column("id", sa.Integer()),
        sa.column("study_hash", sa.String()),
        sa.column("model_version", sa.String()),
        sa.column("flagged", sa.Boolean()),
        sa.column("outcome", sa.JSON()),
        sa.column("review_required", sa.Boolean()),
        *(sa.column(name, kind) for name, kind in _OLD_COLUMNS.items()),
    )
    connection = op.get_bind()
    for row in connection.execute(sa.select(table)).fetchall():
        outcome = _outcome(row)
        connection.execute(
            table.update()
            .where(table.c.id == row.id)
            .values(outcome=outcome, review_required=_review_required(outcome))
        )
    with op.batch_alter_table("study_quality") as batch:
        batch.alter_column("outcome", existing_type=sa.JSON(), nullable=False)
        batch.alter_column("review_required", existing_type=sa.Boolean(), nullable=False)
        batch.create_index("ix_study_quality_review_required", ["review_required"])
        for name in _OLD_COLUMNS:
            batch.drop_column(name)


def downgrade() -> None:
    raise NotImplementedError(
        "0005 folds the per-field columns into the outcome; restore a backup to go back."
    )
