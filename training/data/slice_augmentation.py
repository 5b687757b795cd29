"""Training-time augmentation of 8-bit 2D slices: random flips, rotation, zoom and
brightness/contrast jitter, one draw per sample.

Unlike ``training.methods.invertible_transforms`` (exact, invertible transforms that TCSM and
contrastive pre-training apply to two views and undo), these transforms are never inverted:
they only make supervised 2D batches more varied, so any angle and zoom is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import overload

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment2D:
    """Light training augmentation; every knob at 0 (or a 1.0 scale range) disables it."""

    #: Probabilities of flipping rows (vertical) and columns (horizontal).
    flip_h_prob: float = 0.5
    flip_w_prob: float = 0.5
    #: Rotation drawn uniformly in ±max_rotation_deg degrees.
    max_rotation_deg: float = 10.0
    #: Isotropic zoom drawn uniformly in [min, max].
    scale_range: tuple[float, float] = (0.9, 1.1)
    #: Additive brightness shift, a fraction of the 0..255 range (±).
    brightness: float = 0.1
    #: Contrast factor drawn in [1 - contrast, 1 + contrast] about each image's mean.
    contrast: float = 0.1

    def __post_init__(self) -> None:
        for name in ("flip_h_prob", "flip_w_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Argument '{name}' must be in [0, 1], got {value}.")
        lo, hi = self.scale_range
        if not 0.0 < lo <= hi:
            raise ValueError(
                "Argument 'scale_range' must be (lo, hi) with 0 < lo <= hi, "
                f"got {self.scale_range}."
            )
        for name in ("max_rotation_deg", "brightness", "contrast"):
            if getattr(self, name) < 0:
                raise ValueError(f"Argument '{name}' must be >= 0, got {getattr(self, name)}.")
        if self.contrast >= 1.0:
            raise ValueError(f"Argument 'contrast' must be < 1, got {self.contrast}.")


@overload
def augment_batch(
    x: torch.Tensor, y: torch.Tensor, augment: Augment2D, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]: ...


@overload
def augment_batch(
    x: torch.Tensor, y: None, augment: Augment2D, generator: torch.Generator
) -> tuple[torch.Tensor, None]: ...


def augment_batch(
    x: torch.Tensor, y: torch.Tensor | None, augment: Augment2D, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random flips, rotation, zoom (one affine per sample) and brightness/contrast jitter.

    Images are resampled bilinearly and labels by nearest neighbour with the same grid; the
    border that comes into view is 0 (black, background), and intensities stay in 0..255.
    """
    n = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)

    flip_h = torch.rand(n, generator=generator) < augment.flip_h_prob
    flip_w = torch.rand(n, generator=generator) < augment.flip_w_prob
    angle = uniform(-augment.max_rotation_deg, augment.max_rotation_deg) * (math.pi / 180.0)
    scale = uniform(*augment.scale_range)
    shift = uniform(-augment.brightness, augment.brightness) * 255.0
    factor = uniform(1.0 - augment.contrast, 1.0 + augment.contrast)

    # The affine maps output coordinates to input ones: zoom by `scale` → sample at 1/scale.
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    sx = torch.where(flip_w, -1.0, 1.0).double()
    sy = torch.where(flip_h, -1.0, 1.0).double()
    # Rotate in pixel units: affine_grid's normalised axes differ in scale when H != W.
    aspect = x.shape[-2] / x.shape[-1]
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1] = cos * sx, -sin * sy * aspect
    theta[:, 1, 0], theta[:, 1, 1] = sin * sx / aspect, cos * sy
    if not bool(
        (angle == 0).all() and (scale == 1).all() and not flip_h.any() and not flip_w.any()
    ):
        grid = F.affine_grid(theta.float(), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if y is not None:
            y = (
                F.grid_sample(
                    y[:, None].float(),
                    grid,
                    mode="nearest",
                    padding_mode="zeros",
                    align_corners=False,
                )[:, 0]
                .round()
                .long()
            )
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    f = factor.float().view(n, 1, 1, 1)
    x = ((x - mean) * f + mean + shift.float().view(n, 1, 1, 1)).clamp(0.0, 255.0)
    return x, y
