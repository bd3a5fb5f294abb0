"""Load test of `selfknow serve` on loopback: requests/s, latency and memory at 1, 8 and 32 clients.

    .venv/bin/python bench/serve_load.py --target runs/bench      # a tuned run (its best estimator)
    .venv/bin/python bench/serve_load.py --target smollm2         # the bare embedded model (zero-shot query)

Starts the service as a real uvicorn process, then for each number of concurrent clients sends a
bounded number of `/v1/ask` requests (built-in test questions) from that many clients, each waiting for
its answer before it sends the next. A request refused with 503 is counted and not retried. The same
load runs against a server that answers one request at a time (`--max-batch 1`), so the gain from
batching is measured rather than assumed. Peak memory is the server's VmHWM from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from selfknow.data.registry import load_dataset


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, target: str, *options: str):
        self.port = free_port()
        selfknow = Path(sys.executable).with_name("selfknow")
        command = [str(selfknow), "serve", target, "--port", str(self.port), *options]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited: {self.process.stderr.read()}")
            if time.monotonic() > deadline:
                raise SystemExit("the server did not start in 300 s")
            time.sleep(0.5)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


async def load(url: str, questions: list[str], clients: int, per_client: int) -> dict:
    latencies, refused, failed = [], 0, 0
    answered: list[dict] = []

    async def client(index: int, http: httpx.AsyncClient) -> None:
        nonlocal refused, failed
        for k in range(per_client):
            question = questions[(index * per_client + k) % len(questions)]
            start = time.perf_counter()
            response = await http.post(url + "/v1/ask", json={"question": question})
            if response.status_code == 503:
                refused += 1
                await asyncio.sleep(0.05)
                continue
            if response.status_code != 200:
                failed += 1
                continue
            latencies.append(time.perf_counter() - start)
            answered.append(response.json())

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(clients)))
        seconds = time.perf_counter() - start
    complete = all(isinstance(a.get("answer"), str) and 0 <= a.get("confidence", -1) <= 1 for a in answered)
    ms = np.array(latencies) * 1000
    return {
        "clients": clients,
        "sent": clients * per_client,
        "answered": len(answered),
        "refused_503": refused,
        "failed": failed,
        "every_answer_complete": complete,
        "seconds": round(seconds, 1),
        "requests_per_s": round(len(answered) / seconds, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 0) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 0) if len(ms) else None,
    }


def run_levels(target: str, questions: list[str], levels: list[int], per_client: int, options: list[str]) -> list:
    server = Server(target, *options)
    try:
        rows = []
        for clients in levels:
            row = asyncio.run(load(server.url, questions, clients, per_client))
            row["server_rss_mb"] = round(memory_mb(server.process.pid, "VmRSS"))
            row["server_peak_rss_mb"] = round(memory_mb(server.process.pid, "VmHWM"))
            print(json.dumps(row), flush=True)
            rows.append(row)
        return rows
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="smollm2", help="run directory or model spec to serve")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--per-client", type=int, default=4, help="requests each client sends")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-pending", type=int, default=16, help="below the 32 clients, to exercise 503s")
    parser.add_argument("--out", type=Path, default=Path("bench/results/serve_load.json"))
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    questions = [r.question for r in load_dataset("builtin", split="test", format="oe")]
    np.random.default_rng(0).shuffle(questions)
    common = ["--max-pending", str(args.max_pending)]
    results = {
        "target": args.target,
        "per_client": args.per_client,
        "batched": run_levels(
            args.target, questions, levels, args.per_client, [*common, "--max-batch", str(args.max_batch)]
        ),
        "one_at_a_time": run_levels(args.target, questions, [8], args.per_client, [*common, "--max-batch", "1"]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
