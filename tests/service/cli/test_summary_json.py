"""One summary.json schema: ``pulmoseg segment --summary-json`` and ``python -m service.app``
write the same keys and value types for the same study (real server, real app, one model)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from service.app.__main__ import main as app_main
from service.cli.main import main as cli_main
from service.core.study_outcome import SUMMARY_FILE_NAME
from service.serving.server import build_server
from service.serving.settings import load_settings


def shape(value: Any) -> Any:
    """Keys and value types, recursively; the keys of per-stage and per-class maps aside."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


def without_map_keys(tree: Any) -> Any:
    """``shape`` with the open maps (stage_seconds, volumes, VolDice) reduced to value types."""
    tree = dict(tree)
    for key in ("stage_seconds", "class_volumes_ml"):
        tree[key] = sorted(set(tree[key].values()))
    for part in ("clinical", "consistency"):
        if isinstance(tree[part], dict):
            tree[part] = without_map_keys_of(tree[part])
    return tree


def without_map_keys_of(section: dict[str, Any]) -> dict[str, Any]:
    maps = ("class_volumes_ml", "voldice")
    return {k: sorted(set(v.values())) if k in maps else v for k, v in section.items()}


def test_the_client_and_the_app_write_one_summary_schema(
    exported_model: Path, held_out_study, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = held_out_study.dicom_dir
    client_dir, app_dir = tmp_path / "client", tmp_path / "app"
    settings = load_settings(
        env={}, port=0, metrics_enabled=False, model_path=exported_model, consistency_fraction=1.0
    )
    running = build_server(settings)
    try:
        assert running.wait_until_ready(120), running.load_error
        code = cli_main(
            ["segment", str(study), "--server", running.address, "--no-progress",
             "--out", str(client_dir / "seg.dcm"),
             "--summary-json", str(client_dir / SUMMARY_FILE_NAME)]
        )  # fmt: skip
    finally:
        running.stop(grace=1)
    assert code == 0, capsys.readouterr().err
    assert (
        app_main(["-i", str(study), "-o", str(app_dir), "-m", str(exported_model), "--quality"])
        == 0
    )
    client = json.loads((client_dir / SUMMARY_FILE_NAME).read_text())
    app = json.loads((app_dir / SUMMARY_FILE_NAME).read_text())

    assert list(client) == list(app)  # the same keys, in the same order
    assert without_map_keys(shape(client)) == without_map_keys(shape(app))
    # The same study through the same model: the same identifiers and measurements.
    for key in ("study_uid_hash", "num_instances", "model_name", "model_version", "provider",
                "skipped", "flagged", "applicability"):  # fmt: skip
        assert client[key] == app[key], key
    assert client["class_volumes_ml"] == pytest.approx(app["class_volumes_ml"])
    assert client["clinical"]["severity_grade"] == app["clinical"]["severity_grade"]
    assert client["consistency"]["voldice"] == pytest.approx(app["consistency"]["voldice"])
    # Stages: the client's call also timed the upload; both end with the total.
    assert set(client["stage_seconds"]) == set(app["stage_seconds"]) | {"receiving"}
    assert list(app["stage_seconds"])[-1] == "total"
    # Sizes and digests describe the SEG and SR each writer saved.
    for summary, folder in ((client, client_dir), (app, app_dir)):
        seg = (folder / "seg.dcm").read_bytes()
        assert (summary["seg_size_bytes"], summary["seg_sha256"]) == (
            len(seg),
            hashlib.sha256(seg).hexdigest(),
        )
        assert summary["sr_size_bytes"] > 0 and len(summary["sr_sha256"]) == 64
