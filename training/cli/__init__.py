"""Training subcommands of ``pulmoseg`` (phantom, train, export, evaluate, demo), registered
through the ``pulmoseg.commands`` entry points.
"""
