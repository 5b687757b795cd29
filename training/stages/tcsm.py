"""The TCSM stage: the method of ``training.methods.tcsm`` wired to the run's data and loop.

``training.methods.tcsm`` holds the method (EMA teacher, consistency loss, one training step,
its settings read from the ``tcsm`` config section) and knows nothing of data sources or
checkpoints; this module builds the stage's :class:`~training.stages.task.StageTask` from them.
Each step the student gets the supervised loss on a labeled batch and, on labeled and unlabeled
slices alike, the transformation-consistency term against the EMA teacher
(:func:`training.methods.tcsm.tcsm_train_step`).

Which weights become the model: both the student and the teacher are validated every epoch,
and ``best.pt`` holds whichever scored the higher mean VolDice at the best epoch (the teacher
on ties; ``model_source`` in the checkpoint says which). The teacher is usually the better and
steadier of the two, but early in training, while the EMA still lags a fast-improving student,
the student can be ahead; choosing by validation costs one extra validation pass per epoch.
``last.pt`` holds the student plus the teacher (under ``extra``) so a run resumes exactly.

Diagnostics (why consistency does or does not help): every step reports the supervised term,
the consistency term before and after its ramp-up weight (``consistency``,
``weighted_consistency``), and on the unlabeled slices the teacher/student argmax agreement,
their mean max-probability and the teacher's foreground fraction
(:func:`training.methods.tcsm.teacher_student_diagnostics`); TensorBoard gets them every step
(``runtime.tensorboard``), the log and ``steps.jsonl`` every ``runtime.log_every_steps``, and
``metrics.jsonl`` their epoch means. Teacher and student are both validated each epoch
(``val_voldice_teacher`` / ``val_voldice_student`` and ``val_<label>/<class>`` in TensorBoard).
Ablation knobs (``tcsm.*``): ``consistency_weight``, ``rampup_steps``, ``ema_decay``,
perturbation strength (``noise_std_hu``, ``max_scale_delta``), ``consistency_target``
(probabilities or logits) and ``consistency_on_labeled`` (False: unlabeled slices only).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from training.config import TrainConfig
from training.data.sources import ImageBatches, Item, data_source
from training.distributed import DistContext
from training.methods.tcsm import EMATeacher, tcsm_train_step
from training.nn.losses import build_supervised_loss
from training.nn.networks import SegmentationNet
from training.stages.task import AutocastForward, StageTask, StepRandom, trainable
from training.stages.weak_term import LossFn, weak_term

log = logging.getLogger(__name__)


class LinkedTeacher(EMATeacher):
    """An EMA teacher that always follows one given network.

    ``tcsm_train_step`` hands the teacher the module it trained, which here is a wrapper
    (bf16 autocast, DDP) whose parameter names carry prefixes; the EMA must read the plain
    network underneath.
    """

    def __init__(self, student: nn.Module, decay: float) -> None:
        super().__init__(student, decay)
        self._source = [student]  # a list, so the student is not registered as a submodule

    def update(self, student: nn.Module, step: int) -> float:
        return super().update(self._source[0], step)


def build_tcsm_task(
    config: TrainConfig,
    model: SegmentationNet,
    labeled: Sequence[Item],
    unlabeled: Sequence[Item],
    ctx: DistContext,
) -> StageTask:
    """Student = ``model`` (wrapped for autocast/DDP); teacher = an EMA copy of it."""
    cfg = config.tcsm
    source = data_source(config)
    sup_sampler = source.labeled_batches(labeled)
    weak = weak_term(config, source)
    unl_sampler: ImageBatches | None = None
    if unlabeled and cfg.unlabeled_batch_size > 0:
        unl_sampler = source.image_batches(unlabeled)
    else:
        log.info("tcsm: no unlabeled data; consistency uses the labeled slices only")
    net = ctx.wrap(AutocastForward(model, config.optim.bf16, ctx.device.type))
    teacher = LinkedTeacher(model, cfg.ema_decay)  # after wrap: DDP synced the weights
    loss_fn = build_supervised_loss(cfg.loss)
    optimizer = torch.optim.AdamW(trainable(model), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def step(index: int, rnd: StepRandom) -> dict[str, float]:
        x, y = sup_sampler.sample(cfg.batch_size, rnd.numpy, rnd.torch)
        loss_of: LossFn = loss_fn
        parts: dict[str, float] = {}
        if weak is not None:  # weak slices ride along with the labeled ones
            x, loss_of, parts = weak.extend(x, loss_fn, rnd)
        x_u: Tensor | None = None
        if unl_sampler is not None:
            batch = unl_sampler.sample(cfg.unlabeled_batch_size, rnd.numpy, rnd.torch)
            x_u = batch.x.to(ctx.device)
        result = tcsm_train_step(
            net,
            teacher,
            optimizer,
            (x.to(ctx.device), y.to(ctx.device)),
            x_u,
            loss_of,
            index,
            cfg,
            generator=rnd.torch,
        )
        return {**result, **parts}

    return StageTask(
        "tcsm",
        model,
        optimizer,
        step,
        cfg.epochs,
        cfg.steps_per_epoch,
        extra={"teacher": teacher.model},
        candidates=lambda: [("teacher", teacher.model), ("student", model)],
    )
