"""Inspection records, /inspections and /metrics through the real app: every answered /infer is one
record equal to its answer; pages are exact while rows arrive; images are kept per setting and pruned by
size and age; a record that can't be written never fails the inspection; metrics count what was asked."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import logging
import threading

import pytest
from sqlalchemy.exc import OperationalError

from service.logs import configure_logging
from tests.support import both_registries, fit, infer, make_record, metric_values, png_bytes, synthetic_roi

ROLE, ROI, UNCALIBRATED = "Master1", "inspection-1", "uncal"
UTC = dt.timezone.utc
CONTRACT_KEYS = ["score", "threshold", "decision", "token_shape", "heatmap_png_base64", "regions"]


def _fitted(client, *rois: str):
    for roi in rois:
        assert fit(client, ROLE, roi, [synthetic_roi(64, 48, seed) for seed in range(2)]).status_code == 200
    return client.app.state.service


def _page(client, **params):
    response = client.get("/inspections", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_every_answered_infer_is_one_record_equal_to_the_answer(make_client):
    client = make_client(BDI_RECORD_IMAGES="ng")
    service = _fitted(client, ROI, UNCALIBRATED)
    images = [synthetic_roi(64, 48, 10 + i, defect=(32, 24, 6) if i % 3 == 0 else None) for i in range(14)]
    # a threshold between the scores (scored without recording), so both decisions occur
    scores = sorted(service.infer(ROLE, ROI, 0.2, _upload(image))["score"] for image in images)
    assert client.post("/calibrate_ng", json={"role_id": ROLE, "roi_id": ROI, "ok_scores": [scores[7]],
                                              "area_mm2_thr": 0.01}).status_code == 200
    calibration = service.model_state(ROLE, ROI).calibration

    sent = {}
    for i in range(20):
        roi, image = (ROI, images[i]) if i < 14 else (UNCALIBRATED, synthetic_roi(64, 48, 40 + i))
        fields = {"shape": json.dumps({"kind": "circle", "r": 20})} if i % 4 == 1 else {}
        if i % 5 == 2:
            fields["part_id"] = f"DMC-{i}"
        headers = {"X-Correlation-Id": f"req-{i}", **({"X-Part-Id": f"HDR-{i}"} if i % 5 == 3 else {})}
        response = infer(client, ROLE, roi, image, headers=headers, **fields)
        assert response.status_code == 200, response.text
        assert list(response.json()) == CONTRACT_KEYS
        sent[f"req-{i}"] = (roi, png_bytes(image), fields, headers, response.json())
    assert service.recorder.flush(30)

    items = _page(client, limit=1000)["items"]
    assert len(items) == 20 and len({item["id"] for item in items}) == 20
    decisions = set()
    for item in items:
        roi, data, fields, headers, answer = sent[item["correlation_id"]]
        regions = answer["regions"]
        assert (item["role_id"], item["roi_id"], item["recipe_id"], item["source"]) == (ROLE, roi, "default", "api")
        assert item["score"] == answer["score"] and item["threshold"] == answer["threshold"]
        assert item["decision"] == answer["decision"]
        assert item["n_regions"] == len(regions)
        assert item["largest_area_mm2"] == max((r["area_mm2"] for r in regions), default=0.0)
        assert item["total_area_mm2"] == pytest.approx(sum(r["area_mm2"] for r in regions))
        assert (item["image_width"], item["image_height"]) == (64, 48)
        assert item["image_sha256"] == hashlib.sha256(data).hexdigest()
        assert item["shape_kind"] == ("circle" if "shape" in fields else None) and item["mm_per_px"] == 0.2
        assert item["part_id"] == fields.get("part_id", headers.get("X-Part-Id"))
        assert item["version"] == 1 and item["score_percentile"] == 99
        assert item["calibration_id"] == (calibration.uid if roi == ROI else None)
        assert item["total_ms"] >= item["forward_ms"] > 0
        assert item["image_kept"] == (answer["decision"] == "ng")
        assert client.get(f"/inspections/{item['id']}").json() == item
        image, heatmap = (client.get(f"/inspections/{item['id']}/{kind}") for kind in ("image", "heatmap"))
        if item["image_kept"]:
            assert image.content == data and image.headers["content-type"] == "image/png"
            assert heatmap.content == base64.b64decode(answer["heatmap_png_base64"])
        else:
            assert image.status_code == heatmap.status_code == 404
            assert "BDI_RECORD_IMAGES" in image.json()["error"]
        decisions.add(item["decision"])
    assert decisions == {"ok", "ng", None}

    # an old GUI sends no part id: the answer is the same as with one
    probe = synthetic_roi(64, 48, 99)
    plain, tagged = infer(client, ROLE, ROI, probe), infer(client, ROLE, ROI, probe, part_id="X-1")
    assert plain.json() == tagged.json()
    assert infer(client, ROLE, ROI, probe, part_id="bad\nid").status_code == 400
    missing = client.get("/inspections/" + "0" * 32)
    assert missing.status_code == 404 and "GET /inspections" in missing.json()["error"]


def _upload(image):
    from service.core import Upload

    return Upload("x.png", png_bytes(image))


@both_registries
def test_filters_and_pages_are_exact_while_rows_arrive(make_client):
    client = make_client()
    store = client.app.state.service.records
    base = dt.datetime(2026, 3, 1, 8, tzinfo=UTC)
    rows = [make_record(base + dt.timedelta(seconds=i // 3), role_id="A" if i % 4 else "B",
                        decision=("ok", "ng", None)[i % 3], part_id=f"P{i % 5}") for i in range(240)]
    store.insert(rows)
    expected_a = {row.id for row in rows if row.role_id == "A"}

    stop = threading.Event()

    def arrive() -> None:  # new inspections keep coming while the client pages (same second: ties on the time)
        while not stop.is_set():
            now = dt.datetime.now(UTC)
            store.insert([make_record(now, role_id="A"), make_record(now, role_id="A")])

    writer = threading.Thread(target=arrive)
    writer.start()
    try:
        seen, cursor, order = [], None, []
        while True:
            page = _page(client, role_id="A", limit=7, **({"cursor": cursor} if cursor else {}))
            seen += [item["id"] for item in page["items"]]
            order += [(item["created_at"], item["id"]) for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    finally:
        stop.set()
        writer.join()
    assert len(seen) == len(set(seen)), "a row was listed twice"
    assert expected_a <= set(seen), "a row was skipped"
    assert order == sorted(order, reverse=True)

    def ids(**params):
        return {item["id"] for item in _page(client, **{"limit": 1000, "until": "2026-03-02T00:00:00Z", **params})["items"]}

    assert ids(decision="ng") == {r.id for r in rows if r.decision == "ng"}
    assert ids(decision="none") == {r.id for r in rows if r.decision is None}
    assert ids(role_id="B", part_id="P2") == {r.id for r in rows if r.role_id == "B" and r.part_id == "P2"}
    window = {r.id for r in rows if base + dt.timedelta(seconds=10) <= r.created_at < base + dt.timedelta(seconds=20)}
    assert ids(since="2026-03-01T08:00:10", until="2026-03-01T08:00:20") == window  # no offset: UTC
    assert ids(since="2026-03-01T09:00:10+01:00", roi_id="r") == {r.id for r in rows if r.created_at >= base +
                                                                  dt.timedelta(seconds=10)}
    assert len(ids(recipe_id="default")) == 240 and ids(recipe_id="other") == set()
    for params, status in (({"limit": 0}, 400), ({"limit": 1001}, 400), ({"cursor": "bm9wZQ"}, 400),
                           ({"role_id": " "}, 400), ({"decision": "maybe"}, 422), ({"since": "yesterday"}, 422)):
        response = client.get("/inspections", params=params)
        assert response.status_code == status, (params, response.text)
        assert response.json()["error"]


@both_registries
def test_images_are_kept_per_setting_and_pruned_by_size_then_age(make_client, tmp_path):
    client = make_client(tmp_path / "models", BDI_RECORD_IMAGES="all")
    service = _fitted(client, UNCALIBRATED)
    for seed in range(5):
        assert infer(client, ROLE, UNCALIBRATED, synthetic_roi(64, 48, seed), part_id=f"p{seed}").status_code == 200
        assert service.recorder.flush(30)  # one by one: five distinct times
    records = [service.records.get(item["id"]) for item in _page(client)["items"]]  # newest first
    assert all(record.image_path and (tmp_path / "models" / record.image_path).is_file() for record in records)
    assert records[0].image_path.startswith("@records/" + records[0].created_at.strftime("%Y/%m/%d/"))

    limit_mb = sum(record.image_bytes for record in records[:2]) / 2**20  # room for the two newest
    pruner = make_client(tmp_path / "models", BDI_RECORD_IMAGES="all", BDI_RECORD_MAX_MB=repr(limit_mb))
    pruner.app.state.service.recorder.prune()
    kept = [item["image_kept"] for item in _page(client)["items"]]
    assert kept == [True, True, False, False, False]
    for record in records[2:]:
        assert not (tmp_path / "models" / record.image_path).exists()
        assert client.get(f"/inspections/{record.id}/image").status_code == 404

    old = service.records.keep_files(make_record(dt.datetime.now(UTC) - dt.timedelta(days=400)), b"\x89PNG old", b"h")
    service.records.insert([old])
    assert (tmp_path / "models" / old.image_path).is_file()
    service.recorder.prune()  # BDI_RECORD_RETENTION_DAYS default 365
    assert service.records.get(old.id) is None and not (tmp_path / "models" / old.image_path).parent.exists()
    assert len(_page(client)["items"]) == 5
    assert not list((tmp_path / "models" / "@records").rglob("*.partial"))


def test_a_record_that_cannot_be_written_never_fails_the_inspection(make_client, tmp_path, caplog, monkeypatch):
    client = make_client(tmp_path / "models", BDI_RECORD_IMAGES="all", BDI_RECORD_QUEUE_SIZE="1")
    service = _fitted(client, UNCALIBRATED)
    image = synthetic_roi(64, 48, 3)
    expected = infer(client, ROLE, UNCALIBRATED, image).json()
    assert service.recorder.flush(30)

    (tmp_path / "models" / "@records").rename(tmp_path / "aside")
    (tmp_path / "models" / "@records").write_bytes(b"a file where the image folder should be")
    assert infer(client, ROLE, UNCALIBRATED, image).json() == expected
    assert service.recorder.flush(30)
    assert [item["image_kept"] for item in _page(client)["items"]] == [False, True]  # the record, without images
    (tmp_path / "models" / "@records").unlink()
    (tmp_path / "aside").rename(tmp_path / "models" / "@records")

    original = service.records.insert

    def refused(records):  # the edge: a database that is full or locked
        raise OperationalError("INSERT INTO inspections", {}, Exception("database or disk is full"))

    service.records.insert = refused
    with caplog.at_level(logging.ERROR, logger="service.storage.records"):
        assert infer(client, ROLE, UNCALIBRATED, image).json() == expected
        assert service.recorder.flush(30)
    assert "inspection record(s) were not written" in caplog.text

    released = threading.Event()

    def slow(records):  # a database that hangs: the queue (size 1) fills, the next records are dropped
        released.wait(60)
        original(records)

    service.records.insert = slow
    for _ in range(3):
        assert infer(client, ROLE, UNCALIBRATED, image).json() == expected
    released.set()
    assert service.recorder.flush(30)
    written = len(_page(client)["items"]) - 2
    service.records.insert = original
    monkeypatch.setattr("service.storage.records.QUEUED_IMAGE_BYTES", 1000)  # uploads waiting must not fill memory
    assert infer(client, ROLE, UNCALIBRATED, image).json() == expected
    assert service.recorder.flush(30)
    assert _page(client)["items"][0]["image_kept"] is False
    metrics = metric_values(client.get("/metrics").text)
    failures = {dict(labels)["reason"]: value for (name, labels), value in metrics.items()
                if name == "bdi_record_write_failures_total"}
    assert failures["image"] == 2 and failures["database"] == 1
    assert failures["queue_full"] == 3 - written >= 1
    assert metrics[("bdi_records_written_total", ())] == 2 + written + 1


def test_metrics_count_the_requests_made(make_client):
    client = make_client()
    service = _fitted(client, ROI)
    assert fit(client, ROLE, ROI, [synthetic_roi(64, 48, 9)], append="true").status_code == 200
    assert client.post("/calibrate_ng", json={"role_id": ROLE, "roi_id": ROI, "ok_scores": [0.0]}).status_code == 200
    for seed in range(3):  # threshold 0: every inspection is NG
        assert infer(client, ROLE, ROI, synthetic_roi(64, 48, seed)).status_code == 200
    assert infer(client, ROLE, "ghost", synthetic_roi(64, 48, 0)).status_code == 400
    for _ in range(2):
        assert client.get("/state", params={"role_id": ROLE, "roi_id": ROI}).status_code == 200
    assert client.get("/nowhere").status_code == 404 and client.get("/infer").status_code == 405
    assert service.recorder.flush(30)
    metrics = metric_values(client.get("/metrics").text)

    def value(name: str, **labels: str) -> float:
        return metrics.get((name, tuple(sorted(labels.items()))), 0)

    def requests(route: str, method: str, status: int) -> float:
        return value("bdi_http_requests_total", route=route, method=method, status=str(status))

    assert requests("/fit_ok", "POST", 200) == 2 and requests("/calibrate_ng", "POST", 200) == 1
    assert requests("/infer", "POST", 200) == 3 and requests("/infer", "POST", 400) == 1
    assert requests("/state", "GET", 200) == 2
    assert requests("<unmatched>", "GET", 404) == 1 and requests("<unmatched>", "GET", 405) == 1
    assert value("bdi_http_request_duration_seconds_count", method="POST", route="/infer") == 4
    assert value("bdi_inspections_total", decision="ng", recipe_id="default", role_id=ROLE, roi_id=ROI) == 3
    assert value("bdi_backbone_forward_seconds_count") == 3 and value("bdi_backbone_batch_size_sum") == 3
    # the append read its parent from the cache the fit filled, the infers what the append left there
    assert value("bdi_memory_cache_hits_total") == 4 and value("bdi_memory_cache_misses_total") == 0
    assert value("bdi_fits_total", kind="fit") == 1 and value("bdi_fit_duration_seconds_count", kind="fit") == 1
    assert value("bdi_fits_total", kind="append") == 1
    assert value("bdi_records_written_total") == 3
    assert value("bdi_inference_queue_depth") == value("bdi_record_queue_depth") == 0
    assert value("bdi_models_dir_free_bytes") > 0
    assert not any(name == "bdi_registry_errors_total" for name, _ in metrics)
    assert _page(client)["items"][0]["decision"] == "ng"  # /metrics itself is no inspection
    assert len(_page(client)["items"]) == 3


def test_metrics_and_records_need_the_api_key_which_prometheus_sends_as_bearer(make_client):
    client = make_client(BDI_API_KEY="s3cret")
    for path in ("/metrics", "/inspections"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get(path, headers={"X-API-Key": "s3cret"}).status_code == 200


def test_json_log_lines_carry_the_correlation_id_and_the_model(make_client):
    client = make_client(BDI_LOG_FORMAT="json")
    handler = next(h for h in logging.getLogger().handlers if getattr(h, "_bdi", False))
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        _fitted(client, ROI)
        assert infer(client, ROLE, ROI, synthetic_roi(64, 48, 1), headers={"X-Correlation-Id": "json-1"}).status_code == 200
    finally:
        handler.setStream(previous)
        configure_logging("INFO", "text")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert all(set(line) >= {"time", "level", "logger", "message", "correlation_id", "role_id", "roi_id"}
               for line in lines)
    [inferred] = [line for line in lines if line["message"].startswith("infer ")]
    assert inferred["correlation_id"] == "json-1" and (inferred["role_id"], inferred["roi_id"]) == (ROLE, ROI)
    assert inferred["time"].endswith("Z") and inferred["level"] == "INFO" and inferred["logger"] == "service.inspection"


def test_records_and_metrics_carry_the_requests_recipe(make_client):
    client = make_client()
    service = client.app.state.service
    assert fit(client, ROLE, ROI, [synthetic_roi(64, 48, 0)], recipe_id="line2").status_code == 200
    image = synthetic_roi(64, 48, 1)
    assert infer(client, ROLE, ROI, image, recipe_id="line2").status_code == 200
    assert infer(client, ROLE, ROI, image, headers={"X-Recipe-Id": "line2"}).status_code == 200
    assert infer(client, ROLE, ROI, image).status_code == 400  # not fitted in the default namespace
    assert service.recorder.flush(30)
    assert [item["recipe_id"] for item in _page(client, recipe_id="line2")["items"]] == ["line2", "line2"]
    assert _page(client, recipe_id="default")["items"] == []
    metrics = metric_values(client.get("/metrics").text)
    labels = (("decision", "none"), ("recipe_id", "line2"), ("roi_id", ROI), ("role_id", ROLE))
    assert metrics[("bdi_inspections_total", labels)] == 2
