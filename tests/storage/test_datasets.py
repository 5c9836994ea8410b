"""The dataset store and named recipes on disk: stored names (unique, chronological, never reused), safe
folders for any id, lookups that can't leave the store, and the tree-wide operations (scan, cleanup, legacy
discovery, reindex) that must see named-recipe models and samples without misreading them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.errors import BadRequest
from service.storage import DatasetStore, ModelStore, Registry, prepare_upload
from service.storage.files import TMP_PREFIX
from service.storage.legacy import find_legacy
from tests.support import png_bytes, synthetic_roi

PNG = png_bytes(synthetic_roi(32, 24, 0))


def add(datasets: DatasetStore, recipe: str, role: str, roi: str, label: str, count: int) -> list[str]:
    samples = prepare_upload(label, [(f"{i}.png", PNG) for i in range(count)], [], 10_000)
    return datasets.add(recipe, role, roi, label, samples)


def test_stored_names_are_unique_chronological_and_never_reused(tmp_path):
    datasets = DatasetStore(ModelStore(tmp_path))
    first = add(datasets, "default", "R", "r", "ok", 3) + add(datasets, "default", "R", "r", "ng", 2)
    assert first == sorted(first) and len(set(first)) == 5 and all(name.endswith(".png") for name in first)
    folder = datasets.folder("default", "R", "r")
    newest = datasets.find(folder, "ng", first[-1])
    assert datasets.delete(folder, newest) and not datasets.delete(folder, newest)
    again = add(datasets, "default", "R", "r", "ng", 1)[0]
    assert again > first[-1]  # the deleted newest name is not given out again
    # a clock that went back (here: a last name in the future) never makes a name sort before an older one
    (folder / "sequence.json").write_text(json.dumps({"last_name": "29991231T235959999999Z-000009.png"}))
    later = add(datasets, "default", "R", "r", "ok", 2)
    assert later == sorted(later) and later[0] > "29991231T235959999999Z-000009.png"
    (folder / "sequence.json").unlink()  # lost: the stored names still bound the next one
    assert add(datasets, "default", "R", "r", "ok", 1)[0] > later[-1]


def test_any_id_gets_a_folder_inside_the_store_and_lookups_cannot_leave_it(tmp_path):
    datasets = DatasetStore(ModelStore(tmp_path))
    name = add(datasets, "line2", "Zona A/1", "../x", "ok", 1)[0]
    folder = datasets.folder("line2", "Zona A/1", "../x")
    assert folder.resolve().is_relative_to((tmp_path / "@datasets").resolve())
    assert [(f.recipe_id, f.role_id, f.roi_id) for f in datasets.scan()] == [("line2", "Zona A/1", "../x")]
    (tmp_path / "secret.png").write_bytes(PNG)
    for filename in ("../../secret.png", "..\\..\\secret.png", "/etc/passwd", "sequence.json", ".lock", "", "ok"):
        assert datasets.find(folder, "ok", filename) is None, filename
    assert datasets.find(folder, "ok", f"some/where/{name}").name == name  # only the last component counts
    assert datasets.find(folder, "ng", name) is None  # another class


def test_uploads_are_checked_before_anything_is_stored():
    with pytest.raises(BadRequest, match="1 metas for 2 images"):
        prepare_upload("ok", [("a.png", PNG), ("b.png", PNG)], ["{}"], 10_000)
    with pytest.raises(BadRequest, match=r"image 2 \('b.png'\) has timestamp='yesterday'"):
        prepare_upload("ok", [("a.png", PNG), ("b.png", PNG)], ["{}", '{"timestamp": "yesterday"}'], 10_000)
    with pytest.raises(BadRequest, match="shape_json is not usable"):
        prepare_upload("ok", [("a.png", PNG)], ['{"shape_json": "{not json"}'], 10_000)
    gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
    with pytest.raises(BadRequest, match="is a GIF image"):
        prepare_upload("ng", [("a.gif", gif)], [], 10_000)
    sample = prepare_upload("ok", [("a.png", PNG)], ['{"mm_per_px": "0.25", "filename": "gui.png"}'], 10_000)[0]
    assert sample.mm_per_px == 0.25 and sample.meta["mm_per_px"] == 0.25 and sample.client_filename == "gui.png"


def _model(store: ModelStore, role: str, roi: str, recipe: str) -> Path:
    folder = store.model_dir(role, roi, create=True, recipe_id=recipe)
    with store.locked(folder):
        store.write_version(folder, np.eye(4, dtype=np.float32), (2, 2), {"extractor": {"model": "test"}}, None)
    return folder


def test_tree_operations_see_named_recipes_and_samples_without_misreading_them(tmp_path):
    store = ModelStore(tmp_path)
    default, named = _model(store, "Master1", "roi", "default"), _model(store, "Master1", "roi", "line2")
    assert named.relative_to(tmp_path).parts[:2] == ("@recipes", "line2")
    assert json.loads((named / "id.json").read_text()) == {"recipe_id": "line2", "role_id": "Master1", "roi_id": "roi"}
    assert json.loads((default / "id.json").read_text()) == {"role_id": "Master1", "roi_id": "roi"}  # as old tools read it
    add(DatasetStore(store), "line2", "Master1", "roi", "ok", 1)
    assert [(f.recipe_id, f.role_id, f.roi_id) for f in store.scan()] == [("default", "Master1", "roi"),
                                                                         ("line2", "Master1", "roi")]
    assert find_legacy(store) == []  # @recipes and @datasets are never taken for an earlier backend's files
    (named / f"{TMP_PREFIX}half-written").mkdir()
    (named / "memory.npz").unlink()  # a crash between the pointer switch and the canonical copy
    assert store.cleanup_leftovers() == 1 and (named / "memory.npz").is_file()
    registry = Registry(f"sqlite:///{tmp_path / 'registry.sqlite3'}", tmp_path)
    registry.upgrade()
    try:
        for folder in store.scan():
            registry.sync_folder(store, folder)
        recipe_dir = store.namespace_dir("line2")
        store.write_recipe(recipe_dir, {"recipe_id": "line2", "mm_per_px": 0.2, "created_at_utc": "2026-01-01T00:00:00Z"})
        registry.sync_recipes(store)  # what start-up and `bdi models reindex` do
        assert registry.recipes() == {"line2": 0.2}
        assert registry.state("Master1", "roi").folder == "Master1/roi"
        assert registry.state("Master1", "roi", recipe_id="line2").folder == "@recipes/line2/Master1/roi"
        assert registry.state("Master1", "roi", recipe_id="other") is None
        store.delete_model("Master1", "roi")
        assert registry.remove_missing(store) == [("default", "Master1", "roi")]
        assert [(s.recipe_id, s.role_id) for s in registry.states()] == [("line2", "Master1")]
        assert (tmp_path / "@datasets" / "line2").is_dir()  # deleting a model never touches samples
    finally:
        registry.dispose()
