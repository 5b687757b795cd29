"""``python -m service.cli``: the ``pulmoseg`` command without the console script."""

from service.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
