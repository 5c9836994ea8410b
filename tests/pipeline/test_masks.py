"""The /infer ``shape`` field: parsing, defaults, pixel convention and every refusal."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import BadRequest
from service.pipeline.masks import Shape, parse_shape, shape_mask


def mask_of(text: str | None, width: int = 40, height: int = 30) -> np.ndarray:
    return shape_mask(parse_shape(text), width, height)


@pytest.mark.parametrize("text", [None, "", "   ", "\n"])
def test_no_shape_is_the_whole_image(text: str | None) -> None:
    assert parse_shape(text) is None
    mask = mask_of(text)
    assert mask.shape == (30, 40) and mask.dtype == bool and mask.all()


def test_rect_covers_columns_x_to_x_plus_w_and_is_clipped() -> None:
    mask = mask_of('{"kind": "rect", "x": 5, "y": 3, "w": 10, "h": 4}')
    expected = np.zeros((30, 40), dtype=bool)
    expected[3:7, 5:15] = True
    np.testing.assert_array_equal(mask, expected)
    clipped = mask_of('{"kind": "rect", "x": -5, "y": 25, "w": 10, "h": 100}')
    expected = np.zeros((30, 40), dtype=bool)
    expected[25:, :5] = True
    np.testing.assert_array_equal(clipped, expected)


def test_rect_with_float_edges_takes_the_pixels_whose_centres_are_inside() -> None:
    mask = mask_of('{"x": 4.6, "y": 0, "w": 2.0, "h": 1}')  # centres in [4.6, 6.6): 5.5, 6.5
    assert np.flatnonzero(mask[0]).tolist() == [5, 6]
    mask = mask_of('{"x": 4.4, "y": 0, "w": 1.2, "h": 1}')  # centres in [4.4, 5.6): 4.5, 5.5
    assert np.flatnonzero(mask[0]).tolist() == [4, 5]


def test_rect_defaults_to_the_whole_image() -> None:
    assert parse_shape("{}") == Shape("rect")
    assert mask_of("{}").all()
    assert mask_of('{"kind": "rect"}').all()
    partial = mask_of('{"x": 30}')
    assert partial[:, 30:].all() and not partial[:, :30].any()


def test_circle_default_is_the_inscribed_circle_and_symmetric() -> None:
    mask = mask_of('{"kind": "circle"}', width=41, height=30)
    yy, xx = np.mgrid[0:30, 0:41]
    expected = (xx + 0.5 - 20.5) ** 2 + (yy + 0.5 - 15) ** 2 <= 15**2
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(mask, mask[::-1, :])
    np.testing.assert_array_equal(mask, mask[:, ::-1])
    even = mask_of('{"kind": "circle"}', width=64, height=64)
    np.testing.assert_array_equal(even, even[::-1, :])
    np.testing.assert_array_equal(even, even[:, ::-1])
    np.testing.assert_array_equal(even, even.T)
    assert even[32].sum() == 64 and not even[0, 0]


def test_circle_with_explicit_values_and_clipping() -> None:
    mask = mask_of('{"kind": "circle", "cx": 10.5, "cy": 10.5, "r": 3}')
    assert mask.sum() == 29  # lattice points of the disc of radius 3 around a pixel centre
    assert mask[10, 7] and mask[10, 13] and not mask[10, 6] and not mask[10, 14]
    corner = mask_of('{"kind": "circle", "cx": 0, "cy": 0, "r": 5}')
    yy, xx = np.mgrid[0:30, 0:40]
    np.testing.assert_array_equal(corner, (xx + 0.5) ** 2 + (yy + 0.5) ** 2 <= 25)
    assert corner[0, 0] and not corner[5:, :].any() and not corner[:, 5:].any()


def test_annulus_is_the_circle_minus_the_inner_disc() -> None:
    ring = mask_of('{"kind": "annulus", "cx": 20, "cy": 15, "r": 12, "r_inner": 6}')
    yy, xx = np.mgrid[0:30, 0:40]
    d2 = (xx + 0.5 - 20) ** 2 + (yy + 0.5 - 15) ** 2
    np.testing.assert_array_equal(ring, (d2 <= 144) & (d2 >= 36))
    np.testing.assert_array_equal(ring, ring[::-1, :])
    # r_inner defaults to 0: the annulus is then the circle
    np.testing.assert_array_equal(mask_of('{"kind": "annulus"}'), mask_of('{"kind": "circle"}'))


def test_kind_is_case_insensitive_and_numbers_may_be_strings_or_floats() -> None:
    a = mask_of('{"kind": "CIRCLE", "cx": "20", "cy": " 15.0 ", "r": "7.5"}')
    b = mask_of('{"kind": "Circle", "cx": 20, "cy": 15, "r": 7.5}')
    np.testing.assert_array_equal(a, b)
    assert parse_shape('{"kind": " Annulus ", "r": 1e2, "r_inner": "2"}') == Shape("annulus", r=100.0, r_inner=2.0)


@pytest.mark.parametrize("text", [
    '{"kind": "rect", "x": 10, "y": 10, "width": 100, "height": 100}',  # a misspelt rect: would be the whole image
    '{"kind": "rect", "w": 5, "colour": "red"}',
    '{"kind": "rect", "cx": 5}',  # another kind's key
    '{"kind": "circle", "cx": 5, "cy": 5, "radius": 4}',
])
def test_a_key_the_kind_does_not_take_is_refused_naming_the_keys_of_each_kind(text: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_shape(text)
    message = refused.value.message
    assert "does not take" in message
    assert "rect: x, y, w, h; circle: cx, cy, r; annulus: cx, cy, r, r_inner" in message


def test_large_masks_are_fast_enough() -> None:
    mask = shape_mask(parse_shape('{"kind": "annulus", "r_inner": 1000}'), 5000, 5000)
    assert mask[2500, 100] and not mask[2500, 2500] and not mask[0, 0]


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("{not json", "not valid JSON"),
        ('{"kind": "rect",}', "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ("12", "JSON object"),
        ('"circle"', "JSON object"),
        ("null", "JSON object"),
        ('{"kind": "polygon"}', "kind"),
        ('{"kind": 3}', "kind"),
        ('{"kind": null}', "kind"),
        ('{"x": "abc"}', "finite number"),
        ('{"x": ""}', "finite number"),
        ('{"x": true}', "finite number"),
        ('{"w": false}', "finite number"),
        ('{"x": null}', "finite number"),
        ('{"x": NaN}', "finite number"),
        ('{"x": Infinity}', "finite number"),
        ('{"x": -Infinity}', "finite number"),
        ('{"x": "nan"}', "finite number"),
        ('{"x": "inf"}', "finite number"),
        ('{"x": 1e999}', "finite number"),
        ('{"x": {"v": 1}}', "finite number"),
        ('{"x": [1]}', "finite number"),
        ('{"x": 1e8}', "between"),
        ('{"kind": "circle", "cx": -20000000}', "between"),
        ('{"x": 100000000000000000000000000000000000000000000000000000000000000}', "between"),
        ('{"w": 0}', "w must be > 0"),
        ('{"h": -3}', "h must be > 0"),
        ('{"kind": "circle", "r": 0}', "r must be > 0"),
        ('{"kind": "annulus", "r": -1}', "r must be > 0"),
        ('{"kind": "annulus", "r": 10, "r_inner": -1}', "r_inner must be >= 0"),
        ('{"kind": "annulus", "r": 10, "r_inner": 10}', "smaller than r"),
        ('{"kind": "annulus", "r": 10, "r_inner": 12}', "smaller than r"),
    ],
)
def test_bad_shapes_are_400_with_a_sentence(text: str, phrase: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_shape(text)
    assert caught.value.status_code == 400
    assert phrase in caught.value.message and caught.value.message.endswith(".")


def test_deeply_nested_json_is_a_400() -> None:
    with pytest.raises(BadRequest):
        parse_shape("[" * 100_000 + "]" * 100_000)


def test_r_inner_at_least_the_default_radius_is_refused_once_the_size_is_known() -> None:
    shape = parse_shape('{"kind": "annulus", "r_inner": 20}')  # default r = min(40, 30) / 2 = 15
    with pytest.raises(BadRequest, match="smaller than r"):
        shape_mask(shape, 40, 30)


@pytest.mark.parametrize(
    "text",
    [
        '{"x": 40, "y": 0, "w": 10, "h": 10}',
        '{"x": -10, "y": 0, "w": 10, "h": 10}',
        '{"x": 0, "y": 30.5, "w": 10, "h": 10}',
        '{"x": 3, "y": 3, "w": 0.4, "h": 5}',
        '{"kind": "circle", "cx": 100, "cy": 100, "r": 5}',
        '{"kind": "circle", "cx": 10, "cy": 10, "r": 0.7}',  # nearest pixel centre is 0.707 away
        '{"kind": "annulus", "cx": 20, "cy": 15, "r": 100, "r_inner": 90}',
    ],
)
def test_a_shape_covering_no_pixel_is_a_400(text: str) -> None:
    shape = parse_shape(text)
    with pytest.raises(BadRequest, match="covers no pixel") as caught:
        shape_mask(shape, 40, 30)
    assert caught.value.status_code == 400
