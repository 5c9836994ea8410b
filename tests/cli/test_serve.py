"""`bdi serve` as the README runs it: a real uvicorn process on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import httpx
import pytest

from service.storage import RecordFilter, RecordStore, Registry
from tests.cli.support import BDI, free_port, serve_env, start_serve, wait_healthy
from tests.support import both_registries, metric_values, png_bytes, synthetic_roi


def _form(roi: str = "r") -> dict[str, str]:
    return {"role_id": "R", "roi_id": roi, "mm_per_px": "0.2"}


def test_bdi_serve_answers_the_gui_flow(tmp_path):
    process, base = start_serve(tmp_path / "models")
    try:
        health = wait_healthy(process, base, **{"X-Request-Id": "smoke-1"})
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health.headers["x-request-id"] == "smoke-1"
        files = [("images", (f"{i}.png", png_bytes(synthetic_roi(64, 48, i)), "image/png")) for i in range(2)]
        fitted = httpx.post(f"{base}/fit_ok", data=_form(), files=files, timeout=60)
        assert fitted.status_code == 200 and fitted.json()["token_shape"] == [8, 8]
        inferred = httpx.post(f"{base}/infer", data=_form(),
                              files={"image": ("x.png", png_bytes(synthetic_roi(64, 48, 7)), "image/png")}, timeout=60)
        assert inferred.status_code == 200 and inferred.json()["decision"] is None
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "[smoke-1]" in output  # the correlation id is on the log lines of that request
    assert "RANDOMLY INITIALISED" in output


@pytest.mark.parametrize("env, setting", [({"BDI_WEIGHTS": "/nonexistent/dinov2.pth"}, "BDI_WEIGHTS"),
                                          ({"BDI_INPUT_SIZE": "100"}, "BDI_INPUT_SIZE"),
                                          ({"BDI_PRECISION": "fp8"}, "BDI_PRECISION"),
                                          ({"BDI_INFER_BATCH_SIZE": "0"}, "BDI_INFER_BATCH_SIZE")])
def test_bdi_serve_refuses_to_start_and_names_the_setting(tmp_path, env, setting):
    result = subprocess.run([BDI, "serve", "--port", str(free_port())], env=serve_env(tmp_path / "models", **env),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert setting in result.stderr and "Traceback" not in result.stderr


def test_offline_bdi_serve_with_hub_weights_refuses_at_once_and_quietly(tmp_path):
    """BDI_WEIGHTS=hub, an empty Hugging Face cache and no reachable hub (a closed loopback port stands for it,
    so that a machine with internet behaves like an offline cell PC): one attempt, no retries, and the hub library's
    log lines (made visible here with HF_HUB_VERBOSITY=debug) printed once, not also by its own handler."""
    hub = f"http://127.0.0.1:{free_port()}"
    env = serve_env(tmp_path / "models", BDI_WEIGHTS="hub", HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=hub, HF_HUB_VERBOSITY="debug")
    env.pop("HF_HUB_OFFLINE", None)
    result = subprocess.run([BDI, "serve", "--port", str(free_port())], env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 2
    assert "BDI_WEIGHTS=hub" in result.stderr and "not in the local Hugging Face cache" in result.stderr
    assert "HF_HUB_OFFLINE=1" in result.stderr and "Retry" not in result.stderr
    assert result.stderr.count(f"HEAD {hub}/timm/") == 1, result.stderr  # one request, logged once


def test_bdi_serve_stops_at_once_when_the_registry_database_is_unreachable(tmp_path):
    url = f"postgresql+psycopg://postgres:secret@127.0.0.1:{free_port()}/registry"
    result = subprocess.run([BDI, "serve", "--port", str(free_port())], check=False,
                            env=serve_env(tmp_path / "models", BDI_DATABASE_URL=url), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "BDI_DATABASE_URL=postgresql+psycopg://postgres:***@127.0.0.1" in result.stderr and "secret" not in result.stderr
    assert "RANDOMLY INITIALISED" not in result.stderr  # it stopped before loading the backbone


@both_registries
def test_two_workers_over_one_models_dir_fit_and_infer_at_once(tmp_path, database_url):
    """Every infer answers 200 with the old or the new version; both fits end up in the history; /metrics, on
    whichever worker answers, counts exactly the requests both served; every infer is recorded."""
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    stale = "from prometheus_client import Counter\nCounter('bdi_fits', 'x', ['kind']).labels('fit').inc(100)\n"
    subprocess.run([sys.executable, "-c", stale], env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
                   check=True, timeout=60)
    process, base = start_serve(tmp_path / "models", "--workers", "2", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    image = png_bytes(synthetic_roi(64, 48, 3))
    try:
        wait_healthy(process, base)
        first = httpx.post(f"{base}/fit_ok", data=_form(), files={"images": ("0.png", image, "image/png")}, timeout=60)
        assert first.status_code == 200, first.text
        errors: list[str] = []

        def infer_many() -> None:
            for _ in range(8):
                reply = httpx.post(f"{base}/infer", data=_form(), files={"image": ("x.png", image, "image/png")}, timeout=60)
                if reply.status_code != 200:
                    errors.append(reply.text)

        def fit_once(seed: int) -> None:
            files = {"images": ("a.png", png_bytes(synthetic_roi(64, 48, seed)), "image/png")}
            reply = httpx.post(f"{base}/fit_ok", data=_form(), files=files, timeout=60)
            if reply.status_code != 200:
                errors.append(reply.text)

        threads = [threading.Thread(target=infer_many) for _ in range(3)]
        threads += [threading.Thread(target=fit_once, args=(seed,)) for seed in (5, 6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        # Both workers agree on the active version (requests land on either).
        versions = {httpx.get(f"{base}/state", params={"role_id": "R", "roi_id": "r"}).json()["version"] for _ in range(6)}
        assert versions == {3}
        for scrape in range(4):  # each scrape lands on either worker and sums both
            metrics = metric_values(httpx.get(f"{base}/metrics").text)

            def requests(route: str, method: str, metrics: dict = metrics) -> float:
                labels = (("method", method), ("route", route), ("status", "200"))
                return metrics.get(("bdi_http_requests_total", labels), 0)

            assert requests("/fit_ok", "POST") == 3 and requests("/infer", "POST") == 24
            assert requests("/state", "GET") == 6 and requests("/health", "GET") == 1
            assert requests("/metrics", "GET") == scrape
            assert metrics[("bdi_fits_total", (("kind", "fit"),))] == 3  # the stale 100 was cleared at start
            assert metrics[("bdi_inspections_total", (("decision", "none"), ("recipe_id", "default"), ("roi_id", "r"),
                                                      ("role_id", "R")))] == 24
            assert metrics[("bdi_backbone_forward_seconds_count", ())] == 24
        assert len({path.name.rsplit("_", 1)[1] for path in metrics_dir.glob("counter_*.db")}) == 2  # two processes
    finally:
        process.terminate()
        process.communicate(timeout=30)
    history = [json.loads(p.read_text())["version"] for p in (tmp_path / "models").rglob("version.json")]
    assert sorted(history) == [1, 2, 3]
    registry = Registry(database_url or f"sqlite:///{tmp_path / 'models' / 'registry.sqlite3'}", tmp_path / "models")
    try:
        records = RecordStore(registry.engine, tmp_path / "models")
        assert records.count(RecordFilter()) == 24  # the writers finished their queues when the workers stopped
    finally:
        registry.dispose()
