"""PACS gateway: DIMSE C-STORE in, the gRPC service in the middle, DICOM-SEG back out.

``pulmoseg pacs`` runs as its own process (see ``docs/pacs.md`` for why): a pynetdicom
listener writes every received instance to a durable spool before it answers, a worker groups
the spooled instances by study, uploads the CT series to a pulmoseg gRPC server with
:class:`service.client.client.SegmentationClient`, and sends the returned SEG to the configured
destinations (C-STORE SCU, optionally DICOMweb STOW-RS), with retries and a dead-letter folder.
"""
