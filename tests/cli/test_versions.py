"""``bdi models versions``, ``bdi models activate`` and ``bdi models learn``: the service's calls from the command
line, their tables, --json and refusals."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from service.core import InspectionService, RequestContext, Upload
from service.settings import Settings
from service.storage.registry.tables import AuditEntry, InspectionRow
from tests.cli.support import as_json, bdi, cli_env, uploads
from tests.support import both_registries, png_bytes, relit, synthetic_roi

ROLE, ROI = "R", "r"


@pytest.fixture
def service(tmp_path, extractor_112, database_url):
    """A service over the test's models dir that keeps every inspected image, with a fitted model, a threshold
    and a staged version 2."""
    settings = Settings.load(cli_env(tmp_path / "models", BDI_RECORD_IMAGES="all"))
    running = InspectionService(settings, extractor=extractor_112)
    running.start()
    running.fit(ROLE, ROI, 0.2, uploads(0, 1, 2))
    running.calibrate(ROLE, ROI, [0.01])
    running.fit(ROLE, ROI, 0.2, uploads(5, 6), activate=False)
    yield running
    running.close()


def reviewed_false_reject(service: InspectionService, seed: int) -> str:
    """A recorded inspection of a relit OK part, reviewed as a false reject (set in the registry directly)."""
    image = png_bytes(relit(synthetic_roi(60, 50, seed)))
    service.infer(ROLE, ROI, 0.2, Upload("part.png", image), context=RequestContext(record=True))
    assert service.recorder.flush(10)
    with service.registry.engine.begin() as connection:
        record_id = connection.execute(select(InspectionRow.id).order_by(InspectionRow.seq.desc()).limit(1)).scalar_one()
        connection.execute(update(InspectionRow).where(InspectionRow.id == record_id).values(review_outcome="false_reject"))
    return record_id


@both_registries
def test_versions_activate_and_learn_from_the_command_line(tmp_path, service, shared_backbone):
    models = tmp_path / "models"
    listed = as_json(bdi(models, "models", "versions", ROLE, ROI, "--json"))["items"]
    assert [(v["version"], v["status"]) for v in listed] == [(2, "staged"), (1, "active")]
    table = bdi(models, "models", "versions", ROLE, ROI)
    assert table.exit_code == 0 and "staged" in table.stdout and "Memory versions of R / r" in table.stdout

    refused = bdi(models, "models", "learn", ROLE, ROI)
    assert refused.exit_code == 1 and "no reviewed false reject" in refused.stderr
    unknown = bdi(models, "models", "activate", ROLE, ROI, "7")
    assert unknown.exit_code == 1 and "has no version 7" in unknown.stderr

    activated = as_json(bdi(models, "models", "activate", ROLE, ROI, "2", "--json"))
    assert activated["version"] == 2
    listed = as_json(bdi(models, "models", "versions", ROLE, ROI, "--json"))["items"]
    assert [(v["version"], v["status"]) for v in listed] == [(2, "active"), (1, "retired")]

    record_id = reviewed_false_reject(service, 30)
    learned = as_json(bdi(models, "models", "learn", ROLE, ROI, "--activate", "--json"))
    assert (learned["version"], learned["parent_version"], learned["status"]) == (3, 2, "active")
    assert learned["records_used"] == [record_id] and learned["calibration"]["n_ok"] == 1
    again = bdi(models, "models", "learn", ROLE, ROI)
    assert again.exit_code == 1
    with service.registry.engine.connect() as connection:
        actors = connection.execute(select(AuditEntry.action, AuditEntry.actor)
                                    .where(AuditEntry.action.in_(["activate", "learn"]))
                                    .order_by(AuditEntry.id)).all()
    assert [action for action, _ in actors] == ["activate", "learn"]
    assert all(actor.startswith("cli:") for _, actor in actors)
