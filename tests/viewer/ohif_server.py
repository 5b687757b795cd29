"""The built OHIF viewer served on loopback, with Orthanc's DICOMweb behind the same origin.

One small HTTP server does what a site's nginx does in front of OHIF: it serves the static
viewer (viewer/ohif, fetched by viewer/fetch_ohif.sh), answers ``/app-config.js`` with a
configuration that points OHIF at ``/dicom-web`` on the same origin, and forwards
``/dicom-web/...`` to Orthanc. Same origin means no CORS set-up in Orthanc. Any other path that
is not a file is the single-page app's route and gets ``index.html``.
"""

from __future__ import annotations

import http.client
import json
import mimetypes
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from service.core.loopback import free_port

OHIF_DIR = Path(__file__).resolve().parents[2] / "viewer" / "ohif"
DICOMWEB_PREFIX = "/dicom-web"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


def app_config() -> str:
    """OHIF's window.config: one DICOMweb source (Orthanc, same origin), no prompts."""
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "orthanc",
        "configuration": {
            "friendlyName": "Orthanc (pulmoseg tests)",
            "name": "orthanc",
            "wadoUriRoot": DICOMWEB_PREFIX,
            "qidoRoot": DICOMWEB_PREFIX,
            "wadoRoot": DICOMWEB_PREFIX,
            "qidoSupportsIncludeField": False,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False,
            "supportsWildcard": True,
            "omitQuotationForMultipartRequest": True,
        },
    }
    config = {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "showStudyList": True,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        # SEG/RT load without the "do you want to load it?" dialog (the test has no user).
        "disableConfirmationPrompts": True,
        "investigationalUseDialog": {"option": "never"},
        "maxNumberOfWebWorkers": 2,
        "defaultDataSourceName": "orthanc",
        "dataSources": [source],
    }
    return f"window.config = {json.dumps(config, indent=1)};\n"


def _handler(root: Path, orthanc_port: int, config_js: bytes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return  # quiet: the browser makes hundreds of requests

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = urlsplit(self.path).path
            if path.startswith(DICOMWEB_PREFIX + "/"):
                self._proxy()
            elif path == "/app-config.js":
                self._send(200, "application/javascript", config_js)
            else:
                self._static(path)

        def _send(self, status: int, ctype: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _static(self, path: str) -> None:
            target = (root / path.lstrip("/")).resolve()
            if not target.is_relative_to(root) or not target.is_file():
                target = root / "index.html"
            ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            if target.suffix == ".wasm":
                ctype = "application/wasm"
            self._send(200, ctype, target.read_bytes())

        def _proxy(self) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", orthanc_port, timeout=60)
            headers = {
                k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | {"host"}
            }
            try:
                connection.request("GET", self.path, headers=headers)
                response = connection.getresponse()
                body = response.read()
            finally:
                connection.close()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in _HOP_BY_HOP | {"content-length"}:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@dataclass
class OhifServer:
    """The viewer on ``url``; ``stop()`` shuts it down."""

    port: int
    server: ThreadingHTTPServer = field(repr=False)
    thread: threading.Thread = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def start_ohif_server(orthanc_http_port: int, root: Path = OHIF_DIR) -> OhifServer:
    if not (root / "index.html").is_file():
        raise FileNotFoundError(
            f"{root}/index.html is missing: run scripts/setup.sh (viewer/fetch_ohif.sh)."
        )
    port = free_port()
    server = ThreadingHTTPServer(
        ("127.0.0.1", port), _handler(root.resolve(), orthanc_http_port, app_config().encode())
    )
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="ohif-http", daemon=True)
    thread.start()
    return OhifServer(port, server, thread)
