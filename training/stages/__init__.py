"""Training stages: the task interface the loop runs, one module per stage, and the registry
that maps a stage name in the config to its builder.
"""
