"""``pulmoseg reference`` and ``pulmoseg quality list|show``: the quality API from a shell.

Thin: arguments in, one client call, a table or JSON out. Studies are named by their hash, the
one the segment command prints; no patient identifier is ever needed or shown.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from service.core.study_outcome import ClinicalOutcome


def _connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default="127.0.0.1:50051", help="HOST:PORT of the server")
    p.add_argument("--token", help="bearer token, if the server requires one")
    p.add_argument("--tls-ca", type=Path, help="CA certificate for a TLS server")
    p.add_argument("--timeout", type=float, default=120.0, help="deadline in seconds")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")


def _client(args: argparse.Namespace) -> Any:
    from service.client.client import SegmentationClient

    return SegmentationClient(
        args.server, token=args.token, tls_ca=args.tls_ca, timeout_s=args.timeout
    )


def _scores(scores: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in sorted(scores.items())) or "-"


def clinical_line(clinical: dict[str, Any] | None) -> str:
    """One line: involvement and grade (or why there is none), as the schema words it."""
    present = {k: v for k, v in (clinical or {}).items() if v != ""}  # proto3: "" is unset
    return ClinicalOutcome.model_validate(present).describe()


# -- reference -----------------------------------------------------------------------------------
def add_reference(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reference", help="score a reference DICOM-SEG against a segmented study (VolDice)"
    )
    p.add_argument("reference", type=Path, help="the reference DICOM-SEG file")
    p.add_argument("--study-hash", required=True, help="study hash from the segmentation summary")
    _connection_args(p)
    p.set_defaults(func=_cmd_reference)


def _cmd_reference(args: argparse.Namespace) -> int:
    if not args.reference.is_file():
        raise FileNotFoundError(f"Reference SEG '{args.reference}' does not exist.")
    with _client(args) as client:
        answer = client.submit_reference(args.study_hash, args.reference)
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
        return 0
    print(f"study {answer['study_hash']} ({answer['reference_type']} reference)")
    print(f"  VolDice          {_scores(answer['voldice'])}")
    if answer["continuous_dice"]:
        print(f"  continuous Dice  {_scores(answer['continuous_dice'])}")
    for segment in answer["unmatched_segments"]:
        print(f"  not scored       {segment}: no model class has its property type")
    return 0


# -- quality list / show -------------------------------------------------------------------------
def add_quality(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quality", help="list or show per-study quality records")
    actions = p.add_subparsers(dest="quality_command", required=True, metavar="ACTION")
    ls = actions.add_parser("list", help="records newest first")
    ls.add_argument("--days", type=float, help="only the last DAYS days")
    ls.add_argument("--model-version", default="", help="only this model version")
    ls.add_argument("--flagged", action="store_true", help="only studies flagged for review")
    ls.add_argument("--limit", type=int, default=50, help="at most this many records (50)")
    _connection_args(ls)
    ls.set_defaults(func=_cmd_quality_list)
    show = actions.add_parser("show", help="one study's record")
    show.add_argument("study_hash")
    _connection_args(show)
    show.set_defaults(func=_cmd_quality_show)


def _cmd_quality_list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}.")
    since = datetime.now(UTC) - timedelta(days=args.days) if args.days else None
    records: list[dict[str, Any]] = []
    token = ""
    with _client(args) as client:
        while len(records) < args.limit:
            page, token = client.list_study_quality(
                since=since,
                model_version=args.model_version,
                flagged_only=args.flagged,
                page_size=min(500, args.limit - len(records)),
                page_token=token,
            )
            records += page
            if not token:
                break
    if args.json:
        print(json.dumps(records, indent=2, sort_keys=True))
        return 0
    print(
        f"{'study':16}  {'created (UTC)':19}  {'model':10}  {'grade':5}  "
        f"{'consistency':>11}  {'reference':>9}  flag"
    )
    for r in records:
        consistency = r.get("consistency") or {}
        reference = r.get("reference") or {}
        c_min = min(consistency.get("voldice", {}).values(), default=None)
        r_min = min(reference.get("voldice", {}).values(), default=None)
        print(
            f"{r['study_hash']:16}  {r['created'][:19].replace('T', ' '):19}  "
            f"{r['model_version'][:10]:10}  {r['clinical'].get('severity_grade') or '-':5}  "
            f"{'-' if c_min is None else f'{c_min:.3f}':>11}  "
            f"{'-' if r_min is None else f'{r_min:.3f}':>9}  {'FLAG' if r['flagged'] else ''}"
        )
    print(f"{len(records)} record(s)")
    return 0


def _cmd_quality_show(args: argparse.Namespace) -> int:
    with _client(args) as client:
        record = client.study_quality(args.study_hash)
    if args.json:
        print(json.dumps(record, indent=2, sort_keys=True))
        return 0
    clinical = record["clinical"]
    print(f"study {record['study_hash']}  ({record['created']})")
    print(
        f"  model        {record['model_name']} {record['model_version']} on {record['provider']}"
    )
    volumes = ", ".join(f"{k} {v:.1f} mL" for k, v in clinical["class_volumes_ml"].items())
    print(f"  volumes      {volumes}")
    print(f"  clinical     {clinical_line(clinical)}")
    consistency = record.get("consistency")
    if consistency:
        flag = "  FLAGGED for review" if record["flagged"] else ""
        print(
            f"  consistency  {_scores(consistency['voldice'])} ({consistency['transform']}){flag}"
        )
    else:
        print("  consistency  not checked for this study")
    quality = record.get("quality")
    if quality:
        flag = "  FLAGGED for review" if quality.get("flagged") else ""
        print(
            f"  quality      score {quality.get('score', 0.0):.3f} (threshold "
            f"{quality.get('threshold', 0.0):.3f}, {quality.get('variant', '')}){flag}"
        )
    reference = record.get("reference")
    if reference:
        print(f"  reference    {_scores(reference['voldice'])} ({reference['reference_type']})")
    else:
        print("  reference    none submitted")
    return 0
