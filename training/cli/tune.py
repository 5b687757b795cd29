"""``pulmoseg tune``: hyper-parameter search over the method's knobs (Optuna).

Registered through the ``pulmoseg.commands`` entry point; Optuna and torch are imported when
the command runs, so ``pulmoseg --help`` stays fast.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any


def add_tune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="hyper-parameter search (Optuna) over learning rates, TCSM consistency, UniMatch "
        "threshold and pre-training; writes best.yaml",
    )
    p.add_argument(
        "--config",
        required=True,
        type=Path,
        help="experiment YAML (the default trial); an optional 'tune:' section sets the space",
    )
    p.add_argument("--trials", required=True, type=int, help="total trials of the study")
    p.add_argument(
        "--out", type=Path, default=Path("runs/tune"), help="output folder (default runs/tune)"
    )
    p.add_argument(
        "--storage",
        help="study database URL (default sqlite:///OUT/tune.sqlite); the service's "
        "quality-records database URL works too",
    )
    p.add_argument(
        "--study-name", default="pulmoseg-tune", help="study name (default pulmoseg-tune)"
    )
    p.add_argument(
        "--jobs", type=int, default=1, help="parallel trial processes, 1 torch thread each"
    )
    p.add_argument("--timeout-min", type=float, help="start no new trial after this many minutes")
    p.set_defaults(func=_cmd_tune)


def _cmd_tune(args: argparse.Namespace) -> int:
    import logging

    from training.tuning import SearchRequest, default_storage_url, load_tune_file, run_search

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.trials < 1:  # checked before the (slow) imports of training
        raise ValueError(f"Argument '--trials' must be >= 1, got {args.trials}.")
    config, tune = load_tune_file(args.config)
    request = SearchRequest(
        config=config,
        tune=tune,
        trials=args.trials,
        storage=args.storage or default_storage_url(args.out),
        study_name=args.study_name,
        out=args.out,
        jobs=args.jobs,
        timeout_min=args.timeout_min,
    )
    result = run_search(request)
    print(format_table(result.trials))
    print(format_verdict(result.default, result.best))
    if result.best_config is not None:
        print(f"best config: {result.best_config} (pulmoseg train --config {result.best_config})")
    print(f"study '{result.study_name}' in {result.storage}; {result.wall_seconds:.0f} s")
    return 0


def _number(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def _param(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def format_table(trials: list[dict[str, Any]]) -> str:
    """One row per trial: state, lesion VolDice (last reported for pruned), epochs, time."""
    rows = [f"{'trial':>5} {'state':<8} {'VolDice':>8} {'epochs':>6} {'s':>6}  params"]
    for t in trials:
        value = t["value"] if t["value"] is not None else t["last_intermediate"]
        params = " ".join(f"{k}={_param(v)}" for k, v in t["params"].items())
        mark = " (default)" if t["default"] else ""
        rows.append(
            f"{t['number']:>5} {t['state']:<8} {_number(value):>8} {t['epochs']:>6} "
            f"{_number(t['seconds'], 0):>6}  {params}{mark}"
        )
    return "\n".join(rows)


def format_verdict(default: dict[str, Any] | None, best: dict[str, Any] | None) -> str:
    """Best vs default on the same validation split."""
    if best is None:
        return "no trial completed: no best config."
    text = f"best: trial {best['number']} lesion VolDice {_number(best['value'])}"
    if default is None:
        return text + "; the default trial has not completed."
    delta = best["value"] - default["value"]
    return (
        f"{text}; default (trial {default['number']}) {_number(default['value'])}; "
        f"difference {delta:+.4f}"
    )
