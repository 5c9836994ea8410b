"""``bdi``: every admin command through click's runner, on models fitted through the real service."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import create_engine, text

from service.cli import main
from service.core import InspectionService
from service.quality.datasets import DatasetError, MmPerPx, load_dataset
from service.settings import Settings
from service.storage.artifacts import ModelStore
from tests.cli.support import ODD, PLAIN, as_json, bdi, cli_env, free_port, make_service, uploads
from tests.support import both_registries, forget_registry, png_bytes, synthetic_roi


# ---- list / show / history ---------------------------------------------------------------------
@both_registries
def test_list_json_has_every_model_with_its_numbers(models_dir):
    rows = {(row["role_id"], row["roi_id"]): row for row in as_json(bdi(models_dir, "models", "list", "--json"))}
    assert set(rows) == {PLAIN, ODD}
    plain, odd = rows[PLAIN], rows[ODD]
    assert plain["version"] == 2 and plain["token_shape"] == [8, 8] and plain["coreset_size"] == 3
    assert plain["threshold"] == pytest.approx(0.3495) and plain["calibrated_at"] and plain["fitted_at"]
    assert odd["threshold"] is None and odd["calibrated_at"] is None and odd["version"] == 1


def test_list_table_and_models_dir_option(models_dir, tmp_path):
    result = bdi(tmp_path / "elsewhere", "models", "list", "--models-dir", str(models_dir))
    assert result.exit_code == 0, result.output
    assert "Zona A/1" in result.stdout and "inspection-1" in result.stdout and "8×8" in result.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "No models" in bdi(empty, "models", "list").stdout


@both_registries
def test_list_notes_folders_the_registry_does_not_know(models_dir):
    forget_registry(models_dir)
    result = bdi(models_dir, "models", "list", "--json")
    assert as_json(result) == []
    assert "2 model folder(s) on disk are not in the registry" in result.stderr


@both_registries
def test_show_and_history(models_dir):
    shown = as_json(bdi(models_dir, "models", "show", *PLAIN, "--json"))
    assert shown["kept_versions"] == [2, 1] and shown["active"]["source"] == "fit"
    assert shown["calibration"]["values"]["p5_ng"] == pytest.approx(0.5)
    table = bdi(models_dir, "models", "show", *ODD)
    assert table.exit_code == 0 and "memory.coreset_size" in table.stdout
    # The weights' fingerprint hashes tensors, not the checkpoint file: it is never shown as a file's sha256.
    assert "weights_sha256" not in json.dumps(shown) and len(shown["active"]["extractor"]["weights_tensor_sha256"]) == 64
    assert "memory.extractor.weights_tensor_sha256" in table.stdout and "weights_sha256" not in table.stdout
    assert "not the checkpoint file's sha256sum" in table.stdout
    history = as_json(bdi(models_dir, "models", "history", *PLAIN, "--json"))
    assert all("weights_tensor_sha256" in v["extractor"] for v in history["versions"])
    history = as_json(bdi(models_dir, "models", "history", *PLAIN, "--json"))
    assert [v["version"] for v in history["versions"]] == [2, 1]
    assert history["active_version"] == 2
    assert [c["values"]["threshold"] for c in history["calibrations"]] == [pytest.approx(0.3495)]
    assert "Calibrations of Master1 / inspection-1" in bdi(models_dir, "models", "history", *PLAIN).stdout


def test_tables_keep_each_row_on_one_line_when_not_on_a_terminal(models_dir):
    """Piped or logged output: a narrow guessed width must not fold rows into unreadable columns."""
    history = as_json(bdi(models_dir, "models", "history", *PLAIN, "--json"))
    narrow = bdi(models_dir, "models", "history", *PLAIN, COLUMNS="40")
    assert narrow.exit_code == 0, narrow.output
    lines = narrow.stdout.splitlines()
    for version in history["versions"]:
        assert any(version["created_at"] in line and "8×8" in line and version["source"] in line for line in lines)
    [calibration] = history["calibrations"]
    assert any(calibration["created_at"] in line and "0.3495" in line for line in lines)


def test_readme_cli_table_documents_every_option():
    """README's Admin CLI table names every option of every command (bar --models-dir, said once for all)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    rows = [line for line in readme.split("## Admin CLI")[1].split("\n## ")[0].splitlines() if line.startswith("| `bdi")]

    def commands(group, path=()):
        for name, command in getattr(group, "commands", {}).items():
            yield from commands(command, (*path, name))
        if not getattr(group, "commands", None):
            yield " ".join(path), group

    for path, command in commands(main):
        [row] = [row for row in rows if f"`bdi {path}" in row] or [f"no README row for bdi {path}"]
        for param in command.params:
            for option in param.opts:
                if option.startswith("--") and option != "--models-dir":
                    assert option in row, f"README's row of `bdi {path}` misses {option}"


@pytest.mark.parametrize("command", [("models", "show"), ("models", "history"), ("models", "delete")])
def test_unknown_model_is_exit_1_with_one_sentence(models_dir, command):
    result = bdi(models_dir, *command, "Nobody", "nothing", *(["--yes"] if command[1] == "delete" else []))
    assert result.exit_code == 1
    assert "no model role_id='Nobody'" in result.stderr and "Traceback" not in result.output


# ---- exit codes and errors ---------------------------------------------------------------------
def test_usage_errors_are_exit_2(models_dir, tmp_path):
    missing = bdi(tmp_path / "nope", "models", "list")
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    assert bdi(models_dir, "models", "rollback", *PLAIN, "two").exit_code == 2
    assert bdi(models_dir, "models", "list", "--bogus").exit_code == 2
    bad_setting = bdi(models_dir, "models", "list", BDI_KEEP_VERSIONS="zero")
    assert bad_setting.exit_code == 2 and "BDI_KEEP_VERSIONS" in bad_setting.stderr


def test_unexpected_errors_are_one_sentence_unless_debug(models_dir, monkeypatch):
    def broken(self):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ModelStore, "scan", broken)
    quiet = bdi(models_dir, "models", "list")
    assert quiet.exit_code == 1
    assert quiet.stderr.strip().splitlines() == [
        "Error: Unexpected RuntimeError: disk on fire; run `bdi --debug ...` for the traceback."
    ]
    loud = bdi(models_dir, "--debug", "models", "list")
    assert loud.exit_code == 1 and isinstance(loud.exception, RuntimeError)


# ---- rollback / delete -------------------------------------------------------------------------
@both_registries
def test_rollback_activates_a_kept_version(models_dir):
    store = ModelStore(models_dir)
    folder = store.model_dir(*PLAIN)
    result = bdi(models_dir, "models", "rollback", *PLAIN, "1")
    assert result.exit_code == 0, result.output
    assert "was 2" in result.stdout and "made for version 2" in result.stdout
    assert store.active_version(folder) == 1 and store.canonical_is_current(folder, 1)
    assert as_json(bdi(models_dir, "models", "show", *PLAIN, "--json"))["version"] == 1
    unknown = bdi(models_dir, "models", "rollback", *PLAIN, "7")
    assert unknown.exit_code == 1 and "kept versions: 1, 2." in unknown.stderr
    assert store.active_version(folder) == 1


@both_registries
def test_delete_asks_then_removes_folder_rows_and_empty_role_folder(models_dir):
    store = ModelStore(models_dir)
    declined = bdi(models_dir, "models", "delete", *ODD, input="n\n")
    assert declined.exit_code == 1 and store.model_dir(*ODD) is not None
    accepted = bdi(models_dir, "models", "delete", *ODD, input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert not (models_dir / "Inspection").exists()  # it held no other model
    assert bdi(models_dir, "models", "delete", *PLAIN, "--yes").exit_code == 0
    assert not (models_dir / "Master1").exists()
    assert as_json(bdi(models_dir, "models", "list", "--json")) == []
    assert bdi(models_dir, "models", "verify").exit_code == 0


def test_delete_keeps_the_role_folder_when_another_model_uses_it(models_dir, extractor_112):
    service = make_service(models_dir, extractor_112)
    service.fit("Master1", "other", 0.2, uploads(9))
    service.close()
    assert bdi(models_dir, "models", "delete", *PLAIN, "-y").exit_code == 0
    assert ModelStore(models_dir).model_dir("Master1", "other") is not None
    assert not (models_dir / "Master1" / "inspection-1").exists()


# ---- verify / reindex --------------------------------------------------------------------------
@both_registries
def test_verify_ok(models_dir):
    result = bdi(models_dir, "models", "verify")
    assert result.exit_code == 0 and result.stdout.startswith("OK: 2 model(s), 3 version(s)")


def test_verify_reports_tampered_missing_and_unregistered_files(models_dir, tmp_path, extractor_112):
    store = ModelStore(models_dir)
    folder = store.model_dir(*PLAIN)
    version_2 = folder / "versions" / "000002"
    with np.load(version_2 / "memory.npz") as data:
        arrays = {key: data[key] for key in data.files}
    arrays["emb"] = arrays["emb"][:2]  # a memory rewritten by hand: other rows, other hash
    (folder / "memory.npz").unlink()  # the canonical copy may be a hard link: break it first
    np.savez(version_2 / "memory.npz", **arrays)
    (folder / "versions" / "000001" / "index.faiss").unlink()
    other = make_service(tmp_path / "other", extractor_112)
    other.fit("Copied", "in", 0.2, uploads(7))
    other.close()
    (tmp_path / "other" / "Copied").rename(models_dir / "Copied")

    result = bdi(models_dir, "models", "verify", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    problems = [(p["model"], p["problem"]) for p in report["problems"]]
    text = "\n".join(f"{model}: {problem}" for model, problem in problems)
    assert "version 2: memory.npz does not match the sha256" in text
    assert "holds embeddings of shape (2, 1152), version.json says (3, 1152)" in text
    assert "version 1: index.faiss is missing" in text
    assert "registered file Master1/inspection-1/versions/000001/index.faiss is missing" in text
    assert "canonical memory.npz/index.faiss are not those of the active version 2" in text
    assert ("Copied / in", "the folder is not in the registry; run `bdi models reindex`") in problems
    table = bdi(models_dir, "models", "verify")
    assert table.exit_code == 1 and "problem(s) in" in table.stdout


def test_verify_checks_the_index_against_the_memory(models_dir):
    store = ModelStore(models_dir)
    folder = store.model_dir(*ODD)
    other_index = store.model_dir(*PLAIN) / "versions" / "000002" / "index.faiss"
    target = folder / "versions" / "000001" / "index.faiss"
    (folder / "index.faiss").unlink()
    target.unlink()
    target.write_bytes(other_index.read_bytes())
    problems = json.loads(bdi(models_dir, "models", "verify", "--json").stdout)["problems"]
    expected = "index.faiss holds 3 vectors of dim 1152, memory.npz holds 2 of dim 1152"
    assert any(expected in p["problem"] for p in problems)


@both_registries
def test_verify_compares_calib_json_with_the_registry(models_dir):
    calib = ModelStore(models_dir).model_dir(*PLAIN) / "calib.json"
    calib.write_text(json.dumps({**json.loads(calib.read_text()), "threshold": 9.0}))
    problems = json.loads(bdi(models_dir, "models", "verify", "--json").stdout)["problems"]
    assert problems == [{"model": "Master1 / inspection-1",
                         "problem": "calib.json's threshold is 9, the registry's latest calibration says 0.3495"}]


def test_verify_reports_unmigrated_legacy_files(models_dir):
    legacy = models_dir / "Old" / "roi"
    legacy.mkdir(parents=True)
    np.savez(legacy / "memory.npz", emb=np.eye(3, 4, dtype=np.float32), token_h=np.array(8), token_w=np.array(8))
    result = bdi(models_dir, "models", "verify", "--json")
    assert result.exit_code == 1
    problems = json.loads(result.stdout)["problems"]
    assert any(p["model"] == "Old/roi" and "bdi models migrate" in p["problem"] for p in problems)


def _history_snapshot(models_dir: Path) -> dict:
    return as_json(bdi(models_dir, "models", "history", *PLAIN, "--json"))


@both_registries
def test_reindex_rebuilds_a_deleted_registry(models_dir):
    before = _history_snapshot(models_dir)
    forget_registry(models_dir)
    result = bdi(models_dir, "models", "reindex")
    assert result.exit_code == 0 and "Reindexed 2 model(s) (3 version(s), 1 calibration(s))" in result.stdout
    assert _history_snapshot(models_dir) == before
    assert bdi(models_dir, "models", "verify").exit_code == 0


def test_reindex_sets_a_garbage_registry_aside_and_rebuilds(models_dir):
    before = _history_snapshot(models_dir)
    for path in models_dir.glob("registry.sqlite3-*"):
        path.unlink()
    (models_dir / "registry.sqlite3").write_bytes(b"this is not a database" * 300)
    broken = bdi(models_dir, "models", "list")
    assert broken.exit_code == 1 and "bdi models reindex" in broken.stderr and "not a database" in broken.stderr
    verify = bdi(models_dir, "models", "verify", "--json")
    assert verify.exit_code == 1 and json.loads(verify.stdout)["problems"][0]["model"] == "registry"

    result = bdi(models_dir, "models", "reindex")
    assert result.exit_code == 0, result.output
    aside = list(models_dir.glob("registry.sqlite3.damaged-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not a database")
    assert _history_snapshot(models_dir) == before


@both_registries
def test_reindex_drops_models_whose_folders_are_gone(models_dir):
    store = ModelStore(models_dir)
    shutil.rmtree(store.model_dir(*ODD).parent)
    result = bdi(models_dir, "models", "reindex")
    assert "dropped 1 model(s) whose folders are gone: Inspection / Zona A/1" in result.stdout
    assert [(r["role_id"], r["roi_id"]) for r in as_json(bdi(models_dir, "models", "list", "--json"))] == [PLAIN]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_reindex_on_a_broken_postgresql_registry_says_what_to_do(models_dir, database_url):
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE models CASCADE"))
    engine.dispose()
    result = bdi(models_dir, "models", "reindex")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "restore it from a backup, or drop and create that database again" in result.stderr
    forget_registry(models_dir)  # what the sentence says, short of dropping the database itself
    assert bdi(models_dir, "models", "reindex").exit_code == 0
    assert bdi(models_dir, "models", "verify").exit_code == 0


def test_admin_commands_on_an_unreachable_database_are_one_sentence(models_dir):
    result = bdi(models_dir, "models", "list", BDI_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "The registry database is unavailable (" in result.stderr and "BDI_DATABASE_URL" in result.stderr


# ---- fit / calibrate from dataset folders ------------------------------------------------------
def write_sample(folder: Path, stem: str, image: np.ndarray, **sidecar) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.png").write_bytes(png_bytes(image))
    if sidecar:
        (folder / f"{stem}.json").write_text(json.dumps(sidecar))


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "dataset"
    shape = {"kind": "circle", "cx": 30, "cy": 25, "r": 24}
    for seed in range(3):
        write_sample(root / "ok", f"ok{seed}", synthetic_roi(60, 50, seed), mm_per_px=0.1, shape=shape,
                     role_id="R", roi_id="r/1")
    write_sample(root / "ok", "ok3", synthetic_roi(60, 50, 3), mm_per_px=0.1, shape_json=json.dumps(shape))
    write_sample(root / "ok", "ok4_mask", np.zeros((50, 60, 3), np.uint8))  # ground truth of no sample
    write_sample(root / "ok", "stray", synthetic_roi(60, 50, 8), role_id="Other")
    write_sample(root / "ng", "ng0", synthetic_roi(60, 50, 10, defect=(30, 25, 6)), mm_per_px=0.1)
    cv2.imwrite(str(root / "ng" / "ng0_mask.png"), np.zeros((50, 60), np.uint8))
    write_sample(root / "ko", "ko0", synthetic_roi(60, 50, 11, defect=(20, 20, 5)))
    return root


def test_load_dataset_reads_sidecars_masks_and_labels(dataset):
    loaded = load_dataset(dataset, "R", "r/1")
    assert [s.path.name for s in loaded.ok] == ["ok0.png", "ok1.png", "ok2.png", "ok3.png"]
    assert [s.path.name for s in loaded.ng] == ["ng0.png", "ko0.png"]
    assert [p.name for p, _ in loaded.skipped] == ["stray.png"]
    circle = {"kind": "circle", "cx": 30, "cy": 25, "r": 24}
    assert json.loads(loaded.ok[0].shape) == json.loads(loaded.ok[3].shape) == circle
    assert loaded.ng[0].mask == dataset / "ng" / "ng0_mask.png" and loaded.ng[1].mask is None
    assert loaded.ng[1].mm_per_px is None and loaded.ng[1].shape is None
    assert MmPerPx().common(loaded.ok) == 0.1 and MmPerPx().common(loaded.ng[1:]) == 0.2


def test_load_dataset_finds_role_roi_subfolders_and_refuses_bad_folders(dataset, tmp_path):
    nested = tmp_path / "datasets"
    (nested / "R" / "r").mkdir(parents=True)
    dataset.rename(nested / "R" / "r" / "1")  # the GUI's datasets/<role>/<roi>/, an roi id with '/'
    assert len(load_dataset(nested, "R", "r/1").ok) == 4
    with pytest.raises(DatasetError, match="no ok/ or ng/"):
        load_dataset(tmp_path, "R", "r/1")
    sidecar = nested / "R" / "r" / "1" / "ok" / "ok0.json"
    sidecar.write_text("{not json")
    with pytest.raises(DatasetError, match="ok0.json is not readable JSON"):
        load_dataset(nested, "R", "r/1")
    sidecar.write_text('{"mm_per_px": -1}')
    with pytest.raises(DatasetError, match="mm_per_px=-1"):
        load_dataset(nested, "R", "r/1")


def test_fit_then_calibrate_from_a_dataset_folder(dataset, tmp_path, shared_backbone):
    models_dir = tmp_path / "models"
    fitted = bdi(models_dir, "fit", "R", "r/1", "--dataset", str(dataset), "--models-dir", str(models_dir))
    assert fitted.exit_code == 0, fitted.output
    assert "skipped" in fitted.stderr and "stray.png" in fitted.stderr
    shown = as_json(bdi(models_dir, "models", "show", "R", "r/1", "--json"))
    assert shown["n_embeddings"] == 4 * 64  # four OK samples; the mask and the stray sample are not
    assert shown["threshold"] is None

    calibrated = bdi(models_dir, "calibrate", "R", "r/1", "--dataset", str(dataset), "--score-percentile", "95",
                     "--allow-fitted")  # every OK sample was fitted: calibrating on them needs saying so
    assert calibrated.exit_code == 0, calibrated.output
    assert "on 4 OK and 2 NG sample(s)" in calibrated.stdout
    history = as_json(bdi(models_dir, "models", "history", "R", "r/1", "--json"))
    [calibration] = history["calibrations"]
    assert calibration["source"] == "cli" and calibration["memory_version"] == 1
    values = calibration["values"]
    assert values["mm_per_px"] == 0.1 and values["score_percentile"] == 95
    assert values["p5_ng"] is not None and values["ng_mean"] > 0 and values["threshold"] > 0

    refit = bdi(models_dir, "fit", "R", "r/1", "--dataset", str(dataset), "--memory-fit", "--mm-per-px", "0.3")
    assert refit.exit_code == 0, refit.output
    shown = as_json(bdi(models_dir, "models", "show", "R", "r/1", "--json"))
    assert shown["version"] == 2 and shown["coreset_size"] == 4 * 64
    assert shown["threshold"] == pytest.approx(values["threshold"])  # a refit keeps the calibration


def test_fit_with_holdout_then_calibrate_scores_only_the_held_out_ok_samples(dataset, tmp_path, shared_backbone):
    models_dir = tmp_path / "models"
    fitted = bdi(models_dir, "fit", "R", "r/1", "--dataset", str(dataset), "--holdout", "0.5", "--seed", "3")
    assert fitted.exit_code == 0, fitted.output
    assert as_json(bdi(models_dir, "models", "show", "R", "r/1", "--json"))["n_embeddings"] == 2 * 64
    [manifest] = [json.loads(p.read_text()) for p in models_dir.rglob("version.json")]
    provenance = manifest["dataset"]
    assert len(provenance["fit_files"]) == len(provenance["holdout_files"]) == 2
    assert not set(provenance["fit_files"]) & set(provenance["holdout_files"])
    again = tmp_path / "again"
    bdi(again, "fit", "R", "r/1", "--dataset", str(dataset), "--holdout", "0.5", "--seed", "3")
    [same] = [json.loads(p.read_text()) for p in again.rglob("version.json")]
    assert same["dataset"]["holdout_files"] == provenance["holdout_files"]  # seeded

    calibrated = bdi(models_dir, "calibrate", "R", "r/1", "--dataset", str(dataset))
    assert calibrated.exit_code == 0, calibrated.output
    assert "Scoring the 2 OK sample(s) not used to fit this memory (of 4, recognised by sha256)" in calibrated.stderr
    assert "on 2 OK and 2 NG sample(s)" in calibrated.stdout
    # When NG scores overlap the OK ones, calibrate says how many NG samples the threshold lets through.
    values = as_json(bdi(models_dir, "models", "history", "R", "r/1", "--json"))["calibrations"][0]["values"]
    overlapping = values["p5_ng"] <= values["p99_ok"]
    assert ("would pass as OK" in calibrated.stderr) == overlapping
    if overlapping:
        assert "of the 2 NG samples score below it" in calibrated.stderr


def test_calibrate_on_the_fit_images_refuses_unless_allowed_and_then_says_the_threshold_is_biased_low(
    dataset, tmp_path, shared_backbone
):
    models_dir = tmp_path / "models"
    bdi(models_dir, "fit", "R", "r/1", "--dataset", str(dataset))
    refused = bdi(models_dir, "calibrate", "R", "r/1", "--dataset", str(dataset))
    assert refused.exit_code == 1 and "were used to fit this memory" in refused.stderr
    assert "--holdout" in refused.stderr and "--allow-fitted" in refused.stderr
    calibrated = bdi(models_dir, "calibrate", "R", "r/1", "--dataset", str(dataset), "--allow-fitted")
    assert calibrated.exit_code == 0 and "biased low" in calibrated.stderr


def test_eval_writes_a_report_whose_headline_leaves_out_the_fitted_samples(dataset, tmp_path, shared_backbone):
    models_dir, report = tmp_path / "models", tmp_path / "report"
    assert bdi(models_dir, "eval", "R", "r/1", "--dataset", str(dataset), "--report", str(report)).exit_code == 1
    bdi(models_dir, "fit", "R", "r/1", "--dataset", str(dataset), "--holdout", "0.5")
    bdi(models_dir, "calibrate", "R", "r/1", "--dataset", str(dataset))
    assert as_json(bdi(models_dir, "inspections", "list", "--json")) == []  # scoring is not recorded by default
    result = bdi(models_dir, "eval", "R", "r/1", "--dataset", str(dataset), "--report", str(report), "--record")
    assert result.exit_code == 0, result.output
    recorded = as_json(bdi(models_dir, "inspections", "list", "--json"))
    assert len(recorded) == 4 and {item["source"] for item in recorded} == {"cli"}  # the samples it scored
    assert len({item["correlation_id"] for item in recorded}) == 1  # one run
    assert "image_auroc" in result.stdout and "README.md" in result.stdout
    assert "2 of the 4 OK samples were used to fit this memory" in result.stderr and "left out" in result.stderr
    summary = json.loads((report / "summary.json").read_text())
    assert (summary["n_ok"], summary["n_ng"], summary["n_ok_fitted"]) == (2, 2, 2) and summary["threshold"] is not None
    assert "Figures on 2 OK and 2 NG sample(s) the memory was not fitted on" in result.stdout
    assert {item["label"] for item in summary["items"]} == {"ok", "ng"} and not any(i["fitted"] for i in summary["items"])
    assert len(list((report / "overlays").glob("*.png"))) == 4
    for name in ("scores.png", "colour_scale.png", "README.md"):
        assert (report / name).is_file()

    # Renamed folder and files: recognised by content; --include-fitted reports the fitted ones apart.
    renamed = tmp_path / "renamed"
    dataset.rename(renamed)
    for path in (renamed / "ok").glob("ok*"):
        path.rename(path.with_name("part-" + path.name))
    both = bdi(models_dir, "eval", "R", "r/1", "--dataset", str(renamed), "--report", str(report), "--include-fitted")
    assert both.exit_code == 0, both.output
    summary = json.loads((report / "summary.json").read_text())
    assert (summary["n_ok"], summary["fitted_ok"]["n_ok"]) == (2, 2) and sum(i["fitted"] for i in summary["items"]) == 2
    assert "fitted on: image_auroc" in both.stdout


def test_mm_per_px_one_rule_for_fit_calibrate_and_eval(tmp_path, shared_backbone, monkeypatch):
    """Sidecar, else --mm-per-px, else the model's recorded value (calibration, else fit), else 0.2; said aloud."""
    root, models_dir = tmp_path / "plain", tmp_path / "models"
    for seed in range(3):
        write_sample(root / "ok", f"ok{seed}", synthetic_roi(60, 50, seed))
    write_sample(root / "ng", "ng0", synthetic_roi(60, 50, 10, defect=(30, 25, 6)))
    write_sample(root / "ng", "ng1", synthetic_roi(60, 50, 11, defect=(20, 20, 5)), mm_per_px=0.05)
    used: list[tuple[str, float]] = []
    infer = InspectionService.infer

    def recording(self, role_id, roi_id, mm_per_px, image, *args, **kwargs):  # calls through: records the value
        used.append((image.filename, mm_per_px))
        return infer(self, role_id, roi_id, mm_per_px, image, *args, **kwargs)

    monkeypatch.setattr(InspectionService, "infer", recording)

    def run(*args: str):
        result = bdi(models_dir, *args, "R", "r", "--dataset", str(root), *(["--report", str(tmp_path / "rep")]
                                                                          if args[0] == "eval" else []))
        assert result.exit_code == 0, result.output
        return result

    fitted = run("fit", "--mm-per-px", "0.1", "--holdout", "0.34")
    assert "0.1 (--mm-per-px) for the 2 without a sidecar value; the version records 0.1" in fitted.stderr
    calibrated = run("calibrate")
    assert "(recorded with the model: the fit of version 1)" in calibrated.stderr
    assert len(used) == 3  # the held-out OK sample and both NG
    assert {value for name, value in used if name != "ng1.png"} == {0.1} and ("ng1.png", 0.05) in used
    used.clear()
    calibrated = run("calibrate", "--mm-per-px", "0.3")  # the option reaches the inferences, sidecars still win
    assert {value for name, value in used if name != "ng1.png"} == {0.3} and ("ng1.png", 0.05) in used
    assert as_json(bdi(models_dir, "models", "history", "R", "r", "--json"))["calibrations"][0]["values"][
        "mm_per_px"] == 0.3
    evaluated = run("eval")
    assert "(recorded with the model: the active calibration)" in evaluated.stderr
    items = json.loads((tmp_path / "rep" / "summary.json").read_text())["items"]
    assert {Path(i["file"]).name: i["mm_per_px"] for i in items} == {
        **{Path(i["file"]).name: 0.3 for i in items}, "ng1.png": 0.05}
    run("eval", "--mm-per-px", "0.2")
    items = json.loads((tmp_path / "rep" / "summary.json").read_text())["items"]
    assert {i["mm_per_px"] for i in items if not i["file"].endswith("ng1.png")} == {0.2}


def test_masks_laid_out_as_samples_are_refused_before_anything_is_fitted(tmp_path):
    root = tmp_path / "tiles"
    write_sample(root / "ok", "tile1", synthetic_roi(60, 50, 1))
    write_sample(root / "ok", "tile2", synthetic_roi(60, 50, 2))
    cv2.imwrite(str(root / "ok" / "tile2.jpg"), synthetic_roi(60, 50, 2))  # tile2.png is its "mask" now
    refused = bdi(tmp_path / "models", "fit", "R", "r", "--dataset", str(root))
    assert refused.exit_code == 2 and "share a name" in refused.stderr and "<stem>_mask.png" in refused.stderr
    assert not (tmp_path / "models").exists()


def test_fit_shows_progress_per_batch(dataset, tmp_path, extractor_112, shared_backbone):
    service = InspectionService(Settings.load(cli_env(tmp_path / "core", BDI_FIT_BATCH_SIZE="3")), extractor_112)
    service.start()
    seen: list[tuple[int, int]] = []
    service.fit("R", "r", 0.2, uploads(0, 1, 2, 3, 4), progress=lambda done, total: seen.append((done, total)))
    service.close()
    assert seen == [(3, 5), (5, 5)]
    fitted = bdi(tmp_path / "models", "fit", "R", "r/1", "--dataset", str(dataset))
    assert fitted.exit_code == 0, fitted.output
    assert "Building the memory" in fitted.stderr and "4/4" in fitted.stderr and "left" in fitted.stderr


def test_fit_and_calibrate_refuse_unusable_input(dataset, tmp_path, shared_backbone):
    models_dir = tmp_path / "models"
    not_fitted = bdi(models_dir, "calibrate", "R", "r/1", "--dataset", str(dataset))
    assert not_fitted.exit_code == 1 and "run `bdi fit R r/1 --dataset DIR` first" in not_fitted.stderr
    no_ok = tmp_path / "only_ng"
    write_sample(no_ok / "ng", "x", synthetic_roi(40, 40, 1))
    result = bdi(models_dir, "fit", "R", "r", "--dataset", str(no_ok))
    assert result.exit_code == 2 and "has no OK samples" in result.stderr
    (dataset / "ok" / "ok1.png").write_bytes(b"not an image")
    bad = bdi(models_dir, "fit", "R", "r/1", "--dataset", str(dataset))
    assert bad.exit_code == 1 and "'ok1.png' is not a readable image" in bad.stderr


# ---- openapi -----------------------------------------------------------------------------------
def test_openapi_writes_the_document(tmp_path, shared_backbone):
    output = tmp_path / "openapi.json"
    result = bdi(tmp_path / "models", "openapi", "--output", str(output))
    assert result.exit_code == 0, result.output
    document = json.loads(output.read_text())
    assert document["openapi"].startswith("3.1")
    assert {"/fit_ok", "/infer", "/calibrate_ng", "/state", "/health"} <= set(document["paths"])
    assert not (tmp_path / "models").exists()  # writing the document touches no models dir
    assert json.loads(bdi(tmp_path / "models", "openapi").stdout) == document
    text = output.read_text()
    assert text == json.dumps(document, indent=2, sort_keys=True) + "\n"  # the committed snapshot's format
    converted = tmp_path / "openapi-3.0.json"
    assert bdi(tmp_path / "models", "openapi", "--openapi-3.0", "--output", str(converted)).exit_code == 0
    assert json.loads(converted.read_text())["openapi"] == "3.0.3"


def test_admin_commands_never_import_the_backbone(models_dir):
    """The installed script, as an operator runs it: file administration works without torch."""
    code = (
        "import sys\n"
        "from service.cli import main\n"
        "for args in (['models', 'list'], ['models', 'verify'], ['models', 'history', 'Master1', 'inspection-1'],\n"
        "             ['models', 'migrate', '--dry-run'], ['models', 'reindex'], ['inspections', 'list'],\n"
        "             ['models', 'drift', 'Master1', 'inspection-1'],\n"
        f"             ['models', 'export', 'Master1', 'inspection-1', '-o', {str(models_dir.parent / 'm.bdimodel')!r}]):\n"
        "    assert main(args, standalone_mode=False) in (None, 0), args\n"
        "assert 'torch' not in sys.modules, 'an admin command imported torch'\n"
    )
    env = {**os.environ, **cli_env(models_dir)}
    env = {key: value for key, value in env.items() if value is not None}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    missing = subprocess.run([str(Path(sys.executable).with_name("bdi")), "models", "list", "--models-dir",
                              str(models_dir / "nope")], env=env, capture_output=True, text=True, timeout=120,
                             check=False)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().startswith("Error: Models folder") and missing.stderr.count("\n") == 1
