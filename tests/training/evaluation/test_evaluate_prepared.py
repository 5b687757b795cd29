"""``pulmoseg evaluate --images/--masks`` prepares 8-bit slices as training validates them.

A slice folder in a release's orientation and window (rotated, body-cropped, not square) is
scored twice: by training's validation (``SliceSource.load`` then ``SliceSource.validate``,
torch backend) and by the command line on the exported ONNX model, with the recipe and with
what the export records. The Dice must be the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from service.cli.main import main as pulmoseg
from service.core.manifest import read_model_manifest
from training.config import config_from_dict
from training.data.sources import SliceSource
from training.evaluation.evaluate import evaluate_model
from training.export.onnx_export import export_onnx
from training.nn.networks import build_network

WINDOW = (-1140.0, 256.0)


def _slice(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 96x72 body-cropped chest in an 8-bit window: soft tissue ~215, lungs ~60, a GGO
    patch ~140 and a consolidation patch ~205 (mask 1 and 2), with noise."""
    image = np.full((96, 72), 215.0)
    y, x = np.mgrid[:96, :72]
    lungs = (((y - 48) / 38) ** 2 + ((x - 20) / 13) ** 2 <= 1) | (
        ((y - 48) / 38) ** 2 + ((x - 52) / 13) ** 2 <= 1
    )
    image[lungs] = rng.uniform(45, 75)
    mask = np.zeros((96, 72), dtype=np.uint8)
    top = int(rng.integers(20, 50))
    ggo = lungs & (y >= top) & (y < top + 12) & (x < 30)
    cons = lungs & (y >= top + 5) & (y < top + 12) & (x > 48)
    image[ggo], mask[ggo] = 140.0, 1
    image[cons], mask[cons] = 205.0, 2
    image += rng.normal(0, 6, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


@pytest.fixture(scope="module")
def prepared_case(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("prep")
    rng = np.random.default_rng(0)
    for folder in ("images", "masks"):
        (root / folder).mkdir()
    for k in range(6):
        image, mask = _slice(rng)
        Image.fromarray(image).save(root / "images" / f"{k}.png")
        palette = Image.fromarray(mask, mode="P")
        palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
        palette.save(root / "masks" / f"{k}.png")
    raw = {
        "seed": 0,
        "data": {
            "kind": "slices2d",
            "root": str(root),
            "images": "images",
            "masks": "masks",
            "val_fraction": 0.5,
            "pixel_window": list(WINDOW),
            "harmonize_tissue_hu": [-894.0, 41.0],
            "rotate90": -1,
            "pad_square": True,
            "lung_labels": True,
        },
        "model": {
            "slice_context": 1,
            "hu_window": list(WINDOW),
            "class_names": ["background", "lung", "ggo", "consolidation"],
            "num_classes": 4,
            "input_size": [32, 32],
            "features": [4, 4, 8, 8, 16, 4],
        },
        "export": {"name": "prepared", "version": "0.0.1"},
    }
    config = config_from_dict(raw)
    torch.manual_seed(3)
    net = build_network(config.model).eval()
    checkpoint = root / "model.pt"
    torch.save(
        {"model": net.state_dict(), "config": config.to_dict(), "epoch": 0, "best_dice": {}},
        checkpoint,
    )
    model = export_onnx(checkpoint, root / "model.onnx").onnx_path
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    source = SliceSource(config)
    validation = source.validate(net, source.load(with_unlabeled=False).val)
    return root, model, recipe, validation


def _cli_dice(root: Path, model: Path, out: Path, extra: list[str]) -> dict[str, float]:
    code = pulmoseg(
        ["evaluate", "--model", str(model), "--images", str(root / "images")]
        + ["--masks", str(root / "masks"), "--split", "val", "--val-fraction", "0.5"]
        + ["--seed", "0", "--out", str(out), *extra]
    )
    assert code == 0
    summary = json.loads(out.read_text())["summary"]["dice"]
    return {name: value["mean"] for name, value in summary.items()}


def test_cli_dice_equals_training_validation(prepared_case, tmp_path: Path) -> None:
    root, model, recipe, validation = prepared_case
    assert set(validation) == {"lung", "ggo", "consolidation"}
    with_recipe = _cli_dice(root, model, tmp_path / "a.json", ["--recipe", str(recipe)])
    recorded = _cli_dice(root, model, tmp_path / "b.json", [])
    for name, score in validation.items():
        assert with_recipe[name] == pytest.approx(score, abs=1e-3), name
        assert recorded[name] == pytest.approx(score, abs=1e-3), name
    preparation = read_model_manifest(model).training_summary["slice_preparation"]
    assert preparation["rotate90"] == -1 and preparation["pixel_window"] == list(WINDOW)


def test_recipe_must_be_a_slice_recipe(prepared_case) -> None:
    root, model, _, _ = prepared_case
    volumes = config_from_dict({"data": {"kind": "volumes"}}).data
    with pytest.raises(ValueError, match="'recipe' must be the data section of a slices2d"):
        evaluate_model(model, images=root / "images", masks=root / "masks", recipe=volumes)
