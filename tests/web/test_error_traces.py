"""With BDI_ERROR_TRACE on, a 5xx of the service's own (the registry down: 503) carries the frames of its trace,
never what its causes' messages hold: connection strings, SQL parameters, host and user names."""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from service.errors import RegistryUnavailable

SECRETS = ("dbhost.internal", "bdi_writer", "s3cret", "postgresql+psycopg://", "secret-part-id")


def test_a_503_trace_holds_frames_but_no_connection_string_parameters_host_or_user(make_client, monkeypatch):
    def registry_down(*args, **kwargs):
        try:
            raise OperationalError(
                "SELECT * FROM inspections WHERE part_id = %(part_id)s", {"part_id": "secret-part-id"},
                Exception('connection to server at "dbhost.internal" (10.0.0.5), port 5432 failed: FATAL: password '
                          'authentication failed for user "bdi_writer" (postgresql+psycopg://bdi_writer:s3cret@...)'),
            )
        except OperationalError as exc:
            raise RegistryUnavailable("the server went away") from exc

    client = make_client()
    monkeypatch.setattr(client.app.state.service, "inspections", registry_down)
    response = client.get("/inspections")
    assert response.status_code == 503
    trace = response.json()["trace"]
    assert "registry_down" in trace and "OperationalError" in trace and "RegistryUnavailable" in trace
    assert not [secret for secret in SECRETS if secret in trace], trace
