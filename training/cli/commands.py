"""The training package's ``pulmoseg`` subcommands, registered through entry points.

``pyproject.toml`` lists each ``add_*`` function under ``pulmoseg.commands``; the ``pulmoseg``
command (``service.cli.main``) calls them, so the service never imports training and a serve-only
install simply has no training subcommands. Heavy imports (torch) happen inside the commands,
so ``pulmoseg --help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_phantom(sub: argparse._SubParsersAction) -> None:
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


def add_train(sub: argparse._SubParsersAction) -> None:
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
    from training.experiment import apply_overrides, run_experiment

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


def add_export(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument(
        "--model-version",
        help="the manifest's model version (default: the checkpoint config's export.version)",
    )
    quant = p.add_argument_group("quantized variant (faster on CPUs with int8 dot products)")
    quant.add_argument(
        "--quantize",
        choices=["int8"],
        help="also write an int8 variant (ONNX Runtime static quantization, QDQ)",
    )
    quant.add_argument(
        "--quantized-out", type=Path, help="its path (default: OUT with suffix .int8.onnx)"
    )
    quant.add_argument(
        "--calibration-data",
        type=Path,
        help="dataset folder (manifest.json) whose CT volumes calibrate the activation ranges "
        "(default: the checkpoint's data.root)",
    )
    quant.add_argument(
        "--check-data",
        type=Path,
        help="labeled dataset folder on which the variant's per-class VolDice must stay within "
        "--max-voldice-drop of the fp32 model's (default: no check)",
    )
    quant.add_argument(
        "--max-voldice-drop",
        type=float,
        default=0.01,
        help="largest allowed per-class VolDice loss of the variant (default 0.01)",
    )
    triton = p.add_argument_group("Triton Inference Server")
    triton.add_argument(
        "--triton-repo",
        type=Path,
        help="also add the model to this Triton model repository (config.pbtxt + version)",
    )
    triton.add_argument(
        "--triton-version", type=int, default=1, help="model version folder (default 1)"
    )
    triton.add_argument(
        "--triton-max-batch-size", type=int, default=16, help="max_batch_size (default 16)"
    )
    triton.add_argument(
        "--triton-instance-kind",
        default="KIND_GPU",
        choices=["KIND_GPU", "KIND_CPU"],
        help="instance_group kind (default KIND_GPU)",
    )
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from training.export.onnx_export import export_ensemble, export_onnx

    # Checked before the (slow) export, so a typo does not cost an export.
    if args.triton_repo is not None and min(args.triton_version, args.triton_max_batch_size) < 1:
        raise ValueError(
            "--triton-version and --triton-max-batch-size must be >= 1, got "
            f"{args.triton_version} and {args.triton_max_batch_size}."
        )

    if len(args.checkpoint) > 1 and args.model_version is not None:
        raise ValueError("--model-version applies to one checkpoint, not to an ensemble.")
    if len(args.checkpoint) > 1:
        result = export_ensemble(args.checkpoint, args.out, tolerance=args.tolerance)
    else:
        result = export_onnx(
            args.checkpoint[0], args.out, tolerance=args.tolerance, version=args.model_version
        )
    print(
        f"exported {result.onnx_path} ({result.manifest.name} {result.manifest.version}); "
        f"max |ORT - PyTorch| = {result.max_abs_diff:.2e}"
    )
    if args.quantize is not None:
        _quantize_export(args, result.onnx_path)
    if args.triton_repo is not None:
        from training.export.triton import export_triton_repository

        triton = export_triton_repository(
            result.onnx_path,
            args.triton_repo,
            version=args.triton_version,
            max_batch_size=args.triton_max_batch_size,
            instance_kind=args.triton_instance_kind,
        )
        print(
            f"wrote Triton model '{triton.model_name}' version {triton.version}: "
            f"{triton.config_path}"
        )
    return 0


def _quantize_export(args: argparse.Namespace, fp32_path: Path) -> None:
    """The ``--quantize`` part of ``pulmoseg export``: calibrate, quantize, check VolDice."""
    import torch

    from training.export.quantize import compare_voldice, load_calibration_volumes, quantize_onnx

    calibration = args.calibration_data
    if calibration is None:
        state = torch.load(args.checkpoint[0], map_location="cpu", weights_only=False)
        calibration = Path(state["config"]["data"]["root"])
    if not (Path(calibration) / "manifest.json").is_file():
        raise ValueError(
            f"--quantize needs calibration CT volumes: '{calibration}' has no manifest.json; "
            "pass --calibration-data DATASET_FOLDER."
        )
    out = args.quantized_out or fp32_path.with_suffix(".int8.onnx")
    result = quantize_onnx(
        fp32_path, out, load_calibration_volumes(calibration), method=args.quantize
    )
    print(
        f"quantized {result.onnx_path} ({result.manifest.version}; "
        f"{result.calibration_slices} calibration slices from {calibration})"
    )
    if args.check_data is not None:
        comparison = compare_voldice(fp32_path, out, args.check_data)
        for name, diff in comparison.difference.items():
            print(
                f"  VolDice {name}: fp32 {comparison.reference[name]:.4f}, "
                f"{args.quantize} {comparison.variant[name]:.4f} ({diff:+.4f})"
            )
        if comparison.worst_drop > args.max_voldice_drop:
            out.unlink(missing_ok=True)
            raise ValueError(
                f"The {args.quantize} variant loses {comparison.worst_drop:.4f} VolDice on "
                f"'{args.check_data}' (allowed {args.max_voldice_drop}); it was not kept."
            )


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="phantom data → train → export → serve → segment → report")
    p.add_argument("--workdir", type=Path, default=Path("runs/demo"), help="output folder")
    p.add_argument("--config", type=Path, help="training YAML (default: the embedded demo config)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from training.cli.demo import run_demo

    return run_demo(args.workdir, config_path=args.config)


def parse_mask_classes(text: str) -> list[str]:
    """``"background,ggo,consolidation"`` → names by raw mask value."""
    names = [t.strip() for t in text.split(",")]
    if len(names) < 2 or any(not n for n in names) or len(set(names)) != len(names):
        raise ValueError(
            f"Argument '--mask-classes' must list distinct class names separated by commas "
            f"(value 0 first), got {text!r}."
        )
    return names


def _parse_fold(text: str) -> tuple[int, int]:
    """``I/K`` → (I, K), checked."""
    from training.data.splits import check_fold

    try:
        index, folds = (int(part) for part in text.split("/"))
        return check_fold((index, folds))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected a fold as I/K (e.g. 0/5, folds counted from 0), got {text!r}: {exc}"
        ) from None


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    from training.evaluation.evaluate import SPLITS

    p = sub.add_parser("evaluate", help="score an exported ONNX model on labeled data")
    p.add_argument("--model", required=True, type=Path, help="exported model.onnx")
    p.add_argument("--data", type=Path, help="3D dataset folder with manifest.json")
    p.add_argument("--images", type=Path, help="folder of 2D slice images (PNG/JPG)")
    p.add_argument("--masks", type=Path, help="folder of 2D masks (PNG), paired by file stem")
    p.add_argument(
        "--mask-classes",
        type=parse_mask_classes,
        default=None,
        help="dataset class names by label value, e.g. background,ggo,consolidation",
    )
    p.add_argument(
        "--split",
        choices=SPLITS,
        default="all",
        help="evaluate all items or one side of the study/group split (default all)",
    )
    p.add_argument("--val-fraction", type=float, default=0.2, help="split fraction (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument(
        "--fold",
        type=_parse_fold,
        help="cross-validation fold I/K (as training's data.cv_fold/cv_folds); needs --split",
    )
    p.add_argument(
        "--recipe",
        type=Path,
        help="training config (YAML) whose data section says how its 8-bit slices were "
        "prepared (rotation, harmonisation, pixel window); default: what the model records",
    )
    p.add_argument("--out", type=Path, help="write the metrics as JSON here")
    p.add_argument("--per-item", action="store_true", help="also print one row per item")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.evaluation.evaluate import evaluate_model

    if (args.data is None) == (args.images is None):
        raise ValueError("Pass either --data DIR or --images DIR --masks DIR.")
    if args.images is not None and args.masks is None:
        raise ValueError("--images needs --masks DIR (evaluation compares against masks).")
    report = evaluate_model(
        args.model,
        dataset_root=args.data,
        images=args.images,
        masks=args.masks,
        mask_mapping=args.mask_classes,
        split=args.split,
        val_fraction=args.val_fraction,
        seed=args.seed,
        fold=args.fold,
        recipe=None if args.recipe is None else load_config(args.recipe).data,
    )
    print(report.format_table(per_item=args.per_item))
    if args.out is not None:
        print(f"wrote {report.write_json(args.out)}")
    return 0
