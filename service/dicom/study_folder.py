"""One rule for which files of a study are segmented and which are skipped, for every entry point.

Real exports hold more than DICOM instances: a DICOMDIR index, a README, the NIfTI someone
converted, ``.DS_Store``. The client (``pulmoseg segment DIR``), the server (instances uploaded
over gRPC), the MAP app (``python -m service.app -i DIR``) and the PACS gateway (its spooled
instances) all decide with this module, so a folder one of them segments the others segment too:

* hidden files and folders (a path part starting with '.') are skipped unread;
* a DICOMDIR (by its PS3.10 file name, or by its Media Storage Directory Storage SOP class)
  is skipped: it indexes images, it is not one;
* bytes that are not DICOM at all (no 'DICM' marker and no data set with a SOP Instance UID)
  are skipped;
* DICOM that is *damaged* stays in and fails with the reader's precise error: dropping a slice
  without a word would change the volume that gets segmented.

Every skip is listed (:class:`SkippedFile`, for the client's output, ``summary.json``, a
dead-letter reason) and logged as counts by reason, never by name (an export may name its
folders after the patient). A study with nothing left is an ``InvalidStudyError`` naming
what was skipped. Whatever the entry point, what the rule keeps and skips is one
:class:`StudyInstances`.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from io import BytesIO
from pathlib import Path, PurePath, PurePosixPath

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from service.core.dicom_uids import MEDIA_STORAGE_DIRECTORY_STORAGE
from service.core.errors import InvalidStudyError

logger = logging.getLogger(__name__)

#: How many skipped names an error message shows before it only counts the rest.
_MAX_NAMES_IN_MESSAGE = 5


class SkipReason(StrEnum):
    """Why an item of a study was left out (the text users read next to the name)."""

    HIDDEN = "hidden"
    DICOMDIR = "DICOMDIR index"
    NOT_DICOM = "not DICOM"
    OTHER_SERIES = "another series"


@dataclass(frozen=True)
class SkippedFile:
    """An item left out of a study: a path relative to the study folder (a hidden folder ends
    with '/'), or an upload's ``instance #i``."""

    path: str
    reason: str


class NotDicomError(InvalidStudyError):
    """The bytes are not DICOM at all, as opposed to DICOM that is damaged.

    The study-folder rule skips the first kind and fails on the second; outside a study (a
    single instance parsed on its own) it is just an ``InvalidStudyError``.
    """


def label(name: str) -> str:
    """How messages name an item: quoted, or '(unnamed)'."""
    return f"'{name}'" if name else "(unnamed)"


# --- reading one item ------------------------------------------------------------------------


def read_dataset(
    source: bytes | Path,
    name: str,
    *,
    stop_before_pixels: bool = False,
    defer_size: int | None = None,
) -> Dataset:
    """Read one DICOM item from bytes or a file, telling "not DICOM" from "damaged DICOM".

    Part-10 data is read strictly first. Data without preamble or file meta is retried with
    ``force=True`` and accepted only if it decodes into a data set carrying a SOP Instance UID,
    because forced reading turns almost any byte string into *some* data set. Raises
    :class:`NotDicomError` for bytes that are not DICOM and ``InvalidStudyError`` for DICOM that
    cannot be read.
    """
    size = len(source) if isinstance(source, bytes) else source.stat().st_size
    if size == 0:
        raise NotDicomError(f"Instance {label(name)} is empty (0 bytes); expected a DICOM file.")

    def read(force: bool) -> Dataset:
        target = BytesIO(source) if isinstance(source, bytes) else source
        return pydicom.dcmread(
            target, force=force, stop_before_pixels=stop_before_pixels, defer_size=defer_size
        )

    try:
        return read(force=False)
    except InvalidDicomError:
        pass
    except Exception as exc:  # pydicom raises many types for truncated/corrupt files
        raise InvalidStudyError(
            f"Instance {label(name)} is not a readable DICOM file ({size} bytes): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    not_dicom = NotDicomError(
        f"Instance {label(name)} is not DICOM ({size} bytes, no 'DICM' marker and no readable "
        "data set); expected a DICOM Part-10 file."
    )
    # Forced parsing of non-DICOM bytes makes pydicom warn about guessed VRs: noise, not news.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = read(force=True)
            sop_instance_uid = ds.get("SOPInstanceUID")
        except Exception as exc:
            raise not_dicom from exc
    if not sop_instance_uid:
        raise not_dicom
    _fill_transfer_syntax(ds)
    return ds


def _fill_transfer_syntax(ds: Dataset) -> None:
    """Record the encoding pydicom detected, since pixel decoding needs a Transfer Syntax UID."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = ds.original_encoding
    if implicit:
        syntax = ImplicitVRLittleEndian
    else:
        syntax = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    if meta is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax


# --- the rule --------------------------------------------------------------------------------


def is_hidden(relative: PurePath) -> bool:
    """A path (relative to the study folder) with a part starting with '.', e.g. ``.DS_Store``."""
    return any(part.startswith(".") for part in relative.parts)


def is_dicomdir(ds: Dataset) -> bool:
    """A DICOMDIR index, recognised by its SOP class or by its directory records."""
    meta = getattr(ds, "file_meta", None)
    sop_class = meta.get("MediaStorageSOPClassUID") if meta is not None else None
    return sop_class == MEDIA_STORAGE_DIRECTORY_STORAGE or "DirectoryRecordSequence" in ds


def is_dicomdir_name(name: str) -> bool:
    """PS3.10 reserves the file name DICOMDIR for a file-set's index (any case, any folder)."""
    return PurePosixPath(name).name.upper() == "DICOMDIR"


def keep_or_skip(name: str, read: Callable[[], Dataset]) -> Dataset | SkippedFile:
    """The rule for one item: its data set, or why it is skipped.

    ``read`` (e.g. :func:`read_dataset`) must raise :class:`NotDicomError` for bytes that are
    not DICOM; any other error it raises is the study's error and propagates. A file named
    DICOMDIR is skipped unread: PS3.10 reserves the name, and an index can be large.
    """
    if is_dicomdir_name(name):
        return SkippedFile(name, SkipReason.DICOMDIR)
    try:
        ds = read()
    except NotDicomError:
        return SkippedFile(name, SkipReason.NOT_DICOM)
    return SkippedFile(name, SkipReason.DICOMDIR) if is_dicomdir(ds) else ds


def no_instances_error(where: str, skipped: Sequence[SkippedFile]) -> InvalidStudyError:
    """``<where> holds no DICOM instances``, naming what was skipped (the first few)."""
    if not skipped:
        return InvalidStudyError(f"{where} holds no DICOM instances.")
    shown = ", ".join(f"{s.path} ({s.reason})" for s in skipped[:_MAX_NAMES_IN_MESSAGE])
    more = len(skipped) - _MAX_NAMES_IN_MESSAGE
    return InvalidStudyError(
        f"{where} holds no DICOM instances; skipped {_plural(len(skipped), 'item')}: "
        f"{shown}{f' and {more} more' if more > 0 else ''}."
    )


def log_skipped(skipped: Sequence[SkippedFile], where: str) -> None:
    """Counts by reason only: a file or folder name may carry a patient's name."""
    if not skipped:
        return
    counts = Counter(s.reason for s in skipped)
    logger.info(
        "%s: skipped %s (%s)",
        where,
        _plural(len(skipped), "item"),
        ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items())),
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# --- folders ---------------------------------------------------------------------------------


def walk_study_folder(folder: str | Path) -> tuple[list[Path], list[SkippedFile]]:
    """The regular files under ``folder`` (recursively, sorted) and the hidden items skipped.

    A hidden folder is listed once (``.git/``), not file by file, and is never entered.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InvalidStudyError(f"Study folder '{root}' does not exist or is not a folder.")
    files: list[Path] = []
    skipped: list[SkippedFile] = []
    for directory, subfolders, names in os.walk(root):
        here = Path(directory)
        for sub in subfolders:
            if sub.startswith("."):
                skipped.append(SkippedFile(f"{_relative(here / sub, root)}/", SkipReason.HIDDEN))
        subfolders[:] = [sub for sub in subfolders if not sub.startswith(".")]
        for name in names:
            path = here / name
            if name.startswith("."):
                skipped.append(SkippedFile(_relative(path, root), SkipReason.HIDDEN))
            elif path.is_file():
                files.append(path)
    return sorted(files), sorted(skipped, key=lambda s: s.path)


def _relative(path: Path, root: Path) -> str:
    """How messages name a file: relative to the study folder (its name if outside it)."""
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name


@dataclass
class StudyInstances:
    """The DICOM instances of one study that the rule kept, and what it skipped.

    ``datasets`` are whole instances or headers only, as the caller read them. ``files[i]`` is
    the file ``datasets[i]`` came from; uploaded instances have no files (``files`` is empty).
    """

    datasets: list[Dataset] = field(default_factory=list, repr=False)
    skipped: list[SkippedFile] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def series_uids(self) -> set[str]:
        """The Series Instance UIDs of the instances kept ('' for an instance without one)."""
        return {str(ds.get("SeriesInstanceUID") or "") for ds in self.datasets}


def sort_study_files(
    files: Iterable[Path], root: Path, read: Callable[[Path, str], Dataset]
) -> StudyInstances:
    """Apply :func:`keep_or_skip` to ``files`` (named relative to ``root``), in order.

    ``read(path, name)`` reads one file (see :func:`keep_or_skip`). Does not raise when nothing
    is kept: the caller knows what to call the study in its message.
    """
    result = StudyInstances()
    for path in files:
        name = _relative(path, root)
        item = keep_or_skip(name, partial(read, path, name))
        if isinstance(item, SkippedFile):
            result.skipped.append(item)
        else:
            result.files.append(path)
            result.datasets.append(item)
    return result


def sort_study_folder(folder: str | Path, read: Callable[[Path, str], Dataset]) -> StudyInstances:
    """Every DICOM instance under ``folder`` by the rule above, whatever the file names.

    ``read(path, name)`` reads one file: whole and decoded for segmentation
    (``service.dicom.study_input.read_study_folder``), its header for the client's upload list.
    Raises ``InvalidStudyError`` for a missing folder and when nothing is left, naming what was
    skipped.
    """
    root = Path(folder)
    files, hidden = walk_study_folder(root)
    result = sort_study_files(files, root, read)
    result.skipped = sorted([*hidden, *result.skipped], key=lambda s: s.path)
    if not result.datasets:
        raise no_instances_error(f"Study folder '{root}'", result.skipped)
    log_skipped(result.skipped, "study folder")
    return result


# --- the client's view -----------------------------------------------------------------------


def _read_header(path: Path, name: str) -> Dataset:
    """The header only: the client decides what to send, the server decodes the pixels."""
    return read_dataset(path, name, stop_before_pixels=True)


def scan_study_folder(folder: str | Path, *, series_uid: str | None = None) -> StudyInstances:
    """The files under ``folder`` the client uploads (with their headers): the study-folder
    rule, then the series.

    With ``series_uid``, instances of other series are skipped too ("another series"). Raises
    ``InvalidStudyError`` (a ``ValueError``) for a missing folder and when nothing is left,
    naming the series found, so a typo in ``series_uid`` is easy to fix.
    """
    study = sort_study_folder(folder, _read_header)
    if series_uid is None:
        return study
    result = StudyInstances(skipped=list(study.skipped))
    for path, header in zip(study.files, study.datasets, strict=True):
        if str(header.get("SeriesInstanceUID") or "") != series_uid:
            result.skipped.append(
                SkippedFile(_relative(path, Path(folder)), SkipReason.OTHER_SERIES)
            )
            continue
        result.files.append(path)
        result.datasets.append(header)
    if not result.files:
        found = ", ".join(sorted(u or "(none)" for u in study.series_uids))
        raise InvalidStudyError(
            f"Study folder '{folder}' holds no instance of series {series_uid}; "
            f"series found: {found}."
        )
    result.skipped.sort(key=lambda s: s.path)
    return result


def describe_skipped(skipped: Sequence[SkippedFile], limit: int = 10) -> str:
    """One line per skipped item (at most ``limit``, then a count), for command-line output."""
    lines = [f"  {s.path} ({s.reason})" for s in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"  … and {len(skipped) - limit} more")
    return "\n".join(lines)
