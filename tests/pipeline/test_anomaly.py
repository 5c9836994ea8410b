"""Anomaly map alignment (letterbox padding removed), score, heatmap PNG and regions."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from service.pipeline.anomaly import anomaly_map, find_regions, heatmap_png, image_score
from service.pipeline.letterbox import Letterbox

CANVAS = 224
GRID = CANVAS // 14


def hot_token_map(width: int, height: int, row: int, col: int) -> tuple[np.ndarray, Letterbox]:
    letterbox = Letterbox.fit(width, height, CANVAS)
    distances = np.zeros(GRID * GRID, dtype=np.float32)
    distances[row * GRID + col] = 1.0
    return anomaly_map(distances, (GRID, GRID), letterbox), letterbox


@pytest.mark.parametrize(("width", "height"), [(300, 200), (200, 300), (128, 128)])
@pytest.mark.parametrize(("row", "col"), [(5, 10), (8, 3), (7, 7)])
def test_hot_token_lands_where_its_patch_was_in_the_image(width: int, height: int, row: int, col: int) -> None:
    amap, letterbox = hot_token_map(width, height, row, col)
    assert amap.shape == (height, width) and amap.dtype == np.float32
    # the token's centre on the canvas, mapped back through the paste box to image coordinates
    expected_x = ((col + 0.5) * 14 - letterbox.x0) * width / letterbox.width
    expected_y = ((row + 0.5) * 14 - letterbox.y0) * height / letterbox.height
    peak_y, peak_x = np.unravel_index(np.argmax(amap), amap.shape)
    assert abs(peak_x + 0.5 - expected_x) <= 1.5
    assert abs(peak_y + 0.5 - expected_y) <= 1.5


def test_padding_is_cut_out_not_stretched_over_the_image() -> None:
    # 300x200 on 224: pasted at y0=37, so token row 0 (canvas rows 0..13) is pure padding
    amap, letterbox = hot_token_map(300, 200, 0, 8)
    assert letterbox.y0 == 37
    assert amap.max() == 0.0
    # the old stretch put token row 5 at y = 77 * 200/224 = 68.75; the patch really is at y = 53.7
    amap, _ = hot_token_map(300, 200, 5, 10)
    assert abs(np.unravel_index(np.argmax(amap), amap.shape)[0] + 0.5 - 53.7) <= 1.5


def test_flat_distances_give_a_flat_map() -> None:
    distances = np.full(GRID * GRID, 0.3, dtype=np.float32)
    amap = anomaly_map(distances, (GRID, GRID), Letterbox.fit(97, 61, CANVAS))
    assert amap.shape == (61, 97)
    np.testing.assert_allclose(amap, 0.3, rtol=1e-6)


def test_image_score_is_the_percentile_inside_the_mask() -> None:
    amap = np.arange(100, dtype=np.float32).reshape(10, 10)
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:4, :] = True  # values 20..39
    assert image_score(amap, mask, 50) == pytest.approx(29.5)
    assert image_score(amap, mask, 99) == pytest.approx(np.percentile(np.arange(20, 40), 99))
    assert isinstance(image_score(amap, mask, 99), float)
    with pytest.raises(ValueError):
        image_score(amap, np.zeros((10, 10), dtype=bool), 99)


def decode(png: bytes) -> np.ndarray:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)


def test_heatmap_png_is_single_channel_image_sized_and_zero_outside_the_mask() -> None:
    amap = np.random.default_rng(0).random((120, 170), dtype=np.float32)
    mask = np.zeros(amap.shape, dtype=bool)
    mask[10:100, 20:150] = True
    image = decode(heatmap_png(amap, mask))
    assert image.shape == (120, 170) and image.dtype == np.uint8
    assert not image[~mask].any()
    assert image[mask].min() == 0 and image[mask].max() == 255
    # p1..p99 inside the mask spans the range: about 1 % of pixels saturate at each end
    assert 0.005 < np.mean(image[mask] == 255) < 0.02


def test_heatmap_of_a_flat_map_is_all_zero() -> None:
    amap = np.full((40, 30), 0.7, dtype=np.float32)
    image = decode(heatmap_png(amap, np.ones(amap.shape, dtype=bool)))
    assert image.shape == (40, 30) and not image.any()


def blob_map() -> np.ndarray:
    amap = np.zeros((100, 150), dtype=np.float32)
    amap[40:50, 30:50] = 1.0  # 200 px
    amap[80:83, 100:103] = 0.9  # 9 px
    amap[10, 120:140] = 0.8  # a 1-px line, 20 px
    return amap


def test_regions_of_synthetic_blobs() -> None:
    mask = np.ones((100, 150), dtype=bool)
    regions = find_regions(blob_map(), mask, threshold=0.5, mm_per_px=0.5, area_mm2_thr=1.0)
    assert [r["area_px"] for r in regions] == [200.0, 20.0, 9.0]  # largest first
    big, line, small = regions
    assert list(big) == ["bbox", "x", "y", "w", "h", "area_px", "area_mm2", "contour"]
    assert big["bbox"] == [30, 40, 20, 10] and (big["x"], big["y"], big["w"], big["h"]) == (30, 40, 20, 10)
    assert big["area_mm2"] == pytest.approx(50.0)
    assert line["bbox"] == [120, 10, 20, 1] and line["area_mm2"] == pytest.approx(5.0)
    assert small["area_mm2"] == pytest.approx(2.25)
    for region in regions:
        x, y, w, h = region["bbox"]
        points = np.array(region["contour"])
        assert len(points) >= 2
        assert (points[:, 0] >= x).all() and (points[:, 0] < x + w).all()
        assert (points[:, 1] >= y).all() and (points[:, 1] < y + h).all()
    assert sorted(map(tuple, big["contour"])) == [(30, 40), (30, 49), (49, 40), (49, 49)]


def test_regions_are_plain_json_types() -> None:
    regions = find_regions(blob_map(), np.ones((100, 150), dtype=bool), 0.5, 0.5, 0.0)
    assert json.loads(json.dumps(regions)) == regions
    for region in regions:
        assert all(type(v) is int for v in region["bbox"] + [region[k] for k in "xywh"])
        assert all(type(v) is int for point in region["contour"] for v in point)
        assert type(region["area_px"]) is float and type(region["area_mm2"]) is float


def test_area_threshold_in_mm2_drops_small_regions() -> None:
    mask = np.ones((100, 150), dtype=bool)
    assert [r["area_px"] for r in find_regions(blob_map(), mask, 0.5, 0.5, 5.0)] == [200.0, 20.0]
    assert [r["area_px"] for r in find_regions(blob_map(), mask, 0.5, 0.5, 5.01)] == [200.0]
    # mm_per_px scales the area: at 0.1 mm/px the 200 px blob is 2 mm2
    assert find_regions(blob_map(), mask, 0.5, 0.1, 2.5) == []


def test_regions_respect_threshold_mask_and_8_connectivity() -> None:
    amap = blob_map()
    mask = np.ones(amap.shape, dtype=bool)
    assert [r["area_px"] for r in find_regions(amap, mask, 0.95, 1.0, 0.0)] == [200.0]
    mask[:, 40:] = False  # keeps the left half of the big blob only
    assert [r["bbox"] for r in find_regions(amap, mask, 0.5, 1.0, 0.0)] == [[30, 40, 10, 10]]
    diagonal = np.zeros((20, 20), dtype=np.float32)
    diagonal[np.arange(5, 10), np.arange(5, 10)] = 1.0
    (region,) = find_regions(diagonal, np.ones((20, 20), dtype=bool), 0.5, 1.0, 0.0)
    assert region["bbox"] == [5, 5, 5, 5] and region["area_px"] == 5.0


def test_mask_must_match_the_map() -> None:
    with pytest.raises(ValueError):
        find_regions(blob_map(), np.ones((10, 10), dtype=bool), 0.5, 1.0, 0.0)


@pytest.mark.parametrize("side", [280, 97, 16])
def test_square_map_is_the_old_backends_single_resize_bit_for_bit(side: int) -> None:
    distances = np.random.default_rng(side).random(GRID * GRID, dtype=np.float32)
    amap = anomaly_map(distances, (GRID, GRID), Letterbox.fit(side, side, CANVAS))
    old = cv2.resize(distances.reshape(GRID, GRID), (side, side), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(amap, cv2.GaussianBlur(old, (7, 7), 1))


def test_non_square_map_resamples_only_the_covered_tokens_once() -> None:
    # 448x224 on 224: pasted at y0=56 with height 112, i.e. exactly token rows 4..11, so away from the
    # top and bottom edges the map is cv2's single resize of those rows (the old two resamples blur more)
    distances = np.random.default_rng(1).random(GRID * GRID, dtype=np.float32)
    letterbox = Letterbox.fit(448, 224, CANVAS)
    assert (letterbox.y0, letterbox.height) == (56, 112)
    amap = anomaly_map(distances, (GRID, GRID), letterbox)
    covered = distances.reshape(GRID, GRID)[4:12]
    once = cv2.GaussianBlur(cv2.resize(covered, (448, 224), interpolation=cv2.INTER_LINEAR), (7, 7), 1)
    inner = slice(20, -20)  # rows whose interpolation and blur stay inside rows 4..11
    np.testing.assert_allclose(amap[inner], once[inner], rtol=1e-5, atol=1e-6)
