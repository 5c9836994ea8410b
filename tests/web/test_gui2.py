"""The newer GUI generation (CONTRACT-GUI2.md) over HTTP, in the bytes its .NET client writes: the whole workflow
(upload, list, meta, file, fit from the store, state, calibrate_dataset, infer, delete), recipes as namespaces
that never fall through, and old GUIs that notice none of it."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support import NewerGui, both_registries, decode_png, fit, infer, png_bytes, synthetic_roi

ROLE, ROI = "Inspection", "inspection-1"
SIZE = 64
SHAPE = json.dumps({"kind": "circle", "cx": SIZE / 2, "cy": SIZE / 2, "r": SIZE / 2 - 2})
OK = [png_bytes(synthetic_roi(SIZE, SIZE, seed)) for seed in range(10)]
NG = [png_bytes(synthetic_roi(SIZE, SIZE, 50 + seed, defect=(20 + 20 * seed, 32, 7))) for seed in range(2)]
CONTRACT_FIT_KEYS = ["n_embeddings", "coreset_size", "token_shape", "coreset_rate_requested", "coreset_rate_applied"]
CONTRACT_INFER_KEYS = ["score", "threshold", "decision", "token_shape", "heatmap_png_base64", "regions"]
CONTRACT_STATE_KEYS = ["status", "role_id", "roi_id", "memory_fitted", "fitted", "calib_present", "token_shape",
                       "version", "calib_source", "calib_stale"]
FORBIDDEN_IN_FIT_ERRORS = ("already trained", "already exists", "ya entrenad", "memoria existente")


def meta(label: str, index: int, mm_per_px: float = 0.2) -> dict[str, Any]:
    """The newer GUI's meta of one sample."""
    return {"role_id": ROLE, "roi_id": ROI, "label": label, "filename": f"{label}_{index:04d}.png", "angle": None,
            "timestamp": None, "mm_per_px": mm_per_px, "shape_json": SHAPE, "created_at_utc": "2026-11-30T10:00:00Z",
            "source_path": f"C:\\captures\\{label}_{index:04d}.png"}


def upload_samples(gui: NewerGui, mm_per_px: float = 0.2) -> None:
    """10 OK (one request of 7, three of 1) and 2 NG samples, each with its meta."""
    batches = [list(range(7)), [7], [8], [9]]
    for batch in batches:
        response = gui.upload("ok", ROLE, ROI, [(f"ok_{i:04d}.png", OK[i]) for i in batch],
                              [meta("ok", i, mm_per_px) for i in batch])
        assert response.status_code == 200, response.text
    response = gui.upload("ng", ROLE, ROI, [("ng_0000.png", NG[0]), ("ng_ñ.png", NG[1])],
                          [meta("ng", 0, mm_per_px), meta("ng", 1, mm_per_px)])
    assert response.status_code == 200, response.text


def fit_from_store(gui: NewerGui, mm_per_px: str = "0.2"):
    """/fit_ok exactly as the newer GUI sends it: these fields in this order, no file part."""
    return gui.form("/fit_ok", [("role_id", ROLE), ("roi_id", ROI), ("mm_per_px", mm_per_px), ("memory_fit", "false"),
                                ("model_key", ROI), ("use_dataset", "true")])


def gui_infer(gui: NewerGui, image: bytes):
    return gui.form("/infer", [("role_id", ROLE), ("roi_id", ROI), ("mm_per_px", "0.2"), ("shape", SHAPE),
                               ("model_key", ROI)], [("image", "roi.png", image)])


@both_registries
@pytest.mark.parametrize("layout, recipe", [(None, "default"), ("Line2-Disc", "line2-disc")])
def test_the_newer_gui_workflow(client, layout, recipe):
    gui = NewerGui(client, layout)
    models_dir: Path = client.app.state.settings.models_dir
    health = gui.client.get("/health", headers=gui.headers())
    assert health.status_code == 200 and health.json()["recipe_id"] == recipe
    assert all(isinstance(health.json()[key], str) for key in ("status", "device", "model", "version", "request_id"))
    upload_samples(gui)

    listing = gui.get("/datasets/list", role_id=ROLE, roi_id=ROI)
    assert listing.status_code == 200, listing.text
    body = listing.json()
    assert body["recipe_id"] == recipe and body["role_id"] == ROLE and body["roi_id"] == ROI
    ok, ng = body["classes"]["ok"], body["classes"]["ng"]
    assert ok["count"] == 10 and ng["count"] == 2
    assert ok["files"] == sorted(ok["files"]) and len(set(ok["files"] + ng["files"])) == 12
    assert all(ok["meta"][name] is True for name in ok["files"])

    first = ok["files"][0]
    sidecar = gui.get("/datasets/meta", role_id=ROLE, roi_id=ROI, label="ok", filename=first)
    assert sidecar.status_code == 200, sidecar.text
    stored = sidecar.json()
    assert stored["filename"] == first and stored["client_filename"] == "ok_0000.png"
    assert stored["mm_per_px"] == 0.2 and stored["shape_json"] == SHAPE and stored["timestamp"] is None
    assert stored["recipe_id"] == recipe and stored["label"] == "ok" and stored["source_path"].endswith("ok_0000.png")
    assert stored["created_at_utc"] != "2026-11-30T10:00:00Z"  # the service's time, not the client's

    download = gui.get("/datasets/file", role_id=ROLE, roi_id=ROI, label="ok", filename=first)
    assert download.status_code == 200 and download.content == OK[0]
    assert download.headers["content-type"] == "image/png"
    named = gui.get("/datasets/meta", role_id=ROLE, roi_id=ROI, label="ng", filename=body["classes"]["ng"]["files"][1])
    assert named.json()["client_filename"] == "ng_0001.png"  # the meta's filename (the part's was ng_ñ.png)

    fitted = fit_from_store(gui)
    assert fitted.status_code == 200, fitted.text
    answer = fitted.json()
    assert list(answer) == [*CONTRACT_FIT_KEYS, "request_id", "recipe_id"]
    assert answer["request_id"] == gui.last_request_id and answer["recipe_id"] == recipe
    assert answer["n_embeddings"] == 10 * 16 * 16 and isinstance(answer["coreset_size"], int)

    state = gui.get("/state", role_id=ROLE, roi_id=ROI, model_key=ROI).json()
    assert state["memory_fitted"] is True and state["calib_present"] is False and state["version"] == 1
    assert (state["recipe_id"], state["model_key"]) == (recipe, ROI) and uuid.UUID(state["request_id"])

    calibration = gui.post_json("/calibrate_dataset", {"role_id": ROLE, "roi_id": ROI, "default_mm_per_px": 0.2})
    assert calibration.status_code == 200, calibration.text
    values = calibration.json()
    assert values["status"] == "ok" and isinstance(values["threshold"], float)
    assert (values["n_ok"], values["n_ng"], values["n_skipped"]) == (10, 2, 0)
    assert (values["recipe_id"], values["role_id"], values["roi_id"], values["model_key"]) == (recipe, ROLE, ROI, ROI)
    assert "warning" in values  # the memory was fitted on these OK samples: the answer says the threshold is low
    state = gui.get("/state", role_id=ROLE, roi_id=ROI).json()
    assert state["calib_present"] is True and state["calib_source"] == "dataset"

    good, bad = gui_infer(gui, png_bytes(synthetic_roi(SIZE, SIZE, 99))), gui_infer(gui, NG[0])
    assert good.status_code == 200 and bad.status_code == 200, (good.text, bad.text)
    assert list(good.json()) == [*CONTRACT_INFER_KEYS, "request_id", "recipe_id"]
    assert good.json()["threshold"] == pytest.approx(values["threshold"]) and good.json()["recipe_id"] == recipe
    assert bad.json()["decision"] == "ng" and bad.json()["score"] > good.json()["score"]
    assert all(region[key] is not None for region in bad.json()["regions"] for key in ("x", "y", "w", "h", "area_mm2"))

    deleted = gui.delete("/datasets/file", role_id=ROLE, roi_id=ROI, label="ok", filename=first)
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True and deleted.json()["filename"] == first
    again = gui.delete("/datasets/file", role_id=ROLE, roi_id=ROI, label="ok", filename=first)
    assert again.status_code == 200 and again.json()["deleted"] is False
    after = gui.get("/datasets/list", role_id=ROLE, roi_id=ROI).json()["classes"]["ok"]
    assert after["count"] == 9 and first not in after["files"] and after["files"] == ok["files"][1:]
    missing = gui.get("/datasets/file", role_id=ROLE, roi_id=ROI, label="ok", filename=first)
    assert missing.status_code == 404 and missing.json()["error"].startswith("file not found")
    assert gui.get("/datasets/meta", role_id=ROLE, roi_id=ROI, label="ok", filename=first).status_code == 404

    new = gui.upload("ok", ROLE, ROI, [("ok_again.png", OK[0])], [meta("ok", 0)]).json()["saved"][0]
    assert new not in ok["files"] and new > max(ok["files"] + body["classes"]["ng"]["files"])  # never reused
    namespace = models_dir if recipe == "default" else models_dir / "@recipes" / recipe
    assert json.loads((namespace / ROLE / ROI / "id.json").read_text()).get("recipe_id", "default") == recipe
    assert (models_dir / "@datasets" / recipe / ROLE / ROI / "ok" / new).read_bytes() == OK[0]


@pytest.fixture
def trained(client):
    """The default namespace's model fitted from the store (3 fits in the workflow above; one here)."""
    gui = NewerGui(client)
    upload_samples(gui)
    assert fit_from_store(gui).status_code == 200
    return client


@both_registries
def test_same_role_and_roi_in_two_recipes_and_the_default_are_three_models(trained):
    client = trained
    r1, r2 = NewerGui(client, "R1"), NewerGui(client, "r2")
    upload_samples(r1)
    assert r2.get("/datasets/list", role_id=ROLE, roi_id=ROI).json()["classes"]["ok"]["count"] == 0
    assert fit_from_store(r2).status_code == 400  # r2 has no samples: no fall-through to default's or R1's
    assert fit_from_store(r1).status_code == 200
    assert r2.get("/state", role_id=ROLE, roi_id=ROI).json()["memory_fitted"] is False
    r2_infer = gui_infer(r2, OK[0])
    assert r2_infer.status_code == 400 and "Memoria no encontrada" in r2_infer.json()["error"]
    assert "in recipe 'r2'" in r2_infer.json()["error"]
    # r2 fitted with its own images (old-style fit in a recipe), then calibrated with /calibrate_ng via recipe_id
    assert fit(client, ROLE, ROI, [synthetic_roi(SIZE, SIZE, 70)], recipe_id="r2").status_code == 200
    calibrated = client.post("/calibrate_ng", json={"role_id": ROLE, "roi_id": ROI, "ok_scores": [0.01],
                                                     "recipe_id": "r2"})
    assert calibrated.status_code == 200
    default, one, two = (client.get("/state", params={"role_id": ROLE, "roi_id": ROI}).json(),
                         r1.get("/state", role_id=ROLE, roi_id=ROI).json(), r2.get("/state", role_id=ROLE, roi_id=ROI).json())
    assert (default["calib_present"], one["calib_present"], two["calib_present"]) == (False, False, True)
    assert (default["version"], one["version"], two["version"]) == (1, 1, 1)
    probe = png_bytes(synthetic_roi(SIZE, SIZE, 98))
    scores = {name: gui_infer(gui, probe).json()["score"] for name, gui in
              (("default", NewerGui(client)), ("r1", r1), ("r2", r2))}
    assert scores["default"] == pytest.approx(scores["r1"])  # same samples, same seed: the same memory
    assert scores["r2"] != pytest.approx(scores["r1"])
    assert gui_infer(r2, probe).json()["threshold"] == 0.01
    # deleting r1's samples leaves the default namespace's alone
    name = r1.get("/datasets/list", role_id=ROLE, roi_id=ROI).json()["classes"]["ok"]["files"][0]
    assert r1.delete("/datasets/file", role_id=ROLE, roi_id=ROI, label="ok", filename=name).json()["deleted"]
    assert NewerGui(client).get("/datasets/list", role_id=ROLE, roi_id=ROI).json()["classes"]["ok"]["count"] == 10
    rows = {(state.recipe_id, state.role_id, state.roi_id) for state in client.app.state.service.registry.states()}
    assert rows == {("default", ROLE, ROI), ("r1", ROLE, ROI), ("r2", ROLE, ROI)}
    # an append grows r2's memory only
    assert fit(client, ROLE, ROI, [synthetic_roi(SIZE, SIZE, 71)], recipe_id="r2", append="true").status_code == 200
    versions = [r.get("/state", role_id=ROLE, roi_id=ROI).json()["version"] for r in (NewerGui(client), r1, r2)]
    assert versions == [1, 1, 2]
    # recipe_id in the query beats the header, and "default" is the default namespace
    assert r1.get("/state", role_id=ROLE, roi_id=ROI, recipe_id="R2").json()["recipe_id"] == "r2"
    assert r1.get("/state", role_id=ROLE, roi_id=ROI, recipe_id="default").json()["calib_present"] is False


def _old_gui_session(client) -> list[bytes]:
    """The old GUI's requests (no new header or field; model_key is CONTRACT.md's): every answer's bytes."""
    images = [synthetic_roi(SIZE, SIZE, seed) for seed in (0, 1, 2)]
    answers = [fit(client, ROLE, ROI, images, model_key=ROI).content]
    answers.append(client.get("/state", params={"role_id": ROLE, "roi_id": ROI}).content)
    first = infer(client, ROLE, ROI, synthetic_roi(SIZE, SIZE, 10), shape=SHAPE)
    answers.append(first.content)
    answers.append(client.post("/calibrate_ng", json={"role_id": ROLE, "roi_id": ROI, "ok_scores": [first.json()["score"]],
                                                      "ng_scores": None}).content)
    answers.append(infer(client, ROLE, ROI, synthetic_roi(SIZE, SIZE, 11, defect=(32, 32, 8))).content)
    answers.append(client.get("/state", params={"role_id": ROLE, "roi_id": ROI}).content)
    return answers


def test_an_old_gui_gets_the_same_bytes_whatever_the_newer_gui_did(make_client, tmp_path):
    alone = _old_gui_session(make_client(tmp_path / "alone"))
    shared = make_client(tmp_path / "shared")
    for layout in ("line2", None):  # the same (role, roi) trained in a recipe, and samples in the default namespace
        gui = NewerGui(shared, layout)
        upload_samples(gui)
    assert fit_from_store(NewerGui(shared, "line2")).status_code == 200
    assert NewerGui(shared, "line2").post_json("/calibrate_dataset", {"role_id": ROLE, "roi_id": ROI}).status_code == 200
    after = _old_gui_session(shared)
    assert after == alone
    assert list(json.loads(after[0])) == CONTRACT_FIT_KEYS and list(json.loads(after[2])) == CONTRACT_INFER_KEYS
    assert list(json.loads(after[1])) == CONTRACT_STATE_KEYS
    assert "request_id" not in shared.get("/health").json()
    # and the newer GUI's recipe still has its own model and calibration
    assert NewerGui(shared, "line2").get("/state", role_id=ROLE, roi_id=ROI).json()["calib_source"] == "dataset"


def _tree(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.name.startswith(("registry.sqlite3", "."))
    }


def _registry(client) -> tuple[Any, ...]:
    service = client.app.state.service
    return tuple(service.registry.states()), service.registry.recipes()


RESERVED = "Invalid recipe_id 'last': value is reserved. Use an explicit recipe name (e.g. 'default' or a real recipe id)."
INVALID = "Invalid recipe_id 'My Layout'. Allowed: [a-z0-9][a-z0-9_-]{0,63}."


def _bad_inputs() -> list[tuple[str, Any, int, str]]:
    """(case, request on a client whose recipe 'locked' is locked at 0.2 and holds 9 OK samples, status, text)."""
    png = OK[0]
    return [
        ("reserved recipe", lambda c: NewerGui(c, "LAST").upload("ok", ROLE, ROI, [("a.png", png)]), 400,
         RESERVED.replace("'last'", "'LAST'")),
        ("invalid recipe on fit", lambda c: NewerGui(c, "My Layout").form("/fit_ok", [("role_id", ROLE), ("roi_id", ROI), (
            "mm_per_px", "0.2")], [("images", "a.png", png)]), 400, INVALID),
        ("invalid recipe on state", lambda c: NewerGui(c, "My Layout").get("/state", role_id=ROLE, roi_id=ROI), 400,
         INVALID),
        ("mm lock on upload", lambda c: NewerGui(c, "locked").upload("ok", ROLE, ROI, [("a.png", png)], [meta("ok", 0, 0.25)]),
         409, "mm_per_px mismatch for recipe 'locked': expected 0.2, got 0.25"),
        ("mm lock on fit", lambda c: NewerGui(c, "locked").form("/fit_ok", [("role_id", ROLE), ("roi_id", ROI), (
            "mm_per_px", "0.2000003")], [("images", "a.png", png)]), 409, "expected 0.2, got 0.2000003"),
        ("mm lock on infer", lambda c: NewerGui(c, "locked").form("/infer", [("role_id", ROLE), ("roi_id", ROI), (
            "mm_per_px", "0.3")], [("image", "a.png", png)]), 409, "mm_per_px mismatch for recipe 'locked'"),
        ("metas count", lambda c: NewerGui(c).upload("ok", ROLE, ROI, [("a.png", png), ("b.png", png)], [meta("ok", 0)]),
         400, "1 metas for 2 images"),
        ("meta not an object", lambda c: NewerGui(c).form("/datasets/ok/upload", [("role_id", ROLE), ("roi_id", ROI)],
                                                          [("images", "a.png", png)], [[1, 2]]), 400, "'a.png'"),
        ("meta mm_per_px", lambda c: NewerGui(c).upload("ng", ROLE, ROI, [("a.png", png)], [{"mm_per_px": None}]),
         400, "mm_per_px=None"),
        ("not an image", lambda c: NewerGui(c).upload("ok", ROLE, ROI, [("a.png", png), ("notes.png", b"hello")]), 400,
         "'notes.png' is not a readable image"),
        ("unknown label", lambda c: NewerGui(c).get("/datasets/file", role_id=ROLE, roi_id=ROI, label="maybe",
                                                    filename="x.png"), 400, "label must be 'ok' or 'ng'"),
        ("traversal", lambda c: NewerGui(c, "locked").get("/datasets/file", role_id=ROLE, roi_id=ROI, label="ok",
                                                          filename="../../x.png"), 404, "file not found"),
        ("traversal meta", lambda c: NewerGui(c, "locked").get("/datasets/meta", role_id=ROLE, roi_id=ROI, label="ok",
                                                               filename="..\\..\\registry.sqlite3"), 404, "meta not found"),
        ("9 OK samples", lambda c: fit_from_store(NewerGui(c, "locked")), 400, "Insufficient OK samples: need at least 10, found 9"),
        ("no samples", lambda c: fit_from_store(NewerGui(c)), 400,
         "No OK dataset samples found for (Inspection, inspection-1) in recipe 'default'; upload OK samples first."),
        ("calibrate without memory", lambda c: NewerGui(c, "locked").post_json("/calibrate_dataset", {
            "role_id": ROLE, "roi_id": ROI}), 400, "Memoria no encontrada. Ejecuta /fit_ok antes de /calibrate_dataset."),
        ("calibrate without role", lambda c: NewerGui(c).post_json("/calibrate_dataset", {"roi_id": ROI}), 400,
         "role_id is missing"),
    ]


def test_bad_input_is_a_4xx_with_a_sentence_and_writes_nothing(client):
    locked = NewerGui(client, "locked")
    assert locked.upload("ok", ROLE, ROI, [(f"{i}.png", OK[i]) for i in range(9)], [meta("ok", i) for i in range(9)]
                         ).status_code == 200
    (client.app.state.settings.models_dir / "x.png").write_bytes(b"outside the store")
    for case, send, status, text in _bad_inputs():
        before = _tree(client.app.state.settings.models_dir), _registry(client)
        response = send(client)
        assert response.status_code == status, (case, response.text)
        body = response.json()
        assert text in body["error"] and body["detail"] == body["error"], (case, body)
        if "recipe" in case:
            assert body["error"] in (INVALID, RESERVED.replace("'last'", "'LAST'")), case  # the contract's exact words
        assert (_tree(client.app.state.settings.models_dir), _registry(client)) == before, case
        if response.request.url.path == "/fit_ok":
            assert not any(phrase in body["error"].lower() for phrase in FORBIDDEN_IN_FIT_ERRORS), case
    deleted = locked.delete("/datasets/file", role_id=ROLE, roi_id=ROI, label="ok", filename="../../../x.png")
    assert deleted.json()["deleted"] is False and (client.app.state.settings.models_dir / "x.png").is_file()


def test_health_never_fails_because_of_the_recipe_header(client):
    response = client.get("/health", headers={"X-Recipe-Id": "My Layout"})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["recipe_error"] == INVALID and body["recipe_id"] == "My Layout"


def test_heatmap_on_request_and_required_calibration(make_client, tmp_path):
    client = make_client(tmp_path / "strict", BDI_REQUIRE_CALIBRATION="1")
    gui = NewerGui(client)
    assert fit(client, ROLE, ROI, [synthetic_roi(SIZE, SIZE, 0)]).status_code == 200
    missing = gui_infer(gui, OK[1])
    assert missing.status_code == 400
    assert missing.json()["error"] == missing.json()["detail"] == "calibration_missing: run a calibration for (Inspection, inspection-1) first"
    assert client.post("/calibrate_ng", json={"role_id": ROLE, "roi_id": ROI, "ok_scores": [0.5]}).status_code == 200
    without = gui.form("/infer", [("role_id", ROLE), ("roi_id", ROI), ("mm_per_px", "0.2"), ("include_heatmap", "false")],
                       [("image", "roi.png", OK[1])])
    assert without.status_code == 200 and without.json()["heatmap_png_base64"] is None
    with_map = gui.form("/infer", [("role_id", ROLE), ("roi_id", ROI), ("mm_per_px", "0.2"), ("include_heatmap", "true")],
                        [("image", "roi.png", OK[1])])
    assert decode_png(base64.b64decode(with_map.json()["heatmap_png_base64"])).shape == (SIZE, SIZE)
    assert with_map.json()["score"] == without.json()["score"]


def test_a_holdout_keeps_the_calibration_off_the_fitted_samples(make_client, tmp_path):
    client = make_client(tmp_path / "holdout", BDI_DATASET_HOLDOUT="0.3")
    gui = NewerGui(client)
    upload_samples(gui)
    assert fit_from_store(gui).json()["n_embeddings"] == 7 * 16 * 16  # 3 of the 10 OK samples held out
    values = gui.post_json("/calibrate_dataset", {"role_id": ROLE, "roi_id": ROI}).json()
    assert (values["n_ok"], values["n_ng"]) == (3, 2) and "warning" not in values
    gui.upload("ok", ROLE, ROI, [("late.png", png_bytes(synthetic_roi(SIZE, SIZE, 77)))], [meta("ok", 11)])
    assert gui.post_json("/calibrate_dataset", {"role_id": ROLE, "roi_id": ROI}).json()["n_ok"] == 4  # and the new one
