"""Replay jobs (CONTRACT-REVIEW.md, Replay): POST /models/replay queues a job that scores a version on the kept
images of recorded inspections and compares with what was answered; GET /jobs/{id} answers on every host; a job
whose host died or shut down is failed with a sentence, never running forever."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import update

from service.storage import RecordFilter
from service.storage.registry.tables import InspectionRow
from tests.support import both_registries, fit, infer, synthetic_roi

ROLE, ROI = "Master1", "replay"
KEEP_IMAGES = {"BDI_RECORD_IMAGES": "all"}
HEARTBEAT_S = 0.5
FAST_LEASE = {**KEEP_IMAGES, "BDI_JOB_HEARTBEAT_S": str(HEARTBEAT_S)}
"""A lease of 6 x 0.5 s: short enough to wait for, long enough that a live host on loaded cores keeps its job (the
lifecycle tests keep the default lease of 30 s)."""
OK_IMAGES = [synthetic_roi(180, 150, seed=s) for s in range(3)]
PROBES = [synthetic_roi(180, 150, seed=10 + s) for s in range(2)] + [
    synthetic_roi(180, 150, seed=20 + s, defect=(90, 75, 14)) for s in range(2)]


def wait_job(client: Any, job_id: str, until: tuple[str, ...] = ("done", "failed"), timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/jobs/{job_id}").json()
        if body["status"] in until:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def review(client: Any, record_id: str, verdict: str, outcome: str) -> None:
    """A person's verdict on a record, set on the record's review columns in the registry."""
    service = client.app.state.service
    with service.records.engine.begin() as connection:
        connection.execute(update(InspectionRow).where(InspectionRow.id == record_id).values(
            review_verdict=verdict, review_outcome=outcome, reviewed_at=dt.datetime.now(dt.timezone.utc)))


def replay(client: Any, version: int, **extra: Any) -> str:
    response = client.post("/models/replay", json={"role_id": ROLE, "roi_id": ROI, "version": version, **extra})
    assert response.status_code == 202, response.text
    assert list(response.json()) == ["job_id"]
    return response.json()["job_id"]


def recorded_model(client: Any) -> tuple[dict[str, Any], set[str]]:
    """Version 1 fitted; the probes inspected uncalibrated, then with a threshold between the 2nd and 3rd score
    (two ok, two ng); three of the calibrated records reviewed: a false reject, a confirmed NG, a missed defect.
    Returns the records by id and the ids of the reviewed ones."""
    assert fit(client, ROLE, ROI, OK_IMAGES).status_code == 200
    scores = sorted(infer(client, ROLE, ROI, image).json()["score"] for image in PROBES)
    threshold = (scores[1] + scores[2]) / 2
    assert client.post("/calibrate_ng", json={"role_id": ROLE, "roi_id": ROI, "ok_scores": [threshold]}).status_code == 200
    for image in PROBES:
        assert infer(client, ROLE, ROI, image).status_code == 200
    service = client.app.state.service
    assert service.recorder.flush(30)
    records = service.inspections(RecordFilter(), 100)["items"]
    assert len(records) == 8 and all(r["image_kept"] for r in records)
    calibrated = [r for r in records if r["decision"] is not None]
    ng = [r for r in calibrated if r["decision"] == "ng"]
    ok = [r for r in calibrated if r["decision"] == "ok"]
    assert len(ng) == len(ok) == 2
    review(client, ng[0]["id"], "ok", "false_reject")
    review(client, ng[1]["id"], "ng", "confirmed_ng")
    review(client, ok[0]["id"], "ng", "missed_defect")
    return {r["id"]: r for r in records}, {ng[0]["id"], ng[1]["id"], ok[0]["id"]}


@both_registries
def test_replay_scores_a_version_on_the_kept_images_and_counts_flips_and_reviews(make_client) -> None:
    client = make_client(**KEEP_IMAGES)
    records, reviewed = recorded_model(client)

    # the version that answered, with its own calibration: every score as answered, nothing flips
    job = wait_job(client, replay(client, 1))
    assert job["status"] == "done", job
    assert job["kind"] == "replay" and job["error"] is None and job["progress"] == {"done": 8, "total": 8}
    assert job["started_at"] and job["finished_at"]
    result = job["result"]
    assert result["version"] == 1 and result["n"] == 8
    assert result["compared_with"]["version"] == 1
    for item in result["items"]:
        record = records[item["inspection_id"]]
        assert item["old_score"] == record["score"] and item["old_decision"] == record["decision"]
        assert item["new_score"] == pytest.approx(record["score"], rel=1e-5)
    assert result["flips"] == {"ok_to_ng": 0, "ng_to_ok": 0}
    assert result["reviews"] == {"false_rejects_fixed": 0, "false_rejects_left": 1, "missed_defects_caught": 0,
                                 "missed_defects_left": 1, "confirmed_ng_lost": 0}
    assert sorted(item["verdict"] or "-" for item in result["items"]) == ["-"] * 5 + ["ng", "ng", "ok"]

    # a threshold above every score: both calibrated NG answers flip, the false reject is fixed, the NG lost
    top = max(r["score"] for r in records.values())
    assert client.post("/calibrate_ng", json={"role_id": ROLE, "roi_id": ROI, "ok_scores": [top * 10]}).status_code == 200
    result = wait_job(client, replay(client, 1))["result"]
    assert result["compared_with"]["threshold"] == pytest.approx(top * 10)
    assert result["flips"] == {"ok_to_ng": 0, "ng_to_ok": 2}
    assert result["reviews"] == {"false_rejects_fixed": 1, "false_rejects_left": 0, "missed_defects_caught": 0,
                                 "missed_defects_left": 1, "confirmed_ng_lost": 1}
    assert all(item["new_decision"] == "ok" for item in result["items"])

    # last=1: the newest record, plus every reviewed one
    newest = max(records.values(), key=lambda r: (r["created_at"], r["id"]))
    result = wait_job(client, replay(client, 1, last=1))["result"]
    assert {item["inspection_id"] for item in result["items"]} == {newest["id"]} | reviewed
    assert result["n"] == len({newest["id"]} | reviewed)

    # a kept image gone since (pruned, or removed by hand) is skipped; the others are replayed
    service = client.app.state.service
    gone = next(i for i in records if i not in reviewed)
    (service.records.root / service.records.get(gone).image_path).unlink()
    job = wait_job(client, replay(client, 1))
    assert job["status"] == "done" and job["result"]["n"] == 7
    assert gone not in {item["inspection_id"] for item in job["result"]["items"]}


@both_registries
def test_replay_refuses_unknown_models_versions_and_last(make_client) -> None:
    client = make_client(**KEEP_IMAGES)
    assert fit(client, ROLE, ROI, OK_IMAGES[:2]).status_code == 200
    assert fit(client, ROLE, "other", OK_IMAGES[:2]).status_code == 200
    assert fit(client, ROLE, "other", OK_IMAGES[:2]).status_code == 200  # "other" has a version 2, ROI has not
    body = {"role_id": ROLE, "roi_id": ROI}
    for wrong, sentence in (({**body, "version": 2}, "has no version 2"), ({**body, "version": 99}, "has no version 99"),
                            ({"role_id": ROLE, "roi_id": "nobody", "version": 1}, "No model role_id='Master1'")):
        response = client.post("/models/replay", json=wrong)
        assert response.status_code == 404, response.text
        assert sentence in response.json()["error"]
    for last in (0, 10_001, "many"):
        response = client.post("/models/replay", json={**body, "version": 1, "last": last})
        assert response.status_code == 422, response.text
    assert client.post("/models/replay", json={**body, "version": 1, "recipe_id": "Not A Recipe"}).status_code == 400
    response = client.get(f"/jobs/{'0' * 32}")
    assert response.status_code == 404 and "No job has the id" in response.json()["error"]
    response = client.get("/jobs/not-a-job")
    assert response.status_code == 400 and "'not-a-job' is not a job id" in response.json()["error"]
    # no kept image yet: a replay of nothing is done with n = 0
    result = wait_job(client, replay(client, 1))["result"]
    assert result["n"] == 0 and result["items"] == [] and result["compared_with"] == {"version": 1, "threshold": None}


def test_a_job_of_a_closed_service_is_failed_with_a_sentence(make_client, tmp_path: Path) -> None:
    client = make_client(**KEEP_IMAGES)
    recorded_model(client)
    service = client.app.state.service
    real = service.batcher.extract_later

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)
        return real(*args, **kwargs)

    service.batcher.extract_later = slow
    first, queued = replay(client, 1), replay(client, 1)
    wait_job(client, first, until=("running",))
    service.jobs.close()
    for job_id in (first, queued):
        job = service.job(job_id).as_dict()
        assert job["status"] == "failed" and "shut down before this job finished" in job["error"], job
        assert job["finished_at"] is not None


CHILD = """
import sys, time
from service.core import InspectionService
from service.settings import Settings

service = InspectionService(Settings.load())
real = service.batcher.extract_later

def slow(*args, **kwargs):
    time.sleep(0.5)
    return real(*args, **kwargs)

service.batcher.extract_later = slow
print(service.replay(sys.argv[1], sys.argv[2], 1, 500)["job_id"], flush=True)
time.sleep(600)
"""


@both_registries
def test_a_host_killed_mid_replay_leaves_a_failed_job_that_another_host_reads(make_client, tmp_path: Path,
                                                                           database_url: str) -> None:
    models_dir = tmp_path / "models"
    client = make_client(models_dir, **FAST_LEASE)  # the reader's lease: 6 x 0.5 s
    recorded_model(client)
    env = {**os.environ, "BDI_MODELS_DIR": str(models_dir), "BDI_DATABASE_URL": database_url,
           "BDI_INPUT_SIZE": "224", "BDI_WEIGHTS": "random", "BDI_DEVICE": "cpu", "BDI_LOG_LEVEL": "WARNING",
           **FAST_LEASE}
    child = subprocess.Popen([sys.executable, "-c", CHILD, ROLE, ROI], env=env, stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[2])
    try:
        assert child.stdout is not None
        job_id = child.stdout.readline().strip()
        assert len(job_id) == 32, job_id
        deadline = time.monotonic() + 120
        while (job := client.get(f"/jobs/{job_id}").json())["progress"]["done"] < 1:  # running on the child
            assert job["status"] in ("queued", "running") and time.monotonic() < deadline, job
            time.sleep(0.05)
        assert job["status"] == "running"
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        killed_at = time.monotonic()
        job = wait_job(client, job_id, timeout=30)
        assert time.monotonic() - killed_at < 6 * HEARTBEAT_S + 5  # the lease, and the reads around it
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
    assert job["status"] == "failed" and job["finished_at"] is not None, job
    assert "stopped renewing it" in job["error"] and "Start the job again" in job["error"]
    assert job["progress"]["done"] < job["progress"]["total"] == 8


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_replay_started_on_one_host_is_read_on_another(make_client, tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    first = make_client(models_dir, **KEEP_IMAGES)
    second = make_client(models_dir, **KEEP_IMAGES)
    recorded_model(first)
    job_id = replay(first, 1)
    seen_there = wait_job(second, job_id)
    assert seen_there["status"] == "done" and seen_there["result"]["n"] == 8
    assert seen_there == first.get(f"/jobs/{job_id}").json()
    assert np.isfinite([item["new_score"] for item in seen_there["result"]["items"]]).all()
