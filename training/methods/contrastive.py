"""Contrastive pre-training blocks (Chaitanya et al., NeurIPS 2020) for a 2D U-Net.

* Global: NT-Xent on projections of encoder features pooled after the deepest stage (the
  "AVG layer"); optionally slices from the same relative partition of different volumes are
  positives too (strategy G^D), giving a multi-positive loss averaged over the positives.
* Local: the decoder's *feature maps* of two views are compared region by region; the same
  region in the other view is the positive, every other region (same image or others in the
  batch, either view) a negative. The encoder is frozen during this stage.

The network helpers target MONAI's ``BasicUNet`` (attributes ``conv_0``, ``down_1..down_4``,
``upcat_4..upcat_1``, ``final_conv``) but are duck-typed: any module with those attributes
works, and :class:`GlobalContrastiveModel` also takes an arbitrary encoder module. The
stages that train with these blocks are in ``training.stages.pretrain``.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.config import DecoderStage

__all__ = [
    "BasicUNetFeatures",
    "GlobalContrastiveModel",
    "LocalContrastiveModel",
    "ProjectionHead",
    "freeze_encoder",
    "local_contrastive_loss",
    "nt_xent_loss",
    "partition_ids_for",
    "unfreeze_encoder",
]

logger = logging.getLogger(__name__)

ENCODER_STAGES: tuple[str, ...] = ("conv_0", "down_1", "down_2", "down_3", "down_4")
#: The decoder blocks' attribute names, deepest first (the stages the local loss can use).
DECODER_STAGES: tuple[str, ...] = tuple(stage.value for stage in DecoderStage)


# --------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------


def nt_xent_loss(
    z1: Tensor, z2: Tensor, temperature: float = 0.1, partition_ids: Tensor | None = None
) -> Tensor:
    """SimCLR NT-Xent on L2-normalised projections of two views ``(N, D)`` each.

    For anchor ``i`` among the ``2N`` vectors, with ``s = cos / τ`` and positives ``P(i)``:
    ``ℓ_i = −1/|P(i)| Σ_{p∈P(i)} log(exp(s_ip) / Σ_{a≠i} exp(s_ia))``; the loss is the mean
    over anchors. Without ``partition_ids`` ``P(i)`` is the other view of the same sample;
    with them it is every other vector whose sample has the same partition id (G^D).
    """
    for name, z in (("z1", z1), ("z2", z2)):
        if not isinstance(z, Tensor):
            raise TypeError(f"Argument '{name}' must be a torch.Tensor, got {type(z).__name__}.")
        if z.ndim != 2 or z.shape[0] < 1:
            raise ValueError(
                f"Argument '{name}' has shape {tuple(z.shape)}; expected (N, D), N >= 1."
            )
    if z1.shape != z2.shape:
        raise ValueError(
            f"Arguments 'z1' {tuple(z1.shape)} and 'z2' {tuple(z2.shape)} must have the same shape."
        )
    if temperature <= 0:
        raise ValueError(f"Argument 'temperature' must be > 0, got {temperature}.")
    n = z1.shape[0]
    if partition_ids is None:
        ids = torch.arange(n, device=z1.device)
    else:
        ids = torch.as_tensor(partition_ids, device=z1.device).flatten()
        if ids.numel() != n:
            raise ValueError(
                f"Argument 'partition_ids' has {ids.numel()} entries; "
                f"expected one per sample ({n})."
            )
    labels = torch.cat([ids, ids])
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.t() / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    per_anchor = -log_prob.masked_fill(~positives, 0.0).sum(1) / positives.sum(1)
    return per_anchor.mean()


def local_contrastive_loss(
    f1: Tensor,
    f2: Tensor,
    num_regions: int = 13,
    region_size: int = 3,
    temperature: float = 0.1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Local contrastive loss on two spatially aligned feature maps ``(N, C, H, W)``.

    The maps are cut into non-overlapping ``region_size``² cells; ``num_regions`` distinct cells
    are drawn per image (the same cells in both views), each average-pooled to a vector, and
    NT-Xent is applied with the same cell of the other view as positive. Views must share
    geometry: use intensity-only augmentations, or map the second view back with
    ``training.methods.invertible_transforms.invert`` before calling this.
    """
    if not isinstance(f1, Tensor) or not isinstance(f2, Tensor):
        raise TypeError("Arguments 'f1' and 'f2' must be torch.Tensor feature maps.")
    if f1.ndim != 4 or f1.shape != f2.shape:
        raise ValueError(
            f"Arguments 'f1' {tuple(f1.shape)} and 'f2' {tuple(f2.shape)} must both be "
            "(N, C, H, W) of the same shape."
        )
    if region_size < 1:
        raise ValueError(f"Argument 'region_size' must be >= 1, got {region_size}.")
    n, c, h, w = f1.shape
    gh, gw = h // region_size, w // region_size
    cells = gh * gw
    if num_regions < 1 or num_regions > cells:
        raise ValueError(
            f"Argument 'num_regions' is {num_regions}; a {h}x{w} map holds {cells} regions of "
            f"{region_size}x{region_size}, so expected 1..{cells}."
        )
    pooled1 = F.avg_pool2d(f1, region_size, stride=region_size).flatten(2)  # (N, C, cells)
    pooled2 = F.avg_pool2d(f2, region_size, stride=region_size).flatten(2)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    order = torch.rand(n, cells, generator=generator, device=gen_device).argsort(dim=1)
    idx = order[:, :num_regions].to(f1.device)[:, None, :].expand(n, c, num_regions)
    v1 = pooled1.gather(2, idx).transpose(1, 2).reshape(n * num_regions, c)
    v2 = pooled2.gather(2, idx).transpose(1, 2).reshape(n * num_regions, c)
    return nt_xent_loss(v1, v2, temperature)


def partition_ids_for(
    slice_index: int | Tensor, num_slices: int | Tensor, partitions: int = 4
) -> int | Tensor:
    """Relative partition ``⌊index·P / num_slices⌋`` of a slice within its volume (G^D)."""
    if partitions < 1:
        raise ValueError(f"Argument 'partitions' must be >= 1, got {partitions}.")
    idx = torch.as_tensor(slice_index)
    total = torch.as_tensor(num_slices)
    if idx.is_floating_point() or total.is_floating_point():
        raise TypeError("Arguments 'slice_index' and 'num_slices' must be integers.")
    if (total < 1).any():
        raise ValueError(f"Argument 'num_slices' must be >= 1, got {num_slices}.")
    if (idx < 0).any() or (idx >= total).any():
        raise ValueError(
            f"Argument 'slice_index' ({slice_index}) must lie in [0, num_slices) ({num_slices})."
        )
    part = torch.clamp(idx * partitions // total, max=partitions - 1)
    if isinstance(slice_index, Tensor) or isinstance(num_slices, Tensor):
        return part
    return int(part)


# --------------------------------------------------------------------------------------------
# network helpers
# --------------------------------------------------------------------------------------------


def _is_basic_unet(module: nn.Module) -> bool:
    return all(hasattr(module, a) for a in (*ENCODER_STAGES, *DECODER_STAGES))


def _require_basic_unet(module: nn.Module) -> None:
    if not isinstance(module, nn.Module):
        raise TypeError(f"Argument 'unet' must be a torch.nn.Module, got {type(module).__name__}.")
    missing = [a for a in (*ENCODER_STAGES, *DECODER_STAGES) if not hasattr(module, a)]
    if missing:
        raise TypeError(f"Argument 'unet' is not a BasicUNet-like module; it lacks {missing}.")


def _out_channels(module: nn.Module) -> int:
    """Output channels of a stage = those of its last convolution."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    if not convs:
        raise ValueError(f"Cannot infer output channels of {type(module).__name__}: no Conv2d.")
    return int(convs[-1].out_channels)


class BasicUNetFeatures(nn.Module):
    """Exposes a BasicUNet's intermediate features (shares, never copies, its weights)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        _require_basic_unet(unet)
        self.unet = unet

    @property
    def encoder_channels(self) -> int:
        return _out_channels(self.unet.get_submodule("down_4"))

    def stage_channels(self, stage: DecoderStage | str) -> int:
        return _out_channels(
            getattr(self.unet, DecoderStage.parse(stage, "Argument 'stage'").value)
        )

    def encoder_frozen(self) -> bool:
        params = [p for s in ENCODER_STAGES for p in getattr(self.unet, s).parameters()]
        return bool(params) and not any(p.requires_grad for p in params)

    def encode(self, x: Tensor) -> list[Tensor]:
        """Skip features ``[x0, x1, x2, x3, x4]``; ``x4`` is the deepest (after ``down_4``)."""
        feats = [self.unet.get_submodule("conv_0")(x)]
        for name in ENCODER_STAGES[1:]:
            feats.append(getattr(self.unet, name)(feats[-1]))
        return feats

    def forward(self, x: Tensor) -> Tensor:
        """Deepest encoder feature map ``(N, f4, H/16, W/16)``."""
        return self.encode(x)[-1]

    def decoder_features(
        self, x: Tensor, stage: DecoderStage | str = DecoderStage.UPCAT_2
    ) -> Tensor:
        """Decoder feature map after ``stage``; a frozen encoder runs without autograd."""
        stop = DecoderStage.parse(stage, "Argument 'stage'").value
        if self.encoder_frozen():
            with torch.no_grad():
                x0, x1, x2, x3, x4 = self.encode(x)
        else:
            x0, x1, x2, x3, x4 = self.encode(x)
        u = x4
        for name, skip in zip(DECODER_STAGES, (x3, x2, x1, x0), strict=True):
            u = getattr(self.unet, name)(u, skip)
            if name == stop:
                break
        return u


def _set_encoder_grad(unet: nn.Module, flag: bool) -> int:
    _require_basic_unet(unet)
    count = 0
    for name in ENCODER_STAGES:
        for p in getattr(unet, name).parameters():
            p.requires_grad_(flag)
            count += 1
    return count


def freeze_encoder(unet: nn.Module) -> int:
    """Stop gradients to ``conv_0``/``down_1..down_4``; returns the number of tensors frozen.

    Build the optimizer after freezing (or filter on ``requires_grad``) so weight decay does
    not move frozen weights.
    """
    return _set_encoder_grad(unet, False)


def unfreeze_encoder(unet: nn.Module) -> int:
    """Undo :func:`freeze_encoder`; returns the number of tensors unfrozen."""
    return _set_encoder_grad(unet, True)


class ProjectionHead(nn.Module):
    """Two-layer MLP ``in → hidden → out`` used only during pre-training (then discarded)."""

    def __init__(self, in_dim: int, out_dim: int = 128, hidden_dim: int | None = None):
        super().__init__()
        for name, val in (("in_dim", in_dim), ("out_dim", out_dim)):
            if val < 1:
                raise ValueError(f"Argument '{name}' must be >= 1, got {val}.")
        hidden = hidden_dim if hidden_dim is not None else max(in_dim, out_dim)
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class GlobalContrastiveModel(nn.Module):
    """x → encoder (deepest stage) → global average pool ("AVG layer") → projection.

    ``encoder`` is a BasicUNet (its encoder path is used) or any module mapping x to a
    feature map ``(N, C, ...)``; for the latter pass ``feature_dim=C``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        proj_dim: int = 128,
        hidden_dim: int | None = None,
        feature_dim: int | None = None,
    ):
        super().__init__()
        if not isinstance(encoder, nn.Module):
            raise TypeError(
                f"Argument 'encoder' must be a torch.nn.Module, got {type(encoder).__name__}."
            )
        if _is_basic_unet(encoder):
            features = BasicUNetFeatures(encoder)
            self.encoder: nn.Module = features
            dim = feature_dim if feature_dim is not None else features.encoder_channels
        else:
            if feature_dim is None:
                raise ValueError("Argument 'feature_dim' is required for a non-BasicUNet encoder.")
            self.encoder = encoder
            dim = feature_dim
        self.head = ProjectionHead(dim, proj_dim, hidden_dim)

    def pooled(self, x: Tensor) -> Tensor:
        """The AVG-layer representation ``(N, C)``."""
        feats = self.encoder(x)
        return feats.flatten(2).mean(dim=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pooled(x))


class LocalContrastiveModel(nn.Module):
    """x → BasicUNet encoder + decoder up to ``decoder_stage`` → 1×1-conv projection map.

    Call :func:`freeze_encoder` on the U-Net for the local stage; the encoder then runs
    without autograd and only the decoder stages and the head are trained.
    """

    def __init__(
        self,
        unet: nn.Module,
        decoder_stage: DecoderStage | str = DecoderStage.UPCAT_2,
        proj_channels: int = 64,
    ):
        super().__init__()
        if proj_channels < 1:
            raise ValueError(f"Argument 'proj_channels' must be >= 1, got {proj_channels}.")
        self.features = BasicUNetFeatures(unet)
        self.stage = DecoderStage.parse(decoder_stage, "Argument 'decoder_stage'")
        ch = self.features.stage_channels(self.stage)
        self.head = nn.Sequential(
            nn.Conv2d(ch, ch, kernel_size=1), nn.ReLU(inplace=True), nn.Conv2d(ch, proj_channels, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features.decoder_features(x, self.stage))
