"""What a new user trips on (issue 22), through the real app: the records list follows the recipe rule of every
route, and takes the time forms the CLI takes."""

from __future__ import annotations

import datetime as dt
import json

from tests.support import make_record

UTC = dt.timezone.utc


def _two_recipes(client):
    store = client.app.state.service.records
    now = dt.datetime.now(UTC).replace(microsecond=0)  # at the call: ages like "5m" count from the request's now
    rows = [make_record(now - dt.timedelta(minutes=1), recipe_id="line2-disc"),
            make_record(now - dt.timedelta(minutes=2), recipe_id="default"),
            make_record(now - dt.timedelta(days=10), recipe_id="line2-disc")]
    store.insert(rows)
    return rows


def _recipes(response):
    assert response.status_code == 200, response.text
    return [item["recipe_id"] for item in response.json()["items"]]


def test_the_records_list_follows_the_recipe_header_and_the_query_beats_it(client):
    _two_recipes(client)
    assert _recipes(client.get("/inspections")) == ["line2-disc", "default", "line2-disc"]  # neither: every recipe
    assert _recipes(client.get("/inspections", headers={"X-Recipe-Id": "Line2-Disc"})) == ["line2-disc"] * 2
    assert _recipes(client.get("/inspections", headers={"X-Recipe-Id": "  "})) == ["line2-disc", "default", "line2-disc"]
    assert _recipes(client.get("/inspections", params={"recipe_id": "default"},
                               headers={"X-Recipe-Id": "Line2-Disc"})) == ["default"]
    assert _recipes(client.get("/inspections", params={"recipe_id": " LINE2-disc "})) == ["line2-disc"] * 2
    bad = client.get("/inspections", headers={"X-Recipe-Id": "My Layout"})
    assert bad.status_code == 400 and bad.json()["error"].startswith("Invalid recipe_id 'My Layout'.")


def test_since_takes_an_age_as_the_cli_does(client):
    rows = _two_recipes(client)
    week = client.get("/inspections", params={"since": "7d"})
    assert week.status_code == 200, week.text
    assert [item["id"] for item in week.json()["items"]] == [rows[0].id, rows[1].id]
    assert len(client.get("/inspections", params={"since": "2w"}).json()["items"]) == 3
    assert len(client.get("/inspections", params={"until": "5m"}).json()["items"]) == 1
    iso = client.get("/inspections", params={"since": (rows[0].created_at - dt.timedelta(minutes=89)).isoformat()})
    assert len(iso.json()["items"]) == 2
    for bad in ("yesterday", "1700000000", "2026-13-01T00:00:00Z"):
        refused = client.get("/inspections", params={"since": bad})
        assert refused.status_code == 422, bad
        [problem] = refused.json()["detail"]
        assert problem["loc"] == ["query", "since"] and "7d" in problem["msg"], problem


def test_a_misspelt_shape_is_refused_instead_of_scoring_the_whole_image(client):
    from tests.support import fit, infer, synthetic_roi

    assert fit(client, "Master1", "inspection-1", [synthetic_roi(64, 48, 0)]).status_code == 200
    misspelt = json.dumps({"kind": "rect", "x": 10, "y": 10, "width": 100, "height": 100})
    response = infer(client, "Master1", "inspection-1", synthetic_roi(64, 48, 1), shape=misspelt)
    assert response.status_code == 400, response.text  # CONTRACT.md: an invalid shape is a 400
    assert "'height', 'width'" in response.json()["error"] and "rect: x, y, w, h" in response.json()["error"]


def test_the_documents_infer_form_describes_its_optional_fields_with_an_example(client):
    document = client.get("/schema/openapi.json").json()
    form = document["components"]["schemas"]["InferForm"]["properties"]
    for name in ("shape", "part_id", "include_heatmap", "recipe_id"):
        assert form[name].get("description") and form[name].get("examples"), (name, form[name])
    assert "does not take" in form["shape"]["description"]


def test_an_image_of_another_size_than_the_training_images_is_warned_about_to_newer_clients_only(make_client):
    import cv2
    import numpy as np

    from tests.support import fit, infer, metric_values, png_bytes, synthetic_roi

    client = make_client(BDI_RECORD_IMAGES="none")
    service = client.app.state.service
    assert fit(client, "Master1", "inspection-1", [synthetic_roi(64, 48, seed) for seed in range(2)]).status_code == 200
    active = service.model_state("Master1", "inspection-1").active
    assert (active.train_width, active.train_height) == (64, 48)

    same = infer(client, "Master1", "inspection-1", synthetic_roi(66, 47, 5), headers={"X-Request-Id": "a"})
    assert same.status_code == 200 and "warnings" not in same.json()  # within 10%: nothing to say
    one_pixel = png_bytes(np.full((1, 1, 3), 120, np.uint8))
    old = infer(client, "Master1", "inspection-1", one_pixel, headers={"X-Correlation-Id": "old-gui"})
    assert old.status_code == 200 and list(old.json()) == ["score", "threshold", "decision", "token_shape",
                                                           "heatmap_png_base64", "regions"]
    crop = cv2.resize(synthetic_roi(64, 48, 6), (150, 20))
    newer = infer(client, "Master1", "inspection-1", crop, headers={"X-Request-Id": "newer-gui"})
    assert newer.status_code == 200
    [warning] = newer.json()["warnings"]
    assert warning.startswith("image_size: the image is 150x20 px") and "64x48" in warning

    assert service.recorder.flush(30)
    records = {item["correlation_id"]: item for item in client.get("/inspections").json()["items"]}
    assert records["old-gui"]["warnings"][0].startswith("image_size: the image is 1x1 px")
    assert records["newer-gui"]["warnings"] == [warning] and records["a"]["warnings"] is None
    metrics = metric_values(client.get("/metrics").text)
    labels = (("kind", "image_size"), ("recipe_id", "default"), ("roi_id", "inspection-1"), ("role_id", "Master1"))
    assert metrics[("bdi_inspection_warnings_total", labels)] == 2


def _ok_pngs(*seeds: int) -> list[tuple[str, bytes]]:
    from tests.support import png_bytes, synthetic_roi

    return [(f"ok_{seed}.png", png_bytes(synthetic_roi(64, 48, seed))) for seed in seeds]


def test_the_dataset_store_keeps_an_image_once_and_marks_a_sample_sent_without_meta(client):
    from tests.support import NewerGui

    gui = NewerGui(client, "line2")
    meta = {"mm_per_px": 0.2, "timestamp": None}
    first = gui.upload("ok", "Inspection", "roi-1", _ok_pngs(1, 2, 3), [meta] * 3)
    assert first.status_code == 200, first.text
    assert first.json()["already_stored"] == []
    again = gui.upload("ok", "Inspection", "roi-1", _ok_pngs(2, 4, 4, 1), [meta] * 4)
    assert again.status_code == 200, again.text
    saved, names = again.json()["saved"], first.json()["saved"]
    assert saved[0] == names[1] and saved[3] == names[0] and saved[1] == saved[2] and saved[1] not in names
    assert again.json()["already_stored"] == [names[1], names[0]]
    listed = gui.get("/datasets/list", role_id="Inspection", roi_id="roi-1").json()["classes"]["ok"]
    assert listed["count"] == 4  # 1, 2, 3 and 4, each once

    bare = gui.upload("ok", "Inspection", "roi-1", _ok_pngs(5))
    assert bare.status_code == 200, bare.text
    sidecar = gui.get("/datasets/meta", role_id="Inspection", roi_id="roi-1", label="ok",
                      filename=bare.json()["saved"][0]).json()
    assert sidecar["meta_missing"] is True
    with_meta = gui.get("/datasets/meta", role_id="Inspection", roi_id="roi-1", label="ok", filename=names[0]).json()
    assert "meta_missing" not in with_meta


def _fit_from_store(gui, **fields):
    texts = [("role_id", "Inspection"), ("roi_id", "roi-1"), ("mm_per_px", "0.2"), ("use_dataset", "true"),
             *fields.items()]
    return gui.form("/fit_ok", texts)


def test_a_fit_from_the_store_takes_a_holdout_per_request_and_an_append_adds_the_new_samples_only(client):
    from tests.support import NewerGui

    gui = NewerGui(client, "line2")
    assert gui.upload("ok", "Inspection", "roi-1", _ok_pngs(*range(12)), [{"mm_per_px": 0.2}] * 12).status_code == 200
    gui_answer = _fit_from_store(gui)
    assert gui_answer.status_code == 200 and "dataset" not in gui_answer.json()  # the GUI's request: as it was
    fitted = _fit_from_store(gui, holdout="0.25")
    assert fitted.status_code == 200, fitted.text
    assert fitted.json()["dataset"] == {"fitted": 9, "held_out": 3, "holdout": 0.25}
    assert _fit_from_store(gui, holdout="0.95").status_code == 400

    nothing_new = _fit_from_store(gui, append="true")
    assert nothing_new.status_code == 400 and "is new to the active memory" in nothing_new.json()["error"]
    assert gui.upload("ok", "Inspection", "roi-1", _ok_pngs(20, 21), [{"mm_per_px": 0.2}] * 2).status_code == 200
    appended = _fit_from_store(gui, append="true")
    assert appended.status_code == 200, appended.text
    assert appended.json()["dataset"] == {"fitted": 2, "held_out": 3, "holdout": None}
    assert appended.json()["append"]["images"] == 2
    assert _fit_from_store(gui, append="true").status_code == 400  # appended now: nothing new again


def test_heatmaps_record_their_scale_and_a_threshold_scale_makes_parts_comparable(make_client):
    import base64

    from tests.support import decode_png, fit, infer, synthetic_roi

    client = make_client(BDI_RECORD_IMAGES="none")
    service = client.app.state.service
    assert fit(client, "Master1", "inspection-1", [synthetic_roi(64, 48, seed) for seed in range(3)]).status_code == 200
    clean, broken = synthetic_roi(64, 48, 7), synthetic_roi(64, 48, 8, defect=(32, 24, 8))
    uncalibrated = infer(client, "Master1", "inspection-1", clean, heatmap_scale="threshold")
    assert uncalibrated.status_code == 400 and "not calibrated" in uncalibrated.json()["error"]
    scores = [service.infer("Master1", "inspection-1", 0.2, _upload(png))["score"] for png in (clean, broken)]
    assert client.post("/calibrate_ng", json={"role_id": "Master1", "roi_id": "inspection-1",
                                              "ok_scores": [scores[0] * 1.01]}).status_code == 200
    threshold = service.model_state("Master1", "inspection-1").calibration.values["threshold"]

    def grey(image, **fields):
        answer = infer(client, "Master1", "inspection-1", image, headers={"X-Correlation-Id": str(fields)}, **fields)
        assert answer.status_code == 200, answer.text
        return decode_png(base64.b64decode(answer.json()["heatmap_png_base64"])), answer.json()

    stretched_clean, old_body = grey(clean)
    assert list(old_body) == ["score", "threshold", "decision", "token_shape", "heatmap_png_base64", "regions"]
    stretched_broken, _ = grey(broken)
    anchored_clean, new_body = grey(clean, heatmap_scale="threshold", part_id="c")
    anchored_broken, _ = grey(broken, heatmap_scale="threshold", part_id="b")
    assert "recipe_id" in new_body  # a field the GUIs never send: a newer client
    assert stretched_clean.max() == stretched_broken.max() == 255  # each image stretched to its own range
    assert anchored_clean.max() < 200 <= anchored_broken.max()  # one scale: the clean part stays cool
    assert service.recorder.flush(30)
    items = {item["part_id"]: item for item in client.get("/inspections").json()["items"]}
    assert (items["c"]["heatmap_low"], items["c"]["heatmap_high"]) == (0.0, threshold / 0.7)
    stretched = items[None]
    assert stretched["heatmap_low"] is not None and stretched["heatmap_high"] > stretched["heatmap_low"]


def _upload(image):
    from service.core import Upload
    from tests.support import png_bytes

    return Upload("roi.png", png_bytes(image))
