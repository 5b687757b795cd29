"""Training jobs as a service: a job store, a bounded queue of training processes, the model
registry they export into, and promotion into the serving model folder.

The service never imports the training package: every job is a separate process
(``python -m service.training_jobs.worker``) that runs ``pulmoseg train`` and ``pulmoseg export``
as subprocesses, so a serve-only installation keeps working and reports that training is not
installed.
"""
