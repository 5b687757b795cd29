"""Make a CT series' header fit to be copied into a DICOM-SEG: repair what is safe, refuse the rest.

A SEG copies the patient and study attributes of its first source image and derives its pixel
measures from the source geometry. Real archives (and anonymisers) leave those attributes
missing, empty, oddly formatted or contradictory; highdicom then fails with a bare
``AttributeError``/``ValueError`` or writes a SEG that ``dciodvfy`` rejects. This module decides,
attribute by attribute, once:

===========================================  ================================================
source                                       SEG
===========================================  ================================================
Type 2 patient/study attribute missing/empty written empty (anonymised studies go through)
formatting variant (``2020-01-02``, `` m``)  canonical value (``20200102``, ``M``)
uninterpretable Type 2 value (sex ``X``)     refused: InvalidStudyError naming the attribute
other copied attribute invalid for its VR    left out of the SEG (a warning names the keyword)
Specific Character Set empty or unknown      none when the text is ASCII, else UTF-8
Slice Thickness missing, empty or <= 0       the slice spacing the volume was built with
SOP Class UID empty (tolerated on input)     CT Image Storage
a referenced UID broken                      derived reproducibly (service.dicom.identifier_repair)
Patient Identity Removed YES, no method      method copied, else "... method not recorded"
species given (an animal)                    its Type 2C attributes written, empty if absent
a condition's companion or enum value wrong  left out (see repair_conditional_attributes)
===========================================  ================================================

The caller's datasets are never modified: highdicom gets element-level copies. Messages name
attributes, never their values (those are patient data).
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable, Sequence

import highdicom as hd
import pydicom
from pydicom import config as pydicom_config
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.valuerep import validate_value

from service.core.dicom_uids import CT_IMAGE_STORAGE
from service.core.errors import InvalidStudyError

logger = logging.getLogger(__name__)


#: Type 2 attributes of the Patient and General Study modules that a SEG copies from its first
#: source image: they must be present in the SEG, but may be empty.
TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "ReferringPhysicianName",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
)
#: UIDs the SEG references: no repair is possible, a wrong one would point at nothing.
REFERENCED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_SEX_VALUES = {"M": "M", "F": "F", "O": "O", "MALE": "M", "FEMALE": "F", "OTHER": "O"}
_DATE_VARIANT = re.compile(r"^(\d{4})[-./](\d{2})[-./](\d{2})$")
_TIME_VARIANT = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,6})?)?$")
_KNOWN_CHARSETS = frozenset(v.value for v in hd.enum.SpecificCharacterSetValues)
_UTF8 = "ISO_IR 192"
_LATIN1 = "ISO_IR 100"
#: Longest encoded value (bytes; per component group for PN) of the text VRs a SEG copies.
_MAX_BYTES = {"SH": 16, "LO": 64, "PN": 64, "CS": 16, "AE": 16}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: Text VRs in which no control character is allowed (names, short and long strings).
_NAME_VRS = frozenset({"PN", "LO", "SH"})
#: Text VRs whose values are checked (numbers, bytes and sequences need no repair here).
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "PN", "SH", "TM", "UI"})


def attribute_name(keyword: str) -> str:
    """``Keyword (gggg,eeee)``, the form every error message uses to name an attribute."""
    tag = tag_for_keyword(keyword)
    return f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})" if tag is not None else keyword


def _values(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [str(v) for v in value]
    return [str(value)]


def _valid_for_vr(vr: str, value: object) -> bool:
    try:
        for text in _values(value):
            validate_value(vr, text, pydicom_config.RAISE)
    except (ValueError, TypeError):
        return False
    return True


def _canonical_date(text: str) -> str | None:
    match = _DATE_VARIANT.match(text)
    candidate = "".join(match.groups()) if match else text
    return candidate if _valid_for_vr("DA", candidate) else None


def _canonical_time(text: str) -> str | None:
    match = _TIME_VARIANT.match(text)
    if match:
        hh, mm, ss, frac = match.groups()
        text = f"{hh}{mm}{ss or ''}{frac or ''}"
    return text if _valid_for_vr("TM", text) else None


def _canonical_sex(text: str) -> str | None:
    return _SEX_VALUES.get(text.upper())


_CANONICAL: dict[str, tuple[Callable[[str], str | None], str]] = {
    "PatientSex": (_canonical_sex, "holds a value outside 'M', 'F', 'O' or empty"),
    "PatientBirthDate": (_canonical_date, "is not a DICOM date (YYYYMMDD)"),
    "StudyDate": (_canonical_date, "is not a DICOM date (YYYYMMDD)"),
    "StudyTime": (_canonical_time, "is not a DICOM time (HHMMSS.FFFFFF)"),
}


def type2_value(source: Dataset, keyword: str) -> object:
    """The value the SEG gets for a Type 2 attribute; '' when missing or empty."""
    element = source.get(keyword)
    if element in (None, "") or (isinstance(element, MultiValue) and len(element) == 0):
        return ""
    values = _values(element)
    if len(values) != 1:
        raise InvalidStudyError(
            f"The CT series' {attribute_name(keyword)} holds {len(values)} values where DICOM "
            "allows one, so a DICOM-SEG cannot copy it."
        )
    text = values[0].strip()
    if not text:
        return ""
    if keyword in _CANONICAL:
        canonical, form = _CANONICAL[keyword]
        fixed = canonical(text)
        if fixed is None:
            raise InvalidStudyError(
                f"The CT series' {attribute_name(keyword)} {form}, which a DICOM-SEG cannot carry."
            )
        return fixed
    vr = dictionary_VR(keyword)
    if not _valid_for_vr(vr, text):
        raise InvalidStudyError(
            f"The CT series' {attribute_name(keyword)} is not a valid {vr} value (too long or "
            "holding characters the value representation does not allow), so a DICOM-SEG "
            "cannot copy it."
        )
    return text if vr != "PN" else element


def _clean_text(text: str) -> str:
    """Undo the commonest mislabelling (UTF-8 bytes declared as Latin-1), else drop controls.

    Control characters are not allowed in names and short strings; they appear when bytes were
    decoded with the wrong character set, and ``dciodvfy`` rejects them.
    """
    if not _CONTROL.search(text):
        return text
    try:
        recovered = text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        recovered = text
    return recovered if not _CONTROL.search(recovered) else _CONTROL.sub("", text)


def _clean_text_elements(ds: Dataset) -> list[str]:
    """Clean the names and strings in place; returns every text value for the charset choice."""
    texts: list[str] = []
    for element in list(ds):
        if element.VR not in _NAME_VRS or element.value is None:
            continue
        values = _values(element.value)
        cleaned = [_clean_text(v) for v in values]
        if cleaned != values:
            keyword = keyword_for_tag(element.tag) or str(element.tag)
            logger.warning("source %s held control characters: repaired for the SEG", keyword)
            ds[element.tag].value = cleaned if len(cleaned) > 1 else cleaned[0]
        texts.extend(cleaned)
    return texts


def _encodable(texts: list[str], charset: str) -> bool:
    codec = python_encoding.get(charset)
    if codec is None or charset.startswith("ISO 2022"):
        return all(t.isascii() for t in texts)
    try:
        for text in texts:
            text.encode(codec)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _repair_charset(ds: Dataset) -> None:
    """Keep a declared character set that holds the text; else declare none (ASCII), Latin-1
    or, for text beyond Latin-1, UTF-8.

    The values are already decoded to ``str`` (pydicom read them with the source's character
    set, or with its default when that set was empty or unknown), so re-declaring only changes
    how the SEG encodes them. Latin-1 comes before UTF-8 because it keeps one byte per
    character, so values stay within their VR's length limit.
    """
    texts = _clean_text_elements(ds)
    declared = [v.strip() for v in _values(ds.get("SpecificCharacterSet"))]
    if len(declared) == 1 and declared[0] in _KNOWN_CHARSETS and _encodable(texts, declared[0]):
        ds.SpecificCharacterSet = declared[0]
        _check_encoded_lengths(ds, declared[0])
        return
    if "SpecificCharacterSet" in ds:
        del ds.SpecificCharacterSet
    if all(text.isascii() for text in texts):
        chosen = ""
    else:
        chosen = _LATIN1 if _encodable(texts, _LATIN1) else _UTF8
        ds.SpecificCharacterSet = chosen
    _check_encoded_lengths(ds, chosen or _LATIN1)
    if declared and declared != [""]:
        logger.warning(
            "source Specific Character Set %s does not fit the SEG's text; the SEG declares %s",
            declared,
            chosen or "none (ASCII text)",
        )


def _check_encoded_lengths(ds: Dataset, charset: str) -> None:
    """Values longer than their VR allows once encoded: Type 2 refused, others left out."""
    codec = python_encoding.get(charset, "utf-8")
    if charset.startswith("ISO 2022"):
        return  # escape sequences make byte counts meaningless; pydicom validated the values
    for element in list(ds):
        limit = _MAX_BYTES.get(element.VR)
        if limit is None or element.value is None:
            continue
        for text in _values(element.value):
            parts = text.split("=") if element.VR == "PN" else [text]
            if all(len(part.encode(codec, "replace")) <= limit for part in parts):
                continue
            keyword = keyword_for_tag(element.tag) or str(element.tag)
            if keyword in TYPE2_COPIED:
                raise InvalidStudyError(
                    f"The CT series' {attribute_name(keyword)} is longer than its value "
                    f"representation {element.VR} allows ({limit} bytes), so a DICOM-SEG "
                    "cannot copy it."
                )
            del ds[element.tag]
            logger.warning("source %s is too long for its VR: left out of the SEG", keyword)
            break


def _copy(ds: Dataset) -> Dataset:
    """A dataset holding copies of ``ds``'s elements: values set or repaired here stay here.

    Used for the first source, whose patient/study attributes are repaired in place.
    """
    clone = Dataset()
    for element in ds:
        clone.add(copy.copy(element))  # setting a value replaces it in the copy only
    _share_file_meta(ds, clone)
    return clone


def _share_elements(ds: Dataset) -> Dataset:
    """A new dataset over ``ds``'s own element objects, for the sources after the first.

    About 20× cheaper than :func:`_copy` (no element is copied): what this module changes on
    such a source is done by :func:`_replace`, which swaps in a new element, never by assigning
    to a shared one; highdicom only reads its sources.
    """
    # ``keys()``: iterating a Dataset yields its elements, converting raw ones.
    clone = Dataset({tag: ds.get_item(tag) for tag in ds.keys()})  # noqa: SIM118
    _share_file_meta(ds, clone)
    return clone


def _share_file_meta(ds: Dataset, clone: Dataset) -> None:
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        clone.file_meta = meta


def _replace(ds: Dataset, keyword: str, value: object) -> None:
    """Set ``keyword`` through a new element, so a dataset sharing the old one keeps it."""
    tag = Tag(keyword)
    ds[tag] = DataElement(tag, dictionary_VR(keyword), value)


def _check_uids(ds: Dataset, index: int) -> None:
    for keyword in REFERENCED_UIDS:
        value = str(ds.get(keyword) or "").strip()
        if not value or not _valid_for_vr("UI", value):
            raise InvalidStudyError(
                f"Instance #{index} of the CT series has a missing or malformed "
                f"{attribute_name(keyword)} (a UID holds digits and dots, at most 64 "
                "characters); a DICOM-SEG must reference the image by it."
            )


def _drop_invalid_optional(ds: Dataset) -> None:
    """Leave out copied attributes whose values break their VR, except the Type 2 ones."""
    keep = set(TYPE2_COPIED) | set(REFERENCED_UIDS) | {"SpecificCharacterSet"}
    for element in list(ds):
        keyword = keyword_for_tag(element.tag)
        if not keyword or keyword in keep or element.VR not in _TEXT_VRS:
            continue
        if element.tag.group not in (0x0008, 0x0010, 0x0012, 0x0020, 0x0032, 0x0038):
            continue
        if element.tag.group == 0x0020 and keyword not in ("StudyID", "OtherStudyNumbers"):
            continue  # geometry and UIDs of group 0020 are checked by the volume builder
        if not _valid_for_vr(element.VR, element.value):
            del ds[element.tag]
            logger.warning(
                "source %s is not a valid %s value: left out of the SEG", keyword, element.VR
            )


#: Enumerated values of copied coded-string attributes (empty allowed where the attribute is
#: Type 2C); another value is left out of the SEG, like any copied value that breaks its VR.
_ENUMERATED = {
    "PatientIdentityRemoved": frozenset({"YES", "NO"}),
    "QualityControlSubject": frozenset({"YES", "NO"}),
    "PatientSexNeutered": frozenset({"ALTERED", "UNALTERED", ""}),
    "ResponsiblePersonRole": frozenset(
        {
            "OWNER",
            "PARENT",
            "CHILD",
            "SPOUSE",
            "SIBLING",
            "RELATIVE",
            "GUARDIAN",
            "CUSTODIAN",
            "AGENT",
            "INVESTIGATOR",
            "VETERINARIAN",
        }
    ),
}
_ENUMERATED_NUMBERS = {"PregnancyStatus": frozenset({1, 2, 3, 4})}
#: What the SEG says when its source is marked de-identified but does not say how (LO, <= 64).
DEIDENTIFICATION_NOT_RECORDED = "Source marked identity removed; method not recorded"
_CODE_VALUES = ("CodeValue", "LongCodeValue", "URNCodeValue")
#: Left out whatever they hold: dciodvfy (dicom3tools 2022) rejects even a well-formed
#: Referenced Patient Photo Sequence (it wants an HL7 Instance Identifier whatever the Type of
#: Instances), and a photo of the patient is nothing a SEG or its SR needs.
_NOT_COPIED = ("ReferencedPatientPhotoSequence",)
#: Attributes that describe an animal: without a species (Type 1C for animals) they go.
_NON_HUMAN_ONLY = (
    "PatientBreedDescription",
    "PatientBreedCodeSequence",
    "BreedRegistrationSequence",
    "StrainDescription",
    "StrainNomenclature",
    "StrainStockSequence",
    "StrainAdditionalInformation",
    "StrainCodeSequence",
    "GeneticModificationsSequence",
)
#: Type 2C attributes required (possibly empty) once the patient is an animal.
_NON_HUMAN_TYPE2C = {
    "PatientBreedDescription": "",
    "PatientBreedCodeSequence": [],
    "BreedRegistrationSequence": [],
    "ResponsiblePerson": "",
    "ResponsibleOrganization": "",
    "PatientSexNeutered": "",
}
_ALTERNATIVE_CALENDAR_DATES = (
    "PatientBirthDateInAlternativeCalendar",
    "PatientDeathDateInAlternativeCalendar",
)


def _text(ds: Dataset, keyword: str) -> str:
    return "\\".join(v.strip() for v in _values(ds.get(keyword))).strip("\\")


def _has_items(ds: Dataset, keyword: str) -> bool:
    if keyword not in ds or ds[keyword].VR != "SQ":
        return False
    return len(ds[keyword].value or []) > 0


def _code_item_ok(item: Dataset) -> bool:
    if not _text(item, "CodeMeaning") or not any(_text(item, k) for k in _CODE_VALUES):
        return False
    return bool(_text(item, "CodingSchemeDesignator") or _text(item, "URNCodeValue"))


def _sop_item_ok(item: Dataset) -> bool:
    return bool(_text(item, "ReferencedSOPClassUID") and _text(item, "ReferencedSOPInstanceUID"))


def _hl7_item_ok(item: Dataset) -> bool:
    universal = _text(item, "UniversalEntityID") and _text(item, "UniversalEntityIDType")
    return bool(_text(item, "LocalNamespaceEntityID") or universal)


def _person_item_ok(item: Dataset) -> bool:
    codes = item.get("PersonIdentificationCodeSequence") or []
    institution = _text(item, "InstitutionName") or _has_items(item, "InstitutionCodeSequence")
    return bool(codes) and all(_code_item_ok(c) for c in codes) and bool(institution)


def _other_id_item_ok(item: Dataset) -> bool:
    return bool(_text(item, "PatientID") and _text(item, "TypeOfPatientID"))


#: Copied sequences of the Patient and study modules, with what each item must hold.
_SEQUENCE_ITEMS: dict[str, Callable[[Dataset], bool]] = {
    **dict.fromkeys(
        (
            "AdmittingDiagnosesCodeSequence",
            "DeidentificationMethodCodeSequence",
            "EthnicGroupCodeSequence",
            "PatientBreedCodeSequence",
            "PatientSizeCodeSequence",
            "PatientSpeciesCodeSequence",
            "ProcedureCodeSequence",
            "ReasonForPerformedProcedureCodeSequence",
            "ReasonForVisitCodeSequence",
            "RequestingServiceCodeSequence",
            "StrainCodeSequence",
        ),
        _code_item_ok,
    ),
    **dict.fromkeys(("ReferencedPatientSequence", "ReferencedStudySequence"), _sop_item_ok),
    **dict.fromkeys(
        (
            "IssuerOfAccessionNumberSequence",
            "IssuerOfAdmissionIDSequence",
            "IssuerOfServiceEpisodeIDSequence",
        ),
        _hl7_item_ok,
    ),
    **dict.fromkeys(
        (
            "ReferringPhysicianIdentificationSequence",
            "ConsultingPhysicianIdentificationSequence",
            "PhysiciansOfRecordIdentificationSequence",
            "PhysiciansReadingStudyIdentificationSequence",
        ),
        _person_item_ok,
    ),
    "OtherPatientIDsSequence": _other_id_item_ok,
}
#: Type 1C sequences: present means at least one item.
_NON_EMPTY_SEQUENCES = ("DeidentificationMethodCodeSequence", "PatientSpeciesCodeSequence")


def _leave_out(ds: Dataset, keyword: str, why: str) -> None:
    if keyword in ds:
        del ds[keyword]
        logger.warning("source %s %s: left out", keyword, why)


def repair_conditional_attributes(ds: Dataset) -> None:
    """Make the copied Patient and study modules meet their conditions (Type 1C/2C), in place.

    Values outside an attribute's enumerated values and sequence items missing what their
    macro requires are left out (a warning names the keyword); a source marked de-identified
    keeps or gets a De-identification Method; an animal's Type 2C attributes are written empty;
    attributes that need a missing companion (breed without species, Responsible Person without
    its role, a date in an alternative calendar without the calendar) are left out.
    """
    for keyword, allowed in _ENUMERATED.items():
        if keyword in ds and any(v.strip() not in allowed for v in _values(ds[keyword].value)):
            _leave_out(ds, keyword, "holds a value outside its enumerated values")
    for keyword, numbers in _ENUMERATED_NUMBERS.items():
        value = ds[keyword].value if keyword in ds else None
        numbers_held = value if isinstance(value, MultiValue | list) else [value]
        if value is not None and any(v not in numbers for v in numbers_held):
            _leave_out(ds, keyword, "holds a value outside its enumerated values")
    for keyword, item_ok in _SEQUENCE_ITEMS.items():
        if keyword not in ds:
            continue
        items = ds[keyword].value or []
        if not all(isinstance(i, Dataset) and item_ok(i) for i in items):
            _leave_out(ds, keyword, "holds an item missing what its macro requires")
        elif not items and keyword in _NON_EMPTY_SEQUENCES:
            _leave_out(ds, keyword, "is an empty sequence where one item is required")
    for keyword in _NOT_COPIED:
        _leave_out(ds, keyword, "is not carried into derived objects")
    _repair_deidentification(ds)
    animal = bool(_text(ds, "PatientSpeciesDescription")) or _has_items(
        ds, "PatientSpeciesCodeSequence"
    )
    if "PatientSpeciesDescription" in ds and not _text(ds, "PatientSpeciesDescription"):
        _leave_out(ds, "PatientSpeciesDescription", "is empty (Type 1C)")
    if not animal:
        for keyword in _NON_HUMAN_ONLY:
            _leave_out(ds, keyword, "describes an animal but the source names no species")
    if _text(ds, "ResponsiblePerson") and not _text(ds, "ResponsiblePersonRole"):
        _leave_out(ds, "ResponsiblePerson", "has no Responsible Person Role")
    if not _text(ds, "ResponsiblePerson"):
        _leave_out(ds, "ResponsiblePersonRole", "has no Responsible Person")
    if animal:
        for keyword, empty in _NON_HUMAN_TYPE2C.items():
            if keyword not in ds:
                _replace(ds, keyword, empty)
    if not _text(ds, "PatientAlternativeCalendar"):
        for keyword in _ALTERNATIVE_CALENDAR_DATES:
            _leave_out(ds, keyword, "needs a Patient Alternative Calendar")
    if not any(_text(ds, keyword) for keyword in _ALTERNATIVE_CALENDAR_DATES):
        _leave_out(ds, "PatientAlternativeCalendar", "names the calendar of no date")


def _repair_deidentification(ds: Dataset) -> None:
    """Patient Identity Removed YES requires a De-identification Method or its code sequence."""
    if _text(ds, "PatientIdentityRemoved") != "YES":
        return
    if "DeidentificationMethod" in ds and not _text(ds, "DeidentificationMethod"):
        del ds.DeidentificationMethod  # Type 1C: present means a value
    if "DeidentificationMethod" in ds or _has_items(ds, "DeidentificationMethodCodeSequence"):
        return
    _replace(ds, "DeidentificationMethod", DEIDENTIFICATION_NOT_RECORDED)
    logger.warning(
        "source PatientIdentityRemoved is YES without a de-identification method: the SEG says "
        "the method was not recorded"
    )


def seg_source_images(datasets: Sequence[Dataset], slice_spacing_mm: float) -> list[Dataset]:
    """Copies of a volume's sorted source datasets that highdicom can turn into a valid SEG.

    ``slice_spacing_mm`` is the spacing the volume was built with; it stands in for a missing or
    unusable Slice Thickness (e.g. a single-slice series without one).
    """
    if not datasets:
        raise InvalidStudyError("The CT series holds no slices to reference in a DICOM-SEG.")
    if not slice_spacing_mm > 0:
        raise ValueError(f"Argument 'slice_spacing_mm' must be > 0, got {slice_spacing_mm}.")
    first = datasets[0]
    type2 = {keyword: type2_value(first, keyword) for keyword in TYPE2_COPIED}
    sources: list[Dataset] = []
    reference_thickness: str | None = None
    for index, ds in enumerate(datasets):
        _check_uids(ds, index)
        clone = _copy(ds) if index == 0 else _share_elements(ds)
        if not str(clone.get("SOPClassUID") or "").strip():
            _replace(clone, "SOPClassUID", CT_IMAGE_STORAGE)
        thickness = _positive_ds(clone.get("SliceThickness"))
        if index == 0:
            reference_thickness = thickness or f"{slice_spacing_mm:.6g}"
        # One thickness for every frame: highdicom's pixel measures must agree across slices.
        _replace(clone, "SliceThickness", reference_thickness)
        if "SpacingBetweenSlices" in clone and _positive_ds(clone.SpacingBetweenSlices) is None:
            del clone.SpacingBetweenSlices
        if index == 0:
            for keyword, value in type2.items():
                setattr(clone, keyword, value)
            _repair_charset(clone)
            _drop_invalid_optional(clone)
            repair_conditional_attributes(clone)
        sources.append(clone)
    return sources


def _positive_ds(value: object) -> str | None:
    try:
        number = float(str(value))
    except (TypeError, ValueError):
        return None
    if not (number > 0 and number < 1e6):
        return None
    text = f"{number:.6g}"
    return text


def check_seg_dataset(seg: pydicom.Dataset) -> None:
    """Leave out of a built SEG any copied top-level text attribute that breaks its VR.

    highdicom copies whole modules (Patient, General Study, Patient Study, Clinical Trial …)
    from the source; this sweep catches what :func:`seg_source_images` did not foresee.
    """
    _drop_invalid_optional(seg)
    repair_conditional_attributes(seg)
