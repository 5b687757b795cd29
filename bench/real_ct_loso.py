"""Leave-study-out check of the real-CT recipe with DICOM negatives (``data.negatives``).

The shipped model learns lesion-free slices from all three COVID-CT-MD studies, so its figures
on those studies are training-set figures. This script gives the honest ones: each fold trains
the same recipe (``training/configs/real_ct.yaml``) with negatives from some studies only and is
evaluated, through the real server (``bench/real_ct_studies.py``), on the studies it never saw:

* ``without_normal002``: negatives from P002 and cap002 → evaluated on normal002
  (lesions as a fraction of the lung);
* ``normal002_only``: negatives from normal002 → evaluated on P002 and cap002 (slice-level
  sensitivity and specificity).

Every step is skipped when its output exists, so an interrupted run resumes. Folds train one
after another with ``num_threads`` threads each, or side by side with ``--parallel`` (1 thread
each). Output: ``runs/real_ct_loso/<fold>/`` (checkpoints, ``model.onnx``, ``eval/``) and
``runs/real_ct_loso/results.md``.

    python bench/real_ct_loso.py --parallel
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from real_ct_studies import DEFAULT_DATA, StudyResult, detection, report

REPO = Path(__file__).resolve().parents[1]
SEMISEG = REPO.parent / "shared" / "data" / "covid-semiseg"


@dataclass(frozen=True)
class Fold:
    name: str
    #: Studies whose negatives the fold may not train on (and on which it is evaluated).
    held_out: tuple[str, ...]


FOLDS = (Fold("without_normal002", ("normal002",)), Fold("normal002_only", ("P002", "cap002")))
#: Negatives of every study: the shipped recipe (its figures on these studies are training-set).
ALL = Fold("all", ())
#: Recipe 2 (``training/configs/real_ct_2.yaml``): every study's slices train the other folds
#: (weak labels, synthetic lesions, unlabeled), so each study is held out on its own.
FOLDS_2 = (
    Fold("without_P002", ("P002",)),
    Fold("without_cap002", ("cap002",)),
    Fold("without_normal002", ("normal002",)),
)
RECIPES = {
    "1": (REPO / "training/configs/real_ct.yaml", FOLDS),
    "2": (REPO / "training/configs/real_ct_2.yaml", FOLDS_2),
}


def _run(command: list[str], log: Path) -> subprocess.Popen:
    with log.open("a") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)


def _wait(process: subprocess.Popen, what: str) -> None:
    if process.wait() != 0:
        raise SystemExit(f"{what} failed (exit {process.returncode}); see its log")


def fold_config(
    base: Path, fold: Fold, out: Path, threads: int, changes: dict[str, str] | None = None
) -> Path:
    """The base recipe with this fold's negatives, output folder and thread count, and
    ``changes`` ("section.key" → YAML value) on top."""
    config = yaml.safe_load(base.read_text())
    for dotted, value in (changes or {}).items():
        section, key = dotted.split(".", 1)
        config[section][key] = yaml.safe_load(value)
    config["output_dir"] = str(out / fold.name)
    if config.get("weak", {}).get("studies"):  # recipe 2: hold the fold's studies out
        config["weak"]["studies"] = str(out / "weak")
        config["weak"]["exclude"] = list(fold.held_out)
    else:
        config["data"]["negatives"] = str(out / "negatives" / fold.name)
    config["optim"]["num_threads"] = threads
    path = out / f"{fold.name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def prepare_weak(out: Path, data: Path, config: Path) -> None:
    """Recipe 2: every study's whole slices at the network's size (one folder, all folds)."""
    if (out / "weak" / "provenance.json").exists():
        return
    command = [sys.executable, "bench/real_ct_weak_slices.py", "--data", str(data)]
    command += ["--out", str(out / "weak"), "--config", str(config)]
    _wait(_run(command, out / "weak.log"), "weak slices")


def prepare(fold: Fold, out: Path, data: Path, extra: list[str]) -> None:
    folder = out / "negatives" / fold.name
    if (folder / "provenance.json").exists():
        return
    command = [sys.executable, "bench/real_ct_negatives.py", "--data", str(data)]
    command += ["--out", str(folder), *extra]
    if fold.held_out:
        command += ["--exclude", *fold.held_out]
    _wait(_run(command, out / f"{fold.name}.negatives.log"), f"negatives of {fold.name}")


def train(fold: Fold, config: Path, out: Path, semiseg: Path) -> subprocess.Popen | None:
    if (out / fold.name / "final.pt").exists():
        return None
    command = [sys.executable, "-m", "service.cli", "train", "--config", str(config)]
    command += ["--data", str(semiseg)]
    if (out / fold.name).exists():
        command.append("--resume")
    return _run(command, out / f"{fold.name}.train.log")


def export_and_evaluate(
    fold: Fold, out: Path, data: Path, constrained: bool = True
) -> list[StudyResult]:
    """Export the fold's model and evaluate it on its held-out studies (with the lung-field
    constraint its manifest declares, or without it)."""
    run = out / fold.name
    model = run / "model.onnx"
    if not model.exists():
        command = [sys.executable, "-m", "service.cli", "export"]
        command += ["--checkpoint", str(run / "final.pt"), "--out", str(model)]
        _wait(_run(command, out / f"{fold.name}.export.log"), f"export of {fold.name}")
    folder = run / ("eval" if constrained else "eval_unconstrained")
    results = folder / "results.json"
    if not results.exists():
        command = [sys.executable, "bench/real_ct_studies.py", "--model", str(model)]
        command += ["--data", str(data), "--out", str(folder)]
        if not constrained:
            command.append("--without-lung-field-constraint")
        if fold.held_out:  # else every study
            command += ["--studies", *fold.held_out]
        _wait(_run(command, out / f"{fold.name}.eval.log"), f"evaluation of {fold.name}")
    return [StudyResult(**r) for r in json.loads(results.read_text())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="COVID-CT-MD folder")
    parser.add_argument("--semiseg", type=Path, default=SEMISEG, help="COVID-SemiSeg folder")
    parser.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default="2",
        help="2: weak labels + synthetic lesions + unlabeled HU studies (real_ct_2.yaml, "
        "default); 1: the 1.1.0 recipe with DICOM negatives (real_ct.yaml)",
    )
    parser.add_argument("--config", type=Path, help="the recipe's config (default: --recipe's)")
    parser.add_argument("--out", type=Path, help="default: runs/real_ct_loso[_2]")
    parser.add_argument("--parallel", action="store_true", help="train the folds side by side")
    parser.add_argument("--min-area-mm2", type=float, default=50.0)
    parser.add_argument(
        "--like-annotated",
        action="store_true",
        help="negatives cropped to the body and stored as JPEG (bench/real_ct_negatives.py)",
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="recipe changes for every fold, e.g. data.negatives_share=0.25",
    )
    parser.add_argument(
        "--with-all",
        action="store_true",
        help="also train on every study's negatives (the shipped recipe) and evaluate it on "
        "all studies: training-set figures, reported apart",
    )
    args = parser.parse_args(argv)
    changes = dict(item.split("=", 1) for item in args.set)
    extra = ["--like-annotated"] if args.like_annotated else []
    default_config, recipe_folds = RECIPES[args.recipe]
    args.config = args.config or default_config
    suffix = "" if args.recipe == "1" else f"_{args.recipe}"
    args.out = (args.out or REPO / "runs" / f"real_ct_loso{suffix}").resolve()
    folds = recipe_folds + ((ALL,) if args.with_all else ())
    args.out.mkdir(parents=True, exist_ok=True)
    weak = bool(yaml.safe_load(args.config.read_text()).get("weak", {}).get("studies"))
    if weak:
        prepare_weak(args.out, args.data, args.config)

    base_threads = int(yaml.safe_load(args.config.read_text())["optim"].get("num_threads", 2))
    threads = 1 if args.parallel else base_threads
    training: dict[str, subprocess.Popen] = {}
    for fold in folds:
        if not weak:
            prepare(fold, args.out, args.data, extra)
        config = fold_config(args.config, fold, args.out, threads, changes)
        process = train(fold, config, args.out, args.semiseg)
        if process is not None:
            training[fold.name] = process
            if not args.parallel:
                _wait(process, f"training of {fold.name}")
    for name, process in training.items():
        _wait(process, f"training of {name}")

    results = [r for fold in recipe_folds for r in export_and_evaluate(fold, args.out, args.data)]
    table = report(results, args.min_area_mm2)
    labeled = [r for r in results if r.labels and r.labels[0] >= 0]
    pooled = detection(labeled, args.min_area_mm2)
    names = ", ".join(f"{f.name}: {'/'.join(f.held_out)}" for f in recipe_folds)
    text = f"Each study evaluated by the fold that never trained on it ({names}).\n\n{table}\n"
    if args.with_all:
        trained = export_and_evaluate(ALL, args.out, args.data)
        text += (
            "\nTrained on every study's negatives (the shipped recipe): training-set figures.\n\n"
            f"{report(trained, args.min_area_mm2)}\n"
        )
    unconstrained = [
        r
        for fold in recipe_folds
        for r in export_and_evaluate(fold, args.out, args.data, constrained=False)
    ]
    text += (
        "\nThe same folds with the lung-field constraint off (the network's own labels: what the "
        f"safety net adds).\n\n{report(unconstrained, args.min_area_mm2)}\n"
    )
    (args.out / "results.md").write_text(text)
    (args.out / "detection.json").write_text(json.dumps(pooled, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
