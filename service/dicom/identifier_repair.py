"""Give a study's instances valid DICOM UIDs where an anonymiser broke them, reproducibly.

Real anonymised archives (COVID-CT-MD among them) ship CT series whose Study and Series
Instance UIDs are UUID strings (``896911bf-1143-…``, not digits and dots), whose SOP Instance
UIDs and Frame of Reference UIDs are empty. A DICOM-SEG must reference every source image by
valid UIDs and carry a Frame of Reference, so such a study could not be segmented at all.

Each broken UID is replaced by one derived from what the instance does carry, the same way on
every run and on every machine, so the server (which writes the SEG) and a client (which reads
it back over its own copy of the files, e.g. ``pulmoseg segment --preview``) agree:

==========================  ===================================================================
UID as received             UID used
==========================  ===================================================================
valid                       unchanged
a UUID string               ``2.25.<the UUID as an integer>`` (the standard mapping, PS3.5 B.2)
empty, missing, malformed   (SOP Instance, Frame of Reference; malformed Study, Series)
                            ``2.25.<UUID-5 of the attribute, its raw value and the instance's
                            series, instance number and position>``
==========================  ===================================================================

The SEG then references the derived UIDs; a receiver that stored the source with its broken
UIDs cannot link the two, which is why every repair is logged (counts, never values).

Repair returns repaired *copies* and leaves the caller's data sets as they came: the PACS
gateway keeps its spooled instances' headers, and a test or a second reader of the same data
sets must see what was received. A copy shares every element it does not change (pixel data
included), so it costs a dictionary, not a second study.
"""

from __future__ import annotations

import copy
import logging
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import UID

logger = logging.getLogger(__name__)

D = TypeVar("D", bound=Dataset)

#: Namespace of the derived UIDs (a fixed UUID: the derivation must never change).
_NAMESPACE = uuid.UUID("5f0c2f7e-4d0b-4c52-9a51-3d1f2b9e6c11")
#: Repaired in this order: later keys include the repaired earlier ones.
REPAIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID")


def _is_valid_uid(value: str) -> bool:
    """Digits and dots, no empty component, at most 64 characters (leading zeros, common in
    the wild, are tolerated: replacing a working UID would break the link to the image)."""
    if not value or len(value) > 64:
        return False
    return all(part.isdigit() for part in value.split("."))


def uuid_as_uid(value: str) -> str | None:
    """``2.25.<integer>`` for a UUID string (PS3.5 B.2), else None."""
    try:
        return f"2.25.{uuid.UUID(value.strip()).int}"
    except (ValueError, AttributeError):
        return None


def _derived(*parts: str) -> str:
    return f"2.25.{uuid.uuid5(_NAMESPACE, '|'.join(parts)).int}"


def _raw(ds: Dataset, keyword: str, repaired: dict[str, str] | None = None) -> str:
    """The value of ``keyword`` as repair sees it: repaired already, else as received."""
    if repaired and keyword in repaired:
        return repaired[keyword]
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _instance_key(ds: Dataset) -> str:
    position = ds.get("ImagePositionPatient")
    where = "\\".join(str(v) for v in position) if position is not None else ""
    return f"{_raw(ds, 'InstanceNumber')}|{where}"


def _repaired(ds: Dataset, keyword: str, done: dict[str, str]) -> tuple[str, str] | None:
    """(new UID, kind of repair) for a broken UID of ``ds``, None when it is valid.

    ``done`` holds the UIDs of ``ds`` repaired before this one, which the derivation keys use.
    """
    raw = _raw(ds, keyword, done)
    if _is_valid_uid(raw):
        return None
    from_uuid = uuid_as_uid(raw) if raw else None
    if from_uuid is not None:
        return from_uuid, "UUID form"
    if not raw and keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        return None  # nothing to group by: the series selection refuses it by name
    key: tuple[str, ...]
    if keyword == "StudyInstanceUID":
        key = ("study", raw)
    elif keyword == "SeriesInstanceUID":
        key = ("series", _raw(ds, "StudyInstanceUID", done), raw, _raw(ds, "SeriesNumber"))
    elif keyword == "FrameOfReferenceUID":
        key = ("frame", _raw(ds, "SeriesInstanceUID", done), raw)
    else:
        key = ("instance", _raw(ds, "SeriesInstanceUID", done), raw, _instance_key(ds))
    return _derived(*key), "empty" if not raw else "malformed"


def _own_elements(ds: D) -> D:
    """A shallow copy with its own element table, so setting an element leaves ``ds`` as it was.

    ``copy.copy`` alone would share the table (and pydicom's attribute setter changes the
    shared element's value in place), hence the fresh dict and new elements in :func:`_set_uid`.
    """
    clone = copy.copy(ds)
    clone._dict = dict(ds._dict)
    return clone


def _set_uid(ds: Dataset, keyword: str, uid: str) -> None:
    tag = Tag(keyword)
    ds[tag] = DataElement(tag, "UI", UID(uid))


def _repaired_copy(ds: Dataset, uids: dict[str, str]) -> Dataset:
    clone = _own_elements(ds)
    for keyword, uid in uids.items():
        _set_uid(clone, keyword, uid)
    meta = getattr(ds, "file_meta", None)
    if "SOPInstanceUID" in uids and meta is not None:
        clone.file_meta = _own_elements(meta)
        _set_uid(clone.file_meta, "MediaStorageSOPInstanceUID", uids["SOPInstanceUID"])
    return clone


@dataclass(frozen=True)
class RepairedIdentifiers:
    """The data sets in the order given (the caller's own where nothing was broken, repaired
    copies elsewhere) and the number of repairs by kind (e.g. ``"SOPInstanceUID (empty)"``)."""

    datasets: list[Dataset] = field(repr=False)
    counts: Counter[str] = field(default_factory=Counter)


def repair_identifiers(datasets: Iterable[Dataset]) -> RepairedIdentifiers:
    """Valid UIDs for broken ones (see module doc), in copies; the inputs are not changed."""
    counts: Counter[str] = Counter()
    result: list[Dataset] = []
    for ds in datasets:
        uids: dict[str, str] = {}
        for keyword in REPAIRED_UIDS:
            repair = _repaired(ds, keyword, uids)
            if repair is None:
                continue
            uids[keyword], kind = repair
            counts[f"{keyword} ({kind})"] += 1
        result.append(_repaired_copy(ds, uids) if uids else ds)
    if counts:
        logger.warning(
            "derived valid UIDs for broken identifiers: %s",
            ", ".join(f"{n} x {what}" for what, n in sorted(counts.items())),
        )
    return RepairedIdentifiers(result, counts)
