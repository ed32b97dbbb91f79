"""Load test of `lorafit serve` on loopback only: N concurrent clients for T seconds, each sending
one AG News text per request, against lorafit's micro-batching server and the plain server
(`--no-batching`: one forward pass per request) built from the same run.

python bench/serve_load.py RUN [--clients 32] [--seconds 20]   (make bench runs it on a MiniLM run)
Prints one JSON object: requests/s, texts/s, p50/p99 latency and errors for each server, and the
model alone at a batch of one text per client (the ceiling for any server here). The micro-batching
server and the model alone take turns in slices of a few seconds, so that the host's speed drifting
over a minute (shared machines do) moves both sides of their ratio alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
AGNEWS = ROOT.parent / "shared" / "data" / "ag_news" / "train.csv"
CLIENTS = 32


def agnews_texts() -> list[str]:
    """The last 1,000 AG News rows, cut at 300 characters (a request's text)."""
    import pandas as pd

    return [t[:300] for t in pd.read_csv(AGNEWS).text.tolist()[-1000:]]


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


@dataclass
class Load:
    """Every request's latency and outcome; throughput counts the answers that came within the window
    (the cycle cut by its end is as likely cut early as late, so the count is unbiased)."""

    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    answered_in_window: int = 0  # without errors

    def add(self, other: Load) -> None:
        self.seconds += other.seconds
        self.latencies += other.latencies
        self.errors += other.errors
        self.answered_in_window += other.answered_in_window

    def summary(self) -> dict:
        latencies, count = sorted(self.latencies), len(self.latencies)
        return {
            "requests": count,
            "errors": self.errors,
            "seconds": round(self.seconds, 2),
            "texts_per_s": self.answered_in_window / self.seconds,
            "p50_ms": 1000 * latencies[count // 2],
            "p99_ms": 1000 * latencies[min(count - 1, int(count * 0.99))],
        }


async def load(url: str, texts: list[str], clients: int, seconds: float) -> Load:
    """`clients` connections, each sending its next text as soon as the previous answer came back."""
    host, port = url.rsplit("//", 1)[1].split(":")
    bodies = [json.dumps({"texts": [text]}).encode() for text in texts]
    measured = Load(seconds)
    stop = time.perf_counter() + seconds

    async def client(index: int) -> None:
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
                end = time.perf_counter()
                measured.latencies.append(end - start)
                measured.errors += not ok
                measured.answered_in_window += ok and end <= stop
                i += clients
        finally:
            connection.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return measured


@contextmanager
def server(run_dir: str, batching: bool, texts: list[str], clients: int):
    """A `lorafit serve` process on a free port, warmed up; yields its URL."""
    port = free_port()
    command = [sys.executable, "-m", "lorafit", "serve", run_dir, "--port", str(port)]
    process = subprocess.Popen(
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
            if process.poll() is not None:
                raise SystemExit(f"server failed: {process.stderr.read()[-2000:]}")
        asyncio.run(load(url, texts, clients, 2))  # warm-up: first shapes, connections
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def plain_server(run_dir: str, texts: list[str], clients: int, seconds: float) -> dict:
    with server(run_dir, False, texts, clients) as url:
        return asyncio.run(load(url, texts, clients, seconds)).summary()


class ModelAlone:
    """The ceiling for any server here: the same inference path, batches of one text per client back
    to back, with no HTTP, no event loop and no load client sharing the cores; measured in turns."""

    def __init__(self, run_dir: str, texts: list[str], clients: int):
        from lorafit.inference import ensemble_proba, load_run

        self.run, self.texts, self.clients = load_run(run_dir), texts, clients
        ensemble_proba(self.run, texts[:clients])  # warm-up
        self.done, self.seconds = 0, 0.0

    def turn(self, seconds: float) -> None:
        from lorafit.inference import ensemble_proba

        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            first = self.done % (len(self.texts) - self.clients)
            ensemble_proba(self.run, self.texts[first : first + self.clients])
            self.done += self.clients
        self.seconds += time.perf_counter() - start

    def summary(self) -> dict:
        return {"batch": self.clients, "texts_per_s": self.done / self.seconds}


def batching_server_and_model_alone(run_dir: str, texts: list[str], clients: int, seconds: float, slices: int) -> dict:
    """The micro-batching server under load and the model alone in alternating slices of `seconds / slices`."""
    alone, served = ModelAlone(run_dir, texts, clients), Load(0.0)
    with server(run_dir, True, texts, clients) as url:
        for _ in range(slices):
            served.add(asyncio.run(load(url, texts, clients, seconds / slices)))
            alone.turn(seconds / slices)
    return {"lorafit": served.summary(), "model_alone": alone.summary(), "slices": slices}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--slices", type=int, default=4, help="turns of the batching server and the model alone")
    options = parser.parse_args()
    texts = agnews_texts()
    result = {
        "clients": options.clients,
        "seconds": options.seconds,
        "plain": plain_server(options.run, texts, options.clients, options.seconds),
        **batching_server_and_model_alone(options.run, texts, options.clients, options.seconds, options.slices),
        "gather_stops_at_previous_batch": True,  # the batcher since a15981e; older runs waited out max_wait_ms
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
