"""Square ROIs score exactly as the old backend did: /infer against a straight re-implementation of its
map and score (DESIGN.md, "Anomaly map and score"), written here and not imported from the service."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from tests.support import fit, infer, synthetic_roi

ROLE, ROI = "Inspection", "square"
SIDE = 280  # the ROIs; at input 224 the grid is 16x16 and nothing is padded
SHAPES = {
    "rect": {"kind": "rect", "x": 30, "y": 50, "w": 200, "h": 170},
    "circle": {"kind": "circle", "cx": 140, "cy": 140, "r": 130},
    "annulus": {"kind": "annulus", "cx": 140, "cy": 140, "r": 135, "r_inner": 60},
}


def old_mask(shape: dict, width: int, height: int) -> np.ndarray:
    """The contract's shapes, pixel centres at (j + 0.5, i + 0.5)."""
    xx, yy = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    if shape["kind"] == "rect":
        return (xx >= shape["x"]) & (xx < shape["x"] + shape["w"]) & (yy >= shape["y"]) & (yy < shape["y"] + shape["h"])
    d2 = (xx - shape["cx"]) ** 2 + (yy - shape["cy"]) ** 2
    return (d2 <= shape["r"] ** 2) & (d2 >= shape.get("r_inner", 0) ** 2)


def old_score(features: np.ndarray, memory: np.ndarray, grid: tuple[int, int], width: int, height: int,
              mask: np.ndarray, percentile: float = 99) -> float:
    """Nearest memory distance per token → grid map → cv2.resize straight to W×H (bilinear) → Gaussian blur
    σ=1, 7×7 → percentile inside the mask."""
    f, m = features.astype(np.float64), memory.astype(np.float64)
    squared = (f**2).sum(1)[:, None] + (m**2).sum(1)[None, :] - 2 * f @ m.T
    distances = np.sqrt(np.maximum(squared.min(axis=1), 0)).astype(np.float32)
    amap = cv2.resize(distances.reshape(grid), (width, height), interpolation=cv2.INTER_LINEAR)
    amap = cv2.GaussianBlur(amap, (7, 7), 1)
    return float(np.percentile(amap[mask], percentile))


def test_square_rois_score_as_the_old_backend(client):
    assert fit(client, ROLE, ROI, [synthetic_roi(SIDE, SIDE, seed) for seed in range(2)], memory_fit="true").status_code == 200
    service = client.app.state.service
    with np.load(service.settings.models_dir / ROLE / ROI / "memory.npz") as stored:
        memory = stored["emb"]
    probes = [synthetic_roi(SIDE, SIDE, 7), synthetic_roi(SIDE, SIDE, 8, defect=(90, 200, 8))]
    for probe in probes:
        features = service.extractor.extract([probe])[0]
        for name, shape in SHAPES.items():
            body = infer(client, ROLE, ROI, probe, shape=json.dumps(shape)).json()
            expected = old_score(features, memory, service.extractor.grid, SIDE, SIDE, old_mask(shape, SIDE, SIDE))
            assert body["score"] == pytest.approx(expected, rel=1e-6, abs=0), name
