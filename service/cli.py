"""The ``pulmoseg`` command: one entry point, one subcommand per job.

Every failure the user can cause ends in one sentence on stderr and a non-zero exit code,
never a traceback (``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

EXIT_USAGE = 2
EXIT_FAILURE = 1


def _add_phantom(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "phantom", help="generate synthetic chest-CT studies (DICOM + NIfTI + labels)"
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--studies", type=int, default=8, help="number of studies (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=int, default=128, help="in-plane size in pixels (default 128)")
    p.add_argument("--slices", type=int, default=48, help="slices per study (default 48)")
    p.add_argument(
        "--labeled-fraction",
        type=float,
        default=1.0,
        help="fraction of studies marked labeled in the manifest (default 1.0)",
    )
    p.set_defaults(func=_cmd_phantom)


def _cmd_phantom(args: argparse.Namespace) -> int:
    from training.phantom import generate_dataset

    manifest = generate_dataset(
        args.out,
        studies=args.studies,
        seed=args.seed,
        size=args.size,
        slices=args.slices,
        labeled_fraction=args.labeled_fraction,
    )
    print(f"wrote {args.studies} phantom studies; manifest: {manifest}")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a YAML experiment (stages: pretrain_global, pretrain_local, "
        "supervised, tcsm)",
    )
    p.add_argument("--config", required=True, type=Path, help="experiment YAML file")
    p.add_argument("--resume", action="store_true", help="skip finished stages, resume the last")
    p.add_argument("--data", type=Path, help="override data.root of the config")
    p.add_argument("--output-dir", type=Path, help="override output_dir of the config")
    p.add_argument("--stages", help="override the stage list, e.g. supervised,tcsm")
    p.add_argument("--max-steps", type=int, help="stop after N steps (resume later)")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.stages import apply_overrides, run_experiment

    config = apply_overrides(load_config(args.config), args)
    result = run_experiment(config, resume=args.resume, max_steps=args.max_steps)
    if result.rank != 0:
        return 0
    if not result.finished:
        last = result.stages[-1]
        print(
            f"stopped in stage {last.name} at step {last.global_step}/{last.total_steps}; "
            "continue with --resume"
        )
        return 0
    dice = " ".join(f"{k}={v:.3f}" for k, v in result.best_val_voldice.items())
    print(
        f"final checkpoint: {result.final_checkpoint} (validation VolDice {dice or 'n/a'}); "
        f"{result.wall_seconds:.0f} s"
    )
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX and verify ORT/PyTorch parity")
    p.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        nargs="+",
        help="training checkpoint (.pt); several (e.g. cross-validation folds) export one "
        "model that averages their probabilities",
    )
    p.add_argument("--out", required=True, type=Path, help="output .onnx path")
    p.add_argument("--tolerance", type=float, default=None, help="parity tolerance (default 1e-4)")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from training.export import export_ensemble, export_onnx

    if len(args.checkpoint) > 1:
        result = export_ensemble(args.checkpoint, args.out, tolerance=args.tolerance)
    else:
        result = export_onnx(args.checkpoint[0], args.out, tolerance=args.tolerance)
    print(
        f"exported {result.onnx_path} ({result.manifest.name} {result.manifest.version}); "
        f"max |ORT - PyTorch| = {result.max_abs_diff:.2e}"
    )
    return 0


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
    p.set_defaults(func=_cmd_segment)


def _cmd_segment(args: argparse.Namespace) -> int:
    from service.client import SegmentationClient

    if not args.study_dir.is_dir():
        raise FileNotFoundError(f"Study folder '{args.study_dir}' does not exist.")
    with SegmentationClient(
        args.server, token=args.token, tls_ca=args.tls_ca, timeout_s=args.timeout
    ) as client:
        result = client.segment_directory(args.study_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(result.seg_bytes)
    volumes = ", ".join(f"{k} {v:.1f} mL" for k, v in result.summary["class_volumes_ml"].items())
    print(f"wrote {args.out} ({len(result.seg_bytes)} bytes); volumes: {volumes}")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="phantom data → train → export → serve → segment → report")
    p.add_argument("--workdir", type=Path, default=Path("runs/demo"), help="output folder")
    p.add_argument("--config", type=Path, help="training YAML (default: the embedded demo config)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from service.demo import run_demo

    return run_demo(args.workdir, config_path=args.config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pulmoseg", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_phantom, _add_train, _add_export, _add_serve, _add_segment, _add_demo):
        add(sub)
    for name, add in _extra_commands():
        add(sub)
        del name
    return parser


def _extra_commands() -> list[tuple[str, Callable[[argparse._SubParsersAction], None]]]:
    """Subcommands contributed by other modules (kept out of this file to keep it small)."""
    from training.evaluate import add_evaluate_parser

    return [("evaluate", add_evaluate_parser)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
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
