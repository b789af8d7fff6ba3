"""Scrapes ``/metrics`` in a loop from a process of its own and reports latencies.

``python -m bench.metrics_probe URL [--pause S]`` prints ``ready`` once the endpoint answers,
then obeys lines on standard input: ``start`` begins a measurement (GET, pause, GET, ...),
``stop`` ends it and prints one JSON line ``{"count", "p50_ms", "p99_ms", "max_ms",
"errors"}``; end of input exits. A separate process, like Prometheus, so the probe never
competes with the server for its interpreter lock.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import httpx


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics_probe")
    parser.add_argument("url")
    parser.add_argument("--pause", type=float, default=0.02)
    args = parser.parse_args(argv)
    running = threading.Event()
    done = threading.Event()
    samples: list[float] = []
    errors = 0

    with httpx.Client(timeout=30) as client:
        client.get(args.url).raise_for_status()
        print("ready", flush=True)

        def loop() -> None:
            nonlocal errors
            while not done.is_set():
                if not running.wait(0.05):
                    continue
                started = time.perf_counter()
                try:
                    response = client.get(args.url)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - started
                if running.is_set():
                    if ok:
                        samples.append(elapsed)
                    else:
                        errors += 1
                time.sleep(args.pause)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        for line in sys.stdin:
            command = line.strip()
            if command == "start":
                samples.clear()
                errors = 0
                running.set()
            elif command == "stop":
                running.clear()
                time.sleep(0.01)
                taken = list(samples)
                report = {
                    "count": len(taken),
                    "p50_ms": percentile(taken, 0.50) * 1000,
                    "p99_ms": percentile(taken, 0.99) * 1000,
                    "max_ms": max(taken, default=float("nan")) * 1000,
                    "errors": errors,
                }
                print(json.dumps(report), flush=True)
        done.set()
        thread.join(5)


if __name__ == "__main__":
    main()
