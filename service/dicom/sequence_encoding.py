"""Encode a SEG's large sequences to Explicit VR Little Endian bytes without pydicom's writer.

A BINARY SEG of a 300-slice CT holds about 900 per-frame functional-group items and a
300-item referenced-instance sequence: some 8,000 nested datasets. pydicom's writer spends
about a second on them (per element: ambiguous-VR correction, character-set lookup, a
buffer), which is most of the SEG writing time on a 2-core CPU. The values in these items are
few kinds (UIDs, codes, decimal strings, unsigned integers), so this module encodes them
directly, byte for byte as pydicom would (``tests/service/dicom/test_sequence_encoding.py``
compares the two on real SEGs), and hands each top-level sequence to pydicom as a
pre-encoded raw element. Anything it does not know how to encode exactly (another VR,
non-ASCII text, an ambiguous VR) falls back to pydicom for that element, so the output is
always pydicom's.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr_element, write_data_element
from pydicom.tag import BaseTag

_ITEM_TAG = struct.pack("<HH", 0xFFFE, 0xE000)
#: VRs whose Explicit VR header has 2 reserved bytes and a 4-byte length (PS3.5 7.1.2).
_LONG_HEADER = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
#: Fixed-size binary numbers: struct format per value.
_NUMBERS = {"US": "H", "UL": "I", "SS": "h", "SL": "i", "FL": "f", "FD": "d", "UV": "Q", "SV": "q"}
#: Text VRs written as they are, padded with a space (PS3.5 6.2); UI pads with NUL.
_PLAIN_TEXT = frozenset({"AE", "AS", "CS", "UI"})
#: Text VRs encoded with the character set, identical to ASCII for ASCII values.
_CHARSET_TEXT = frozenset({"SH", "LO", "ST", "LT", "UT", "UC"})
_NUMBER_STRINGS = frozenset({"DS", "IS"})


class _NotFast(Exception):
    """This element needs pydicom's writer."""


class _AmbiguousElement(Exception):
    """A raw or ambiguous-VR element: the top-level sequence holding it needs pydicom's writer."""


def _header(tag: int, vr: str, length: int) -> bytes:
    group, element = tag >> 16, tag & 0xFFFF
    if vr in _LONG_HEADER:
        return struct.pack("<HH2sHI", group, element, vr.encode(), 0, length)
    if length > 0xFFFF:
        raise _NotFast  # pydicom rewrites such an element as UN
    return struct.pack("<HH2sH", group, element, vr.encode(), length)


def _values(value: object) -> list[object]:
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)


def _text(value: object, vr: str) -> bytes:
    items = _values(value)
    if vr in _NUMBER_STRINGS:
        parts = [str(getattr(v, "original_string", v)) for v in items]
    elif all(isinstance(v, str) for v in items):
        parts = [str(v) for v in items]
    else:
        raise _NotFast  # e.g. DA/TM objects, bytes
    text = "\\".join(parts)
    if not text.isascii():
        raise _NotFast  # the character set decides the bytes
    if len(text) % 2:
        text += "\0" if vr == "UI" else " "
    return text.encode("ascii")


def _number_bytes(value: object, vr: str) -> bytes:
    items = _values(value)
    try:
        return struct.pack(f"<{len(items)}{_NUMBERS[vr]}", *items)
    except struct.error as exc:
        raise _NotFast from exc


def _value_bytes(element: DataElement, encodings: list[str]) -> bytes:
    vr, value = element.VR, element.value
    if vr == "SQ":
        return b"".join(_item(item, encodings) for item in value)
    if element.is_empty:
        return b""
    if vr in _NUMBERS:
        return _number_bytes(value, vr)
    if vr in _PLAIN_TEXT or vr in _CHARSET_TEXT or vr in _NUMBER_STRINGS:
        return _text(value, vr)
    raise _NotFast


def _character_set(dataset: Dataset) -> str | list[str]:
    """What pydicom's writer compares with the original character set (as it computes it)."""
    charset = dataset.get("SpecificCharacterSet")
    return convert_encodings(charset) if charset else default_encoding


def _pydicom_element(element: DataElement | RawDataElement, encodings: list[str]) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_data_element(buffer, element, encodings)
    return buffer.getvalue()


def _element(tag: BaseTag, dataset: Dataset, encodings: list[str]) -> bytes:
    element = dataset.get_item(tag)
    if isinstance(element, RawDataElement) or element.VR is None or len(element.VR) != 2:
        # pydicom resolves these against the item's ancestors: the whole sequence is its job.
        raise _AmbiguousElement
    if element.VR == "SQ" and element.is_undefined_length:
        return _pydicom_element(element, encodings)
    try:
        value = _value_bytes(element, encodings)
        return _header(tag, element.VR, len(value)) + value
    except _NotFast:
        return _pydicom_element(element, encodings)


def _encodings(dataset: Dataset, inherited: list[str]) -> list[str]:
    """The character sets for ``dataset``'s text: its own, else its parent's (as pydicom)."""
    charset = dataset.get("SpecificCharacterSet")
    return [str(v) for v in _values(charset)] if charset else inherited


def _dataset_bytes(dataset: Dataset, encodings: list[str]) -> bytes:
    encodings = _encodings(dataset, encodings)
    return b"".join(
        _element(tag, dataset, encodings)
        for tag in sorted(dataset.keys())
        if not (tag.element == 0 and tag.group > 6)  # group lengths are not written
    )


def _item(dataset: Dataset, encodings: list[str]) -> bytes:
    if getattr(dataset, "is_undefined_length_sequence_item", False):
        raise _NotFast
    body = _dataset_bytes(dataset, encodings)
    return _ITEM_TAG + struct.pack("<I", len(body)) + body


def encode_sequence(element: DataElement, encodings: list[str]) -> RawDataElement | None:
    """``element`` (a top-level SQ) as a raw element pydicom writes verbatim; None if it
    must go through pydicom's writer (undefined length, or an item flagged so)."""
    if element.VR != "SQ" or element.is_undefined_length:
        return None
    try:
        value = _value_bytes(element, encodings)
    except (_NotFast, _AmbiguousElement):
        return None
    return RawDataElement(element.tag, "SQ", len(value), value, 0, False, True)


@contextmanager
def sequences_pre_encoded(dataset: Dataset, *, min_items: int = 16) -> Iterator[Dataset]:
    """Within the block, ``dataset``'s top-level sequences of ``min_items`` items or more are
    pre-encoded raw elements, so that writing it skips pydicom's per-element work; what pydicom
    writes is unchanged. Restored afterwards. Only when the file meta's transfer syntax encodes
    the dataset as Explicit VR Little Endian (every compressed one does); otherwise the dataset
    is left as it is.

    pydicom writes raw elements verbatim only when the dataset's original encoding is the one
    being written (``Dataset.set_original_encoding`` exists for this); it is set for the block.
    Ambiguous VRs at the top level are resolved first, as pydicom's writer does; one it cannot
    resolve leaves the dataset to pydicom's writer as it is.
    """
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or not syntax.is_little_endian or syntax.is_implicit_VR:
        yield dataset
        return
    elements = [dataset.get_item(tag) for tag in dataset.keys()]  # noqa: SIM118 (tags, not elements)
    for element in elements:  # e.g. Pixel Data's 'OB or OW', as pydicom's writer does
        if isinstance(element, DataElement) and element.VR and len(element.VR) != 2:
            correct_ambiguous_vr_element(element, dataset, True)
    if any(e.VR is None or len(e.VR) != 2 for e in elements if isinstance(e, DataElement)):
        yield dataset
        return
    encodings = _encodings(dataset, [default_encoding])
    was_implicit, was_little = dataset.original_encoding
    was_charset = dataset.original_character_set
    swapped: dict[BaseTag, DataElement] = {}
    try:
        for element in elements:
            if not isinstance(element, DataElement) or element.VR != "SQ":
                continue
            if len(element.value) < min_items:
                continue
            raw = encode_sequence(element, encodings)
            if raw is not None:
                swapped[element.tag] = element
                dataset[element.tag] = raw
        dataset.set_original_encoding(False, True, _character_set(dataset))
        yield dataset
    finally:
        for tag, element in swapped.items():
            dataset[tag] = element
        dataset.set_original_encoding(was_implicit, was_little, was_charset)
