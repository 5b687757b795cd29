"""The TrainingService calls of the client (``SegmentationClient.training``).

Answers are plain dicts with the proto's field names (``MessageToDict``), like the rest of the
client; failures are :class:`ClientError` sentences made by the client's one error mapper.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from service.client.errors import ClientError
from service.grpc_api import CONFIG_NAME_METADATA
from service.grpc_api import training_pb2 as tpb2
from service.grpc_api import training_pb2_grpc as tpb2_grpc


def _as_dict(message: Any) -> dict[str, Any]:
    return MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


class TrainingCalls:
    """Submit, get, list, cancel, watch and promote training jobs on one channel."""

    def __init__(
        self,
        channel: grpc.Channel,
        metadata: Sequence[tuple[str, str]],
        timeout_s: float,
        error: Callable[[grpc.RpcError, str], ClientError],
    ) -> None:
        self._stub = tpb2_grpc.TrainingServiceStub(channel)
        self._metadata = metadata
        self._timeout_s = timeout_s
        self._error = error

    def _unary(self, method: str, request: Any, action: str, timeout_s: float | None = None) -> Any:
        try:
            return getattr(self._stub, method)(
                request, timeout=timeout_s or self._timeout_s, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise self._error(exc, action) from None

    def submit(
        self,
        dataset: str,
        *,
        recipe: str = "",
        config_yaml: str = "",
        stages: Sequence[str] = (),
        max_steps: int = 0,
        model_name: str = "",
        model_version: str = "",
        config_name: str = "",
    ) -> dict[str, Any]:
        """Queue a job; returns the TrainingJob (with its ``job_id``). ``config_name`` (the
        file ``config_yaml`` came from) is what the server's messages call the config."""
        spec = tpb2.TrainingJobSpec(
            dataset=dataset,
            recipe=recipe,
            config_yaml=config_yaml,
            stages=list(stages),
            max_steps=max_steps,
            model_name=model_name,
            model_version=model_version,
        )
        request = tpb2.SubmitTrainingJobRequest(spec=spec)
        metadata = list(self._metadata)
        if config_name:  # metadata values are printable ASCII
            name = config_name.encode("ascii", "replace").decode()
            metadata.append((CONFIG_NAME_METADATA, "".join(c for c in name if c.isprintable())))
        try:
            answer = self._stub.SubmitTrainingJob(
                request, timeout=self._timeout_s, metadata=metadata
            )
        except grpc.RpcError as exc:
            raise self._error(exc, "refused the training job") from None
        return _as_dict(answer)

    def get(self, job_id: str) -> dict[str, Any]:
        request = tpb2.GetTrainingJobRequest(job_id=job_id)
        return _as_dict(self._unary("GetTrainingJob", request, "has no such training job"))

    def list(self, page_size: int = 0, page_token: str = "") -> tuple[list[dict[str, Any]], str]:
        """One page of jobs, newest first, and the next page's token ("" at the end)."""
        request = tpb2.ListTrainingJobsRequest(page_size=page_size, page_token=page_token)
        page = self._unary("ListTrainingJobs", request, "could not list training jobs")
        return [_as_dict(j) for j in page.jobs], page.next_page_token

    def cancel(self, job_id: str) -> dict[str, Any]:
        request = tpb2.CancelTrainingJobRequest(job_id=job_id)
        return _as_dict(self._unary("CancelTrainingJob", request, "could not cancel the job"))

    def watch(
        self, job_id: str, timeout_s: float | None = None
    ) -> Generator[dict[str, Any], None, None]:
        """Progress events until the job ends (``timeout_s``: None = no deadline)."""
        request = tpb2.WatchTrainingJobRequest(job_id=job_id)
        call = self._stub.WatchTrainingJob(request, timeout=timeout_s, metadata=self._metadata)
        try:
            for event in call:
                yield _as_dict(event)
        except grpc.RpcError as exc:
            raise self._error(exc, "could not follow the training job") from None
        finally:  # a caller that stops reading early frees the server's stream at once
            call.cancel()

    def promote(
        self,
        job_id: str = "",
        *,
        model_name: str = "",
        model_version: str = "",
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Promote a finished job's model (or a registry entry) into the serving folder."""
        request = tpb2.PromoteModelRequest(
            job_id=job_id, model_name=model_name, model_version=model_version
        )
        answer = self._unary("PromoteModel", request, "refused the promotion", timeout_s)
        return _as_dict(answer)
