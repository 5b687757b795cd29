"""The durable spool: received instances on disk before the sender hears "stored".

A PACS deletes or forgets what it sent once it gets a Success status, so nothing may be
acknowledged that is not safely on disk: :meth:`Spool.store` writes to a temporary file,
fsyncs it, renames it into place and fsyncs the folder before it returns. The folders are the
whole state, so a restart (or a SIGKILL) resumes where it stopped:

``incoming/<study hash>/<instance hash>.dcm``
    instances of studies still arriving (grouped by StudyInstanceUID);
``work/<batch id>/``
    a closed study (``instances/`` plus ``batch.json``); once segmented the instances are
    deleted and only the results (``seg.dcm``, and ``sr.dcm`` when the server writes a
    report) wait for delivery;
``ledger/<dedup key>``
    empty files naming the CT series already delivered (duplicate detection);
dead-letter folder (outside the spool)
    work that failed for good, with ``reason.txt``.

Names are hashes of UIDs (``service.core.identifiers``), never patient identifiers; files are
readable by the owner only. The spool is bounded: :class:`SpoolFullError` when an instance
would take it over ``max_bytes`` (the listener answers Out of Resources).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from service.core.identifiers import uid_hash

logger = logging.getLogger(__name__)

BATCH_FILE = "batch.json"
SEG_FILE = "seg.dcm"
SR_FILE = "sr.dcm"
#: Result objects in the order they are sent: the SEG first, then the SR that references it.
RESULT_FILES = (SEG_FILE, SR_FILE)
INSTANCES = "instances"
REASON_FILE = "reason.txt"
_TMP_SUFFIX = ".tmp"
_DIR_MODE = 0o700
_FILE_MODE = 0o600


class SpoolFullError(Exception):
    """Storing the instance would take the spool over its size limit."""


class BatchState:
    """Where a closed study stands (plain strings so ``batch.json`` stays readable)."""

    SEGMENT = "segment"
    DELIVER = "deliver"


@dataclass
class Batch:
    """One closed study in ``work/``; ``batch.json`` holds everything but the files."""

    batch_id: str
    study_hash: str
    closed_at: float
    state: str = BatchState.SEGMENT
    #: Failed attempts to get the study segmented (gRPC server unreachable).
    segment_attempts: int = 0
    next_attempt_at: float = 0.0
    #: Destination name -> failed attempts so far, for destinations still waiting for the SEG.
    pending: dict[str, int] = field(default_factory=dict)
    #: Destination name -> earliest time of its next attempt.
    next_send_at: dict[str, float] = field(default_factory=dict)
    #: Destination name -> why it failed for good (the batch goes to the dead-letter folder once
    #: no destination is pending any more).
    failed: dict[str, str] = field(default_factory=dict)
    dedup_key: str = ""
    calling_aets: list[str] = field(default_factory=list)
    path: Path = field(default=Path(), compare=False)

    @property
    def instances_dir(self) -> Path:
        return self.path / INSTANCES

    @property
    def seg_path(self) -> Path:
        return self.path / SEG_FILE

    def result_files(self) -> list[Path]:
        return [self.path / name for name in RESULT_FILES if (self.path / name).is_file()]

    def instance_files(self) -> list[Path]:
        folder = self.instances_dir
        return sorted(folder.glob("*.dcm")) if folder.is_dir() else []


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (POSIX needs the folder synced too)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that after return it survives a crash or power loss:
    temp file, fsync, atomic rename, fsync of the folder. A crash before the rename leaves
    only a ``.tmp`` file, which :class:`Spool` removes on start."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}{_TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _make_dir(path: Path) -> None:
    if not path.is_dir():
        path.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        fsync_dir(path.parent)


def _tree_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Spool:
    """Thread-safe: the listener's association threads store while the worker closes studies."""

    def __init__(
        self,
        root: Path,
        dead_letter: Path,
        max_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self.dead_letter_root = Path(dead_letter)
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self.incoming = self.root / "incoming"
        self.work = self.root / "work"
        self.ledger = self.root / "ledger"
        for folder in (self.root, self.incoming, self.work, self.ledger, self.dead_letter_root):
            _make_dir(folder)
        #: study hash -> time of the last instance (restart counts as activity: see recover()).
        self._activity: dict[str, float] = {}
        self._calling: dict[str, set[str]] = {}
        self._used = 0
        self.recover()

    # -- start-up --------------------------------------------------------------------------------
    def recover(self) -> None:
        """Rebuild the in-memory view from the folders after a start or a crash.

        Half-written ``.tmp`` files are deleted (their sender never got "stored"). Studies
        still in ``incoming/`` count as active *now*, so a sender that was cut off by the
        crash gets a whole study timeout to resume before the study is closed.
        """
        with self._lock:
            for tmp in self.root.rglob(f"*{_TMP_SUFFIX}"):
                tmp.unlink(missing_ok=True)
            now = self._clock()
            self._activity = {d.name: now for d in self.incoming.iterdir() if d.is_dir()}
            self._calling = {key: set() for key in self._activity}
            self._used = _tree_bytes(self.incoming) + _tree_bytes(self.work)
        if self._activity:
            logger.info("spool recovery: %d study(ies) still arriving", len(self._activity))

    # -- receiving -------------------------------------------------------------------------------
    @property
    def used_bytes(self) -> int:
        return self._used

    def store(self, study_uid: str, sop_uid: str, data: bytes, calling_aet: str = "") -> Path:
        """Write one instance durably; returns its path. Raises :class:`SpoolFullError`."""
        study = uid_hash(study_uid)
        with self._lock:
            folder = self.incoming / study
            path = folder / f"{uid_hash(sop_uid)}.dcm"
            replaced = path.stat().st_size if path.exists() else 0
            if self._used - replaced + len(data) > self.max_bytes:
                raise SpoolFullError(
                    f"the spool holds {self._used} bytes; {len(data)} more would exceed "
                    f"its limit of {self.max_bytes} bytes"
                )
            _make_dir(folder)
            write_durably(path, data)
            self._used += len(data) - replaced
            self._activity[study] = self._clock()
            self._calling.setdefault(study, set()).add(calling_aet)
        return path

    def open_studies(self) -> dict[str, float]:
        """Study hash -> time of its last instance, for studies still arriving."""
        with self._lock:
            return dict(self._activity)

    # -- closing ---------------------------------------------------------------------------------
    def close_idle(self, timeout_s: float) -> list[Batch]:
        """Close every study idle for ``timeout_s``: its instances move to a new work batch.

        Instances of the same study that arrive later start a new incoming study (and batch).
        """
        now = self._clock()
        closed = []
        with self._lock:
            for study, last in list(self._activity.items()):
                if now - last >= timeout_s:
                    closed.append(self._close(study, now))
        return closed

    def _close(self, study: str, now: float) -> Batch:
        batch_id = f"{study}-{time.time_ns():x}"
        batch = Batch(
            batch_id=batch_id,
            study_hash=study,
            closed_at=now,
            calling_aets=sorted(a for a in self._calling.pop(study, set()) if a),
            path=self.work / batch_id,
        )
        _make_dir(batch.path)
        # batch.json first: a crash before the rename leaves an empty batch (dropped on
        # recovery) and the instances still in incoming/, so nothing is lost.
        self.save(batch)
        os.replace(self.incoming / study, batch.instances_dir)
        fsync_dir(self.incoming)
        fsync_dir(batch.path)
        del self._activity[study]
        return batch

    # -- work ------------------------------------------------------------------------------------
    def batches(self) -> list[Batch]:
        """Every batch in ``work/``, oldest first; batches without files are removed."""
        out = []
        for folder in sorted(self.work.iterdir()):
            meta = folder / BATCH_FILE
            if not meta.is_file():
                shutil.rmtree(folder, ignore_errors=True)
                continue
            batch = Batch(**json.loads(meta.read_text()), path=folder)
            if batch.state == BatchState.SEGMENT and not batch.instance_files():
                logger.warning("dropping empty batch of study %s", batch.study_hash)
                self.remove(batch)
                continue
            out.append(batch)
        return sorted(out, key=lambda b: b.closed_at)

    def save(self, batch: Batch) -> None:
        data = asdict(batch)
        data.pop("path")
        write_durably(batch.path / BATCH_FILE, json.dumps(data, indent=1).encode())

    def store_results(self, batch: Batch, seg: bytes, sr: bytes, destinations: list[str]) -> None:
        """Keep the SEG (and the SR, if any) for delivery and delete the source instances: the
        spool holds no more than the next step needs."""
        write_durably(batch.seg_path, seg)
        if sr:
            write_durably(batch.path / SR_FILE, sr)
        batch.state = BatchState.DELIVER
        batch.pending = {name: 0 for name in destinations}
        batch.next_send_at = {name: 0.0 for name in destinations}
        self.save(batch)
        freed = _tree_bytes(batch.instances_dir)
        shutil.rmtree(batch.instances_dir, ignore_errors=True)
        fsync_dir(batch.path)
        with self._lock:
            self._used += len(seg) + len(sr) - freed

    def remove(self, batch: Batch) -> None:
        """Delete a finished (or empty) batch."""
        size = _tree_bytes(batch.path)
        shutil.rmtree(batch.path, ignore_errors=True)
        fsync_dir(self.work)
        with self._lock:
            self._used = max(0, self._used - size)

    def to_dead_letter(self, batch: Batch, reason: str) -> Path:
        """Move a batch out of the spool, with a reason an operator can read; returns its path."""
        size = _tree_bytes(batch.path)
        target = self.dead_letter_root / batch.batch_id
        shutil.move(str(batch.path), str(target))
        write_durably(target / REASON_FILE, (reason.rstrip() + "\n").encode())
        fsync_dir(self.work)
        with self._lock:
            self._used = max(0, self._used - size)
        logger.warning("study %s moved to the dead-letter folder: %s", batch.study_hash, reason)
        return target

    # -- duplicates ------------------------------------------------------------------------------
    def is_delivered(self, dedup_key: str, window_s: float) -> bool:
        entry = self.ledger / dedup_key
        try:
            return self._clock() - entry.stat().st_mtime <= window_s
        except FileNotFoundError:
            return False

    def mark_delivered(self, dedup_key: str) -> None:
        write_durably(self.ledger / dedup_key, b"")

    def prune_ledger(self, window_s: float) -> None:
        now = self._clock()
        for entry in self.ledger.iterdir():
            if now - entry.stat().st_mtime > window_s:
                entry.unlink(missing_ok=True)
