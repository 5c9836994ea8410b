"""Synthetic brake-disc ROI dataset in the GUI's folder layout, for demos, tests and benchmarks.

    python tools/synth.py OUT --seed 0 --n-ok 20 --n-ng 10 --size 256 [--roi-kind annulus|rect|both] [--severity 1]

Writes ``OUT/<role>/<roi>/ok/<stem>.png`` and ``ng/<stem>.png``, each with a ``<stem>.json`` sidecar
(``mm_per_px``, ``shape_json``, ``role_id``, ``roi_id``; NG ones also name their ``defect``), and for
every NG sample ``<stem>_mask.png``: uint8 0/255, same size, 255 where the defect is.

Two ROI kinds, as an inspection cell crops them: ``annulus`` (a square view of the whole disc, the
friction ring as an annulus shape) and ``rect`` (a non-square strip of the friction ring, a rect shape).
Cast iron is grain noise with graphite flecks over concentric machining marks, with two staggered rows
of drilled holes, vent openings at the rim, a painted band next to the hub; every sample has its own
small shift, rotation and lighting. NG samples carry one defect each (scratch, paint spot, missing
paint, crack, extra drilled hole, dent), drawn before the lighting so it is lit like the part.

Every sample draws from its own generator seeded by (seed, roi kind, label, index): a seed gives
byte-identical files, and asking for more samples leaves the earlier ones unchanged. numpy and cv2 only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROI_KINDS = ("annulus", "rect")
DEFECTS = ("scratch", "paint_spot", "missing_paint", "crack", "extra_hole", "dent")
DEFAULT_ROLE = "Inspection"

# Radii as fractions of the disc's outer radius.
HUB = 0.36  # hub (hat) edge
PAINT = 0.48  # painted band HUB..PAINT, machined friction surface beyond
RIM = 0.95  # chamfered rim with the vent openings
HOLE_ROWS = (0.62, 0.78)  # two staggered rows of drilled holes
HOLES_PER_ROW = 10
HOLE_RADIUS = 0.045
VENTS = 36
LUG_HOLES = 5

# Grey levels before lighting.
BACKGROUND, HUB_GREY, PAINT_GREY, METAL_GREY, RIM_GREY, HOLE_GREY = 35.0, 80.0, 58.0, 150.0, 185.0, 22.0
TINT = np.array([1.03, 1.0, 0.97], np.float32)  # BGR gains: grey iron reads slightly blue
PAINT_COLOURS = ((40, 40, 190), (170, 90, 30), (235, 235, 235), (40, 200, 220))  # BGR: red, blue, white, yellow


@dataclasses.dataclass(frozen=True)
class Disc:
    """Where the disc lies in crop pixels: centre, outer radius and rotation (radians)."""

    cx: float
    cy: float
    radius: float
    angle: float

    def holes(self) -> list[tuple[float, float]]:
        """Centres of the drilled holes, the second row offset by half a pitch."""
        centres = []
        for row, rho in enumerate(HOLE_ROWS):
            for k in range(HOLES_PER_ROW):
                theta = self.angle + 2 * math.pi * (k + 0.5 * row) / HOLES_PER_ROW
                r = rho * self.radius
                centres.append((self.cx + r * math.cos(theta), self.cy + r * math.sin(theta)))
        return centres


@dataclasses.dataclass(frozen=True)
class Sample:
    """One rendered ROI: BGR image, its defect mask (NG only), the GUI's shape and scale."""

    image: np.ndarray
    mask: np.ndarray | None
    shape: dict[str, object]
    mm_per_px: float
    defect: str | None


def defects_for(kind: str) -> tuple[str, ...]:
    """The rect strip does not reach the painted band, so it cannot lose paint."""
    return DEFECTS if kind == "annulus" else tuple(d for d in DEFECTS if d != "missing_paint")


def make_sample(
    kind: str, size: int, seed: int, index: int, defect: str | None = None, severity: float = 1.0
) -> Sample:
    """The ``index``-th OK sample (``defect=None``) or NG sample of one ROI kind, ``size`` px wide.

    ``severity`` scales the defect's size (2.0: twice as long, wide and thick), for benchmarks of
    growing difficulty and for tests that need defects a random-weight backbone still sees.
    """
    if kind not in ROI_KINDS:
        raise ValueError(f"roi kind {kind!r} is unknown; use one of {ROI_KINDS}")
    if defect is not None and defect not in defects_for(kind):
        raise ValueError(f"defect {defect!r} does not exist on a {kind} ROI; use one of {defects_for(kind)}")
    if size < 32:
        raise ValueError(f"size {size} is too small to draw a disc; use 32 or more")
    if not severity > 0:
        raise ValueError(f"severity must be > 0, got {severity}")
    rng = np.random.default_rng([seed, ROI_KINDS.index(kind), 0 if defect is None else 1, index])
    if kind == "annulus":
        width = height = size
        radius = 0.48 * size
        jitter = 0.008 * size
        disc = Disc(size / 2 + rng.uniform(-jitter, jitter), size / 2 + rng.uniform(-jitter, jitter), radius,
                    rng.uniform(-0.035, 0.035))
        shape = {"kind": "annulus", "cx": size / 2, "cy": size / 2, "r": round(0.465 * size, 2),
                 "r_inner": round((HUB * 0.48 + 0.015) * size, 2)}
        mm_per_px = 320.0 / (2 * radius)  # a 320 mm disc
        margin = 0.0
    else:
        width, height = size, size // 2
        radius = 1.5 * size
        jitter = 0.01 * size
        disc = Disc(width / 2 + rng.uniform(-jitter, jitter), height / 2 + 0.70 * radius + rng.uniform(-jitter, jitter),
                    radius, -math.pi / 2 + rng.uniform(-0.035, 0.035))
        margin = round(0.03 * size)
        shape = {"kind": "rect", "x": margin, "y": margin, "w": width - 2 * margin, "h": height - 2 * margin}
        mm_per_px = 160.0 / radius  # a 320 mm disc seen closer
    rho, theta = _polar(disc, width, height)
    image = _render(disc, rho, theta, rng)
    mask = None
    if defect is not None:
        inside = _inside_crop(width, height, margin + 0.08 * min(width, height))
        mask = _DRAW[defect](image, disc, rho, inside, severity * max(width, height), rng)
        if not mask.any():
            raise AssertionError(f"the {defect} defect left an empty mask")  # a generator bug, never data
        mask = mask.astype(np.uint8) * 255
    image = _light(image, rng)
    return Sample(image, mask, shape, round(mm_per_px, 6), defect)


def write_dataset(
    out: Path, seed: int = 0, n_ok: int = 20, n_ng: int = 10, size: int = 256,
    roi_kinds: tuple[str, ...] = ROI_KINDS, role: str = DEFAULT_ROLE, severity: float = 1.0,
) -> list[Path]:
    """Write the samples of each ROI kind under ``out/<role>/<kind>/``; returns those folders.

    NG samples cycle through the kind's defects, so every defect appears once ``n_ng`` is large enough.
    """
    folders = []
    for kind in roi_kinds:
        folder = Path(out) / role / kind
        kinds = defects_for(kind)
        for label, count in (("ok", n_ok), ("ng", n_ng)):
            (folder / label).mkdir(parents=True, exist_ok=True)
            for index in range(count):
                defect = None if label == "ok" else kinds[index % len(kinds)]
                sample = make_sample(kind, size, seed, index, defect, severity)
                stem = folder / label / f"{label}_{index:03d}"
                _write_png(stem.with_suffix(".png"), sample.image)
                sidecar = {"mm_per_px": sample.mm_per_px, "shape_json": json.dumps(sample.shape), "role_id": role,
                           "roi_id": kind}
                if sample.mask is not None:
                    _write_png(stem.with_name(stem.name + "_mask.png"), sample.mask)
                    sidecar["defect"] = sample.defect
                stem.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
        folders.append(folder)
    return folders


# ---- rendering -----------------------------------------------------------------------------------
def _polar(disc: Disc, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel centre's radius (fraction of the disc's) and angle in the disc's own frame."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    dx, dy = xx - disc.cx, yy - disc.cy
    return np.hypot(dx, dy) / disc.radius, np.arctan2(dy, dx) - disc.angle


def _render(disc: Disc, rho: np.ndarray, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The OK part as float32 BGR (before lighting)."""
    height, width = rho.shape
    radius_px = rho * disc.radius
    grey = np.full(rho.shape, BACKGROUND, np.float32) + rng.normal(0, 3, rho.shape).astype(np.float32)
    hub = rho < HUB
    grey[hub] = HUB_GREY + 6 * np.sin(theta[hub] * 3)
    paint = (rho >= HUB) & (rho < PAINT)
    grey[paint] = PAINT_GREY + 4 * np.cos(theta[paint] - 0.6)  # satin sheen
    metal = (rho >= PAINT) & (rho < 1.0)
    fine, coarse = rng.uniform(3.5, 5.0), rng.uniform(11.0, 17.0)
    marks = (9 * np.sin(2 * np.pi * radius_px / fine + rng.uniform(0, 2 * np.pi))
             + 4 * np.sin(2 * np.pi * radius_px / coarse + rng.uniform(0, 2 * np.pi))
             + 6 * np.sin(2 * np.pi * rho * rng.uniform(7, 9)))  # chatter bands of the lathe
    grey[metal] = METAL_GREY + marks[metal]
    rim = (rho >= RIM) & (rho < 1.0)
    grey[rim] = RIM_GREY - 60 * (rho[rim] - RIM) / (1 - RIM) + 0.5 * marks[rim]
    vents = rim & (rho > RIM + 0.01) & (np.cos(VENTS * theta) > 0.8)
    grey[vents] = HOLE_GREY + 10
    grain = cv2.GaussianBlur(rng.normal(0, 7, rho.shape).astype(np.float32), (3, 3), 0.7)
    mottle = cv2.GaussianBlur(rng.normal(0, 1, rho.shape).astype(np.float32), (0, 0), max(width, height) / 24)
    mottle *= 6 / max(float(mottle.std()), 1e-6)
    grey[metal | paint] += grain[metal | paint] + mottle[metal | paint]
    _graphite_flecks(grey, metal, rng)
    for x, y in disc.holes():
        _drill(grey, x, y, HOLE_RADIUS * disc.radius)
    for k in range(LUG_HOLES):
        theta_k = disc.angle + 2 * np.pi * k / LUG_HOLES
        _drill(grey, disc.cx + 0.22 * disc.radius * math.cos(theta_k),
               disc.cy + 0.22 * disc.radius * math.sin(theta_k), 0.05 * disc.radius)
    return grey[..., None] * TINT


def _graphite_flecks(grey: np.ndarray, where: np.ndarray, rng: np.random.Generator) -> None:
    """Short dark flakes of graphite, the look of grey cast iron under magnification."""
    height, width = grey.shape
    flecks = np.zeros(grey.shape, np.uint8)
    for _ in range(height * width // 400):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        angle, length = rng.uniform(0, np.pi), rng.uniform(1.0, 2.5)
        end = (round(x + length * math.cos(angle)), round(y + length * math.sin(angle)))
        cv2.line(flecks, (int(x), int(y)), end, 1, 1)
    grey[(flecks > 0) & where] -= 16


def _drill(grey: np.ndarray, x: float, y: float, r: float) -> np.ndarray:
    """A drilled hole with a bright chamfer; returns the pixels it covers (chamfer included)."""
    height, width = grey.shape
    x0, x1 = max(0, int(x - 1.5 * r)), min(width, int(x + 1.5 * r) + 2)
    y0, y1 = max(0, int(y - 1.5 * r)), min(height, int(y + 1.5 * r) + 2)
    covered = np.zeros(grey.shape, bool)
    if x0 >= x1 or y0 >= y1:
        return covered
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
    d = np.hypot(xx - x, yy - y) / r
    patch = grey[y0:y1, x0:x1]
    chamfer = (d >= 1) & (d < 1.35)
    patch[chamfer] = 205 - 50 * (d[chamfer] - 1) / 0.35 + 25 * ((xx[chamfer] - x) / (r * d[chamfer]))
    patch[d < 1] = HOLE_GREY + 8 * d[d < 1]
    covered[y0:y1, x0:x1] = d < 1.35
    return covered


def _light(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lighting jitter: gain, offset and a linear gradient in a random direction; then 8-bit."""
    height, width = image.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi)
    ramp = ((xx / width - 0.5) * math.cos(direction) + (yy / height - 0.5) * math.sin(direction)) * rng.uniform(0, 12)
    lit = image * rng.uniform(0.95, 1.05) + rng.uniform(-5, 5) + ramp[..., None]
    return np.clip(np.rint(lit), 0, 255).astype(np.uint8)


def _inside_crop(width: int, height: int, margin: float) -> np.ndarray:
    inside = np.zeros((height, width), bool)
    m = math.ceil(margin)
    inside[m : height - m, m : width - m] = True
    return inside


def _pick(allowed: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """A random (x, y) pixel of ``allowed``."""
    ys, xs = np.nonzero(allowed)
    if len(ys) == 0:
        raise AssertionError("no room for the defect")  # the geometry above always leaves room
    i = rng.integers(len(ys))
    return int(xs[i]), int(ys[i])


def _friction(rho: np.ndarray, inside: np.ndarray) -> np.ndarray:
    return inside & (rho > PAINT + 0.04) & (rho < RIM - 0.04)


def _clear_of_holes(disc: Disc, allowed: np.ndarray, clearance: float) -> np.ndarray:
    """``allowed`` minus the pixels within ``clearance`` of a drilled hole's centre; ``allowed`` itself
    when that leaves nothing (a large defect at a high severity may then cover a hole)."""
    yy, xx = np.mgrid[0 : allowed.shape[0], 0 : allowed.shape[1]].astype(np.float32) + 0.5
    free = allowed.copy()
    for hx, hy in disc.holes():
        free &= np.hypot(xx - hx, yy - hy) > clearance
    return free if free.any() else allowed


def _blob(
    shape: tuple[int, int], x: int, y: int, size: float, rng: np.random.Generator, stretch: float = 1.0
) -> np.ndarray:
    """An irregular organic blob: a few ellipses, blurred and re-thresholded."""
    canvas = np.zeros(shape, np.float32)
    for _ in range(int(rng.integers(3, 7))):
        centre = (round(x + rng.normal(0, size / 3) * stretch), round(y + rng.normal(0, size / 3)))
        axes = (max(1, int(size * rng.uniform(0.3, 0.6) * stretch)), max(1, int(size * rng.uniform(0.3, 0.6))))
        cv2.ellipse(canvas, centre, axes, rng.uniform(0, 180), 0, 360, 1.0, -1)
    sigma = max(0.8, size / 6)
    return cv2.GaussianBlur(canvas, (0, 0), sigma) > 0.5


def _scratch(image, disc, rho, inside, extent, rng) -> np.ndarray:
    """A gouge across the machining marks: bright bare metal with a dark shadowed lip."""
    x, y = _pick(_friction(rho, inside), rng)
    angle, length = rng.uniform(0, np.pi), extent * rng.uniform(0.25, 0.45)
    bend = rng.uniform(-0.08, 0.08) * length
    t = np.linspace(-0.5, 0.5, 12)
    px = x + t * length * math.cos(angle) - bend * (1 - 4 * t**2) * math.sin(angle)
    py = y + t * length * math.sin(angle) + bend * (1 - 4 * t**2) * math.cos(angle)
    points = np.round(np.stack([px, py], axis=1)).astype(np.int32)
    thickness = max(2, round(extent / 90))
    line, lip = np.zeros(rho.shape, np.uint8), np.zeros(rho.shape, np.uint8)
    cv2.polylines(lip, [points + 1], False, 1, thickness)
    cv2.polylines(line, [points], False, 1, thickness)
    on_disc = (rho > HUB) & (rho < 1.0)
    image[(lip > 0) & on_disc] = 70
    image[(line > 0) & on_disc] = 232
    return cv2.dilate(((line | lip) > 0).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & on_disc


def _paint_spot(image, disc, rho, inside, extent, rng) -> np.ndarray:
    """A splash of marker or primer paint on the machined face."""
    x, y = _pick(_friction(rho, inside), rng)
    spot = _blob(rho.shape, x, y, extent * rng.uniform(0.05, 0.08), rng)
    colour = np.array(PAINT_COLOURS[int(rng.integers(len(PAINT_COLOURS)))], np.float32)
    image[spot] = colour + rng.normal(0, 4, (int(spot.sum()), 1)).astype(np.float32)
    return spot


def _missing_paint(image, disc, rho, inside, extent, rng) -> np.ndarray:
    """Bare metal where the painted band has flaked off."""
    band = (rho >= HUB + 0.035) & (rho < PAINT - 0.01)
    x, y = _pick(band & inside, rng)
    patch = _blob(rho.shape, x, y, extent * rng.uniform(0.05, 0.08), rng, stretch=1.6) & (rho >= HUB) & (rho < PAINT)
    image[patch] = (METAL_GREY + 15 + rng.normal(0, 7, (int(patch.sum()), 1))).astype(np.float32)
    return patch


def _crack(image, disc, rho, inside, extent, rng) -> np.ndarray:
    """A thin dark jagged crack from a drilled hole's edge toward its nearest neighbour, where they start."""
    friction = _friction(rho, inside)
    holes = disc.holes()
    height, width = rho.shape
    starts = [h for h in holes if 0 <= h[1] < height and 0 <= h[0] < width and friction[int(h[1]), int(h[0])]]
    if not starts:
        raise AssertionError("no drilled hole inside the crop")  # the geometry above always shows some
    hx, hy = starts[int(rng.integers(len(starts)))]
    tx, ty = min((h for h in holes if h != (hx, hy)), key=lambda h: math.hypot(h[0] - hx, h[1] - hy))
    edge = 1.4 * HOLE_RADIUS * disc.radius
    gap = math.hypot(tx - hx, ty - hy) - 2 * edge
    heading = math.atan2(ty - hy, tx - hx)
    steps = np.linspace(0, gap * rng.uniform(0.55, 0.85), 24)
    wander = np.cumsum(rng.normal(0, 0.6, len(steps)))
    wander -= wander[0]
    px = hx + (edge + steps) * math.cos(heading) - wander * math.sin(heading)
    py = hy + (edge + steps) * math.sin(heading) + wander * math.cos(heading)
    line = np.zeros(rho.shape, np.uint8)
    thickness = max(1, round(extent / 100))
    cv2.polylines(line, [np.round(np.stack([px, py], axis=1)).astype(np.int32)], False, 1, thickness)
    crack = (line > 0) & (rho > PAINT) & (rho < 1.0)
    image[crack] = 30
    return cv2.dilate(crack.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def _extra_hole(image, disc, rho, inside, extent, rng) -> np.ndarray:
    """A hole drilled off the pattern, between the rows or between two holes of a row."""
    r = HOLE_RADIUS * disc.radius * extent / max(rho.shape)
    between_rows = _friction(rho, inside) & (rho > 0.58) & (rho < 0.84)
    x, y = _pick(_clear_of_holes(disc, between_rows, r + 2.2 * HOLE_RADIUS * disc.radius), rng)
    grey = image[..., 1] / TINT[1]
    covered = _drill(grey, x + 0.5, y + 0.5, r)
    image[covered] = grey[covered][:, None] * TINT
    return covered


def _dent(image, disc, rho, inside, extent, rng) -> np.ndarray:
    """A knock: a shallow depression lit from one side, bright rim on one flank, shadow on the other."""
    r = extent * rng.uniform(0.045, 0.07)
    x, y = _pick(_clear_of_holes(disc, _friction(rho, inside), r + 1.4 * HOLE_RADIUS * disc.radius), rng)
    yy, xx = np.mgrid[0 : rho.shape[0], 0 : rho.shape[1]].astype(np.float32) + 0.5
    dx, dy = (xx - x - 0.5) / r, (yy - y - 0.5) / r
    d2 = dx**2 + dy**2
    dent = d2 <= 1
    light = rng.uniform(0, 2 * np.pi)
    slope = (dx * math.cos(light) + dy * math.sin(light)) * (1 - d2)
    image[dent] += (110 * slope[dent] - 25 * (1 - d2[dent]))[:, None]
    return dent


_DRAW: dict[str, Callable[..., np.ndarray]] = {
    "scratch": _scratch, "paint_spot": _paint_spot, "missing_paint": _missing_paint,
    "crack": _crack, "extra_hole": _extra_hole, "dent": _dent,
}


def _write_png(path: Path, image: np.ndarray) -> None:
    """PNG through imencode + write_bytes: deterministic bytes, and non-ASCII paths work on Windows."""
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path}")
    path.write_bytes(data.tobytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write <role>/<roi>/{ok,ng}/ into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-ok", type=int, default=20)
    parser.add_argument("--n-ng", type=int, default=10)
    parser.add_argument("--size", type=int, default=256, help="crop width in px (rect crops are half as tall)")
    parser.add_argument("--roi-kind", choices=(*ROI_KINDS, "both"), default="both")
    parser.add_argument("--role", default=DEFAULT_ROLE, help="role_id written into the sidecars")
    parser.add_argument("--severity", type=float, default=1.0, help="defect size factor (2: twice as large)")
    args = parser.parse_args(argv)
    if min(args.seed, args.n_ok, args.n_ng) < 0:
        parser.error("--seed, --n-ok and --n-ng must be >= 0")
    if args.size < 32:
        parser.error("--size must be >= 32")
    if not args.severity > 0:
        parser.error("--severity must be > 0")
    kinds = ROI_KINDS if args.roi_kind == "both" else (args.roi_kind,)
    for folder in write_dataset(args.out, args.seed, args.n_ok, args.n_ng, args.size, kinds, args.role, args.severity):
        print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
