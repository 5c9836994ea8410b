"""What a new user trips on (issue 22), through ``bdi``: the records table names the recipe."""

from __future__ import annotations

import datetime as dt

from service.settings import Settings
from service.storage import RecordStore, open_storage
from tests.cli.support import bdi, cli_env
from tests.support import make_record

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _records(models_dir) -> RecordStore:
    _, registry = open_storage(Settings.load(cli_env(models_dir)))
    registry.upgrade()
    return RecordStore(registry.engine, models_dir)


def test_the_records_table_shows_the_recipe_and_filters_by_it(models_dir):
    rows = [make_record(NOW, recipe_id="line2-disc", part_id="P-LINE2"),
            make_record(NOW - dt.timedelta(minutes=1), part_id="P-DEFAULT")]
    _records(models_dir).insert(rows)
    table = bdi(models_dir, "inspections", "list")
    assert table.exit_code == 0, table.stderr
    header = next(line for line in table.stdout.splitlines() if "role" in line)
    assert "recipe" in header
    line2 = next(line for line in table.stdout.splitlines() if "P-LINE2" in line)
    assert "line2-disc" in line2
    only = bdi(models_dir, "inspections", "list", "--recipe", "Line2-Disc")
    assert "P-LINE2" in only.stdout and "P-DEFAULT" not in only.stdout


def test_reindex_rebuilds_the_training_size_from_the_versions_files(models_dir):
    from tests.cli.support import PLAIN
    from tests.support import forget_registry

    forget_registry(models_dir)
    assert bdi(models_dir, "models", "reindex").exit_code == 0
    store, registry = open_storage(Settings.load(cli_env(models_dir)))
    try:
        active = registry.state(*PLAIN).active
        assert (active.train_width, active.train_height) == (60, 50)  # uploads(): 60x50 images
    finally:
        registry.dispose()


def test_an_imported_version_keeps_its_training_size(models_dir, tmp_path):
    from tests.cli.support import PLAIN

    bundle = tmp_path / "plain.bdimodel"
    assert bdi(models_dir, "models", "export", *PLAIN, "-o", str(bundle)).exit_code == 0
    assert bdi(models_dir, "models", "import", str(bundle), "--as", "Copy/roi-2").exit_code == 0
    store, registry = open_storage(Settings.load(cli_env(models_dir)))
    try:
        active = registry.state("Copy", "roi-2").active
        assert (active.source, active.train_width, active.train_height) == ("imported", 60, 50)
    finally:
        registry.dispose()


def test_an_import_with_the_hubs_weights_not_cached_asks_no_network_and_says_what_it_could_not_check(
    models_dir, tmp_path, monkeypatch
):
    import service.pipeline.features as features
    from tests.cli.support import PLAIN

    def no_network(*_args, **_kwargs):
        raise AssertionError("the import asked the hub")

    monkeypatch.setattr(features.huggingface_hub, "try_to_load_from_cache", lambda *_args, **_kwargs: None)
    monkeypatch.setattr(features, "_download", no_network)
    monkeypatch.setattr(features.FeatureExtractor, "_build", no_network)  # nor the backbone
    bundle = tmp_path / "plain.bdimodel"
    assert bdi(models_dir, "models", "export", *PLAIN, "-o", str(bundle)).exit_code == 0
    imported = bdi(models_dir, "models", "import", str(bundle), "--as", "Copy/roi-2", BDI_WEIGHTS="hub")
    assert imported.exit_code == 0, imported.output
    assert "not in the local cache" in imported.stderr
    assert "could not check that the bundle's memory was built with them" in imported.stdout


def test_recipes_set_mm_per_px_resets_the_lock_refuses_over_fitted_models_unless_forced_and_is_audited(
    models_dir, tmp_path
):
    from tests.cli.support import PLAIN, as_json

    bundle = tmp_path / "plain.bdimodel"
    assert bdi(models_dir, "models", "export", *PLAIN, "-o", str(bundle)).exit_code == 0
    assert bdi(models_dir, "models", "import", str(bundle), "--recipe", "line3").exit_code == 0  # locks line3 at 0.2
    mismatch = bdi(models_dir, "models", "import", str(bundle), "--recipe", "line3", "--as", "Other/roi")
    assert mismatch.exit_code == 0  # same scale: no conflict

    refused = bdi(models_dir, "recipes", "set-mm-per-px", "Line3", "0.3")
    assert refused.exit_code == 1 and "were fitted at mm_per_px=0.2" in refused.stderr and "--force" in refused.stderr
    forced = bdi(models_dir, "recipes", "set-mm-per-px", "Line3", "0.3", "--force")
    assert forced.exit_code == 0, forced.output
    assert "now locked at mm_per_px=0.3 (was locked at 0.2)" in forced.stdout
    again = bdi(models_dir, "models", "import", str(bundle), "--recipe", "line3", "--as", "Third/roi")
    assert again.exit_code == 1
    assert "mm_per_px mismatch for recipe 'line3': expected 0.3, got 0.2. " in again.stderr
    assert "bdi recipes set-mm-per-px line3 0.2" in again.stderr

    fresh = bdi(models_dir, "recipes", "set-mm-per-px", "new-line", "0.25")
    assert fresh.exit_code == 0 and "(had no lock)" in fresh.stdout
    assert bdi(models_dir, "recipes", "set-mm-per-px", "default", "0.25").exit_code == 1
    assert bdi(models_dir, "recipes", "set-mm-per-px", "new-line", "0").exit_code == 1
    trail = as_json(bdi(models_dir, "audit", "list", "--action", "recipe_mm_per_px", "--json"))
    changes = {(row["recipe_id"], row["details"].get("mm_per_px_before"), row["details"].get("mm_per_px_after"))
               for row in trail}
    assert {("line3", 0.2, 0.3), ("new-line", None, 0.25)} <= changes


def test_an_append_keeps_the_fits_holdout_out_unless_all(tmp_path, shared_backbone):
    import json
    import shutil

    from tests.cli.test_append import ok_folder
    from tests.support import synthetic_roi

    root = tmp_path / "models"
    first = ok_folder(tmp_path / "first", [synthetic_roi(60, 50, seed) for seed in range(3)])
    assert bdi(root, "fit", "R", "r", "--dataset", str(first), "--holdout", "0.34").exit_code == 0
    [manifest] = [json.loads(p.read_text()) for p in root.rglob("version.json")]
    [held_out] = manifest["dataset"]["holdout_files"]
    more = ok_folder(tmp_path / "more", [synthetic_roi(60, 50, seed) for seed in (30,)])
    shutil.copy(first / held_out, more / "ok" / "was_held_out.png")

    appended = bdi(root, "fit", "R", "r", "--dataset", str(more), "--append")
    assert appended.exit_code == 0, appended.output
    assert "Keeping the 1 sample(s) the fit held out for calibration out of the memory" in appended.stderr
    calibrated = bdi(root, "calibrate", "R", "r", "--dataset", str(first))
    assert calibrated.exit_code == 0 and "Scoring the 1 OK sample(s) not used" in calibrated.stderr

    only_held = ok_folder(tmp_path / "only", [])
    shutil.copy(first / held_out, only_held / "ok" / "h.png")
    nothing = bdi(root, "fit", "R", "r", "--dataset", str(only_held), "--append")
    assert nothing.exit_code == 1 and "--all" in nothing.stderr
    assert bdi(root, "fit", "R", "r", "--dataset", str(first), "--all").exit_code == 2  # --all needs --append


def test_drifts_words_say_what_its_rule_counts_and_its_titles_name_the_recipe(models_dir, extractor_112, tmp_path,
                                                                               monkeypatch):
    import json

    import numpy as np

    import service.quality.plots as plots
    from tests.cli.support import PLAIN, make_service

    service = make_service(models_dir, extractor_112)
    threshold = service.calibrate(*PLAIN, np.random.default_rng(0).normal(0.40, 0.02, 200).tolist())["threshold"]
    version = service.model_state(*PLAIN).active_version
    service.close()
    rows = [make_record(NOW - dt.timedelta(minutes=k), role_id=PLAIN[0], roi_id=PLAIN[1], version=version,
                        score=0.3 if k < 5 else 0.9, threshold=threshold, decision="ok" if k < 5 else "ng")
            for k in range(8)]
    _records(models_dir).insert(rows)
    titles = []
    real = plots.scores_over_time
    monkeypatch.setattr(plots, "scores_over_time", lambda *args, **kwargs: titles.append(kwargs["title"]) or real(
        *args, **kwargs))
    result = bdi(models_dir, "models", "drift", *PLAIN, "--json", "--since", "1d", "--plot", str(tmp_path / "d.png"))
    report = json.loads(result.stdout)
    assert report["verdict"] == "too few inspections"
    assert "8 inspection(s)" in report["reasons"][0] and "(every decision: 5 OK, 3 NG, 0 uncalibrated)" in \
        report["reasons"][0]
    assert titles == [f"Recipe 'default': {PLAIN[0]} / {PLAIN[1]}, version {version}: too few inspections"]
    table = bdi(models_dir, "models", "drift", *PLAIN, "--since", "1d")
    assert f"Drift of {PLAIN[0]} / {PLAIN[1]} in recipe 'default'" in table.stdout
    assert "inspections, all (OK-decided)" in table.stdout


def test_models_list_shows_calib_stale_and_both_times_of_an_import_and_the_fit_prints_its_summary_line(
    models_dir, tmp_path
):
    from tests.cli.support import PLAIN, as_json

    table = bdi(models_dir, "models", "list")
    header = next(line for line in table.stdout.splitlines() if "recipe" in line and "role" in line)
    assert "calib stale" in header and "imported" in header
    source = next(row for row in as_json(bdi(models_dir, "models", "list", "--json"))
                  if (row["role_id"], row["roi_id"]) == PLAIN)
    assert source["imported_at"] is None
    bundle = tmp_path / "plain.bdimodel"
    assert bdi(models_dir, "models", "export", *PLAIN, "-o", str(bundle)).exit_code == 0
    assert bdi(models_dir, "models", "import", str(bundle), "--as", "Copy/roi-2").exit_code == 0
    copy = next(row for row in as_json(bdi(models_dir, "models", "list", "--json")) if row["role_id"] == "Copy")
    assert copy["fitted_at"] == source["fitted_at"]  # when its source fitted it ...
    assert copy["imported_at"] and copy["imported_at"] > copy["fitted_at"]  # ... and when it came here
    shown = as_json(bdi(models_dir, "models", "show", "Copy", "roi-2", "--json"))
    assert (shown["fitted_at"], shown["imported_at"]) == (copy["fitted_at"], copy["imported_at"])


def test_the_fit_prints_the_readmes_summary_line_and_eval_without_masks_promises_no_true_defect(
    tmp_path, shared_backbone
):
    import re

    from tests.cli.test_append import ok_folder
    from tests.support import png_bytes, synthetic_roi

    root, data = tmp_path / "models", ok_folder(tmp_path / "data", [synthetic_roi(60, 50, s) for s in range(4)])
    (data / "ng").mkdir()
    (data / "ng" / "ng0.png").write_bytes(png_bytes(synthetic_roi(60, 50, 10, defect=(30, 25, 6))))
    fitted = bdi(root, "fit", "R", "r", "--dataset", str(data), "--holdout", "0.5")
    assert fitted.exit_code == 0, fitted.output
    assert re.search(r"^Fitted R / r: version 1 \(2 images, 2 held out, \d+ patches, coreset \d+\)$", fitted.stdout,
                     re.MULTILINE), fitted.stdout
    assert bdi(root, "calibrate", "R", "r", "--dataset", str(data)).exit_code == 0
    report = tmp_path / "report"
    assert bdi(root, "eval", "R", "r", "--dataset", str(data), "--report", str(report)).exit_code == 0
    text = (report / "README.md").read_text()
    assert "true defect (green)" not in text and "no NG sample has a ground-truth mask" in text
