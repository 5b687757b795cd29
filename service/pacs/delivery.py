"""Sending a SEG to one destination: C-STORE SCU (pynetdicom) or DICOMweb STOW-RS.

One attempt per call; the worker owns retries and backoff, so these functions only say
whether the object is stored and, if not, why (:class:`DeliveryError`, one sentence).
"""

from __future__ import annotations

import logging

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from service.pacs import status
from service.pacs.settings import DicomDestination

logger = logging.getLogger(__name__)


class DeliveryError(Exception):
    """The destination did not store the object this time (it may on a later attempt)."""


def send_c_store(
    datasets: list[Dataset], destination: DicomDestination, calling_aet: str, timeout_s: float
) -> None:
    """C-STORE ``datasets`` (the SEG, then the SR) to ``destination`` in one association;
    raises :class:`DeliveryError` unless every one is stored (Success, or one of the storage
    warnings, which also mean stored)."""
    ae = AE(ae_title=calling_aet)
    ae.connection_timeout = ae.network_timeout = timeout_s
    ae.acse_timeout = ae.dimse_timeout = timeout_s
    for sop_class in dict.fromkeys(str(ds.SOPClassUID) for ds in datasets):
        syntaxes = [
            *{
                str(ds.file_meta.TransferSyntaxUID)
                for ds in datasets
                if str(ds.SOPClassUID) == sop_class
            },
            ExplicitVRLittleEndian,
            ImplicitVRLittleEndian,
        ]
        ae.add_requested_context(sop_class, list(dict.fromkeys(syntaxes)))
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        why = "rejected the association" if assoc.is_rejected else "could not be reached"
        raise DeliveryError(f"{destination.name} {why}")
    try:
        for dataset in datasets:
            answer = assoc.send_c_store(dataset)
            code = answer.get("Status") if answer else None
            if code is None:
                raise DeliveryError(
                    f"{destination.name} sent no C-STORE response (connection lost)"
                )
            if int(code) not in status.STORED_STATUSES:
                raise DeliveryError(
                    f"{destination.name} answered C-STORE status 0x{int(code):04X} "
                    f"for the {dataset.Modality} object"
                )
    finally:
        if assoc.is_established:
            assoc.release()


def send_stow(datasets: list[Dataset], url: str, timeout_s: float) -> None:
    """STOW-RS ``datasets`` to the DICOMweb service at ``url`` in one request; raises
    :class:`DeliveryError` on a connection error, an HTTP error or a response that lists an
    instance as failed."""
    client = DICOMwebClient(url=url, timeout=timeout_s)
    try:
        response = client.store_instances(datasets=datasets)
    except requests.RequestException as exc:
        raise DeliveryError(f"STOW-RS to {url} failed: {type(exc).__name__}: {exc}") from None
    failed = response.get("FailedSOPSequence") if response is not None else None
    if failed:
        reason = failed[0].get("FailureReason")
        raise DeliveryError(f"STOW-RS to {url} refused an instance (FailureReason {reason})")
