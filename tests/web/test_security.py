"""Security defaults: loopback bind, optional API key, CORS off unless configured."""

from __future__ import annotations

from tests.support import make_settings


def test_defaults_bind_loopback_and_ignore_the_bare_host_variable(tmp_path):
    settings = make_settings(tmp_path, HOST="0.0.0.0")
    assert settings.host == "127.0.0.1" and settings.port == 8000
    assert settings.api_key == "" and settings.cors_origins == ()
    assert make_settings(tmp_path, BRAKEDISC_BACKEND_HOST="0.0.0.0", PORT="9001").host == "0.0.0.0"
    assert make_settings(tmp_path, PORT="9001").port == 9001


def test_api_key_protects_everything_but_health(make_client):
    client = make_client(BDI_API_KEY="s3cret")
    assert client.get("/health").status_code == 200
    for headers in ({}, {"X-API-Key": "wrong"}):
        response = client.get("/state", params={"role_id": "a", "roi_id": "b"}, headers=headers)
        assert response.status_code == 401
        assert "X-API-Key" in response.json()["error"] and response.json()["detail"]
    assert client.get("/openapi.json").status_code == 401
    good = client.get("/state", params={"role_id": "a", "roi_id": "b"}, headers={"X-API-Key": "s3cret"})
    assert good.status_code == 200
    assert client.options("/fit_ok").status_code < 300  # the GUI's probe still finds the endpoint


def test_api_key_is_off_by_default(client):
    assert client.get("/state", params={"role_id": "a", "roi_id": "b"}).status_code == 200


def test_cors_is_off_unless_origins_are_set(make_client, tmp_path):
    closed = make_client()
    response = closed.get("/health", headers={"Origin": "http://dashboard.local"})
    assert "access-control-allow-origin" not in response.headers

    opened = make_client(tmp_path / "cors", BDI_CORS_ORIGINS="http://dashboard.local, http://other.local")
    response = opened.get("/health", headers={"Origin": "http://dashboard.local"})
    assert response.headers["access-control-allow-origin"] == "http://dashboard.local"
    preflight = opened.options("/infer", headers={"Origin": "http://dashboard.local", "Access-Control-Request-Method": "POST"})
    assert preflight.status_code < 300 and "POST" in preflight.headers["access-control-allow-methods"]
    denied = opened.get("/health", headers={"Origin": "http://evil.local"})
    assert "access-control-allow-origin" not in denied.headers


def test_config_file_values_and_env_precedence(tmp_path):
    config = tmp_path / "bdi.toml"
    config.write_text('cors_origins = ["http://a.local", "http://b.local"]\ncoreset_rate = 0.1\nerror_trace = false\n')
    settings = make_settings(tmp_path, BDI_CONFIG=str(config), BDI_CORESET_RATE="0.05")
    assert settings.cors_origins == ("http://a.local", "http://b.local")
    assert settings.coreset_rate == 0.05 and settings.error_trace is False
