"""The supervised stage: the configured segmentation loss on labeled batches.

A stage contributes one :class:`~training.stages.task.StageTask` (its optimiser and what one step
does) to the shared loop of ``training.loop``; ``training.experiment`` chains it with the
other stages (``stage_pretrain``, ``stage_tcsm``) or runs it alone (``train_supervised``).
Everything here also runs under torchrun (DDP).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from training.config import TrainConfig
from training.data.sources import Item, data_source
from training.distributed import DistContext
from training.nn.losses import build_supervised_loss
from training.nn.networks import SegmentationNet
from training.stages.task import AutocastForward, StageTask, StepRandom, trainable
from training.stages.weak_term import LossFn, weak_term


def build_supervised_task(
    config: TrainConfig, model: SegmentationNet, studies: Sequence[Item], ctx: DistContext
) -> StageTask:
    """Supervised stage: the configured loss (``optim.loss``) on labeled batches (2.5D stacks
    of studies or 2D slices, per ``data.kind``)."""
    source = data_source(config)
    sampler = source.labeled_batches(studies)
    weak = weak_term(config, source)
    opt = config.optim
    net = ctx.wrap(AutocastForward(model, opt.bf16, ctx.device.type))
    loss_fn = build_supervised_loss(opt.loss)
    optimizer = torch.optim.AdamW(trainable(model), lr=opt.lr, weight_decay=opt.weight_decay)

    def step(_: int, rnd: StepRandom) -> dict[str, float]:
        x, y = sampler.sample(opt.batch_size, rnd.numpy, rnd.torch)
        loss_of: LossFn = loss_fn
        parts: dict[str, float] = {}
        if weak is not None:
            x, loss_of, parts = weak.extend(x, loss_fn, rnd)
        net.train()
        loss = loss_of(net(x.to(ctx.device)), y.to(ctx.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": float(loss.detach()), **parts}

    return StageTask(
        "supervised",
        model,
        optimizer,
        step,
        opt.epochs,
        opt.steps_per_epoch,
        candidates=lambda: [("model", model)],
    )
