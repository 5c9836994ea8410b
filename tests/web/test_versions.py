"""Memory versions: active, staged and retired; activation (rollback); learning from reviewed false rejects."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sqlalchemy import select, update

from service.core import Upload
from service.core.learning import Reviewed
from service.errors import NotFound
from service.storage.files import HISTORY_FILE
from service.storage.registry.tables import AuditEntry, InspectionRow, MemoryVersion, Model
from tests.support import (
    both_registries,
    dotnet_multipart,
    fit,
    forget_registry,
    infer,
    png_bytes,
    relit,
    synthetic_roi,
)

ROLE, ROI = "Master1", "inspection-1"
OK = [synthetic_roi(96, 80, seed) for seed in range(3)]
MORE = [synthetic_roi(96, 80, seed) for seed in range(10, 12)]


@pytest.fixture
def small(make_client, extractor_112):
    """A client at input 112 (8×8 tokens): quick fits."""
    return make_client(extractor_=extractor_112, BDI_INPUT_SIZE="112", BDI_CORESET_RATE="0.25")


def statuses(client, role=ROLE, roi=ROI):
    """Each registered version's status, from the registry rows."""
    service = client.app.state.service
    with service.registry.engine.connect() as connection:
        rows = connection.execute(
            select(MemoryVersion.version, MemoryVersion.status).join(Model, Model.id == MemoryVersion.model_id)
            .where(Model.role_id == role, Model.roi_id == roi).order_by(MemoryVersion.version)
        ).all()
    return dict(rows)


@both_registries
def test_a_fit_without_activation_is_staged_and_its_memory_loads_by_version(small):
    assert fit(small, ROLE, ROI, OK).status_code == 200
    service = small.app.state.service
    staged = service.fit(ROLE, ROI, 0.2, [_upload(image, i) for i, image in enumerate(MORE)], activate=False)
    assert (staged["version"], staged["status"]) == (2, "staged")
    state = service.model_state(ROLE, ROI)
    assert state.active_version == 1  # /infer keeps answering with the active one
    assert statuses(small) == {1: "active", 2: "staged"}

    memories = service.training.memories
    staged_index = memories.of_version(state, 2)
    assert staged_index.memory.shape[0] == staged["coreset_size"]
    assert memories.of_version(state, 2) is staged_index  # cached by model, version and memory sha256
    assert memories.of_version(state, 1) is memories.index(state)
    with pytest.raises(NotFound, match="has no version 7"):
        memories.of_version(state, 7)

    grown = service.append(ROLE, ROI, 0.2, [_upload(OK[0], 9)], activate=False)
    assert (grown["version"], grown["status"], grown["append"]["parent_version"]) == (3, "staged", 1)
    assert statuses(small) == {1: "active", 2: "staged", 3: "staged"}
    refit = service.fit(ROLE, ROI, 0.2, [_upload(image, i) for i, image in enumerate(OK)])
    assert (refit["version"], refit["status"]) == (4, "active")
    assert statuses(small) == {1: "retired", 2: "staged", 3: "staged", 4: "active"}
    folder = service.store.root / state.folder
    assert '"version_status": "staged"' in (folder / HISTORY_FILE).read_text()


def _upload(image: np.ndarray, i: int) -> Upload:
    return Upload(f"ok_{i}.png", png_bytes(image))


# ---- over HTTP ------------------------------------------------------------------------------------------------
DEFECT = synthetic_roi(96, 80, seed=40, defect=(48, 40, 10))
QUERY = {"role_id": ROLE, "roi_id": ROI}


@pytest.fixture
def recording(make_client, extractor_112):
    """A client at input 112 that keeps every inspected image (what learning reads)."""
    return make_client(extractor_=extractor_112, BDI_INPUT_SIZE="112", BDI_CORESET_RATE="0.25",
                       BDI_RECORD_IMAGES="all")


def versions(client, **query):
    response = client.get("/models/versions", params={**QUERY, **query})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def state(client):
    return client.get("/state", params=QUERY).json()


def reviewed(client, image, outcome, shape=None):
    """An inspection answered by a real /infer, then given a review outcome directly in the registry (the review
    route is another part's): the record as learning reads it."""
    service = client.app.state.service
    assert infer(client, ROLE, ROI, image).status_code == 200
    assert service.recorder.flush(10)
    with service.registry.engine.begin() as connection:
        record_id = connection.execute(
            select(InspectionRow.id).order_by(InspectionRow.seq.desc()).limit(1)
        ).scalar_one()
        connection.execute(update(InspectionRow).where(InspectionRow.id == record_id)
                           .values(review_outcome=outcome, shape=shape))
    return record_id


def learned_versions(client):
    service = client.app.state.service
    with service.registry.engine.connect() as connection:
        return dict(connection.execute(select(InspectionRow.id, InspectionRow.learned_version)).all())


def audit_actions(client):
    service = client.app.state.service
    with service.registry.engine.connect() as connection:
        return [row.action for row in connection.execute(select(AuditEntry.action).order_by(AuditEntry.id))]


@both_registries
def test_fit_ok_activate_false_stages_and_only_then_answers_version_and_status(small):
    plain = fit(small, ROLE, ROI, OK)
    assert list(plain.json()) == ["n_embeddings", "coreset_size", "token_shape", "coreset_rate_requested",
                                  "coreset_rate_applied"]  # activate not sent: today's body
    staged = fit(small, ROLE, ROI, MORE, activate="false")
    assert staged.status_code == 200, staged.text
    assert (staged.json()["version"], staged.json()["status"]) == (2, "staged")
    assert state(small)["version"] == 1
    grown = fit(small, ROLE, ROI, MORE[:1], append="true", activate="false").json()
    assert (grown["append"]["parent_version"], grown["version"], grown["status"]) == (1, 3, "staged")
    active = fit(small, ROLE, ROI, OK, activate="true").json()
    assert (active["version"], active["status"]) == (4, "active")
    assert [(v["version"], v["status"], v["origin"], v["parent_version"]) for v in versions(small)] == [
        (4, "active", "fit", None), (3, "staged", "append", 1), (2, "staged", "fit", None), (1, "retired", "fit", None),
    ]
    assert fit(small, ROLE, ROI, OK, activate="maybe").status_code in (400, 422)
    assert len(versions(small)) == 4


@both_registries
def test_activate_makes_a_staged_version_live_and_rolls_back(small):
    fit(small, ROLE, ROI, OK)
    small.post("/calibrate_ng", json={**QUERY, "ok_scores": [0.4, 0.5]})
    fit(small, ROLE, ROI, MORE, activate="false")
    before = infer(small, ROLE, ROI, DEFECT).json()

    response = small.post("/models/activate", json={**QUERY, "version": 2})
    assert response.status_code == 200, response.text
    assert response.json() == state(small) and response.json()["version"] == 2
    assert {v["version"]: v["status"] for v in versions(small)} == {2: "active", 1: "retired"}
    assert infer(small, ROLE, ROI, DEFECT).json()["score"] != before["score"]  # /infer answers with version 2

    assert small.post("/models/activate", json={**QUERY, "version": 1}).json()["version"] == 1  # rollback
    assert {v["version"]: v["status"] for v in versions(small)} == {2: "retired", 1: "active"}
    assert infer(small, ROLE, ROI, DEFECT).json()["score"] == pytest.approx(before["score"])
    assert audit_actions(small).count("activate") == 2


@both_registries
def test_activation_refusals_change_nothing(small, make_client, tmp_path):
    fit(small, ROLE, ROI, OK)
    fit(small, ROLE, ROI, MORE, activate="false")
    listed = versions(small)
    unknown = small.post("/models/activate", json={**QUERY, "version": 9})
    assert unknown.status_code == 404 and "has no version 9" in unknown.json()["error"]
    other = small.post("/models/activate", json={"role_id": ROLE, "roi_id": "other", "version": 1})
    assert other.status_code == 404
    assert small.post("/models/activate", json={**QUERY, "version": 0}).status_code == 422
    assert small.post("/models/activate", json={**QUERY}).status_code == 422
    assert small.get("/models/versions", params={"role_id": ROLE, "roi_id": "nope"}).status_code == 404
    wider = make_client(models_dir=tmp_path / "models")  # input 224: another token grid than the versions'
    refused = wider.post("/models/activate", json={**QUERY, "version": 2})
    assert refused.status_code == 409 and "token grid" in refused.json()["error"]
    assert versions(small) == listed and "activate" not in audit_actions(small)


@both_registries
def test_learn_stages_a_version_from_the_reviewed_false_rejects_and_activation_brings_its_calibration(recording):
    client = recording
    fit(client, ROLE, ROI, OK)
    client.post("/calibrate_ng", json={**QUERY, "ok_scores": [0.01]})  # a threshold so low every part is NG
    nothing = client.post("/models/learn", json=QUERY)
    assert nothing.status_code == 409 and "no reviewed false reject" in nothing.json()["error"]

    relit_parts = [relit(synthetic_roi(96, 80, seed)) for seed in (70, 71)]
    rejects = [reviewed(client, relit_parts[0], "false_reject"),
               reviewed(client, relit_parts[1], "false_reject", shape={"kind": "rect", "x": 0, "y": 0, "w": 48,
                                                                       "h": 40})]
    confirmed = reviewed(client, DEFECT, "confirmed_ng")
    score_before = infer(client, ROLE, ROI, relit(synthetic_roi(96, 80, 72))).json()["score"]

    response = client.post("/models/learn", json=QUERY)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["version"], body["parent_version"], body["status"]) == (2, 1, "staged")
    assert body["images_used"] == 2 and body["records_used"] == rejects and body["records_without_image"] == 0
    assert body["rows_added"] > 0
    calibration = body["calibration"]
    assert calibration["n_ok"] == 2 and calibration["n_ng"] == 1 and calibration["threshold"] > 0.01
    assert state(client)["version"] == 1 and state(client)["calib_source"] == "api"  # staged: nothing live changed
    learned = learned_versions(client)
    assert [learned[i] for i in rejects] == [2, 2] and learned[confirmed] is None
    listed = versions(client)
    assert (listed[0]["origin"], listed[0]["status"]) == ("learn", "staged")
    assert listed[0]["calibration"]["threshold"] == pytest.approx(calibration["threshold"])

    again = client.post("/models/learn", json=QUERY)  # every false reject is learned now
    assert again.status_code == 409

    live = client.post("/models/activate", json={**QUERY, "version": 2}).json()
    assert live["version"] == 2 and live["calib_source"] == "learn"
    answer = infer(client, ROLE, ROI, relit(synthetic_roi(96, 80, 72))).json()
    assert answer["threshold"] == pytest.approx(calibration["threshold"])
    assert answer["score"] < score_before  # the relit parts are learnt
    assert audit_actions(client)[-2:] == ["learn", "activate"]


@both_registries
def test_learn_with_activate_goes_live_at_once(recording):
    fit(recording, ROLE, ROI, OK)
    recording.post("/calibrate_ng", json={**QUERY, "ok_scores": [0.01]})
    reviewed(recording, relit(synthetic_roi(96, 80, 80)), "false_reject")
    lost = reviewed(recording, relit(synthetic_roi(96, 80, 81)), "false_reject")
    with recording.app.state.service.registry.engine.begin() as connection:  # its image pruned since
        connection.execute(update(InspectionRow).where(InspectionRow.id == lost).values(image_path=None))
    body = recording.post("/models/learn", json={**QUERY, "activate": True}).json()
    assert body["status"] == "active" and state(recording)["version"] == body["version"]
    assert body["images_used"] == 1 and body["records_without_image"] == 1 and lost not in body["records_used"]
    assert state(recording)["calib_source"] == "learn"
    assert recording.post("/models/learn", json={**QUERY, "activate": "yes"}).status_code == 422
    assert recording.post("/models/learn", json={"role_id": ROLE, "roi_id": "none"}).status_code == 400


@both_registries
def test_statuses_come_back_from_the_files_and_prune_keeps_staged_versions(make_client, extractor_112, tmp_path):
    models = tmp_path / "models"
    client = make_client(models_dir=models, extractor_=extractor_112, BDI_INPUT_SIZE="112", BDI_KEEP_VERSIONS="2")
    fit(client, ROLE, ROI, OK)
    fit(client, ROLE, ROI, MORE, activate="false")
    for _ in range(3):
        fit(client, ROLE, ROI, OK)
    kept = {v["version"]: v["status"] for v in versions(client)}
    assert kept == {5: "active", 2: "staged"}  # two kept: the staged version 2 outlives the newer retired ones
    client.post("/models/activate", json={**QUERY, "version": 2})
    kept = {v["version"]: v["status"] for v in versions(client)}
    assert kept == {5: "retired", 2: "active"}

    forget_registry(models)
    rebuilt = make_client(models_dir=models, extractor_=extractor_112, BDI_INPUT_SIZE="112", BDI_KEEP_VERSIONS="2")
    assert {v["version"]: v["status"] for v in versions(rebuilt)} == kept


def test_learning_takes_only_the_patches_inside_the_record_shape(small):
    """A mask over the left half of a square image covers the left half of the token grid (input 112: 8×8)."""
    learning = small.app.state.service.learning
    mask = np.zeros((80, 80), dtype=bool)
    mask[:, :40] = True
    item = Reviewed("r", "false_reject", None, Upload("r.png", b""), np.zeros((80, 80, 3), np.uint8), mask, 0.2)
    cells = learning._token_mask(item).reshape(8, 8)
    assert cells[:, :4].all() and not cells[:, 4:].any()
    whole = dataclasses.replace(item, mask=np.ones((80, 120), dtype=bool), image=np.zeros((80, 120, 3), np.uint8))
    rows = learning._token_mask(whole).reshape(8, 8)  # letterboxed: the padding rows hold no image
    assert rows[0].sum() == 0 and rows[4].all()


def test_a_learn_that_ran_meanwhile_keeps_its_records(recording, monkeypatch):
    """Two learns at once: the second read the records before the first marked them learned; under the model's lock
    it finds them taken, so nothing is learned twice."""
    fit(recording, ROLE, ROI, OK)
    recording.post("/calibrate_ng", json={**QUERY, "ok_scores": [0.01]})
    reviewed(recording, relit(synthetic_roi(96, 80, 90)), "false_reject")
    learning = recording.app.state.service.learning
    stale = learning._reviewed("default", ROLE, ROI)  # what the second learn read before the first committed
    assert recording.post("/models/learn", json=QUERY).status_code == 200
    monkeypatch.setattr(learning, "_reviewed", lambda *args: stale)
    late = recording.post("/models/learn", json=QUERY)
    assert late.status_code == 409, late.text
    assert [v["version"] for v in versions(recording)] == [2, 1]


def test_fit_ok_from_the_stored_samples_can_be_staged(make_client, extractor_112):
    client = make_client(extractor_=extractor_112, BDI_INPUT_SIZE="112", BDI_MIN_OK_SAMPLES="2")
    files = [("images", (f"ok_{i}.png", png_bytes(image), "image/png")) for i, image in enumerate(OK)]
    assert client.post("/datasets/ok/upload", data=QUERY, files=files).status_code == 200
    fit(client, ROLE, ROI, MORE)
    body, headers = dotnet_multipart([("role_id", ROLE), ("roi_id", ROI), ("mm_per_px", "0.2"),
                                      ("use_dataset", "true"), ("activate", "false")])
    staged = client.post("/fit_ok", content=body, headers=headers)
    assert staged.status_code == 200, staged.text
    assert (staged.json()["version"], staged.json()["status"]) == (2, "staged") and state(client)["version"] == 1
