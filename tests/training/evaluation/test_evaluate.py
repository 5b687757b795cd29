"""Tests for training.evaluation.evaluate and ``pulmoseg evaluate`` (training.cli.commands):
metrics of exported ONNX models against hand-computed values.

The models are real exports of a tiny BasicUNet whose weights are all zero except the final
bias, so they predict one class everywhere with known constant probabilities; every Dice and
continuous Dice below then follows from pixel counts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from training.cli.commands import add_evaluate, parse_mask_classes
from training.config import config_from_dict
from training.evaluation.evaluate import evaluate_model
from training.export.onnx_export import export_onnx
from training.nn.networks import build_network


def _constant_model(
    path: Path,
    class_names: list[str],
    winner: str,
    *,
    slice_context: int,
    hu_window: tuple[float, float],
) -> Path:
    config = config_from_dict(
        {
            "model": {
                "slice_context": slice_context,
                "hu_window": list(hu_window),
                "class_names": class_names,
                "num_classes": len(class_names),
                "input_size": [32, 32],
                "features": [4, 4, 8, 8, 16, 4],
            },
            "export": {"name": "const-" + winner, "version": "0.0.1"},
        }
    )
    net = build_network(config.model)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        bias = torch.zeros(len(class_names))
        bias[class_names.index(winner)] = 2.0
        net.unet.final_conv.bias.copy_(bias)
    ckpt = path.with_suffix(".pt")
    torch.save(
        {"model": net.state_dict(), "config": config.to_dict(), "epoch": 0, "best_dice": {}}, ckpt
    )
    export_onnx(ckpt, path)
    return path


@pytest.fixture(scope="module")
def model_2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Classes background/ggo/consolidation, window (0, 255); predicts GGO everywhere."""
    path = tmp_path_factory.mktemp("m2d") / "ggo.onnx"
    return _constant_model(
        path, ["background", "ggo", "consolidation"], "ggo", slice_context=1, hu_window=(0.0, 255.0)
    )


@pytest.fixture(scope="module")
def model_3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Phantom classes, HU window, 2.5D context 3; predicts lung everywhere."""
    path = tmp_path_factory.mktemp("m3d") / "lung.onnx"
    return _constant_model(
        path,
        ["background", "lung", "ggo", "consolidation"],
        "lung",
        slice_context=3,
        hu_window=(-1024.0, 400.0),
    )


def _slices(tmp_path: Path) -> tuple[Path, Path]:
    """Two 20x24 slices (480 px): '0' has 20 px GGO + 12 px consolidation, '1' 10 px GGO."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for stem, (ggo, cons) in {
        "0": ((slice(2, 6), slice(3, 8)), (slice(8, 11), slice(3, 7))),
        "1": ((slice(10, 12), slice(0, 5)), None),
    }.items():
        Image.fromarray(rng.integers(0, 256, (20, 24)).astype(np.uint8)).save(
            images / f"{stem}.jpg"
        )
        mask = np.zeros((20, 24), dtype=np.uint8)
        mask[ggo] = 1
        if cons is not None:
            mask[cons] = 2
        img = Image.fromarray(mask, mode="P")
        img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
        img.save(masks / f"{stem}.png")
    return images, masks


def _d(a: int, b: int, inter: int) -> float:
    return 2.0 * inter / (a + b) if a + b else 1.0


def test_2d_metrics_match_hand_computed_values(model_2d: Path, tmp_path: Path) -> None:
    images, masks = _slices(tmp_path)
    report = evaluate_model(model_2d, images=images, masks=masks)
    assert report.kind == "2d" and report.classes == ["ggo", "consolidation", "infection"]
    n = 480  # GGO predicted on every pixel
    item0, item1 = report.items
    assert item0.item == "0" and item1.item == "1"
    expected0 = {"ggo": _d(20, n, 20), "consolidation": 0.0, "infection": _d(32, n, 32)}
    expected1 = {"ggo": _d(10, n, 10), "consolidation": 1.0, "infection": _d(10, n, 10)}
    assert item0.dice == pytest.approx(expected0)
    assert item1.dice == pytest.approx(expected1)
    # Constant probabilities p: cDC = 2p|A| / (p|A| + pN) = 2|A| / (|A| + N), whatever p.
    assert item0.cdice == pytest.approx(
        {"ggo": _d(20, n, 20), "consolidation": _d(12, n, 12), "infection": _d(32, n, 32)}, rel=1e-5
    )
    assert item1.cdice["consolidation"] == 0.0  # nothing to find, yet probability spent
    assert item0.vol_dice == {}
    assert item0.reference_voxels == {"ggo": 20, "consolidation": 12, "infection": 32}
    assert item0.predicted_voxels == {"ggo": n, "consolidation": 0, "infection": n}

    ggo = report.summary["dice"]["ggo"]
    values = [expected0["ggo"], expected1["ggo"]]
    assert ggo["n"] == 2 and ggo["n_absent"] == 0
    assert report.summary["dice"]["consolidation"]["n_absent"] == 1
    assert ggo["mean"] == pytest.approx(np.mean(values))
    assert ggo["sd"] == pytest.approx(np.std(values, ddof=1))
    assert "vol_dice" not in report.summary


def test_mask_classes_are_matched_by_name(model_2d: Path, tmp_path: Path) -> None:
    images, masks = _slices(tmp_path)
    # Declaring the masks as 0 bg / 1 consolidation / 2 ggo swaps which pixels count as GGO.
    report = evaluate_model(
        model_2d,
        images=images,
        masks=masks,
        mask_mapping=parse_mask_classes("background,consolidation,ggo"),
    )
    assert report.items[0].dice["ggo"] == pytest.approx(_d(12, 480, 12))
    assert report.items[0].dice["consolidation"] == 0.0
    assert report.items[0].reference_voxels["consolidation"] == 20


def _write_volume_dataset(root: Path) -> Path:
    """Two 3-slice 16x16 studies with phantom labels (0 bg, 1 lung, 2 ggo, 3 consolidation)."""
    root.mkdir(parents=True, exist_ok=True)
    a = np.zeros((3, 16, 16), dtype=np.int16)  # (z, y, x)
    a[0, 4:12, 4:12] = 1  # 64 px lung
    a[1, 4:12, 4:12] = 1
    a[1, 5:7, 5:7] = 2  # 4 px GGO (lung 60 px on slice 1)
    b = np.ones((3, 16, 16), dtype=np.int16)  # all lung
    studies = []
    for sid, label in (("s1", a), ("s2", b)):
        hu = np.where(label > 0, -800, 40).astype(np.int16)
        for kind, data in (("image", hu), ("label", label)):
            nib.save(
                nib.Nifti1Image(data.transpose(2, 1, 0), np.eye(4)), root / f"{sid}_{kind}.nii.gz"
            )
        studies.append({"id": sid, "image": f"{sid}_image.nii.gz", "label": f"{sid}_label.nii.gz"})
    (root / "manifest.json").write_text(
        json.dumps(
            {
                "classes": {"0": "background", "1": "lung", "2": "ggo", "3": "consolidation"},
                "studies": studies,
            }
        )
    )
    return root


def test_3d_metrics_match_hand_computed_values(model_3d: Path, tmp_path: Path) -> None:
    root = _write_volume_dataset(tmp_path / "vol")
    report = evaluate_model(model_3d, dataset_root=root)
    assert report.kind == "3d"
    assert report.classes == ["lung", "ggo", "consolidation", "infection"]
    s1, s2 = report.items
    n = 256  # lung predicted on every pixel of every slice
    lung_slices = [_d(64, n, 64), _d(60, n, 60), _d(0, n, 0)]
    assert s1.dice["lung"] == pytest.approx(np.mean(lung_slices))
    assert s1.vol_dice["lung"] == pytest.approx(_d(124, 3 * n, 124))
    assert s1.cdice["lung"] == pytest.approx(_d(124, 3 * n, 124), rel=1e-5)
    assert s1.dice["ggo"] == 0.0 and s1.vol_dice["ggo"] == 0.0
    assert s1.dice["consolidation"] == 1.0 and s1.vol_dice["consolidation"] == 1.0
    assert s1.vol_dice["infection"] == 0.0
    assert s2.dice["lung"] == 1.0 and s2.vol_dice["lung"] == 1.0
    assert s2.cdice["lung"] == pytest.approx(1.0, rel=1e-5)
    assert s2.dice["ggo"] == 1.0  # no lesion anywhere, none predicted
    lung = report.summary["vol_dice"]["lung"]
    values = [_d(124, 3 * n, 124), 1.0]
    assert lung["mean"] == pytest.approx(np.mean(values))
    assert lung["sd"] == pytest.approx(np.std(values, ddof=1))

    val = evaluate_model(model_3d, dataset_root=root, split="val", val_fraction=0.5, seed=0)
    train = evaluate_model(model_3d, dataset_root=root, split="train", val_fraction=0.5, seed=0)
    assert len(val.items) == 1 and len(train.items) == 1
    assert {val.items[0].item, train.items[0].item} == {"s1", "s2"}
    folds = [
        evaluate_model(model_3d, dataset_root=root, split="val", fold=(i, 2)).items[0].item
        for i in range(2)
    ]
    assert sorted(folds) == ["s1", "s2"]  # every study validated by exactly one fold


def test_cli_writes_json_and_prints_table(
    model_2d: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, masks = _slices(tmp_path)
    parser = argparse.ArgumentParser()
    add_evaluate(parser.add_subparsers(dest="command"))
    out = tmp_path / "out" / "metrics.json"
    args = parser.parse_args(
        [
            "evaluate",
            "--model",
            str(model_2d),
            "--images",
            str(images),
            "--masks",
            str(masks),
            "--mask-classes",
            "background,ggo,consolidation",
            "--out",
            str(out),
        ]
    )
    assert args.func(args) == 0
    data = json.loads(out.read_text())
    assert data["model_name"] == "const-ggo" and data["kind"] == "2d"
    assert [it["item"] for it in data["items"]] == ["0", "1"]
    assert data["summary"]["dice"]["infection"]["mean"] == pytest.approx(
        np.mean([_d(32, 480, 32), _d(10, 480, 10)])
    )
    table = capsys.readouterr().out
    lines = table.splitlines()
    assert lines[0].startswith("const-ggo 0.0.1 on 2 2d item(s)")
    assert lines[1].split() == ["class", "dice", "cdice"]
    consolidation = lines[3].split()
    assert consolidation[:4] == ["consolidation", "0.500", "±", "0.707"]
    assert f"wrote {out}" in table

    bad = parser.parse_args(["evaluate", "--model", str(model_2d), "--images", str(images)])
    with pytest.raises(ValueError, match="--images needs --masks"):
        bad.func(bad)
    with pytest.raises(ValueError, match="'--mask-classes' must list distinct class names"):
        parse_mask_classes("background,ggo,ggo")

    fold = parser.parse_args(
        ["evaluate", "--model", str(model_2d), "--images", str(images), "--masks", str(masks)]
        + ["--split", "val", "--fold", "1/2", "--out", str(out)]
    )
    assert fold.fold == (1, 2) and fold.func(fold) == 0
    assert len(json.loads(out.read_text())["items"]) == 1
    for text in ("2/2", "1-2", "x/2"):
        with pytest.raises(SystemExit):
            parser.parse_args(["evaluate", "--model", "m.onnx", "--fold", text])
    assert "expected a fold as I/K" in capsys.readouterr().err


def test_evaluate_errors(model_2d: Path, model_3d: Path, tmp_path: Path) -> None:
    images, masks = _slices(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"Model file '.*missing\.onnx' does not exist"):
        evaluate_model(tmp_path / "missing.onnx", images=images, masks=masks)
    with pytest.raises(ValueError, match="either 'dataset_root'"):
        evaluate_model(model_2d)
    with pytest.raises(FileNotFoundError, match=r"'images_dir': folder '.*nope' does not exist"):
        evaluate_model(model_2d, images=tmp_path / "nope", masks=masks)
    with pytest.raises(FileNotFoundError, match=r"Dataset folder '.*nope' does not exist"):
        evaluate_model(model_3d, dataset_root=tmp_path / "nope")
    with pytest.raises(ValueError, match="'split' must be one of"):
        evaluate_model(model_2d, images=images, masks=masks, split="test")
    with pytest.raises(ValueError, match="'fold' selects a split side"):
        evaluate_model(model_2d, images=images, masks=masks, fold=(0, 2))
    with pytest.raises(ValueError, match=r"Fold index must be in \[0, 1\]"):
        evaluate_model(model_2d, images=images, masks=masks, split="val", fold=(2, 2))

    root = _write_volume_dataset(tmp_path / "vol")
    with pytest.raises(ValueError, match=r"Model '.*ggo\.onnx' has no class \['lung'\]"):
        evaluate_model(model_2d, dataset_root=root)

    Image.fromarray(np.zeros((20, 24), dtype=np.uint8)).save(images / "2.jpg")
    with pytest.raises(ValueError, match=r"Image '.*2\.jpg' has no mask '2\.png'"):
        evaluate_model(model_2d, images=images, masks=masks)
    Image.fromarray(np.zeros((21, 24), dtype=np.uint8), mode="L").save(masks / "2.png")
    with pytest.raises(ValueError, match=r"Mask '.*2\.png' is 24x21 px but its image"):
        evaluate_model(model_2d, images=images, masks=masks)
    Image.fromarray(np.full((20, 24), 7, dtype=np.uint8), mode="L").save(masks / "2.png")
    with pytest.raises(ValueError, match=r"holds values \[7\]"):
        evaluate_model(model_2d, images=images, masks=masks)
