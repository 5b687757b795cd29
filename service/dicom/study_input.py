"""Turn what a caller uploads (bytes or a folder) into the CT series pulmoseg will segment.

The MONAI Deploy anchor loader ignores files without a ``.dcm`` suffix and silently drops
instances with an empty SOP Class UID; both are common in real PACS exports, so this module reads
every regular file and decides by content. What is skipped (hidden files, DICOMDIR, bytes that
are not DICOM) follows the one study-folder rule of :mod:`service.dicom.study_folder`, for
uploads and folders alike. Every rejection is an :class:`InvalidStudyError` whose message names
the instance by index or file name — never by a patient identifier.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from pydicom.dataset import Dataset

from service.core.dicom_uids import CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE
from service.core.errors import InvalidStudyError
from service.core.identifiers import uid_hash
from service.dicom.identifier_repair import repair_identifiers
from service.dicom.study_folder import (
    SkippedFile,
    StudyInstances,
    keep_or_skip,
    label,
    log_skipped,
    no_instances_error,
    read_dataset,
    sort_study_folder,
)

logger = logging.getLogger(__name__)

_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_MAX_NAMES_IN_MESSAGE = 5


def parse_instance(blob: bytes, *, name: str = "") -> Dataset:
    """Parse one uploaded DICOM instance; pixel data stays encoded until the volume is built.

    Raises ``NotDicomError`` (an ``InvalidStudyError``) for bytes that are not DICOM and
    ``InvalidStudyError`` for DICOM that is damaged (see
    :func:`service.dicom.study_folder.read_dataset`).
    """
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise TypeError(
            f"Argument 'blob' of instance {label(name)} must be bytes, got {type(blob).__name__}."
        )
    return _completed(read_dataset(bytes(blob), name), name)


def _parse_file(path: Path, name: str) -> Dataset:
    return _completed(read_dataset(path, name), name)


def _completed(ds: Dataset, name: str) -> Dataset:
    """Decode every element now and drop what pydicom keeps for deferred reads."""
    _check_elements_decode(ds, name)
    # pydicom keeps the file it read from (``buffer``) for deferred reads, which we never make:
    # every element, pixel data included, is read by now. Holding it would keep a second copy
    # of the whole upload on each dataset for the life of the study.
    if getattr(ds, "buffer", None) is not None:
        ds.buffer = None
    if name and not isinstance(getattr(ds, "filename", None), str):
        # Lets later errors (e.g. in series_to_volume) name the upload, never the patient.
        ds.filename = name
    return ds


def _check_elements_decode(ds: Dataset, name: str) -> None:
    """Convert every top-level element now so corrupt files fail here, not deep in the pipeline."""
    try:
        for _ in ds:
            pass
    except Exception as exc:
        raise InvalidStudyError(
            f"Instance {label(name)} has corrupt DICOM elements: {type(exc).__name__}: {exc}"
        ) from exc


def read_study_folder(path: str | Path) -> StudyInstances:
    """Read every regular file below ``path`` as DICOM, whatever its suffix.

    Hidden files, DICOMDIR indexes and files that are not DICOM are skipped and listed; a
    damaged DICOM file fails the study, naming the file (relative to ``path``).
    """
    study = sort_study_folder(path, _parse_file)
    logger.info("loaded %d instances from a study folder", len(study.datasets))
    return study


def load_instances_from_dir(path: str | Path) -> list[Dataset]:
    """The data sets of :func:`read_study_folder`, for callers that need no skip list."""
    return read_study_folder(path).datasets


#: How often (in instances) parsing reports progress and checks for cancellation.
_PARSE_REPORT_EVERY = 16


def read_uploaded_study(
    blobs: Sequence[bytes],
    *,
    on_progress: Callable[[float], None] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
) -> StudyInstances:
    """Parse uploaded instances (named ``instance #i``) in upload order, by the folder rule.

    ``on_progress`` gets the fraction parsed; ``is_cancelled`` is polled every few instances
    and stops the work with ``CancelledError`` (a client that hung up should not cost a study).
    """
    if not blobs:
        raise InvalidStudyError("No DICOM instances were sent.")
    total = len(blobs)
    datasets: list[Dataset] = []
    skipped: list[SkippedFile] = []
    for index, blob in enumerate(blobs):
        if index % _PARSE_REPORT_EVERY == 0:
            if is_cancelled is not None and is_cancelled():
                raise CancelledError("the study was cancelled while its instances were parsed")
            if on_progress is not None and index:
                on_progress(index / total)
        name = f"instance #{index}"
        item = keep_or_skip(name, partial(parse_instance, blob, name=name))
        if isinstance(item, SkippedFile):
            skipped.append(item)
        else:
            datasets.append(item)
    if not datasets:
        raise no_instances_error("The upload", skipped)
    log_skipped(skipped, "upload")
    if on_progress is not None:
        on_progress(1.0)
    return StudyInstances(datasets, skipped)


def parse_instances(
    blobs: Sequence[bytes],
    *,
    on_progress: Callable[[float], None] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
) -> list[Dataset]:
    """The data sets of :func:`read_uploaded_study`, for callers that need no skip list."""
    return read_uploaded_study(blobs, on_progress=on_progress, is_cancelled=is_cancelled).datasets


@dataclass(frozen=True)
class StudySource:
    """Where one study comes from: uploaded Part-10 bytes (gRPC) or a folder (MAP, CLI)."""

    instances: Sequence[bytes] | None = field(default=None, repr=False)
    folder: Path | None = None

    def __post_init__(self) -> None:
        if (self.instances is None) == (self.folder is None):
            raise ValueError(
                "StudySource needs exactly one of 'instances' or 'folder', got "
                f"{'both' if self.folder is not None else 'neither'}."
            )

    @classmethod
    def from_bytes(cls, instances: Sequence[bytes]) -> StudySource:
        return cls(instances=list(instances))

    @classmethod
    def from_folder(cls, folder: str | Path) -> StudySource:
        return cls(folder=Path(folder))


def load_study(
    source: StudySource,
    *,
    on_progress: Callable[[float], None] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
) -> StudyInstances:
    """Every DICOM instance of ``source`` as a dataset, and what was skipped (one rule for
    uploads and folders)."""
    if not isinstance(source, StudySource):
        raise TypeError(f"Argument 'source' must be a StudySource, got {type(source).__name__}.")
    if source.instances is not None:
        return read_uploaded_study(
            source.instances, on_progress=on_progress, is_cancelled=is_cancelled
        )
    assert source.folder is not None  # guaranteed by StudySource.__post_init__
    study = read_study_folder(source.folder)
    if on_progress is not None:
        on_progress(1.0)
    return study


def has_pixel_data(ds: Dataset) -> bool:
    """True for image objects: pixel data plus the Image Pixel attributes needed to decode it."""
    return any(k in ds for k in _PIXEL_DATA_KEYWORDS) and "Rows" in ds and "Columns" in ds


def _is_localizer(ds: Dataset) -> bool:
    image_type = ds.get("ImageType") or []
    if isinstance(image_type, str):
        image_type = [image_type]
    return any(str(v).strip().upper() == "LOCALIZER" for v in image_type)


def _is_ct_slice(ds: Dataset) -> bool:
    """A single-frame CT image; an empty SOP Class UID is tolerated when the pixels are there."""
    sop_class = str(ds.get("SOPClassUID") or "").strip()
    if sop_class not in ("", CT_IMAGE_STORAGE):
        return False
    if int(ds.get("NumberOfFrames") or 1) != 1:
        return False
    return has_pixel_data(ds) and not _is_localizer(ds)


def _modality(ds: Dataset) -> str:
    return str(ds.get("Modality") or "").strip().upper() or "unknown modality"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _describe_modalities(datasets: Iterable[Dataset]) -> str:
    counts = Counter(_modality(ds) for ds in datasets)
    return ", ".join(f"{m} ({_plural(n, 'instance')})" for m, n in sorted(counts.items()))


def _series_number(ds: Dataset) -> int:
    """SeriesNumber for ordering; a missing or malformed one sorts last instead of failing."""
    try:
        return int(str(ds.get("SeriesNumber")).strip())
    except (TypeError, ValueError):
        return 2**31


@dataclass(frozen=True)
class SelectedSeries:
    """The CT series to segment: where its instances are in the data sets given, and those
    instances with their identifiers repaired (repaired copies; the given ones are unchanged)."""

    positions: list[int]
    datasets: list[Dataset] = field(repr=False)


def select_ct_series(datasets: Sequence[Dataset]) -> list[Dataset]:
    """The instances of the CT series to segment (see :func:`choose_ct_series`)."""
    return choose_ct_series(datasets).datasets


def choose_ct_series(datasets: Sequence[Dataset]) -> SelectedSeries:
    """Pick the CT series to segment: the one with the most CT slices, localizers excluded.

    Rejects uploads that mix studies (a request is one study) and studies without a usable CT
    series. Ties between equally large series are broken by SeriesNumber, then
    SeriesInstanceUID, so repeated requests always segment the same series. Broken UIDs are
    repaired first (:mod:`service.dicom.identifier_repair`) in copies, never in ``datasets``.
    """
    _check_datasets(datasets)
    repaired = repair_identifiers(datasets).datasets
    _check_one_study(repaired)

    series: dict[str, list[int]] = defaultdict(list)
    for position, ds in enumerate(repaired):
        if _modality(ds) == "CT" and _is_ct_slice(ds):
            series[str(ds.get("SeriesInstanceUID") or "")].append(position)
    if not series:
        raise _no_ct_series_error(repaired)
    if "" in series:
        raise InvalidStudyError(
            f"{_plural(len(series['']), 'CT image')} lack SeriesInstanceUID (0020,000E); "
            "cannot group them into a series."
        )

    def rank(item: tuple[str, list[int]]) -> tuple[int, int, str]:
        uid, members = item
        return (-len(members), _series_number(repaired[members[0]]), uid)

    ranked = sorted(series.items(), key=rank)
    chosen_uid, chosen = ranked[0]
    logger.info(
        "selected CT series %s with %d slices out of %d CT series (%d instances in the study)",
        uid_hash(chosen_uid),
        len(chosen),
        len(ranked),
        len(datasets),
    )
    return SelectedSeries(list(chosen), [repaired[i] for i in chosen])


def _check_datasets(datasets: Sequence[Dataset]) -> None:
    if not isinstance(datasets, Sequence) or isinstance(datasets, str | bytes):
        raise TypeError(
            f"Argument 'datasets' must be a sequence of pydicom Datasets, "
            f"got {type(datasets).__name__}."
        )
    if not datasets:
        raise InvalidStudyError("The study holds no instances; expected a CT series.")
    for index, ds in enumerate(datasets):
        if not isinstance(ds, Dataset):
            raise TypeError(
                f"Argument 'datasets' item {index} must be a pydicom Dataset, "
                f"got {type(ds).__name__}."
            )


def _check_one_study(datasets: Sequence[Dataset]) -> None:
    """A request is one study: every instance names it, and all name the same one."""
    studies = {str(ds.get("StudyInstanceUID") or "") for ds in datasets}
    if "" in studies:
        missing = [i for i, ds in enumerate(datasets) if not ds.get("StudyInstanceUID")]
        raise InvalidStudyError(
            f"Instance(s) #{', #'.join(map(str, missing[:_MAX_NAMES_IN_MESSAGE]))} lack "
            "StudyInstanceUID (0020,000D); every instance must name its study."
        )
    if len(studies) > 1:
        hashes = ", ".join(sorted(uid_hash(u) for u in studies))
        raise InvalidStudyError(
            f"Instances from {len(studies)} studies were sent (StudyInstanceUID hashes {hashes}); "
            "send one study per request."
        )


def _no_ct_series_error(datasets: Sequence[Dataset]) -> InvalidStudyError:
    """Why a study without a usable CT image cannot be segmented, counted by cause."""
    ct_instances = [ds for ds in datasets if _modality(ds) == "CT"]
    if not ct_instances:
        return InvalidStudyError(
            f"No CT series in the study: found {_describe_modalities(datasets)}. "
            "pulmoseg segments CT only."
        )
    enhanced = sum(
        str(ds.get("SOPClassUID") or "") == ENHANCED_CT_IMAGE_STORAGE for ds in ct_instances
    )
    localizers = sum(_is_localizer(ds) for ds in ct_instances)
    return InvalidStudyError(
        f"The study has {_plural(len(ct_instances), 'CT instance')} but no single-frame CT "
        f"image with pixel data ({localizers} localizer(s) ignored, {enhanced} Enhanced CT "
        "multi-frame instance(s) not supported); expected an axial CT image series."
    )
