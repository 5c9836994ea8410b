"""tools/synth.py: seeded, byte-identical output in the GUI's layout, with valid sidecars and masks."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from service.pipeline.masks import parse_shape, shape_mask
from service.quality.datasets import load_dataset
from tools import synth

SIZE = 64


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synth.write_dataset(out, seed=0, n_ok=2, n_ng=6, size=SIZE)
    return out


def test_same_seed_gives_identical_bytes_and_another_seed_other_images(dataset: Path, tmp_path: Path):
    synth.write_dataset(tmp_path / "again", seed=0, n_ok=2, n_ng=6, size=SIZE)
    synth.write_dataset(tmp_path / "other", seed=1, n_ok=2, n_ng=6, size=SIZE)
    first, again, other = tree(dataset), tree(tmp_path / "again"), tree(tmp_path / "other")
    assert first == again
    assert other.keys() == first.keys()
    pngs = [name for name in first if name.endswith(".png")]
    assert pngs and all(other[name] != first[name] for name in pngs)


def test_more_samples_leave_the_earlier_ones_unchanged(dataset: Path, tmp_path: Path):
    synth.write_dataset(tmp_path, seed=0, n_ok=3, n_ng=7, size=SIZE, roi_kinds=("rect",))
    for name in ("ok/ok_001.png", "ng/ng_005.png", "ng/ng_005_mask.png"):
        assert (tmp_path / "Inspection/rect" / name).read_bytes() == (dataset / "Inspection/rect" / name).read_bytes()


@pytest.mark.parametrize("kind", synth.ROI_KINDS)
def test_layout_sidecars_and_masks(dataset: Path, kind: str):
    folder = dataset / synth.DEFAULT_ROLE / kind
    loaded = load_dataset(folder)
    assert (len(loaded.ok), len(loaded.ng), loaded.skipped) == (2, 6, [])
    defects = set()
    for sample in loaded.ok + loaded.ng:
        sidecar = json.loads(sample.path.with_suffix(".json").read_text(encoding="utf-8"))
        assert (sidecar["role_id"], sidecar["roi_id"]) == (synth.DEFAULT_ROLE, kind)
        assert isinstance(sidecar["shape_json"], str) and sidecar["mm_per_px"] > 0
        shape = parse_shape(sidecar["shape_json"])
        assert shape is not None and shape.kind == kind
        image = cv2.imread(str(sample.path), cv2.IMREAD_UNCHANGED)
        assert image.dtype == np.uint8 and image.ndim == 3
        height, width = image.shape[:2]
        assert (width, height) == ((SIZE, SIZE) if kind == "annulus" else (SIZE, SIZE // 2))
        roi = shape_mask(shape, width, height)
        if sample.label == "ok":
            assert sample.mask is None and "defect" not in sidecar
            continue
        defects.add(sidecar["defect"])
        mask = cv2.imread(str(sample.mask), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (height, width) and mask.dtype == np.uint8
        assert set(np.unique(mask)) == {0, 255}
        assert (mask[roi] > 0).any(), f"{sample.path.name}: the {sidecar['defect']} lies outside the ROI"
    assert defects == set(synth.defects_for(kind))


def test_defects_change_the_image_where_the_mask_says():
    for kind in synth.ROI_KINDS:
        for index, defect in enumerate(synth.defects_for(kind)):
            sample = synth.make_sample(kind, 96, seed=3, index=index, defect=defect)
            grey = cv2.cvtColor(sample.image, cv2.COLOR_BGR2GRAY).astype(np.float32)
            local = cv2.GaussianBlur(grey, (0, 0), 3)
            inside = np.abs(grey - local)[sample.mask > 0].mean()
            assert sample.mask.any() and inside > 4, (kind, defect, inside)


def test_severity_grows_the_defect():
    small = synth.make_sample("rect", 128, seed=0, index=0, defect="paint_spot", severity=1.0)
    large = synth.make_sample("rect", 128, seed=0, index=0, defect="paint_spot", severity=2.0)
    assert (large.mask > 0).sum() > 2 * (small.mask > 0).sum()


def test_cli_writes_one_roi_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    args = [str(tmp_path), "--seed", "4", "--n-ok", "1", "--n-ng", "1", "--size", "48", "--roi-kind", "rect"]
    assert synth.main(args) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / synth.DEFAULT_ROLE / "rect")
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.*")) == [
        "Inspection/rect/ng/ng_000.json", "Inspection/rect/ng/ng_000.png", "Inspection/rect/ng/ng_000_mask.png",
        "Inspection/rect/ok/ok_000.json", "Inspection/rect/ok/ok_000.png",
    ]


def test_refuses_what_it_cannot_draw():
    with pytest.raises(ValueError, match="roi kind"):
        synth.make_sample("circle", 64, 0, 0)
    with pytest.raises(ValueError, match="missing_paint"):
        synth.make_sample("rect", 64, 0, 0, "missing_paint")
    with pytest.raises(ValueError, match="severity"):
        synth.make_sample("rect", 64, 0, 0, "dent", severity=0)
