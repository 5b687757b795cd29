"""``pulmoseg jobs submit|list|show|cancel|watch|promote``: training jobs from a shell.

Thin: arguments in, one client call, a line or JSON out. ``submit --follow`` and ``watch`` print
one line per progress event and exit 0 only when the job succeeded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from service.cli.quality_commands import _client, _connection_args

EXIT_JOB_FAILED = 1
EXIT_INTERRUPTED = 130


def add_jobs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("jobs", help="train models on the server: submit, follow, promote")
    actions = p.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")

    submit = actions.add_parser("submit", help="queue a training job")
    submit.add_argument(
        "dataset", help="dataset folder on the server, or 'captured' (its capture folder)"
    )
    what = submit.add_mutually_exclusive_group(required=True)
    what.add_argument("--recipe", help="a recipe of the training package, e.g. demo")
    what.add_argument("--config", type=Path, help="a training YAML file sent to the server")
    submit.add_argument("--stages", help="override the stage list, e.g. supervised,tcsm")
    submit.add_argument("--max-steps", type=int, default=0, help="stop training after N steps")
    submit.add_argument("--model-name", default="", help="registry name of the model")
    submit.add_argument("--model-version", default="", help="registry version (default: next)")
    submit.add_argument("--follow", action="store_true", help="stream progress until it ends")
    _connection_args(submit)
    submit.set_defaults(func=_cmd_submit)

    ls = actions.add_parser("list", help="jobs, newest first")
    ls.add_argument("--limit", type=int, default=50, help="at most this many jobs")
    _connection_args(ls)
    ls.set_defaults(func=_cmd_list)

    for name, func, text in (
        ("show", _cmd_show, "one job in full"),
        ("cancel", _cmd_cancel, "stop a job and delete its files"),
        ("watch", _cmd_watch, "stream a job's progress until it ends"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("job_id")
        _connection_args(action)
        action.set_defaults(func=func)

    promote = actions.add_parser(
        "promote", help="serve a job's model if it is not worse than the served one"
    )
    promote.add_argument("job_id", nargs="?", default="", help="a job that succeeded")
    promote.add_argument("--model-name", default="", help="or a registry entry's name ...")
    promote.add_argument("--model-version", default="", help="... and version")
    _connection_args(promote)
    promote.set_defaults(func=_cmd_promote)


def _dice(values: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.3f}" for k, v in sorted(values.items())) or "-"


def progress_line(event: dict[str, Any]) -> str:
    total = f"/{event['total_steps']}" if int(event.get("total_steps") or 0) else ""
    where = (
        f" {event['stage']} epoch {event['epoch']} step {event['step']}{total}"
        if event.get("stage")
        else ""
    )
    dice = f" val VolDice {_dice(event['val_voldice'])}" if event.get("val_voldice") else ""
    return f"{event['job_id']} {event['state']}{where}{dice}: {event.get('message', '')}"


def _job_line(job: dict[str, Any]) -> str:
    model = f" -> {job['model_name']} {job['model_version']}" if job.get("model_version") else ""
    spec = job["spec"]
    source = spec.get("recipe") or "inline config"
    return (
        f"{job['job_id']}  {job['state']:<9}  {job['created_at']}  {source} on "
        f"{spec['dataset']}{model}"
    )


def _follow(client: Any, job_id: str) -> int:
    state = ""
    try:
        for event in client.training.watch(job_id):
            print(progress_line(event), flush=True)
            state = event["state"]
    except KeyboardInterrupt:  # the job goes on on the server: say how to get back to it
        print(
            f"stopped following; training job {job_id} goes on on the server. Follow it with "
            f"'pulmoseg jobs watch {job_id}', stop it with 'pulmoseg jobs cancel {job_id}'.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return 0 if state == "SUCCEEDED" else EXIT_JOB_FAILED


def _cmd_submit(args: argparse.Namespace) -> int:
    config_yaml = ""
    if args.config is not None:
        if not args.config.is_file():
            raise FileNotFoundError(f"Config file '{args.config}' does not exist.")
        config_yaml = args.config.read_text()
        if not config_yaml.strip():
            raise ValueError(f"Config file '{args.config}' is empty.")
    stages = [s.strip() for s in (args.stages or "").split(",") if s.strip()]
    with _client(args) as client:
        job = client.training.submit(
            args.dataset,
            recipe=args.recipe or "",
            config_yaml=config_yaml,
            stages=stages,
            max_steps=args.max_steps,
            model_name=args.model_name,
            model_version=args.model_version,
            config_name=str(args.config) if args.config is not None else "",
        )
        if args.json and not args.follow:
            print(json.dumps(job, indent=2, sort_keys=True))
            return 0
        print(f"submitted training job {job['job_id']} ({job['state']})", flush=True)
        return _follow(client, job["job_id"]) if args.follow else 0


def _cmd_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        jobs, _ = client.training.list(page_size=args.limit)
    if args.json:
        print(json.dumps(jobs, indent=2, sort_keys=True))
    for job in [] if args.json else jobs:
        print(_job_line(job))
    return 0


def _show(job: dict[str, Any]) -> None:
    print(_job_line(job))
    print(f"  progress   {progress_line(job['progress'])}")
    if job.get("val_voldice"):
        print(f"  VolDice    {_dice(job['val_voldice'])} (validation, exported model)")
    if job.get("registry_path"):
        print(f"  registry   {job['registry_path']}")
    promotion = job.get("promotion")
    if promotion and promotion.get("serving_version"):
        print(
            f"  promotion  {'promoted' if promotion['promoted'] else 'refused'}: "
            f"{promotion['message']}"
        )


def _cmd_show(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.training.get(args.job_id)
    if args.json:
        print(json.dumps(job, indent=2, sort_keys=True))
    else:
        _show(job)
    return 0


def _cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.training.cancel(args.job_id)
    print(f"cancelled training job {job['job_id']}; its files are deleted")
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    with _client(args) as client:
        return _follow(client, args.job_id)


def _cmd_promote(args: argparse.Namespace) -> int:
    if not args.job_id and not (args.model_name and args.model_version):
        raise ValueError("Name a job id, or --model-name and --model-version of a registry entry.")
    with _client(args) as client:
        answer = client.training.promote(
            args.job_id, model_name=args.model_name, model_version=args.model_version
        )
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
    else:
        print(
            f"promoted {answer['model_name']} {answer['model_version']}: "
            f"{answer['record']['message']}"
        )
    return 0
