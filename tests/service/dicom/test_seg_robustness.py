"""Ingest and SEG robustness as a property: mutated real-looking CT series in, either a SEG with
zero dciodvfy errors that reads back to the labels written, or a refusal naming the attribute.

Real parsing (``service.dicom.study_input``), real volume building, real highdicom, real dciodvfy;
only the network is left out (its labels are a fixed pattern here, so the read-back can be
compared voxel by voxel). The same strategies drive the real gRPC server in
``test_seg_robustness_grpc.py``. Hypothesis runs a fixed, derandomized set of examples.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.uid import generate_uid

from service.core.classes import DEFAULT_CLASSES
from service.core.errors import InvalidStudyError
from service.core.manifest import ModelManifest
from service.dicom.seg_reader import read_seg_labels
from service.dicom.seg_source import DEIDENTIFICATION_NOT_RECORDED
from service.dicom.seg_writer import write_study_seg
from service.dicom.study_input import parse_instances, select_ct_series
from service.dicom.volume import series_to_volume
from service.serving.errors import status_for
from tests.dicom_validation import dciodvfy_errors
from tests.service.dicom.dicom_mutations import (
    CHARSETS,
    CONDITION_SEQUENCES,
    CONDITION_VALUES,
    GEOMETRY_VALUES,
    OTHER_VALUES,
    PER_SLICE_VALUES,
    TYPE2_VALUES,
    Mutation,
    mutate_series,
    series_mutations,
)
from training.phantom import write_ct_series

ROWS, COLS = 20, 24
PROPERTY_SETTINGS = settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def write_series(folder, n_slices: int, *, patient_name: str = "Phantom^Robust") -> list[bytes]:
    """A small real CT series (phantom writer: every module a scanner writes)."""
    hu = np.random.default_rng(n_slices).integers(-1000, 400, (n_slices, ROWS, COLS))
    paths = write_ct_series(
        hu.astype(np.float32),
        (2.5, 0.8, 0.8),
        folder,
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        patient_name=patient_name,
        patient_id="PR0001",
        seed=n_slices,
    )
    return [p.read_bytes() for p in paths]


class Series(dict[int, list[bytes]]):
    """Base series by slice count; a short repr keeps Hypothesis' failure reports readable."""

    def __repr__(self) -> str:
        return f"Series({ {n: f'{len(b)} files' for n, b in self.items()} })"


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Series:
    root = tmp_path_factory.mktemp("robust")
    return Series({n: write_series(root / str(n), n) for n in (1, 3)})


@pytest.fixture(scope="module")
def manifest() -> ModelManifest:
    return ModelManifest(
        name="pulmoseg-robust",
        version="1.0.0",
        classes=list(DEFAULT_CLASSES),
        slice_context=3,
        hu_window=(-1000.0, 200.0),
        input_size=(ROWS, COLS),
    )


def pattern_labels(shape: tuple[int, ...], n_classes: int) -> np.ndarray:
    """Every class somewhere, different on every slice: what the read-back must reproduce."""
    z, y, x = np.indices(shape)
    return ((y // 5 + x // 6 + z) % n_classes).astype(np.uint8)


def segment_without_network(
    blobs: list[bytes], manifest: ModelManifest, seg_type: str
) -> tuple[bytes, np.ndarray, list[str]]:
    """The service's path from uploaded bytes to SEG bytes, labels from a fixed pattern."""
    volume = series_to_volume(select_ct_series(parse_instances(blobs)))
    labels = pattern_labels(volume.shape, len(manifest.classes))
    seg = write_study_seg(
        volume, labels, manifest, software_version="1", segmentation_type=seg_type
    )
    return seg, labels, [str(ds.SOPInstanceUID) for ds in volume.datasets]


def check_outcome(
    blobs: list[bytes], mutations: list[Mutation], manifest: ModelManifest, seg_type: str
) -> str:
    """The property itself; returns "segmented" or "refused" for the statistics."""
    try:
        seg, labels, uids = segment_without_network(blobs, manifest, seg_type)
    except InvalidStudyError as exc:
        code, details = status_for(exc)
        assert code.name == "INVALID_ARGUMENT"
        words = {w for m in mutations for w in m.names}
        assert any(w in details for w in words), (
            f"refusal does not name a mutated attribute {sorted(words)}: {details}"
        )
        return "refused"
    # Anything else escaping here would have been INTERNAL for a client: the test fails on it.
    assert dciodvfy_errors(seg) == [], [str(m) for m in mutations]
    np.testing.assert_array_equal(read_seg_labels(seg, uids), labels)
    return "segmented"


@PROPERTY_SETTINGS
@given(
    n_slices=st.sampled_from([1, 3]),
    data=st.data(),
    seg_type=st.sampled_from(["BINARY", "LABELMAP"]),
)
def test_mutated_series_is_segmented_cleanly_or_refused_by_name(
    series: dict[int, list[bytes]],
    manifest: ModelManifest,
    n_slices: int,
    data: st.DataObject,
    seg_type: str,
) -> None:
    mutations = data.draw(series_mutations(n_slices), label="mutations")
    check_outcome(mutate_series(series[n_slices], mutations), mutations, manifest, seg_type)


def _every_single_mutation() -> list[tuple[int, Mutation]]:
    """(slices, mutation): every listed value on a 3-slice series, geometry also on one slice."""
    out = [(3, Mutation("SpecificCharacterSet", raw)) for raw in CHARSETS]
    for table in (TYPE2_VALUES, OTHER_VALUES, GEOMETRY_VALUES, CONDITION_VALUES):
        out += [(3, Mutation(k, raw)) for k, values in table.items() for raw in values]
    out += [
        (1, Mutation(k, raw))
        for k in ("SliceThickness", "SpacingBetweenSlices", "PixelSpacing")
        for raw in GEOMETRY_VALUES[k]
    ]
    out += [
        (3, Mutation(k, raw, slice_index=1)) for k, vs in PER_SLICE_VALUES.items() for raw in vs
    ]
    out += [
        (3, Mutation(k, b"", items=items))
        for k, lists in CONDITION_SEQUENCES.items()
        for items in lists
    ]
    return out


@pytest.mark.parametrize(
    ("n_slices", "mutation"), _every_single_mutation(), ids=lambda v: str(v).replace(" ", "_")
)
def test_every_listed_value_alone(
    series: Series, manifest: ModelManifest, n_slices: int, mutation: Mutation
) -> None:
    """Each value of the tables on its own, so no family depends on what Hypothesis draws."""
    check_outcome(mutate_series(series[n_slices], [mutation]), [mutation], manifest, "BINARY")


# -- named cases: the two from the hardening issue and the anonymised studies of issue 8 ----------
def test_present_but_empty_specific_character_set_is_segmented(
    series: dict[int, list[bytes]], manifest: ModelManifest
) -> None:
    mutations = [Mutation("SpecificCharacterSet", b""), Mutation("PatientName", b"M\xfcller^J")]
    blobs = mutate_series(series[3], mutations)
    assert check_outcome(blobs, mutations, manifest, "BINARY") == "segmented"


def test_single_slice_without_slice_thickness_is_segmented(
    series: dict[int, list[bytes]], manifest: ModelManifest
) -> None:
    mutations = [Mutation("SliceThickness", None), Mutation("SpacingBetweenSlices", None)]
    blobs = mutate_series(series[1], mutations)
    assert check_outcome(blobs, mutations, manifest, "BINARY") == "segmented"


ANONYMISED = (
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "ReferringPhysicianName",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "PatientID",
)


@pytest.mark.parametrize("raw", [None, b""], ids=["removed", "emptied"])
def test_anonymised_type2_attributes_are_written_empty(
    series: dict[int, list[bytes]], manifest: ModelManifest, raw: bytes | None
) -> None:
    import io

    import pydicom

    mutations = [Mutation(k, raw) for k in ANONYMISED]
    blobs = mutate_series(series[3], mutations)
    assert check_outcome(blobs, mutations, manifest, "BINARY") == "segmented"
    seg, _, _ = segment_without_network(blobs, manifest, "BINARY")
    written = pydicom.dcmread(io.BytesIO(seg))
    assert {k: str(written[k].value or "") for k in ANONYMISED} == dict.fromkeys(ANONYMISED, "")


@pytest.mark.parametrize(
    ("mutation", "attribute"),
    [
        (Mutation("PatientSex", b"m"), ("PatientSex", "M")),
        (Mutation("StudyDate", b"2020-01-02"), ("StudyDate", "20200102")),
        (Mutation("StudyTime", b"08:30:15"), ("StudyTime", "083015")),
        (Mutation("PatientBirthDate", b"1970.01.31"), ("PatientBirthDate", "19700131")),
    ],
    ids=["sex-lowercase", "date-dashes", "time-colons", "dob-dots"],
)
def test_formatting_variants_are_repaired(
    series: dict[int, list[bytes]],
    manifest: ModelManifest,
    mutation: Mutation,
    attribute: tuple[str, str],
) -> None:
    import io

    import pydicom

    blobs = mutate_series(series[3], [mutation])
    seg, _, _ = segment_without_network(blobs, manifest, "BINARY")
    assert dciodvfy_errors(seg) == []
    keyword, expected = attribute
    assert str(pydicom.dcmread(io.BytesIO(seg))[keyword].value) == expected


def test_source_datasets_are_not_modified(
    series: dict[int, list[bytes]], manifest: ModelManifest
) -> None:
    """Repairs happen on copies: the volume's datasets still hold what was uploaded."""
    mutations = [
        Mutation("SliceThickness", None),
        Mutation("StudyDate", b"2020-01-02"),
        Mutation("PatientName", "Müller".encode()),  # UTF-8 declared as Latin-1
    ]
    volume = series_to_volume(
        select_ct_series(parse_instances(mutate_series(series[1], mutations)))
    )
    before = [(e.tag, e.value) for e in volume.datasets[0] if e.tag != 0x7FE00010]
    write_study_seg(volume, pattern_labels(volume.shape, 4), manifest, software_version="1")
    assert [(e.tag, e.value) for e in volume.datasets[0] if e.tag != 0x7FE00010] == before
    assert "SliceThickness" not in volume.datasets[0]


# -- conditional attributes: Patient Identity Removed YES needs a method (Type 1C) -----------------
_DEID_CODE = CONDITION_SEQUENCES["DeidentificationMethodCodeSequence"][0]


@pytest.mark.parametrize(
    ("mutations", "method", "with_code"),
    [
        ([Mutation("DeidentificationMethod", None)], DEIDENTIFICATION_NOT_RECORDED, False),
        ([Mutation("DeidentificationMethod", b"")], DEIDENTIFICATION_NOT_RECORDED, False),
        ([Mutation("DeidentificationMethod", b"M" * 70)], DEIDENTIFICATION_NOT_RECORDED, False),
        ([Mutation("DeidentificationMethod", b"CTP")], "CTP", False),
        (
            [
                Mutation("DeidentificationMethod", None),
                Mutation("DeidentificationMethodCodeSequence", b"", items=_DEID_CODE),
            ],
            None,
            True,
        ),
        (
            [
                Mutation("DeidentificationMethod", None),
                Mutation("DeidentificationMethodCodeSequence", b"", items=((("CodeValue", "1"),),)),
            ],
            DEIDENTIFICATION_NOT_RECORDED,
            False,
        ),
    ],
    ids=["no-method", "empty-method", "too-long-method", "method", "code-only", "broken-code"],
)
def test_identity_removed_source_gives_seg_with_a_method(
    series: Series,
    manifest: ModelManifest,
    mutations: list[Mutation],
    method: str | None,
    with_code: bool,
) -> None:
    import io

    import pydicom

    mutations = [Mutation("PatientIdentityRemoved", b"YES"), *mutations]
    blobs = mutate_series(series[3], mutations)
    assert check_outcome(blobs, mutations, manifest, "BINARY") == "segmented"
    seg, _, _ = segment_without_network(blobs, manifest, "BINARY")
    written = pydicom.dcmread(io.BytesIO(seg))
    assert written.PatientIdentityRemoved == "YES"
    assert written.get("DeidentificationMethod") == method
    assert ("DeidentificationMethodCodeSequence" in written) == with_code


def test_invalid_identity_removed_flag_is_left_out(series: Series, manifest: ModelManifest) -> None:
    import io

    import pydicom

    mutations = [Mutation("PatientIdentityRemoved", b"MAYBE")]
    blobs = mutate_series(series[3], mutations)
    assert check_outcome(blobs, mutations, manifest, "BINARY") == "segmented"
    seg, _, _ = segment_without_network(blobs, manifest, "BINARY")
    assert "PatientIdentityRemoved" not in pydicom.dcmread(io.BytesIO(seg))
