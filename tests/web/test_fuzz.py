"""Property-based fuzzing of every operation with schemathesis, against the app's own OpenAPI document:
no input, valid or not, gets a 5xx, and every answer is a documented status with a body of its schema.

Per operation, 40 derandomized examples (same cases every run) drawn from the document (positive and
negative) and, for /fit_ok and /infer, from bodies that reach the pipeline (see ``_on_the_fitted_model``).
Requests go to the ASGI app in-process; the whole module takes 10 to 20 s on two cores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest

schemathesis = pytest.importorskip("schemathesis", reason="needs the test extra: pip install -e '.[test]'")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.python.asgi import shutdown_lifespans  # noqa: E402

from service.core import InspectionService, Upload  # noqa: E402
from service.storage.audit import AuditEvent  # noqa: E402
from service.validation import MAX_MM_PER_PX  # noqa: E402
from service.web import create_app  # noqa: E402
from tests.support import make_settings, png_bytes, synthetic_roi  # noqa: E402

ROLE, ROI = "fuzz role", "roi/1"
OPERATIONS = [("/health", "GET"), ("/fit_ok", "POST"), ("/calibrate_ng", "POST"), ("/infer", "POST"), ("/state", "GET"),
              ("/datasets/ok/upload", "POST"), ("/datasets/ng/upload", "POST"), ("/datasets/list", "GET"),
              ("/datasets/file", "GET"), ("/datasets/file", "DELETE"), ("/datasets/meta", "GET"),
              ("/calibrate_dataset", "POST"),
              ("/inspections", "GET"), ("/inspections/{inspection_id}", "GET"), ("/inspections/{inspection_id}/image", "GET"),
              ("/metrics", "GET")]
# Every check but positive_data_acceptance: schema-valid input is refused by design when its content is bad
# (an image that does not decode, a shape that covers no pixel), with a documented 4xx.
# ignored_auth swaps one of the two documented credentials for a made-up one while the other stays valid; who
# may call what is checked route by route in tests/web/test_roles.py (401, 403, every role)
CONFIG = {"checks": {"positive_data_acceptance": {"enabled": False}, "ignored_auth": {"enabled": False}}}


def _encode(ext: str, image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


_ROI = synthetic_roi(40, 30, 7)
IMAGES = [
    png_bytes(cv2.cvtColor(_ROI, cv2.COLOR_BGR2BGRA)),
    png_bytes(cv2.cvtColor(_ROI, cv2.COLOR_BGR2GRAY)),
    png_bytes(_ROI.astype(np.uint16) * 257),
    _encode(".jpg", _ROI),
    _encode(".bmp", _ROI[:, :17]),
    _encode(".tiff", _ROI[:5]),
    png_bytes(_ROI[:1, :1]),
]
SANE = st.one_of(st.integers(-100, 200), st.floats(-100, 200))
NUMBERS = st.one_of(SANE, SANE, SANE, st.integers(), st.floats(), st.text(max_size=8))  # mostly in or near the image
SHAPES = st.fixed_dictionaries(
    {"kind": st.sampled_from(["rect", "circle", "annulus", "Circle"])},
    optional={key: NUMBERS for key in ("x", "y", "w", "h", "cx", "cy", "r", "r_inner")},
).map(json.dumps)
MM_PER_PX = st.floats(min_value=0, max_value=MAX_MM_PER_PX, exclude_min=True).map(str)


def _on_the_fitted_model(path: str) -> st.SearchStrategy[dict[str, Any]] | None:
    """Bodies that pass the id checks, with real images (PNG grey, RGBA, 16-bit, 1x1; JPEG, BMP, TIFF) and
    drawn numbers and shapes: generation from the document alone rarely gets past the first check."""
    fields = {"role_id": st.just(ROLE), "roi_id": st.just(ROI), "mm_per_px": MM_PER_PX}
    if path == "/infer":
        return st.fixed_dictionaries({**fields, "image": st.sampled_from(IMAGES)}, optional={"shape": SHAPES})
    if path == "/fit_ok":
        return st.fixed_dictionaries(
            {**fields, "images": st.lists(st.sampled_from(IMAGES), min_size=1, max_size=3)},
            optional={"memory_fit": st.booleans(), "use_dataset": st.booleans()},
        )
    if path.startswith("/datasets/") and path.endswith("/upload"):
        metas = st.fixed_dictionaries({}, optional={"mm_per_px": NUMBERS, "shape_json": SHAPES,
                                                    "timestamp": st.none() | st.text(max_size=20)}).map(json.dumps)
        return st.integers(1, 3).flatmap(lambda n: st.fixed_dictionaries({
            "role_id": st.just(ROLE), "roi_id": st.just(ROI),
            "images": st.lists(st.sampled_from(IMAGES), min_size=n, max_size=n),
            "metas": st.one_of(st.just([]), st.lists(metas, min_size=n, max_size=n), st.lists(metas, max_size=4)),
        }))
    return None


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory, extractor: Any) -> Iterator[Any]:
    """The document as the app serves it, bound to the app; (ROLE, ROI) is fitted and calibrated so low that
    /infer on it reports regions."""
    app_settings = make_settings(tmp_path_factory.mktemp("fuzz") / "models")
    service = InspectionService(app_settings, extractor=extractor)
    app = create_app(app_settings, service)
    service.fit(ROLE, ROI, 0.2, [Upload(f"ok_{s}.png", png_bytes(synthetic_roi(64, 48, s))) for s in range(2)])
    service.calibrate(ROLE, ROI, [0.0])
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=schemathesis.Config.from_dict(CONFIG))
        # with a key in the registry the service enforces what the document's security says (open without keys
        # is the GUIs' compatibility mode, which the document can't express): schemathesis checks that too
        token = service.registry.keys.add("fuzz", "admin", AuditEvent("key_add", actor="cli:test"))
        yield schema, token
    finally:
        shutdown_lifespans()
        service.close()


@pytest.mark.parametrize("path, method", OPERATIONS, ids=[path for path, _ in OPERATIONS])
def test_fuzzed_requests_get_documented_answers(api_schema, path, method):
    schema, token = api_schema
    operation = schema[path][method]
    strategies = [operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)]
    if (bodies := _on_the_fitted_model(path)) is not None:
        strategies += [bodies.flatmap(lambda body: operation.as_strategy(body=body))] * 2  # half the examples

    @given(case=st.one_of(strategies))
    @settings(max_examples=40, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        case.headers = {**(case.headers or {}), "X-API-Key": token}
        case.call_and_validate(timeout=60)  # a hung request fails the test instead of stalling CI

    run()
