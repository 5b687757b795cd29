"""A job's config is checked in full before it is queued, through the real server and CLI:
each mistake is one line, INVALID_ARGUMENT, naming the user's file, key or line, and nothing
is queued."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from service.cli.main import main as pulmoseg
from service.client.client import SegmentationClient
from service.client.errors import ClientError
from service.serving.server import RunningServer
from tests.service.training_jobs.jobs_helpers import make_phantom, start_server, stop_and_cancel

#: A log line of the server running in this process (its stderr is the CLI's too).
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:")
GOOD = """
stages: [supervised]
model: {features: [4, 4, 8, 8, 16, 4], input_size: [32, 32]}
optim: {epochs: 2, steps_per_epoch: 30, batch_size: 4, lr: 0.01, bf16: false}
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_phantom(tmp_path_factory.mktemp("validation_phantom"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("validation_server")
    running = start_server(tmp / "serving", tmp)
    yield running
    stop_and_cancel(running)


def _submit(
    server: RunningServer, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    """Exit code and the CLI's own stderr (the in-process server's log lines left out)."""
    code = pulmoseg(["jobs", "submit", *args, "--server", server.address, "--timeout", "30"])
    err = capsys.readouterr().err
    return code, "\n".join(line for line in err.splitlines() if not LOG_LINE.match(line))


@pytest.mark.parametrize(
    ("config", "extra", "expected"),
    [
        (
            GOOD.replace("steps_per_epoch", "step_per_epoch"),
            [],
            ["Unknown config key 'optim.step_per_epoch'", "Did you mean 'optim.steps_per_epoch'"],
        ),
        (GOOD + "optm: {lr: 0.1}\n", [], ["'optm'", "Did you mean 'optim'"]),
        (GOOD.replace("lr: 0.01", "lr: fast"), [], ["'optim.lr' must be", "'fast'"]),
        (GOOD, ["--stages", "supervsed"], ["unknown stage 'supervsed'", "'supervised'"]),
        (
            GOOD,
            ["--max-steps", "5"],
            ["'max_steps' (5)", "after 30 steps", "'optim.steps_per_epoch'"],
        ),
        ("optim: {lr: 0.1\nseed: 3\n", [], ["is not valid YAML", "line 2"]),
        ("# only a comment\n", [], ["is empty"]),
    ],
)
def test_config_mistakes_are_refused_before_queueing(
    server: RunningServer,
    data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    config: str,
    extra: list[str],
    expected: list[str],
) -> None:
    path = tmp_path / "my-experiment.yaml"
    path.write_text(config)
    code, err = _submit(server, capsys, str(data), "--config", str(path), *extra)
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line, no YAML dump, no traceback
    assert lines[0].startswith("pulmoseg jobs: error: Server at ")
    if "--stages" not in extra:  # the stage list is the argument's, not the file's
        assert f"'{path}'" in err
    for text in expected:
        assert text in err
    stages = extra[1:] if "--stages" in extra else []
    max_steps = int(extra[1]) if "--max-steps" in extra else 0
    with SegmentationClient(server.address, timeout_s=30) as client:
        with pytest.raises(ClientError) as caught:
            client.training.submit(
                str(data),
                config_yaml=config,
                stages=stages,
                max_steps=max_steps,
                config_name=str(path),
            )
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert client.training.list()[0] == []  # nothing was queued


def test_an_empty_config_file_is_empty(
    server: RunningServer, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    code, err = _submit(server, capsys, str(data), "--config", str(path))
    assert code == 1
    assert err.strip() == f"pulmoseg jobs: error: Config file '{path}' is empty."


def test_a_step_limit_shorter_than_an_epoch_of_a_recipe_names_the_recipe(
    server: RunningServer, data: Path
) -> None:
    with (
        SegmentationClient(server.address, timeout_s=30) as client,
        pytest.raises(ClientError) as caught,
    ):
        client.training.submit(str(data), recipe="demo", max_steps=1)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "'max_steps' (1)" in str(caught.value) and "recipe 'demo'" in str(caught.value)


def test_a_missing_dataset_is_not_called_a_missing_manifest(
    server: RunningServer, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _submit(server, capsys, str(data.parent / "no_such_dataset"), "--recipe", "demo")
    assert code == 1
    assert "does not exist" in err and "manifest" not in err
