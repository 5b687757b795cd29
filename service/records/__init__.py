"""The service's records database: opening it, its Alembic migrations, paging and its tables.

One database holds the per-study quality records (``service.quality``) and the training jobs
(``service.training_jobs``); both use this package and neither owns the schema. The schema
evolves only through the revisions in ``service/records/migrations`` (a test compares them with
``service.records.tables``).
"""
