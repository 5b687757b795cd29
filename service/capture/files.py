"""Atomic writes for the capture folder: a reader (training, a crash) never sees half a file.

Every file is written to a hidden temporary file in its destination folder, flushed to disk and
renamed over the destination (``os.replace`` is atomic within one file system). A failure on the
way removes the temporary file; a process killed mid-write leaves one behind, which
:func:`remove_stale_temp_files` deletes on the next capture.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

#: Prefix of temporary files; nothing else in the capture folder starts with it.
TEMP_PREFIX = ".tmp-"


def _write_atomic(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> int:
    """Write ``arrays`` as a compressed ``.npz`` at ``path``; returns the bytes written."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    payload = buffer.getvalue()
    _write_atomic(path, payload)
    return len(payload)


def write_json_atomic(path: Path, value: Any) -> None:
    _write_atomic(path, (json.dumps(value, indent=1, sort_keys=True) + "\n").encode())


def remove_stale_temp_files(root: Path, older_than_s: float) -> int:
    """Delete temporary files under ``root`` left by a crash (older than ``older_than_s``)."""
    if not root.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    removed = 0
    for temp in root.rglob(f"{TEMP_PREFIX}*"):
        try:
            if temp.is_file() and temp.stat().st_mtime < cutoff:
                temp.unlink()
                removed += 1
        except FileNotFoundError:  # removed by someone else meanwhile
            continue
    return removed
