"""`lorafit serve`: the API (FastAPI test client), micro-batching under concurrency, limits,
a schemathesis run against the OpenAPI schema, and the page driven in headless Chromium."""

import asyncio
import os
import shutil
import socket
import threading
import time

import httpx
import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient

from lorafit.inference import ensemble_proba, load_runs
from lorafit.serve import Limits, MicroBatcher, create_app

LIMITS = Limits(max_texts=4, max_chars=300, max_wait_ms=20)


@pytest.fixture(scope="module")
def runs(tiny_finished_run):
    return load_runs([tiny_finished_run], precision="fp32")


@pytest.fixture(scope="module")
def client(runs):
    return TestClient(create_app(runs, LIMITS))


def test_health_model_and_schema(client, runs):
    assert client.get("/healthz").json() == {"status": "ok"}
    info = client.get("/v1/model").json()
    assert info["labels"] == runs[0].label_names and info["parameters"]["trainable"] > 0
    assert info["recipe"] == "agnews-report-b"
    assert "/v1/classify" in client.get("/openapi.json").json()["paths"]


def test_classify_returns_the_runs_own_probabilities(client, runs):
    texts = ["Stocks fell as oil prices rose", "The Red Sox won again"]
    body = client.post("/v1/classify", json={"texts": texts}).json()
    expected = ensemble_proba(runs, texts)
    for prediction, row in zip(body["predictions"], expected):
        assert prediction["index"] == int(row.argmax()) and prediction["label"] == runs[0].label_names[row.argmax()]
        assert list(prediction["probabilities"].values()) == pytest.approx(row.tolist(), abs=1e-5)


def test_concurrent_requests_share_batches_and_get_their_own_rows(runs, agnews_rows):
    app = create_app(runs, LIMITS)
    texts = [t[:250] for t in agnews_rows.text.tolist()[:24]]

    async def storm():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            replies = await asyncio.gather(*(http.post("/v1/classify", json={"texts": [t]}) for t in texts))
        return [r.json()["predictions"][0] for r in replies]

    predictions = asyncio.run(storm())
    expected = ensemble_proba(runs, texts)
    assert [p["index"] for p in predictions] == expected.argmax(-1).tolist()
    assert np.allclose([list(p["probabilities"].values()) for p in predictions], expected, atol=1e-5)
    assert app.state.batcher.batches < len(texts)  # requests were answered from shared forward passes


def test_a_batch_goes_as_soon_as_the_previous_batchs_count_has_arrived(runs, agnews_rows):
    """Under steady load the batcher does not wait out its deadline (a minute here) for texts that
    will not come; the first batch, with no history, is cut by max_batch instead."""
    texts = [t[:250] for t in agnews_rows.text.tolist()[:12]]
    batcher = MicroBatcher(lambda batch: ensemble_proba(runs, batch), Limits(max_wait_ms=60_000, max_batch=6))

    async def round_of(chunk):
        return await asyncio.wait_for(asyncio.gather(*(batcher.classify([t]) for t in chunk)), timeout=30)

    async def two_rounds():
        first = await round_of(texts[:6])
        batcher.limits = Limits(max_wait_ms=60_000, max_batch=256)
        return first + await round_of(texts[6:])

    rows = np.concatenate(asyncio.run(two_rounds()))
    assert batcher.batches == 2 and batcher.previous_batch == 6
    assert np.allclose(rows, ensemble_proba(runs, texts), atol=1e-5)


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        ({"texts": ["a"] * 5}, 413, "max_texts=4"),
        ({"texts": ["x" * 301]}, 413, "max_chars=300"),
        ({"texts": []}, 400, "max_texts=4"),
        ({"texts": ["  "]}, 400, "texts[0] is empty"),
        ({"texts": ["fine", ["a", "pair"]]}, 400, "texts[1] is a pair: this run classifies single texts"),
        ({"texts": "just a string"}, 422, "texts"),
        ({"text": ["a"]}, 422, "texts"),
        ({"texts": [1, 2]}, 422, "texts.0"),
    ],
)
def test_bad_requests_get_a_json_error_naming_the_limit(client, body, status, fragment):
    reply = client.post("/v1/classify", json=body)
    assert reply.status_code == status
    assert fragment in reply.json()["error"]["message"]
    assert client.get("/healthz").status_code == 200


def test_malformed_json_is_a_422_not_a_crash(client):
    reply = client.post("/v1/classify", content=b"{not json", headers={"Content-Type": "application/json"})
    assert reply.status_code == 422 and "error" in reply.json()


def test_schemathesis_finds_no_server_error(runs):
    from hypothesis import HealthCheck, settings

    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(runs, LIMITS))
    failures = []
    for operation in schema.get_all_operations():
        strategy = operation.ok().as_strategy()

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        @__import__("hypothesis").given(case=strategy)
        def check(case):
            response = case.call()
            if response.status_code >= 500:
                failures.append((case.path, response.status_code, response.text[:200]))

        check()
    assert not failures


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(runs):
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(runs, LIMITS), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_page_in_headless_chromium(live_server, tmp_path):
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=900,700"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        browser.get(live_server + "/")
        browser.find_element(By.ID, "text").send_keys("Yankees beat the Red Sox 5-3 in the ninth inning")
        browser.find_element(By.ID, "classify").click()
        WebDriverWait(browser, 20).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#bars .row")) == 4)
        label = browser.find_element(By.ID, "label").text
        assert label in {"World", "Sports", "Business", "Sci/Tech"}
        widths = [bar.get_attribute("style") for bar in browser.find_elements(By.CSS_SELECTOR, ".bar")]
        assert len(widths) == 4 and all("width" in w for w in widths)
        shot = os.environ.get("LORAFIT_SCREENSHOT") or str(tmp_path / "page.png")
        assert browser.save_screenshot(shot)
        print(f"screenshot: {shot}")
    finally:
        browser.quit()
