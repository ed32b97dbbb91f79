"""Load test of `lorafit serve` on loopback only: N concurrent clients for T seconds, each sending
one AG News text per request, against lorafit's micro-batching server and the plain server
(`--no-batching`: one forward pass per request) built from the same run.

python bench/serve_load.py RUN [--clients 32] [--seconds 20]   (make bench runs it on a MiniLM run)
Prints one JSON object: requests/s, texts/s, p50/p99 latency and errors for each server, and the
model alone at a batch of one text per client (the ceiling for any server here).
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

ROOT = Path(__file__).resolve().parents[1]
AGNEWS = ROOT.parent / "shared" / "data" / "ag_news" / "train.csv"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Connection:
    """One keep-alive HTTP/1.1 connection that sends prepared POSTs and reads their replies. httpx
    spent about a millisecond of the shared cores per request; real clients run elsewhere, so the
    load client here should take as little of the server's CPU as it can."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readuntil(b"\r\n")
        length = 0
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def load(url: str, texts: list[str], clients: int, seconds: float) -> dict:
    """`clients` connections, each sending its next text as soon as the previous answer came back."""
    host, port = url.rsplit("//", 1)[1].split(":")
    bodies = [json.dumps({"texts": [text]}).encode() for text in texts]
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def client(index: int) -> None:
        nonlocal errors
        connection = Connection(host, int(port))
        await connection.open()
        i = index
        try:
            while time.perf_counter() < stop:
                start = time.perf_counter()
                try:
                    status, reply = await connection.post("/v1/classify", bodies[i % len(bodies)])
                    ok = status == 200 and len(json.loads(reply)["predictions"]) == 1
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    ok = False
                    connection.close()
                    await connection.open()
                latencies.append(time.perf_counter() - start)
                errors += not ok
                i += clients
        finally:
            connection.close()

    began = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    count = len(latencies)
    return {
        "requests": count,
        "errors": errors,
        "seconds": round(elapsed, 2),
        "requests_per_s": count / elapsed,
        "texts_per_s": (count - errors) / elapsed,
        "p50_ms": 1000 * latencies[count // 2],
        "p99_ms": 1000 * latencies[min(count - 1, int(count * 0.99))],
    }


def run_server(run_dir: str, batching: bool, texts: list[str], clients: int, seconds: float) -> dict:
    port = free_port()
    command = [sys.executable, "-m", "lorafit", "serve", run_dir, "--port", str(port)]
    server = subprocess.Popen(
        command + ([] if batching else ["--no-batching"]), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
            if server.poll() is not None:
                raise SystemExit(f"server failed: {server.stderr.read()[-2000:]}")
        asyncio.run(load(url, texts, clients, 2))  # warm-up: first shapes, connections
        return asyncio.run(load(url, texts, clients, seconds))
    finally:
        server.terminate()
        server.wait(timeout=30)


def model_alone(run_dir: str, texts: list[str], batch: int, seconds: float) -> dict:
    """The ceiling for any server on this machine: the same inference path, batches of `batch` texts
    back to back, with no HTTP, no event loop and no load client sharing the cores."""
    from lorafit.inference import ensemble_proba, load_run

    run = load_run(run_dir)
    ensemble_proba(run, texts[:batch])
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        first = done % (len(texts) - batch)
        ensemble_proba(run, texts[first : first + batch])
        done += batch
    return {"batch": batch, "texts_per_s": done / (time.perf_counter() - start)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20)
    options = parser.parse_args()
    import pandas as pd

    texts = [t[:300] for t in pd.read_csv(AGNEWS).text.tolist()[-1000:]]
    result = {
        "clients": options.clients,
        "seconds": options.seconds,
        "plain": run_server(options.run, False, texts, options.clients, options.seconds),
        "lorafit": run_server(options.run, True, texts, options.clients, options.seconds),
        "model_alone": model_alone(options.run, texts, options.clients, min(options.seconds, 10)),
        "gather_stops_at_previous_batch": True,  # the batcher since a15981e; older runs waited out max_wait_ms
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
