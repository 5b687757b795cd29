"""Reassembly and validation of a SegmentStudy upload, independent of any server.

The message order is part of the API: one StudyUploadHeader, then InstanceChunks with indices
0, 1, 2, ... (each instance ends with ``last_chunk``). Breaking the order is the caller's error
(InvalidStudyError -> INVALID_ARGUMENT); exceeding the size limit is ResourceLimitError
(-> RESOURCE_EXHAUSTED). Everything stays in memory, so a rejected upload leaves nothing behind.

What an instance *holds* is not judged here: an empty or non-DICOM instance is passed on, and
the study-folder rule (:mod:`service.dicom.study_folder`) skips and lists it as it would a stray
file in a study folder, so an upload and a folder of the same files give the same study.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.core.errors import InvalidStudyError
from service.grpc_api import segmentation_pb2 as pb2
from service.serving.errors import ResourceLimitError


@dataclass
class ReceivedUpload:
    header: pb2.StudyUploadHeader
    instances: list[bytes]
    total_bytes: int


class UploadReceiver:
    """Checks the order of upload messages and reassembles the instances in memory."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.header: pb2.StudyUploadHeader | None = None
        self.instances: list[bytes] = []
        self.total_bytes = 0
        self._parts: list[bytes] = []

    def add(self, request: pb2.SegmentStudyRequest) -> bool:
        """Take one message; True when it completed an instance."""
        kind = request.WhichOneof("payload")
        if kind is None:
            raise InvalidStudyError("A SegmentStudyRequest carried neither a header nor a chunk.")
        if self.header is None:
            if kind != "header":
                raise InvalidStudyError(
                    "The first SegmentStudy message must be a StudyUploadHeader, got an "
                    f"InstanceChunk (instance_index={request.chunk.instance_index})."
                )
            self.header = request.header
            return False
        if kind == "header":
            raise InvalidStudyError(
                "SegmentStudy got a second StudyUploadHeader; send exactly one."
            )
        chunk = request.chunk
        expected = len(self.instances)
        if chunk.instance_index != expected:
            raise InvalidStudyError(
                f"InstanceChunk.instance_index must run 0, 1, 2, ... without gaps: expected "
                f"{expected}, got {chunk.instance_index}."
            )
        self.total_bytes += len(chunk.data)
        if self.total_bytes > self.max_bytes:
            raise ResourceLimitError(
                f"The upload exceeds the server's limit of {self.max_bytes} bytes "
                f"(max_upload_bytes) at instance {expected}."
            )
        self._parts.append(chunk.data)
        if not chunk.last_chunk:
            return False
        self.instances.append(b"".join(self._parts))
        self._parts = []
        return True

    def finish(self) -> ReceivedUpload:
        if self.header is None or (not self.instances and not self._parts):
            raise InvalidStudyError(
                "No DICOM instances were sent: the upload held no InstanceChunk."
            )
        if self._parts:
            raise InvalidStudyError(
                f"The upload ended inside instance {len(self.instances)}: its last chunk never "
                "came (last_chunk=true)."
            )
        want = (
            self.header.expected_instance_count
            if self.header.HasField("expected_instance_count")
            else None
        )
        if want is not None and want != len(self.instances):
            raise InvalidStudyError(
                f"The header announced expected_instance_count={want}, but "
                f"{len(self.instances)} instances arrived."
            )
        return ReceivedUpload(self.header, self.instances, self.total_bytes)
