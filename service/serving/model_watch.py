"""Serve a new model version without a signal: poll the model folder for a newer version.

On one machine ``SIGHUP`` (or a promotion through the training API) triggers a reload. On
Kubernetes the serving pods share the model volume with the pod that promotes, and nothing
sends them a signal; with ``model_poll_s`` set, each replica notices the new version itself.
A version that fails to load is not retried until a newer one appears (the reload already
keeps the old version serving and reports why in ``GetModelInfo.last_reload_error``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from service.core.errors import ModelError
from service.serving.model_versions import newest_model_version

logger = logging.getLogger(__name__)


class ModelFolderWatch:
    """Calls ``reload`` when the newest version in ``model_path`` is not the one served."""

    def __init__(
        self,
        model_path: Path,
        interval_s: float,
        served_version: Callable[[], str],
        reload: Callable[[], bool],
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"Argument 'interval_s' must be > 0, got {interval_s}.")
        self._model_path = model_path
        self._interval_s = interval_s
        self._served_version = served_version
        self._reload = reload
        self._refused: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pulmoseg-model-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def check_once(self) -> bool:
        """Reload if a newer, not yet refused version is there; True when a reload ran."""
        served = self._served_version()
        if not served:  # still loading the first model: that load picks the newest
            return False
        try:
            newest = newest_model_version(self._model_path).version
        except ModelError as exc:  # a folder emptied mid-copy: try again next time
            logger.debug("model watch: %s", exc)
            return False
        if newest == served or newest == self._refused:
            return False
        logger.info("model watch: version %s appeared (serving %s)", newest, served)
        if not self._reload():
            self._refused = newest
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.check_once()
            except Exception:  # never let the watch die silently
                logger.exception("model watch failed; trying again in %g s", self._interval_s)
