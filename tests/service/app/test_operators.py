"""The MONAI Deploy graph on real DICOM with a tiny, exact stand-in network (no training needed).

The stand-in labels every voxel below -500 HU as lung, so the expected label volume is known
voxel for voxel; everything else is real: Holoscan, the operators and their ports, pydicom,
highdicom, and the SEG read back from its bytes.
"""

from __future__ import annotations

from concurrent.futures import CancelledError
from pathlib import Path

import numpy as np
import pydicom
import pytest
from holoscan.conditions import CountCondition
from monai.deploy.core import Application, Operator
from pydicom.uid import MRImageStorage, generate_uid

from service.app.application import LungSegmentationApp
from service.app.operators import VOLUME, Port, ProgressHooks
from service.app.study_result import StudyResult
from service.app.study_runner import StageClock, StudyRunner
from service.core.classes import DEFAULT_CLASSES
from service.core.errors import InvalidStudyError
from service.core.manifest import ModelManifest
from service.core.progress import ProgressStage
from service.dicom.seg_reader import read_seg_labels
from service.dicom.study_input import StudySource
from service.predictor import InferenceBackend, InputGeometry, Predictor
from training.phantom import write_ct_series

SHAPE = (6, 24, 28)
SPACING = (2.5, 0.75, 0.8)
LUNG_HU = -850.0
PIPELINE_STAGES = [
    ProgressStage.PARSING,
    ProgressStage.SELECTING,
    ProgressStage.VOLUME,
    ProgressStage.INFERENCE,
    ProgressStage.WRITING,
]


class ThresholdBackend(InferenceBackend):
    """Class 1 (lung) where the centre slice is below -500 HU, background elsewhere."""

    provider = "test:threshold"

    def run(self, batch: np.ndarray) -> np.ndarray:
        centre = batch[:, batch.shape[1] // 2]
        logits = np.full((len(centre), len(DEFAULT_CLASSES), *centre.shape[1:]), -10.0, np.float32)
        logits[:, 0] = 0.0
        logits[:, 1] = np.where(centre < -500.0, 10.0, -10.0)
        return logits


@pytest.fixture(scope="module")
def manifest() -> ModelManifest:
    return ModelManifest(
        name="pulmoseg-threshold",
        version="0.0.1",
        classes=list(DEFAULT_CLASSES),
        slice_context=3,
        hu_window=(-1000.0, 200.0),
        input_size=SHAPE[1:],
    )


@pytest.fixture(scope="module")
def runner(manifest: ModelManifest) -> StudyRunner:
    predictor = Predictor(
        ThresholdBackend(), InputGeometry.from_manifest(manifest), manifest=manifest
    )
    return StudyRunner(predictor)


def expected_lung() -> np.ndarray:
    lung = np.zeros(SHAPE, dtype=bool)
    lung[1:5, 5:19, 4:12] = True
    lung[1:5, 5:19, 16:24] = True
    return lung


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    hu = np.where(expected_lung(), LUNG_HU, 40.0).astype(np.float32)
    folder = tmp_path_factory.mktemp("study")
    write_ct_series(
        hu,
        SPACING,
        folder,
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        patient_name="Phantom^Graph",
        patient_id="PG0001",
        seed=0,
    )
    return folder


def blobs(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.iterdir())]


def rewritten(folder: Path, out: Path, **attributes: object) -> Path:
    """A copy of the study with ``attributes`` set (None deletes) on every instance."""
    out.mkdir()
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        for keyword, value in attributes.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        ds.save_as(out / path.name)
    return out


# -- Holoscan's behaviour the runner relies on ----------------------------------------------------


class _Emit(Operator):
    def setup(self, spec) -> None:
        spec.output("x")

    def compute(self, op_input, op_output, context) -> None:
        op_output.emit(1, "x")


class _Raise(Operator):
    def __init__(self, fragment, *args, error: BaseException, **kwargs) -> None:
        self.error = error
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec) -> None:
        spec.input("x")

    def compute(self, op_input, op_output, context) -> None:
        op_input.receive("x")
        raise self.error


class _FailingApp(Application):
    def __init__(self, error: BaseException) -> None:
        self.error = error
        super().__init__(argv=["test"])

    def compose(self) -> None:
        source = _Emit(self, CountCondition(self, 1), name="emit")
        self.add_flow(source, _Raise(self, error=self.error, name="raise"), {("x", "x")})


@pytest.mark.parametrize(
    "error",
    [InvalidStudyError("No CT series in the study: found MR."), CancelledError("hung up")],
    ids=["domain", "cancel"],
)
def test_holoscan_reraises_the_operator_exception_itself(error: BaseException) -> None:
    """If a Holoscan upgrade starts wrapping compute() errors, the runner must unwrap them."""
    with pytest.raises(type(error)) as info:
        _FailingApp(error).run()
    assert info.value is error
    assert str(info.value) == str(error)


# -- the study graph ------------------------------------------------------------------------------


def test_graph_segments_and_reports_every_stage_in_order(
    runner: StudyRunner, study_dir: Path
) -> None:
    events: list[tuple[ProgressStage, float]] = []
    result = runner.segment(blobs(study_dir), on_progress=lambda s, f: events.append((s, f)))

    np.testing.assert_array_equal(result.labels, expected_lung().astype(np.uint8))
    uids = [ds.SOPInstanceUID for ds in result.volume.datasets]
    np.testing.assert_array_equal(read_seg_labels(result.seg_bytes, uids), result.labels)
    voxel_ml = float(np.prod(SPACING)) / 1000.0
    assert result.class_volumes_ml == pytest.approx(
        {"lung": expected_lung().sum() * voxel_ml, "ggo": 0.0, "consolidation": 0.0}
    )
    assert result.num_instances == SHAPE[0]

    stages = [s for s, _ in events]
    assert list(dict.fromkeys(stages)) == PIPELINE_STAGES  # each stage once, in enum order
    for stage in PIPELINE_STAGES:
        fractions = [f for s, f in events if s is stage]
        assert fractions[0] == 0.0 and fractions[-1] == 1.0, (stage, fractions)
        assert fractions == sorted(fractions), (stage, fractions)
    assert list(result.stage_seconds) == [s.value for s in PIPELINE_STAGES]
    assert all(v >= 0.0 for v in result.stage_seconds.values())
    assert result.seconds >= sum(result.stage_seconds.values())


def test_folder_source_writes_seg_file(
    runner: StudyRunner, study_dir: Path, tmp_path: Path
) -> None:
    result = runner.segment_directory(study_dir, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["seg.dcm"]
    assert (tmp_path / "out" / "seg.dcm").read_bytes() == result.seg_bytes


def test_application_hands_the_result_to_its_callback(runner: StudyRunner, study_dir: Path) -> None:
    received: list[StudyResult] = []
    LungSegmentationApp(runner.predictor, StudySource.from_folder(study_dir), received.append).run()
    [result] = received
    assert result.seg_bytes[128:132] == b"DICM"
    assert result.study_uid_hash == runner.segment(blobs(study_dir)).study_uid_hash


@pytest.mark.parametrize(
    ("make_study", "message"),
    [
        (
            lambda d, tmp: [b"definitely not a DICOM file"],
            r"The upload holds no DICOM instances; skipped 1 item: instance #0 \(not DICOM\)",
        ),
        (lambda d, tmp: [], "No DICOM instances were sent"),
        (
            lambda d, tmp: blobs(
                rewritten(d, tmp / "mr", Modality="MR", SOPClassUID=MRImageStorage)
            ),
            r"No CT series in the study: found MR",
        ),
        (
            lambda d, tmp: blobs(rewritten(d, tmp / "sex", PatientSex="X")),
            r"PatientSex \(0010,0040\) holds a value outside 'M', 'F', 'O'",
        ),
        (
            # A missing PatientID is written empty now (Type 2); a two-valued one is refused.
            lambda d, tmp: blobs(rewritten(d, tmp / "twoid", PatientID="A\\B")),
            r"PatientID \(0010,0020\) holds 2 values where DICOM allows one",
        ),
    ],
    ids=["not-dicom", "empty", "mr-series", "seg-patient-sex", "seg-two-patient-ids"],
)
def test_failures_reach_the_caller_as_domain_errors(
    runner: StudyRunner, study_dir: Path, tmp_path: Path, make_study, message: str
) -> None:
    """From the source, a middle operator and the SEG writer alike, and the runner stays usable."""
    with pytest.raises(InvalidStudyError, match=message):
        runner.segment(make_study(study_dir, tmp_path))
    assert runner.segment(blobs(study_dir)).num_instances == SHAPE[0]


def test_cancellation_stops_before_the_next_stage(runner: StudyRunner, study_dir: Path) -> None:
    seen: list[ProgressStage] = []

    def on_progress(stage: ProgressStage, fraction: float) -> None:
        seen.append(stage)

    with pytest.raises(CancelledError):
        runner.segment(
            blobs(study_dir),
            on_progress=on_progress,
            is_cancelled=lambda: ProgressStage.VOLUME in seen,
        )
    assert ProgressStage.VOLUME in seen
    assert ProgressStage.INFERENCE not in seen and ProgressStage.WRITING not in seen


def test_port_rejects_a_value_of_the_wrong_type() -> None:
    class Inbox:
        def receive(self, name: str) -> object:
            return [1, 2]

    with pytest.raises(TypeError, match="Port 'volume' must carry a CTVolume, got list"):
        VOLUME.receive(Inbox())
    assert Port("n", int).receive(type("I", (), {"receive": lambda self, n: 3})()) == 3


def test_stage_clock_times_stages_and_forwards_events() -> None:
    forwarded: list[tuple[ProgressStage, float]] = []
    clock = StageClock(lambda s, f: forwarded.append((s, f)))
    hooks = ProgressHooks(clock)
    for stage in (ProgressStage.VOLUME, ProgressStage.PARSING):
        with hooks.stage(stage) as report:
            report(0.5)
    assert forwarded == [
        (ProgressStage.VOLUME, 0.0),
        (ProgressStage.VOLUME, 0.5),
        (ProgressStage.VOLUME, 1.0),
        (ProgressStage.PARSING, 0.0),
        (ProgressStage.PARSING, 0.5),
        (ProgressStage.PARSING, 1.0),
    ]
    assert list(clock.stage_seconds()) == ["parsing", "volume"]  # enum order, not arrival


def test_runner_needs_a_predictor_with_a_manifest(manifest: ModelManifest) -> None:
    with pytest.raises(TypeError, match="'predictor' must be a Predictor, got str"):
        StudyRunner("model.onnx")  # type: ignore[arg-type]
    bare = Predictor(ThresholdBackend(), InputGeometry.from_manifest(manifest))
    with pytest.raises(ValueError, match="'predictor' must carry a model manifest"):
        StudyRunner(bare)
