"""Run the pipeline as a plain MONAI Deploy application: a DICOM folder in, ``seg.dcm`` out.

``python -m service.app -i STUDY_DIR -o OUT_DIR -m model.onnx``. Paths default to the MAP
environment (``HOLOSCAN_INPUT_PATH``, ``HOLOSCAN_OUTPUT_PATH``, ``HOLOSCAN_MODEL_PATH``), so
the same module is the entry point of a MONAI Application Package (see ``app.yaml``). It runs
the same ``LungSegmentationApp`` as the gRPC server, through ``StudyRunner``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from monai.deploy.core import RuntimeEnv

from service.core.errors import ModelError, PulmosegError

log = logging.getLogger(__name__)


def resolve_model_path(path: Path) -> Path:
    """A MAP mounts a models *folder*; accept a file or a folder holding exactly one .onnx."""
    if path.is_file():
        return path
    if path.is_dir():
        candidates = sorted(path.rglob("*.onnx"))
        if len(candidates) == 1:
            return candidates[0]
        raise ModelError(
            f"Model folder '{path}' must hold exactly one .onnx file, found {len(candidates)}."
        )
    raise ModelError(f"Model path '{path}' does not exist.")


def main(argv: Sequence[str] | None = None) -> int:
    env = RuntimeEnv()
    parser = argparse.ArgumentParser(
        prog="python -m service.app", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "-i",
        "--input",
        type=Path,
        default=Path(env.input),
        help="folder with the study's DICOM files (env HOLOSCAN_INPUT_PATH)",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path(env.output),
        help="output folder for seg.dcm (env HOLOSCAN_OUTPUT_PATH)",
    )
    parser.add_argument(
        "-m",
        "--model",
        type=Path,
        default=Path(env.model),
        help="model.onnx or a folder holding one (env HOLOSCAN_MODEL_PATH)",
    )
    parser.add_argument("--segmentation-type", default="BINARY", choices=["BINARY", "LABELMAP"])
    parser.add_argument("--require-gpu", action="store_true")
    parser.add_argument(
        "--quality",
        action="store_true",
        help="also run the quality step: sr.dcm (clinical summary SR) and consistency VolDice "
        "in summary.json (consistency on every study; it costs a second inference)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from service.app.study_runner import StudyRunner
    from service.quality.assessment import QualityConfig

    try:
        if not args.input.is_dir():
            raise PulmosegError(f"Input folder '{args.input}' does not exist.")
        runner = StudyRunner.load(
            resolve_model_path(args.model),
            require_gpu=args.require_gpu,
            quality=QualityConfig(consistency_fraction=1.0) if args.quality else None,
        )
        result = runner.segment_directory(
            args.input, args.output, segmentation_type=args.segmentation_type
        )
    except PulmosegError as exc:
        print(f"service.app: error: {exc}", file=sys.stderr)
        return 1
    seconds = {**result.stage_seconds, "total": result.seconds}
    summary = {
        "study": result.study_uid_hash,
        "instances": result.num_instances,
        "class_volumes_ml": result.class_volumes_ml,
        "provider": runner.provider,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
    if result.quality is not None:
        clinical, consistency = result.quality.clinical, result.quality.consistency
        summary["clinical"] = {
            "lung_volume_ml": clinical.lung_volume_ml,
            "involvement_percent": clinical.involvement_percent,
            "severity_grade": clinical.grade.value if clinical.grade else None,
        }
        summary["consistency"] = (
            {"transform": consistency.transform, "voldice": consistency.voldice}
            if consistency is not None
            else None
        )
        summary["flagged"] = result.quality.flagged
    (args.output / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.output / 'seg.dcm'}: {json.dumps(result.class_volumes_ml)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
