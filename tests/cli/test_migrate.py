"""``bdi models migrate`` and the import at start-up: every layout an earlier backend wrote, imported
without loss, idempotent, conflicts and lossy names reported."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from service.core import Upload
from service.pipeline.patchcore import MemoryIndex
from service.storage.artifacts import ModelStore
from service.storage.datasets import DatasetStore
from service.storage.legacy import _parse_stem, find_legacy, migrate
from service.storage.registry import Registry
from tests.cli.support import as_json, bdi, make_service, uploads
from tests.support import both_registries, png_bytes, synthetic_roi

PROBE = Upload("probe.png", png_bytes(synthetic_roi(60, 50, seed=99, defect=(30, 25, 5))))
OLD = 1_600_000_000  # a file time well before any canonical write
CALIB = {"threshold": 0.5, "ok_mean": 0.3, "ng_mean": 0.0, "p99_ok": 0.5, "p5_ng": None, "mm_per_px": 0.2,
         "area_mm2_thr": 1.0, "score_percentile": 99}


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, extractor_112):
    """A memory fitted by the service: the embeddings every legacy file carries, and its probe score."""
    service = make_service(tmp_path_factory.mktemp("reference") / "models", extractor_112)
    service.fit("Ref", "roi", 0.2, uploads(0, 1, 2))
    score = service.infer("Ref", "roi", 0.2, PROBE)["score"]
    loaded = service.store.load_memory(service.store.model_dir("Ref", "roi"), 1)
    service.close()
    return {"emb": loaded.embeddings, "grid": loaded.token_grid, "index": loaded.index_bytes, "score": score}


def write_memory(path: Path, reference: dict, metadata: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"emb": reference["emb"], "token_h": np.array(reference["grid"][0]),
              "token_w": np.array(reference["grid"][1])}
    if metadata is not None:
        arrays["metadata"] = np.array(json.dumps(metadata))
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    os.utime(path, (OLD, OLD))


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))
    os.utime(path, (OLD, OLD))


B64_NAME = f"{b64('Prüfung ü')}__{b64('Zona A/1')}"
RECIPE_NAME = f"{b64('ÿ?')}__{b64('roi/ñ')}"  # b64('ÿ?') ends with '_': a run of three underscores


@pytest.fixture
def legacy(tmp_path: Path, reference: dict) -> Path:
    """A models dir with every legacy layout."""
    root = tmp_path / "models"
    # folder layout, plain ids, no metadata, a valid index, a full calib.json
    write_memory(root / "Master1" / "inspection-1" / "memory.npz", reference)
    (root / "Master1" / "inspection-1" / "index.faiss").write_bytes(reference["index"])
    write_json(root / "Master1" / "inspection-1" / "calib.json", {**CALIB, "threshold": 0.11})
    # folder layout, raw ids with '/' and a space: nested folders; old flat metadata; calib without means
    write_memory(root / "Inspection" / "Zona A" / "1" / "memory.npz", reference,
                 {"model": "vit_small_patch14_dinov2.lvd142m", "input_size": 112, "coreset_rate": 0.02})
    write_json(root / "Inspection" / "Zona A" / "1" / "calib.json",
               {key: value for key, value in CALIB.items() if key not in {"ok_mean", "ng_mean"}} | {"threshold": 0.22})
    # flat, sanitised ids (lossy), no index, calib.json with the extra keys of a newer backend
    write_memory(root / "Master2_Zona_B.npz", reference)
    write_json(root / "Master2_Zona_B_calib.json", {**CALIB, "threshold": 0.33, "request_id": "req-1",
                                                    "recipe_id": "R9", "created_at_utc": "2024-06-01T08:00:00Z"})
    # flat, base64 ids (non-ASCII, '/'), an index of another memory (stale: rebuilt)
    write_memory(root / f"{B64_NAME}.npz", reference)
    (root / f"{B64_NAME}_index.faiss").write_bytes(MemoryIndex.build(reference["emb"][:2]).to_bytes())
    write_json(root / f"{B64_NAME}_calib.json", {**CALIB, "threshold": 0.44})
    # recipes: the same model under two model keys of recipe R1 (the newer calibration wins) and in recipe R2
    for recipe, key, threshold, stamp in (("R1", "key-1", 0.55, "2024-01-01T00:00:00Z"),
                                          ("R1", "key-2", 0.66, "2024-03-01T00:00:00+00:00"),
                                          ("R2", "key-1", 0.77, "2024-02-01T00:00:00Z")):
        folder = root / "recipes" / recipe / key
        write_memory(folder / f"{RECIPE_NAME}.npz", reference)
        write_json(folder / f"{RECIPE_NAME}_calib.json", {**CALIB, "threshold": threshold, "created_at_utc": stamp})
    return root


EXPECTED = {
    # legacy name: (layout, role, roi, threshold, recipe)
    "Master1/inspection-1": ("folder", "Master1", "inspection-1", 0.11, "default"),
    "Inspection/Zona A/1": ("folder", "Inspection", "Zona A/1", 0.22, "default"),
    "Master2_Zona_B": ("flat", "Master2", "Zona_B", 0.33, "default"),
    B64_NAME: ("flat-b64", "Prüfung ü", "Zona A/1", 0.44, "default"),
    f"recipes/R1/key-1/{RECIPE_NAME}": ("recipe", "ÿ?", "roi/ñ", 0.55, "r1"),
    f"recipes/R1/key-2/{RECIPE_NAME}": ("recipe", "ÿ?", "roi/ñ", 0.66, "r1"),
    f"recipes/R2/key-1/{RECIPE_NAME}": ("recipe", "ÿ?", "roi/ñ", 0.77, "r2"),
}
SUPERSEDED = f"recipes/R1/key-1/{RECIPE_NAME}"


def tree(root: Path) -> dict[str, str]:
    """Every file under root with its sha256, less the registry and lock files (they change on open)."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.name.startswith(("registry.sqlite3", ".")) and path.name != ".lock"
    }


def test_base64_names_split_only_where_both_halves_round_trip():
    assert _parse_stem(B64_NAME)[:3] == ("Prüfung ü", "Zona A/1", True)
    assert _parse_stem(RECIPE_NAME)[:3] == ("ÿ?", "roi/ñ", True)
    assert _parse_stem(f"{b64('Master1')}__{b64('inspection-1')}")[:3] == ("Master1", "inspection-1", True)
    role, roi, is_b64, note = _parse_stem("Master2_Zona_B")
    assert (role, roi, is_b64) == ("Master2", "Zona_B", False) and "lossy" in note
    # '__' in a sanitised name whose halves are no base64 of valid ids: split at the first '_'
    assert _parse_stem("AA__BB")[:3] == ("AA", "_BB", False)
    assert _parse_stem("single")[:2] == (None, None)


def test_find_legacy_sees_every_layout(legacy):
    found = {model.name: model for model in find_legacy(ModelStore(legacy))}
    assert {name: (m.layout, m.role_id, m.roi_id, m.recipe_id) for name, m in found.items()} == {
        name: (*expected[:3], expected[4]) for name, expected in EXPECTED.items()
    }
    assert "nested folders" in found["Inspection/Zona A/1"].note
    assert found[B64_NAME].note is None and found["Master2_Zona_B"].index is None


@both_registries
def test_migrate_imports_every_layout_without_loss(legacy, reference, database_url):
    result = bdi(legacy, "models", "migrate")
    assert result.exit_code == 0, result.output
    assert "superseded" in result.stdout and "lossy" in result.stdout
    rows = {(r["recipe_id"], r["role_id"], r["roi_id"]): r for r in as_json(bdi(legacy, "models", "list", "--json"))}
    winners = {name: e for name, e in EXPECTED.items() if name != SUPERSEDED}
    assert set(rows) == {(recipe, role, roi) for _, role, roi, _, recipe in winners.values()}
    store = ModelStore(legacy)
    for name, (_, role, roi, threshold, recipe) in winners.items():
        assert rows[recipe, role, roi]["threshold"] == pytest.approx(threshold), name
        assert rows[recipe, role, roi]["calib_source"] == "legacy"
        shown = as_json(bdi(legacy, "models", "show", role, roi, "--recipe", recipe, "--json"))
        assert shown["active"]["source"] == "migrated" and shown["active"]["legacy_path"] == name
        folder = store.model_dir(role, roi, recipe_id=recipe)
        loaded = store.load_memory(folder, 1)
        np.testing.assert_array_equal(loaded.embeddings, reference["emb"])
        assert loaded.token_grid == reference["grid"] and loaded.index_bytes is not None  # rebuilt where missing
    folder = store.model_dir("Master1", "inspection-1")
    assert folder == legacy / "Master1" / "inspection-1"  # adopted in place: the spec's path stays the model's
    assert store.load_memory(folder, 1).metadata["extractor"] == {"model": "unknown"}
    zona = store.load_memory(store.model_dir("Inspection", "Zona A/1"), 1).metadata["extractor"]
    assert zona == {"model": "vit_small_patch14_dinov2.lvd142m", "input_size": 112}
    calib = json.loads((store.model_dir("Master2", "Zona_B") / "calib.json").read_text())
    assert calib["request_id"] == "req-1" and calib["recipe_id"] == "R9"  # extra keys kept
    history = as_json(bdi(legacy, "models", "history", "Master2", "Zona_B", "--json"))
    assert history["calibrations"][0]["created_at"] == "2024-06-01T08:00:00Z"
    assert history["calibrations"][0]["correlation_id"] == "req-1"
    # legacy files stay where they were (the adopted folder's files are now the canonical ones)
    assert (legacy / "Master2_Zona_B.npz").is_file() and (legacy / "recipes" / "R1" / "key-1").is_dir()
    assert (legacy / "Inspection" / "Zona A" / "1" / "memory.npz").is_file()
    assert bdi(legacy, "models", "verify").exit_code == 0


def test_migrated_models_score_like_the_original(legacy, reference, extractor_112):
    assert bdi(legacy, "models", "migrate").exit_code == 0
    service = make_service(legacy, extractor_112)
    try:
        for _, role, roi, _, recipe in EXPECTED.values():
            score = service.infer(role, roi, 0.2, PROBE, recipe_id=recipe)["score"]
            assert score == pytest.approx(reference["score"], abs=1e-6)
    finally:
        service.close()


@both_registries
def test_second_run_changes_nothing(legacy, database_url):
    assert bdi(legacy, "models", "migrate").exit_code == 0
    before = tree(legacy)
    again = bdi(legacy, "models", "migrate")
    assert again.exit_code == 0
    assert tree(legacy) == before
    assert again.stdout.count("already migrated") == 5 and again.stdout.count("superseded") == 1


def test_dry_run_changes_nothing(legacy):
    before = tree(legacy)
    result = bdi(legacy, "models", "migrate", "--dry-run")
    assert result.exit_code == 0 and "would adopt" in result.stdout and "would import" in result.stdout
    assert tree(legacy) == before
    assert as_json(bdi(legacy, "models", "list", "--json")) == []


def test_map_overrides_lossy_names(legacy):
    result = bdi(legacy, "models", "migrate", "--map", "Master2_Zona_B=Master2/Zona B", "--map",
                 f"{RECIPE_NAME}=Línea 2/roi/ñ")
    assert result.exit_code == 0, result.output
    ids = {(r["role_id"], r["roi_id"]) for r in as_json(bdi(legacy, "models", "list", "--json"))}
    assert ("Master2", "Zona B") in ids and ("Línea 2", "roi/ñ") in ids and ("Master2", "Zona_B") not in ids
    unknown = bdi(legacy, "models", "migrate", "--map", "nothing=A/B")
    assert unknown.exit_code == 2 and "--map nothing names no legacy model" in unknown.stderr
    malformed = bdi(legacy, "models", "migrate", "--map", "Master2_Zona_B=no-roi")
    assert malformed.exit_code == 2


def test_remove_legacy_deletes_what_was_imported_and_keeps_the_rest(legacy):
    result = bdi(legacy, "models", "migrate", "--remove-legacy")
    assert result.exit_code == 0, result.output
    assert not (legacy / "Master2_Zona_B.npz").exists() and not (legacy / f"{B64_NAME}.npz").exists()
    assert not (legacy / "Inspection" / "Zona A").exists()  # emptied folders go too
    assert not (legacy / "recipes" / "R2").exists()
    assert (legacy / "recipes" / "R1" / "key-1" / f"{RECIPE_NAME}.npz").is_file()  # superseded: kept
    assert (legacy / "Master1" / "inspection-1" / "memory.npz").is_file()  # adopted: canonical now
    assert bdi(legacy, "models", "verify").exit_code == 0


def test_canonical_data_newer_than_legacy_files_is_kept(tmp_path, reference, extractor_112):
    root = tmp_path / "models"
    service = make_service(root, extractor_112)
    service.fit("Master2", "Zona_B", 0.2, uploads(5))
    service.close()
    write_memory(root / "Master2_Zona_B.npz", reference)  # written (mtime) long before that fit
    result = bdi(root, "models", "migrate")
    assert result.exit_code == 0 and "the canonical memory is newer; legacy files kept" in result.stdout
    assert as_json(bdi(root, "models", "history", "Master2", "Zona_B", "--json"))["active_version"] == 1


def test_unreadable_legacy_files_fail_and_are_reported(legacy):
    (legacy / "Broken_npz.npz").write_bytes(b"not a zip")
    (legacy / "Bad_calib.npz").write_bytes((legacy / "Master2_Zona_B.npz").read_bytes())
    (legacy / "Bad_calib_calib.json").write_text('{"threshold": "high"}')
    result = bdi(legacy, "models", "migrate")
    assert result.exit_code == 1
    assert "Broken_npz.npz can't be read as a memory bank" in result.stdout
    assert "Bad_calib_calib.json has no numeric threshold" in result.stdout
    assert len(as_json(bdi(legacy, "models", "list", "--json"))) == 6  # the rest is imported


def test_start_imports_legacy_models_so_the_gui_works_at_once(legacy, reference, extractor_112):
    service = make_service(legacy, extractor_112)
    try:
        state = service.state("Prüfung ü", "Zona A/1")
        assert state["fitted"] and state["calib_present"] and state["calib_source"] == "legacy"
        assert service.infer("Master1", "inspection-1", 0.2, PROBE)["threshold"] == pytest.approx(0.11)
    finally:
        service.close()
    assert "already migrated" in bdi(legacy, "models", "migrate").stdout


def test_deleting_a_migrated_model_removes_its_legacy_files(legacy, extractor_112):
    assert bdi(legacy, "models", "migrate").exit_code == 0
    result = bdi(legacy, "models", "delete", "Master2", "Zona_B", "--yes")
    assert result.exit_code == 0 and "2 legacy file(s)" in result.stdout
    assert not (legacy / "Master2_Zona_B.npz").exists()
    service = make_service(legacy, extractor_112)  # a restart must not bring it back
    service.close()
    ids = {(r["role_id"], r["roi_id"]) for r in as_json(bdi(legacy, "models", "list", "--json"))}
    assert ("Master2", "Zona_B") not in ids and len(ids) == 4


@both_registries
def test_workers_starting_together_import_each_model_once(legacy, database_url):
    registry = Registry(database_url or f"sqlite:///{legacy / 'registry.sqlite3'}", legacy)
    store = ModelStore(legacy, locks=registry.locks)
    registry.upgrade()
    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda: results.append([a.outcome for a in migrate(store, registry)]))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    registry.dispose()
    assert sorted(outcome for outcomes in results for outcome in outcomes).count("imported") == 5
    for _, role, roi, _, recipe in EXPECTED.values():
        assert [v.version for v in store.versions(store.model_dir(role, roi, recipe_id=recipe))] == [1]


def test_ids_that_differ_only_in_case_stay_two_models(tmp_path, reference):
    root = tmp_path / "models"
    write_memory(root / "Master1" / "roi" / "memory.npz", reference)
    write_memory(root / "master1" / "roi" / "memory.npz", reference)
    assert bdi(root, "models", "migrate").exit_code == 0
    store = ModelStore(root)
    folders = [store.model_dir(role, "roi") for role in ("Master1", "master1")]
    assert all(folder.parent.name.startswith("@") for folder in folders)  # never adopted by the case twin
    assert folders[0] != folders[1]
    assert len(as_json(bdi(root, "models", "list", "--json"))) == 2


# ---- the newer GUI's backend: recipes with model keys, recipe meta, datasets ----------------------------------
STEM = f"{b64('Inspection')}__{b64('inspection-1')}"
LEGACY_SAMPLES = {  # legacy path under recipes/line2-disc/datasets/<STEM>/: (seed or None for garbage, sidecar)
    "ok/20250501_101500.png": (1, {"filename": "roi_0001.png", "mm_per_px": 0.25, "timestamp": None, "angle": None,
                                   "shape_json": '{"kind": "circle", "cx": 30, "cy": 25, "r": 20}'}),
    "ok/20250501_101501.png": (2, {"filename": "roi_0002.png", "mm_per_px": None}),
    "ok/20250501_101502.png": (None, {"filename": "broken.png"}),
    "ng/20250501_101600.png": (3, None),
}


@pytest.fixture
def newer_backend(tmp_path: Path, reference: dict) -> Path:
    """A models dir as the newer GUI's old backend left it (CONTRACT-GUI2.md, last section)."""
    root = tmp_path / "models"
    recipe = root / "recipes" / "line2-disc"
    write_json(recipe / "recipe_meta.json", {"mm_per_px": 0.25, "created_at_utc": "2025-05-01T10:00:00Z"})
    write_memory(recipe / "inspection-1" / f"{STEM}.npz", reference)
    (recipe / "inspection-1" / f"{STEM}_index.faiss").write_bytes(reference["index"])
    write_json(recipe / "inspection-1" / f"{STEM}_calib.json", {
        "threshold": 0.5, "score_percentile": 99, "area_mm2_thr": 1.0, "recipe_id": "line2-disc",
        "role_id": "Inspection", "roi_id": "inspection-1", "model_key": "inspection-1",
        "created_at_utc": "2025-05-02T10:00:00Z"})
    for name, (seed, sidecar) in LEGACY_SAMPLES.items():
        path = recipe / "datasets" / STEM / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(synthetic_roi(60, 50, seed)) if seed is not None else b"not an image")
        if sidecar is not None:
            write_json(path.with_suffix(".json"), sidecar)
    return root


def test_newer_backend_models_and_datasets_go_into_their_recipe(newer_backend, extractor_112):
    root = newer_backend
    registry = Registry(f"sqlite:///{root / 'registry.sqlite3'}", root)
    registry.upgrade()
    actions = {action.legacy.layout: action for action in migrate(ModelStore(root), registry)}
    assert set(actions) == {"recipe", "recipe-meta", "recipe-dataset"}
    assert all(action.outcome == "imported" for action in actions.values())
    assert actions["recipe-meta"].detail == "mm_per_px 0.25 locked"
    skipped = actions["recipe-dataset"].detail
    assert skipped.startswith("2 OK and 1 NG sample(s); 1 skipped (20250501_101502.png: File '20250501_101502.png' is")
    assert registry.recipes() == {"line2-disc": 0.25}
    registry.dispose()
    rows = as_json(bdi(root, "models", "list", "--json"))
    assert [(r["recipe_id"], r["role_id"], r["roi_id"], r["threshold"], r["calib_source"]) for r in rows] == [
        ("line2-disc", "Inspection", "inspection-1", 0.5, "legacy")]
    store = ModelStore(root)
    calib = json.loads((store.model_dir("Inspection", "inspection-1", recipe_id="line2-disc") / "calib.json").read_text())
    assert list(calib)[:8] == list(CALIB) and calib["mm_per_px"] == 0.25 and calib["ok_mean"] is None
    assert calib["model_key"] == "inspection-1" and calib["threshold"] == 0.5

    listed = as_json(bdi(root, "datasets", "list", "--json"))
    assert [(r["recipe_id"], r["role_id"], r["roi_id"], r["ok"], r["ng"]) for r in listed] == [
        ("line2-disc", "Inspection", "inspection-1", 2, 1)]
    datasets = DatasetStore(store)
    folder = datasets.folder("line2-disc", "Inspection", "inspection-1")
    first, second = datasets.samples(folder, "ok")
    meta = datasets.read_meta(first)
    assert meta["filename"] == first.name and meta["client_filename"] == "roi_0001.png"
    assert meta["legacy_path"].endswith("ok/20250501_101500.png") and meta["mm_per_px"] == 0.25
    assert "mm_per_px" not in datasets.read_meta(second)  # a null mm_per_px is dropped, never served as null
    assert first.path.read_bytes() == png_bytes(synthetic_roi(60, 50, 1))

    service = make_service(root, extractor_112)
    try:
        assert service.state("Inspection", "inspection-1", recipe_id="line2-disc")["calib_present"] is True
        assert service.state("Inspection", "inspection-1")["fitted"] is False  # nothing in the default namespace
    finally:
        service.close()
    before = tree(root)
    assert "already migrated" in bdi(root, "models", "migrate").stdout and tree(root) == before
    assert datasets.delete(folder, first)
    assert bdi(root, "models", "migrate").exit_code == 0
    assert [s.name for s in datasets.samples(folder, "ok")] == [second.name]  # a deleted sample stays deleted
