"""The search: an Optuna study in a database, trials run by one or more worker processes.

Why it is shaped like this:

* **The default config is trial 0** (enqueued when the study is created, never pruned), so
  "did the search beat the default?" is answered inside one study, on the same validation
  split (the training seed, hence the split, is the same in every trial).
* **Resumable**: the study lives in the database; running the same command again continues
  until ``trials`` trials finished (completed or pruned). Trials left ``RUNNING`` by an
  interrupted command are marked failed and their parameters queued again. One command per
  study at a time: a second one would take the first one's running trials for interrupted.
* **Parallel trials are processes** (``jobs``), each with one torch thread, because a small
  2.5D network does not use many cores well; they share the study through the database and
  a lock that makes "count the trials, then start one" atomic, so the total is exact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from training.config import TrainConfig
from training.tuning.objective import run_trial, trial_config, trial_summary
from training.tuning.space import (
    PrunerKind,
    TuneConfig,
    active_knobs,
    apply_params,
    default_params,
)
from training.tuning.storage import open_storage, safe_url

log = logging.getLogger(__name__)

BEST_CONFIG_FILE = "best.yaml"
SUMMARY_FILE = "tune_summary.json"
#: A worker gives up after this many failed trials in a row (a broken config fails them all).
MAX_CONSECUTIVE_FAILURES = 3
_COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


@dataclass(frozen=True)
class SearchRequest:
    """Everything a worker needs (picklable: workers are spawned processes)."""

    config: TrainConfig
    tune: TuneConfig
    trials: int
    storage: str
    study_name: str
    out: Path
    jobs: int = 1
    timeout_min: float | None = None

    def __post_init__(self) -> None:
        for name in ("trials", "jobs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Argument '--{name}' must be an integer >= 1, got {value!r}.")
        if self.timeout_min is not None and not self.timeout_min > 0:
            raise ValueError(f"Argument '--timeout-min' must be > 0, got {self.timeout_min!r}.")
        if not self.study_name.strip():
            raise ValueError("Argument '--study-name' must not be empty.")


@dataclass
class SearchResult:
    """The study after this command: every trial, the default (trial 0) and the best."""

    study_name: str
    storage: str
    trials: list[dict[str, Any]]
    default: dict[str, Any] | None
    best: dict[str, Any] | None
    best_config: Path | None
    wall_seconds: float
    counts: dict[str, int] = field(default_factory=dict)


def build_pruner(tune: TuneConfig) -> optuna.pruners.BasePruner:
    """The configured pruner; it sees one step per validated epoch."""
    kind = tune.pruner
    if kind is PrunerKind.MEDIAN:
        return optuna.pruners.MedianPruner(
            n_startup_trials=tune.startup_trials, n_warmup_steps=tune.warmup_epochs
        )
    if kind is PrunerKind.HYPERBAND:
        return optuna.pruners.HyperbandPruner(min_resource=1)
    if kind is PrunerKind.THRESHOLD:
        return optuna.pruners.ThresholdPruner(
            lower=tune.prune_below, n_warmup_steps=tune.warmup_epochs
        )
    return optuna.pruners.NopPruner()


def _sampler(tune: TuneConfig, worker: int) -> optuna.samplers.BaseSampler:
    # constant_liar: parallel workers do not all propose the point a running trial already has.
    return optuna.samplers.TPESampler(
        seed=tune.seed + worker, n_startup_trials=tune.random_trials, constant_liar=True
    )


def _fingerprint(config: TrainConfig, tune: TuneConfig) -> str:
    """What must not change between runs of one study (the output folder may)."""
    plain = config.model_dump(mode="json")
    plain.pop("output_dir", None)
    tune_plain = tune.model_dump(mode="json")
    tune_plain.pop("keep_checkpoints", None)
    text = json.dumps({"config": plain, "tune": tune_plain}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _prepare_study(request: SearchRequest) -> optuna.Study:
    """Create or reopen the study; requeue interrupted trials; enqueue the default first."""
    storage = open_storage(request.storage)
    study = optuna.create_study(
        study_name=request.study_name,
        storage=storage,
        direction="maximize",
        load_if_exists=True,
        sampler=_sampler(request.tune, 0),
        pruner=build_pruner(request.tune),
    )
    fingerprint = _fingerprint(request.config, request.tune)
    known = study.user_attrs.get("fingerprint")
    if known is None:
        study.set_user_attr("fingerprint", fingerprint)
    elif known != fingerprint:
        raise ValueError(
            f"Study '{request.study_name}' in {safe_url(request.storage)} was started with "
            "another config or search space; pass another --study-name (or the same config)."
        )
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        log.warning(
            "trial %d was interrupted: marked failed, its parameters queued again", trial.number
        )
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        attrs = {**trial.user_attrs, "retry_of": trial.number}
        study.enqueue_trial(trial.params, user_attrs=attrs, skip_if_exists=False)
    if not study.trials:
        knobs = active_knobs(request.config, request.tune)
        study.enqueue_trial(default_params(request.config, knobs), user_attrs={"default": True})
    return study


def _worker(request: SearchRequest, index: int, lock: AbstractContextManager[Any]) -> None:
    """Run trials until the study holds ``request.trials`` of them (or time is up)."""
    logging.getLogger("optuna").setLevel(logging.WARNING)
    study = optuna.load_study(
        study_name=request.study_name,
        storage=open_storage(request.storage),
        sampler=_sampler(request.tune, index),
        pruner=build_pruner(request.tune),
    )
    threads = 1 if request.jobs > 1 else request.config.optim.num_threads
    deadline = (
        time.monotonic() + 60.0 * request.timeout_min if request.timeout_min is not None else None
    )
    failures = 0
    while deadline is None or time.monotonic() < deadline:
        with lock:
            if len(study.get_trials(deepcopy=False, states=_COUNTED)) >= request.trials:
                return
            trial = study.ask()
        start = time.perf_counter()
        try:
            config = trial_config(request.config, request.tune, trial, request.out, threads)
            value = run_trial(config, trial, keep_checkpoints=request.tune.keep_checkpoints)
        except optuna.TrialPruned as exc:
            study.tell(trial, state=TrialState.PRUNED)
            log.info("trial %d %s (%.0f s)", trial.number, exc, time.perf_counter() - start)
            failures = 0
        except Exception as exc:  # a trial's failure must not end the study
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
            study.tell(trial, state=TrialState.FAIL)
            log.warning("trial %d failed: %s: %s", trial.number, type(exc).__name__, exc)
            failures += 1
            if failures >= MAX_CONSECUTIVE_FAILURES:
                log.error("worker %d stops after %d failed trials in a row", index, failures)
                return
        else:
            study.tell(trial, value)
            log.info(
                "trial %d: lesion VolDice %.4f (%.0f s) %s",
                trial.number,
                value,
                time.perf_counter() - start,
                trial.params,
            )
            failures = 0


def _spawned_worker(request: SearchRequest, index: int, lock: Any) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s worker " + str(index) + " %(levelname)s %(name)s: %(message)s",
    )
    _worker(request, index, lock)


def _run_workers(request: SearchRequest) -> None:
    if request.jobs == 1:
        _worker(request, 0, threading.Lock())
        return
    context = multiprocessing.get_context("spawn")
    lock = context.Lock()
    workers = [
        context.Process(target=_spawned_worker, args=(request, i, lock), name=f"tune-{i}")
        for i in range(request.jobs)
    ]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.join()
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
                worker.join()


def write_best_config(request: SearchRequest, best: optuna.trial.FrozenTrial) -> Path:
    """``best.yaml``: the base config with the best trial's values, for ``pulmoseg train``."""
    config = apply_params(request.config, best.params, str(request.out / "best"))
    header = (
        f"# pulmoseg tune: study '{request.study_name}', trial {best.number}, "
        f"validation lesion VolDice {best.value:.4f}\n"
    )
    path = request.out / BEST_CONFIG_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(header + yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    tmp.replace(path)
    return path


def run_search(request: SearchRequest) -> SearchResult:
    """Run (or continue) the search and write ``best.yaml`` and ``tune_summary.json``."""
    start = time.perf_counter()
    request.out.mkdir(parents=True, exist_ok=True)
    study = _prepare_study(request)
    _run_workers(request)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state is TrialState.COMPLETE]
    default = next((t for t in complete if t.user_attrs.get("default")), None)
    best = max(complete, key=lambda t: (t.value, -t.number)) if complete else None
    result = SearchResult(
        study_name=request.study_name,
        storage=safe_url(request.storage),
        trials=[trial_summary(t) for t in trials],
        default=trial_summary(default) if default is not None else None,
        best=trial_summary(best) if best is not None else None,
        best_config=write_best_config(request, best) if best is not None else None,
        wall_seconds=time.perf_counter() - start,
        counts={s.name: sum(t.state is s for t in trials) for s in TrialState},
    )
    summary = {**result.__dict__, "best_config": str(result.best_config)}
    (request.out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))
    return result
