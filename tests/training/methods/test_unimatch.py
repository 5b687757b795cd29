"""Tests for training.methods.unimatch and the unimatch stage: gradient flow of the unlabeled term,
confidence thresholding, perturbations, and a staged 2D run that checkpoints, resumes and
exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.slice_images import write_image, write_palette_mask
from training.config import ModelConfig, UniMatchStageConfig, config_from_dict
from training.experiment import run_experiment
from training.export.onnx_export import export_onnx
from training.methods.unimatch import (
    UniMatchNet,
    cutmix_boxes,
    intensity_perturbation,
    pseudo_label_loss,
    unimatch_train_step,
    weak_view,
)
from training.nn.losses import build_supervised_loss
from training.nn.networks import build_network

CLASSES = ["background", "ggo", "consolidation"]
PIXELS = (0.0, 255.0)  # the input range of the 8-bit slices these tests feed
LEVELS = (30, 130, 220)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(
        ModelConfig(
            slice_context=1,
            features=(4, 4, 8, 8, 16, 4),
            num_classes=3,
            class_names=tuple(CLASSES),
            hu_window=(0.0, 255.0),
            input_size=(32, 32),
        )
    )


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed)) * 255


def test_pseudo_label_loss_ignores_unconfident_pixels() -> None:
    logits = torch.zeros(1, 3, 2, 2, requires_grad=True)
    pseudo = torch.tensor([[[1, 2], [0, 1]]])
    confidence = torch.tensor([[[0.99, 0.5], [0.96, 0.2]]])
    loss = pseudo_label_loss(logits, pseudo, confidence, threshold=0.95)
    loss.backward()
    ce = float(torch.log(torch.tensor(3.0)))  # uniform logits: CE = log 3 per pixel
    assert loss.item() == pytest.approx(2 * ce / 4)  # two confident pixels, mean over all four
    grad = logits.grad[0].abs().sum(dim=0)
    assert grad[0, 0] > 0 and grad[1, 0] > 0  # confident pixels train
    assert grad[0, 1] == 0 and grad[1, 1] == 0  # unconfident ones give no gradient
    none = pseudo_label_loss(logits, pseudo, confidence, threshold=1.0)
    assert none.item() == 0.0


def test_unlabeled_loss_alone_trains_the_model() -> None:
    model = _model()
    net = UniMatchNet(model, dropout=0.5)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = UniMatchStageConfig(confidence_threshold=0.0)  # every pixel counts
    parts = unimatch_train_step(
        net,
        opt,
        None,
        _images(3, 1),
        build_supervised_loss("dice_ce"),
        0,
        cfg,
        torch.Generator().manual_seed(0),
        value_range=PIXELS,
    )
    assert parts["supervised"] == 0.0 and parts["unlabeled"] > 0
    assert parts["confident_fraction"] == 1.0
    assert {"strong1", "strong2", "feature_perturbed", "confidence"} <= parts.keys()
    # Every convolution kernel got a gradient from the unlabeled term (biases ahead of an
    # instance norm get none, whatever the loss).
    changed = [
        not torch.equal(a, b)
        for a, b in zip(before, model.parameters(), strict=True)
        if a.ndim == 4
    ]
    assert changed and all(changed)


def test_a_threshold_nothing_reaches_leaves_only_the_supervised_loss() -> None:
    model = _model()
    net = UniMatchNet(model, dropout=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x, y = _images(2, 2), torch.randint(0, 3, (2, 32, 32))
    parts = unimatch_train_step(
        net,
        opt,
        (x, y),
        _images(2, 3),
        build_supervised_loss("dice_ce"),
        0,
        UniMatchStageConfig(confidence_threshold=1.0),
        torch.Generator().manual_seed(0),
        value_range=PIXELS,
    )
    assert parts["confident_fraction"] == 0.0
    assert parts["unlabeled"] == 0.0 and parts["loss"] == pytest.approx(parts["supervised"])


def test_feature_perturbation_changes_only_the_perturbed_rows() -> None:
    net = UniMatchNet(_model(), dropout=0.5)
    x = _images(3, 4)
    torch.manual_seed(0)
    clean, fp = net(x, (1, 3))
    assert fp is not None and fp.shape == (2, 3, 32, 32)
    assert torch.allclose(clean, net(x)[0], atol=1e-5)  # the clean rows are the plain output
    assert not torch.allclose(fp, clean[1:3])
    assert torch.allclose(UniMatchNet(_model(), 0.5)(x)[0], _model()(x), atol=1e-5)
    with pytest.raises(TypeError, match="needs a SegmentationNet"):
        UniMatchNet(torch.nn.Conv2d(1, 3, 1), 0.5)


def test_strong_perturbations_stay_in_range_and_cutmix_boxes_have_their_area() -> None:
    g = torch.Generator().manual_seed(5)
    x = _images(6, 5)
    cfg = UniMatchStageConfig(intensity_prob=1.0, blur_prob=1.0, noise_prob=1.0)
    y = intensity_perturbation(x, cfg, PIXELS, g)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 255
    assert not torch.allclose(x, y)
    boxes = cutmix_boxes(200, (40, 40), 0.5, (0.02, 0.4), g)
    used = boxes.flatten(1).any(dim=1)
    assert 60 < int(used.sum()) < 140  # about half
    frac = boxes.flatten(1).float().mean(dim=1)[used]
    assert frac.min() >= 0.01 and frac.max() <= 0.45
    assert not cutmix_boxes(4, (8, 8), 0.0, (0.1, 0.2), g).any()
    w = weak_view(x, 0.0, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(w, x) or torch.equal(w, x.flip(-1)) or w.shape == x.shape


def test_perturbations_follow_the_unimatch_section_of_the_run_config() -> None:
    """The method reads the section as loaded: with every perturbation switched off there, the
    strong view is the weak one."""
    off = config_from_dict(
        {"unimatch": {"intensity_prob": 0.0, "blur_prob": 0.0, "noise_prob": 0.0}}
    ).unimatch
    x = _images(4, 6)
    y = intensity_perturbation(x, off, PIXELS, torch.Generator().manual_seed(0))
    assert torch.allclose(y, x, atol=1e-3)


# ---------------------------------------------------------------------------- staged run


def _disc_slice(rng: np.random.Generator, cons: bool) -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((40, 40), dtype=np.uint8)
    yy, xx = np.mgrid[:40, :40]
    cy, cx = rng.integers(12, 28, size=2)
    mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = 1
    if cons:
        mask[4:10, 28:34] = 2
    return np.take(np.asarray(LEVELS), mask).astype(np.uint8), mask


@pytest.fixture(scope="module")
def slices(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten labeled 40x40 slices and six unlabeled ones, COVID-SemiSeg layout."""
    root = tmp_path_factory.mktemp("unimatch_slices")
    rng = np.random.default_rng(0)
    for i in range(10):
        image, mask = _disc_slice(rng, cons=i % 2 == 0)
        write_image(root / "train" / "images" / f"{i}.png", image)
        write_palette_mask(root / "train" / "masks" / f"{i}.png", mask)
    for j in range(6):
        image, _ = _disc_slice(rng, cons=j % 3 == 0)
        write_image(root / "unlabeled" / f"vol{j // 3}_{j}.jpg", image)
    return root


def _config(root: Path, out: Path, **runtime: object):
    return config_from_dict(
        {
            "output_dir": str(out),
            "seed": 3,
            "stages": ["supervised", "unimatch"],
            "data": {
                "kind": "slices2d",
                "root": str(root),
                "images": "train/images",
                "masks": "train/masks",
                "unlabeled": "unlabeled",
                "mask_classes": CLASSES,
                "cv_folds": 5,
                "cv_fold": 1,
                "labeled_count": 4,
            },
            "model": {
                "slice_context": 1,
                "features": [4, 4, 8, 8, 16, 4],
                "num_classes": 3,
                "class_names": CLASSES,
                "hu_window": [0.0, 255.0],
                "input_size": [64, 64],
            },
            "optim": {
                "epochs": 1,
                "steps_per_epoch": 2,
                "batch_size": 2,
                "lr": 0.01,
                "bf16": False,
                "num_threads": 1,
            },
            "unimatch": {
                "epochs": 2,
                "steps_per_epoch": 2,
                "batch_size": 2,
                "unlabeled_batch_size": 2,
                "lr": 0.01,
                "confidence_threshold": 0.5,
            },
            "runtime": {"tensorboard": False, **runtime},
        }
    )


def test_unimatch_stage_trains_checkpoints_resumes_and_exports(
    slices: Path, tmp_path: Path
) -> None:
    config = _config(
        slices,
        tmp_path / "run",
        checkpoint_selection="last_epoch",
        final_model="last_stage",
        log_every_steps=1,
    )
    # Stop inside the unimatch stage (2 supervised + 1 unimatch step), then resume.
    first = run_experiment(config, progress=False, max_steps=3)
    assert not first.finished and first.stages[-1].name == "unimatch"
    second = run_experiment(config, resume=True, progress=False)
    assert second.finished and [r.steps_run for r in second.stages] == [0, 3]
    whole = run_experiment(
        _config(
            slices,
            tmp_path / "whole",
            checkpoint_selection="last_epoch",
            final_model="last_stage",
            log_every_steps=1,
        ),
        progress=False,
    )
    a = torch.load(tmp_path / "run" / "unimatch" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "whole" / "unimatch" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # the resumed run is the uninterrupted one
    assert whole.final_stage == "unimatch"

    steps = (tmp_path / "run" / "unimatch" / "steps.jsonl").read_text().splitlines()
    assert len(steps) == 4  # log_every_steps: 1, appended on resume
    assert '"confident_fraction"' in steps[-1] and '"weighted_unlabeled"' in steps[-1]
    # Fixed schedule: best.pt is the last epoch's weights, not the best-validated epoch's.
    best = torch.load(tmp_path / "run" / "unimatch" / "best.pt", weights_only=False)
    assert all(torch.equal(best["model"][k], a[k]) for k in a)

    exported = export_onnx(second.final_checkpoint, tmp_path / "covid_unimatch.onnx")
    assert exported.manifest.slice_context == 1


def test_label_budget_keeps_k_stratified_labels_and_pools_the_rest(slices: Path) -> None:
    from training.experiment import load_experiment_data

    config = _config(slices, slices / "unused")
    data = load_experiment_data(config)
    assert len(data.train_labeled) == 4 and len(data.val) == 2
    assert len(data.train_unlabeled) == 6 + 4  # the unlabeled folder + the demoted slices
    assert all(s.label is None for s in data.train_unlabeled)
    with_cons = [bool((s.label == 2).any()) for s in data.train_labeled]
    assert 1 <= sum(with_cons) <= 3  # both strata represented
    again = load_experiment_data(config)
    names = [s.record.name for s in data.train_labeled]
    assert [s.record.name for s in again.train_labeled] == names  # seeded
    without = load_experiment_data(config, with_unlabeled=False)
    assert len(without.train_unlabeled) == 0 and len(without.train_labeled) == 4
