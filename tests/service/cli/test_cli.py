"""The `pulmoseg` command: every subcommand has --help; user errors are one sentence + exit 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service.cli.main import build_parser, main

SUBCOMMANDS = (
    "phantom",
    "train",
    "export",
    "serve",
    "segment",
    "pacs",
    "demo",
    "evaluate",
    "reference",
    "quality",
)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: pulmoseg " + command in capsys.readouterr().out


def test_console_script_runs() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "service.cli", "--help"], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0 and all(c in run.stdout for c in SUBCOMMANDS)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--config", "/nonexistent.yaml"], "does not exist"),
        (["export", "--checkpoint", "/nonexistent.pt", "--out", "x.onnx"], "does not exist"),
        (["export", "--checkpoint", "/a.pt", "/b.pt", "--out", "x.onnx"], "'/a.pt' does not exist"),
        (["segment", "/nonexistent-study", "--out", "x.dcm"], "does not exist"),
        (["evaluate", "--model", "/nonexistent.onnx", "--data", "/nonexistent"], "nonexistent"),
    ],
)
def test_user_errors_are_one_sentence(
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"pulmoseg {argv[0]}: error:") and message in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # nothing written on failure


def test_config_typo_gets_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "exp.yaml"
    config.write_text("optim:\n  learning_rate: 0.1\n")
    assert main(["train", "--config", str(config)]) == 1
    assert "Unknown config key 'optim.learning_rate'" in capsys.readouterr().err


def test_phantom_command_writes_a_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "phantom",
                "--out",
                str(tmp_path / "d"),
                "--studies",
                "2",
                "--size",
                "48",
                "--slices",
                "8",
            ]
        )
        == 0
    )
    assert (tmp_path / "d" / "manifest.json").is_file()
    assert "manifest" in capsys.readouterr().out


def test_missing_training_subcommand_says_what_to_install(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A serve-only install lists training's subcommands but explains they need [train]."""
    import argparse
    from importlib.metadata import EntryPoint

    from service.cli import main as cli

    parser = argparse.ArgumentParser(prog="pulmoseg")
    sub = parser.add_subparsers(dest="command", required=True)
    entry = EntryPoint("train", "pulmoseg_absent_training_module:add", cli.COMMANDS_GROUP)
    cli._add_contributed(sub, entry)
    args, unknown = parser.parse_known_args(["train", "--config", "x.yaml"])
    assert unknown == ["--config", "x.yaml"] and args.accepts_any_arguments
    with pytest.raises(cli.CommandUnavailableError, match=r"pip install 'pulmoseg\[train\]'"):
        args.func(args)


def test_unknown_arguments_are_still_refused_by_installed_subcommands() -> None:
    from service.cli import main as cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--no-such-flag", "1"])
    assert exit_info.value.code == 2
