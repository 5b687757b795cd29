import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainingJobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAINING_JOB_STATE_UNSPECIFIED: _ClassVar[TrainingJobState]
    QUEUED: _ClassVar[TrainingJobState]
    RUNNING: _ClassVar[TrainingJobState]
    SUCCEEDED: _ClassVar[TrainingJobState]
    FAILED: _ClassVar[TrainingJobState]
    CANCELLED: _ClassVar[TrainingJobState]
TRAINING_JOB_STATE_UNSPECIFIED: TrainingJobState
QUEUED: TrainingJobState
RUNNING: TrainingJobState
SUCCEEDED: TrainingJobState
FAILED: TrainingJobState
CANCELLED: TrainingJobState

class TrainingJobSpec(_message.Message):
    __slots__ = ("dataset", "recipe", "config_yaml", "stages", "max_steps", "model_name", "model_version")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    RECIPE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_YAML_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    recipe: str
    config_yaml: str
    stages: _containers.RepeatedScalarFieldContainer[str]
    max_steps: int
    model_name: str
    model_version: str
    def __init__(self, dataset: _Optional[str] = ..., recipe: _Optional[str] = ..., config_yaml: _Optional[str] = ..., stages: _Optional[_Iterable[str]] = ..., max_steps: _Optional[int] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class SubmitTrainingJobRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: TrainingJobSpec
    def __init__(self, spec: _Optional[_Union[TrainingJobSpec, _Mapping]] = ...) -> None: ...

class TrainingProgress(_message.Message):
    __slots__ = ("job_id", "state", "stage", "step", "total_steps", "epoch", "val_voldice", "message", "updated_at")
    class ValVoldiceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    VAL_VOLDICE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: TrainingJobState
    stage: str
    step: int
    total_steps: int
    epoch: int
    val_voldice: _containers.ScalarMap[str, float]
    message: str
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[TrainingJobState, str]] = ..., stage: _Optional[str] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., epoch: _Optional[int] = ..., val_voldice: _Optional[_Mapping[str, float]] = ..., message: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PromotionRecord(_message.Message):
    __slots__ = ("promoted", "candidate_voldice", "serving_voldice", "serving_version", "promoted_version", "message", "decided_at")
    PROMOTED_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_VOLDICE_FIELD_NUMBER: _ClassVar[int]
    SERVING_VOLDICE_FIELD_NUMBER: _ClassVar[int]
    SERVING_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    promoted: bool
    candidate_voldice: float
    serving_voldice: float
    serving_version: str
    promoted_version: str
    message: str
    decided_at: _timestamp_pb2.Timestamp
    def __init__(self, promoted: _Optional[bool] = ..., candidate_voldice: _Optional[float] = ..., serving_voldice: _Optional[float] = ..., serving_version: _Optional[str] = ..., promoted_version: _Optional[str] = ..., message: _Optional[str] = ..., decided_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TrainingJob(_message.Message):
    __slots__ = ("job_id", "spec", "state", "progress", "created_at", "finished_at", "model_name", "model_version", "registry_path", "val_voldice", "attempts", "promotion")
    class ValVoldiceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_PATH_FIELD_NUMBER: _ClassVar[int]
    VAL_VOLDICE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PROMOTION_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    spec: TrainingJobSpec
    state: TrainingJobState
    progress: TrainingProgress
    created_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    model_name: str
    model_version: str
    registry_path: str
    val_voldice: _containers.ScalarMap[str, float]
    attempts: int
    promotion: PromotionRecord
    def __init__(self, job_id: _Optional[str] = ..., spec: _Optional[_Union[TrainingJobSpec, _Mapping]] = ..., state: _Optional[_Union[TrainingJobState, str]] = ..., progress: _Optional[_Union[TrainingProgress, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., registry_path: _Optional[str] = ..., val_voldice: _Optional[_Mapping[str, float]] = ..., attempts: _Optional[int] = ..., promotion: _Optional[_Union[PromotionRecord, _Mapping]] = ...) -> None: ...

class GetTrainingJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListTrainingJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTrainingJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[TrainingJob]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[TrainingJob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelTrainingJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchTrainingJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class PromoteModelRequest(_message.Message):
    __slots__ = ("job_id", "model_name", "model_version")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    model_name: str
    model_version: str
    def __init__(self, job_id: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class PromotionResult(_message.Message):
    __slots__ = ("job_id", "model_name", "model_version", "record")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    model_name: str
    model_version: str
    record: PromotionRecord
    def __init__(self, job_id: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., record: _Optional[_Union[PromotionRecord, _Mapping]] = ...) -> None: ...
