"""Training runs: multi-stage experiments (pretrain_global → pretrain_local → supervised →
tcsm or unimatch, any subset) and the single supervised run.

Both runners write the one run-folder layout of ``service.core.run_folder`` (what the
TrainingService's worker reads). Each stage writes ``<output_dir>/<stage>/last.pt`` and
``best.pt`` and starts from the previous stage's ``best.pt``; once every stage finished, the
``best.pt`` of the stage that validated best (``runtime.final_model: best_validated``, the
default) or of the last stage (``last_stage``) is copied to ``<output_dir>/final.pt`` (what
``pulmoseg export`` takes): a semi-supervised stage that validates worse than the supervised one
does not replace it. With ``resume=True`` finished stages are skipped and an interrupted one
continues from its ``last.pt``. :func:`train_supervised` is the walking skeleton: the supervised
stage alone (``<output_dir>/supervised/``, then ``final.pt``).

Each stage comes from a module of ``training.stages`` (what one step does), picked by name in
``training.stages.registry``, and runs on the shared loop of ``training.loop``. Multi-process
(DDP)::

    python -m torch.distributed.run --nproc_per_node=2 -m training.experiment --config X.yaml
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from service.core.run_folder import RunFolder
from training.checkpoints import read_checkpoint
from training.config import StageName, TrainConfig, check_stages, load_config, save_config
from training.data.sources import ExperimentData, Item, data_source
from training.data.splits import lesion_stratum, split_labeled_subset
from training.distributed import (
    DistContext,
    check_replicas_agree,
    init_distributed,
    shutdown_distributed,
)
from training.loop import (
    StageResult,
    StepBudget,
    ValidationCallback,
    run_stage,
    validation_score,
)
from training.nn.networks import SegmentationNet, build_network
from training.stages.registry import stage_builder
from training.stages.supervised import build_supervised_task
from training.stages.task import StageTask

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Fix every random source training touches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_experiment_data(config: TrainConfig, *, with_unlabeled: bool = True) -> ExperimentData:
    """Read and split the run's data for ``config.data.kind`` (see ``training.data.sources``),
    then apply the label budget ``data.labeled_count`` (:func:`apply_label_budget`)."""
    data = data_source(config).load(with_unlabeled=with_unlabeled)
    return apply_label_budget(config, data, with_unlabeled=with_unlabeled)


def apply_label_budget(
    config: TrainConfig, data: ExperimentData, *, with_unlabeled: bool = True
) -> ExperimentData:
    """Keep the labels of ``data.labeled_count`` training items (0: all), a seeded subset
    stratified by lesion / consolidation presence (``training.data.splits.split_labeled_subset``);
    the others join the unlabeled pool as images (dropped when ``with_unlabeled`` is False).
    Validation items are untouched. Idempotent: a source that already applied the budget
    hands over ``labeled_count`` labeled items and nothing changes.
    """
    k = config.data.labeled_count
    if not k or len(data.train_labeled) <= k:
        return data
    names = list(config.model.class_names)
    lesion = [i for i, n in enumerate(names) if n not in ("background", "lung")]
    consolidation = names.index("consolidation") if "consolidation" in names else -1

    def stratum(item: Item) -> tuple[bool, bool]:
        assert item.label is not None  # train_labeled items carry labels
        return lesion_stratum(item.label, lesion, consolidation)

    labeled, demoted = split_labeled_subset(data.train_labeled, k, config.seed, stratum)
    log.info(
        "label budget: %d of %d training items keep their labels; %d join the unlabeled pool",
        len(labeled),
        len(data.train_labeled),
        len(demoted) if with_unlabeled else 0,
    )
    unlabeled = [replace(item, label=None) for item in demoted] if with_unlabeled else []
    return ExperimentData(labeled, data.train_unlabeled + unlabeled, data.val)


def prepare_run(config: TrainConfig, ctx: DistContext) -> RunFolder:
    """Seeds, thread count and the output folder (holding the resolved config) of a run."""
    seed_everything(config.seed)
    if config.optim.num_threads > 0:
        torch.set_num_threads(config.optim.num_threads)
    folder = RunFolder(Path(config.output_dir))
    if ctx.is_main:
        folder.root.mkdir(parents=True, exist_ok=True)
        save_config(config, folder.resolved_config)
    return folder


@dataclass
class TrainResult:
    """Where the run left its outputs and how good the best epoch was."""

    output_dir: Path
    #: ``<output_dir>/supervised/best.pt``.
    best_checkpoint: Path
    best_val_voldice: dict[str, float]
    final_loss: float
    epochs_run: int
    wall_seconds: float
    #: ``<output_dir>/final.pt``, the same weights as ``best_checkpoint`` (what export takes).
    final_checkpoint: Path | None = None


def train_supervised(
    config: TrainConfig, *, resume: bool = False, progress: bool = True
) -> TrainResult:
    """Train with the configured supervised loss; validate VolDice per class every epoch.

    The layout of a one-stage :func:`run_experiment` run (``stages`` is ignored): checkpoints in
    ``<output_dir>/supervised/``, its ``best.pt`` copied to ``<output_dir>/final.pt``.
    """
    start_time = time.perf_counter()
    stage = StageName.SUPERVISED.value
    ctx = init_distributed(config.runtime.backend, config.runtime.device)
    try:
        folder = prepare_run(config, ctx)
        data = load_experiment_data(config, with_unlabeled=False)
        model = build_network(config.model).to(ctx.device)
        task = build_supervised_task(config, model, data.train_labeled, ctx)
        state = read_checkpoint(ctx, folder.last_checkpoint(stage)) if resume else None
        result = run_stage(
            task,
            config=config,
            directory=folder.stage_dir(stage),
            ctx=ctx,
            val_studies=data.val,
            resume_state=state,
            progress=progress,
            tb_dir=folder.tensorboard_dir(stage),
        )
        final = _publish_final(result, folder, ctx) if result.finished else None
    finally:
        shutdown_distributed(ctx)
    return TrainResult(
        output_dir=folder.root,
        best_checkpoint=result.best_checkpoint,
        best_val_voldice=result.best_val_voldice,
        final_loss=result.final_loss,
        epochs_run=result.epochs_run,
        wall_seconds=time.perf_counter() - start_time,
        final_checkpoint=final,
    )


@dataclass
class ExperimentResult:
    """How far the run got. ``model`` is this rank's network as the last stage that ran left it
    (the student's last step, not necessarily ``final.pt``)."""

    output_dir: Path
    stages: list[StageResult]
    finished: bool
    #: ``<output_dir>/final.pt`` once every stage finished, else None.
    final_checkpoint: Path | None
    model: SegmentationNet
    wall_seconds: float
    #: This process's rank under torchrun (0 when alone); only rank 0 wrote files.
    rank: int = 0
    #: The stage whose ``best.pt`` became ``final.pt`` (None until every stage finished).
    final_stage: str | None = None

    @property
    def best_val_voldice(self) -> dict[str, float]:
        """Validation scores of the final model (else of the last validated stage)."""
        for result in reversed(self.stages):
            if result.best_val_voldice and self.final_stage in (None, result.name):
                return result.best_val_voldice
        return {}


def select_final_stage(results: Sequence[StageResult], rule: str) -> StageResult:
    """The stage whose ``best.pt`` ships: see ``runtime.final_model``.

    Pre-training stages are never validated, so they only ship when no stage was.
    """
    if not results:
        raise ValueError("No stage ran; there is no final model to select.")
    validated = [r for r in results if r.best_val_voldice]
    if rule == "last_stage" or not validated:
        return results[-1]
    best = validated[0]
    for result in validated[1:]:
        if validation_score(result.best_val_voldice) >= validation_score(best.best_val_voldice):
            best = result
    return best


def _build_task(
    name: str, config: TrainConfig, model: SegmentationNet, data: ExperimentData, ctx: DistContext
) -> StageTask:
    """Stage ``name`` around ``model`` (see ``training.stages.registry``)."""
    builder = stage_builder(name)  # an unknown name fails before anything is seeded
    # Heads and the teacher are created here: seed per stage so that a stage built after a
    # resume starts exactly as it would have in one uninterrupted run.
    torch.manual_seed(
        int(np.random.SeedSequence([config.seed, zlib.crc32(name.encode())]).generate_state(1)[0])
    )
    model.requires_grad_(True)
    return builder(config, model, data, ctx)


def _publish_final(chosen: StageResult, folder: RunFolder, ctx: DistContext) -> Path:
    """Copy the chosen stage's ``best.pt`` to ``final.pt`` (atomically: export may read it)."""
    final = folder.final_checkpoint
    if ctx.is_main:
        log.info(
            "final model: stage '%s' (validation %s)",
            chosen.name,
            " ".join(f"{k}={v:.3f}" for k, v in chosen.best_val_voldice.items()) or "n/a",
        )
        tmp = final.with_suffix(".tmp")
        shutil.copyfile(chosen.best_checkpoint, tmp)
        tmp.replace(final)
    ctx.barrier()
    return final


def run_experiment(
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    max_steps: int | None = None,
    on_validation: ValidationCallback | None = None,
) -> ExperimentResult:
    """Run ``config.stages`` in order; under torchrun every rank calls this.

    ``max_steps`` stops the run (after writing ``last.pt``) once that many optimisation steps
    ran in this call, across stages: for time-boxed jobs on preemptible machines.
    ``on_validation`` sees every validated epoch of every stage (``training.loop.run_stage``).
    """
    start = time.perf_counter()
    check_stages(config.stages)
    budget = StepBudget(max_steps)
    ctx = init_distributed(config.runtime.backend, config.runtime.device)
    try:
        folder = prepare_run(config, ctx)
        data = load_experiment_data(config)
        model = build_network(config.model).to(ctx.device)
        results: list[StageResult] = []
        previous: Path | None = None
        for name in config.stages:
            directory = folder.stage_dir(name)
            state = read_checkpoint(ctx, folder.last_checkpoint(name)) if resume else None
            if previous is not None:
                init = read_checkpoint(ctx, previous)
                if init is None:
                    raise FileNotFoundError(f"Stage '{name}' needs '{previous}', which is missing.")
                model.load_state_dict(init["model"])
            task = _build_task(name, config, model, data, ctx)
            result = run_stage(
                task,
                config=config,
                directory=directory,
                ctx=ctx,
                val_studies=data.val,
                resume_state=state,
                budget=budget,
                progress=progress,
                tb_dir=folder.tensorboard_dir(name),
                on_validation=on_validation,
            )
            results.append(result)
            if result.steps_run:
                check_replicas_agree(ctx, model, f"stage {name}")
            ctx.barrier()  # later stages read this stage's checkpoints
            if not result.finished:
                break
            previous = result.best_checkpoint
        model.requires_grad_(True)
        finished = len(results) == len(config.stages) and all(r.finished for r in results)
        final, final_stage = None, None
        if finished and previous is not None:
            chosen = select_final_stage(results, config.runtime.final_model)
            final, final_stage = _publish_final(chosen, folder, ctx), chosen.name
    finally:
        shutdown_distributed(ctx)
    return ExperimentResult(
        folder.root,
        results,
        finished,
        final,
        model,
        time.perf_counter() - start,
        ctx.rank,
        final_stage,
    )


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m training.experiment",
        description="Run a multi-stage training experiment (works under torchrun).",
    )
    p.add_argument("--config", required=True, type=Path, help="experiment YAML file")
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip finished stages and continue the interrupted one",
    )
    p.add_argument("--data", type=Path, help="override data.root of the config")
    p.add_argument("--output-dir", type=Path, help="override output_dir of the config")
    p.add_argument("--stages", help="override the stage list, comma-separated")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (resumable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p.parse_args(argv)


def apply_overrides(config: TrainConfig, args: argparse.Namespace) -> TrainConfig:
    """Command-line overrides (``--data``, ``--output-dir``, ``--stages``) on a loaded config."""
    if args.data is not None:
        config.data.root = str(args.data)
    if args.output_dir is not None:
        config.output_dir = str(args.output_dir)
    if args.stages:
        stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
        check_stages(stages)
        config.stages = stages
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (1 with a one-line message for bad input)."""
    args = _parse(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = apply_overrides(load_config(args.config), args)
        result = run_experiment(
            config, resume=args.resume, progress=not args.no_progress, max_steps=args.max_steps
        )
    except (FileNotFoundError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if result.rank != 0:
        return 0
    if result.finished:
        dice = " ".join(f"{k}={v:.3f}" for k, v in result.best_val_voldice.items()) or "n/a"
        log.info(
            "final model: %s (validation VolDice %s); %.0f s",
            result.final_checkpoint,
            dice,
            result.wall_seconds,
        )
    else:
        last = result.stages[-1]
        log.info(
            "stopped in stage %s at step %d/%d; continue with --resume",
            last.name,
            last.global_step,
            last.total_steps,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
