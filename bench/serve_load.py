"""A load test of `mtl-hf serve`: concurrent clients on 127.0.0.1, dynamic batching on vs off, in one run.

    python bench/serve_load.py [--clients 16] [--requests 50] [--repeats 1]

For each model (bench/inference_throughput.py's ViT-Tiny/16 and data-bound stand-in, 224 px, the shop's four
tasks) the server starts twice in a subprocess: batching on (`--max_batch_size 32 --max_wait_ms 10`) and off
(`--max_batch_size 1 --max_wait_ms 0`: one forward a photo). `--clients` threads each send `--requests`
requests, one after the other, each one 800-px JPEG from bench/jpeg_decode.py's catalogue as the body. The table
gives the requests answered and failed (any status but 200, or no answer), requests/s over the whole run, the
median and 99th-percentile latency, and the photos per forward the server reports. The clients run on the same
2 cores as the server: their own cost is in the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from inference_throughput import MODELS, build_model  # noqa: E402
from jpeg_decode import photos  # noqa: E402

SETTINGS = {
    "batching on": ["--max_batch_size", "32", "--max_wait_ms", "10"],
    "batching off": ["--max_batch_size", "1", "--max_wait_ms", "0"],
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(model: Path, flags: list[str], warm_up: bytes):
    """`mtl-hf serve MODEL` in a subprocess on a free port, answered once (warm); yields (url, port, process),
    then ends it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "mtl_hf", "serve", str(model), "--port", str(port), *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                requests.get(f"{url}/health", timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.2)
        requests.post(f"{url}/predict", data=warm_up, headers={"Content-Type": "image/jpeg"}, timeout=60)
        yield url, port, server
    finally:
        server.terminate()
        server.wait(timeout=60)


def timed_post(session: requests.Session, url: str, photo: bytes) -> tuple[bool, float]:
    """(answered with a 200, seconds taken) for one JPEG posted to the server at `url`."""
    started = time.perf_counter()
    try:
        response = session.post(f"{url}/predict", data=photo, headers={"Content-Type": "image/jpeg"}, timeout=120)
        ok = response.status_code == 200
    except requests.RequestException:
        ok = False
    return ok, time.perf_counter() - started


def load(model: Path, flags: list[str], uploads: list[bytes], clients: int, count: int) -> dict:
    with running_server(model, flags, uploads[0]) as (url, _, _):
        before = requests.get(f"{url}/health", timeout=10).json()
        latencies, failures = [], []
        lock = threading.Lock()

        def client(index: int) -> None:
            session = requests.Session()
            for number in range(count):
                ok, seconds = timed_post(session, url, uploads[(index + number) % len(uploads)])
                with lock:
                    (latencies if ok else failures).append(seconds)

        threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        after = requests.get(f"{url}/health", timeout=10).json()
    latencies.sort()
    batches = after["batches"] - before["batches"]
    return {
        "answered": len(latencies),
        "failed": len(failures),
        "per_second": len(latencies) / wall,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000,
        "photos_per_forward": (after["images"] - before["images"]) / max(batches, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {list(MODELS)}")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; {args.clients} clients x "
        f"{args.requests} requests, one 800-px JPEG each; {args.repeats} repeat(s), the median shown"
    )
    uploads = photos(16, 800)
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models.split(","):
            root = Path(scratch) / name.replace("/", "-").replace(" ", "-")
            root.mkdir()
            model = build_model(root, MODELS[name])
            runs = {setting: [] for setting in SETTINGS}
            for _ in range(args.repeats):
                for setting, flags in SETTINGS.items():
                    runs[setting].append(load(model, flags, uploads, args.clients, args.requests))
            print(f"\n## {name}\n")
            print(
                "| server | answered | failed | requests/s | p50 ms | p99 ms | photos a forward | requests/s vs off |"
            )
            print("|---|---:|---:|---:|---:|---:|---:|---:|")
            off = statistics.median(run["per_second"] for run in runs["batching off"])
            for setting, results in runs.items():
                middle = sorted(results, key=lambda run: run["per_second"])[len(results) // 2]
                print(
                    f"| {setting} | {middle['answered']} | {middle['failed']} | {middle['per_second']:.1f} | "
                    f"{middle['p50']:.0f} | {middle['p99']:.0f} | {middle['photos_per_forward']:.1f} | "
                    f"{middle['per_second'] / off:.2f}x |"
                )


if __name__ == "__main__":
    main()
