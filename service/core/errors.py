"""Domain exceptions of the service.

Each exception says *what kind* of failure happened; the gRPC layer maps the kind to a status
code in one table (`service.serving.errors`), so servicer code never picks status codes itself.
"""

from __future__ import annotations


class PulmosegError(Exception):
    """Base class for every error the service raises on purpose."""


class InvalidStudyError(PulmosegError, ValueError):
    """The submitted study cannot be segmented: not DICOM, not CT, inconsistent geometry …

    Maps to INVALID_ARGUMENT: the caller must change the input, retrying will not help.
    """


class ModelError(PulmosegError):
    """The model file is missing, malformed or carries no valid pulmoseg manifest."""


class ProviderUnavailableError(ModelError):
    """A required execution provider (e.g. CUDA when a GPU is required) is not in use."""


class ServiceNotReadyError(PulmosegError):
    """The service has no model loaded yet (maps to UNAVAILABLE so clients may retry)."""


class ResourceLimitError(PulmosegError):
    """A request exceeds a configured limit (upload size, concurrent studies); maps to
    RESOURCE_EXHAUSTED."""


class AuthenticationError(PulmosegError):
    """The call carries no valid ``authorization: Bearer <token>`` metadata."""


class PermissionDeniedError(PulmosegError):
    """The caller is authenticated but its credential does not allow this call (e.g. a
    segmentation token asking to promote a model), or the argument names a forbidden path."""


class UnsupportedRequestError(PulmosegError):
    """The request asks for something this server does not implement (e.g. an output type)."""


class InvalidReferenceError(InvalidStudyError):
    """A submitted reference segmentation cannot be scored (not a SEG, no matching segment …).

    Maps to INVALID_ARGUMENT like any bad input.
    """


class ReferenceGeometryError(InvalidReferenceError):
    """The reference SEG is not on the study's voxel grid; nothing is resampled silently."""


class StudyNotFoundError(PulmosegError):
    """No quality record exists for the given study hash (maps to NOT_FOUND)."""


class InvalidArgumentError(PulmosegError, ValueError):
    """A request field is malformed (a study hash, a page token …); maps to INVALID_ARGUMENT."""


class StudyNotApplicableError(PulmosegError):
    """The study is a valid CT but outside what the model was made for (a head CT, a few
    slices, HU off), and the server's applicability policy is ``refuse``.

    Maps to FAILED_PRECONDITION: the input is well formed, the model is not for it.
    ``applicability`` is the check's result (``service.quality.applicability.Applicability``),
    so the server can count the refusal by reason.
    """

    def __init__(self, message: str, applicability: object = None) -> None:
        super().__init__(message)
        self.applicability = applicability
