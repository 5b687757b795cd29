"""The DICOM listener: a pynetdicom C-ECHO / C-STORE SCP that writes to the spool.

The C-STORE handler only checks what grouping needs (StudyInstanceUID, SOPInstanceUID) and
stores the bytes exactly as received (``event.encoded_dataset()``, any transfer syntax,
compressed ones included): decoding is the segmentation service's job. It answers Success only
after :meth:`Spool.store` has fsync'd the file, Out of Resources when the spool is full, so a
PACS keeps (and later re-sends) whatever we could not take. Peers not on the allow-lists are
refused at association time (A-ASSOCIATE-RJ, "calling AE title not recognised").
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from service.core.identifiers import uid_hash
from service.pacs import status
from service.pacs.metrics import PacsMetrics
from service.pacs.settings import PacsSettings
from service.pacs.spool import Spool, SpoolFullError

logger = logging.getLogger(__name__)

#: Uncompressed, deflated and the compressed syntaxes the service can decode (pydicom's RLE,
#: pylibjpeg's JPEG / JPEG-LS / JPEG 2000 plugins); pixel data is stored as received.
ACCEPTED_TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]


class DicomListener:
    """Owns the pynetdicom AE and its server thread; :meth:`start` binds, :meth:`stop` closes."""

    def __init__(self, settings: PacsSettings, spool: Spool, metrics: PacsMetrics) -> None:
        self.settings = settings
        self.spool = spool
        self.metrics = metrics
        self._allowed_aets = set(settings.allowed_calling_aets)
        self._allowed_hosts = set(settings.allowed_hosts)
        self._server: ThreadedAssociationServer | None = None

    def _build_ae(self) -> AE:
        ae = AE(ae_title=self.settings.ae_title)
        ae.require_called_aet = True
        ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = self.settings.network_timeout_s
        ae.maximum_associations = 16
        ae.add_supported_context(Verification)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax, ACCEPTED_TRANSFER_SYNTAXES)
        return ae

    def start(self) -> int:
        """Bind and serve in background threads; returns the bound port (useful with port 0)."""
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
        ]
        try:
            server = self._build_ae().start_server(
                (self.settings.host, self.settings.port), block=False, evt_handlers=handlers
            )
        except OSError as exc:
            raise OSError(
                f"Could not bind the DICOM port {self.settings.host}:{self.settings.port}: "
                f"{exc.strerror}"
            ) from exc
        if server is None:  # only block=True returns None
            raise RuntimeError("pynetdicom did not return a server for block=False")
        self._server = server
        port = int(server.server_address[1])
        logger.info("DICOM listener %s on %s:%d", self.settings.ae_title, self.settings.host, port)
        return port

    @property
    def running(self) -> bool:
        return self._server is not None

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    # -- handlers (pynetdicom turns an exception in a handler into a failure status) ------------
    def _on_requested(self, event: Event) -> None:
        """Refuse peers not on the allow-lists before any data is exchanged."""
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        calling = str(primitive.calling_ae_title).strip() if primitive is not None else ""
        host = str(assoc.requestor.address)
        bad_aet = bool(self._allowed_aets) and calling not in self._allowed_aets
        bad_host = bool(self._allowed_hosts) and host not in self._allowed_hosts
        if bad_aet or bad_host:
            # Count and log first: the peer may be gone as soon as the rejection is sent.
            self.metrics.associations.labels(result="rejected").inc()
            logger.warning(
                "refused association from AE %r at %s: %s not on the allow-list",
                calling,
                host,
                "calling AE title" if bad_aet else "host",
            )
            diagnostic = (
                status.DIAGNOSTIC_CALLING_AE_NOT_RECOGNISED
                if bad_aet
                else status.DIAGNOSTIC_NO_REASON
            )
            assoc.acse.send_reject(
                status.REJECTED_PERMANENT, status.SOURCE_SERVICE_USER, diagnostic
            )
            # As pynetdicom's own rejections do: without kill() the socket may close before
            # the A-ASSOCIATE-RJ is on the wire, and the peer only sees an abort.
            assoc.kill()

    def _on_accepted(self, event: Event) -> None:
        self.metrics.associations.labels(result="accepted").inc()

    def _on_echo(self, event: Event) -> int:
        return status.SUCCESS

    def _on_store(self, event: Event) -> int:
        calling = str(event.assoc.requestor.ae_title).strip()
        try:
            dataset = event.dataset
            study_uid = str(dataset.StudyInstanceUID).strip()
            sop_uid = str(dataset.SOPInstanceUID).strip()
            if not study_uid or not sop_uid:
                raise ValueError("empty StudyInstanceUID or SOPInstanceUID")
        except Exception as exc:  # undecodable or missing the UIDs we group by
            self.metrics.refused.labels(reason="invalid").inc()
            logger.warning("refused an instance from %r: %s", calling, type(exc).__name__)
            return status.CANNOT_UNDERSTAND
        data = event.encoded_dataset()
        try:
            self.spool.store(study_uid, sop_uid, data, calling_aet=calling)
        except SpoolFullError as exc:
            self.metrics.refused.labels(reason="spool_full").inc()
            logger.warning("refused instance of study %s: %s", uid_hash(study_uid), exc)
            return status.OUT_OF_RESOURCES
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            self.metrics.refused.labels(reason="spool_full" if full else "write_error").inc()
            logger.error("could not spool an instance of study %s: %s", uid_hash(study_uid), exc)
            return status.OUT_OF_RESOURCES if full else status.PROCESSING_FAILURE
        self.metrics.instances.inc()
        self.metrics.received_bytes.inc(len(data))
        self.metrics.spool_bytes.set(self.spool.used_bytes)
        return status.SUCCESS
