import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SegmentationType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEGMENTATION_TYPE_UNSPECIFIED: _ClassVar[SegmentationType]
    SEGMENTATION_TYPE_BINARY: _ClassVar[SegmentationType]
    SEGMENTATION_TYPE_LABELMAP: _ClassVar[SegmentationType]

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    STAGE_RECEIVING: _ClassVar[Stage]
    STAGE_PARSING: _ClassVar[Stage]
    STAGE_SELECTING: _ClassVar[Stage]
    STAGE_VOLUME: _ClassVar[Stage]
    STAGE_INFERENCE: _ClassVar[Stage]
    STAGE_WRITING: _ClassVar[Stage]
    STAGE_DONE: _ClassVar[Stage]
SEGMENTATION_TYPE_UNSPECIFIED: SegmentationType
SEGMENTATION_TYPE_BINARY: SegmentationType
SEGMENTATION_TYPE_LABELMAP: SegmentationType
STAGE_UNSPECIFIED: Stage
STAGE_RECEIVING: Stage
STAGE_PARSING: Stage
STAGE_SELECTING: Stage
STAGE_VOLUME: Stage
STAGE_INFERENCE: Stage
STAGE_WRITING: Stage
STAGE_DONE: Stage

class StudyUploadHeader(_message.Message):
    __slots__ = ("client_name", "segmentation_type", "expected_instance_count")
    CLIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    SEGMENTATION_TYPE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_INSTANCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    client_name: str
    segmentation_type: SegmentationType
    expected_instance_count: int
    def __init__(self, client_name: _Optional[str] = ..., segmentation_type: _Optional[_Union[SegmentationType, str]] = ..., expected_instance_count: _Optional[int] = ...) -> None: ...

class InstanceChunk(_message.Message):
    __slots__ = ("instance_index", "data", "last_chunk")
    INSTANCE_INDEX_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_CHUNK_FIELD_NUMBER: _ClassVar[int]
    instance_index: int
    data: bytes
    last_chunk: bool
    def __init__(self, instance_index: _Optional[int] = ..., data: _Optional[bytes] = ..., last_chunk: _Optional[bool] = ...) -> None: ...

class SegmentStudyRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: StudyUploadHeader
    chunk: InstanceChunk
    def __init__(self, header: _Optional[_Union[StudyUploadHeader, _Mapping]] = ..., chunk: _Optional[_Union[InstanceChunk, _Mapping]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("fraction", "stage", "stage_fraction", "queue_position")
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FRACTION_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    fraction: float
    stage: Stage
    stage_fraction: float
    queue_position: int
    def __init__(self, fraction: _Optional[float] = ..., stage: _Optional[_Union[Stage, str]] = ..., stage_fraction: _Optional[float] = ..., queue_position: _Optional[int] = ...) -> None: ...

class SegChunk(_message.Message):
    __slots__ = ("data", "offset")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ...) -> None: ...

class StudySummary(_message.Message):
    __slots__ = ("study_uid_hash", "class_volumes_ml", "num_instances", "model_name", "model_version", "provider", "stage_seconds", "seg_size_bytes", "seg_sha256", "clinical", "consistency", "flagged", "sr_size_bytes", "sr_sha256", "applicability", "quality", "review_required", "density", "under_reading")
    class ClassVolumesMlEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class StageSecondsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STUDY_UID_HASH_FIELD_NUMBER: _ClassVar[int]
    CLASS_VOLUMES_ML_FIELD_NUMBER: _ClassVar[int]
    NUM_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    STAGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SEG_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SEG_SHA256_FIELD_NUMBER: _ClassVar[int]
    CLINICAL_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_FIELD_NUMBER: _ClassVar[int]
    SR_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SR_SHA256_FIELD_NUMBER: _ClassVar[int]
    APPLICABILITY_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    REVIEW_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    DENSITY_FIELD_NUMBER: _ClassVar[int]
    UNDER_READING_FIELD_NUMBER: _ClassVar[int]
    study_uid_hash: str
    class_volumes_ml: _containers.ScalarMap[str, float]
    num_instances: int
    model_name: str
    model_version: str
    provider: str
    stage_seconds: _containers.ScalarMap[str, float]
    seg_size_bytes: int
    seg_sha256: str
    clinical: ClinicalSummary
    consistency: ConsistencyQuality
    flagged: bool
    sr_size_bytes: int
    sr_sha256: str
    applicability: Applicability
    quality: QualityScore
    review_required: bool
    density: DensityQuantification
    under_reading: UnderReading
    def __init__(self, study_uid_hash: _Optional[str] = ..., class_volumes_ml: _Optional[_Mapping[str, float]] = ..., num_instances: _Optional[int] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., provider: _Optional[str] = ..., stage_seconds: _Optional[_Mapping[str, float]] = ..., seg_size_bytes: _Optional[int] = ..., seg_sha256: _Optional[str] = ..., clinical: _Optional[_Union[ClinicalSummary, _Mapping]] = ..., consistency: _Optional[_Union[ConsistencyQuality, _Mapping]] = ..., flagged: _Optional[bool] = ..., sr_size_bytes: _Optional[int] = ..., sr_sha256: _Optional[str] = ..., applicability: _Optional[_Union[Applicability, _Mapping]] = ..., quality: _Optional[_Union[QualityScore, _Mapping]] = ..., review_required: _Optional[bool] = ..., density: _Optional[_Union[DensityQuantification, _Mapping]] = ..., under_reading: _Optional[_Union[UnderReading, _Mapping]] = ...) -> None: ...

class DensityBand(_message.Message):
    __slots__ = ("band", "volume_ml", "fraction")
    BAND_FIELD_NUMBER: _ClassVar[int]
    VOLUME_ML_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    band: str
    volume_ml: float
    fraction: float
    def __init__(self, band: _Optional[str] = ..., volume_ml: _Optional[float] = ..., fraction: _Optional[float] = ...) -> None: ...

class DensityRegion(_message.Message):
    __slots__ = ("region", "envelope_ml", "bands")
    REGION_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_ML_FIELD_NUMBER: _ClassVar[int]
    BANDS_FIELD_NUMBER: _ClassVar[int]
    region: str
    envelope_ml: float
    bands: _containers.RepeatedCompositeFieldContainer[DensityBand]
    def __init__(self, region: _Optional[str] = ..., envelope_ml: _Optional[float] = ..., bands: _Optional[_Iterable[_Union[DensityBand, _Mapping]]] = ...) -> None: ...

class DensityQuantification(_message.Message):
    __slots__ = ("envelope_ml", "abnormal_ml", "abnormal_fraction", "well_aerated_fraction", "regions")
    ENVELOPE_ML_FIELD_NUMBER: _ClassVar[int]
    ABNORMAL_ML_FIELD_NUMBER: _ClassVar[int]
    ABNORMAL_FRACTION_FIELD_NUMBER: _ClassVar[int]
    WELL_AERATED_FRACTION_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    envelope_ml: float
    abnormal_ml: float
    abnormal_fraction: float
    well_aerated_fraction: float
    regions: _containers.RepeatedCompositeFieldContainer[DensityRegion]
    def __init__(self, envelope_ml: _Optional[float] = ..., abnormal_ml: _Optional[float] = ..., abnormal_fraction: _Optional[float] = ..., well_aerated_fraction: _Optional[float] = ..., regions: _Optional[_Iterable[_Union[DensityRegion, _Mapping]]] = ...) -> None: ...

class UnderReading(_message.Message):
    __slots__ = ("flagged", "reason", "density_fraction", "lesion_fraction", "margin")
    FLAGGED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DENSITY_FRACTION_FIELD_NUMBER: _ClassVar[int]
    LESION_FRACTION_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    flagged: bool
    reason: str
    density_fraction: float
    lesion_fraction: float
    margin: float
    def __init__(self, flagged: _Optional[bool] = ..., reason: _Optional[str] = ..., density_fraction: _Optional[float] = ..., lesion_fraction: _Optional[float] = ..., margin: _Optional[float] = ...) -> None: ...

class QualityScore(_message.Message):
    __slots__ = ("score", "flagged", "threshold", "variant", "signals")
    class SignalsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SCORE_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    SIGNALS_FIELD_NUMBER: _ClassVar[int]
    score: float
    flagged: bool
    threshold: float
    variant: str
    signals: _containers.ScalarMap[str, float]
    def __init__(self, score: _Optional[float] = ..., flagged: _Optional[bool] = ..., threshold: _Optional[float] = ..., variant: _Optional[str] = ..., signals: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Applicability(_message.Message):
    __slots__ = ("applicable", "reasons", "details", "measurements", "contrast_agent")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class MeasurementsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    APPLICABLE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    MEASUREMENTS_FIELD_NUMBER: _ClassVar[int]
    CONTRAST_AGENT_FIELD_NUMBER: _ClassVar[int]
    applicable: bool
    reasons: _containers.RepeatedScalarFieldContainer[str]
    details: _containers.ScalarMap[str, str]
    measurements: _containers.ScalarMap[str, float]
    contrast_agent: str
    def __init__(self, applicable: _Optional[bool] = ..., reasons: _Optional[_Iterable[str]] = ..., details: _Optional[_Mapping[str, str]] = ..., measurements: _Optional[_Mapping[str, float]] = ..., contrast_agent: _Optional[str] = ...) -> None: ...

class ClinicalSummary(_message.Message):
    __slots__ = ("class_volumes_ml", "lung_volume_ml", "lesion_volume_ml", "involvement_percent", "severity_grade")
    class ClassVolumesMlEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CLASS_VOLUMES_ML_FIELD_NUMBER: _ClassVar[int]
    LUNG_VOLUME_ML_FIELD_NUMBER: _ClassVar[int]
    LESION_VOLUME_ML_FIELD_NUMBER: _ClassVar[int]
    INVOLVEMENT_PERCENT_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_GRADE_FIELD_NUMBER: _ClassVar[int]
    class_volumes_ml: _containers.ScalarMap[str, float]
    lung_volume_ml: float
    lesion_volume_ml: float
    involvement_percent: float
    severity_grade: str
    def __init__(self, class_volumes_ml: _Optional[_Mapping[str, float]] = ..., lung_volume_ml: _Optional[float] = ..., lesion_volume_ml: _Optional[float] = ..., involvement_percent: _Optional[float] = ..., severity_grade: _Optional[str] = ...) -> None: ...

class ConsistencyQuality(_message.Message):
    __slots__ = ("transform", "voldice", "threshold", "flagged")
    class VoldiceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    VOLDICE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_FIELD_NUMBER: _ClassVar[int]
    transform: str
    voldice: _containers.ScalarMap[str, float]
    threshold: float
    flagged: bool
    def __init__(self, transform: _Optional[str] = ..., voldice: _Optional[_Mapping[str, float]] = ..., threshold: _Optional[float] = ..., flagged: _Optional[bool] = ...) -> None: ...

class StructuredReport(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class SegmentStudyResponse(_message.Message):
    __slots__ = ("progress", "seg_chunk", "summary", "report")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    SEG_CHUNK_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    seg_chunk: SegChunk
    summary: StudySummary
    report: StructuredReport
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., seg_chunk: _Optional[_Union[SegChunk, _Mapping]] = ..., summary: _Optional[_Union[StudySummary, _Mapping]] = ..., report: _Optional[_Union[StructuredReport, _Mapping]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CodedConcept(_message.Message):
    __slots__ = ("scheme", "value", "meaning")
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    MEANING_FIELD_NUMBER: _ClassVar[int]
    scheme: str
    value: str
    meaning: str
    def __init__(self, scheme: _Optional[str] = ..., value: _Optional[str] = ..., meaning: _Optional[str] = ...) -> None: ...

class Color(_message.Message):
    __slots__ = ("r", "g", "b")
    R_FIELD_NUMBER: _ClassVar[int]
    G_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    r: int
    g: int
    b: int
    def __init__(self, r: _Optional[int] = ..., g: _Optional[int] = ..., b: _Optional[int] = ...) -> None: ...

class ClassInfo(_message.Message):
    __slots__ = ("index", "name", "category", "property_type", "color")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    PROPERTY_TYPE_FIELD_NUMBER: _ClassVar[int]
    COLOR_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    category: CodedConcept
    property_type: CodedConcept
    color: Color
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., category: _Optional[_Union[CodedConcept, _Mapping]] = ..., property_type: _Optional[_Union[CodedConcept, _Mapping]] = ..., color: _Optional[_Union[Color, _Mapping]] = ...) -> None: ...

class HuWindow(_message.Message):
    __slots__ = ("min", "max")
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    min: float
    max: float
    def __init__(self, min: _Optional[float] = ..., max: _Optional[float] = ...) -> None: ...

class InputSize(_message.Message):
    __slots__ = ("rows", "columns")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    rows: int
    columns: int
    def __init__(self, rows: _Optional[int] = ..., columns: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "provider", "classes", "slice_context", "hu_window", "validation_voldice", "input_size", "orientation", "serving_version", "available_versions", "last_reload_error")
    class ValidationVoldiceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    SLICE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    HU_WINDOW_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_VOLDICE_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    ORIENTATION_FIELD_NUMBER: _ClassVar[int]
    SERVING_VERSION_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    LAST_RELOAD_ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    provider: str
    classes: _containers.RepeatedCompositeFieldContainer[ClassInfo]
    slice_context: int
    hu_window: HuWindow
    validation_voldice: _containers.ScalarMap[str, float]
    input_size: InputSize
    orientation: str
    serving_version: str
    available_versions: _containers.RepeatedScalarFieldContainer[str]
    last_reload_error: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., provider: _Optional[str] = ..., classes: _Optional[_Iterable[_Union[ClassInfo, _Mapping]]] = ..., slice_context: _Optional[int] = ..., hu_window: _Optional[_Union[HuWindow, _Mapping]] = ..., validation_voldice: _Optional[_Mapping[str, float]] = ..., input_size: _Optional[_Union[InputSize, _Mapping]] = ..., orientation: _Optional[str] = ..., serving_version: _Optional[str] = ..., available_versions: _Optional[_Iterable[str]] = ..., last_reload_error: _Optional[str] = ...) -> None: ...

class ReferenceHeader(_message.Message):
    __slots__ = ("study_hash", "client_name")
    STUDY_HASH_FIELD_NUMBER: _ClassVar[int]
    CLIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    study_hash: str
    client_name: str
    def __init__(self, study_hash: _Optional[str] = ..., client_name: _Optional[str] = ...) -> None: ...

class SubmitReferenceRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: ReferenceHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[ReferenceHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class ReferenceQuality(_message.Message):
    __slots__ = ("study_hash", "voldice", "continuous_dice", "reference_type", "unmatched_segments", "model_version", "submitted")
    class VoldiceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ContinuousDiceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STUDY_HASH_FIELD_NUMBER: _ClassVar[int]
    VOLDICE_FIELD_NUMBER: _ClassVar[int]
    CONTINUOUS_DICE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    UNMATCHED_SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_FIELD_NUMBER: _ClassVar[int]
    study_hash: str
    voldice: _containers.ScalarMap[str, float]
    continuous_dice: _containers.ScalarMap[str, float]
    reference_type: str
    unmatched_segments: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    submitted: _timestamp_pb2.Timestamp
    def __init__(self, study_hash: _Optional[str] = ..., voldice: _Optional[_Mapping[str, float]] = ..., continuous_dice: _Optional[_Mapping[str, float]] = ..., reference_type: _Optional[str] = ..., unmatched_segments: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ..., submitted: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetStudyQualityRequest(_message.Message):
    __slots__ = ("study_hash",)
    STUDY_HASH_FIELD_NUMBER: _ClassVar[int]
    study_hash: str
    def __init__(self, study_hash: _Optional[str] = ...) -> None: ...

class StudyQualityRecord(_message.Message):
    __slots__ = ("study_hash", "created", "model_name", "model_version", "provider", "num_instances", "clinical", "consistency", "flagged", "reference", "stage_seconds", "applicability", "quality", "density", "under_reading")
    class StageSecondsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STUDY_HASH_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    NUM_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    CLINICAL_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    STAGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    APPLICABILITY_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    DENSITY_FIELD_NUMBER: _ClassVar[int]
    UNDER_READING_FIELD_NUMBER: _ClassVar[int]
    study_hash: str
    created: _timestamp_pb2.Timestamp
    model_name: str
    model_version: str
    provider: str
    num_instances: int
    clinical: ClinicalSummary
    consistency: ConsistencyQuality
    flagged: bool
    reference: ReferenceQuality
    stage_seconds: _containers.ScalarMap[str, float]
    applicability: Applicability
    quality: QualityScore
    density: DensityQuantification
    under_reading: UnderReading
    def __init__(self, study_hash: _Optional[str] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., provider: _Optional[str] = ..., num_instances: _Optional[int] = ..., clinical: _Optional[_Union[ClinicalSummary, _Mapping]] = ..., consistency: _Optional[_Union[ConsistencyQuality, _Mapping]] = ..., flagged: _Optional[bool] = ..., reference: _Optional[_Union[ReferenceQuality, _Mapping]] = ..., stage_seconds: _Optional[_Mapping[str, float]] = ..., applicability: _Optional[_Union[Applicability, _Mapping]] = ..., quality: _Optional[_Union[QualityScore, _Mapping]] = ..., density: _Optional[_Union[DensityQuantification, _Mapping]] = ..., under_reading: _Optional[_Union[UnderReading, _Mapping]] = ...) -> None: ...

class ListStudyQualityRequest(_message.Message):
    __slots__ = ("since", "until", "model_version", "flagged_only", "page_size", "page_token")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_ONLY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    model_version: str
    flagged_only: bool
    page_size: int
    page_token: str
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., model_version: _Optional[str] = ..., flagged_only: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListStudyQualityResponse(_message.Message):
    __slots__ = ("records", "next_page_token")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[StudyQualityRecord]
    next_page_token: str
    def __init__(self, records: _Optional[_Iterable[_Union[StudyQualityRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
