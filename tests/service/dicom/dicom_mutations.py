"""Hypothesis strategies that mutate a real-looking CT series the way real archives do.

A :class:`Mutation` sets one attribute to raw bytes (exactly what a file from the wild could
hold, valid for its VR or not), deletes it, or adds private elements, on every slice or on one.
Each mutation also says which words a refusal must contain (the attribute's keyword), so a test
can check that an upload is either segmented or refused with a sentence naming the attribute.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import pydicom
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

DELETE = None
#: Refusals about undecodable pixels name the pixel data rather than one attribute.
PIXEL_WORDS = ("pixel data", "PixelData")


#: A sequence item as (keyword, value) pairs; a value that is a tuple of items is a sequence.
Item = tuple[tuple[str, object], ...]


def _dataset(item: Item) -> Dataset:
    ds = Dataset()
    for keyword, value in item:
        if isinstance(value, tuple):
            setattr(ds, keyword, [_dataset(i) for i in value])
        else:
            setattr(ds, keyword, value)
    return ds


@dataclass(frozen=True)
class Mutation:
    keyword: str
    raw: bytes | None  # None deletes the attribute
    slice_index: int | None = None  # None: every slice
    private: bool = False
    #: Sequence items, each (keyword, value) pairs (nested sequences as items): set, with raw
    #: ``b""``, on a keyword whose VR is SQ.
    items: tuple[Item, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """Words one of which a refusal caused by this mutation must contain."""
        if self.keyword in ("PixelRepresentation", "PhotometricInterpretation"):
            return (self.keyword, *PIXEL_WORDS)
        if self.keyword in ("ImagePositionPatient",):
            return (self.keyword, "slice position", "drift", "spacing")
        if self.keyword in ("ImageOrientationPatient",):
            return (self.keyword, "drift", "spacing", "slice position")
        return (self.keyword,)

    def apply(self, ds: Dataset, index: int) -> None:
        if self.slice_index is not None and self.slice_index != index:
            return
        if self.private:
            block = ds.private_block(0x0099, "ACME RESEARCH", create=True)
            block.add_new(0x01, "LO", "site note")
            block.add_new(0x02, "UN", b"\x00\x01\x02\x03")
            block.add_new(0x03, "DS", "1.5")
            return
        tag = Tag(self.keyword)
        if dictionary_VR(tag) == "SQ" and self.raw is not None:
            setattr(ds, self.keyword, [_dataset(item) for item in self.items])
            return
        if self.raw is None:
            if tag in ds:
                del ds[tag]
            return
        raw = self.raw if len(self.raw) % 2 == 0 else self.raw + b" "
        ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(raw), raw, 0, False, True)

    def __str__(self) -> str:
        where = "all slices" if self.slice_index is None else f"slice {self.slice_index}"
        what = "private block" if self.private else f"{self.keyword}={self.raw!r}"
        if self.items or (self.raw is not None and dictionary_VR(Tag(self.keyword)) == "SQ"):
            what = f"{self.keyword}={len(self.items)} items {self.items!r}"
        return f"{what} on {where}"

    __repr__ = __str__


def mutate_series(blobs: Sequence[bytes], mutations: Sequence[Mutation]) -> list[bytes]:
    """The series' Part-10 files with the mutations applied, re-encoded as bytes."""
    out = []
    for index, blob in enumerate(blobs):
        ds = pydicom.dcmread(io.BytesIO(blob))
        for mutation in mutations:
            mutation.apply(ds, index)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def _us(value: int) -> bytes:
    return int(value).to_bytes(2, "little")


_NAME_ALPHABET = st.sampled_from(list("AbcXyz ^=-.'") + ["ü", "é", "ß", "Ø", "山", "田"])
_person_names = st.text(_NAME_ALPHABET, max_size=80).map(lambda t: t.encode("utf-8"))
_short_text = st.text(st.characters(codec="latin-1", exclude_categories=["Cc"]), max_size=24)

TYPE2_VALUES: dict[str, list[bytes | None]] = {
    "PatientName": [DELETE, b"", b"Doe^John", b"DOE^JOHN^^^", b"Doe\\John", b"A" * 70],
    "PatientID": [DELETE, b"", b"ID-0001", b"  12345 ", b"X" * 70],
    "PatientBirthDate": [
        DELETE,
        b"",
        b"19700101",
        b"1970-01-01",
        b"19xx0704",
        b"1970",
        b"00000000",
    ],
    "PatientSex": [DELETE, b"", b"M", b"f", b" O", b"X", b"MALE", b"unknown"],
    "ReferringPhysicianName": [DELETE, b"", b"Dr^Who", b"=\xe5\xb1\xb1\xe7\x94\xb0"],
    "AccessionNumber": [DELETE, b"", b"ACC123", b"A" * 20, b"a\\b"],
    "StudyID": [DELETE, b"", b"1", b"S" * 20],
    "StudyDate": [DELETE, b"", b"20200102", b"2020.01.02", b"notadate", b"20201340"],
    "StudyTime": [DELETE, b"", b"080000", b"08:00:00", b"0800", b"080000.123456", b"25xx", b"8"],
}
OTHER_VALUES: dict[str, list[bytes | None]] = {
    "PatientAge": [DELETE, b"", b"045Y", b"45", b"abc"],
    "PatientWeight": [DELETE, b"", b"70", b"seventy"],
    "PatientSize": [b"1.75", b"tall"],
    "StudyDescription": [DELETE, b"", b"CT CHEST", b"D" * 100],
    "IssuerOfPatientID": [b"HOSPITAL", b""],
    "OtherPatientIDs": [b"A\\B", b""],
    "SeriesDescription": [DELETE, b""],
    "SeriesNumber": [DELETE, b"", b"x1"],
    "InstanceNumber": [DELETE, b""],
    "Manufacturer": [DELETE, b""],
    "KVP": [DELETE, b"", b"abc"],
    "ConvolutionKernel": [DELETE],
    "BodyPartExamined": [DELETE, b"chest"],
    "SOPClassUID": [b""],
    "FrameOfReferenceUID": [DELETE, b""],
    "PositionReferenceIndicator": [DELETE],
    "SliceLocation": [DELETE, b"abc"],
    "WindowCenter": [DELETE, b"abc"],
}


def _code(value: str, scheme: str, meaning: str) -> Item:
    return (("CodeValue", value), ("CodingSchemeDesignator", scheme), ("CodeMeaning", meaning))


_PHOTO: Item = (
    ("TypeOfInstances", "DICOM"),
    ("StudyInstanceUID", "1.2.826.0.1.3680043.8.498.1"),
    ("SeriesInstanceUID", "1.2.826.0.1.3680043.8.498.2"),
    (
        "ReferencedSOPSequence",
        (
            (
                ("ReferencedSOPClassUID", "1.2.840.10008.5.1.4.1.1.7"),
                ("ReferencedSOPInstanceUID", "1.2.826.0.1.3680043.8.498.3"),
            ),
        ),
    ),
    ("DICOMRetrievalSequence", ((("RetrieveAETitle", "ARCHIVE"),),)),
    ("HL7InstanceIdentifier", "photo-1"),
)
#: Attributes whose presence triggers a condition (Type 1C/2C) of the Patient, General Study
#: and Patient Study modules: the SEG must meet it (dciodvfy checks), or leave the trigger out.
CONDITION_VALUES: dict[str, list[bytes | None]] = {
    # the phantom writes YES with a method: these take the method away or break the flag
    "PatientIdentityRemoved": [b"YES", b"NO", b"MAYBE", b"yes", DELETE],
    "DeidentificationMethod": [DELETE, b"", b"M" * 70, b"CTP\\manual review"],
    "PatientSpeciesDescription": [b"Canis lupus familiaris", b""],
    "PatientBreedDescription": [b"Beagle"],
    "StrainDescription": [b"C57BL/6"],
    "ResponsiblePerson": [b"Owner^Jo", b""],
    "ResponsiblePersonRole": [b"OWNER", b"BOSS"],
    "ResponsibleOrganization": [b"City Zoo"],
    "PatientSexNeutered": [b"ALTERED", b"X", b""],
    "QualityControlSubject": [b"YES", b"MAYBE"],
    "PatientBirthDateInAlternativeCalendar": [b"5730"],
    "PatientAlternativeCalendar": [b"I"],
    "TypeOfPatientID": [b"TEXT"],
    "PregnancyStatus": [_us(4), _us(9)],
}
#: Sequences (name -> item lists) of those modules: well-formed, empty, or an item that lacks
#: what its macro requires.
CONDITION_SEQUENCES: dict[str, list[tuple[Item, ...]]] = {
    "DeidentificationMethodCodeSequence": [
        (_code("113100", "DCM", "Basic Application Confidentiality Profile"),),
        (),
        ((("CodeMeaning", "no code"),),),
    ],
    "PatientSpeciesCodeSequence": [(_code("448771007", "SCT", "Canis lupus familiaris"),), ()],
    "PatientBreedCodeSequence": [(_code("1", "99X", "Beagle"),)],
    "OtherPatientIDsSequence": [
        ((("PatientID", "X1"), ("TypeOfPatientID", "TEXT")),),
        ((("PatientID", "X1"),),),
    ],
    "IssuerOfPatientIDQualifiersSequence": [
        ((("UniversalEntityID", "1.2.3"), ("UniversalEntityIDType", "ISO")),),
        ((),),
    ],
    "ReferencedPatientPhotoSequence": [(_PHOTO,), ((("TypeOfInstances", "DICOM"),),)],
    "ReferencedPatientSequence": [((),)],
    "ReferencedStudySequence": [((),)],
    "AdmittingDiagnosesCodeSequence": [(_code("J18.9", "I10", "Pneumonia"),), ((),)],
    "ProcedureCodeSequence": [((("CodeValue", "CT"),),)],
    "IssuerOfAccessionNumberSequence": [((("LocalNamespaceEntityID", "RIS"),),), ((),)],
    "ReferringPhysicianIdentificationSequence": [((("InstitutionName", "H"),),)],
}
CHARSETS: list[bytes | None] = [
    DELETE,
    b"",
    b"ISO_IR 100",
    b"ISO_IR 192",
    b"ISO_IR 999",
    b"ISO_IR 6",
    b"\\ISO 2022 IR 87",
    b"ISO_IR 100 ",
    b"GB18030",
]
GEOMETRY_VALUES: dict[str, list[bytes | None]] = {
    "PixelSpacing": [
        b"0.8\\0.8",
        b"8e-1\\8e-1",
        b"0.800000000000\\0.8",
        b"",
        DELETE,
        b"0\\0",
        b"-0.8\\0.8",
        b"abc\\1",
        b"0.8",
        b"0.8\\0.8\\0.8",
        b"0.5\\0.9",
    ],
    "SliceThickness": [DELETE, b"", b"0", b"-2.5", b"abc", b"2.5000", b"1e-3", b"7"],
    "SpacingBetweenSlices": [DELETE, b"", b"0", b"-2.5", b"abc", b"5"],
    "ImageOrientationPatient": [
        b"1\\0\\0\\0\\1\\0",
        b"1\\0\\0\\0\\0\\-1",
        b"1\\0\\0\\1\\0\\0",
        b"",
        DELETE,
        b"2\\0\\0\\0\\1\\0",
        b"0.99999999\\0\\0\\0\\1\\0",
        b"1\\0\\0\\0\\1",
        b"-1\\0\\0\\0\\-1\\0",
    ],
    "RescaleSlope": [DELETE, b"", b"1", b"0", b"abc", b"nan", b"2", b"1.0000"],
    "RescaleIntercept": [DELETE, b"", b"-1024", b"x", b"0", b"inf"],
    "PhotometricInterpretation": [b"MONOCHROME1", b"RGB", b"PALETTE COLOR", b"", DELETE],
    "PixelRepresentation": [_us(0), _us(1), _us(2), DELETE],
}
PER_SLICE_VALUES: dict[str, list[bytes | None]] = {
    "ImagePositionPatient": [DELETE, b"", b"abc\\0\\0", b"0\\0\\0", b"1e9\\0\\0"],
    "SOPInstanceUID": [b"1.2.3.abc", b"", b"1.2.3"],
    "PixelSpacing": [b"0.81\\0.8"],
    "SliceThickness": [DELETE, b"3"],
}


def _from_table(table: dict[str, list[bytes | None]]) -> st.SearchStrategy[Mutation]:
    return st.sampled_from(sorted(table)).flatmap(
        lambda k: st.sampled_from(table[k]).map(lambda raw: Mutation(k, raw))
    )


def mutations(n_slices: int) -> st.SearchStrategy[Mutation]:
    """One mutation of any family; per-slice ones pick a slice of a series of ``n_slices``."""
    type2_text = st.sampled_from(["PatientName", "ReferringPhysicianName"]).flatmap(
        lambda k: _person_names.map(lambda raw: Mutation(k, raw))
    )
    id_text = st.sampled_from(["PatientID", "AccessionNumber", "StudyID"]).flatmap(
        lambda k: _short_text.map(lambda t: Mutation(k, t.encode("latin-1")))
    )
    per_slice = st.sampled_from(sorted(PER_SLICE_VALUES)).flatmap(
        lambda k: st.tuples(
            st.sampled_from(PER_SLICE_VALUES[k]), st.integers(0, max(n_slices - 1, 0))
        ).map(lambda a: Mutation(k, a[0], slice_index=a[1]))
    )
    return st.one_of(
        _from_table(TYPE2_VALUES),
        type2_text,
        id_text,
        _from_table(OTHER_VALUES),
        st.sampled_from(CHARSETS).map(lambda raw: Mutation("SpecificCharacterSet", raw)),
        _from_table(GEOMETRY_VALUES),
        per_slice,
        st.just(Mutation("PrivateBlock", b"", private=True)),
        _from_table(CONDITION_VALUES),
        condition_sequences(),
    )


def condition_sequences() -> st.SearchStrategy[Mutation]:
    """A sequence of :data:`CONDITION_SEQUENCES` set to one of its listed item lists."""
    return st.sampled_from(sorted(CONDITION_SEQUENCES)).flatmap(
        lambda k: st.sampled_from(CONDITION_SEQUENCES[k]).map(
            lambda items: Mutation(k, b"", items=items)
        )
    )


def series_mutations(n_slices: int) -> st.SearchStrategy[list[Mutation]]:
    """One to three mutations applied together (combinations are where contradictions hide)."""
    return st.lists(mutations(n_slices), min_size=1, max_size=3)
