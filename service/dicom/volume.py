"""Stack the slices of one CT series into a Hounsfield-unit volume with its patient geometry.

Slices are ordered by their position along the slice normal, never by InstanceNumber (which
scanners number in either direction, or restart). The geometry is validated before any pixel is
decoded, so a broken series fails fast with a message that names the attribute and the slice.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
import types
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.pixels import pixel_array

from service.core.errors import InvalidStudyError
from service.core.lung_field import LungFieldConfinement

logger = logging.getLogger(__name__)

#: Relative tolerance on slice gaps: spacing that varies more is rejected (resampling would hide
#: missing slices from the user).
SPACING_RTOL = 0.01
#: Absolute tolerance on direction cosines when comparing orientations between slices.
ORIENTATION_ATOL = 1e-4
#: Relative tolerance on PixelSpacing between slices.
PIXEL_SPACING_RTOL = 1e-4
#: In-plane drift of successive slice origins, as a fraction of the slice gap, above which the
#: stack is sheared (gantry tilt) and a regular voxel grid would misplace voxels.
SHEAR_TOL = 0.01

_DECODER_HINT = (
    "install a decoder plugin for it (pip install pylibjpeg pylibjpeg-openjpeg "
    "pylibjpeg-libjpeg, or python-gdcm)"
)


@dataclass
class CTVolume:
    """A CT series as a (z, y, x) HU array plus what is needed to map voxels back to DICOM.

    ``datasets[k]`` is the source instance of ``hu[k]``; ``origin`` is the position (LPS, mm) of
    voxel (0, 0, 0); x runs along ``row_cosine`` (columns), y along ``column_cosine`` (rows) and z
    along ``slice_normal`` (row × column cosine), with z increasing in the normal's direction.
    """

    hu: np.ndarray
    spacing_zyx: tuple[float, float, float]
    datasets: list[Dataset]
    origin: np.ndarray
    row_cosine: np.ndarray
    column_cosine: np.ndarray
    slice_normal: np.ndarray
    frame_of_reference_uid: str = ""
    slice_positions: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: The lung field the model's manifest confines labels to, found once per study by the
    #: inference step and reused by the consistency check (None: not found yet, or not asked).
    lung_field: LungFieldConfinement | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.hu.shape)  # type: ignore[return-value]

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous (z, y, x) voxel indices to LPS millimetres."""
        dz, dy, dx = self.spacing_zyx
        matrix = np.eye(4)
        matrix[:3, 0] = self.slice_normal * dz
        matrix[:3, 1] = self.column_cosine * dy
        matrix[:3, 2] = self.row_cosine * dx
        matrix[:3, 3] = self.origin
        return matrix


def _name(ds: Dataset, index: int) -> str:
    filename = getattr(ds, "filename", None)
    if isinstance(filename, str) and filename:
        return f"#{index} ('{filename.rsplit('/', 1)[-1]}')"
    return f"#{index}"


def _require(
    ds: Dataset, index: int, keyword: str, tag: str, count: int | None = None
) -> list[float]:
    value = ds.get(keyword)
    empty_list = isinstance(value, list | tuple | MultiValue) and len(value) == 0
    if value is None or value == "" or empty_list:
        raise InvalidStudyError(
            f"Instance {_name(ds, index)} lacks {keyword} {tag}; it is needed to place the slice "
            "in 3D."
        )
    if count is None:
        values = [value]
    else:  # a single value where several belong reads as a number, not a list
        values = list(value) if isinstance(value, list | tuple | MultiValue) else [value]
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise InvalidStudyError(
            f"Instance {_name(ds, index)} has a non-numeric {keyword} {tag}: {value!r}."
        ) from exc
    if count is not None and len(numbers) != count:
        raise InvalidStudyError(
            f"Instance {_name(ds, index)} has {keyword} {tag} with {len(numbers)} values, "
            f"expected {count}."
        )
    if not np.all(np.isfinite(numbers)):
        raise InvalidStudyError(f"Instance {_name(ds, index)} has a non-finite {keyword} {tag}.")
    return numbers


def _orientation(ds: Dataset, index: int) -> tuple[np.ndarray, np.ndarray]:
    iop = np.asarray(_require(ds, index, "ImageOrientationPatient", "(0020,0037)", 6))
    row, col = iop[:3], iop[3:]
    if not (abs(np.linalg.norm(row) - 1) < 1e-3 and abs(np.linalg.norm(col) - 1) < 1e-3):
        raise InvalidStudyError(
            f"Instance {_name(ds, index)} has ImageOrientationPatient {iop.tolist()} whose "
            "direction cosines are not unit vectors."
        )
    if abs(float(row @ col)) > 1e-3:
        raise InvalidStudyError(
            f"Instance {_name(ds, index)} has ImageOrientationPatient {iop.tolist()} whose row "
            "and column directions are not perpendicular."
        )
    return row, col


def _check_same(
    datasets: Sequence[Dataset],
    keyword: str,
    values: list[Any],
    close: Callable[[Any, Any], bool],
) -> None:
    reference = values[0]
    for index, value in enumerate(values):
        if not close(value, reference):
            raise InvalidStudyError(
                f"Instances of one series disagree on {keyword}: {reference!r} in instance "
                f"{_name(datasets[0], 0)} but {value!r} in {_name(datasets[index], index)}; all "
                "slices of a CT volume must share it."
            )


def _gap_summary(gaps: np.ndarray) -> str:
    counts = Counter(round(float(g), 3) for g in gaps)
    return ", ".join(f"{g:g} mm ({n}x)" for g, n in sorted(counts.items()))


def _slice_spacing(
    positions: np.ndarray, datasets: list[Dataset], index_order: np.ndarray
) -> float:
    if len(positions) == 1:
        ds = datasets[0]
        for keyword in ("SpacingBetweenSlices", "SliceThickness"):
            number = _optional_number(ds, keyword)
            if number is not None and 0 < number < 1e4:
                return number
        logger.warning("single-slice series without SliceThickness: assuming 1 mm slice spacing")
        return 1.0
    gaps = np.diff(positions)
    duplicate = np.flatnonzero(gaps < 1e-3)
    if duplicate.size:
        k = int(duplicate[0])
        a, b = int(index_order[k]), int(index_order[k + 1])
        raise InvalidStudyError(
            f"Instances {_name(datasets[k], a)} and {_name(datasets[k + 1], b)} lie at the same "
            f"slice position ({positions[k]:.3f} mm along the normal); the series holds "
            f"{duplicate.size} duplicate slice position(s) — send one acquisition per series."
        )
    median = float(np.median(gaps))
    if np.max(np.abs(gaps - median)) > SPACING_RTOL * median:
        raise InvalidStudyError(
            f"Slice spacing is not uniform: measured gaps {_gap_summary(gaps)} (median "
            f"{median:g} mm, tolerance {SPACING_RTOL:.0%}); missing or irregular slices are not "
            "supported."
        )
    return float(np.mean(gaps))


def _optional_number(ds: Dataset, keyword: str) -> float | None:
    """A single finite number, or None when the attribute is missing, empty or unusable."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _rescale(ds: Dataset, index: int, keyword: str, tag: str, default: float) -> float:
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    number = _optional_number(ds, keyword)
    if number is None:
        raise InvalidStudyError(
            f"Instance {_name(ds, index)} has a {keyword} {tag} that is not one finite number; "
            "it is needed to convert pixels to Hounsfield units."
        )
    return number


def _decode(ds: Dataset, index: int, out: np.ndarray, pixels: np.ndarray | None = None) -> None:
    """Decode one slice into ``out`` (a float32 row of the volume) as Hounsfield units.

    ``pydicom.pixels.pixel_array`` does not cache the decoded array on the dataset (as
    ``ds.pixel_array`` does), so the datasets kept for the SEG's references stay small.
    ``pixels``: the slice already decoded (by a decoding process), converted here.
    """
    if pixels is None:
        pixels = _pixels(ds, index)
    if pixels.shape != out.shape:
        raise InvalidStudyError(
            f"Instance {_name(ds, index)} decodes to pixel array shape {pixels.shape}, expected "
            f"{out.shape}; multi-frame or colour images are not CT slices."
        )
    slope = _rescale(ds, index, "RescaleSlope", "(0028,1053)", 1.0)
    intercept = _rescale(ds, index, "RescaleIntercept", "(0028,1052)", 0.0)
    if slope == 0:
        raise InvalidStudyError(
            f"Instance {_name(ds, index)} has RescaleSlope (0028,1053) 0, which maps every "
            "pixel to one value; it cannot be converted to Hounsfield units."
        )
    if slope == 1.0 and float(intercept).is_integer():  # the usual CT case: exact in float32
        np.add(pixels, np.float32(intercept), out=out, casting="unsafe")
    else:
        out[:] = pixels.astype(np.float64) * slope + intercept


def _pixels(ds: Dataset, index: int) -> np.ndarray:
    """The decoded pixel array of one instance, or an InvalidStudyError that says why not."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        pixels: np.ndarray = pixel_array(ds)
    except Exception as exc:  # pydicom raises NotImplementedError/RuntimeError/ValueError …
        if syntax is not None and syntax.is_compressed:
            raise InvalidStudyError(
                f"Cannot decode the pixel data of instance {_name(ds, index)}: transfer syntax "
                f"'{syntax.name}' ({syntax}) needs a decoder plugin that is missing or failed; "
                f"{_DECODER_HINT}. Decoder said: {type(exc).__name__}: {exc}"
            ) from exc
        raise InvalidStudyError(
            f"Cannot decode the pixel data of instance {_name(ds, index)} (transfer syntax "
            f"{syntax.name if syntax is not None else 'unknown'}): {type(exc).__name__}: {exc}"
        ) from exc
    return pixels


# --- decoding compressed slices in parallel --------------------------------------------------
#
# pylibjpeg's JPEG (lossless) decoder holds the GIL, so threads decode no faster than one; the
# slices go to a small pool of processes instead (``forkserver``: safe beside the server's
# threads). Each task carries only what decoding needs (the Image Pixel attributes and the
# encoded frame), and returns the decoded array; rescaling to HU stays here. A new process
# would re-run the caller's main script (multiprocessing's "safe importing of main module"
# rule); the decoding processes need nothing from it, so they are started without it.

#: At most this many decoding processes (each holds pydicom and the decoder, ~60 MB).
MAX_DECODE_WORKERS = 4
#: Fewer compressed slices than this are decoded in this process (a pool costs more).
MIN_SLICES_FOR_WORKERS = 16
#: Slices per task sent to a decoding process.
_DECODE_CHUNK = 8
_PIXEL_MODULE = (
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "PixelData",
)
_pool_lock = threading.Lock()
_pool: tuple[int, ProcessPoolExecutor] | None = None


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def default_decode_workers(datasets: Sequence[Dataset]) -> int:
    """Processes to decode ``datasets`` with: 0 (here) for uncompressed or small series and on
    one CPU, else one per usable CPU up to :data:`MAX_DECODE_WORKERS`."""
    if len(datasets) < MIN_SLICES_FOR_WORKERS or not _compressed(datasets[0]):
        return 0
    cpus = usable_cpus()
    return 0 if cpus < 2 else min(cpus, MAX_DECODE_WORKERS)


def _compressed(ds: Dataset) -> bool:
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return bool(syntax is not None and syntax.is_compressed)


def _decode_payload(ds: Dataset) -> Dataset:
    """A copy of what decoding ``ds`` needs: the Image Pixel module and the transfer syntax."""
    payload = Dataset()
    for keyword in _PIXEL_MODULE:
        if keyword in ds:
            payload[keyword] = ds[keyword]
    payload.file_meta = FileMetaDataset()
    payload.file_meta.TransferSyntaxUID = ds.file_meta.TransferSyntaxUID
    return payload


def _decode_in_worker(payload: Dataset) -> np.ndarray | None:
    """Runs in a decoding process; None when decoding fails (the caller decodes the slice
    again itself, to report the failure with the instance's name)."""
    try:
        decoded: np.ndarray = pixel_array(payload)
    except Exception:
        return None
    return decoded


@contextmanager
def _processes_without_main() -> Iterator[None]:
    """While processes start: the main module hidden, so they do not import the caller's
    script (which may lack an ``if __name__ == "__main__"`` guard). Called with the pool lock.
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def _decode_pool(workers: int) -> ProcessPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != workers:
            if _pool is not None:
                _pool[1].shutdown(wait=False, cancel_futures=True)
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["service.dicom.volume"])
            _pool = (workers, ProcessPoolExecutor(max_workers=workers, mp_context=context))
        return _pool[1]


def _drop_pool(pool: Executor) -> None:
    global _pool
    with _pool_lock:
        if _pool is not None and _pool[1] is pool:
            _pool = None
    pool.shutdown(wait=False, cancel_futures=True)


def warm_decode_pool(workers: int | None = None) -> None:
    """Start the decoding processes now (the server calls it while it loads the model), so the
    first study does not pay for their start."""
    count = min(usable_cpus(), MAX_DECODE_WORKERS) if workers is None else workers
    if count >= 2:
        pool = _decode_pool(count)
        with _pool_lock, _processes_without_main():
            results = pool.map(_decode_in_worker, [Dataset()] * count)
        list(results)


def _decode_slices(
    datasets: Sequence[Dataset], order: np.ndarray, hu: np.ndarray, workers: int
) -> None:
    """Decode every slice into ``hu``: in ``workers`` processes when 2 or more, else here."""
    if workers >= 2:
        pool = _decode_pool(workers)
        try:
            payloads = [_decode_payload(ds) for ds in datasets]
            with _pool_lock, _processes_without_main():  # the pool starts processes on demand
                decoded = pool.map(_decode_in_worker, payloads, chunksize=_DECODE_CHUNK)
            for k, (ds, pixels) in enumerate(zip(datasets, decoded, strict=True)):
                _decode(ds, int(order[k]), hu[k], pixels)
            return
        except InvalidStudyError:
            raise
        except Exception as exc:  # a broken pool (a process killed): decode here instead
            logger.warning("parallel decoding failed (%s); decoding in this process", exc)
            _drop_pool(pool)
    for k, ds in enumerate(datasets):
        _decode(ds, int(order[k]), hu[k])


#: Where a dataset keeps its pixels (only ``PixelData`` for CT; the others for completeness).
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def release_encoded_pixels(volume: CTVolume) -> None:
    """Drop the source instances' encoded pixels now that ``volume.hu`` holds them.

    The datasets stay for what the SEG copies and references (UIDs, geometry, patient and study
    modules), none of which needs pixels; keeping them would hold a second copy of the study
    (2 bytes per voxel uncompressed) through inference and SEG writing.
    """
    for ds in volume.datasets:
        for keyword in _PIXEL_KEYWORDS:
            if keyword in ds:
                del ds[keyword]


def series_to_volume(datasets: Sequence[Dataset], *, decode_workers: int | None = None) -> CTVolume:
    """Build the HU volume of one CT series (as returned by ``select_ct_series``).

    Oblique acquisitions are accepted as long as every slice has the same orientation; sheared
    stacks (gantry tilt), duplicate positions and non-uniform spacing are rejected because the
    model and the SEG writer assume a regular grid. ``decode_workers``: processes that decode
    compressed slices (None: :func:`default_decode_workers`; 0 or 1: this process only); the
    volume is the same either way.
    """
    if not isinstance(datasets, Sequence):
        raise TypeError(
            "Argument 'datasets' must be a sequence of pydicom Datasets, "
            f"got {type(datasets).__name__}."
        )
    if not datasets:
        raise InvalidStudyError("Argument 'datasets' is empty; expected the slices of a CT series.")
    datasets = list(datasets)
    rows = [int(_require(ds, i, "Rows", "(0028,0010)")[0]) for i, ds in enumerate(datasets)]
    cols = [int(_require(ds, i, "Columns", "(0028,0011)")[0]) for i, ds in enumerate(datasets)]
    spacings = [_require(ds, i, "PixelSpacing", "(0028,0030)", 2) for i, ds in enumerate(datasets)]
    orientations = [_orientation(ds, i) for i, ds in enumerate(datasets)]
    positions = np.array(
        [_require(ds, i, "ImagePositionPatient", "(0020,0032)", 3) for i, ds in enumerate(datasets)]
    )
    _check_same(datasets, "Rows", rows, lambda a, b: a == b)
    _check_same(datasets, "Columns", cols, lambda a, b: a == b)
    _check_same(
        datasets,
        "PixelSpacing",
        spacings,
        lambda a, b: np.allclose(a, b, rtol=PIXEL_SPACING_RTOL, atol=0),
    )
    _check_same(
        datasets,
        "ImageOrientationPatient",
        [np.concatenate(o).round(6).tolist() for o in orientations],
        lambda a, b: np.allclose(a, b, rtol=0, atol=ORIENTATION_ATOL),
    )
    frames = [str(ds.get("FrameOfReferenceUID") or "") for ds in datasets]
    if "" in frames:
        i = frames.index("")
        raise InvalidStudyError(
            f"Instance {_name(datasets[i], i)} lacks FrameOfReferenceUID (0020,0052); it is "
            "needed to place the slice in 3D and to register the segmentation."
        )
    _check_same(datasets, "FrameOfReferenceUID", frames, lambda a, b: a == b)
    if any(float(v) <= 0 for v in spacings[0]):
        raise InvalidStudyError(f"PixelSpacing (0028,0030) must be positive, got {spacings[0]}.")

    row_cos, col_cos = orientations[0]
    normal = np.cross(row_cos, col_cos)
    normal /= np.linalg.norm(normal)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    sorted_ds = [datasets[i] for i in order]
    sorted_along = along[order]
    dz = _slice_spacing(sorted_along, sorted_ds, order)

    if len(datasets) > 1:
        steps = np.diff(positions[order], axis=0)
        in_plane = steps - np.outer(steps @ normal, normal)
        drift = float(np.max(np.linalg.norm(in_plane, axis=1)))
        if drift > SHEAR_TOL * dz:
            tilt = float(np.degrees(np.arctan2(drift, dz)))
            raise InvalidStudyError(
                f"Slice positions drift {drift:.3f} mm in-plane per {dz:g} mm slice (about "
                f"{tilt:.1f} degrees of gantry tilt / shear); sheared CT volumes are not supported."
            )

    hu = np.empty((len(sorted_ds), rows[0], cols[0]), dtype=np.float32)
    workers = default_decode_workers(sorted_ds) if decode_workers is None else decode_workers
    _decode_slices(sorted_ds, order, hu, workers)

    dy, dx = float(spacings[0][0]), float(spacings[0][1])
    volume = CTVolume(
        hu=hu,
        spacing_zyx=(dz, dy, dx),
        datasets=sorted_ds,
        origin=positions[order[0]].astype(np.float64),
        row_cosine=np.asarray(row_cos, dtype=np.float64),
        column_cosine=np.asarray(col_cos, dtype=np.float64),
        slice_normal=normal,
        frame_of_reference_uid=frames[0],
        slice_positions=sorted_along,
    )
    logger.info(
        "built CT volume of shape %s, spacing (z, y, x) %s mm", volume.shape, volume.spacing_zyx
    )
    return volume
