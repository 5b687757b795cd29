"""The ``pulmoseg`` command: service subcommands here, training subcommands contributed through
the ``pulmoseg.commands`` entry-point group (so the service never imports training).
"""
