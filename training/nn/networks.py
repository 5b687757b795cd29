"""The 2.5D segmentation network and the intensity preprocessing baked into it.

The HU window lives *inside* the model (:class:`HUWindow`), so training and the exported ONNX
graph share one implementation and the service feeds raw Hounsfield units.
"""

from __future__ import annotations

import torch
from monai.networks.nets import BasicUNet
from torch import nn

from training.config import ModelConfig


class HUWindow(nn.Module):
    """Clip Hounsfield units to [lo, hi] and scale to [0, 1]."""

    lo: torch.Tensor
    hi: torch.Tensor

    def __init__(self, lo: float, hi: float) -> None:
        super().__init__()
        if not lo < hi:
            raise ValueError(f"HU window must satisfy lo < hi, got ({lo}, {hi}).")
        self.register_buffer("lo", torch.tensor(float(lo)), persistent=False)
        self.register_buffer("hi", torch.tensor(float(hi)), persistent=False)

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        return (hu.clamp(self.lo, self.hi) - self.lo) / (self.hi - self.lo)


class PerImageStandardize(nn.Module):
    """Zero mean, unit variance per sample (over its channels and pixels).

    For inputs whose display window varies between sources (8-bit slices exported with
    different lung windows), this removes the linear part of the difference inside the graph,
    so the service needs no extra preprocessing.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        var = ((x - mean) ** 2).mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps)


class SegmentationNet(nn.Module):
    """HU window + 2D BasicUNet over ``slice_context`` adjacent slices; returns logits.

    ``unet`` is exposed so contrastive pre-training can reach the encoder and decoder.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.window = HUWindow(*config.hu_window)
        standardize = PerImageStandardize() if config.standardize_input else nn.Identity()
        #: Everything between raw input and the U-Net; contrastive stages reuse it.
        self.preprocess = nn.Sequential(self.window, standardize)
        self.unet = BasicUNet(
            spatial_dims=2,
            in_channels=config.slice_context,
            out_channels=config.num_classes,
            features=config.features,
            dropout=config.dropout,
        )

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        return self.unet(self.preprocess(hu))


class SegmentationEnsemble(nn.Module):
    """Several trained networks as one: the log of their mean softmax.

    Returning log-probabilities keeps the output contract of a single network (softmax of the
    output is the ensemble's probability, argmax its label), so the service needs no change.
    Members must share their preprocessing (HU window, standardisation); it runs once.
    """

    def __init__(self, members: list[SegmentationNet], eps: float = 1e-6) -> None:
        super().__init__()
        if not members:
            raise ValueError("An ensemble needs at least one member network.")
        self.preprocess = members[0].preprocess
        self.unets = nn.ModuleList(m.unet for m in members)
        self.eps = eps

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(hu)
        probs = torch.stack([torch.softmax(unet(x), dim=1) for unet in self.unets]).mean(dim=0)
        return torch.log(probs.clamp_min(self.eps))


def build_network(config: ModelConfig) -> SegmentationNet:
    """Build the network described by ``config`` (weights freshly initialised)."""
    if config.num_classes != len(config.class_names):
        raise ValueError(
            f"model.num_classes ({config.num_classes}) must equal the number of "
            f"model.class_names ({len(config.class_names)})."
        )
    return SegmentationNet(config)
