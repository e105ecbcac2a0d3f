"""clipiq serve (issue 19's service core) on the random test-tiny backbone: endpoints, limits, errors, batching."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

import clipiq  # noqa: E402
from clipiq.cli.main import main  # noqa: E402
from clipiq.serve import ServeSettings, create_app, load_models  # noqa: E402
from clipiq.serve.batcher import Batcher, QueueFullError  # noqa: E402

SETTINGS = ServeSettings(model="test-tiny", device="cpu", restore=("dehaze-dcp",), explain_max_side=64,
                         batch_size=4, max_wait_ms=1.0)


def png(w: int = 40, h: int = 32, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray((rng.random((h, w, 3)) * 255).astype("uint8")).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def models():
    return load_models(SETTINGS)


@contextmanager
def client_for(models, **changes):
    app = create_app(replace(SETTINGS, **changes), models=models)
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def client(models):
    with client_for(models) as c:
        yield c


def err(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["code"] == code and body["message"], body
    return body


def test_operations_and_listings(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    cfg = client.get("/v1/config").json()
    assert cfg["metric"] == "clipiqa" and "test-tiny" in cfg["model"] and cfg["restorers"] == ["dehaze-dcp"]
    assert cfg["max_upload_bytes"] == SETTINGS.max_upload_bytes and cfg["max_pixels"] == SETTINGS.max_pixels
    assert cfg["max_files"] == 32 and cfg["outputs"][0] == "score" and "sharpness" in cfg["outputs"]
    metrics = client.get("/v1/metrics").json()
    assert {m["name"] for m in metrics} >= {"clipiqa", "clipiqa+"}
    assert [m["name"] for m in metrics if m["serving"]] == ["clipiqa"]
    restorers = {r["name"]: r for r in client.get("/v1/restorers").json()}
    assert restorers["dehaze-dcp"]["enabled"] and not restorers["cdasr"]["enabled"]
    assert restorers["cdasr"]["scale"] == 2 and restorers["cdasr"]["description"]
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    err(client.get("/nope"), 404, "not_found")


def test_score_batch_with_a_corrupt_file_matches_the_api(client):
    files = [("files", (f"img{i}.png", png(40 + 8 * i, 32, seed=i), "image/png")) for i in range(3)]
    files.insert(1, ("files", ("broken.png", b"\x89PNG\r\n\x1a\nnot really", "image/png")))
    r = client.post("/v1/score", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["metric"] == "clipiqa" and "test-tiny" in body["model"]
    rows = body["results"]
    assert [row["path"] for row in rows] == ["img0.png", "broken.png", "img1.png", "img2.png"]
    assert rows[1]["score"] is None and rows[1]["error"]
    good = [rows[0], rows[2], rows[3]]
    assert all(row["error"] == "" and row["note"] == "" and 0 <= row["score"] <= 1 for row in good)
    assert all("sharpness" in row and "brightness" in row for row in good)
    metric = clipiq.create_metric("clipiqa", model="test-tiny", device="cpu", attributes="all")
    images = [Image.open(io.BytesIO(png(40 + 8 * i, 32, seed=i))) for i in range(3)]
    want = metric.score_with_outputs(images)
    for i, row in enumerate(good):
        assert row["score"] == pytest.approx(float(want["score"][i]), abs=2e-6)
        assert row["sharpness"] == pytest.approx(float(want["sharpness"][i]), abs=2e-6)


def test_explain(client):
    r = client.post("/v1/explain", files={"file": ("wide.png", png(120, 60), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["path"] == "wide.png" and body["metric"] == "clipiqa" and 0 <= body["score"] <= 1
    assert (body["width"], body["height"]) == (120, 60) and body["restorers"] == ["dehaze-dcp"]
    assert set(body["attributes"]) >= {"sharpness", "noisiness"}
    regions = body["regions"]
    assert regions and [g["score"] for g in regions] == sorted(g["score"] for g in regions)
    assert set(regions[0]) == {"label", "score", "area", "description", "dimensions"}
    heat = Image.open(io.BytesIO(base64.b64decode(body["heatmap_png"])))
    assert heat.format == "PNG" and max(heat.size) <= 64 and heat.size[0] == 2 * heat.size[1]


def test_restore(client):
    r = client.post("/v1/restore", files={"file": ("hazy.png", png(), "image/png")}, data={"method": "dehaze-dcp"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (40, 32)
    for key in ("X-Clipiq-Score-Before", "X-Clipiq-Score-After"):
        assert 0 <= float(r.headers[key]) <= 1
    # the default method is the first enabled; scale 1 is dehaze-dcp's own
    r = client.post("/v1/restore", files={"file": ("a.png", png(), "image/png")}, data={"scale": "1"})
    assert r.status_code == 200 and r.headers["X-Clipiq-Restorer"] == "dehaze-dcp"
    err(client.post("/v1/restore", files={"file": ("a.png", png(), "image/png")}, data={"method": "cdasr"}),
        400, "unknown_restorer")
    err(client.post("/v1/restore", files={"file": ("a.png", png(), "image/png")}, data={"scale": "2"}),
        422, "bad_option")
    err(client.post("/v1/restore", files={"file": ("a.png", png(), "image/png")}, data={"scale": "two"}),
        422, "bad_option")


def test_input_errors(client, models):
    err(client.post("/v1/score", data={"x": "1"}), 422, "no_files")
    err(client.post("/v1/score", content=b"{}", headers={"content-type": "application/json"}), 422, "no_files")
    body = err(client.post("/v1/explain", files={"file": ("junk.jpg", b"GIF89a junk", "image/jpeg")}),
               422, "bad_image")
    assert body["input"] == "junk.jpg" and "junk.jpg" in body["message"]
    body = err(client.post("/v1/explain", files={"file": ("thin.png", png(420, 4), "image/png")}),
               422, "bad_aspect_ratio")
    assert body["input"] == "thin.png" and "420x4" in body["message"]
    with client_for(models, max_upload_bytes=200) as small:
        body = err(small.post("/v1/score", files={"files": ("big.png", png(), "image/png")}), 413, "upload_too_large")
        assert body["input"] == "big.png"
    with client_for(models, max_pixels=100) as small:
        body = err(small.post("/v1/explain", files={"file": ("big.png", png(), "image/png")}), 413, "image_too_large")
        assert "40x32" in body["message"] and body["input"] == "big.png"
        row = small.post("/v1/score", files={"files": ("big.png", png(), "image/png")}).json()["results"][0]
        assert row["score"] is None and "above the limit of 100" in row["error"]
    with client_for(models, max_files=2) as few:
        files = [("files", (f"{i}.png", png(), "image/png")) for i in range(3)]
        err(few.post("/v1/score", files=files), 422, "too_many_files")
        assert few.post("/v1/score", files=files[:2]).status_code == 200


def test_api_key(models):
    with client_for(models, api_key="s3cret") as c:
        for r in (c.get("/v1/config"), c.get("/v1/config", headers={"Authorization": "Bearer wrong"}),
                  c.get("/metrics"), c.post("/v1/score", files={"files": ("a.png", png(), "image/png")})):
            err(r, 401, "unauthorized")
            assert r.headers["www-authenticate"] == "Bearer"
        ok = {"Authorization": "Bearer s3cret"}
        assert c.get("/v1/config", headers=ok).json()["auth"] is True
        assert c.get("/metrics", headers=ok).status_code == 200
        assert c.post("/v1/score", files={"files": ("a.png", png(), "image/png")}, headers=ok).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
        assert c.get("/").status_code == 200


@contextmanager
def blocked(app):
    """Hold the batcher's worker inside its next batch until the block ends."""
    batcher = app.state.service.batcher
    entered, release = threading.Event(), threading.Event()
    process = batcher.process

    def slow(items):
        entered.set()
        release.wait(30)
        return process(items)

    batcher.process = slow
    try:
        yield entered, release
    finally:
        release.set()
        batcher.process = process


def test_queue_full_and_timeout(models):
    app = create_app(replace(SETTINGS, queue_size=1, batch_size=1, timeout_s=20), models=models)
    one = {"files": ("a.png", png(), "image/png")}
    with TestClient(app) as c, blocked(app) as (entered, release):
        results = []
        first = threading.Thread(target=lambda: results.append(c.post("/v1/score", files=one)))
        first.start()
        assert entered.wait(20)  # the first image is in the worker: the queue is empty again
        second = threading.Thread(target=lambda: results.append(c.post("/v1/score", files=one)))
        second.start()
        deadline = time.monotonic() + 20
        while app.state.service.batcher.depth < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        r = c.post("/v1/score", files=one)
        err(r, 503, "queue_full")
        assert r.headers["retry-after"] == "1"
        release.set()
        first.join(30)
        second.join(30)
    assert [x.status_code for x in results] == [200, 200]

    app = create_app(replace(SETTINGS, timeout_s=0.2), models=models)
    with TestClient(app) as c, blocked(app):
        err(c.post("/v1/score", files=one), 504, "timeout")


def test_concurrent_requests_share_batches_and_metrics(models):
    app = create_app(replace(SETTINGS, batch_size=8, max_wait_ms=300), models=models)
    n = 4
    barrier = threading.Barrier(n)
    codes = []
    with TestClient(app) as c:
        def post(i):
            barrier.wait()
            codes.append(c.post("/v1/score", files={"files": (f"{i}.png", png(seed=i), "image/png")}).status_code)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert codes == [200] * n
        text = c.get("/metrics").text
    count = float(re.search(r"^clipiq_batch_size_count (\S+)", text, re.M).group(1))
    total = float(re.search(r"^clipiq_batch_size_sum (\S+)", text, re.M).group(1))
    assert total == n and count < n  # some batch held images of more than one request
    assert f'clipiq_requests_total{{endpoint="/v1/score",status="200"}} {float(n)}' in text
    assert 'clipiq_request_duration_seconds_count{endpoint="/v1/score"}' in text
    assert "clipiq_queue_depth 0.0" in text
    assert 'clipiq_images_total{outcome="scored"} 4.0' in text


def test_openapi_documents_endpoints_and_fields(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/score", "/v1/explain", "/v1/restore", "/v1/metrics", "/v1/restorers", "/v1/config", "/healthz",
            "/readyz", "/metrics"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    assert {"path", "score", "error", "note"} <= set(schemas["ScoreRow"]["properties"])
    assert {"path", "metric", "score", "attributes", "regions", "heatmap_png", "width", "height",
            "restorers"} <= set(schemas["ExplainResponse"]["properties"])
    assert {"code", "message", "input"} <= set(schemas["ErrorDetail"]["properties"])
    body = spec["paths"]["/v1/score"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert "files" in body["properties"]
    assert "422" in spec["paths"]["/v1/score"]["post"]["responses"]


def test_models_load_in_the_background():
    app = create_app(replace(SETTINGS, restore=(), explain_describer=None))
    with TestClient(app) as c:
        deadline = time.monotonic() + 60
        while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.get("/readyz").json() == {"status": "ok"}
        assert c.post("/v1/score", files={"files": ("a.png", png(), "image/png")}).status_code == 200


def test_batcher_isolates_failures_and_bounds_its_queue():
    def process(items):
        if "bad" in items:
            raise ValueError("bad item")
        return [x.upper() for x in items]

    with Batcher(process, batch_size=4, max_wait_ms=50, queue_size=3, batch_key=lambda x: 0) as b:
        futures = b.submit(["a", "bad", "c"])
        assert futures[0].result(10) == "A" and futures[2].result(10) == "C"
        with pytest.raises(ValueError):
            futures[1].result(10)
        with pytest.raises(QueueFullError):
            b.submit(["x"] * 4)


def test_cli_refuses_a_public_host_without_a_key(monkeypatch, capsys):
    monkeypatch.delenv("CLIPIQ_API_KEY", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--model", "test-tiny", "--device", "cpu"]) == 2
    msg = capsys.readouterr().err
    assert "CLIPIQ_API_KEY" in msg and "--insecure" in msg


def test_import_clipiq_does_not_import_the_web_stack():
    code = "import sys, clipiq, clipiq.cli.main; print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', " \
           "'prometheus_client', 'clipiq.serve') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_a_restored_output_above_the_pixel_limit_is_refused_before_restoring():
    settings = ServeSettings(model="test-tiny", device="cpu", restore=("cdasr",), max_pixels=40 * 40)
    with TestClient(create_app(settings, models=load_models(settings, explain=False))) as client:
        buf = io.BytesIO()
        Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(buf, format="PNG")
        r = client.post("/v1/restore", files={"file": ("small.png", buf.getvalue(), "image/png")},
                        data={"method": "cdasr"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "image_too_large"
    assert "small.png" in r.json()["error"]["message"] and "x2" in r.json()["error"]["message"]
