"""A synthetic defect at a known spot of a non-square ROI is found where it is."""

from __future__ import annotations

import base64

import numpy as np

from tests.support import decode_png, fit, infer, synthetic_roi

ROLE, ROI = "Inspection", "rect-roi"
WIDTH, HEIGHT = 200, 110  # non-square: the letterbox pads top and bottom
DEFECT = (150, 75, 9)  # x, y, half size


def test_defect_region_lines_up_with_the_defect_on_a_non_square_roi(client):
    assert fit(client, ROLE, ROI, [synthetic_roi(WIDTH, HEIGHT, seed) for seed in range(4)]).status_code == 200
    ok_scores = [infer(client, ROLE, ROI, synthetic_roi(WIDTH, HEIGHT, seed)).json()["score"] for seed in range(20, 24)]
    client.post("/calibrate_ng", json={"role_id": ROLE, "roi_id": ROI, "ok_scores": ok_scores, "area_mm2_thr": 0.5})

    body = infer(client, ROLE, ROI, synthetic_roi(WIDTH, HEIGHT, seed=30, defect=DEFECT), mm_per_px="0.1").json()
    assert body["decision"] == "ng" and body["score"] > max(ok_scores)
    assert body["regions"], body
    largest = body["regions"][0]
    x, y, w, h = largest["bbox"]
    assert [largest["x"], largest["y"], largest["w"], largest["h"]] == [x, y, w, h]
    assert x <= DEFECT[0] <= x + w and y <= DEFECT[1] <= y + h
    assert largest["area_mm2"] == largest["area_px"] * 0.1**2
    areas = [region["area_px"] for region in body["regions"]]
    assert areas == sorted(areas, reverse=True)

    heatmap = decode_png(base64.b64decode(body["heatmap_png_base64"]))
    hottest_y, hottest_x = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    assert abs(hottest_x - DEFECT[0]) <= 20 and abs(hottest_y - DEFECT[1]) <= 20
