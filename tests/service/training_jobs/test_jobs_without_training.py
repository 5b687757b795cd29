"""A serve-only installation (no torch, no training package) answers a submission with
FAILED_PRECONDITION "Training is not installed in this image" and keeps serving."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.import_blocking import SERVE_ONLY_BLOCKED, blocking_prelude, run_python


def test_submission_without_training_installed_is_failed_precondition(tmp_path: Path) -> None:
    dataset = tmp_path / "data"
    dataset.mkdir()
    (dataset / "manifest.json").write_text('{"studies": []}')
    script = blocking_prelude(SERVE_ONLY_BLOCKED, "serve-only") + textwrap.dedent(
        f"""
        import grpc
        from service.client.client import SegmentationClient
        from service.client.errors import ClientError
        from service.serving.server import build_server
        from service.serving.settings import load_settings

        settings = load_settings(
            env={{}}, port=0, metrics_enabled=False, model_path={str(tmp_path / "m")!r},
            training_enabled=True, training_dir={str(tmp_path / "training")!r},
            training_allow_unauthenticated=True, training_data_root={str(tmp_path)!r},
        )
        running = build_server(settings, autoload=False)
        try:
            with SegmentationClient(running.address, timeout_s=30) as client:
                try:
                    client.training.submit({str(dataset)!r}, recipe="demo")
                except ClientError as exc:
                    print("CODE", exc.code.name)
                    print("MESSAGE", exc)
                print("JOBS", len(client.training.list()[0]))
        finally:
            running.stop(grace=1)
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not leaked, leaked
        """
    )
    run = run_python(script, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "CODE FAILED_PRECONDITION" in run.stdout, run.stdout
    assert "Training is not installed in this image" in run.stdout
    assert "JOBS 0" in run.stdout
    assert not (tmp_path / "training" / "jobs").exists() or not any(
        (tmp_path / "training" / "jobs").iterdir()
    )
