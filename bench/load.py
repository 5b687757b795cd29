"""Load bench: a real `pulmoseg serve` process with default settings, N clients at once.

For each concurrency level the same phantom studies are sent by that many client threads;
the table shows studies per minute, failures by status code, the most a study waited in the
queue and the server's resident memory (VmRSS of the server process) after the first
``--rss-early`` studies and at the end — flat memory means the two stay within 10 %.
Figures go to docs/benchmarks.md with machine and date.

    python bench/load.py --model model.onnx [--levels 1 2 4 8] [--studies 24] [--long 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from service.client.client import ClientError, SegmentationClient
from training.phantom import generate_dataset


def _rss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else float("nan")


def _start_server(model: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PULMOSEG_MODEL_PATH": str(model), "PULMOSEG_PORT": "0"}
    env["PULMOSEG_METRICS_ENABLED"] = "0"
    process = subprocess.Popen(
        [sys.executable, "-m", "service.serving.server"], env=env, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    for line in process.stderr:
        match = re.search(r"gRPC server bound to (\S+)", line)
        if match:
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, match.group(1)
    raise RuntimeError(f"the server exited ({process.wait()}) before binding a port")


def _run_level(
    address: str, studies: list[list[Path]], concurrency: int, pid: int, rss_early: int
) -> dict:
    codes: Counter[str] = Counter()
    waited: list[int] = []
    done = 0
    rss_after_early = float("nan")
    lock = threading.Lock()

    def one(files: list[Path]) -> None:
        nonlocal done, rss_after_early
        with SegmentationClient(address, timeout_s=900) as client:
            try:
                client.segment_files(files, on_queue_position=waited.append)
                code = "OK"
            except ClientError as exc:
                code = exc.code.name if exc.code is not None else "CLIENT"
        with lock:
            codes[code] += 1
            done += 1
            if done == rss_early:
                rss_after_early = _rss_mib(pid)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, studies))
    seconds = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "studies": len(studies),
        "ok": codes["OK"],
        "failed": {k: v for k, v in codes.items() if k != "OK"},
        "seconds": seconds,
        "per_minute": 60 * codes["OK"] / seconds,
        "max_queue_position": max(waited, default=0),
        "rss_early_mib": rss_after_early,
        "rss_end_mib": _rss_mib(pid),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="exported model.onnx")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--studies", type=int, default=24, help="studies per level")
    parser.add_argument("--long", type=int, default=0, help="then this many at the top level")
    parser.add_argument("--rss-early", type=int, default=50, help="RSS sample after N studies")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pulmoseg-load-") as tmp:
        root = Path(tmp)
        manifest = generate_dataset(
            root, studies=4, seed=7, size=args.size, slices=args.slices, progress=False
        )
        folders = [root / s["dicom"] for s in json.loads(manifest.read_text())["studies"]]
        series = [sorted(p for p in f.rglob("*") if p.is_file()) for f in folders]
        process, address = _start_server(args.model)
        try:
            with SegmentationClient(address, timeout_s=30) as client:
                client.wait_until_serving(timeout_s=300)
            rows = []
            for level in args.levels:
                studies = [series[i % len(series)] for i in range(args.studies)]
                rows.append(_run_level(address, studies, level, process.pid, args.rss_early))
                print(f"concurrency {level}: {rows[-1]['per_minute']:.1f} studies/min", flush=True)
            if args.long:
                studies = [series[i % len(series)] for i in range(args.long)]
                rows.append(
                    _run_level(address, studies, max(args.levels), process.pid, args.rss_early)
                )
        finally:
            process.terminate()
            process.wait(timeout=60)

    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{platform.python_version()}; study {args.size}x{args.size}x{args.slices}")  # fmt: skip
    print("| clients | studies | OK | failed | studies/min | max queue pos | RSS early | RSS end |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        failed = ", ".join(f"{k} {v}" for k, v in r["failed"].items()) or "0"
        print(
            f"| {r['concurrency']} | {r['studies']} | {r['ok']} | {failed} | "
            f"{r['per_minute']:.1f} | {r['max_queue_position']} | "
            f"{r['rss_early_mib']:.0f} MiB | {r['rss_end_mib']:.0f} MiB |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
