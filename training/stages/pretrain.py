"""Contrastive pre-training stages (Chaitanya et al. 2020) on ``training.methods.contrastive``.

* ``pretrain_global``: two augmented views (intensity + rot90/flip/scale) of every slice go
  through the encoder; NT-Xent on the projected "AVG layer" features, optionally with slices
  of the same relative partition of their volume as extra positives (G^D).
* ``pretrain_local``: the encoder is frozen; the decoder's feature maps of two views that share
  geometry (intensity-only augmentation, or rot90/flip undone on the feature map) are compared
  region by region.

Both use images only, from every training-side study or slice (labeled or not; batches come
from ``training.data.sources``, so 3D studies and 2D slice folders alike). Validation items are
left out on purpose so the validation score of later stages stays an unseen-data number. 2D
slices carry no position within a volume, so G^D falls back to plain SimCLR positives there.
Projection heads are checkpointed with their stage (for resuming) and dropped afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from training.config import TrainConfig
from training.data.sources import ImageBatch, Item, data_source
from training.distributed import DistContext
from training.methods.contrastive import (
    DECODER_STAGES,
    ENCODER_STAGES,
    GlobalContrastiveModel,
    LocalContrastiveModel,
    local_contrastive_loss,
    nt_xent_loss,
    partition_ids_for,
)
from training.methods.invertible_transforms import (
    PaddingMode,
    SpatialTransform,
    apply,
    invert,
    sample_transform,
)
from training.nn.networks import SegmentationNet
from training.stages.task import AutocastForward, StageTask, StepRandom, trainable

log = logging.getLogger(__name__)


def intensity_augment(
    x: Tensor, gen: torch.Generator, contrast: float, brightness_hu: float, noise_hu: float
) -> Tensor:
    """Per-sample contrast about the slice mean, brightness shift and Gaussian noise, in HU."""
    n = x.shape[0]
    scale = 1.0 + contrast * (2.0 * torch.rand(n, 1, 1, 1, generator=gen) - 1.0)
    shift = brightness_hu * (2.0 * torch.rand(n, 1, 1, 1, generator=gen) - 1.0)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    out = (x - mean) * scale + mean + shift
    if noise_hu > 0:
        out = out + noise_hu * torch.randn(x.shape, generator=gen)
    return out


def _geometric_views(x: Tensor, gen: torch.Generator, max_scale_delta: float) -> Tensor:
    transforms = [sample_transform(gen, max_scale_delta) for _ in range(x.shape[0])]
    return apply(x, transforms, padding_mode=PaddingMode.BORDER)


def _partition_ids(batch: ImageBatch, partitions: int) -> Tensor:
    """The G^D partition of each slice of ``batch``, from its position within its volume."""
    if batch.position is None or batch.depth is None:
        raise ValueError(
            "G^D positives need each slice's position and its volume's depth; this batch has none."
        )
    return torch.as_tensor(partition_ids_for(batch.position, batch.depth, partitions))


def _train_only(model: SegmentationNet, stages: tuple[str, ...]) -> None:
    """Freeze the whole network except the named BasicUNet stages.

    Parts the loss never reaches must not require gradients, or DDP waits for them forever.
    """
    model.requires_grad_(False)
    for name in stages:
        getattr(model.unet, name).requires_grad_(True)


def build_global_task(
    config: TrainConfig, model: SegmentationNet, studies: Sequence[Item], ctx: DistContext
) -> StageTask:
    """Encoder + projection head trained with NT-Xent on two views per slice."""
    cfg = config.pretrain_global
    sampler = data_source(config).image_batches(studies)
    use_partitions = cfg.partition_positives and sampler.knows_positions
    if cfg.partition_positives and not use_partitions:
        log.info("pretrain_global: slice positions unknown for this data; G^D positives off")
    _train_only(model, ENCODER_STAGES)
    contrastive = GlobalContrastiveModel(model.unet, proj_dim=cfg.proj_dim).to(ctx.device)
    net = ctx.wrap(
        AutocastForward(
            nn.Sequential(model.preprocess, contrastive), config.optim.bf16, ctx.device.type
        )
    )
    params = trainable(model) + list(contrastive.head.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def step(_: int, rnd: StepRandom) -> dict[str, float]:
        batch = sampler.sample(cfg.batch_size, rnd.numpy, rnd.torch)
        x = batch.x
        views = []
        for _view in range(2):
            v = intensity_augment(
                x, rnd.torch, cfg.contrast_jitter, cfg.brightness_jitter_hu, cfg.noise_std_hu
            )
            views.append(_geometric_views(v, rnd.torch, cfg.max_scale_delta))
        ids = _partition_ids(batch, cfg.partitions) if use_partitions else None
        net.train()
        z1, z2 = net(torch.cat(views).to(ctx.device)).chunk(2)
        loss = nt_xent_loss(z1, z2, cfg.temperature, partition_ids=ids)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": float(loss.detach())}

    return StageTask(
        "pretrain_global",
        model,
        optimizer,
        step,
        cfg.epochs,
        cfg.steps_per_epoch,
        extra={"head": contrastive.head},
    )


def _check_regions(config: TrainConfig, stage: str) -> None:
    """Fail before training if the chosen decoder map cannot hold ``num_regions`` cells."""
    cfg = config.pretrain_local
    level = DECODER_STAGES.index(stage)
    factor = 2 ** (3 - level)  # upcat_4 is at 1/8 of the input, upcat_1 at full size
    h, w = (s // factor for s in config.model.input_size)
    cells = (h // cfg.region_size) * (w // cfg.region_size)
    if cfg.num_regions > cells:
        raise ValueError(
            f"Config key 'pretrain_local.num_regions' is {cfg.num_regions}, but the {h}x{w} "
            f"'{stage}' map of a {config.model.input_size} input holds only {cells} "
            f"regions of {cfg.region_size}x{cfg.region_size}; use fewer or smaller regions, or "
            "a finer decoder stage."
        )


def build_local_task(
    config: TrainConfig, model: SegmentationNet, studies: Sequence[Item], ctx: DistContext
) -> StageTask:
    """Decoder (up to ``decoder_stage``) + 1x1 head trained with the local contrastive loss."""
    cfg = config.pretrain_local
    sampler = data_source(config).image_batches(studies)
    contrastive = LocalContrastiveModel(model.unet, cfg.decoder_stage, cfg.proj_channels)
    _check_regions(config, contrastive.stage.value)
    stop = DECODER_STAGES.index(contrastive.stage.value)
    _train_only(model, DECODER_STAGES[: stop + 1])  # encoder frozen: it runs without autograd
    contrastive.to(ctx.device)
    net = ctx.wrap(
        AutocastForward(
            nn.Sequential(model.preprocess, contrastive), config.optim.bf16, ctx.device.type
        )
    )
    params = trainable(model) + list(contrastive.head.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def step(_: int, rnd: StepRandom) -> dict[str, float]:
        x = sampler.sample(cfg.batch_size, rnd.numpy, rnd.torch).x
        v1, v2 = (
            intensity_augment(
                x, rnd.torch, cfg.contrast_jitter, cfg.brightness_jitter_hu, cfg.noise_std_hu
            )
            for _view in range(2)
        )
        transforms: list[SpatialTransform] = []
        if cfg.geometric:  # rot90/flip only: exactly invertible, so regions stay aligned
            transforms = [sample_transform(rnd.torch, 0.0) for _ in range(x.shape[0])]
            v2 = apply(v2, transforms)
        net.train()
        f1, f2 = net(torch.cat([v1, v2]).to(ctx.device)).chunk(2)
        if transforms:
            f2 = invert(f2, transforms)
        loss = local_contrastive_loss(
            f1, f2, cfg.num_regions, cfg.region_size, cfg.temperature, generator=rnd.torch
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": float(loss.detach())}

    return StageTask(
        "pretrain_local",
        model,
        optimizer,
        step,
        cfg.epochs,
        cfg.steps_per_epoch,
        extra={"head": contrastive.head},
    )
