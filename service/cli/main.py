"""The ``pulmoseg`` command: one entry point, one subcommand per job.

Every failure the user can cause ends in one sentence on stderr and a non-zero exit code,
never a traceback (``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points
from importlib.metadata import version as package_version
from pathlib import Path

from service.core.options import ApplicabilityPolicy, SegmentationType
from service.core.study_outcome import write_summary_json
from service.observability.logging_config import configure_logging

EXIT_USAGE = 2
EXIT_FAILURE = 1
#: Entry-point group through which packages (training) add subcommands.
COMMANDS_GROUP = "pulmoseg.commands"


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the gRPC segmentation server")
    p.add_argument(
        "--model",
        type=Path,
        help="exported model.onnx or a folder of versions (or PULMOSEG_MODEL_PATH; default: the "
        "shipped real-CT model models/pulmoseg-real-ct.onnx)",
    )
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
    p.add_argument(
        "--applicability-policy",
        choices=[choice.value for choice in ApplicabilityPolicy],
        help="a study outside the model's declared range (head CT, few slices, thick slices, "
        "HU off) is segmented and flagged (segment_and_flag, the default) or refused with "
        "FAILED_PRECONDITION (refuse); env PULMOSEG_APPLICABILITY_POLICY",
    )
    p.add_argument("--settings", type=Path, help="YAML settings file (env PULMOSEG_* override it)")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from service.serving.server import serve
    from service.serving.settings import load_settings

    overrides = {
        "model_path": args.model,
        "host": args.host,
        "port": args.port,
        "metrics_port": args.metrics_port,
        "metrics_host": args.metrics_host,
        "require_gpu": args.require_gpu,
        "applicability_policy": args.applicability_policy,
    }
    settings = load_settings(args.settings, **{k: v for k, v in overrides.items() if v is not None})
    if args.debug:
        settings = settings.with_overrides(log_level="DEBUG")
    if settings.model_path is None:
        from service.serving.shipped_model import shipped_model_path

        settings = settings.with_overrides(model_path=shipped_model_path())
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
    p.add_argument(
        "--summary-json",
        type=Path,
        help="also write the study summary as JSON here (the schema python -m service.app writes)",
    )
    p.add_argument("--sr-out", type=Path, help="also write the DICOM SR (clinical summary) here")
    p.add_argument(
        "--segmentation-type",
        choices=[t.value.lower() for t in SegmentationType],
        default=SegmentationType.BINARY.value.lower(),
        type=str.lower,
        help="BINARY (default, read by every viewer) or LABELMAP (smaller; DICOM 2024)",
    )
    p.add_argument("--series", metavar="UID", help="send only this SeriesInstanceUID")
    p.add_argument("--preview", type=Path, metavar="PNG", help="also render a preview picture")
    p.add_argument("--tls-cert", type=Path, help="client certificate (PEM) for mutual TLS")
    p.add_argument("--tls-key", type=Path, help="client private key (PEM) for mutual TLS")
    p.add_argument(
        "--retries",
        type=int,
        default=4,
        help="retries when the server is unreachable, restarting or busy, with back-off within "
        "--timeout (default 4; 0 disables)",
    )
    p.add_argument(
        "--wait-for-ready",
        action="store_true",
        help="let each attempt wait (within --timeout) for an unreachable server to accept "
        "connections, instead of failing at once and retrying after a back-off",
    )
    p.add_argument(
        "--no-progress", action="store_true", help="do not show the progress bar on stderr"
    )
    p.set_defaults(func=_cmd_segment)


def _cmd_segment(args: argparse.Namespace) -> int:
    from service.client.client import SegmentationClient

    if not args.study_dir.is_dir():
        raise FileNotFoundError(f"Study folder '{args.study_dir}' does not exist.")
    from service.client.progress_bar import ProgressBar
    from service.dicom.study_folder import describe_skipped

    bar = None if args.no_progress else ProgressBar()
    with SegmentationClient(
        args.server,
        token=args.token,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        timeout_s=args.timeout,
        max_attempts=args.retries + 1,
        wait_for_ready=args.wait_for_ready,
    ) as client:
        if args.wait_for_server > 0:
            client.wait_until_serving(args.wait_for_server)
        try:
            result = client.segment_directory(
                args.study_dir,
                bar,
                segmentation_type=args.segmentation_type,
                series_uid=args.series,
                on_queue_position=bar.queued if bar is not None else None,
            )
        finally:
            if bar is not None:
                bar.close()
    if result.skipped:
        print(f"skipped {len(result.skipped)} file(s):\n{describe_skipped(result.skipped)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(result.seg_bytes)
    if args.summary_json is not None:
        write_summary_json(args.summary_json, result.outcome, result.skipped)
    if args.sr_out is not None and result.sr_bytes:
        args.sr_out.parent.mkdir(parents=True, exist_ok=True)
        args.sr_out.write_bytes(result.sr_bytes)
    volumes = ", ".join(f"{k} {v:.1f} mL" for k, v in result.summary["class_volumes_ml"].items())
    print(f"wrote {args.out} ({len(result.seg_bytes)} bytes); volumes: {volumes}")
    if args.preview is not None:
        from service.dicom.preview import write_preview

        sent = [f for f in sorted(args.study_dir.rglob("*")) if f.is_file()]
        skipped = {args.study_dir / s.path for s in result.skipped}
        write_preview(
            [f for f in sent if f not in skipped and not _hidden(f, args.study_dir)],
            result.seg_bytes,
            result.summary,
            args.preview,
        )
        print(f"wrote preview {args.preview}")
    _print_quality(result.summary)
    return 0


def _hidden(path: Path, root: Path) -> bool:
    from service.dicom.study_folder import is_hidden

    return is_hidden(path.relative_to(root))


def _print_quality(summary: dict) -> None:
    """The clinical summary and consistency lines of ``pulmoseg segment``."""
    from service.cli.quality_commands import clinical_line

    print(f"study {summary['study_uid_hash']}: {clinical_line(summary.get('clinical'))}")
    consistency = summary.get("consistency")
    if consistency:
        scores = ", ".join(f"{k} {v:.3f}" for k, v in sorted(consistency["voldice"].items()))
        flag = " -> FLAGGED for review" if summary.get("flagged") else ""
        print(f"consistency VolDice ({consistency['transform']}): {scores}{flag}")
    quality = summary.get("quality")
    if quality:
        flag = " -> FLAGGED for review" if quality["flagged"] else ""
        print(f"quality score {quality['score']:.3f} (threshold {quality['threshold']:.3f}){flag}")
    density = summary.get("density")
    if density:
        print(
            f"lung envelope {density['envelope_ml']:.0f} mL: well aerated "
            f"{100 * density['well_aerated_fraction']:.1f} %, abnormal density "
            f"{100 * density['abnormal_fraction']:.1f} % (label-free, docs/quantification.md)"
        )
    under = summary.get("under_reading")
    if under and under["flagged"]:
        print(
            f"UNDER-READING suspected -> FLAGGED for review: abnormal density "
            f"{100 * under['density_fraction']:.1f} % of the envelope vs lesion "
            f"{100 * under['lesion_fraction']:.1f} % (margin {100 * under['margin']:.1f} points)"
        )
    applicability = summary.get("applicability")
    if applicability and not applicability["applicable"]:
        print(
            "OUTSIDE the model's declared range, do not trust this result: "
            + "; ".join(
                f"{reason} ({applicability['details'].get(reason, '')})"
                for reason in applicability["reasons"]
            )
        )


def _add_pacs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pacs", help="run the PACS gateway: DICOM C-STORE in, segmentation, DICOM-SEG out"
    )
    p.add_argument("--settings", type=Path, help="YAML settings file (env PULMOSEG_PACS_*)")
    p.add_argument("--ae-title", help="AE title of the listener (default PULMOSEG)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="DICOM port (default 11112; 0 picks a free one)")
    p.add_argument("--spool-dir", type=Path, help="durable spool folder")
    p.add_argument("--server", dest="grpc_target", help="HOST:PORT of the pulmoseg gRPC server")
    p.add_argument(
        "--destination",
        dest="destinations",
        action="append",
        metavar="AET@HOST:PORT",
        help="where the SEG is sent by C-STORE (repeat for several)",
    )
    p.add_argument("--stow-url", help="DICOMweb base URL to STOW-RS the SEG to")
    p.add_argument("--metrics-port", type=int, help="metrics and /healthz port (default 9091)")
    p.set_defaults(func=_cmd_pacs)


def _cmd_pacs(args: argparse.Namespace) -> int:
    from service.pacs.gateway import run_gateway
    from service.pacs.settings import load_pacs_settings

    names = ("ae_title", "host", "port", "spool_dir", "grpc_target", "destinations", "stow_url")
    overrides = {name: getattr(args, name) for name in names}
    overrides["metrics_port"] = args.metrics_port
    settings = load_pacs_settings(
        args.settings, **{k: v for k, v in overrides.items() if v is not None}
    )
    if args.debug:
        settings = settings.with_overrides(log_level="DEBUG")
    return run_gateway(settings)


def _version() -> str:
    try:
        return package_version("pulmoseg")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pulmoseg", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from service.cli.jobs_commands import add_jobs
    from service.cli.quality_commands import add_quality, add_reference

    for add in (_add_serve, _add_segment, _add_pacs, add_reference, add_quality, add_jobs):
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
        # Accept the command's usual arguments so the user sees what to install, not a usage error.
        p.set_defaults(func=_unavailable(message), accepts_any_arguments=True)
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
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "accepts_any_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    # Provisional: `serve` sets logging up again from its settings (PULMOSEG_LOG_LEVEL/FORMAT).
    configure_logging("DEBUG" if args.debug else "WARNING")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"pulmoseg {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`... | head`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # one sentence, not a traceback
        if args.debug:
            raise
        message = str(exc).strip() or type(exc).__name__
        print(f"pulmoseg {args.command}: error: {message}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
