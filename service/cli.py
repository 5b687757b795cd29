"""The ``pulmoseg`` command: one entry point, one subcommand per job.

Every failure the user can cause ends in one sentence on stderr and a non-zero exit code,
never a traceback (``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from service.logging_config import configure_logging

EXIT_USAGE = 2
EXIT_FAILURE = 1
#: Entry-point group through which packages (training) add subcommands.
COMMANDS_GROUP = "pulmoseg.commands"


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the gRPC segmentation server")
    p.add_argument("--model", type=Path, help="exported model.onnx (or PULMOSEG_MODEL_PATH)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="gRPC port (default 50051; 0 picks a free one)")
    p.add_argument("--metrics-port", type=int, help="Prometheus metrics port (default 9090)")
    p.add_argument("--metrics-host", help="address for the metrics endpoint")
    p.add_argument(
        "--require-gpu",
        action="store_true",
        default=None,
        help="fail at start unless ONNX Runtime runs on a GPU provider",
    )
    p.add_argument("--settings", type=Path, help="YAML settings file (env PULMOSEG_* override it)")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from service.server import serve
    from service.settings import load_settings

    overrides = {
        "model_path": args.model,
        "host": args.host,
        "port": args.port,
        "metrics_port": args.metrics_port,
        "metrics_host": args.metrics_host,
        "require_gpu": args.require_gpu,
    }
    settings = load_settings(args.settings, **{k: v for k, v in overrides.items() if v is not None})
    if args.debug:
        settings = settings.with_overrides(log_level="DEBUG")
    if settings.model_path is None:
        raise ValueError("No model given: pass --model MODEL.onnx or set PULMOSEG_MODEL_PATH.")
    return serve(settings) or 0


def _add_segment(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="send a DICOM study folder to a server and save the SEG")
    p.add_argument("study_dir", type=Path, help="folder with the study's DICOM files")
    p.add_argument("--server", default="127.0.0.1:50051", help="HOST:PORT of the server")
    p.add_argument("--out", required=True, type=Path, help="where to write the DICOM-SEG")
    p.add_argument("--token", help="bearer token, if the server requires one")
    p.add_argument("--tls-ca", type=Path, help="CA certificate for a TLS server")
    p.add_argument("--timeout", type=float, default=600.0, help="deadline in seconds (default 600)")
    p.add_argument(
        "--wait-for-server",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to SECONDS for the server to report SERVING (e.g. while it loads the model)",
    )
    p.add_argument("--summary-json", type=Path, help="also write the study summary as JSON here")
    p.set_defaults(func=_cmd_segment)


def _cmd_segment(args: argparse.Namespace) -> int:
    from service.client import SegmentationClient

    if not args.study_dir.is_dir():
        raise FileNotFoundError(f"Study folder '{args.study_dir}' does not exist.")
    with SegmentationClient(
        args.server, token=args.token, tls_ca=args.tls_ca, timeout_s=args.timeout
    ) as client:
        if args.wait_for_server > 0:
            client.wait_until_serving(args.wait_for_server)
        result = client.segment_directory(args.study_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(result.seg_bytes)
    if args.summary_json is not None:
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_text(json.dumps(result.summary, indent=2, sort_keys=True))
    volumes = ", ".join(f"{k} {v:.1f} mL" for k, v in result.summary["class_volumes_ml"].items())
    print(f"wrote {args.out} ({len(result.seg_bytes)} bytes); volumes: {volumes}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pulmoseg", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_serve, _add_segment):
        add(sub)
    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        _add_contributed(sub, entry)
    return parser


def _add_contributed(sub: argparse._SubParsersAction, entry: EntryPoint) -> None:
    """Let an installed package add its subcommand; if it cannot load, say what to install."""
    try:
        add: Callable[[argparse._SubParsersAction], object] = entry.load()
    except ImportError as exc:
        missing = exc.name or str(exc)
        message = (
            f"'pulmoseg {entry.name}' is not available in this installation ({missing} is "
            f"missing): install the training extras, e.g. pip install 'pulmoseg[train]'."
        )
        p = sub.add_parser(entry.name, help="(not installed: needs pulmoseg[train])")
        p.set_defaults(func=_unavailable(message))
        return
    add(sub)


def _unavailable(message: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        raise CommandUnavailableError(message)

    return run


class CommandUnavailableError(RuntimeError):
    """A subcommand whose package (or its dependencies) is not installed."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Provisional: `serve` sets logging up again from its settings (PULMOSEG_LOG_LEVEL/FORMAT).
    configure_logging("DEBUG" if args.debug else "WARNING")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"pulmoseg {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one sentence, not a traceback
        if args.debug:
            raise
        message = str(exc).strip() or type(exc).__name__
        print(f"pulmoseg {args.command}: error: {message}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
