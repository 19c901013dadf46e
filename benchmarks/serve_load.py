"""Load test of `dec2vec serve` on loopback: micro-batching on vs one request at a time.

    python benchmarks/serve_load.py [--model smollm2-135m] [--clients 16] [--seconds 60]

For each setting a fresh server process starts (`--max-batch 64` and `--max-batch 1`); N concurrent clients
post one-sentence /v1/embeddings requests (STS-B dev sentences, shuffled) for the given time. Reports
requests/s, embeddings/s, p50/p99 latency, errors and the mean forward-pass batch size (from /metrics).
Then, without HTTP, times ``Encoder.encode`` on one sentence and on batches of the mean batch size: the
ratio is the most micro-batching can gain on this hardware. Prints a table and writes
benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from dec2vec import Encoder

HERE = Path(__file__).resolve().parent
STS = HERE.parents[1] / "shared" / "data" / "sts" / "stsb_dev.tsv"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, max_batch: int, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "dec2vec", "serve", "-m", model, "--dtype", "bfloat16",
               "--port", str(port), "--max-batch", str(max_batch), "--no-generation"]  # fmt: skip
    server = subprocess.Popen(command, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("the server did not come up")


async def load(url: str, sentences: list[str], clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def client(offset: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            i = offset
            while time.perf_counter() < stop:
                start = time.perf_counter()
                response = await http.post("/v1/embeddings", json={"input": sentences[i % len(sentences)]})
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors += 1
                i += clients

    start = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    elapsed = time.perf_counter() - start
    return {
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "embeddings_per_s": round(len(latencies) / elapsed, 1),  # one text per request
        "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 1),
        "p99_ms": round(1000 * float(np.percentile(latencies, 99)), 1),
        "requests": len(latencies),
        "errors": errors,
    }


def mean_batch(url: str) -> float:
    metrics = httpx.get(f"{url}/metrics").text
    total = count = 0.0
    for line in metrics.splitlines():
        if line.startswith("dec2vec_batch_size_sum"):
            total = float(line.split()[-1])
        elif line.startswith("dec2vec_batch_size_count"):
            count = float(line.split()[-1])
    return round(total / count, 2) if count else 0.0


def model_only(model: str, sentences: list[str], batch: int, seconds: float = 15) -> dict:
    """Embeddings/s of ``Encoder.encode`` alone, one sentence per call and ``batch`` per call."""
    encoder = Encoder.load(model, dtype="bfloat16")
    rates = {}
    for size in (1, batch):
        encoder.encode(sentences[:size], batch_size=size)  # warm-up
        done, start, i = 0, time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            encoder.encode(sentences[i : i + size], batch_size=size, show_progress=False)
            done, i = done + size, (i + size) % (len(sentences) - size)
        rates[size] = done / (time.perf_counter() - start)
    return {"batch": batch, "embeddings_per_s_batch_1": round(rates[1], 1),
            f"embeddings_per_s_batch_{batch}": round(rates[batch], 1),
            "ceiling": round(rates[batch] / rates[1], 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    with STS.open(encoding="utf-8") as f:
        pairs = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    # Both columns in a fixed random order: requests of mixed lengths arrive together, as in real traffic
    # (the file's own order groups sentences of one source and similar length).
    sentences = [row[column] for row in pairs for column in ("sentence1", "sentence2")]
    random.Random(0).shuffle(sentences)
    rows = []
    for label, max_batch in (("micro-batching (max 64)", 64), ("one request at a time", 1)):
        port = free_port()
        server = start_server(args.model, max_batch, port)
        url = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(load(url, sentences, args.clients, 3))  # warm-up
            result = asyncio.run(load(url, sentences, args.clients, args.seconds))
            rows.append({"setting": label, **result, "mean_batch": mean_batch(url)})
        finally:
            server.terminate()
            server.wait()
    speedup = rows[0]["embeddings_per_s"] / rows[1]["embeddings_per_s"]
    table = Table(
        *rows[0].keys(), title=f"{args.clients} clients for {args.seconds:.0f} s, {args.model} bf16"
    )
    for row in rows:
        table.add_row(*map(str, row.values()))
    console = Console(width=200)
    console.print(table)
    console.print(f"micro-batching: {speedup:.2f}x the embeddings/s of one request at a time")
    alone = model_only(args.model, sentences, max(1, round(rows[0]["mean_batch"])))
    console.print(f"the model alone, without HTTP: {alone}")
    out = {"model": args.model, "clients": args.clients, "seconds": args.seconds, "results": rows,
           "speedup": round(speedup, 2), "model_only": alone}  # fmt: skip
    (HERE / "results" / "serve_load.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
