"""The gRPC server: lifecycle (health, reflection, drain, hot swap), servicers, admission queue,
chunked upload, the one error-to-status table, settings and model versions.
"""
