"""Entry point of the pulmoseg MONAI Application Package (MAP).

holoscan-cli's packager copies the application folder to ``/opt/holoscan/app`` and runs
``python3 /opt/holoscan/app``, which executes this file with that folder first on
``sys.path``. ``scripts/stage_map.py`` stages the folder: this file, ``requirements.txt`` and
the ``service`` package beside them, so ``import service`` finds the staged copy. Input, output
and model paths come from the MAP environment (``HOLOSCAN_INPUT_PATH``,
``HOLOSCAN_OUTPUT_PATH``, ``HOLOSCAN_MODEL_PATH``); see ``service/app/__main__.py``.
"""

import sys

from service.app.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
