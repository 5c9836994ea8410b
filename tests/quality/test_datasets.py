"""service/quality/datasets.py: masks laid out as samples are refused, a fit's provenance recognises its samples
(by sha256, else by name), and the one mm/px rule."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from service.quality.datasets import (
    DEFAULT_MM_PER_PX,
    DatasetError,
    MmPerPx,
    Sample,
    fit_provenance,
    load_dataset,
    split_holdout,
    split_seen,
)
from tests.support import synthetic_roi


def write(folder: Path, name: str, image: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(folder / name), image)
    return folder / name


@pytest.fixture
def ok_folder(tmp_path: Path) -> Path:
    for seed in range(4):
        write(tmp_path / "data" / "ok", f"ok{seed}.png", synthetic_roi(40, 30, seed))
    return tmp_path / "data"


# ---- masks where samples belong -----------------------------------------------------------------
def test_a_public_data_sets_same_name_masks_are_refused(ok_folder: Path):
    """Magnetic-Tile style: x.jpg with its mask x.png in the same folder."""
    write(ok_folder / "ok", "tile.jpg", synthetic_roi(40, 30, 9))
    mask = np.zeros((30, 40), np.uint8)
    mask[5:10, 5:10] = 255
    write(ok_folder / "ok", "tile.png", mask)
    with pytest.raises(DatasetError, match=r"tile\.jpg and .*tile\.png share a name") as refused:
        load_dataset(ok_folder)
    assert "<stem>_mask.png" in str(refused.value) and "ng/x_mask.png" in str(refused.value)


@pytest.mark.parametrize("levels", [(0, 255), (0, 1), (128,)])
def test_binary_or_single_valued_images_are_refused_in_ok_and_ng(ok_folder: Path, levels):
    image = np.full((30, 40), levels[0], np.uint8)
    image[:, 20:] = levels[-1]
    for label in ("ok", "ng"):
        folder = ok_folder.parent / label / "data"
        shutil.copytree(ok_folder, folder)
        write(folder / label, "mask_like.png", image)
        with pytest.raises(DatasetError, match=rf"mask_like\.png has only {len(levels)} grey level"):
            load_dataset(folder)


def test_masks_named_the_documented_way_are_ground_truth(ok_folder: Path):
    write(ok_folder / "ng", "ng0.png", synthetic_roi(40, 30, 7, defect=(20, 15, 4)))
    write(ok_folder / "ng", "ng0_mask.png", np.zeros((30, 40), np.uint8))
    dataset = load_dataset(ok_folder)
    assert len(dataset.ok) == 4 and [s.mask.name for s in dataset.ng] == ["ng0_mask.png"]


# ---- which samples the memory was fitted on -----------------------------------------------------
def test_a_fit_is_recognised_by_content_after_the_folder_is_renamed(ok_folder: Path, tmp_path: Path):
    dataset = load_dataset(ok_folder)
    fit, held_out = split_holdout(dataset.ok, 0.5, seed=1)
    provenance = json.loads(json.dumps(fit_provenance(dataset.root, fit, held_out, 0.5, 1)))  # as stored
    assert len(provenance["fit_sha256"]) == 2 and provenance["fit_files"][0].startswith("ok/")

    moved = tmp_path / "renamed"
    (moved / "ok").mkdir(parents=True)
    for n, sample in enumerate(dataset.ok):  # new folder, new file names, same images
        shutil.copy(sample.path, moved / "ok" / f"part_{n}.png")
    renamed = load_dataset(moved)
    split = split_seen(renamed.ok, renamed.root, provenance)
    assert split.matched_by == "sha256"
    fitted_names = {f"part_{dataset.ok.index(sample)}.png" for sample in fit}
    assert {s.path.name for s in split.fitted} == fitted_names and len(split.unseen) == 2
    assert "2 of the 4 OK samples were used to fit" in split.describe() and "sha256" in split.describe()

    # A version fitted before sha256s were recorded: names under the dataset root, which renaming files defeats.
    old = {key: value for key, value in provenance.items() if not key.endswith("_sha256")}
    assert [s.path for s in split_seen(dataset.ok, dataset.root, old).fitted] == sorted(s.path for s in fit)
    assert split_seen(renamed.ok, renamed.root, old).fitted == []
    assert "by file name" in split_seen(dataset.ok, dataset.root, old).describe()

    unknown = split_seen(dataset.ok, dataset.root, {})  # an HTTP fit records nothing
    assert unknown.matched_by is None and unknown.unseen == dataset.ok and "unknown" in unknown.describe()


# ---- the mm/px rule --------------------------------------------------------------------------------
def sample(mm_per_px: float | None) -> Sample:
    return Sample(Path("x.png"), "ok", mm_per_px, None, None, None, None)


def test_mm_per_px_sidecar_then_option_then_model_then_default():
    with_sidecar, without = sample(0.05), sample(None)
    recorded = {"recorded": 0.1, "recorded_from": "the active calibration"}
    assert MmPerPx(0.3, **recorded).value(with_sidecar) == 0.05
    assert MmPerPx(0.3, **recorded).value(without) == 0.3
    assert MmPerPx(None, **recorded).value(without) == 0.1
    assert MmPerPx().value(without) == DEFAULT_MM_PER_PX == 0.2
    rule = MmPerPx(None, **recorded)
    assert rule.common([with_sidecar, without, without]) == 0.1 and rule.common([]) == 0.1
    text = rule.describe([with_sidecar, without, without])
    assert text == ("mm/px: 0.05 from the sidecars (1 sample(s)); 0.1 (recorded with the model: the active "
                    "calibration) for the 2 without a sidecar value")
    assert MmPerPx(0.3).describe([with_sidecar]) == "mm/px: 0.05 from the sidecars (1 sample(s))"
    assert "0.2 (the default" in MmPerPx().describe([without])
