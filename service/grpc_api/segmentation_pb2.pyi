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
    __slots__ = ("fraction", "stage", "stage_fraction")
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FRACTION_FIELD_NUMBER: _ClassVar[int]
    fraction: float
    stage: Stage
    stage_fraction: float
    def __init__(self, fraction: _Optional[float] = ..., stage: _Optional[_Union[Stage, str]] = ..., stage_fraction: _Optional[float] = ...) -> None: ...

class SegChunk(_message.Message):
    __slots__ = ("data", "offset")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ...) -> None: ...

class StudySummary(_message.Message):
    __slots__ = ("study_uid_hash", "class_volumes_ml", "num_instances", "model_name", "model_version", "provider", "stage_seconds", "seg_size_bytes", "seg_sha256")
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
    study_uid_hash: str
    class_volumes_ml: _containers.ScalarMap[str, float]
    num_instances: int
    model_name: str
    model_version: str
    provider: str
    stage_seconds: _containers.ScalarMap[str, float]
    seg_size_bytes: int
    seg_sha256: str
    def __init__(self, study_uid_hash: _Optional[str] = ..., class_volumes_ml: _Optional[_Mapping[str, float]] = ..., num_instances: _Optional[int] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., provider: _Optional[str] = ..., stage_seconds: _Optional[_Mapping[str, float]] = ..., seg_size_bytes: _Optional[int] = ..., seg_sha256: _Optional[str] = ...) -> None: ...

class SegmentStudyResponse(_message.Message):
    __slots__ = ("progress", "seg_chunk", "summary")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    SEG_CHUNK_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    seg_chunk: SegChunk
    summary: StudySummary
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., seg_chunk: _Optional[_Union[SegChunk, _Mapping]] = ..., summary: _Optional[_Union[StudySummary, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("name", "version", "provider", "classes", "slice_context", "hu_window", "validation_voldice", "input_size", "orientation")
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
    name: str
    version: str
    provider: str
    classes: _containers.RepeatedCompositeFieldContainer[ClassInfo]
    slice_context: int
    hu_window: HuWindow
    validation_voldice: _containers.ScalarMap[str, float]
    input_size: InputSize
    orientation: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., provider: _Optional[str] = ..., classes: _Optional[_Iterable[_Union[ClassInfo, _Mapping]]] = ..., slice_context: _Optional[int] = ..., hu_window: _Optional[_Union[HuWindow, _Mapping]] = ..., validation_voldice: _Optional[_Mapping[str, float]] = ..., input_size: _Optional[_Union[InputSize, _Mapping]] = ..., orientation: _Optional[str] = ...) -> None: ...
