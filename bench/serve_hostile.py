"""A hostile load test of `mtl-hf serve` beside a friendly one, in one run, on 127.0.0.1.

    python bench/serve_hostile.py [--seconds 20] [--clients 16] [--model "data-bound stand-in"]

The server (bench/inference_throughput.py's model, 224 px, the shop's four tasks) starts three times in a
subprocess, and `--clients` threads send requests for `--seconds` each time:

- friendly: every client sends good photos (800-px JPEGs from bench/jpeg_decode.py), one request after the other;
- hostile: half the clients send good photos, the other half cycle through a flat 40 MP PNG (about 100 KB on the
  wire, 120 MB decoded; at the per-photo limit, so it is decoded), a 48 MP one (over it), a truncated JPEG, a
  request of 16 40-MP PNGs (over the per-request pixel budget), and a slow upload (the headers, then 64 bytes every
  0.5 s until the server gives up or the run ends);
- hostile, limits lifted: the same with `--decode_workers 16 --max_queued_images 100000 --max_request_pixels
  10**12`: what the bounds buy.

The table gives, per run: the server's peak resident memory (sampled every 20 ms), the good requests answered and
failed (any status but 200, or no answer), their median and 99th-percentile latency, and the hostile requests by
the status they got. The clients run on the same cores as the server: their own cost is in the figures.
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from inference_throughput import MODELS, build_model  # noqa: E402
from jpeg_decode import photos  # noqa: E402
from serve_load import running_server, timed_post  # noqa: E402

RUNS = {
    "friendly": ([], False),
    "hostile": ([], True),
    "hostile, limits lifted": (
        ["--decode_workers", "16", "--max_queued_images", "100000", "--max_request_pixels", str(10**12)],
        True,
    ),
}


def flat_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 180, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


def hostile_uploads(good: bytes) -> list[tuple[str, object]]:
    at_limit, over_limit = flat_png(8000, 5000), flat_png(8000, 6000)
    return [
        ("40 MP flat PNG", at_limit),
        ("48 MP flat PNG", over_limit),
        ("truncated JPEG", good[: len(good) // 3]),
        ("16 x 40 MP in one request", [("file", (f"{i}.png", at_limit, "image/png")) for i in range(16)]),
        ("slow upload", None),
    ]


def slow_upload(port: int, stop: threading.Event) -> str:
    """Sends a request's headers, then 64 bytes every 0.5 s; returns the status line the server answered, if any."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        connection.sendall(
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nContent-Length: 1000000\r\n\r\n"
        )
        connection.settimeout(0.5)
        while not stop.is_set():
            try:
                connection.sendall(b"\0" * 64)
                answer = connection.recv(200)
                if answer:
                    return answer.split(b"\r\n", 1)[0].decode(errors="replace").split(" ")[1]
            except TimeoutError:
                continue
            except OSError:
                return "closed"
        return "run ended"


def run(model: Path, flags: list[str], hostile: bool, good: list[bytes], clients: int, seconds: float) -> dict:
    peak, sampling = [0], threading.Event()

    def sample(pid: int) -> None:
        process = psutil.Process(pid)
        while not sampling.is_set():
            try:
                peak[0] = max(peak[0], process.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            time.sleep(0.02)

    with running_server(model, flags, good[0]) as (url, port, server):
        idle = psutil.Process(server.pid).memory_info().rss
        threading.Thread(target=sample, args=(server.pid,), daemon=True).start()
        latencies, failures, hostile_outcomes = [], [], collections.Counter()
        lock, stop = threading.Lock(), threading.Event()
        bad = hostile_uploads(good[0])

        def good_client(index: int) -> None:
            session, number = requests.Session(), 0
            while not stop.is_set():
                ok, seconds = timed_post(session, url, good[(index + number) % len(good)])
                number += 1
                with lock:
                    (latencies if ok else failures).append(seconds)

        def hostile_client(index: int) -> None:
            session, number = requests.Session(), index
            while not stop.is_set():
                kind, payload = bad[number % len(bad)]
                number += 1
                try:
                    if payload is None:
                        status = slow_upload(port, stop)
                    elif isinstance(payload, list):
                        status = str(session.post(f"{url}/predict", files=payload, timeout=120).status_code)
                    else:
                        headers = {"Content-Type": "image/png"}
                        status = str(
                            session.post(f"{url}/predict", data=payload, headers=headers, timeout=120).status_code
                        )
                except requests.RequestException as error:
                    status = type(error).__name__
                with lock:
                    hostile_outcomes[f"{kind}: {status}"] += 1

        hostile_count = clients // 2 if hostile else 0
        threads = [threading.Thread(target=good_client, args=(i,)) for i in range(clients - hostile_count)]
        threads += [threading.Thread(target=hostile_client, args=(i,)) for i in range(hostile_count)]
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        stop.set()
        for thread in threads:
            thread.join()
        sampling.set()
    latencies.sort()
    return {
        "idle_mb": idle / 2**20,
        "peak_mb": peak[0] / 2**20,
        "answered": len(latencies),
        "failed": len(failures),
        "p50": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000 if latencies else float("nan"),
        "hostile": dict(sorted(hostile_outcomes.items())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--model", default="data-bound stand-in", choices=list(MODELS))
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; model {args.model}; "
        f"{args.clients} clients for {args.seconds:g} s a run (hostile runs: half of them hostile)"
    )
    good = photos(16, 800)
    with tempfile.TemporaryDirectory() as scratch:
        model = build_model(Path(scratch), MODELS[args.model])
        results = {
            name: run(model, flags, hostile, good, args.clients, args.seconds)
            for name, (flags, hostile) in RUNS.items()
        }
    print("\n| run | server memory idle / peak MB | good answered | good failed | good p50 ms | good p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, result in results.items():
        print(
            f"| {name} | {result['idle_mb']:.0f} / {result['peak_mb']:.0f} | {result['answered']} | "
            f"{result['failed']} | {result['p50']:.0f} | {result['p99']:.0f} |"
        )
    for name, result in results.items():
        if result["hostile"]:
            print(f"\n{name}, hostile requests by outcome:\n")
            for outcome, count in result["hostile"].items():
                print(f"- {outcome}: {count}")


if __name__ == "__main__":
    main()
