"""`lorafit serve`: a finished run behind an HTTP API, with micro-batching and a page to try it.

Concurrent requests are gathered for at most a few milliseconds into one batch, which runs
through the fast inference path (merged weights, length-sorted, bf16 where supported) in a
worker thread; each request then gets its own rows back. Requests are bounded (texts per
request, characters per text) and every refusal is a JSON error naming the limit.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from .inference import LoadedRun, ensemble_proba, input_problem, is_pair_run, model_inputs

PAGE = Path(__file__).with_name("page.html")


class ClassifyRequest(BaseModel):
    texts: list[str | list[str]] = Field(
        ..., description="the texts to classify, or [first, second] pairs for a sentence-pair run (GET /v1/model)"
    )


class Prediction(BaseModel):
    label: str
    index: int
    probabilities: dict[str, float]


class ClassifyResponse(BaseModel):
    predictions: list[Prediction]


class ErrorResponse(BaseModel):
    error: dict = Field(..., description="{code, message}; the message names the limit or the field")


@dataclass
class Limits:
    max_texts: int = 64
    max_chars: int = 10_000
    max_wait_ms: float = 5.0
    max_batch: int = 256


class MicroBatcher:
    """One model, many concurrent callers: texts queued within `max_wait_ms` of the first share
    one forward pass (at most `max_batch` texts).

    Gathering also stops once as many texts have arrived as the previous batch held (plus any
    already queued): under steady load that is the whole next batch, and waiting out the
    deadline for texts that will not come cost 5 ms of every forward pass's cycle."""

    def __init__(self, predict: Callable[[list[str]], np.ndarray], limits: Limits):
        self.predict, self.limits = predict, limits
        self.queue: asyncio.Queue = asyncio.Queue()
        self.worker: asyncio.Task | None = None
        self.batches = 0
        self.previous_batch = self.limits.max_batch  # no history yet: gather until the deadline

    async def classify(self, texts: list[str]) -> np.ndarray:
        if self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(self._serve())
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, future))
        return await future

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pending = [await self.queue.get()]
            count = len(pending[0][0])
            deadline = loop.time() + self.limits.max_wait_ms / 1000
            while count < min(self.previous_batch, self.limits.max_batch):
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    pending.append(await asyncio.wait_for(self.queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
                count += len(pending[-1][0])
            while count < self.limits.max_batch and not self.queue.empty():
                pending.append(self.queue.get_nowait())
                count += len(pending[-1][0])
            self.previous_batch = count
            texts = [text for batch, _ in pending for text in batch]
            try:
                probabilities = await loop.run_in_executor(None, self.predict, texts)
            except Exception as e:  # noqa: BLE001 - every waiting request gets the error, the server lives on
                for _, future in pending:
                    if not future.done():
                        future.set_exception(e)
                continue
            self.batches += 1
            start = 0
            for batch, future in pending:
                if not future.done():
                    future.set_result(probabilities[start : start + len(batch)])
                start += len(batch)


def create_app(runs: list[LoadedRun], limits: Limits | None = None, batching: bool = True):
    """The FastAPI app. `batching=False` gives the plain server (one forward pass per request,
    one at a time) that the load benchmark compares against."""
    limits = limits or Limits()
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse

    first = runs[0]
    pair = is_pair_run(first)
    predict = lambda texts: ensemble_proba(runs, texts)  # noqa: E731
    batcher = MicroBatcher(predict, limits) if batching else None
    lock = threading.Lock()

    app = FastAPI(
        title="lorafit", description=f"Text classification with the lorafit run {first.run_dir.name}", version="1"
    )
    errors = {400: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}

    def error(status: int, code: str, message: str) -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem.get("loc", []) if p != "body") or "body"
        return error(
            422, "invalid_request", f'{where}: {problem.get("msg", "invalid")}; expected {{"texts": ["...", ...]}}'
        )

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model_info() -> dict:
        info = first.info
        return {
            "recipe": info["recipe"]["name"],
            "base_model": info["recipe"]["model"]["name"],
            "labels": first.label_names,
            "parameters": info.get("parameters", {}),
            "ensemble": len(runs),
            "pairs": pair,  # texts are [first, second] pairs
            "batching": batching,
            "limits": limits.__dict__,
        }

    @app.post("/v1/classify", response_model=ClassifyResponse, responses=errors)
    async def classify(request: ClassifyRequest):
        texts = request.texts
        if not texts:
            return error(
                400,
                "no_texts",
                f"texts is empty: send 1 to {limits.max_texts} texts (limit max_texts={limits.max_texts})",
            )
        if len(texts) > limits.max_texts:
            return error(
                413, "too_many_texts", f"{len(texts)} texts in one request; the limit is max_texts={limits.max_texts}"
            )
        for i, text in enumerate(texts):
            problem = input_problem(text, pair)
            if problem:
                return error(400, problem[0], f"texts[{i}] {problem[1]}")
            chars = len(text) if isinstance(text, str) else sum(map(len, text))
            if chars > limits.max_chars:
                limit = f"the limit is max_chars={limits.max_chars}"
                return error(413, "text_too_long", f"texts[{i}] has {chars} characters; {limit}")
        texts = model_inputs(texts)
        if batcher is not None:
            probabilities = await batcher.classify(texts)
        else:

            def predict_alone():
                with lock:
                    return predict(texts)

            probabilities = await asyncio.get_running_loop().run_in_executor(None, predict_alone)
        names = first.label_names
        # a JSONResponse skips re-validating the answer against the response model (built right here)
        return JSONResponse(
            {
                "predictions": [
                    {
                        "label": names[int(row.argmax())],
                        "index": int(row.argmax()),
                        "probabilities": {n: float(p) for n, p in zip(names, row)},
                    }
                    for row in probabilities
                ]
            }
        )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        page = PAGE.read_text(encoding="utf-8").replace("{{RUN}}", first.run_dir.name)
        return page.replace("{{PAIR}}", "true" if pair else "false")

    app.state.batcher = batcher
    return app


def serve(runs: list[LoadedRun], host: str, port: int, limits: Limits, batching: bool = True) -> None:
    import uvicorn

    started = time.time()
    app = create_app(runs, limits, batching)
    print(
        f"serving {runs[0].run_dir} on http://{host}:{port}/ (API docs at /docs), "
        f"ready in {time.time() - started:.1f} s",
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
