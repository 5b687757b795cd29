"""The gateway's worker: closes idle studies, gets them segmented, delivers the SEG.

One thread walks the spool's work batches in order. Every step is recorded in the spool before
the next one starts, so a crash repeats at most the step in flight:

1. **segment**: the instances' headers are read and the service's own rule
   (:func:`service.dicom.study_input.select_ct_series`) picks the CT series; only that series is
   uploaded, so SR, dose reports, localizers and other modalities never reach the service.
   A study whose CT series was already delivered is skipped (``resegment_duplicates`` to
   override). An unreachable or busy server is retried with backoff; a study the service
   rejects goes to the dead-letter folder with the reason.
2. **deliver**: the SEG goes to every destination; each failed destination is retried with
   exponential backoff until ``max_attempts``, then the SEG goes to the dead-letter folder.

Both steps wait and count by the one :class:`~service.client.retry.RetryPolicy` (the client's),
built from the settings (``max_attempts``, ``retry_initial_delay_s``, ``retry_max_delay_s``).
The worker owns the schedule and its client makes one attempt per pass: the worker's attempts
are minutes apart, survive a restart in the spool and must not block the other batches, which
sleeping inside the client would. So a study gets ``max_attempts`` calls in all, not
``max_attempts`` times the client's own budget.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from service.client.client import ClientError, SegmentationClient
from service.client.retry import RetryPolicy
from service.core.errors import InvalidStudyError
from service.dicom.study_folder import (
    log_skipped,
    no_instances_error,
    read_dataset,
    sort_study_files,
)
from service.dicom.study_input import choose_ct_series
from service.pacs.delivery import DeliveryError, send_c_store, send_stow
from service.pacs.metrics import PacsMetrics
from service.pacs.settings import PacsSettings
from service.pacs.spool import Batch, BatchState, Spool

logger = logging.getLogger(__name__)

#: Headers are enough to choose the series; pixel data stays on disk until the upload.
_DEFER_BYTES = 1024
POLL_S = 0.2

#: ``segment(files) -> (SEG bytes, SR bytes or b"")``; raises ClientError.
Segmenter = Callable[[list[Path]], tuple[bytes, bytes]]


def retry_policy(settings: PacsSettings) -> RetryPolicy:
    """The gateway's retry policy: the client's codes and back-off, the settings' budget."""
    return RetryPolicy(
        max_attempts=settings.retry.max_attempts,
        initial_backoff_s=settings.retry.initial_delay_s,
        max_backoff_s=settings.retry.max_delay_s,
    )


def series_key(series: list[Dataset]) -> str:
    """What "the same study sent twice" means: the same set of CT instances."""
    uids = sorted(str(ds.SOPInstanceUID) for ds in series)
    return hashlib.sha256("\n".join(uids).encode()).hexdigest()[:32]


def _read_spooled(path: Path, name: str) -> Dataset:
    return read_dataset(path, name, defer_size=_DEFER_BYTES)


def choose_ct_files(files: list[Path]) -> tuple[list[Path], list[Dataset]]:
    """The files of the CT series the service will segment, with their (repaired) headers.

    The service's own rules decide: the study-folder rule (files that are not DICOM and
    DICOMDIRs are skipped) and the series selection. Raises InvalidStudyError (nothing usable,
    no CT series, a damaged instance); the spooled files and their headers are not changed.
    """
    root = files[0].parent if files else Path()
    study = sort_study_files(files, root, _read_spooled)
    if not study.datasets:
        raise no_instances_error("The spooled study", study.skipped)
    log_skipped(study.skipped, "spooled study")
    chosen = choose_ct_series(study.datasets)
    return [study.files[i] for i in chosen.positions], chosen.datasets


class Worker:
    """Drives batches through segment → deliver; :meth:`run_once` is one pass (tests call it)."""

    def __init__(
        self,
        settings: PacsSettings,
        spool: Spool,
        metrics: PacsMetrics,
        segmenter: Segmenter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.retry = retry_policy(settings)
        self.spool = spool
        self.metrics = metrics
        self._segment_files = segmenter or self._grpc_segment
        self._clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- thread ----------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pacs-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a bug must not stop deliveries for good; the next pass retries
                logger.exception("PACS worker pass failed")
            self._wake.wait(POLL_S)
            self._wake.clear()

    # -- one pass --------------------------------------------------------------------------------
    def run_once(self) -> None:
        s = self.settings
        self.spool.close_idle(s.study_timeout_s)
        now = self._clock()
        for batch in self.spool.batches():
            if self._stop.is_set():
                break
            if now - batch.closed_at > s.spool.max_age_s:
                self._dead_letter(batch, f"still not done after {s.spool.max_age_s:g} s")
            elif batch.state == BatchState.SEGMENT and now >= batch.next_attempt_at:
                self._segment(batch)
            if batch.state == BatchState.DELIVER and batch.path.is_dir():
                self._deliver(batch)
        self.spool.prune_ledger(s.dedup_window_s)
        self._update_gauges()

    def _update_gauges(self) -> None:
        counts = {"arriving": len(self.spool.open_studies())}
        for batch in self.spool.batches():
            counts[batch.state] = counts.get(batch.state, 0) + 1
        self.metrics.set_spool(self.spool.used_bytes, counts)

    # -- segment ---------------------------------------------------------------------------------
    def _segment(self, batch: Batch) -> None:
        files = batch.instance_files()
        try:
            chosen, series = choose_ct_files(files)
        except InvalidStudyError as exc:
            self._dead_letter(batch, f"not segmented: {exc}")
            return
        key = series_key(series)
        if not self.settings.resegment_duplicates and self._is_duplicate(batch, key):
            logger.info("study %s: this CT series was already segmented; skipped", batch.study_hash)
            self.spool.remove(batch)
            self.metrics.studies.labels(outcome="duplicate").inc()
            return
        logger.info(
            "study %s: uploading %d CT instance(s), %d other instance(s) left out",
            batch.study_hash,
            len(chosen),
            len(files) - len(chosen),
        )
        try:
            seg, sr = self._segment_files(chosen)
        except ClientError as exc:
            self._segment_failed(batch, exc)
            return
        batch.dedup_key = key
        self.spool.store_results(batch, seg, sr, self.settings.destination_names)
        self.metrics.segment_calls.labels(result="success").inc()
        logger.info(
            "study %s: SEG of %d bytes%s ready for delivery",
            batch.study_hash,
            len(seg),
            f" and SR of {len(sr)} bytes" if sr else "",
        )

    def _is_duplicate(self, batch: Batch, key: str) -> bool:
        if self.spool.is_delivered(key, self.settings.dedup_window_s):
            return True
        return any(
            other.dedup_key == key and other.batch_id != batch.batch_id
            for other in self.spool.batches()
        )

    def _grpc_segment(self, files: list[Path]) -> tuple[bytes, bytes]:
        """One attempt (``max_attempts=1``): the worker's own schedule retries, by the policy."""
        s = self.settings
        with SegmentationClient(
            s.grpc.target,
            token=s.grpc.token,
            tls_ca=s.grpc.tls_ca,
            timeout_s=s.grpc.timeout_s,
            client_name=f"pulmoseg-pacs {s.ae_title}",
            max_attempts=1,
        ) as client:
            result = client.segment_files(files, segmentation_type=s.segmentation_type)
        return result.seg_bytes, getattr(result, "sr_bytes", b"") or b""

    def _segment_failed(self, batch: Batch, exc: ClientError) -> None:
        batch.segment_attempts += 1
        delay = self.retry.next_delay(exc.code, batch.segment_attempts)
        if delay is not None:
            batch.next_attempt_at = self._clock() + delay
            self.spool.save(batch)
            self.metrics.segment_calls.labels(result="retry").inc()
            logger.warning(
                "study %s: segmentation attempt %d failed (%s); retry in %.1f s",
                batch.study_hash,
                batch.segment_attempts,
                exc,
                delay,
            )
            return
        self.metrics.segment_calls.labels(result="failed").inc()
        self._dead_letter(
            batch, f"segmentation failed after {batch.segment_attempts} attempt(s): {exc}"
        )

    # -- deliver ---------------------------------------------------------------------------------
    def _deliver(self, batch: Batch) -> None:
        datasets: list[Dataset] = []
        for name in list(batch.pending):
            if self._clock() < batch.next_send_at.get(name, 0.0):
                continue
            if not datasets:
                datasets = [pydicom.dcmread(path) for path in batch.result_files()]
            try:
                self._send(name, datasets)
            except (DeliveryError, OSError) as exc:
                attempts = batch.pending[name] + 1
                batch.pending[name] = attempts
                delay = self.retry.delay_after(attempts)
                if delay is None:
                    # Other destinations keep their chances; the dead-letter move waits for them.
                    del batch.pending[name]
                    batch.failed[name] = f"failed after {attempts} attempt(s): {exc}"
                    self.metrics.sends.labels(destination=name, result="failed").inc()
                    self.spool.save(batch)
                    continue
                batch.next_send_at[name] = self._clock() + delay
                self.metrics.sends.labels(destination=name, result="retry").inc()
                logger.warning(
                    "study %s: delivery to %s failed (%s); retry %d in %.1f s",
                    batch.study_hash,
                    name,
                    exc,
                    attempts,
                    delay,
                )
            else:
                del batch.pending[name]
                batch.next_send_at.pop(name, None)
                self.metrics.sends.labels(destination=name, result="success").inc()
                logger.info("study %s: results delivered to %s", batch.study_hash, name)
            self.spool.save(batch)
        if batch.pending:
            return
        if batch.failed:
            reasons = "; ".join(f"delivery to {n} {why}" for n, why in batch.failed.items())
            self._dead_letter(batch, reasons)
        else:
            self.spool.mark_delivered(batch.dedup_key)
            self.spool.remove(batch)
            self.metrics.studies.labels(outcome="delivered").inc()

    def _send(self, name: str, datasets: list[Dataset]) -> None:
        s = self.settings
        for destination in s.destinations:
            if destination.name == name:
                send_c_store(datasets, destination, s.ae_title, s.network_timeout_s)
                return
        if s.stow_url and name == s.stow_url:
            send_stow(datasets, s.stow_url, s.network_timeout_s)
            return
        # A destination removed from the settings while its SEG waited: say so, do not guess.
        raise DeliveryError(f"destination {name} is no longer configured")

    def _dead_letter(self, batch: Batch, reason: str) -> None:
        self.spool.to_dead_letter(batch, reason)
        self.metrics.studies.labels(outcome="dead_letter").inc()
