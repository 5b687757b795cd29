"""Turn what a caller uploads (bytes or a folder) into the CT series pulmoseg will segment.

The MONAI Deploy anchor loader ignores files without a ``.dcm`` suffix and silently drops
instances with an empty SOP Class UID; both are common in real PACS exports, so this module reads
every regular file and decides by content. Every rejection is an :class:`InvalidStudyError` whose
message names the instance by index or file name — never by a patient identifier.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from service.core.errors import InvalidStudyError
from service.core.identifiers import uid_hash
from service.dicom.identifier_repair import repair_identifiers

logger = logging.getLogger(__name__)

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
ENHANCED_CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2.1")
MEDIA_STORAGE_DIRECTORY_STORAGE = UID("1.2.840.10008.1.3.10")  # DICOMDIR
_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_MAX_NAMES_IN_MESSAGE = 5


def _label(name: str) -> str:
    return f"'{name}'" if name else "(unnamed)"


def parse_instance(blob: bytes, *, name: str = "") -> Dataset:
    """Parse one uploaded DICOM instance; pixel data stays encoded until the volume is built.

    Part-10 files are read strictly first. Files without preamble or file meta are retried with
    ``force=True`` and accepted only if they decode into a dataset carrying a SOP Instance UID,
    because forced reading turns almost any byte string into *some* dataset.
    """
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise TypeError(
            f"Argument 'blob' of instance {_label(name)} must be bytes, got {type(blob).__name__}."
        )
    data = bytes(blob)
    if not data:
        raise InvalidStudyError(
            f"Instance {_label(name)} is empty (0 bytes); expected a DICOM file."
        )
    try:
        ds: Dataset = pydicom.dcmread(BytesIO(data))
    except InvalidDicomError:
        ds = _read_forced(data, name)
    except Exception as exc:  # pydicom raises many types for truncated/corrupt files
        raise InvalidStudyError(
            f"Instance {_label(name)} is not a readable DICOM file ({len(data)} bytes): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
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


def _read_forced(data: bytes, name: str) -> Dataset:
    not_dicom = (
        f"Instance {_label(name)} is not DICOM ({len(data)} bytes, no 'DICM' marker and no "
        "readable data set); expected a DICOM Part-10 file."
    )
    # Forced parsing of non-DICOM bytes makes pydicom warn about guessed VRs: noise, not news.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(BytesIO(data), force=True)
            sop_instance_uid = ds.get("SOPInstanceUID")
        except Exception as exc:
            raise InvalidStudyError(not_dicom) from exc
    if not sop_instance_uid:
        raise InvalidStudyError(not_dicom)
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


def _check_elements_decode(ds: Dataset, name: str) -> None:
    """Convert every top-level element now so corrupt files fail here, not deep in the pipeline."""
    try:
        for _ in ds:
            pass
    except Exception as exc:
        raise InvalidStudyError(
            f"Instance {_label(name)} has corrupt DICOM elements: {type(exc).__name__}: {exc}"
        ) from exc


def _is_dicomdir(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    sop_class = meta.get("MediaStorageSOPClassUID") if meta is not None else None
    return sop_class == MEDIA_STORAGE_DIRECTORY_STORAGE or "DirectoryRecordSequence" in ds


def load_instances_from_dir(path: str | Path) -> list[Dataset]:
    """Read every regular file below ``path`` as DICOM, whatever its suffix.

    DICOMDIR index files and hidden files (names starting with '.', e.g. ``.DS_Store``) are
    skipped; any other file that is not DICOM makes the whole study invalid, and the error lists
    the offending file names (relative to ``path``) so the sender can fix the export.
    """
    root = Path(path)
    if not root.is_dir():
        raise InvalidStudyError(f"Study folder '{root}' does not exist or is not a folder.")
    datasets: list[Dataset] = []
    bad: list[str] = []
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for file in files:
        rel = file.relative_to(root).as_posix()
        hidden = any(part.startswith(".") for part in file.relative_to(root).parts)
        if file.name.upper() == "DICOMDIR" or hidden:
            logger.debug("skipping index/hidden file %s", rel)
            continue
        try:
            ds = parse_instance(file.read_bytes(), name=rel)
        except InvalidStudyError:
            bad.append(rel)
            continue
        if _is_dicomdir(ds):
            logger.debug("skipping DICOMDIR content in %s", rel)
            continue
        datasets.append(ds)
    if bad:
        shown = ", ".join(bad[:_MAX_NAMES_IN_MESSAGE])
        more = (
            f" and {len(bad) - _MAX_NAMES_IN_MESSAGE} more"
            if len(bad) > _MAX_NAMES_IN_MESSAGE
            else ""
        )
        raise InvalidStudyError(
            f"Study folder '{root}' holds {len(bad)} file(s) that are not DICOM: {shown}{more}."
        )
    if not datasets:
        raise InvalidStudyError(f"Study folder '{root}' holds no DICOM instances.")
    logger.info("loaded %d instances from a study folder", len(datasets))
    return datasets


#: How often (in instances) parsing reports progress and checks for cancellation.
_PARSE_REPORT_EVERY = 16


def parse_instances(
    blobs: Sequence[bytes],
    *,
    on_progress: Callable[[float], None] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
) -> list[Dataset]:
    """Parse uploaded instances (named ``instance #i`` in errors) in upload order.

    ``on_progress`` gets the fraction parsed; ``is_cancelled`` is polled every few instances
    and stops the work with ``CancelledError`` (a client that hung up should not cost a study).
    """
    if not blobs:
        raise InvalidStudyError("No DICOM instances were sent.")
    total = len(blobs)
    datasets = []
    for index, blob in enumerate(blobs):
        if index % _PARSE_REPORT_EVERY == 0:
            if is_cancelled is not None and is_cancelled():
                raise CancelledError("the study was cancelled while its instances were parsed")
            if on_progress is not None and index:
                on_progress(index / total)
        datasets.append(parse_instance(blob, name=f"instance #{index}"))
    if on_progress is not None:
        on_progress(1.0)
    return datasets


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
) -> list[Dataset]:
    """Every DICOM instance of ``source`` as a dataset (uploads and folders alike)."""
    if not isinstance(source, StudySource):
        raise TypeError(f"Argument 'source' must be a StudySource, got {type(source).__name__}.")
    if source.instances is not None:
        return parse_instances(source.instances, on_progress=on_progress, is_cancelled=is_cancelled)
    assert source.folder is not None  # guaranteed by StudySource.__post_init__
    datasets = load_instances_from_dir(source.folder)
    if on_progress is not None:
        on_progress(1.0)
    return datasets


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


def select_ct_series(datasets: Sequence[Dataset]) -> list[Dataset]:
    """Pick the CT series to segment: the one with the most CT slices, localizers excluded.

    Rejects uploads that mix studies (a request is one study) and studies without a usable CT
    series. Ties between equally large series are broken by SeriesNumber, then
    SeriesInstanceUID, so repeated requests always segment the same series.
    """
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

    repair_identifiers(datasets)
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

    series: dict[str, list[Dataset]] = defaultdict(list)
    for ds in datasets:
        if _modality(ds) == "CT" and _is_ct_slice(ds):
            series[str(ds.get("SeriesInstanceUID") or "")].append(ds)

    if not series:
        ct_instances = [ds for ds in datasets if _modality(ds) == "CT"]
        if not ct_instances:
            raise InvalidStudyError(
                f"No CT series in the study: found {_describe_modalities(datasets)}. "
                "pulmoseg segments CT only."
            )
        enhanced = sum(
            str(ds.get("SOPClassUID") or "") == ENHANCED_CT_IMAGE_STORAGE for ds in ct_instances
        )
        localizers = sum(_is_localizer(ds) for ds in ct_instances)
        raise InvalidStudyError(
            f"The study has {_plural(len(ct_instances), 'CT instance')} but no single-frame CT "
            f"image with pixel data ({localizers} localizer(s) ignored, {enhanced} Enhanced CT "
            "multi-frame instance(s) not supported); expected an axial CT image series."
        )
    if "" in series:
        raise InvalidStudyError(
            f"{_plural(len(series['']), 'CT image')} lack SeriesInstanceUID (0020,000E); "
            "cannot group them into a series."
        )

    def rank(item: tuple[str, list[Dataset]]) -> tuple[int, int, str]:
        uid, members = item
        return (-len(members), _series_number(members[0]), uid)

    ranked = sorted(series.items(), key=rank)
    chosen_uid, chosen = ranked[0]
    logger.info(
        "selected CT series %s with %d slices out of %d CT series (%d instances in the study)",
        uid_hash(chosen_uid),
        len(chosen),
        len(ranked),
        len(datasets),
    )
    return list(chosen)
