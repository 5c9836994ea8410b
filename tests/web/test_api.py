"""The contract over HTTP: the GUI's flow and every error row, through the real app and a real ViT."""

from __future__ import annotations

import base64
import json
import logging
import math

import numpy as np
import pytest

from service.logs import CorrelationIdFilter
from service.pipeline import FeatureExtractor
from tests.support import TEST_INPUT_SIZE, decode_png, fit, infer, png_bytes, registry_down, synthetic_roi

ROLE, ROI = "Master1", "inspection-1"
OK_IMAGES = [synthetic_roi(96, 80, seed) for seed in range(3)]


@pytest.fixture
def fitted(client):
    response = fit(client, ROLE, ROI, OK_IMAGES)
    assert response.status_code == 200, response.text
    return client


def test_health(client):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["device"] == "cpu"
    assert body["model"] == "vit_small_patch14_dinov2.lvd142m"
    assert isinstance(body["version"], str) and body["version"]
    assert "random" in body["weights"]
    assert body["precision"] == "fp32"
    assert body["infer_forwards"] == {}
    assert "problems" not in body


def test_bf16_service_scores_a_fp32_memory_close_to_fp32(tmp_path, make_client):
    """A memory fitted in fp32 and served with BDI_PRECISION=bf16: same answer shape, score within 2%."""
    full = make_client(tmp_path / "models")
    assert fit(full, ROLE, ROI, OK_IMAGES).status_code == 200
    bf16 = FeatureExtractor(input_size=TEST_INPUT_SIZE, weights="random", device="cpu", precision="bf16")
    low = make_client(tmp_path / "models", extractor_=bf16, BDI_PRECISION="bf16")
    assert low.get("/health").json()["precision"] == "bf16"
    probe = synthetic_roi(96, 80, seed=40)
    expected, got = infer(full, ROLE, ROI, probe).json(), infer(low, ROLE, ROI, probe).json()
    assert got.keys() == expected.keys() and got["token_shape"] == expected["token_shape"]
    assert got["score"] == pytest.approx(expected["score"], rel=0.02)


def test_gui_flow_fit_infer_calibrate_infer_state(client):
    response = fit(client, ROLE, ROI, OK_IMAGES)
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["n_embeddings", "coreset_size", "token_shape", "coreset_rate_requested", "coreset_rate_applied"]
    assert body["n_embeddings"] == 3 * 16 * 16
    assert body["coreset_size"] == math.ceil(3 * 256 * 0.02)
    assert body["token_shape"] == [16, 16]
    assert body["coreset_rate_requested"] == 0.02
    assert body["coreset_rate_applied"] == pytest.approx(body["coreset_size"] / body["n_embeddings"])

    state = client.get("/state", params={"role_id": ROLE, "roi_id": ROI}).json()
    assert state["memory_fitted"] is state["fitted"] is True
    assert state["calib_present"] is False and state["token_shape"] == [16, 16] and state["version"] == 1

    test_image = synthetic_roi(96, 80, seed=10)
    uncalibrated = infer(client, ROLE, ROI, test_image)
    assert uncalibrated.status_code == 200, uncalibrated.text
    first = uncalibrated.json()
    assert list(first) == ["score", "threshold", "decision", "token_shape", "heatmap_png_base64", "regions"]
    assert first["threshold"] is None and first["decision"] is None and first["regions"] == []
    assert 0.0 <= first["score"] <= 2.0
    heatmap = decode_png(base64.b64decode(first["heatmap_png_base64"]))
    assert heatmap.shape == (80, 96) and heatmap.dtype == np.uint8

    ok_scores = [infer(client, ROLE, ROI, synthetic_roi(96, 80, seed)).json()["score"] for seed in (11, 12, 13)]
    calib = client.post(
        "/calibrate_ng", json={"role_id": ROLE, "roi_id": ROI, "ok_scores": ok_scores, "ng_scores": None}
    )
    assert calib.status_code == 200, calib.text
    values = calib.json()
    assert list(values) == ["threshold", "ok_mean", "ng_mean", "p99_ok", "p5_ng", "mm_per_px", "area_mm2_thr", "score_percentile"]
    assert values["threshold"] == pytest.approx(float(np.percentile(ok_scores, 99)))
    assert values["ng_mean"] == 0.0 and values["p5_ng"] is None
    assert values["mm_per_px"] == 0.2 and values["area_mm2_thr"] == 1.0 and values["score_percentile"] == 99

    calibrated = infer(client, ROLE, ROI, test_image).json()
    assert calibrated["threshold"] == pytest.approx(values["threshold"])
    assert calibrated["score"] == pytest.approx(first["score"])
    assert calibrated["decision"] == ("ng" if calibrated["score"] >= calibrated["threshold"] else "ok")

    state = client.get("/state", params={"role_id": ROLE, "roi_id": ROI}).json()
    assert state["calib_present"] is True and state["calib_source"] == "api"

    calib_file = json.loads(next((client.app.state.settings.models_dir).rglob("calib.json")).read_text())
    assert calib_file == values


def test_memory_fit_keeps_every_patch_and_refit_keeps_calibration(fitted):
    fitted.post("/calibrate_ng", json={"role_id": ROLE, "roi_id": ROI, "ok_scores": [0.3, 0.4]})
    body = fit(fitted, ROLE, ROI, OK_IMAGES[:2], memory_fit="true").json()
    assert body["coreset_size"] == body["n_embeddings"] == 512
    assert body["coreset_rate_requested"] == 1.0 and body["coreset_rate_applied"] == 1.0
    state = fitted.get("/state", params={"role_id": ROLE, "roi_id": ROI}).json()
    assert state["version"] == 2 and state["calib_present"] is True
    assert infer(fitted, ROLE, ROI, OK_IMAGES[0]).json()["threshold"] == pytest.approx(0.399)


def test_calibrate_with_ng_scores_and_numeric_strings(client):
    response = client.post(
        "/calibrate_ng",
        json={"role_id": ROLE, "roi_id": ROI, "ok_scores": ["0.5", 0.3, 0.4], "ng_scores": [0.9, "1.1"],
              "mm_per_px": "0.1", "score_percentile": "95", "extra_key": "ignored"},
    )
    assert response.status_code == 200, response.text
    values = response.json()
    p_ok, p_ng = np.percentile([0.5, 0.3, 0.4], 95), np.percentile([0.9, 1.1], 5)
    assert values["threshold"] == pytest.approx((p_ok + p_ng) / 2)
    assert values["p5_ng"] == pytest.approx(p_ng) and values["ng_mean"] == pytest.approx(1.0)
    assert values["mm_per_px"] == 0.1 and values["score_percentile"] == 95


def test_calibrating_before_fitting_is_allowed_and_infer_still_says_not_fitted(client):
    assert client.post("/calibrate_ng", json={"role_id": "R", "roi_id": "new", "ok_scores": [0.2]}).status_code == 200
    state = client.get("/state", params={"role_id": "R", "roi_id": "new"}).json()
    assert state["memory_fitted"] is False and state["calib_present"] is True
    response = infer(client, "R", "new", OK_IMAGES[0])
    assert response.status_code == 400 and "Memory not fitted" in response.json()["error"]


def test_state_of_unknown_model(client):
    response = client.get("/state", params={"role_id": "nobody", "roi_id": "nothing"})
    assert response.status_code == 200
    body = response.json()
    assert body["memory_fitted"] is False and body["fitted"] is False
    assert body["token_shape"] is None and body["version"] is None and body["calib_present"] is False


def test_infer_with_shapes(fitted):
    image = synthetic_roi(96, 80, seed=21)
    for shape in (
        {"kind": "rect", "x": 10, "y": 5, "w": 40.5, "h": 30},
        {"kind": "CIRCLE", "cx": 48, "cy": 40, "r": 30},
        {"kind": "annulus", "cx": 48.0, "cy": 40.0, "r": 38, "r_inner": 12},
        {},
    ):
        response = infer(fitted, ROLE, ROI, image, shape=json.dumps(shape))
        assert response.status_code == 200, (shape, response.text)
        heatmap = decode_png(base64.b64decode(response.json()["heatmap_png_base64"]))
        assert heatmap.shape == (80, 96)
        if shape.get("kind") == "rect":
            assert not heatmap[:5].any() and not heatmap[:, 51:].any()
        if shape.get("kind") == "annulus":
            assert heatmap[40, 48] == 0  # the hole of the annulus is outside the mask


@pytest.mark.parametrize(
    "fields, fragment",
    [
        ({"shape": "{not json"}, "shape"),
        ({"shape": json.dumps({"kind": "rect", "x": 500, "y": 500, "w": 10, "h": 10})}, "no pixel"),
        ({"shape": json.dumps({"kind": "circle", "r": -3})}, "r"),
        ({"shape": json.dumps({"kind": "annulus", "r": 5, "r_inner": 9})}, "r_inner"),
        ({"shape": json.dumps([1, 2])}, "object"),
        ({"shape": json.dumps({"kind": "hexagon"})}, "kind"),
        ({"mm_per_px": "0"}, "mm_per_px"),
        ({"mm_per_px": "-1"}, "mm_per_px"),
        ({"mm_per_px": "nan"}, "mm_per_px"),
        ({"mm_per_px": "inf"}, "mm_per_px"),
    ],
)
def test_infer_bad_input_is_400(fitted, fields, fragment):
    response = infer(fitted, ROLE, ROI, OK_IMAGES[0], **fields)
    assert response.status_code == 400, response.text
    body = response.json()
    assert fragment in body["error"] and body["detail"] == body["error"]


@pytest.mark.parametrize("payload, name", [(b"", "empty.png"), (b"not an image at all", "fake.png"), (b"\x89PNG\r\n\x1a\n\x00\x00", "cut.png")])
def test_unreadable_images_are_400_naming_the_file(fitted, payload, name):
    response = infer(fitted, ROLE, ROI, payload, filename=name)
    assert response.status_code == 400
    assert name in response.json()["error"] and "not a readable image" in response.json()["error"]
    fit_response = fitted.post(
        "/fit_ok", data={"role_id": ROLE, "roi_id": ROI, "mm_per_px": "0.2"},
        files=[("images", ("good.png", png_bytes(OK_IMAGES[0]), "image/png")), ("images", (name, payload, "image/png"))],
    )
    assert fit_response.status_code == 400 and name in fit_response.json()["error"]
    assert fitted.get("/state", params={"role_id": ROLE, "roi_id": ROI}).json()["version"] == 1


def test_infer_without_memory_is_400_in_both_languages(client):
    response = infer(client, "ghost", "roi", OK_IMAGES[0])
    assert response.status_code == 400
    error = response.json()["error"]
    assert "Memory not fitted" in error and "Memoria no encontrada. Ejecuta /fit_ok primero." in error


def test_missing_and_mistyped_fields_are_422_fastapi_style(fitted):
    response = fitted.post("/infer", data={"role_id": ROLE, "roi_id": ROI, "mm_per_px": "abc"},
                           files={"image": ("a.png", png_bytes(OK_IMAGES[0]), "image/png")})
    assert response.status_code == 422, response.text
    body = response.json()
    assert isinstance(body["detail"], list) and body["detail"]
    assert {"loc", "msg", "type"} <= set(body["detail"][0]) and "mm_per_px" in body["error"]

    response = fitted.post("/fit_ok", data={"role_id": ROLE, "roi_id": ROI, "mm_per_px": "0.2"},
                           files=[("note", ("n.txt", b"x", "text/plain"))])
    assert response.status_code == 422 and "images" in response.json()["error"]

    response = fitted.post("/fit_ok", data={"role_id": ROLE, "roi_id": ROI, "mm_per_px": "0.2"})
    assert response.status_code == 400 and "multipart/form-data" in response.json()["error"]

    response = fitted.post("/calibrate_ng", json={"role_id": ROLE, "ok_scores": [0.1]})
    assert response.status_code == 422
    assert any("roi_id" in item["loc"] for item in response.json()["detail"])


def test_a_decimal_comma_is_422_saying_to_use_a_dot(fitted):
    """A GUI on a Spanish or German PC formats 0.1 as "0,1": the sentence says what to do, the list stays FastAPI's."""
    response = fitted.post("/infer", data={"role_id": ROLE, "roi_id": ROI, "mm_per_px": "0,1"},
                           files={"image": ("a.png", png_bytes(OK_IMAGES[0]), "image/png")})
    assert response.status_code == 422, response.text
    body = response.json()
    assert "mm_per_px" in body["error"] and "(0.1, not 0,1)" in body["error"]
    assert "InvariantCulture" in body["error"]
    assert body["detail"] == [{"loc": ["body", "mm_per_px"], "msg": "Expected `float`, got `str`", "type": "value_error"}]
    missing = fitted.post("/calibrate_ng", json={"role_id": ROLE, "ok_scores": [0.1]})
    assert "decimal separator" not in missing.json()["error"]  # only said where a number came as text


def test_infer_documents_why_ok_can_come_with_regions(client):
    infer = client.get("/openapi.json").json()["paths"]["/infer"]["post"]
    assert "`decision` `ok` may come with `regions`" in infer["description"]
    regions = infer["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    schema = client.get("/openapi.json").json()["components"]["schemas"][regions]["properties"]["regions"]
    assert "Not empty does not mean NG" in schema["description"]


@pytest.mark.parametrize(
    "body",
    [
        {"role_id": ROLE, "roi_id": ROI, "ok_scores": []},
        {"role_id": ROLE, "roi_id": ROI, "ok_scores": ["NaN"]},
        {"role_id": ROLE, "roi_id": ROI, "ok_scores": [0.1], "ng_scores": ["Infinity"]},
        {"role_id": ROLE, "roi_id": ROI, "ok_scores": [0.1], "mm_per_px": 0},
        {"role_id": ROLE, "roi_id": ROI, "ok_scores": [0.1], "score_percentile": 0},
        {"role_id": ROLE, "roi_id": ROI, "ok_scores": [0.1], "score_percentile": 101},
    ],
)
def test_calibrate_bad_numbers_are_4xx(client, body):
    response = client.post("/calibrate_ng", json=body)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]


def test_calibrate_non_object_and_non_numeric_bodies_are_4xx(client):
    for content in (b"[1, 2, 3]", b"not json", b'{"role_id": "a", "roi_id": "b", "ok_scores": ["abc"]}'):
        response = client.post("/calibrate_ng", content=content, headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500, response.text
        assert response.json()["error"]


@pytest.mark.parametrize("role", ["", "   ", "a" * 129, "bad\x00id", "tab\tid", "line\nbreak"])
def test_invalid_ids_are_400(client, role):
    response = client.post("/calibrate_ng", json={"role_id": role, "roi_id": ROI, "ok_scores": [0.1]})
    assert response.status_code == 400, response.text
    assert "role_id" in response.json()["error"]


@pytest.mark.parametrize("role, roi", [("Zona A/1", "../x"), ("a\\b", ".."), ("Rodillo ñ", "ÓVALO 1"), ("CON", "nul.txt"), ("x" * 128, "y")])
def test_odd_ids_work_and_stay_inside_the_models_dir(client, role, roi):
    assert fit(client, role, roi, OK_IMAGES[:1]).status_code == 200
    assert infer(client, role, roi, OK_IMAGES[1]).status_code == 200
    state = client.get("/state", params={"role_id": role, "roi_id": roi}).json()
    assert state["fitted"] is True and state["role_id"] == role and state["roi_id"] == roi
    models_dir = client.app.state.settings.models_dir.resolve()
    for path in models_dir.rglob("*"):
        assert path.resolve().is_relative_to(models_dir)
    ids = [json.loads(p.read_text()) for p in models_dir.rglob("id.json")]
    assert {"role_id": role, "roi_id": roi} in ids


def test_ids_are_case_sensitive(client):
    fit(client, "Master1", "roi", OK_IMAGES[:1])
    assert client.get("/state", params={"role_id": "master1", "roi_id": "roi"}).json()["fitted"] is False
    fit(client, "master1", "roi", OK_IMAGES[1:2], memory_fit="true")
    assert client.get("/state", params={"role_id": "master1", "roi_id": "roi"}).json()["version"] == 1
    assert client.get("/state", params={"role_id": "Master1", "roi_id": "roi"}).json()["version"] == 1
    folders = {p.parent.name for p in client.app.state.settings.models_dir.glob("*/id.json")}
    assert "Master1" in folders and len(folders) == 2  # the second one is hashed, not 'master1'


def test_unknown_route_404_and_wrong_method_405(client):
    response = client.get("/nope")
    assert response.status_code == 404 and response.json()["error"] and response.json()["detail"]
    for method, path in (("get", "/fit_ok"), ("get", "/infer"), ("put", "/calibrate_ng"), ("post", "/health"), ("delete", "/state")):
        response = client.request(method.upper(), path)
        assert response.status_code == 405, (method, path)
        assert response.json()["error"]
    options = client.options("/fit_ok")
    assert 200 <= options.status_code < 300 and "POST" in options.headers["allow"]


def test_limits_are_413(make_client):
    client = make_client(BDI_MAX_FIT_IMAGES="2", BDI_MAX_BODY_MB="0.05", BDI_MAX_IMAGE_PIXELS="5000")
    response = fit(client, ROLE, ROI, [synthetic_roi(20, 20, s) for s in range(3)])
    assert response.status_code == 413 and "BDI_MAX_FIT_IMAGES" in response.json()["error"]
    response = fit(client, ROLE, ROI, [synthetic_roi(120, 100, 0)])
    assert response.status_code == 413 and "BDI_MAX_IMAGE_PIXELS" in response.json()["error"]
    big = np.random.default_rng(0).integers(0, 255, size=(200, 200, 3), dtype=np.uint8)
    response = fit(client, ROLE, ROI, [big])
    assert response.status_code == 413 and "BDI_MAX_BODY_MB" in response.json()["error"]
    assert client.get("/state", params={"role_id": ROLE, "roi_id": ROI}).json()["fitted"] is False


def test_unexpected_errors_are_500_with_trace_switchable(make_client, monkeypatch, tmp_path):
    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    client = make_client()
    monkeypatch.setattr(client.app.state.service, "state", boom)
    body = client.get("/state", params={"role_id": "a", "roi_id": "b"}).json()
    assert body["error"] == "disk on fire" and "RuntimeError" in body["trace"] and body["detail"]

    quiet = make_client(tmp_path / "other", BDI_ERROR_TRACE="0")
    monkeypatch.setattr(quiet.app.state.service, "state", boom)
    response = quiet.get("/state", params={"role_id": "a", "roi_id": "b"})
    assert response.status_code == 500 and "trace" not in response.json()


def test_correlation_ids_are_echoed_or_made(client):
    assert client.get("/health", headers={"X-Correlation-Id": "abc-123"}).headers["x-correlation-id"] == "abc-123"
    response = client.get("/nope", headers={"X-Request-Id": "req-9"})
    assert response.headers["x-request-id"] == "req-9" and response.headers["x-correlation-id"] == "req-9"
    made = client.get("/health").headers["x-correlation-id"]
    assert len(made) == 32


def test_correlation_id_reaches_the_service_logs(fitted):
    seen: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("infer "):
                seen.append(record.correlation_id)

    handler = Capture()
    handler.addFilter(CorrelationIdFilter())
    logger = logging.getLogger("service.inspection")
    logger.addHandler(handler)
    try:
        fitted.post("/infer", data={"role_id": ROLE, "roi_id": ROI, "mm_per_px": "0.2"},
                    files={"image": ("a.png", png_bytes(OK_IMAGES[0]), "image/png")},
                    headers={"X-Correlation-Id": "trace-me"})
    finally:
        logger.removeHandler(handler)
    assert seen == ["trace-me"]


def test_while_the_registry_database_is_down_requests_are_503_and_health_is_degraded(make_client):
    client = make_client()
    assert fit(client, "R", "r", [synthetic_roi(64, 48, 1)]).status_code == 200
    registry_down(client)
    answer = infer(client, "R", "r", synthetic_roi(64, 48, 2))
    assert answer.status_code == 503
    body = answer.json()
    assert body["error"].startswith("The registry database is unavailable (") and body["detail"] == body["error"]
    assert "retry" in body["error"] and "recovers by itself" in body["error"]
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "degraded"
    assert any(problem.startswith("registry database unavailable") for problem in health.json()["problems"])
