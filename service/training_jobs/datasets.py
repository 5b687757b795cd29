"""Which dataset folders a job may read: those under the configured data root
(``training.data_root``) and the capture folder ('captured'), nothing else on the server.

A submitted path is refused before anything is queued when it climbs out with ``..``, is
outside the root, or leads out of it through a symbolic link (the folder, its manifest or a
study file the manifest names); a folder that does not exist, has no ``manifest.json`` or an
unreadable one is INVALID_ARGUMENT naming the file and the problem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.core.errors import InvalidArgumentError, PermissionDeniedError

#: The dataset keyword that means the server's capture folder (setting ``capture.dir``).
CAPTURED = "captured"
MANIFEST = "manifest.json"


def resolve_dataset(dataset: str, *, data_root: Path | None, capture_dir: Path | None) -> Path:
    """The real path of the dataset folder a job reads (see the module docstring)."""
    text = dataset.strip()
    if not text:
        raise InvalidArgumentError(
            "Argument 'dataset' is required: a dataset folder under the server's data root "
            "or 'captured'."
        )
    if text == CAPTURED:
        if capture_dir is None:
            raise InvalidArgumentError(
                "Argument 'dataset' is 'captured' but this server does not capture studies "
                "(setting 'capture_dir' is unset)."
            )
        root = Path(capture_dir).resolve()
        folder = root
    else:
        if ".." in Path(text).parts:
            raise InvalidArgumentError(
                f"Argument 'dataset' must not contain '..', got {dataset!r}; name a folder "
                "under the server's data root."
            )
        if data_root is None:
            raise PermissionDeniedError(
                f"Dataset {dataset!r} is refused: this server has no data root (setting "
                "'training.data_root'), so jobs may only train on 'captured'."
            )
        root = Path(data_root).resolve()
        path = Path(text).expanduser()
        path = path if path.is_absolute() else root / path
        if not (_inside(path.absolute(), root) or _inside(path.absolute(), data_root.absolute())):
            raise PermissionDeniedError(
                f"Dataset '{path}' is outside the server's data root '{root}' (setting "
                "'training.data_root')."
            )
        if not path.exists():
            raise InvalidArgumentError(f"Argument 'dataset': folder '{path}' does not exist.")
        folder = path.resolve()
        if not _inside(folder, root):
            raise PermissionDeniedError(
                f"Dataset '{path}' leads out of the data root '{root}' through a symbolic link "
                f"(to '{folder}')."
            )
        if not folder.is_dir():
            raise InvalidArgumentError(f"Argument 'dataset': '{path}' is not a folder.")
    check_manifest(folder, root)
    return folder


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def check_manifest(folder: Path, root: Path) -> dict[str, Any]:
    """Parse ``folder/manifest.json`` and check that every file it names stays under ``root``."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise InvalidArgumentError(
            f"Argument 'dataset': folder '{folder}' has no {MANIFEST} (make one with "
            "'pulmoseg phantom' or 'pulmoseg capture')."
        )
    if not _inside(manifest.resolve(), root):
        raise PermissionDeniedError(
            f"'{manifest}' leads out of the data root '{root}' through a symbolic link."
        )
    text = manifest.read_text(errors="replace")
    if not text.strip():
        raise InvalidArgumentError(f"Dataset manifest '{manifest}' is empty.")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(
            f"Dataset manifest '{manifest}' is not valid JSON: {exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}."
        ) from exc
    studies = data.get("studies") if isinstance(data, dict) else None
    if not isinstance(studies, list) or not studies:
        raise InvalidArgumentError(
            f"Dataset manifest '{manifest}' must hold a non-empty list under 'studies'."
        )
    for number, entry in enumerate(studies):
        if not isinstance(entry, dict) or "id" not in entry or "image" not in entry:
            raise InvalidArgumentError(
                f"Study #{number} of '{manifest}' needs keys 'id' and 'image'."
            )
        for key in ("image", "label", "dicom"):
            value = entry.get(key)
            if isinstance(value, str) and value:
                target = (folder / value).resolve()
                if not _inside(target, root):
                    raise PermissionDeniedError(
                        f"Study #{number} of '{manifest}' names {key} {value!r}, which leads "
                        f"out of the data root '{root}'."
                    )
    return data
