"""Reviews, the review queue and shadow versions through the real app (CONTRACT-REVIEW.md): the outcome table, a
second review replacing the first with both kept, the list's review filters, the queue's order and pages, the images
kept near the threshold, and a shadow version that changes no answer but is recorded and tallied."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from service.settings import Settings
from service.storage.audit import AuditFilter
from tests.support import both_registries, fit, infer, make_record, png_bytes, synthetic_roi

ROLE, ROI = "Master1", "inspection-1"
UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 1, 8, tzinfo=UTC)


def _insert(client, *records):
    client.app.state.service.records.insert(list(records))
    return [record.id for record in records]


def _review(client, record_id, verdict, **fields):
    return client.post(f"/inspections/{record_id}/review", json={"verdict": verdict, **fields})


def _audit(client, action):
    items, _ = client.app.state.service.registry.audit_log.page(AuditFilter(action=action), 100)
    return items


@both_registries
def test_the_outcome_table_and_a_second_review_replacing_the_first(make_client):
    client = make_client()
    ok, ng, uncalibrated_ok, uncalibrated_ng, pending = _insert(
        client,
        make_record(T0, decision="ok", score=0.5, threshold=0.6),
        make_record(T0 + dt.timedelta(seconds=1), decision="ng", score=0.7, threshold=0.6),
        make_record(T0 + dt.timedelta(seconds=2), decision=None, threshold=None),
        make_record(T0 + dt.timedelta(seconds=3), decision=None, threshold=None),
        make_record(T0 + dt.timedelta(seconds=4)),
    )
    expected = {(ok, "ok"): "confirmed_ok", (ng, "ng"): "confirmed_ng", (ng, "ok"): "false_reject",
                (ok, "ng"): "missed_defect", (uncalibrated_ok, "ok"): "labelled_ok",
                (uncalibrated_ng, "ng"): "labelled_ng"}
    for (record_id, verdict), outcome in expected.items():
        response = _review(client, record_id, verdict, note=f"{verdict} by eye", reviewer="qa-anna")
        assert response.status_code == 200, response.text
        body = response.json()
        assert list(body) == ["inspection_id", "verdict", "decision", "outcome", "reviewer", "note", "reviewed_at"]
        assert (body["inspection_id"], body["verdict"], body["outcome"]) == (record_id, verdict, outcome)
        assert body["reviewer"] == "qa-anna" and body["note"] == f"{verdict} by eye"
        assert body["decision"] == client.get(f"/inspections/{record_id}").json()["decision"]

    # the ok and ng records were reviewed twice: the second review is the current one, both are in the history
    current = client.get(f"/inspections/{ng}").json()["review"]
    assert current["verdict"] == "ok" and current["outcome"] == "false_reject" and current["reviewer"] == "qa-anna"
    history = client.get(f"/inspections/{ng}/reviews").json()["items"]
    assert [(item["verdict"], item["outcome"]) for item in history] == [("ng", "confirmed_ng"), ("ok", "false_reject")]
    assert history[-1]["reviewed_at"] == current["reviewed_at"]
    assert client.get(f"/inspections/{pending}").json()["review"] is None

    audit = _audit(client, "review")
    assert len(audit) == 6
    assert {entry.details["inspection_id"] for entry in audit} == {ok, ng, uncalibrated_ok, uncalibrated_ng}
    second = next(entry for entry in audit
                  if entry.details["inspection_id"] == ng and entry.details["verdict"] == "ok")
    assert second.details["verdict_before"] == "ng" and second.details["outcome"] == "false_reject"
    assert (second.role_id, second.roi_id, second.recipe_id) == ("R", "r", "default")

    def listed(**params):
        response = client.get("/inspections", params={"limit": 100, **params})
        assert response.status_code == 200, response.text
        return {item["id"] for item in response.json()["items"]}

    assert listed(review="pending") == {pending}
    assert listed(review="reviewed") == {ok, ng, uncalibrated_ok, uncalibrated_ng}
    assert listed(outcome="false_reject") == {ng} and listed(outcome="missed_defect") == {ok}
    assert listed(outcome="confirmed_ng") == set()
    assert listed(outcome="labelled_ok", decision="none") == {uncalibrated_ok}
    assert client.get("/inspections", params={"outcome": "wrong"}).status_code == 422
    assert client.get("/inspections", params={"review": "maybe"}).status_code == 422


@both_registries
def test_review_refusals_and_a_review_after_the_model_was_deleted(make_client):
    client = make_client()
    assert fit(client, ROLE, ROI, [synthetic_roi(64, 48, 1)]).status_code == 200
    assert infer(client, ROLE, ROI, synthetic_roi(64, 48, 2)).status_code == 200
    service = client.app.state.service
    assert service.recorder.flush(30)
    record_id = client.get("/inspections").json()["items"][0]["id"]

    unknown = _review(client, "0" * 32, "ok")
    assert unknown.status_code == 404 and "GET /inspections" in unknown.json()["error"]
    assert _review(client, "not-an-id", "ok").status_code == 400
    bad = _review(client, record_id, "maybe")
    assert bad.status_code == 422
    assert "'ok'" in bad.json()["error"] and "'ng'" in bad.json()["error"]
    assert client.post(f"/inspections/{record_id}/review", json={"note": "no verdict"}).status_code == 422
    assert _review(client, record_id, "ok", note="x" * 2001).status_code == 400
    assert _review(client, record_id, "ok", reviewer="bad\nname").status_code == 400
    assert client.get(f"/inspections/{record_id}").json()["review"] is None  # no refusal wrote anything
    assert _audit(client, "review") == []

    assert service.registry.remove_model(ROLE, ROI)
    response = _review(client, record_id, "ng")
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "labelled_ng" and response.json()["reviewer"] is None


@both_registries
def test_the_queue_lists_unreviewed_kept_records_nearest_the_threshold_first_in_pages(make_client):
    client = make_client()
    distances = [0.30, 0.01, 0.12, 0.05, 0.05, 0.50, 0.02, 0.20]
    kept = [make_record(T0 + dt.timedelta(seconds=i), role_id="A", score=0.6 * (1 + (d if i % 2 else -d)),
                        threshold=0.6, decision="ng" if i % 2 else "ok", threshold_distance=d,
                        image_path=f"@records/x/{i}.png", image_bytes=10)
            for i, d in enumerate(distances)]
    others = [
        make_record(T0, role_id="A", threshold_distance=0.001),  # image not kept
        make_record(T0, role_id="A", threshold_distance=0.001, image_path="@records/x/r.png", image_bytes=1,
                    decision="ng"),  # reviewed below
        make_record(T0, role_id="A", threshold=None, decision=None, image_path="@records/x/u.png", image_bytes=1),
        make_record(T0, role_id="B", threshold_distance=0.0, image_path="@records/x/b.png", image_bytes=1),
    ]
    _insert(client, *kept, *others)
    assert _review(client, others[1].id, "ng").status_code == 200
    expected = [record.id for record in sorted(kept, key=lambda record: (record.threshold_distance, record.id))]

    seen, cursor = [], None
    while True:
        params = {"role_id": "A", "limit": 3, **({"cursor": cursor} if cursor else {})}
        response = client.get("/review/queue", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 3 and all(item["review"] is None and item["image_kept"]
                                               for item in page["items"])
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected  # a tie (0.05) is broken by id, never listed twice or skipped

    first = client.get("/review/queue", params={"role_id": "A", "limit": 1}).json()["items"][0]["id"]
    assert _review(client, first, "ok").status_code == 200
    assert client.get("/review/queue", params={"role_id": "A", "limit": 1}).json()["items"][0]["id"] == expected[1]
    only_ng = client.get("/review/queue", params={"role_id": "A", "decision": "ng"}).json()["items"]
    assert {item["id"] for item in only_ng} == {record.id for record in kept[1::2]} - {first}
    assert [item["id"] for item in client.get("/review/queue").json()["items"]][0] == others[3].id  # every model
    bad = client.get("/review/queue", params={"cursor": "bm90IGEgY3Vyc29y"})
    assert bad.status_code == 400 and "review queue" in bad.json()["error"]
    assert client.get("/review/queue", params={"limit": 0}).status_code == 400


def test_images_are_kept_for_ng_and_for_ok_near_the_threshold_by_default(make_client):
    assert Settings.load({}).record_images == "review" and Settings.load({}).record_near_margin == 0.10
    client = make_client()
    service = client.app.state.service
    assert fit(client, ROLE, ROI, [synthetic_roi(64, 48, seed) for seed in range(2)]).status_code == 200
    probe = synthetic_roi(64, 48, 7, defect=(32, 24, 5))
    score = service.infer(ROLE, ROI, 0.2, _upload(probe))["score"]
    shape = {"kind": "annulus", "r": 22, "r_inner": 5}

    def inspect_with_threshold(threshold):
        assert client.post("/calibrate_ng", json={"role_id": ROLE, "roi_id": ROI, "ok_scores": [threshold],
                                                  "area_mm2_thr": 0.01}).status_code == 200
        response = infer(client, ROLE, ROI, probe, shape=json.dumps(shape))
        assert response.status_code == 200, response.text
        assert service.recorder.flush(30)
        return response.json(), client.get("/inspections", params={"limit": 1}).json()["items"][0]

    near_ok, near_record = inspect_with_threshold(score * 1.05)  # OK, 4.8 % below the threshold
    far_ok, far_record = inspect_with_threshold(score * 1.5)  # OK, far below
    ng, ng_record = inspect_with_threshold(score * 0.5)
    assert (near_ok["decision"], far_ok["decision"], ng["decision"]) == ("ok", "ok", "ng")
    assert (near_record["image_kept"], far_record["image_kept"], ng_record["image_kept"]) == (True, False, True)
    assert client.get(f"/inspections/{near_record['id']}/image").content == png_bytes(probe)

    # the record keeps the whole shape, defaults filled in, and the regions as answered (boxes and areas)
    assert ng_record["shape"] == {"kind": "annulus", "cx": 32.0, "cy": 24.0, "r": 22.0, "r_inner": 5.0}
    assert ng["regions"] and ng_record["regions"] == [
        {key: region[key] for key in ("x", "y", "w", "h", "area_px", "area_mm2")} for region in ng["regions"]]
    assert far_record["regions"] == far_ok["regions"] == []
    queue = client.get("/review/queue").json()["items"]
    assert [item["id"] for item in queue] == [near_record["id"], ng_record["id"]]  # 0.048 before 0.5 (ng: x2)

    keep_ng_only = make_client(service.settings.models_dir, BDI_RECORD_IMAGES="ng")
    keep_ng_only.post("/calibrate_ng", json={"role_id": ROLE, "roi_id": ROI, "ok_scores": [score * 1.05]})
    assert infer(keep_ng_only, ROLE, ROI, probe).status_code == 200
    assert keep_ng_only.app.state.service.recorder.flush(30)
    assert keep_ng_only.get("/inspections", params={"limit": 1}).json()["items"][0]["image_kept"] is False


@both_registries
def test_a_shadow_version_changes_no_answer_and_is_recorded_and_tallied(make_client):
    client = make_client(BDI_RECORD_IMAGES="none")
    service = client.app.state.service
    probes = [synthetic_roi(64, 48, 20 + i, defect=(30, 20, 4) if i % 2 else None) for i in range(6)]
    assert fit(client, ROLE, ROI, [synthetic_roi(64, 48, seed) for seed in range(2)]).status_code == 200
    first_scores = [service.infer(ROLE, ROI, 0.2, _upload(probe))["score"] for probe in probes]
    assert fit(client, ROLE, ROI, [synthetic_roi(64, 48, seed) for seed in range(2, 5)]).status_code == 200
    scores = [service.infer(ROLE, ROI, 0.2, _upload(probe))["score"] for probe in probes]
    # a threshold that the two versions judge some probes differently by, if they can
    threshold = sorted(first_scores + scores)[len(probes)]
    assert client.post("/calibrate_ng", json={"role_id": ROLE, "roi_id": ROI, "ok_scores": [threshold]}).status_code == 200
    before = [infer(client, ROLE, ROI, probe).content for probe in probes]

    summary = client.get("/models/shadow", params={"role_id": ROLE, "roi_id": ROI}).json()
    assert summary == {"version": None, "since": None, "n": 0, "agree": 0, "ok_to_ng": 0, "ng_to_ok": 0}
    assert _shadow(client, 9).status_code == 404
    active = _shadow(client, 2)
    assert active.status_code == 409 and "active version" in active.json()["error"]
    assert _shadow(client, 0).status_code == 400
    assert _shadow(client, 1, role_id="nobody").status_code == 404
    started = _shadow(client, 1)
    assert started.status_code == 200, started.text
    assert started.json()["version"] == 1 and started.json()["since"]
    assert _shadow(client, 1).json() == started.json()  # the same version again keeps its start
    assert service.recorder.flush(30)

    during = [infer(client, ROLE, ROI, probe).content for probe in probes]
    assert during == before  # byte-identical answers
    assert service.recorder.flush(30)
    records = client.get("/inspections", params={"limit": len(probes)}).json()["items"][::-1]
    for record, first, answer in zip(records, first_scores, during):
        assert record["shadow_version"] == 1
        assert record["shadow_score"] == pytest.approx(first, rel=1e-5)
        assert record["shadow_decision"] == ("ng" if record["shadow_score"] >= threshold else "ok")
        assert record["score"] == json.loads(answer)["score"]
    assert any(record["shadow_score"] != record["score"] for record in records)  # two memories, two scores
    tally = client.get("/models/shadow", params={"role_id": ROLE, "roi_id": ROI}).json()
    assert tally == {
        "version": 1, "since": started.json()["since"], "n": len(probes),
        "agree": sum(record["decision"] == record["shadow_decision"] for record in records),
        "ok_to_ng": sum((record["decision"], record["shadow_decision"]) == ("ok", "ng") for record in records),
        "ng_to_ok": sum((record["decision"], record["shadow_decision"]) == ("ng", "ok") for record in records),
    }
    assert tally["agree"] < tally["n"]  # the threshold between the versions' scores makes them disagree

    stopped = _shadow(client, None)
    assert stopped.json() == {"version": None, "since": None}
    assert infer(client, ROLE, ROI, probes[0]).content == before[0]
    assert service.recorder.flush(30)
    assert client.get("/inspections", params={"limit": 1}).json()["items"][0]["shadow_version"] is None
    audit = _audit(client, "shadow")
    assert [entry.details["shadow_after"] for entry in audit] == [None, 1, 1]  # newest first


def _shadow(client, version, **fields):
    return client.post("/models/shadow", json={"role_id": ROLE, "roi_id": ROI, "version": version, **fields})


def _upload(image):
    from service.core import Upload

    return Upload("x.png", png_bytes(image))


@both_registries
def test_a_learned_staged_version_shadows_under_the_calibration_it_proposes(make_client, extractor_112):
    client = make_client(extractor_=extractor_112, BDI_INPUT_SIZE="112", BDI_CORESET_RATE="0.25",
                         BDI_RECORD_IMAGES="all")
    service = client.app.state.service
    assert fit(client, ROLE, ROI, [synthetic_roi(96, 80, seed) for seed in range(3)]).status_code == 200
    assert client.post("/calibrate_ng", json={"role_id": ROLE, "roi_id": ROI, "ok_scores": [0.01]}).status_code == 200
    for seed in (70, 71):  # every part is NG at this threshold; a person says these two are good
        assert infer(client, ROLE, ROI, synthetic_roi(96, 80, seed)).status_code == 200
        assert service.recorder.flush(30)
        record_id = client.get("/inspections", params={"limit": 1}).json()["items"][0]["id"]
        assert _review(client, record_id, "ok").json()["outcome"] == "false_reject"
    learned = client.post("/models/learn", json={"role_id": ROLE, "roi_id": ROI})
    assert learned.status_code == 200, learned.text
    proposed = learned.json()["calibration"]["threshold"]
    assert learned.json()["status"] == "staged" and proposed != 0.01

    assert _shadow(client, learned.json()["version"]).status_code == 200
    probes = [synthetic_roi(96, 80, seed) for seed in (70, 71, 80)]  # the learned parts and a new one
    for probe in probes:
        assert infer(client, ROLE, ROI, probe).json()["threshold"] == 0.01  # the active calibration answers
    assert service.recorder.flush(30)
    records = client.get("/inspections", params={"limit": len(probes)}).json()["items"]
    for record in records:
        assert record["shadow_version"] == learned.json()["version"] and record["decision"] == "ng"
        assert record["shadow_decision"] == ("ng" if record["shadow_score"] >= proposed else "ok")
    assert "ok" in {record["shadow_decision"] for record in records}  # judged by the proposal, not by 0.01

    # a replay of the staged version judges it by the same proposal the shadow used
    job = client.post("/models/replay", json={"role_id": ROLE, "roi_id": ROI, "version": learned.json()["version"]})
    assert job.status_code == 202, job.text
    deadline = time.monotonic() + 120
    while (status := client.get(f"/jobs/{job.json()['job_id']}").json())["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status["status"] == "done", status
    for item in status["result"]["items"]:
        assert item["new_decision"] == ("ng" if item["new_score"] >= proposed else "ok")
    assert "ok" in {item["new_decision"] for item in status["result"]["items"]}

    # once active, the version stops shadowing (it would be compared with itself)
    activated = client.post("/models/activate", json={"role_id": ROLE, "roi_id": ROI,
                                                      "version": learned.json()["version"]})
    assert activated.status_code == 200, activated.text
    shadow = client.get("/models/shadow", params={"role_id": ROLE, "roi_id": ROI}).json()
    assert shadow["version"] is None
    versions = client.get("/models/versions", params={"role_id": ROLE, "roi_id": ROI}).json()["items"]
    assert not any(item["shadow"] for item in versions)
