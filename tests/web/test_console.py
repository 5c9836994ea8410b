"""The quality engineer's console (/console/): its pages over real records, the cached images, the error pages,
reviewing and the model's actions through forms (CSRF-checked), logging in with a key (a signed session cookie),
and click-throughs in headless Chromium against a live uvicorn server (Debian's chromium + chromium-driver;
skipped without them only outside CI)."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import unquote

import cv2
import numpy as np
import pytest
import uvicorn

from service.core import Upload
from service.storage.audit import AuditEvent, AuditFilter
from service.web.console.controller import model_href
from service.web.console.overlay import REGION_COLOUR, overlay_png
from service.web.console.session import COOKIE, SECRET_FILE
from tests.support import fit, free_port, infer, make_record, png_bytes, synthetic_roi

ROLE, ROI = "Master1", "inspection-1"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "tools" / "demo"
ADMIN_EVENT = AuditEvent("key_add", actor="test")


def _with_records(client, n: int = 6, role: str = ROLE) -> list[dict]:
    """A fitted, calibrated model and ``n`` recorded inspections (every image kept), newest first."""
    assert fit(client, role, ROI, [synthetic_roi(96, 96, seed) for seed in range(3)]).status_code == 200
    service = client.app.state.service
    images = [synthetic_roi(96, 96, 10 + i, defect=(48, 48, 12) if i % 2 == 0 else None) for i in range(n)]
    ok = [infer(client, role, ROI, synthetic_roi(96, 96, 50 + i)).json()["score"] for i in range(3)]
    ng = [service.infer(role, ROI, 0.2, Upload("d.png", png_bytes(image)))["score"] for image in images[::2]]
    assert client.post("/calibrate_ng", json={"role_id": role, "roi_id": ROI, "ok_scores": ok, "ng_scores": ng,
                                              "area_mm2_thr": 0.01}).status_code == 200
    for i, image in enumerate(images):
        response = infer(client, role, ROI, image, part_id=f"DMC-{i}")
        assert response.status_code == 200, response.text
    assert service.recorder.flush(30)
    items = client.get("/inspections", params={"limit": 100, "role_id": role}).json()["items"]
    assert len(items) == n + 3
    return items


def _console(make_client, *args, **env):
    """A test client that shows the console's redirects (303 after a form, to the login page) instead of following."""
    client = make_client(*args, **env)
    client.follow_redirects = False
    return client


def _csrf(page_text: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page_text).group(1)


def _audit(client) -> list[tuple[str, str | None]]:
    rows, _ = client.app.state.service.registry.audit_log.page(AuditFilter(), 20)
    return [(row.action, row.actor) for row in rows]


def test_pages_show_the_records_and_the_models(make_client):
    client = make_client(BDI_RECORD_IMAGES="all")
    items = _with_records(client)
    overview = client.get("/console/")
    assert overview.status_code == 200 and "text/html" in overview.headers["content-type"]
    assert f'href="/console/model?recipe=default&amp;role={ROLE}&amp;roi={ROI}"' in overview.text
    pending = re.search(r'<td class="pending"><a href="[^"]+">(\d+)</a>', overview.text)
    calibrated = [item for item in items if item["threshold"] is not None]  # the queue ranks by the threshold
    assert pending and int(pending.group(1)) == len(calibrated)

    listing = client.get("/console/inspections", params={"part": "DMC-3"})
    assert listing.status_code == 200
    shown = [item for item in items if item["id"] in listing.text]
    assert [item["part_id"] for item in shown] == ["DMC-3"]

    ng = next(item for item in items if item["decision"] == "ng")
    detail = client.get(f"/console/inspections/{ng['id']}")
    assert detail.status_code == 200
    assert f"{ng['score']:.4f}" in detail.text and "NG" in detail.text and ng["part_id"] in detail.text
    assert 'data-verdict="ok"' in detail.text and "not reviewed" in detail.text

    model = client.get(model_href("default", ROLE, ROI))
    assert model.status_code == 200
    assert model.text.count("<svg") == 2  # the calibration's OK/NG scores, the scores over time
    assert 'class="status-active" data-version="1"' in model.text and 'id="learn"' in model.text


def test_a_role_id_with_a_slash_has_its_model_page(make_client):
    client = make_client(BDI_RECORD_IMAGES="all")
    _with_records(client, 1, role="line/3")
    overview = client.get("/console/")
    href = re.search(r'class="model-link" href="([^"]+)"', overview.text).group(1).replace("&amp;", "&")
    assert "role=line%2F3" in href
    model = client.get(href)
    assert model.status_code == 200 and "Model default / line/3 / inspection-1" in model.text


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


def test_the_overlay_outlines_each_recorded_region_where_it_is():
    """Records keep regions as boxes (x, y, w, h); the overlay drew none of them (it looked for contours) and
    stacked their labels in the top left corner."""
    record = make_record(dt.datetime.now(dt.timezone.utc), image_width=96, image_height=96, threshold=None,
                         regions=[{"x": 40, "y": 40, "w": 20, "h": 16, "area_px": 320.0, "area_mm2": 12.8}])
    grey = np.full((96, 96, 3), 128, np.uint8)
    drawn = cv2.imdecode(np.frombuffer(overlay_png(record, png_bytes(grey), png_bytes(grey[:, :, 0])), np.uint8),
                         cv2.IMREAD_COLOR)
    for x, y in ((40, 40), (59, 40), (40, 55), (59, 55), (50, 40)):  # corners and an edge of the box
        assert tuple(drawn[y, x]) == REGION_COLOUR, (x, y)
    assert tuple(drawn[48, 50]) != REGION_COLOUR  # inside the box: the heat map, not the outline


def test_an_unknown_record_or_model_is_a_page_with_a_sentence_and_a_way_back(make_client):
    client = make_client()
    for path in ("/console/inspections/" + "0" * 32, model_href("default", ROLE, "nowhere")):
        response = client.get(path)
        assert response.status_code == 404 and "text/html" in response.headers["content-type"]
        assert "There is no" in response.text and 'href="/console/"' in response.text
    bad = client.get("/console/inspections", params={"since": "yesterday-ish"})
    assert bad.status_code == 400 and "since must be" in bad.text and 'href="/console/"' in bad.text
    malformed = client.get("/console/inspections/not-an-id")
    assert malformed.status_code == 400 and "not an inspection record id" in malformed.text
    outcome = client.get("/console/inspections", params={"outcome": "maybe"})
    assert outcome.status_code == 400 and "false_reject" in outcome.text


def test_reviews_learn_and_activate_through_the_forms_need_the_sessions_csrf_token(make_client):
    client = _console(make_client, BDI_RECORD_IMAGES="all")
    items = _with_records(client)
    ng = next(item for item in items if item["decision"] == "ng")
    page = client.get(f"/console/inspections/{ng['id']}")
    form = {"verdict": "ok", "note": "a stain, not a crack", "next": f"/console/inspections/{ng['id']}"}
    forged = client.post(f"/console/inspections/{ng['id']}/review", data=form)
    assert forged.status_code == 403 and "CSRF token" in forged.text
    assert client.get("/inspections", params={"review": "reviewed"}).json()["items"] == []  # nothing half-done

    answer = client.post(f"/console/inspections/{ng['id']}/review", data={**form, "csrf": _csrf(page.text)})
    assert answer.status_code == 303 and answer.headers["location"] == f"/console/inspections/{ng['id']}"
    shown = client.get(answer.headers["location"])
    assert "false reject" in shown.text and "a stain" not in shown.text  # the note stays in the history
    assert client.get(f"/inspections/{ng['id']}/reviews").json()["items"][0]["note"] == "a stain, not a crack"
    filtered = client.get("/console/inspections", params={"outcome": "false_reject"})
    assert ng["id"] in filtered.text and sum(item["id"] in filtered.text for item in items) == 1
    pending = client.get("/console/inspections", params={"review": "pending"})
    assert ng["id"] not in pending.text and sum(item["id"] in pending.text for item in items) == len(items) - 1

    token = _csrf(client.get(model_href("default", ROLE, ROI)).text)
    ids = {"recipe": "default", "role": ROLE, "roi": ROI, "csrf": token}
    learned = client.post("/console/model/learn", data=ids)
    assert learned.status_code == 303
    model = client.get(learned.headers["location"])
    assert "version 2 is staged" in model.text and 'class="status-staged" data-version="2"' in model.text
    again = client.post("/console/model/learn", data=ids)  # nothing left to learn: the service's sentence
    assert again.status_code == 409 and "false reject" in again.text and 'href="/console/"' in again.text

    activated = client.post("/console/model/activate", data={**ids, "version": "2"})
    assert "Version 2 is active now" in client.get(activated.headers["location"]).text
    rolled_back = client.get(client.post("/console/model/activate", data={**ids, "version": "1"}).headers["location"])
    assert 'class="status-retired" data-version="2"' in rolled_back.text and "Roll back to it" in rolled_back.text
    assert [action for action, _ in _audit(client)][:4] == ["activate", "activate", "learn", "review"]


def test_shadow_start_and_stop_and_a_replay_with_its_flips(make_client):
    client = _console(make_client, BDI_RECORD_IMAGES="all")
    items = _with_records(client)
    assert fit(client, ROLE, ROI, [synthetic_roi(96, 96, 70 + seed) for seed in range(3)], activate="false",
               append="true").status_code == 200
    token = _csrf(client.get(model_href("default", ROLE, ROI)).text)
    ids = {"recipe": "default", "role": ROLE, "roi": ROI, "csrf": token}
    started = client.post("/console/model/shadow", data={**ids, "version": "2"})
    assert "Version 2 scores the live traffic in shadow" in client.get(started.headers["location"]).text
    assert infer(client, ROLE, ROI, synthetic_roi(96, 96, 99)).status_code == 200
    assert client.app.state.service.recorder.flush(30)
    overview = client.get("/console/")
    assert re.search(r'<td class="shadow">v2: [0-9.]+ % <small>\([01]/1, ', overview.text), overview.text
    stopped = client.get(client.post("/console/model/shadow", data={**ids, "version": ""}).headers["location"])
    assert "Shadowing stopped" in stopped.text and "No version shadows" in stopped.text

    replay = client.post("/console/model/replay", data={**ids, "version": "2", "last": "50"})
    assert replay.status_code == 303 and replay.headers["location"].startswith("/console/jobs/")
    deadline = time.monotonic() + 60
    while (page := client.get(replay.headers["location"])).text.count('http-equiv="refresh"') \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert 'id="replay-summary"' in page.text and f"{len(items) + 1} records compared" in page.text
    assert 'id="flips"' in page.text or 'id="no-flips"' in page.text
    bad = client.post("/console/model/replay", data={**ids, "version": "9"})
    assert bad.status_code == 404 and "version" in bad.text


def test_with_keys_the_console_needs_a_login_and_a_revoked_key_ends_the_session(make_client, tmp_path):
    client = _console(make_client, BDI_RECORD_IMAGES="all")
    items = _with_records(client, 2)
    keys = client.app.state.service.registry.keys
    token = keys.add("quality-anna", "engineer", ADMIN_EVENT)
    inspector = keys.add("line-pc", "inspector", ADMIN_EVENT)

    sent_away = client.get("/console/inspections", params={"decision": "ng"})
    assert sent_away.status_code == 303
    assert unquote(sent_away.headers["location"]) == "/console/login?next=/console/inspections?decision=ng"
    assert client.get("/console/static/console.css").status_code == 200  # the login page's own assets
    assert client.post("/console/model/learn", data={"role": ROLE, "roi": ROI}).headers["location"].startswith(
        "/console/login")
    login = client.get("/console/login", params={"next": "/console/inspections"})
    assert login.status_code == 200 and 'type="password"' in login.text
    wrong = client.post("/console/login", data={"key": token + "x", "next": "/console/"})
    assert wrong.status_code == 401 and "not known to this service" in wrong.text
    elsewhere = client.post("/console/login", data={"key": token, "next": "https://evil.example/"})
    assert elsewhere.headers["location"] == "/console/"  # never sent to another site
    answer = client.post("/console/login", data={"key": token, "next": "/console/inspections"})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/inspections"
    set_cookie = answer.headers["set-cookie"]
    assert set_cookie.startswith(f"{COOKIE}=") and "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie
    assert token not in set_cookie

    listing = client.get("/console/inspections")
    assert listing.status_code == 200 and "quality-anna (engineer)" in listing.text
    record = items[0]
    review = client.post(f"/console/inspections/{record['id']}/review",
                         data={"verdict": "ng", "csrf": _csrf(listing.text)})
    assert review.status_code == 303
    assert _audit(client)[0] == ("review", "quality-anna")
    assert client.get("/inspections").status_code == 401  # the API never takes the cookie

    keys.revoke("quality-anna", ADMIN_EVENT)
    time.sleep(2.1)  # the key cache's lifetime
    assert client.get("/console/inspections").headers["location"].startswith("/console/login")

    client.post("/console/login", data={"key": inspector})
    too_low = client.get("/console/")
    assert too_low.status_code == 403 and "needs the role engineer" in too_low.text
    logged_out = client.post("/console/logout", data={})
    assert logged_out.status_code == 303 and logged_out.headers["location"] == "/console/login"
    assert client.get("/console/").headers["location"].startswith("/console/login")
    with_header = client.get("/console/", headers={"X-API-Key": keys.add("script", "admin", ADMIN_EVENT)})
    assert with_header.status_code == 200  # a key header still works (scripts, the roles test)


def test_the_session_secret_is_made_once_in_the_models_dir_and_shared_by_hosts(make_client, tmp_path):
    models = tmp_path / "shared-models"
    first = _console(make_client, models)
    token = first.app.state.service.registry.keys.add("anna", "engineer", ADMIN_EVENT)
    assert first.post("/console/login", data={"key": token}).status_code == 303
    secret = models / SECRET_FILE
    made = secret.read_text()
    assert secret.stat().st_mode & 0o777 == 0o600 and len(made) == 64
    second = _console(make_client, models)  # another host over the same models dir and registry
    second.cookies.set(COOKIE, first.cookies.get(COOKIE), path="/console")
    assert second.get("/console/").status_code == 200
    assert secret.read_text() == made  # read, not made again
    other = _console(make_client, models, BDI_SESSION_SECRET="another-secret-of-this-deployment")
    other.cookies.set(COOKIE, first.cookies.get(COOKIE), path="/console")
    assert other.get("/console/").status_code == 303  # not signed with its secret: log in again


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


def _wait_for(browser, condition, seconds: float = 10):
    """Poll ``condition(browser)`` until it is true (pages reload themselves, keys navigate: an element read
    while the next page loads is gone, which counts as not yet)."""
    from selenium.common.exceptions import WebDriverException

    def holds() -> bool:
        try:
            return bool(condition(browser))
        except WebDriverException:
            return False

    deadline = time.monotonic() + seconds
    while not holds() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert condition(browser)


def test_click_through_lists_review_learn_replay_and_activate(live, browser, tmp_path):
    from selenium.webdriver.common.by import By

    client, base = live
    items = _with_records(client)
    browser.get(base + "/console/")
    assert "Models" in browser.find_element(By.TAG_NAME, "h1").text
    calibrated = [item for item in items if item["threshold"] is not None]
    assert browser.find_element(By.CSS_SELECTOR, "td.pending").text == str(len(calibrated))
    browser.find_element(By.CSS_SELECTOR, "a.model-link").click()
    assert f"{ROLE} / {ROI}" in browser.find_element(By.TAG_NAME, "h1").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.plot")) == 2
    assert browser.find_element(By.CSS_SELECTOR, "tr.status-active td.status").text == "active"

    browser.find_element(By.ID, "model-inspections").click()
    rows = browser.find_elements(By.CSS_SELECTOR, "#records tbody tr")
    assert len(rows) == len(items)
    first_thumb = browser.find_element(By.CSS_SELECTOR, "img.thumb")  # lazy: those in view load
    _wait_for(browser, lambda b: b.execute_script("return arguments[0].naturalWidth", first_thumb))
    assert browser.execute_script("return arguments[0].naturalWidth", first_thumb) == 96
    browser.find_elements(By.CSS_SELECTOR, "a.record-link")[0].click()
    assert items[0]["id"] in browser.find_element(By.TAG_NAME, "h1").text
    browser.find_element(By.TAG_NAME, "body").send_keys("j")  # the next record of the list
    _wait_for(browser, lambda b: items[1]["id"] in b.find_element(By.TAG_NAME, "h1").text)
    browser.find_element(By.TAG_NAME, "body").send_keys("k")
    _wait_for(browser, lambda b: items[0]["id"] in b.find_element(By.TAG_NAME, "h1").text)

    # an NG part that is good: key o on its page makes it a false reject
    ng = next(item for item in items if item["decision"] == "ng")
    browser.get(base + "/console/inspections?decision=ng")
    browser.find_element(By.CSS_SELECTOR, f'a.record-link[href="/console/inspections/{ng["id"]}"]').click()
    overlay = browser.find_element(By.ID, "overlay")
    _wait_for(browser, lambda b: b.execute_script("return arguments[0].naturalWidth", overlay) == 96)
    browser.find_element(By.TAG_NAME, "body").send_keys("o")
    _wait_for(browser, lambda b: "false reject" in b.find_element(By.ID, "review").text)
    assert "model's scale" in browser.find_element(By.TAG_NAME, "figcaption").text
    browser.set_window_size(1400, 1500)  # the whole page: picture, facts, the review and its buttons
    browser.save_screenshot(str(tmp_path / "console-inspection.png"))
    browser.set_window_size(1400, 1000)

    # the queue: one record after another, NG pressed on the first shows the next
    browser.find_element(By.LINK_TEXT, "Review queue").click()
    first = browser.find_element(By.ID, "queue-record").text
    assert first != ng["id"] and first in {item["id"] for item in calibrated}
    browser.find_element(By.ID, "review-ng").click()
    _wait_for(browser, lambda b: b.find_element(By.ID, "queue-record").text not in (first, ng["id"]))

    # learn -> replay -> activate
    browser.find_element(By.LINK_TEXT, "Overview").click()
    browser.find_element(By.CSS_SELECTOR, "a.model-link").click()
    browser.find_element(By.ID, "learn").click()
    assert "version 2 is staged" in browser.find_element(By.ID, "done").text
    assert browser.find_element(By.CSS_SELECTOR, 'tr[data-version="2"] td.status').text == "staged"
    browser.find_element(By.ID, "replay-2").click()
    _wait_for(browser, lambda b: b.find_element(By.ID, "job-status").text.startswith(("done", "failed")), 60)
    summary = browser.find_element(By.ID, "replay-summary").text
    assert "records compared with version 1" in summary
    flips = browser.find_elements(By.CSS_SELECTOR, "a.flip-link")
    if flips:  # each flip opens its inspection
        href = flips[0].get_attribute("href")
        flips[0].click()
        assert href.rsplit("/", 1)[1] in browser.find_element(By.TAG_NAME, "h1").text
        browser.back()
    browser.find_element(By.ID, "activate-2").click()
    assert "Version 2 is active now" in browser.find_element(By.ID, "done").text
    assert browser.find_element(By.CSS_SELECTOR, 'tr[data-version="1"] td.status').text == "retired"
    assert browser.find_element(By.ID, "active-version").text == "2"
    browser.save_screenshot(str(tmp_path / "console-model.png"))
    assert [action for action, _ in _audit(client)][:3] == ["activate", "learn", "review"]

    browser.get(base + "/console/inspections/" + "f" * 32)
    assert "There is no inspection record" in browser.find_element(By.ID, "error-sentence").text
    browser.find_element(By.ID, "back-to-overview").click()
    assert "Models" in browser.find_element(By.TAG_NAME, "h1").text
    if os.environ.get("BDI_CONSOLE_SCREENSHOTS"):  # tools/demo's pictures: BDI_CONSOLE_SCREENSHOTS=1 pytest ...
        for name in ("console-model.png", "console-inspection.png"):
            shutil.copyfile(tmp_path / name, SCREENSHOTS / name)


def test_click_through_login_an_action_and_logout(live, browser):
    from selenium.webdriver.common.by import By

    client, base = live
    items = _with_records(client, 2)
    token = client.app.state.service.registry.keys.add("quality-anna", "engineer", ADMIN_EVENT)
    browser.get(base + f"/console/inspections/{items[0]['id']}")
    assert browser.current_url.startswith(base + "/console/login")  # no key yet: the login page
    browser.find_element(By.ID, "key").send_keys(token + "-wrong")
    browser.find_element(By.ID, "login").click()
    assert "not known to this service" in browser.find_element(By.ID, "login-sentence").text
    browser.find_element(By.ID, "key").send_keys(token)
    browser.find_element(By.ID, "login").click()
    assert items[0]["id"] in browser.find_element(By.TAG_NAME, "h1").text  # back where the login began
    assert browser.find_element(By.ID, "who").text == "quality-anna (engineer)"
    assert all(token not in c["value"] for c in browser.get_cookies())
    browser.find_element(By.ID, "note").send_keys("checked at the bench")
    browser.find_element(By.ID, "review-ng").click()
    _wait_for(browser, lambda b: "by quality-anna" in b.find_element(By.ID, "review").text)
    assert _audit(client)[0] == ("review", "quality-anna")
    browser.find_element(By.ID, "logout").click()
    assert browser.current_url == base + "/console/login"
    browser.get(base + "/console/")
    assert browser.current_url.startswith(base + "/console/login")
