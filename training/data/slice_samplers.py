"""Random batches of in-memory 2D slices for training (labeled, or image-only).

Slices are resized to the network's input size with the core resize (``training.nn.resize``) and
keep their raw 0..255 intensities; labeled batches oversample slices that show a lesion.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from training.data.slice_augmentation import Augment2D, augment_batch
from training.data.slice_folders import LoadedSlice
from training.nn.resize import resize_images, resize_labels


def _image_tensor(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """A slice as a (1, H, W) float32 tensor at the network's input size."""
    return resize_images(torch.from_numpy(image.astype(np.float32))[None], size)


def _label_tensor(label: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """A mask as an (H, W) tensor at the network's input size."""
    return resize_labels(torch.from_numpy(label)[None], size)[0]


def _has_foreground(s: LoadedSlice) -> bool:
    return s.label is not None and bool((s.label > 0).any())


class _SliceSampler:
    def __init__(
        self,
        slices: Sequence[LoadedSlice],
        *,
        input_size: tuple[int, int],
        augment: Augment2D | None,
        seed: int,
        weights: np.ndarray | None = None,
    ) -> None:
        if len(input_size) != 2 or min(input_size) < 1:
            raise ValueError(
                f"Argument 'input_size' must be (height, width) >= 1, got {input_size}."
            )
        self.slices = list(slices)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.weights = weights

    def _picks(self, batch_size: int) -> np.ndarray:
        if batch_size < 1:
            raise ValueError(f"Argument 'batch_size' must be at least 1, got {batch_size}.")
        return self.rng.choice(len(self.slices), size=batch_size, p=self.weights)


class LabeledSliceSampler(_SliceSampler):
    """Random labeled batches: (B, 1, H, W) float32 in 0..255 and (B, H, W) int64 labels.

    Slices with any foreground label are drawn ``lesion_oversampling`` times more often.
    ``negatives`` (labeled, lesion-free slices of another kind, e.g. whole DICOM fields of view)
    are drawn uniformly and make up ``negatives_share`` of the draws, however many there are.
    ``augment=None`` (validation) only resizes.
    """

    def __init__(
        self,
        slices: Sequence[LoadedSlice],
        *,
        input_size: tuple[int, int],
        augment: Augment2D | None = None,
        lesion_oversampling: float = 1.0,
        seed: int = 0,
        negatives: Sequence[LoadedSlice] = (),
        negatives_share: float = 0.0,
    ) -> None:
        labeled = [s for s in slices if s.label is not None]
        if not labeled:
            raise ValueError("LabeledSliceSampler needs at least one slice with a mask.")
        if lesion_oversampling <= 0:
            raise ValueError(
                f"Argument 'lesion_oversampling' must be > 0, got {lesion_oversampling}."
            )
        if any(s.label is None for s in negatives):
            raise ValueError("Every slice in 'negatives' needs a mask.")
        if negatives and not 0.0 < negatives_share < 1.0:
            raise ValueError(
                "Argument 'negatives_share' must be in (0, 1) with negatives, "
                f"got {negatives_share}."
            )
        w = np.array([lesion_oversampling if _has_foreground(s) else 1.0 for s in labeled])
        w /= w.sum()
        if negatives:
            share = float(negatives_share)
            w = np.concatenate([w * (1.0 - share), np.full(len(negatives), share / len(negatives))])
        super().__init__(
            labeled + list(negatives), input_size=input_size, augment=augment, seed=seed, weights=w
        )

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for i in self._picks(batch_size):
            image, label = self.slices[i].image, self.slices[i].label
            assert label is not None  # __init__ keeps labeled slices only
            images.append(_image_tensor(image, self.input_size))
            labels.append(_label_tensor(label, self.input_size))
        xb, yb = torch.stack(images), torch.stack(labels)
        if self.augment is not None:
            xb, yb = augment_batch(xb, yb, self.augment, self.generator)
        return xb, yb


class UnlabeledSliceSampler(_SliceSampler):
    """Random image-only batches (B, 1, H, W) float32 in 0..255 for semi-supervised stages.

    Masks, if any, are ignored. Semi-supervised losses usually apply their own transforms, so
    augmentation is off unless given.
    """

    def __init__(
        self,
        slices: Sequence[LoadedSlice],
        *,
        input_size: tuple[int, int],
        augment: Augment2D | None = None,
        seed: int = 0,
    ) -> None:
        if not slices:
            raise ValueError("UnlabeledSliceSampler needs at least one slice.")
        super().__init__(slices, input_size=input_size, augment=augment, seed=seed)

    def sample(self, batch_size: int) -> torch.Tensor:
        xb = torch.stack(
            [_image_tensor(self.slices[i].image, self.input_size) for i in self._picks(batch_size)]
        )
        if self.augment is not None:
            xb, _ = augment_batch(xb, None, self.augment, self.generator)
        return xb
