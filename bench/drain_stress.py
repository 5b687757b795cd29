"""Drain stress: the draining-server test, N times in a row, beside busy CPU burners.

A drain must never drop a caller: running and queued studies finish, late calls get UNAVAILABLE
(never CANCELLED). This runs
``tests/service/serving/test_load_and_faults.py::test_draining_server_finishes_running_and_queued_studies_and_refuses_new_ones``
``--runs`` times in one pytest session (the session model is trained once; every run builds its
own server) while ``--burners`` processes spin on the CPUs. The burners stop by themselves after
``--burn-s`` seconds (and are ended when the runs are done), so nothing outlives the bench.
Prints one line per run and ``passes/failures``; exits 1 if any run failed.

    ulimit -s 32768; .venv/bin/python bench/drain_stress.py --runs 50 [--burners 2]

When pytest loads this file as a plugin (``-p drain_stress``, done by the bench itself), it
repeats every collected test ``DRAIN_STRESS_RUNS`` times through a parameter.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST = (
    "tests/service/serving/test_load_and_faults.py::"
    "test_draining_server_finishes_running_and_queued_studies_and_refuses_new_ones"
)
RUNS_ENV = "DRAIN_STRESS_RUNS"
STACK_BYTES = 32 * 1024 * 1024  # what `make test` runs under (`ulimit -s 32768`)


# -- the pytest plugin side: repeat each test -----------------------------------------------------
@pytest.fixture
def drain_stress_run(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    runs = int(os.environ.get(RUNS_ENV, "1"))
    if runs > 1:
        metafunc.fixturenames.append("drain_stress_run")
        metafunc.parametrize(
            "drain_stress_run", range(1, runs + 1), indirect=True, ids=lambda i: f"run{i}"
        )


# -- the bench side -------------------------------------------------------------------------------
def _burn(until: float) -> None:
    """Spin until ``until`` (monotonic): a CPU burner that ends by itself."""
    x = 0
    while time.monotonic() < until:
        for _ in range(10_000):
            x = (x * 31 + 7) % 1_000_003


def _raise_stack_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_STACK)
    soft = STACK_BYTES if hard == resource.RLIM_INFINITY else min(STACK_BYTES, hard)
    resource.setrlimit(resource.RLIMIT_STACK, (soft, hard))


def _outcomes(junit: Path) -> list[tuple[str, str]]:
    """(test id, 'passed'/'failed'/'error'/'skipped') for every test case in the report."""
    results = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = "failed" if child.tag == "failure" else child.tag
                break
        results.append((case.get("name", "?"), outcome))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="times to run the test (default 50)")
    parser.add_argument("--burners", type=int, default=2, help="busy CPU processes (default 2)")
    parser.add_argument(
        "--burn-s",
        type=float,
        default=None,
        help="seconds the burners run at most (default: 120 + 30 per run)",
    )
    parser.add_argument("--test", default=TEST, help="pytest node id to repeat")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.burners < 0:
        parser.error("--runs must be >= 1 and --burners >= 0")
    burn_s = args.burn_s if args.burn_s is not None else 120.0 + 30.0 * args.runs

    until = time.monotonic() + burn_s
    burners = [
        multiprocessing.Process(target=_burn, args=(until,), name=f"burner-{i}", daemon=True)
        for i in range(args.burners)
    ]
    for burner in burners:
        burner.start()
    print(f"{args.burners} CPU burner(s) for at most {burn_s:.0f} s; {args.runs} run(s)")
    print(f"test: {args.test}")
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            junit = Path(tmp) / "junit.xml"
            env = {
                **os.environ,
                RUNS_ENV: str(args.runs),
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(ROOT / "bench"), str(ROOT), os.environ.get("PYTHONPATH")) if p
                ),
            }
            command = [
                sys.executable, "-m", "pytest", args.test, "-q", "-p", "drain_stress",
                "-p", "no:cacheprovider", f"--junitxml={junit}",
            ]  # fmt: skip
            process = subprocess.run(
                command, cwd=ROOT, env=env, preexec_fn=_raise_stack_limit, check=False
            )
            results = _outcomes(junit) if junit.exists() else []
    finally:
        for burner in burners:
            if burner.is_alive():
                burner.terminate()
            burner.join(10)
    elapsed = time.monotonic() - started
    for name, outcome in results:
        print(f"  {outcome:7s} {name}")
    passes = sum(outcome == "passed" for _, outcome in results)
    failures = len(results) - passes
    print(
        f"drain stress: {passes}/{args.runs} passed, {failures} failed "
        f"({args.burners} burners, {elapsed:.0f} s, pytest exit {process.returncode})"
    )
    return 0 if passes == args.runs and process.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
