"""The UniMatch stage: the method of ``training.methods.unimatch`` wired to the run's data and
loop (the counterpart of ``training.stages.tcsm``).

Each step draws a labeled batch (supervised loss, ``unimatch.loss``) and an unlabeled batch
(weak view → the model's own thresholded pseudo-labels; two strong views with intensity
perturbations and CutMix, and a feature-perturbed decode of the weak view, all trained
towards them: :func:`training.methods.unimatch.unimatch_train_step`). The unlabeled pool is the
run's unlabeled items: the unlabeled folder plus, with ``data.labeled_count``, the training slices
whose labels were dropped. Without unlabeled data the stage is plain supervised training.

There is no teacher: the single model is validated each epoch and ``best.pt`` holds it (per
``runtime.checkpoint_selection``), so the stage exports and serves like any other. Every
step reports the supervised and unlabeled terms (raw and weighted) and the pseudo-labels'
confident fraction, mean confidence and foreground fraction (TensorBoard, ``steps.jsonl``,
epoch means in ``metrics.jsonl``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor

from training.config import TrainConfig
from training.data.sources import ImageBatches, Item, data_source
from training.distributed import DistContext
from training.methods.unimatch import UniMatchNet, unimatch_train_step
from training.nn.losses import build_supervised_loss
from training.nn.networks import SegmentationNet
from training.stages.task import StageTask, StepRandom, trainable

log = logging.getLogger(__name__)


def build_unimatch_task(
    config: TrainConfig,
    model: SegmentationNet,
    labeled: Sequence[Item],
    unlabeled: Sequence[Item],
    ctx: DistContext,
) -> StageTask:
    """One model (wrapped for autocast, feature perturbation and DDP) trained on labeled and
    unlabeled batches."""
    cfg = config.unimatch
    # Strong views perturb intensities within the model's input range: the HU window (0..255
    # for 8-bit slices).
    lo, hi = config.model.hu_window
    value_range = (float(lo), float(hi))
    source = data_source(config)
    sup_sampler = source.labeled_batches(labeled)
    unl_sampler: ImageBatches | None = None
    if unlabeled and cfg.unlabeled_batch_size > 0:
        unl_sampler = source.image_batches(unlabeled)
    else:
        log.info("unimatch: no unlabeled data; the stage trains on the labeled slices only")
    net = ctx.wrap(UniMatchNet(model, cfg.feature_dropout, config.optim.bf16, ctx.device.type))
    loss_fn = build_supervised_loss(cfg.loss)
    optimizer = torch.optim.AdamW(trainable(model), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def step(index: int, rnd: StepRandom) -> dict[str, float]:
        x, y = sup_sampler.sample(cfg.batch_size, rnd.numpy, rnd.torch)
        x_u: Tensor | None = None
        if unl_sampler is not None:
            x_u = unl_sampler.sample(cfg.unlabeled_batch_size, rnd.numpy, rnd.torch).x
            x_u = x_u.to(ctx.device)
        return unimatch_train_step(
            net,
            optimizer,
            (x.to(ctx.device), y.to(ctx.device)),
            x_u,
            loss_fn,
            index,
            cfg,
            value_range=value_range,
            generator=rnd.torch,
        )

    return StageTask(
        "unimatch",
        model,
        optimizer,
        step,
        cfg.epochs,
        cfg.steps_per_epoch,
        candidates=lambda: [("model", model)],
    )
