"""The training image recipe (docker/train.Dockerfile): hadolint-clean, a build context that
holds what it copies (training/ included, unlike the serving image's), and a hashed lock that
keeps the serving packages at their serving versions and adds the [train] extra.

Building it needs the production base (CPython 3.12) and several GB of CUDA wheels: not done on
this machine (docs/deploy.md, "Training on the cluster").
"""

from __future__ import annotations

import re
import shlex
import tomllib

from packaging.requirements import Requirement
from test_dockerfile import REPO_ROOT, parse_instructions, run_hadolint

TRAIN_DOCKERFILE = REPO_ROOT / "docker" / "train.Dockerfile"
TRAIN_IGNORE = REPO_ROOT / "docker" / "train.Dockerfile.dockerignore"
_PIN = re.compile(r"^([a-z0-9][a-z0-9._-]*)==(\S+) \\$", re.M)


def _pins(path) -> dict[str, str]:
    return dict(_PIN.findall(path.read_text()))


def test_hadolint_reports_no_findings() -> None:
    assert run_hadolint(TRAIN_DOCKERFILE) == []


def test_the_context_holds_every_copied_source_and_the_training_code() -> None:
    allowed = {
        line[1:].strip().rstrip("/")
        for line in TRAIN_IGNORE.read_text().splitlines()
        if line.startswith("!")
    }
    assert "training" in allowed
    instructions = parse_instructions(TRAIN_DOCKERFILE.read_text())
    sources = []
    for keyword, arg in instructions:
        if keyword == "COPY":
            words = shlex.split(arg)
            sources += [w.rstrip("/") for w in words[:-1] if not w.startswith("--")]
    # ${TRAIN_LOCK} is copied from its ARG default.
    assert ("ARG", "TRAIN_LOCK=requirements/train.lock") in instructions
    sources = ["requirements/train.lock" if s == "${TRAIN_LOCK}" else s for s in sources]
    assert {"training", "service", "requirements/train.lock"} <= set(sources)
    assert [s for s in sources if s not in allowed] == []
    assert instructions[-2:] == [("USER", "10001:10001"), ("WORKDIR", "/tmp")]


def test_the_lock_is_the_serving_lock_plus_the_train_extra() -> None:
    serve = _pins(REPO_ROOT / "requirements" / "serve.lock")
    train = _pins(REPO_ROOT / "requirements" / "train.lock")
    changed = {name: (v, train[name]) for name, v in serve.items() if train.get(name) != v}
    assert changed == {}, "the training image must keep the serving versions"
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    for line in extras["optional-dependencies"]["train"]:
        requirement = Requirement(line)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in train, f"{name} of the train extra is not in train.lock"
        assert requirement.specifier.contains(train[name]), (name, train[name])
    assert "torch" in train and "cupy-cuda13x" not in train
