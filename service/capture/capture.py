"""Opt-in capture of the service's own studies as training data, off the request path.

The quality monitor tells :class:`StudyCapture` about each segmented study and each scored
reference. Writing a compressed volume takes seconds for a large study, so the work goes to one
background thread through a short queue: the answer to the client never waits for the disk, and
one writer owns the folder (no locking of ``manifest.json``). Every failure — a full disk, a
read-only folder, a full queue — is logged with the study hash and counted in
``pulmoseg_capture_errors_total``; none reaches the study or the reference call.

What is kept (see :mod:`service.capture.dataset`): with ``capture.unlabeled`` every segmented
study becomes an unlabeled case; without it the volume waits in ``pending/`` (outside the
dataset) for at most ``capture.pending_hours`` and becomes a labeled case only if its reference
arrives. Either way a reference turns the study into a labeled case.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from service.capture.dataset import CaptureDataset, CapturedVolume
from service.capture.labels import reference_class_names, reference_label_volume
from service.capture.metrics import CaptureMetrics
from service.capture.settings import CaptureSettings
from service.core.manifest import ModelManifest
from service.quality.monitor import SegmentedStudy

logger = logging.getLogger(__name__)

#: Studies waiting to be written; beyond it a capture is dropped (and counted), never waited for.
QUEUE_SIZE = 4


def captured_volume(study: SegmentedStudy, manifest: ModelManifest) -> CapturedVolume:
    """The de-identified part of a segmented study: HU pixels, geometry, model, class names."""
    geometry = study.geometry
    direction = np.stack(
        [
            np.asarray(v, dtype=np.float64).reshape(3)
            for v in (geometry.row_cosine, geometry.column_cosine, geometry.slice_normal)
        ]
    )
    spacing = tuple(float(v) for v in geometry.spacing_zyx)
    return CapturedVolume(
        study_hash=study.outcome.study_uid_hash,
        hu=study.hu,
        spacing_zyx=(spacing[0], spacing[1], spacing[2]),
        direction=direction,
        model_name=manifest.name,
        model_version=manifest.version,
        classes=[c.name for c in sorted(manifest.classes, key=lambda c: c.index)],
    )


class StudyCapture:
    """The capture of one server: hooks for the quality monitor plus its writer thread."""

    def __init__(
        self,
        config: CaptureSettings,
        registry: CollectorRegistry | None = None,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if config.dir is None:
            raise ValueError("StudyCapture needs the setting 'capture.dir' (capture is off).")
        self.config = config
        self.dataset = CaptureDataset(
            config.dir,
            retention=timedelta(days=config.retention_days),
            max_studies=config.max_studies,
            pending_ttl=timedelta(hours=config.pending_hours),
            now=now,
        )
        self.metrics = CaptureMetrics(registry)
        self._jobs: queue.Queue[tuple[str, str, Callable[[], None]] | None] = queue.Queue(
            maxsize=QUEUE_SIZE
        )
        self._idle = threading.Condition()
        self._outstanding = 0
        self._thread = threading.Thread(target=self._work, name="pulmoseg-capture", daemon=True)
        self._thread.start()
        self._submit("-", "start-up", lambda: None)  # applies retention to what a restart finds

    # -- hooks (called on request threads; they never raise) ---------------------------------
    def study_segmented(self, study: SegmentedStudy, manifest: ModelManifest) -> None:
        study_hash = study.outcome.study_uid_hash
        try:
            volume = captured_volume(study, manifest)
        except Exception as exc:
            self._failed(study_hash, "study", exc)
            return
        if self.config.unlabeled:
            self._submit(study_hash, "study", lambda: self._add_unlabeled(volume))
        else:
            self._submit(study_hash, "study", lambda: self.dataset.put_pending(volume))

    def reference_submitted(self, study_hash: str, reference: Any, manifest: ModelManifest) -> None:
        """``reference`` is a ``ReferenceMasks`` (its masks by class index on the study grid).

        Only a reference that annotates every class of the model makes a labeled case: in a
        lesions-only reference the unannotated lung would read as background and teach the
        model to miss it.
        """
        try:
            masks: Mapping[int, np.ndarray] = reference.masks
            names = reference_class_names(list(masks), manifest.classes)
            missing = [c.name for c in manifest.foreground_classes if c.name not in names]
            if missing:
                logger.info(
                    "reference for study %s not captured as a label: it does not annotate %s",
                    study_hash,
                    ", ".join(missing),
                )
                return
            label = reference_label_volume(masks)
        except Exception as exc:
            self._failed(study_hash, "reference", exc)
            return
        self._submit(study_hash, "reference", lambda: self._add_label(study_hash, label, names))

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every capture handed over so far is written (or failed)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._outstanding == 0, timeout)

    def close(self, timeout: float = 60.0) -> None:
        """Finish the queued captures, then stop the writer thread."""
        try:
            self._jobs.put(None, timeout=timeout)
        except queue.Full:
            logger.warning("capture: writer busy at shutdown; queued captures are dropped")
            return
        self._thread.join(timeout)

    # -- the writer thread --------------------------------------------------------------------
    def _add_unlabeled(self, volume: CapturedVolume) -> None:
        if self.dataset.add_unlabeled(volume):
            logger.info("captured study %s as an unlabeled case", volume.study_hash)

    def _add_label(self, study_hash: str, label: np.ndarray, names: Sequence[str]) -> None:
        if self.dataset.add_label(study_hash, label, names):
            logger.info("captured study %s as a labeled case (%s)", study_hash, ", ".join(names))
        else:
            logger.info(
                "reference for study %s not captured: its volume is no longer kept (segmented "
                "before capture was on, or past capture.pending_hours)",
                study_hash,
            )

    def _submit(self, study_hash: str, what: str, job: Callable[[], None]) -> None:
        with self._idle:
            self._outstanding += 1
        try:
            self._jobs.put_nowait((study_hash, what, job))
        except queue.Full:
            self._done()
            self._failed(study_hash, what, RuntimeError(f"capture queue full ({QUEUE_SIZE})"))

    def _work(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            study_hash, what, job = item
            try:
                job()
                removed = self.dataset.prune()
                if removed:
                    logger.info("capture retention removed %d case(s)", len(removed))
                self.metrics.set_counts(self.dataset.counts())
            except Exception as exc:
                self._failed(study_hash, what, exc)
            finally:
                self._done()

    def _done(self) -> None:
        with self._idle:
            self._outstanding -= 1
            self._idle.notify_all()

    def _failed(self, study_hash: str, what: str, exc: BaseException) -> None:
        self.metrics.errors.inc()
        logger.warning(
            "capture of study %s (%s) failed: %s: %s; the study is not affected",
            study_hash,
            what,
            type(exc).__name__,
            exc,
        )


def open_capture(
    config: CaptureSettings, registry: CollectorRegistry | None
) -> StudyCapture | None:
    """The server's capture from its ``capture`` settings; None (off) unless ``dir`` is set."""
    if config.dir is None:
        return None
    logger.info(
        "capturing studies as training data in %s (%s; retention %g days, at most %d)",
        config.dir,
        "every study" if config.unlabeled else "studies with a reference",
        config.retention_days,
        config.max_studies,
    )
    return StudyCapture(config, registry)
