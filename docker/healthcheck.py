#!/usr/bin/env python3
"""Health probe of the pulmoseg image: asks the server's grpc.health.v1 service, exit 0 if SERVING.

Docker's HEALTHCHECK and the Helm chart's exec probes (when TLS is on: kubelet's own gRPC probe
cannot speak TLS) run it inside the container. It reads the same PULMOSEG_* variables as the
server, so it follows the server's port and TLS settings without extra configuration:

* PULMOSEG_PORT (default 50051);
* PULMOSEG_TLS_CERT set: TLS, trusting PULMOSEG_HEALTH_TLS_CA, else ``ca.crt`` beside the
  certificate, else the certificate itself (self-signed); with PULMOSEG_TLS_CLIENT_CA (mTLS)
  the server's own certificate and key are presented as the client certificate;
* PULMOSEG_HEALTH_SERVER_NAME: the name to verify the certificate against (default: the
  connection host).

Exit codes: 0 SERVING, 1 reachable but not SERVING, 2 unreachable or failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _channel(target: str, timeout_s: float) -> grpc.Channel:
    cert = os.environ.get("PULMOSEG_TLS_CERT")
    if not cert:
        return grpc.insecure_channel(target)
    cert_path = Path(cert)
    ca = os.environ.get("PULMOSEG_HEALTH_TLS_CA")
    beside = cert_path.with_name("ca.crt")
    root = Path(ca) if ca else (beside if beside.exists() else cert_path)
    client_chain = client_key = None
    if os.environ.get("PULMOSEG_TLS_CLIENT_CA"):
        client_chain = cert_path.read_bytes()
        client_key = Path(os.environ["PULMOSEG_TLS_KEY"]).read_bytes()
    creds = grpc.ssl_channel_credentials(root.read_bytes(), client_key, client_chain)
    options = []
    if name := os.environ.get("PULMOSEG_HEALTH_SERVER_NAME"):
        options.append(("grpc.ssl_target_name_override", name))
    return grpc.secure_channel(target, creds, options=options)


def check(host: str, port: int, service: str, timeout_s: float) -> tuple[int, str]:
    """(exit code, one-line status) of one Health/Check call."""
    try:
        with _channel(f"{host}:{port}", timeout_s) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
    except grpc.RpcError as exc:
        code = exc.code().name if isinstance(exc, grpc.Call) else "ERROR"
        return 2, f"health check of {host}:{port} failed: {code}"
    except OSError as exc:  # a TLS file is missing or unreadable
        return 2, f"health check of {host}:{port} failed: {exc}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return (0 if status == "SERVING" else 1), f"{host}:{port} {service or '(server)'}: {status}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pulmoseg-healthcheck", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PULMOSEG_PORT", "50051")))
    parser.add_argument("--service", default="", help="service name ('' = the whole server)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    args = parser.parse_args(argv)
    code, message = check(args.host, args.port, args.service, args.timeout)
    print(message, file=sys.stdout if code == 0 else sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
