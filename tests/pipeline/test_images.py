"""Upload decoding: same pixels as the old backend's cv2.imdecode, header-checked pixel limit, and only
BadRequest / PayloadTooLarge for any bytes."""

from __future__ import annotations

import struct
import time
import warnings
import zlib

import cv2
import numpy as np
import pytest

from service.errors import BadRequest, PayloadTooLarge
from service.pipeline import images
from service.pipeline.images import decode_image, image_size_from_header

LIMIT = 100_000_000


def _encode(ext: str, array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, array)
    assert ok
    return buf.tobytes()


def _reference(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def _png_with_header(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims width x height RGB, written chunk by chunk."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def colour() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tiff"])
def test_common_formats_decode_like_cv2(ext: str, colour: np.ndarray) -> None:
    data = _encode(ext, colour)
    decoded = decode_image(data, f"a{ext}", LIMIT)
    assert decoded.dtype == np.uint8 and decoded.shape == (37, 53, 3)
    np.testing.assert_array_equal(decoded, _reference(data))
    if ext != ".jpg":
        np.testing.assert_array_equal(decoded, colour)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(37 * 53, dtype=np.uint8).reshape(37, 53),  # grey
        np.dstack([np.full((37, 53), v, np.uint8) for v in (10, 20, 30, 128)]),  # BGRA
        (np.arange(37 * 53 * 3, dtype=np.uint16).reshape(37, 53, 3) * 11),  # 16-bit
    ],
    ids=["grey", "rgba", "16bit"],
)
def test_grey_alpha_and_16bit_become_8bit_bgr(array: np.ndarray) -> None:
    data = _encode(".png", array)
    decoded = decode_image(data, "x.png", LIMIT)
    assert decoded.dtype == np.uint8 and decoded.shape == (37, 53, 3)
    np.testing.assert_array_equal(decoded, _reference(data))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        b"GIF89a",
        b"\x89PNG\r\n\x1a\n",
    ],
    ids=["empty", "random", "gif-magic-only", "png-magic-only"],
)
def test_non_images_are_bad_requests_naming_the_file(data: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        decode_image(data, "x.png", LIMIT)
    assert "'x.png'" in info.value.message
    assert "not a readable image" in info.value.message
    assert "Send a PNG, JPEG, BMP or TIFF file" in info.value.message


def test_truncated_png_is_a_bad_request(colour: np.ndarray) -> None:
    data = _encode(".png", colour)
    with pytest.raises(BadRequest, match="part.png"):
        decode_image(data[: len(data) // 2], "part.png", LIMIT)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mangled_bytes_never_raise_anything_else(colour: np.ndarray) -> None:
    """Fuzz: every exception that escapes is one of the two service errors."""
    rng = np.random.default_rng(2)
    for ext in (".png", ".jpg", ".bmp", ".tiff"):
        good = bytearray(_encode(ext, colour))
        for _ in range(25):
            data = bytearray(good)
            for pos in rng.integers(0, len(data), 8):
                data[pos] = int(rng.integers(0, 256))
            cut = int(rng.integers(1, len(data) + 1))
            try:
                decode_image(bytes(data[:cut]), f"f{ext}", LIMIT)
            except (BadRequest, PayloadTooLarge):
                pass


def test_decompression_bomb_is_refused_from_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = _png_with_header(30000, 30000)
    assert len(bomb) < 100

    def no_decoding(*args, **kwargs):
        raise AssertionError("cv2.imdecode must not run for an image over the limit")

    monkeypatch.setattr(images.cv2, "imdecode", no_decoding)
    started = time.perf_counter()
    with pytest.raises(PayloadTooLarge) as info:
        decode_image(bomb, "bomb.png", LIMIT)
    assert time.perf_counter() - started < 1.0
    message = info.value.message
    assert info.value.status_code == 413
    assert "'bomb.png'" in message and "900,000,000" in message and "100,000,000" in message
    assert "BDI_MAX_IMAGE_PIXELS" in message


def test_pillow_bomb_check_does_not_override_our_limit() -> None:
    """900 M pixels is past Pillow's own error threshold; the header is still read, no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert image_size_from_header(_png_with_header(30000, 30000), "big.png") == (30000, 30000)


def test_limit_is_inclusive(colour: np.ndarray) -> None:
    data = _encode(".png", colour)
    assert decode_image(data, "a.png", 37 * 53).shape == (37, 53, 3)
    with pytest.raises(PayloadTooLarge):
        decode_image(data, "a.png", 37 * 53 - 1)
