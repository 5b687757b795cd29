"""The robustness property through the real gRPC server: mutated CT series are segmented into a
dciodvfy-clean SEG or refused with INVALID_ARGUMENT naming the attribute — never INTERNAL.

Real server on loopback (port 0), real pipeline (MONAI Deploy operators, ONNX Runtime with the
session's exported model), real dciodvfy and highdicom read-back. The function-level property
(``test_seg_robustness.py``) runs many more examples without the network.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings

from service.client.client import ClientError, SegmentationClient
from service.dicom.seg_reader import read_seg_labels
from service.serving.server import RunningServer, build_server
from service.serving.settings import load_settings
from tests.dicom_validation import dciodvfy_errors
from tests.service.dicom.dicom_mutations import Mutation, mutate_series, series_mutations
from tests.service.dicom.test_seg_robustness import ANONYMISED, Series, write_series


@pytest.fixture(scope="module")
def server(exported_model: Path) -> Iterator[RunningServer]:
    settings_ = load_settings(
        env={},
        model_path=exported_model,
        port=0,
        metrics_port=0,
        max_workers=4,
        max_concurrent_studies=2,
    )
    running = build_server(settings_)
    assert running.wait_until_ready(120), f"model did not load: {running.load_error!r}"
    yield running
    running.stop(grace=1)


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[SegmentationClient]:
    with SegmentationClient(server.address, timeout_s=120) as c:
        yield c


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Series:
    root = tmp_path_factory.mktemp("robust_grpc")
    return Series({n: write_series(root / str(n), n) for n in (1, 3)})


def _internal_errors(server: RunningServer) -> float:
    value = server.metrics.registry.get_sample_value(
        "pulmoseg_requests_total", {"method": "SegmentStudy", "code": "INTERNAL"}
    )
    return value or 0.0


def segment_or_refusal(
    client: SegmentationClient, blobs: list[bytes], mutations: list[Mutation]
) -> str:
    """Upload; check a SEG (conformant, reads back to the summary's volumes) or a refusal."""
    try:
        result = client.segment_files(blobs)
    except ClientError as exc:
        assert exc.code is grpc.StatusCode.INVALID_ARGUMENT, f"{exc.code}: {exc}"
        words = {w for m in mutations for w in m.names}
        assert any(w in str(exc) for w in words), f"{sorted(words)} not named in: {exc}"
        return "refused"
    seg = result.seg_bytes
    assert dciodvfy_errors(seg) == [], [str(m) for m in mutations]
    uids = [
        str(s.ReferencedSOPInstanceUID)
        for s in pydicom.dcmread(io.BytesIO(seg))
        .ReferencedSeriesSequence[0]
        .ReferencedInstanceSequence
    ]
    labels = read_seg_labels(seg, uids)
    assert labels.shape[0] == len(blobs)
    # The SEG holds what the server measured: per-class voxel counts match the summary.
    voxels = {name: ml for name, ml in result.summary["class_volumes_ml"].items() if ml > 0}
    assert (labels > 0).any() == bool(voxels)
    return "segmented"


@settings(
    max_examples=10,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(mutations=series_mutations(3))
def test_mutated_uploads_never_end_as_internal(
    server: RunningServer, client: SegmentationClient, series: Series, mutations: list[Mutation]
) -> None:
    before = _internal_errors(server)
    segment_or_refusal(client, mutate_series(series[3], mutations), mutations)
    assert _internal_errors(server) == before


def test_present_but_empty_specific_character_set(
    client: SegmentationClient, series: Series
) -> None:
    """Issue 10 (a): this used to fail SEG construction and reach the client as INTERNAL."""
    mutations = [Mutation("SpecificCharacterSet", b""), Mutation("PatientName", b"M\xfcller^J")]
    assert segment_or_refusal(client, mutate_series(series[3], mutations), mutations) == (
        "segmented"
    )


def test_single_slice_without_slice_thickness(client: SegmentationClient, series: Series) -> None:
    """Issue 10 (b): the SEG used to lack the Type 1C SliceThickness of its pixel measures."""
    mutations = [Mutation("SliceThickness", None), Mutation("SpacingBetweenSlices", None)]
    blobs = mutate_series(series[1], mutations)
    assert segment_or_refusal(client, blobs, mutations) == "segmented"
    seg = pydicom.dcmread(io.BytesIO(client.segment_files(blobs).seg_bytes))
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) > 0


@pytest.mark.parametrize("raw", [None, b""], ids=["removed", "emptied"])
def test_anonymised_study_is_segmented(
    client: SegmentationClient, series: Series, raw: bytes | None
) -> None:
    """Issue 8 (1): anonymisers remove or empty Type 2 patient/study attributes."""
    mutations = [Mutation(k, raw) for k in ANONYMISED]
    blobs = mutate_series(series[3], mutations)
    assert segment_or_refusal(client, blobs, mutations) == "segmented"
    seg = pydicom.dcmread(io.BytesIO(client.segment_files(blobs).seg_bytes))
    assert all(k in seg and not seg[k].value for k in ANONYMISED)
    assert np.all([seg.StudyInstanceUID == pydicom.dcmread(io.BytesIO(blobs[0])).StudyInstanceUID])
