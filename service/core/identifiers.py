"""Pseudonymous identifiers for logs, summaries and records.

Logs must never carry patient identifiers; the StudyInstanceUID is not one by itself but links
back to one in any PACS, so logs carry a short one-way hash instead. One function, one length,
everywhere: a hash in a log line can be matched with the hash in a gRPC summary or a record.
"""

from __future__ import annotations

import hashlib

#: Hex characters kept: 64 bits, ample to tell studies apart, short enough to read.
UID_HASH_LENGTH = 16


def uid_hash(uid: str) -> str:
    """The hash that stands for a DICOM UID (study, series, instance) wherever it is shown."""
    if not isinstance(uid, str):
        raise TypeError(f"Argument 'uid' must be a str, got {type(uid).__name__}.")
    return hashlib.sha256(uid.strip().encode()).hexdigest()[:UID_HASH_LENGTH]
