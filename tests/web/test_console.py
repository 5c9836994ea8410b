"""The quality engineer's console (/console/): its pages over real records, the cached images, the error pages,
and a click-through in headless Chromium against a live uvicorn server (Debian's chromium + chromium-driver;
skipped without them only outside CI)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import uvicorn

from service.core import Upload
from tests.support import fit, free_port, infer, png_bytes, synthetic_roi

ROLE, ROI = "Master1", "inspection-1"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "tools" / "demo"


def _with_records(client, n: int = 6) -> list[dict]:
    """A fitted, calibrated model and ``n`` recorded inspections (every image kept), newest first."""
    assert fit(client, ROLE, ROI, [synthetic_roi(96, 96, seed) for seed in range(3)]).status_code == 200
    service = client.app.state.service
    images = [synthetic_roi(96, 96, 10 + i, defect=(48, 48, 12) if i % 2 == 0 else None) for i in range(n)]
    ok = [infer(client, ROLE, ROI, synthetic_roi(96, 96, 50 + i)).json()["score"] for i in range(3)]
    ng = [service.infer(ROLE, ROI, 0.2, Upload("d.png", png_bytes(image)))["score"] for image in images[::2]]
    assert client.post("/calibrate_ng", json={"role_id": ROLE, "roi_id": ROI, "ok_scores": ok, "ng_scores": ng,
                                              "area_mm2_thr": 0.01}).status_code == 200
    for i, image in enumerate(images):
        response = infer(client, ROLE, ROI, image, part_id=f"DMC-{i}")
        assert response.status_code == 200, response.text
    assert service.recorder.flush(30)
    items = client.get("/inspections", params={"limit": 100}).json()["items"]
    assert len(items) == n + 3
    return items


def test_pages_show_the_records_and_the_models(make_client):
    client = make_client(BDI_RECORD_IMAGES="all")
    items = _with_records(client)
    overview = client.get("/console/")
    assert overview.status_code == 200 and "text/html" in overview.headers["content-type"]
    assert f'href="/console/models/default/{ROLE}/{ROI}"' in overview.text
    assert "not available yet" in overview.text  # review and shadow columns, until those capabilities land

    listing = client.get("/console/inspections", params={"part": "DMC-3"})
    assert listing.status_code == 200
    shown = [item for item in items if item["id"] in listing.text]
    assert [item["part_id"] for item in shown] == ["DMC-3"]

    ng = next(item for item in items if item["decision"] == "ng")
    detail = client.get(f"/console/inspections/{ng['id']}")
    assert detail.status_code == 200
    assert f"{ng['score']:.4f}" in detail.text and "NG" in detail.text and ng["part_id"] in detail.text

    model = client.get(f"/console/models/default/{ROLE}/{ROI}")
    assert model.status_code == 200
    assert model.text.count("<svg") == 2  # the calibration's OK/NG scores, the scores over time
    assert "threshold" in model.text


def test_kept_images_are_served_once_and_then_from_the_cache(make_client):
    client = make_client(BDI_RECORD_IMAGES="all")
    record = _with_records(client, 1)[0]
    for kind in ("image", "thumb.png", "overlay.png"):
        first = client.get(f"/console/inspections/{record['id']}/{kind}")
        assert first.status_code == 200, kind
        assert "immutable" in first.headers["cache-control"] and first.headers["etag"]
        picture = cv2.imdecode(np.frombuffer(first.content, np.uint8), cv2.IMREAD_COLOR)
        assert picture.shape == (96, 96, 3)  # a thumbnail is never enlarged
        again = client.get(f"/console/inspections/{record['id']}/{kind}", headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304 and again.content == b""


def test_an_unknown_record_or_model_is_a_page_with_a_sentence_and_a_way_back(make_client):
    client = make_client()
    for path in ("/console/inspections/" + "0" * 32, f"/console/models/default/{ROLE}/nowhere"):
        response = client.get(path)
        assert response.status_code == 404 and "text/html" in response.headers["content-type"]
        assert "There is no" in response.text and 'href="/console/"' in response.text
    bad = client.get("/console/inspections", params={"since": "yesterday-ish"})
    assert bad.status_code == 400 and "since must be" in bad.text and 'href="/console/"' in bad.text
    malformed = client.get("/console/inspections/not-an-id")
    assert malformed.status_code == 400 and "not an inspection record id" in malformed.text


# ---- in a real browser -------------------------------------------------------------------------------------------
def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture
def browser():
    found = _chromium()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but chromium and chromium-driver are missing: .ci/run installs them (apt-get).")
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium "
                    "chromium-driver); CI runs this test.")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


@pytest.fixture
def live(make_client):
    """The app of a test client served by uvicorn on a free loopback port, in a thread."""
    client = make_client(BDI_RECORD_IMAGES="all")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(client.app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield client, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_click_through_overview_model_list_and_one_inspection(live, browser, tmp_path):
    from selenium.webdriver.common.by import By

    client, base = live
    items = _with_records(client)
    browser.get(base + "/console/")
    assert "Models" in browser.find_element(By.TAG_NAME, "h1").text
    browser.find_element(By.CSS_SELECTOR, "a.model-link").click()
    assert f"{ROLE} / {ROI}" in browser.find_element(By.TAG_NAME, "h1").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.plot")) == 2
    assert browser.find_element(By.ID, "actions-not-available").is_displayed()
    browser.save_screenshot(str(tmp_path / "console-model.png"))

    browser.find_element(By.ID, "model-inspections").click()
    rows = browser.find_elements(By.CSS_SELECTOR, "#records tbody tr")
    assert len(rows) == len(items)
    first_thumb = browser.find_element(By.CSS_SELECTOR, "img.thumb")  # lazy: those in view load
    deadline = time.monotonic() + 5
    while not browser.execute_script("return arguments[0].naturalWidth", first_thumb) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert browser.execute_script("return arguments[0].naturalWidth", first_thumb) == 96
    browser.find_elements(By.CSS_SELECTOR, "a.record-link")[0].click()
    assert items[0]["id"] in browser.find_element(By.TAG_NAME, "h1").text
    overlay = browser.find_element(By.ID, "overlay")
    assert browser.execute_script("return arguments[0].naturalWidth", overlay) == 96
    browser.save_screenshot(str(tmp_path / "console-inspection.png"))

    browser.find_element(By.TAG_NAME, "body").send_keys("j")  # the next record of the list
    deadline = time.monotonic() + 5
    while items[1]["id"] not in browser.find_element(By.TAG_NAME, "h1").text and time.monotonic() < deadline:
        time.sleep(0.1)
    assert items[1]["id"] in browser.find_element(By.TAG_NAME, "h1").text
    browser.find_element(By.TAG_NAME, "body").send_keys("k")
    deadline = time.monotonic() + 5
    while items[0]["id"] not in browser.find_element(By.TAG_NAME, "h1").text and time.monotonic() < deadline:
        time.sleep(0.1)
    assert items[0]["id"] in browser.find_element(By.TAG_NAME, "h1").text

    browser.find_element(By.LINK_TEXT, "Review queue").click()
    assert "not available" in browser.find_element(By.ID, "not-available").text
    browser.get(base + "/console/inspections/" + "f" * 32)
    assert "There is no inspection record" in browser.find_element(By.ID, "error-sentence").text
    browser.find_element(By.ID, "back-to-overview").click()
    assert "Models" in browser.find_element(By.TAG_NAME, "h1").text
    if os.environ.get("BDI_CONSOLE_SCREENSHOTS"):  # tools/demo's pictures: BDI_CONSOLE_SCREENSHOTS=1 pytest ...
        for name in ("console-model.png", "console-inspection.png"):
            shutil.copyfile(tmp_path / name, SCREENSHOTS / name)
