"""Names of the records database's tables, for code that shares the database without owning it.

``service.records`` owns the tables (``service/records/tables.py``); training's hyper-parameter
search (``training.tuning.storage``) may put Optuna's study storage in the same database and
must recognise a records database, but imports only the shared core. The names live here so
neither side copies them.
"""

from __future__ import annotations

#: One row per segmented study.
STUDY_QUALITY_TABLE = "study_quality"
#: The compressed prediction of a study, read when a reference arrives.
STUDY_PREDICTION_TABLE = "study_prediction"
#: One row per job of the TrainingService.
TRAINING_JOBS_TABLE = "training_jobs"
#: One row per submit, cancel and promote of the TrainingService, with the caller's identity.
AUDIT_TABLE = "audit"
#: Alembic's version table of the records migrations. Not the default ``alembic_version``: that
#: one belongs to whatever else shares the database (Optuna's study storage, ``pulmoseg tune``).
RECORDS_VERSION_TABLE = "quality_alembic_version"
