"""Hardening over HTTP: bad input of every kind is a 4xx whose `error` says what to fix, and a refused
request leaves the models dir and the registry exactly as they were; odd but valid input just works.
(test_api.py covers the first cases of each kind; these are the rest.)"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import cv2
import numpy as np
import pytest
from litestar.testing import TestClient
from PIL import Image

from service.core import InspectionService
from service.errors import BadRequest
from service.pipeline import images
from service.validation import validate_id
from service.web import create_app
from service.web.shared import ID_SCHEMA
from tests.support import fit, infer, make_settings, png_bytes, synthetic_roi

ROLE, ROI = "Master1", "inspection-1"
OK_IMAGES = [synthetic_roi(96, 80, seed) for seed in range(3)]
GOOD = png_bytes(OK_IMAGES[0])
FORM = {"role_id": ROLE, "roi_id": ROI, "mm_per_px": "0.2"}
BOUNDARY = "hardening-boundary"


def _bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A PNG whose IHDR claims width x height RGB over a few bytes of data: a decompression bomb's header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = chunk(b"IDAT", zlib.compress(b"\x00" * 4096))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + data + chunk(b"IEND", b"")


def _multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, dict[str, str]]:
    """A multipart body written by hand: (name, filename or None for a text part, content) per part, so that
    parts can be repeated, mistyped or left without a file name, which form helpers don't allow."""
    body = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + ("" if filename is None else f'; filename="{filename}"')
        body += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode(), {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def _raw(path: str, parts: list[tuple[str, str | None, bytes]]) -> Callable[[TestClient[Any]], Any]:
    body, headers = _multipart(parts)
    return lambda client: client.post(path, content=body, headers=headers)


TEXT = [(name, None, value.encode()) for name, value in FORM.items()]


def _fit(*images: tuple[str, bytes], **fields: str) -> Callable[[TestClient[Any]], Any]:
    files = [("images", (name, data, "image/png")) for name, data in images]
    return lambda client: client.post("/fit_ok", data={**FORM, **fields}, files=files)


def _infer(image: bytes = GOOD, name: str = "roi.png", **fields: str) -> Callable[[TestClient[Any]], Any]:
    return lambda client: client.post("/infer", data={**FORM, **fields}, files={"image": (name, image, "image/png")})


def _state(**params: str) -> Callable[[TestClient[Any]], Any]:
    return lambda client: client.get("/state", params={"role_id": ROLE, "roi_id": ROI, **params})


def _calibrate(body: bytes) -> Callable[[TestClient[Any]], Any]:
    return lambda client: client.post("/calibrate_ng", content=body, headers={"content-type": "application/json"})


def _calibration(**fields: Any) -> bytes:
    return json.dumps({"role_id": ROLE, "roi_id": ROI, "ok_scores": [0.3, 0.4], **fields}).encode()


def _footprint(client: TestClient[Any]) -> tuple[Any, ...]:
    """What a request could change: every file under the tmp root (content hashed; SQLite's shared-memory
    index changes on reads), and the registry's view of the fitted model and of all models."""
    models_dir = client.app.state.settings.models_dir
    files = {
        path.relative_to(models_dir.parent).as_posix():
            None if path.name.endswith("-shm") else hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(models_dir.parent.rglob("*"))
        if path.is_file()
    }
    state = client.get("/state", params={"role_id": ROLE, "roi_id": ROI}).json()
    return files, state, client.app.state.service.registry.count_models()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory, extractor: Any) -> Iterator[TestClient[Any]]:
    """One app for all the refused requests below (each leaves nothing behind, which is what they check), with
    (ROLE, ROI) fitted and calibrated."""
    settings = make_settings(tmp_path_factory.mktemp("hardening") / "models")
    service = InspectionService(settings, extractor=extractor)
    with TestClient(create_app(settings, service), raise_server_exceptions=False) as client:
        assert fit(client, ROLE, ROI, OK_IMAGES).status_code == 200
        assert _calibrate(_calibration())(client).status_code == 200
        yield client
    service.close()


BAD_IDS = {"nul": "a\x00b", "escape": "x\x1b[31m", "del": "del\x7f", "line separator": "a\u2028b",
           "129 chars": "é" * 129, "spaces": "   ", "nbsp": "\u00a0\u3000"}
TRUNCATED = GOOD[: len(GOOD) // 2]
IMAGE = ("a.png", GOOD)
UNREADABLE = "is not a readable image"
REFUSED = {
    # images: not an image, truncated, empty, a bomb (refused from its header, see test_bomb_is_refused_fast)
    "fit/one bad image among good": (_fit(IMAGE, ("b.png", b"GIF89a nonsense"), IMAGE, role_id="new"), 400, "'b.png'"),
    "fit/truncated png": (_fit(IMAGE, ("cut.png", TRUNCATED), role_id="new"), 400, f"'cut.png' {UNREADABLE}"),
    "infer/truncated png": (_infer(TRUNCATED, "cut.png"), 400, f"'cut.png' {UNREADABLE}"),
    "fit/empty file": (_fit(("empty.png", b""), role_id="new"), 400, f"'empty.png' {UNREADABLE}"),
    "fit/bomb": (_fit(IMAGE, ("bomb.png", _bomb()), role_id="new"), 413, "BDI_MAX_IMAGE_PIXELS"),
    "infer/bomb": (_infer(_bomb(), "bomb.png"), 413, "900,000,000"),
    # ids on every route (test_api covers /calibrate_ng)
    **{f"fit/{k} role_id": (_fit(IMAGE, role_id=v), 400, "role_id") for k, v in BAD_IDS.items()},
    **{f"infer/{k} roi_id": (_infer(roi_id=v), 400, "roi_id") for k, v in BAD_IDS.items()},
    **{f"state/{k} role_id": (_state(role_id=v), 400, "role_id") for k, v in BAD_IDS.items()},
    "state/empty roi_id": (_state(roi_id=""), 400, "roi_id is empty"),
    # shape (test_api covers invalid JSON, a list, an unknown kind, r < 0, r_inner > r, no pixel covered)
    **{f"infer/shape {text}": (_infer(shape=text), 400, fragment) for text, fragment in [
        ('{"kind": "circle", "r": 0}', "r must be > 0"),
        ('{"kind": "annulus", "r": 9, "r_inner": 9}', "r_inner"),
        ('{"kind": "annulus", "r_inner": -1}', "r_inner must be >= 0"),
        ('{"x": "abc"}', "x must be a finite number"),
        ('{"w": 0}', "w must be > 0"),
        ('{"h": -4}', "h must be > 0"),
        ('{"w": 1e30}', "between"),
        ('{"x": 1e400}', "finite"),
        ('{"cx": NaN, "kind": "circle"}', "finite"),
        ('{"kind": "circle", "r": Infinity}', "finite"),
        ('{"kind": "circle", "r": -Infinity}', "finite"),
        ('{"x": true}', "finite"),
        ('{"y": null}', "finite"),
        ('{"x": [1]}', "finite"),
        ('{"x": 1' + "0" * 5000 + "}", "valid JSON"),
        ("[" * 100_000, "valid JSON"),
        ('"rect"', "JSON object"),
        ("null", "JSON object"),
        ('{"kind": 3}', "kind"),
        ('{"kind": "circle", "cx": -500, "cy": -500, "r": 10}', "covers no pixel"),
    ]},
    # mm_per_px (test_api covers /infer with 0, -1, nan, inf and abc)
    **{f"fit/mm_per_px {v}": (_fit(IMAGE, role_id="new", mm_per_px=v), status, "mm_per_px")
       for v, status in [("0", 400), ("-1", 400), ("nan", 400), ("inf", 400), ("-inf", 400), ("1e7", 400),
                         ("abc", 422), ("1e400", 422)]},
    "infer/mm_per_px 1e200": (_infer(mm_per_px="1e200"), 400, "at most"),
    "calibrate/mm_per_px 1e7": (_calibrate(_calibration(mm_per_px=1e7)), 400, "at most"),
    # scores and percentile in the JSON body (test_api covers [], ["NaN"], ["Infinity"], ["abc"], 0, 101)
    "calibrate/NaN literal": (_calibrate(b'{"role_id": "a", "roi_id": "b", "ok_scores": [NaN]}'), 400, "valid JSON"),
    "calibrate/1e400": (_calibrate(b'{"role_id": "a", "roi_id": "b", "ok_scores": [1e400]}'), 400, "finite numbers"),
    "calibrate/huge scores": (_calibrate(_calibration(ng_scores=[-1.7e308, 1e307])), 400, "within ±1e+06"),
    "calibrate/-Infinity string": (_calibrate(_calibration(ng_scores=["-Infinity"])), 400, "ng_scores"),
    "calibrate/nan string": (_calibrate(_calibration(ok_scores=["nan"])), 400, "ok_scores"),
    "calibrate/null score": (_calibrate(_calibration(ok_scores=[0.1, None])), 422, "ok_scores"),
    "calibrate/nested scores": (_calibrate(_calibration(ok_scores=[[0.1]])), 422, "ok_scores"),
    "calibrate/scores object": (_calibrate(_calibration(ok_scores={"a": 1})), 422, "ok_scores"),
    "calibrate/area nan": (_calibrate(_calibration(area_mm2_thr="nan")), 400, "area_mm2_thr"),
    "calibrate/area < 0": (_calibrate(_calibration(area_mm2_thr=-1)), 400, "area_mm2_thr"),
    **{f"calibrate/score_percentile {v!r}": (_calibrate(_calibration(score_percentile=v)), status, "score_percentile")
       for v, status in [(-5, 400), (10**30, 400), (50.5, 422), (1e30, 422), ("abc", 422), ([99], 422)]},
    # a body that is not a JSON object (test_api covers an array and garbage)
    **{f"calibrate/body {body!r}": (_calibrate(body), 422, "body") for body in (b"null", b'"text"', b"42", b"true", b"")},
    # the multipart form itself: parts repeated, mistyped, without a file name, not UTF-8, not multipart at all
    "infer/two images": (_raw("/infer", [*TEXT, ("image", *IMAGE), ("image", *IMAGE)]), 422, "send exactly one image"),
    "infer/image as text": (_raw("/infer", [*TEXT, ("image", None, b"hello")]), 422, "must be a file part"),
    "infer/image without file name": (_raw("/infer", [*TEXT, ("image", "", GOOD)]), 400, "file name"),
    "infer/role_id twice": (_raw("/infer", [*TEXT, ("role_id", None, b"x"), ("image", *IMAGE)]), 422, "was sent 2 times"),
    "infer/mm_per_px as file": (_raw("/infer", [*TEXT[:2], ("mm_per_px", "mm.txt", b"0.2"), ("image", *IMAGE)]), 422,
                                "mm_per_px: must be a text field"),
    "infer/text not UTF-8": (_raw("/infer", [*TEXT[1:], ("role_id", None, b"\xff\xfe"), ("image", *IMAGE)]), 400, "UTF-8"),
    "fit/images as text": (_raw("/fit_ok", [*TEXT, ("images", None, b"hello")]), 422, "images: must be a file part"),
    "fit/memory_fit twice": (_raw("/fit_ok", [*TEXT, ("images", *IMAGE), ("memory_fit", None, b"1"), ("memory_fit", None, b"0")]),
                             422, "memory_fit"),
    "fit/file name over 4 KB": (_raw("/fit_ok", [*TEXT, ("images", "a" * 5000 + ".png", GOOD)]), 400, "file names short"),
    "fit/urlencoded": (lambda client: client.post("/fit_ok", data={**FORM, "images": "x"}), 400, "multipart/form-data"),
    "fit/no boundary": (lambda client: client.post("/fit_ok", content=b"x", headers={"content-type": "multipart/form-data"}),
                        400, "multipart/form-data"),
    "fit/cut short": (lambda client: client.post("/fit_ok", content=_multipart(TEXT)[0][:-30], headers=_multipart([])[1]),
                      400, "multipart/form-data"),
}


@pytest.mark.parametrize("name", REFUSED)
def test_bad_input_is_4xx_saying_what_to_fix_and_changes_nothing(fitted, name):
    send, status, fragment = REFUSED[name]
    before = _footprint(fitted)
    response = send(fitted)
    assert response.status_code == status, response.text
    body = response.json()
    assert fragment in body["error"], body["error"]
    if status == 422:
        assert [item["loc"][:1] for item in body["detail"]] == [["body"]] * len(body["detail"])  # FastAPI's shape
    else:
        assert body["detail"] == body["error"]
    assert _footprint(fitted) == before


def test_bomb_is_refused_fast_from_its_header(fitted, monkeypatch):
    bomb = _bomb()
    assert len(bomb) < 200

    def no_decoding(*args: Any) -> None:
        raise AssertionError("the bomb was decoded")

    monkeypatch.setattr(images.cv2, "imdecode", no_decoding)
    started = time.perf_counter()
    response = _infer(bomb, "bomb.png")(fitted)
    assert response.status_code == 413 and time.perf_counter() - started < 1.0


@pytest.mark.parametrize("extra_parts", [1, 2000])
def test_more_parts_than_the_form_limit_is_413_naming_the_image_limit(make_client, extra_parts):
    """The image count is checked by the service; beyond BDI_MAX_FIT_IMAGES + 64 parts the parser stops first."""
    client = make_client(BDI_MAX_FIT_IMAGES="3")
    limit = client.app.multipart_form_part_limit
    parts = [*TEXT, *[("images", f"{i}.png", b"x") for i in range(limit + extra_parts)]]
    response = _raw("/fit_ok", parts)(client)
    assert response.status_code == 413, response.text
    assert "BDI_MAX_FIT_IMAGES" in response.json()["error"]
    assert not any(client.app.state.settings.models_dir.glob("*/*/"))


@pytest.mark.parametrize("route", ["/infer", "/calibrate_ng", "/fit_ok"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_over_the_limit_is_413(make_client, route, chunked):
    client = make_client(BDI_MAX_BODY_MB="0.01")
    if route == "/calibrate_ng":
        body, headers = _calibration(ok_scores=[0.4] * 5000), {"content-type": "application/json"}
    else:
        body, headers = _multipart([*TEXT, ("image" if route == "/infer" else "images", "a.png", b"\x00" * 20_000)])
    response = client.post(route, content=iter([body]) if chunked else body, headers=headers)
    assert response.status_code == 413, response.text
    assert "BDI_MAX_BODY_MB" in response.json()["error"]
    assert client.get("/health").json()["models"] == 0


# ---- odd but valid ----------------------------------------------------------------------------------------------

ODD_IDS = [
    ("  leading", "trailing  "),
    ("../../../etc/passwd", "..\\..\\windows\\system32"),
    ("a?b&c=d#e", "100% + more"),
    ("emoji 🚗 disc", "日本語のROI"),
    ("é", "e\u0301"),  # NFC and NFD of the same letter: two models, ids are kept exactly
    ("ñ" * 128, "Ω" * 128),
    (".", "~"),
]


@pytest.mark.parametrize("role, roi", ODD_IDS)
def test_odd_ids_work_on_every_route_are_reported_as_sent_and_stay_inside(make_client, tmp_path, role, roi):
    client = make_client()
    assert fit(client, role, roi, OK_IMAGES[:1]).status_code == 200
    assert fit(client, roi, role, OK_IMAGES[1:2]).status_code == 200  # swapped: another model
    calibrated = client.post("/calibrate_ng", json={"role_id": role, "roi_id": roi, "ok_scores": [0.1, 0.2]})
    assert calibrated.status_code == 200
    assert infer(client, role, roi, OK_IMAGES[2]).json()["threshold"] == pytest.approx(calibrated.json()["threshold"])
    for pair, calibrated_ in (((role, roi), True), ((roi, role), False)):
        state = client.get("/state", params={"role_id": pair[0], "roi_id": pair[1]}).json()
        assert (state["role_id"], state["roi_id"]) == pair
        assert state["fitted"] is True and state["version"] == 1 and state["calib_present"] is calibrated_
    assert client.get("/health").json()["models"] == 2
    models_dir = client.app.state.settings.models_dir.resolve()
    assert [p.name for p in tmp_path.iterdir()] == ["models"]
    assert all(p.resolve().is_relative_to(models_dir) for p in models_dir.rglob("*"))


def test_the_documented_id_schema_is_the_id_rule():
    """The document's id schema (what clients and the fuzzer read) accepts exactly what the service accepts:
    every code point alone (surrogates can't arrive in UTF-8), and blanks, lengths and mixes."""
    pattern = re.compile(ID_SCHEMA["pattern"])

    def valid(value: str) -> bool:
        try:
            return validate_id("role_id", value) == value
        except BadRequest:
            return False

    samples = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    samples += [" a ", "\u3000x\u2003", " \u00a0 ", "a\tb", "a\u2029", "x" * 128, "x" * 129, "ñ" * 128, ""]
    for value in samples:
        documented = ID_SCHEMA["minLength"] <= len(value) <= ID_SCHEMA["maxLength"] and pattern.search(value) is not None
        assert documented == valid(value), repr(value)


@pytest.mark.parametrize("size", [(1, 1), (5000, 5000)], ids=["1x1", "5000x5000"])
def test_tiny_and_huge_images_fit_and_infer(make_client, size):
    width, height = size
    image = cv2.resize(synthetic_roi(100, 100, 3), (width, height), interpolation=cv2.INTER_LINEAR)
    client = make_client()
    started = time.perf_counter()
    assert fit(client, ROLE, ROI, [image, OK_IMAGES[0]]).status_code == 200
    response = infer(client, ROLE, ROI, image, shape=json.dumps({"kind": "circle"}))
    assert response.status_code == 200, response.text
    assert time.perf_counter() - started < 30
    heatmap = base64.b64decode(response.json()["heatmap_png_base64"])
    assert cv2.imdecode(np.frombuffer(heatmap, np.uint8), cv2.IMREAD_UNCHANGED).shape == (height, width)


def _pillow_png(mode: str, grey: np.ndarray) -> bytes:
    """``grey`` as a PNG that OpenCV can't write: grey + alpha (alpha = grey / 2) or palette (a grey palette)."""
    height, width = grey.shape
    if mode == "LA":
        image = Image.merge("LA", [Image.frombytes("L", (width, height), grey.tobytes()),
                                   Image.frombytes("L", (width, height), (grey // 2).tobytes())])
    else:
        image = Image.frombytes("P", (width, height), grey.tobytes())
        image.putpalette([level for index in range(256) for level in (index, index, index)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


_BGR = synthetic_roi(96, 80, 11)
_GREY = cv2.cvtColor(_BGR, cv2.COLOR_BGR2GRAY)
_GREY_BGR = cv2.cvtColor(_GREY, cv2.COLOR_GRAY2BGR)
# (the upload, the 8-bit BGR image the old backend's cv2.imdecode(IMREAD_COLOR) makes of it)
ENCODINGS = {
    "16-bit colour": (png_bytes(_BGR.astype(np.uint16) * 257), _BGR),
    "16-bit grey": (png_bytes(_GREY.astype(np.uint16) * 257), _GREY_BGR),
    "grey": (png_bytes(_GREY), _GREY_BGR),
    "RGBA": (png_bytes(np.dstack([_BGR, np.linspace(0, 255, 96 * 80).reshape(80, 96).astype(np.uint8)])), _BGR),
    "grey + alpha": (_pillow_png("LA", _GREY), _GREY_BGR),
    "palette": (_pillow_png("P", _GREY), _GREY_BGR),
}


@pytest.mark.parametrize("name", ENCODINGS)
def test_png_variants_score_like_their_8bit_bgr_equivalent(make_client, name):
    upload, equivalent = ENCODINGS[name]
    client = make_client()
    assert fit(client, ROLE, ROI, OK_IMAGES).status_code == 200
    got, expected = infer(client, ROLE, ROI, upload).json(), infer(client, ROLE, ROI, equivalent).json()
    assert got["score"] == expected["score"] and got["heatmap_png_base64"] == expected["heatmap_png_base64"]
    files = [("images", ("v.png", upload, "image/png"))]
    assert client.post("/fit_ok", data={**FORM, "role_id": "variant"}, files=files).status_code == 200
