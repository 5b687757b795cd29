"""Decide, on the client, which files of a study folder to upload.

Real exports hold more than DICOM instances: a DICOMDIR index, a README, the NIfTI someone
converted, several series. Uploading all of it made the server refuse the whole study for one
stray file, so the client reads each file's header (pixels are not decoded), uploads the DICOM
instances (of one series when asked) and reports what it skipped and why.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

logger = logging.getLogger(__name__)

MEDIA_STORAGE_DIRECTORY_STORAGE = "1.2.840.10008.1.3.10"  # DICOMDIR


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of the upload; ``path`` is relative to the study folder."""

    path: str
    reason: str


@dataclass
class StudyFolder:
    """The files to upload (sorted) and the ones left out, with reasons."""

    files: list[Path] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    series_uids: set[str] = field(default_factory=set)


def _header(path: Path) -> pydicom.Dataset | None:
    """The header of a DICOM file (Part-10 or a bare data set with a SOP Instance UID), or None."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        pass
    except Exception:  # truncated or corrupt: pydicom raises many types
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # forced reads of non-DICOM bytes warn about guessed VRs
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            return ds if ds.get("SOPInstanceUID") else None
        except Exception:
            return None


def scan_study_folder(folder: str | Path, *, series_uid: str | None = None) -> StudyFolder:
    """The DICOM instances under ``folder`` (recursively), minus what cannot be uploaded.

    Hidden files (a part starting with '.') are ignored silently; DICOMDIR indexes, files that
    are not DICOM and, with ``series_uid``, instances of other series are listed as skipped.
    Raises ``FileNotFoundError`` for a missing folder and ``ValueError`` when nothing is left
    (naming the series found, so a typo in ``series_uid`` is easy to fix).
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"Study folder '{root}' does not exist or is not a folder.")
    result = StudyFolder()
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        name = relative.as_posix()
        header = _header(path)
        if header is None:
            result.skipped.append(SkippedFile(name, "not DICOM"))
            continue
        meta = getattr(header, "file_meta", None)
        sop_class = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
        if sop_class == MEDIA_STORAGE_DIRECTORY_STORAGE or "DirectoryRecordSequence" in header:
            result.skipped.append(SkippedFile(name, "DICOMDIR index"))
            continue
        uid = str(header.get("SeriesInstanceUID") or "")
        result.series_uids.add(uid)
        if series_uid is not None and uid != series_uid:
            result.skipped.append(SkippedFile(name, "another series"))
            continue
        result.files.append(path)
    if not result.files:
        if series_uid is not None and result.series_uids:
            found = ", ".join(sorted(u or "(none)" for u in result.series_uids))
            raise ValueError(
                f"Study folder '{root}' holds no instance of series {series_uid}; "
                f"series found: {found}."
            )
        raise ValueError(
            f"Study folder '{root}' holds no DICOM instances to send "
            f"({len(result.skipped)} file(s) skipped)."
        )
    logger.debug("study folder: %d to send, %d skipped", len(result.files), len(result.skipped))
    return result


def describe_skipped(skipped: list[SkippedFile], limit: int = 10) -> str:
    """One line per skipped file (at most ``limit``, then a count), for the CLI."""
    lines = [f"  {s.path} ({s.reason})" for s in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"  … and {len(skipped) - limit} more")
    return "\n".join(lines)
