"""What a new user trips on (issue 22), through the real app: the records list follows the recipe rule of every
route, and takes the time forms the CLI takes."""

from __future__ import annotations

import datetime as dt
import json

from tests.support import make_record

UTC = dt.timezone.utc
NOW = dt.datetime.now(UTC).replace(microsecond=0)


def _two_recipes(client):
    store = client.app.state.service.records
    rows = [make_record(NOW - dt.timedelta(minutes=1), recipe_id="line2-disc"),
            make_record(NOW - dt.timedelta(minutes=2), recipe_id="default"),
            make_record(NOW - dt.timedelta(days=10), recipe_id="line2-disc")]
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
    iso = client.get("/inspections", params={"since": (NOW - dt.timedelta(minutes=90)).isoformat()})
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
