"""Init-container step of the pulmoseg chart: download the ONNX model before the server starts.

Runs with the image's own Python and standard library only. The download goes to a temporary
file beside the destination and is renamed only after its SHA-256 matched, so the server never
sees a partial or wrong model; any failure exits non-zero with one line saying why, and the pod
stays in Init (visible in `kubectl describe pod`) instead of serving a stale model.

Environment: MODEL_URL (https://, http:// or a pre-signed object-store URL), MODEL_DEST (file
path), MODEL_SHA256 (optional hex digest), MODEL_TIMEOUT_S (optional, default 300).
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.request
from pathlib import Path

CHUNK = 1 << 20


def fetch(url: str, dest: Path, sha256: str, timeout_s: float) -> str:
    """Download ``url`` to ``dest`` atomically; return the hex SHA-256 of what was written."""
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"MODEL_URL must start with https:// or http://, got {url!r}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, partial.open("wb") as out:
            while block := response.read(CHUNK):
                digest.update(block)
                out.write(block)
        got = digest.hexdigest()
        if sha256 and got != sha256.lower():
            raise ValueError(f"SHA-256 of {url} is {got}, MODEL_SHA256 expects {sha256.lower()}")
        partial.replace(dest)
        return got
    finally:
        partial.unlink(missing_ok=True)


def main() -> int:
    try:
        url = os.environ["MODEL_URL"]
        dest = Path(os.environ["MODEL_DEST"])
        got = fetch(
            url,
            dest,
            os.environ.get("MODEL_SHA256", ""),
            float(os.environ.get("MODEL_TIMEOUT_S", "300")),
        )
    except KeyError as exc:
        print(f"fetch-model: environment variable {exc.args[0]} is not set", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"fetch-model: {exc}", file=sys.stderr)
        return 1
    print(f"fetch-model: wrote {dest} ({dest.stat().st_size} bytes, sha256 {got})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
