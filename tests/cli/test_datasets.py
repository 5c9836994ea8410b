"""``bdi datasets list|export|import`` and ``bdi fit/calibrate/eval --recipe`` on the samples the newer GUI
stored in the service: the same store the HTTP routes use, the same holdout rule as /calibrate_dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.core import Upload
from tests.cli.support import as_json, bdi, make_service
from tests.support import png_bytes, synthetic_roi

ROLE, ROI = "Inspection", "inspection-1"
SHAPE = json.dumps({"kind": "circle", "cx": 30, "cy": 25, "r": 24})


@pytest.fixture
def stored(tmp_path: Path, extractor_112) -> Path:
    """A models dir whose recipe 'line2' holds 6 OK and 2 NG samples (uploaded through the service, as HTTP does)."""
    root = tmp_path / "models"
    service = make_service(root, extractor_112)
    for label, seeds, defect in (("ok", range(6), None), ("ng", (40, 41), (30, 25, 6))):
        images = [Upload(f"{label}_{seed}.png", png_bytes(synthetic_roi(60, 50, seed, defect))) for seed in seeds]
        metas = [json.dumps({"mm_per_px": 0.2, "shape_json": SHAPE, "filename": image.filename}) for image in images]
        service.dataset_upload(label, ROLE, ROI, images, metas, recipe_id="Line2")
    service.close()
    return root


def test_list_export_and_import_round_trip(stored, tmp_path):
    rows = as_json(bdi(stored, "datasets", "list", "--json"))
    assert [(r["recipe_id"], r["role_id"], r["roi_id"], r["ok"], r["ng"], r["mm_per_px_lock"]) for r in rows] == [
        ("line2", ROLE, ROI, 6, 2, 0.2)]
    assert as_json(bdi(stored, "datasets", "list", "--recipe", "default", "--json")) == []
    out = tmp_path / "export"
    exported = bdi(stored, "datasets", "export", ROLE, ROI, "--recipe", "line2", "--output", str(out))
    assert exported.exit_code == 0 and "Exported 8 sample(s)" in exported.stdout
    assert len(list((out / "ok").glob("*.png"))) == 6 and len(list((out / "ng").glob("*.json"))) == 2
    assert "Exported 0 sample(s)" in bdi(stored, "datasets", "export", ROLE, ROI, "--recipe", "line2",
                                         "--output", str(out)).stdout
    imported = bdi(stored, "datasets", "import", ROLE, ROI, "--recipe", "copy", "--from", str(out))
    assert imported.exit_code == 0 and "Imported 8 sample(s)" in imported.stdout
    again = bdi(stored, "datasets", "import", ROLE, ROI, "--recipe", "copy", "--from", str(out))
    assert "Imported 0 sample(s)" in again.stdout and "8 were stored already" in again.stdout
    (out / "ok" / "extra.png").write_bytes(png_bytes(synthetic_roi(60, 50, 99)))
    (out / "ok" / "extra.json").write_text(json.dumps({"mm_per_px": 0.3}))
    locked = bdi(stored, "datasets", "import", ROLE, ROI, "--recipe", "copy", "--from", str(out))
    assert locked.exit_code == 1 and "mm_per_px mismatch for recipe 'copy': expected 0.2, got 0.3" in locked.stderr
    bad = bdi(stored, "datasets", "list", "--recipe", "My Layout")
    assert bad.exit_code == 2 and "Invalid recipe_id 'My Layout'" in bad.stderr


def test_fit_calibrate_eval_from_the_stored_samples(stored, tmp_path, shared_backbone, extractor_112):
    fitted = bdi(stored, "fit", ROLE, ROI, "--recipe", "line2", "--holdout", "0.3")
    assert fitted.exit_code == 0, fitted.output
    assert "line2: Inspection / inspection-1" in fitted.stdout
    calibrated = bdi(stored, "calibrate", ROLE, ROI, "--recipe", "line2")
    assert calibrated.exit_code == 0 and "Scoring the 2 OK sample(s) not used to fit this memory" in calibrated.stderr
    report = tmp_path / "report"
    assert bdi(stored, "eval", ROLE, ROI, "--recipe", "line2", "--report", str(report)).exit_code == 0
    assert json.loads((report / "summary.json").read_text())["n_ok"] == 2  # the unseen OK samples
    rows = as_json(bdi(stored, "models", "list", "--json"))
    assert [(r["recipe_id"], r["role_id"], r["calib_source"]) for r in rows] == [("line2", ROLE, "cli")]
    assert "line2" in bdi(stored, "models", "list").stdout
    assert as_json(bdi(stored, "models", "show", ROLE, ROI, "--recipe", "LINE2", "--json"))["recipe_id"] == "line2"
    missing = bdi(stored, "models", "show", ROLE, ROI)
    assert missing.exit_code == 1 and "no model role_id='Inspection'" in missing.stderr  # not in the default namespace
    nothing = bdi(stored, "fit", ROLE, ROI)
    assert nothing.exit_code == 2 and "no stored samples of Inspection / inspection-1" in nothing.stderr
    # /calibrate_dataset reads the same holdout the CLI's fit recorded: the OK side from the 2 held-out samples
    service = make_service(stored, extractor_112)
    try:
        answer = service.calibrate_dataset(ROLE, ROI, recipe_id="line2")
        assert (answer["n_ok"], answer["n_ng"], answer["n_skipped"]) == (2, 2, 0) and "warning" not in answer
    finally:
        service.close()
