"""Invertible geometric transforms (rot90, flips, mild isotropic scaling) and noise for TCSM
and contrastive pre-training (not the training-time slice augmentation: ``slice_augmentation``).

TCSM needs the *same* transform T applied to the teacher's input and to the student's output,
so transforms are explicit values (:class:`SpatialTransform`) rather than hidden random state.
``apply`` runs rotation → flips → scaling; ``invert`` undoes them in reverse order.

Rotation and flips are exact index permutations. Scaling resamples about the image centre with
``grid_sample`` and keeps the output size, so zooming in (``scale > 1``) crops the border and
zooming out (``scale < 1``) pads it (``padding_mode``). With nearest sampling and
``scale >= 1`` a round trip ``invert(apply(m))`` is exact inside the region that stays in view.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from service.core.options import Option
from training.config import PaddingMode

__all__ = [
    "InterpolationMode",
    "PaddingMode",
    "SpatialTransform",
    "add_gaussian_noise",
    "apply",
    "invert",
    "sample_transform",
    "sample_transforms",
    "valid_region",
]


class InterpolationMode(Option):
    """Resampling used for the scaling step: bilinear for images/probabilities, nearest masks."""

    BILINEAR = "bilinear"
    NEAREST = "nearest"


@dataclass(frozen=True)
class SpatialTransform:
    """One invertible in-plane transform: rotate by ``k_rot90``·90° (counter-clockwise in the
    (H, W) plane, as ``torch.rot90``), flip rows / columns, then scale about the centre."""

    k_rot90: int = 0
    flip_h: bool = False
    flip_w: bool = False
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.k_rot90, int) or isinstance(self.k_rot90, bool):
            raise TypeError(
                f"Argument 'k_rot90' must be an int, got {type(self.k_rot90).__name__}."
            )
        if (
            not (isinstance(self.scale, int | float) and math.isfinite(self.scale))
            or self.scale <= 0
        ):
            raise ValueError(f"Argument 'scale' must be a finite number > 0, got {self.scale!r}.")

    @property
    def is_identity(self) -> bool:
        return self.k_rot90 % 4 == 0 and not self.flip_h and not self.flip_w and self.scale == 1.0


def sample_transform(
    generator: torch.Generator | None = None,
    max_scale_delta: float = 0.1,
    rotate: bool = True,
    flip: bool = True,
) -> SpatialTransform:
    """Draw a random transform: k ∈ {0..3}, independent flips, scale ∈ [1−δ, 1+δ]."""
    if not 0.0 <= max_scale_delta < 1.0:
        raise ValueError(f"Argument 'max_scale_delta' must be in [0, 1), got {max_scale_delta}.")
    draws = torch.randint(0, 4, (3,), generator=generator).tolist()
    u = float(torch.rand((), generator=generator))
    scale = 1.0 + (2.0 * u - 1.0) * max_scale_delta if max_scale_delta > 0 else 1.0
    return SpatialTransform(
        k_rot90=int(draws[0]) if rotate else 0,
        flip_h=bool(draws[1] % 2) if flip else False,
        flip_w=bool(draws[2] % 2) if flip else False,
        scale=scale,
    )


def sample_transforms(
    n: int, generator: torch.Generator | None = None, max_scale_delta: float = 0.1
) -> list[SpatialTransform]:
    """One independent transform per sample of a batch."""
    if n < 0:
        raise ValueError(f"Argument 'n' must be >= 0, got {n}.")
    return [sample_transform(generator, max_scale_delta) for _ in range(n)]


def _as_list(x: Tensor, t: SpatialTransform | Sequence[SpatialTransform]) -> list[SpatialTransform]:
    if isinstance(t, SpatialTransform):
        return [t] * x.shape[0]
    ts = list(t)
    if len(ts) != x.shape[0]:
        raise ValueError(
            f"Argument 't' has {len(ts)} transforms but the batch has {x.shape[0]} samples; "
            "pass one transform or one per sample."
        )
    for i, ti in enumerate(ts):
        if not isinstance(ti, SpatialTransform):
            raise TypeError(
                f"Argument 't[{i}]' must be a SpatialTransform, got {type(ti).__name__}."
            )
    return ts


def _check_input(x: Tensor) -> tuple[Tensor, bool]:
    """Accept NCHW (or NHW masks, returned as NCHW plus a flag to squeeze back)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"Argument 'x' must be a torch.Tensor, got {type(x).__name__}.")
    if x.ndim == 3:
        return x.unsqueeze(1), True
    if x.ndim != 4:
        raise ValueError(
            f"Argument 'x' has shape {tuple(x.shape)}; expected (N, C, H, W) or (N, H, W)."
        )
    return x, False


def _rot_flip(xi: Tensor, k: int, flip_h: bool, flip_w: bool, inverse: bool) -> Tensor:
    """Rotate/flip one CHW sample; inverse applies flips first, then the opposite rotation."""
    dims_flip = [d for d, f in ((-2, flip_h), (-1, flip_w)) if f]
    if inverse:
        if dims_flip:
            xi = torch.flip(xi, dims_flip)
        return torch.rot90(xi, -k % 4, dims=(-2, -1)) if k % 4 else xi
    if k % 4:
        xi = torch.rot90(xi, k % 4, dims=(-2, -1))
    return torch.flip(xi, dims_flip) if dims_flip else xi


def _scale(
    x: Tensor, factors: Sequence[float], mode: InterpolationMode, padding: PaddingMode
) -> Tensor:
    """Zoom each sample about the centre by its factor (output size unchanged)."""
    if all(f == 1.0 for f in factors):
        return x
    work_dtype = x.dtype if x.is_floating_point() else torch.float32
    inv = torch.tensor([1.0 / f for f in factors], dtype=work_dtype, device=x.device)
    theta = torch.zeros(x.shape[0], 2, 3, dtype=work_dtype, device=x.device)
    theta[:, 0, 0] = inv
    theta[:, 1, 1] = inv
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(
        x.to(work_dtype), grid, mode=mode.value, padding_mode=padding.value, align_corners=False
    )
    return out if x.is_floating_point() else out.round().to(x.dtype)


def _transform(
    x: Tensor,
    t: SpatialTransform | Sequence[SpatialTransform],
    mode: InterpolationMode | str,
    padding_mode: PaddingMode | str,
    inverse: bool,
) -> Tensor:
    x4, squeezed = _check_input(x)
    ts = _as_list(x4, t)
    interp = InterpolationMode.parse(mode, "Argument 'mode'")
    padding = PaddingMode.parse(padding_mode, "Argument 'padding_mode'")
    if not x4.is_floating_point():
        interp = InterpolationMode.NEAREST  # labels must never be blended
    h, w = x4.shape[-2:]
    if h != w and len({ti.k_rot90 % 2 for ti in ts}) > 1:
        raise ValueError(
            f"Argument 't' mixes odd and even rotations on non-square images ({h}x{w}); "
            "the outputs would not share a shape."
        )
    factors = [ti.scale for ti in ts]
    if inverse:
        x4 = _scale(x4, [1.0 / f for f in factors], interp, padding)
    if any(not (ti.k_rot90 % 4 == 0 and not ti.flip_h and not ti.flip_w) for ti in ts):
        x4 = torch.stack(
            [_rot_flip(x4[i], ti.k_rot90, ti.flip_h, ti.flip_w, inverse) for i, ti in enumerate(ts)]
        )
    if not inverse:
        x4 = _scale(x4, factors, interp, padding)
    return x4[:, 0] if squeezed else x4


def apply(
    x: Tensor,
    t: SpatialTransform | Sequence[SpatialTransform],
    mode: InterpolationMode | str = InterpolationMode.BILINEAR,
    padding_mode: PaddingMode | str = PaddingMode.ZEROS,
) -> Tensor:
    """Apply T (one for the batch, or one per sample) to ``x`` of shape NCHW (or NHW masks).

    Integer tensors are always resampled with nearest neighbour and keep their dtype.
    """
    return _transform(x, t, mode, padding_mode, inverse=False)


def invert(
    x: Tensor,
    t: SpatialTransform | Sequence[SpatialTransform],
    mode: InterpolationMode | str = InterpolationMode.BILINEAR,
    padding_mode: PaddingMode | str = PaddingMode.ZEROS,
) -> Tensor:
    """Apply T⁻¹: undo the scaling, then the flips, then the rotation."""
    return _transform(x, t, mode, padding_mode, inverse=True)


def valid_region(
    t: SpatialTransform | Sequence[SpatialTransform],
    shape: Sequence[int],
    device: torch.device | None = None,
) -> Tensor:
    """Mask ``(N, 1, H, W)`` of output pixels of ``apply`` that come from inside the input.

    Zooming out pads a border that has no counterpart in the source image; losses comparing
    ``T(f(x))`` with ``f(T(x))`` should ignore it.
    """
    if len(shape) != 4:
        raise ValueError(f"Argument 'shape' must be (N, C, H, W), got {tuple(shape)}.")
    n, _, h, w = (int(s) for s in shape)
    ones = torch.ones(n, 1, h, w, device=device)
    return apply(ones, t, mode=InterpolationMode.NEAREST, padding_mode=PaddingMode.ZEROS)


def add_gaussian_noise(x: Tensor, std: float, generator: torch.Generator | None = None) -> Tensor:
    """``x + N(0, std²)``; noise is drawn on the generator's device, then moved to ``x``."""
    if std < 0:
        raise ValueError(f"Argument 'std' must be >= 0, got {std}.")
    if std == 0:
        return x
    gen_device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.randn(x.shape, generator=generator, device=gen_device, dtype=x.dtype)
    return x + std * noise.to(x.device)
