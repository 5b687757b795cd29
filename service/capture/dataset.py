"""The capture folder as a training dataset: case files, ``manifest.json``, pending volumes.

Layout (the folder is a dataset ``pulmoseg train --data`` reads directly)::

    manifest.json                  {"format": ..., "studies": [{"id", "image", "label", ...}]}
    cases/<study hash>/image.npz   volume: int16 HU (z, y, x), spacing_zyx, direction
    cases/<study hash>/label.npz   volume: uint8 class indices of the model (labeled cases)
    pending/<study hash>.npz       a segmented study waiting for its reference (not a case)

The manifest is the truth: a case is written first and listed second, and pruning unlists first
and deletes second, so a crash in between leaves an unlisted folder, which the next prune
deletes. Not thread-safe: one writer (the capture worker) owns a folder.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from service.capture.files import remove_stale_temp_files, write_json_atomic, write_npz_atomic

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CASES = "cases"
PENDING = "pending"
FORMAT = "pulmoseg-capture/1"
#: A temporary file older than this was left by a crash (a live write takes seconds).
STALE_TEMP_S = 3600.0


@dataclass(frozen=True)
class CapturedVolume:
    """What a case keeps of a study: HU pixels and geometry, nothing that names a patient."""

    study_hash: str
    hu: np.ndarray
    spacing_zyx: tuple[float, float, float]
    #: Rows: row cosine, column cosine, slice normal (LPS) of the (x, y, z) voxel axes.
    direction: np.ndarray
    model_name: str
    model_version: str
    #: Class names of the model by index (the label volume's meaning).
    classes: Sequence[str]

    def arrays(self) -> dict[str, np.ndarray]:
        hu = np.clip(np.rint(np.asarray(self.hu, dtype=np.float32)), -32768, 32767)
        return {
            "volume": hu.astype(np.int16),
            "spacing_zyx": np.asarray(self.spacing_zyx, dtype=np.float64),
            "direction": np.asarray(self.direction, dtype=np.float64).reshape(3, 3),
        }

    def entry(self, captured_at: datetime) -> dict[str, Any]:
        return {
            "id": self.study_hash,
            "image": f"{CASES}/{self.study_hash}/image.npz",
            "labeled": False,
            "captured_at": captured_at.isoformat(),
            "model_name": self.model_name,
            "model_version": self.model_version,
            "classes": list(self.classes),
        }


class CaptureDataset:
    """One capture folder with its limits; ``now`` is injectable so tests can age cases."""

    def __init__(
        self,
        root: Path,
        *,
        retention: timedelta,
        max_studies: int,
        pending_ttl: timedelta,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.root = Path(root)
        self.retention = retention
        self.max_studies = max_studies
        self.pending_ttl = pending_ttl
        self.now = now

    # -- reading --------------------------------------------------------------------------------
    def studies(self) -> list[dict[str, Any]]:
        path = self.root / MANIFEST
        if not path.is_file():
            return []
        raw = json.loads(path.read_text())
        return list(raw.get("studies", [])) if isinstance(raw, dict) else []

    def counts(self) -> dict[str, int]:
        studies = self.studies()
        labeled = sum(1 for s in studies if s.get("labeled"))
        return {"labeled": labeled, "unlabeled": len(studies) - labeled}

    def pending_path(self, study_hash: str) -> Path:
        return self.root / PENDING / f"{study_hash}.npz"

    def case_dir(self, study_hash: str) -> Path:
        return self.root / CASES / study_hash

    # -- writing --------------------------------------------------------------------------------
    def _save(self, studies: list[dict[str, Any]]) -> None:
        write_json_atomic(self.root / MANIFEST, {"format": FORMAT, "studies": studies})

    def put_pending(self, volume: CapturedVolume) -> None:
        """Keep a segmented study's volume until its reference arrives (or it expires)."""
        meta = volume.entry(self.now())
        write_npz_atomic(
            self.pending_path(volume.study_hash),
            {**volume.arrays(), "meta": np.array(json.dumps(meta))},
        )

    def add_unlabeled(self, volume: CapturedVolume) -> bool:
        """A new (or refreshed) unlabeled case; False (nothing written) when the study is
        already a labeled case: its image must stay the one its label was drawn on."""
        studies = self.studies()
        if any(s.get("id") == volume.study_hash and s.get("labeled") for s in studies):
            return False
        write_npz_atomic(self.case_dir(volume.study_hash) / "image.npz", volume.arrays())
        others = [s for s in studies if s.get("id") != volume.study_hash]
        self._save([*others, volume.entry(self.now())])
        return True

    def add_label(
        self, study_hash: str, label: np.ndarray, reference_classes: Sequence[str]
    ) -> bool:
        """Make ``study_hash`` a labeled case; False when its volume is neither a case nor
        pending (never captured, pruned or expired)."""
        studies = self.studies()
        entry = next((s for s in studies if s.get("id") == study_hash), None)
        pending = self.pending_path(study_hash)
        case = self.case_dir(study_hash)
        if pending.is_file():  # the newest segmentation: the grid the reference was read on
            entry = _pending_meta(pending)
            case.mkdir(parents=True, exist_ok=True)
            pending.replace(case / "image.npz")  # same file system: an atomic move
        elif entry is None:
            return False
        with np.load(case / "image.npz", allow_pickle=False) as data:
            shape, spacing = data["volume"].shape, data["spacing_zyx"]
        if label.shape != shape:
            raise ValueError(
                f"The reference label of study {study_hash} has shape {label.shape}, its "
                f"captured volume {shape}."
            )
        write_npz_atomic(
            case / "label.npz", {"volume": label.astype(np.uint8), "spacing_zyx": spacing}
        )
        entry = {
            **entry,
            "label": f"{CASES}/{study_hash}/label.npz",
            "labeled": True,
            "labeled_at": self.now().isoformat(),
            "reference_classes": list(reference_classes),
        }
        self._save([*(s for s in studies if s.get("id") != study_hash), entry])
        return True

    # -- retention ------------------------------------------------------------------------------
    def prune(self) -> list[str]:
        """Apply the limits: cases past retention, then the oldest beyond ``max_studies``,
        expired pending volumes, unlisted case folders and stale temporary files. Returns the
        study hashes of the cases removed."""
        now = self.now()
        studies = sorted(self.studies(), key=lambda s: str(s.get("captured_at", "")))
        keep = [s for s in studies if now - _when(s) <= self.retention]
        keep = keep[max(0, len(keep) - self.max_studies) :]
        kept_ids = {str(s["id"]) for s in keep}
        removed = [str(s["id"]) for s in studies if str(s["id"]) not in kept_ids]
        if removed:
            self._save(keep)  # unlist first: a crash now leaves only unlisted folders
        cases = self.root / CASES
        if cases.is_dir():
            for folder in cases.iterdir():
                if folder.is_dir() and folder.name not in kept_ids:
                    shutil.rmtree(folder, ignore_errors=True)
        self._prune_pending(now)
        remove_stale_temp_files(self.root, STALE_TEMP_S)
        return removed

    def _prune_pending(self, now: datetime) -> None:
        """Pending volumes expire after ``pending_ttl``; at most ``max_studies`` wait at once
        (the oldest go first), so a busy server cannot fill the disk with them either."""
        folder = self.root / PENDING
        if not folder.is_dir():
            return
        waiting: list[tuple[datetime, Path]] = []
        for path in folder.glob("*.npz"):
            try:
                when = _when(_pending_meta(path))
            except Exception:  # unreadable (e.g. truncated by a full disk): useless
                path.unlink(missing_ok=True)
                continue
            if now - when > self.pending_ttl:
                path.unlink(missing_ok=True)
            else:
                waiting.append((when, path))
        waiting.sort(key=lambda item: item[0])
        for _, path in waiting[: max(0, len(waiting) - self.max_studies)]:
            path.unlink(missing_ok=True)


def _when(entry: dict[str, Any]) -> datetime:
    try:
        when = datetime.fromisoformat(str(entry["captured_at"]))
    except (KeyError, ValueError):
        return datetime.min.replace(tzinfo=UTC)  # unreadable: the first to go
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _pending_meta(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
    if not isinstance(meta, dict):
        raise ValueError(f"'{path.name}' holds no capture metadata.")
    return meta
