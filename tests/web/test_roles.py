"""Roles and the audit trail over HTTP: every route declares a role and answers 401/403 by it, keys from the
registry (revocation seen by every host within 5 s), BDI_API_KEY as the admin key `env`, the audit rows of the
changes made through the API, and keys never logged or echoed."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from litestar.testing import TestClient

from service.storage.audit import AuditEvent, AuditFilter
from service.storage.keys import KEY_CACHE_TTL_S, ROLES
from service.web.auth import PUBLIC, route_roles
from tests.support import both_registries, fit, png_bytes, synthetic_roi

ADMIN_EVENT = AuditEvent("key_add", actor="test")
ROLE, ROI = "Master1", "inspection-1"
EXPECTED = {
    ("/health", "GET"): PUBLIC,
    ("/infer", "POST"): "inspector",
    ("/state", "GET"): "inspector",
    ("/metrics", "GET"): "inspector",
    ("/fit_ok", "POST"): "setup",
    ("/calibrate_ng", "POST"): "setup",
    ("/calibrate_dataset", "POST"): "setup",
    ("/datasets/ok/upload", "POST"): "setup",
    ("/datasets/ng/upload", "POST"): "setup",
    ("/datasets/file", "DELETE"): "setup",
    ("/datasets/list", "GET"): "inspector",
    ("/inspections", "GET"): "engineer",
    ("/audit", "GET"): "engineer",
}


def add_key(client: TestClient[Any], name: str, role: str) -> str:
    return client.app.state.service.registry.keys.add(name, role, ADMIN_EVENT)


def keyed(client: TestClient[Any]) -> dict[str, str]:
    """One key per role, named after it."""
    return {role: add_key(client, f"{role}-key", role) for role in ROLES}


def concrete(path: str) -> str:
    """A request path for a route template: each path parameter filled with a plain value."""
    return path.replace("/console/static/{file_path}", "/console/static/console.css").replace(
        "{file_path}", "swagger-ui.css").replace("{path}", "x").replace(
        "{inspection_id}", "0" * 32).replace("{recipe_id}", "default").replace("{role_id}", ROLE).replace(
        "{roi_id}", ROI).replace("{version}", "1").replace("{job_id}", "0" * 32)


def test_every_route_declares_its_role(client):
    """A new route without ``requires_role`` fails here: every route of the app's route table has a role."""
    roles = route_roles(client.app.routes)
    undeclared = sorted(route for route, role in roles.items() if role is None)
    assert not undeclared, f"routes without a declared role (add guards=[...] from service.web.auth): {undeclared}"
    for route, role in EXPECTED.items():
        assert roles[route] == role, route


def test_the_role_matrix_over_every_route(client):
    """Each role passes the routes of its rank and below and gets 403 naming the role needed above it; no key
    or an unknown one gets 401; /health and CORS preflights need none."""
    tokens = keyed(client)
    for (path, method), role in sorted(route_roles(client.app.routes).items()):
        url = concrete(path)
        if role == PUBLIC:
            assert client.request(method, url).status_code < 400
            continue
        for header in ({}, {"X-API-Key": "not-a-key"}):
            answer = client.request(method, url, headers=header, follow_redirects=False)
            if path.startswith("/console"):  # a browser sends no key header: the console sends it to its login page
                assert answer.status_code == 303, (method, path, header)
                assert answer.headers["location"].startswith("/console/login"), (method, path, header)
                continue
            assert answer.status_code == 401, (method, path, header)
            assert "X-API-Key" in answer.text
            assert set(answer.json()) >= {"error", "detail"}
        for holder, token in tokens.items():
            answer = client.request(method, url, headers={"X-API-Key": token})
            if ROLES.index(holder) >= ROLES.index(role):
                assert answer.status_code not in (401, 403), (method, path, holder, answer.text)
            else:
                assert answer.status_code == 403, (method, path, holder)
                assert f"needs the role {role}" in answer.text


def test_bearer_is_the_same_key_and_the_document_declares_roles(client):
    token = add_key(client, "scraper", "inspector")
    assert client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    document = client.get("/openapi.json", headers={"X-API-Key": token}).json()
    assert set(document["components"]["securitySchemes"]) == {"ApiKey", "Bearer"}
    fit_ok = document["paths"]["/fit_ok"]["post"]
    assert fit_ok["security"] == [{"ApiKey": []}, {"Bearer": []}]
    assert "`setup`" in fit_ok["responses"]["403"]["description"] and "401" in fit_ok["responses"]
    assert "security" not in document["paths"]["/health"]["get"]


def test_open_without_keys_and_env_key_is_an_admin_named_env(make_client, tmp_path):
    opened = make_client(tmp_path / "open")
    assert opened.get("/audit").status_code == 200
    assert opened.get("/state", params={"role_id": ROLE, "roi_id": ROI}).status_code == 200
    env = make_client(tmp_path / "env", BDI_API_KEY="s3cret-env-key")
    assert env.get("/audit").status_code == 401
    assert env.get("/audit", headers={"X-API-Key": "s3cret-env-key"}).status_code == 200
    setup = add_key(env, "cell", "setup")  # registry keys work beside the env key
    assert env.get("/audit", headers={"X-API-Key": setup}).status_code == 403
    upload = env.post("/datasets/ok/upload", data={"role_id": ROLE, "roi_id": ROI, "recipe_id": "line2"},
                      files=[("images", ("a.png", png_bytes(synthetic_roi(64, 48, 1)), "image/png"))],
                      headers={"X-API-Key": "s3cret-env-key"})
    assert upload.status_code == 200, upload.text
    rows = env.get("/audit", params={"action": "dataset_upload"}, headers={"X-API-Key": "s3cret-env-key"}).json()
    assert [(row["actor"], row["role"]) for row in rows["items"]] == [("env", "admin")]


@both_registries
def test_a_revoked_key_is_refused_by_every_host_within_5_seconds(make_client, tmp_path, database_url):
    """Two hosts over one registry: a key added on one works on the other, revoked on one it is refused by both
    within the cache's lifetime (well under 5 s)."""
    models = tmp_path / "shared"
    first, second = make_client(models), make_client(models)
    token = add_key(first, "cell-7", "inspector")
    add_key(first, "keeper", "admin")  # keys stay configured after the revocation
    params = {"role_id": ROLE, "roi_id": ROI}
    assert second.get("/state", params=params, headers={"X-API-Key": token}).status_code == 200
    first.app.state.service.registry.keys.revoke("cell-7", AuditEvent("key_revoke", actor="test"))
    started = time.monotonic()
    while second.get("/state", params=params, headers={"X-API-Key": token}).status_code != 401:
        assert time.monotonic() - started < 5, "the other host still accepts a revoked key after 5 s"
        time.sleep(0.2)
    assert time.monotonic() - started <= KEY_CACHE_TTL_S + 1
    assert first.get("/state", params=params, headers={"X-API-Key": token}).status_code == 401


@both_registries
def test_changes_over_http_are_audited_with_the_key_that_made_them(make_client, database_url):
    client = make_client()
    tokens = keyed(client)
    setup = {"X-API-Key": tokens["setup"], "X-Correlation-Id": "audit-check-1"}
    images = [synthetic_roi(64, 48, seed) for seed in range(4)]
    assert fit(client, ROLE, ROI, images, recipe_id="line2", mm_per_px="0.2").status_code == 401
    fitted = client.post("/fit_ok", data={"role_id": ROLE, "roi_id": ROI, "mm_per_px": "0.2", "recipe_id": "line2"},
                         files=[("images", (f"{i}.png", png_bytes(img), "image/png")) for i, img in enumerate(images)],
                         headers=setup)
    assert fitted.status_code == 200, fitted.text
    calibrated = client.post("/calibrate_ng", headers=setup, json={
        "role_id": ROLE, "roi_id": ROI, "recipe_id": "line2", "ok_scores": [0.3, 0.4], "ng_scores": [0.9]})
    assert calibrated.status_code == 200, calibrated.text
    engineer = {"X-API-Key": tokens["engineer"]}
    page = client.get("/audit", params={"recipe_id": "line2", "limit": 2}, headers=engineer).json()
    assert [row["action"] for row in page["items"]] == ["calibrate", "fit"]
    calibrate, fitted_row = page["items"]
    assert (calibrate["actor"], calibrate["role"], calibrate["correlation_id"]) == ("setup-key", "setup",
                                                                                  "audit-check-1")
    assert calibrate["threshold_before"] is None and calibrate["threshold_after"] == pytest.approx(
        calibrated.json()["threshold"])
    assert (fitted_row["version_before"], fitted_row["version_after"]) == (None, 1)
    assert fitted_row["client"] and fitted_row["host"]
    rest = client.get("/audit", params={"recipe_id": "line2", "cursor": page["next_cursor"]}, headers=engineer).json()
    assert [row["action"] for row in rest["items"]] == ["recipe_mm_per_px"] and rest["next_cursor"] is None
    assert rest["items"][0]["details"]["mm_per_px_after"] == 0.2
    by_actor = client.get("/audit", params={"actor": "setup-key", "action": "fit"}, headers=engineer).json()
    assert len(by_actor["items"]) == 1
    bad = client.get("/audit", params={"action": "dance"}, headers=engineer)
    assert bad.status_code == 422 and "action" in bad.text


def test_dataset_upload_and_delete_are_audited(make_client):
    client = make_client()
    token = add_key(client, "setup-pc", "setup")
    headers = {"X-API-Key": token}
    png = png_bytes(synthetic_roi(64, 48, 3))
    saved = client.post("/datasets/ok/upload", data={"role_id": ROLE, "roi_id": ROI},
                        files=[("images", ("a.png", png, "image/png"))], headers=headers).json()["saved"]
    deleted = client.delete("/datasets/file", params={"role_id": ROLE, "roi_id": ROI, "label": "ok",
                                                      "filename": saved[0]}, headers=headers)
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    rows, _ = client.app.state.service.registry.audit_log.page(AuditFilter(), 10)
    actions = [(row.action, row.actor, (row.details or {}).get("label")) for row in rows]
    assert actions[:2] == [("dataset_delete", "setup-pc", "ok"), ("dataset_upload", "setup-pc", "ok")]


def test_keys_are_never_logged_nor_echoed(make_client, caplog):
    client = make_client()
    token = add_key(client, "quiet", "inspector")
    with caplog.at_level(logging.DEBUG):
        answers = [
            client.get("/state", params={"role_id": ROLE, "roi_id": ROI}, headers={"X-API-Key": token}),
            client.get("/audit", headers={"X-API-Key": token}),
            client.get("/audit", headers={"Authorization": f"Bearer {token}x"}),
        ]
    assert [answer.status_code for answer in answers] == [200, 403, 401]
    assert all(token not in answer.text and token not in str(answer.headers) for answer in answers)
    assert token not in caplog.text
    stored = [row.name for row in client.app.state.service.registry.keys.list()]
    assert stored == ["quiet"]
