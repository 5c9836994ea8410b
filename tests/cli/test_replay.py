"""``bdi models replay``: the service's replay job run in the CLI's process, with a progress bar, a table of the
flips and the reviews, or the job as JSON."""

from __future__ import annotations

import pytest

from service.core import InspectionService, RequestContext
from service.settings import Settings
from tests.cli.support import PLAIN, as_json, bdi, cli_env, uploads
from tests.support import both_registries


def record_inspections(models_dir, extractor, n: int) -> None:
    """n recorded /infer-like inspections of PLAIN (version 2 active, calibrated), every image kept."""
    service = InspectionService(Settings.load(cli_env(models_dir, BDI_RECORD_IMAGES="all")), extractor=extractor)
    service.start()
    try:
        for upload in uploads(*range(10, 10 + n)):
            service.infer(*PLAIN, 0.2, upload, context=RequestContext(source="cli", record=True))
        assert service.recorder.flush(30)
    finally:
        service.close()


@both_registries
def test_replay_prints_the_job_and_its_table(models_dir, extractor_112) -> None:
    record_inspections(models_dir, extractor_112, 3)
    job = as_json(bdi(models_dir, "models", "replay", *PLAIN, "2", "--json"))
    assert job["status"] == "done" and job["kind"] == "replay" and job["progress"] == {"done": 3, "total": 3}
    result = job["result"]
    assert result["version"] == 2 and result["n"] == 3 and result["compared_with"]["version"] == 2
    assert result["flips"] == {"ok_to_ng": 0, "ng_to_ok": 0}  # the version that answered, its threshold
    assert [item["new_score"] == pytest.approx(item["old_score"], rel=1e-5) for item in result["items"]] == [True] * 3

    last_one = as_json(bdi(models_dir, "models", "replay", *PLAIN, "1", "--last", "1", "--json"))["result"]
    assert last_one["version"] == 1 and last_one["n"] == 1

    table = bdi(models_dir, "models", "replay", *PLAIN, "1")
    assert table.exit_code == 0, table.output
    assert "Version 1 on 3 recorded inspection(s), against the active version 2" in table.stdout
    assert "false_rejects_fixed" in table.stdout


def test_replay_of_an_unknown_version_or_a_bad_last_is_one_sentence(models_dir) -> None:
    result = bdi(models_dir, "models", "replay", *PLAIN, "7")
    assert result.exit_code == 1 and "has no version 7" in result.stderr and "Traceback" not in result.output
    result = bdi(models_dir, "models", "replay", *PLAIN, "1", "--last", "0")
    assert result.exit_code == 2 and "--last" in result.output
