"""A procedurally generated street-scene dataset that needs no download.

Every scene is drawn from a seed with numpy and PIL only: a road in perspective with lane markings, kerbs and
sidewalks, building facades with windows, a far skyline, trees, poles, people and vehicles placed far to near (so
nearer objects occlude farther ones and are larger and lower in the image), then per-class textures, shadows, uneven
lighting, a per-scene colour cast, blur and sensor noise. The eight categories are those of a street-scene transfer
experiment, with their Cityscapes colours; a thin band of pixels at object borders is labelled ``255`` (void), as in
Cityscapes, because a blurred border pixel belongs to neither side.

Colours vary per scene inside plausible, mostly distinct ranges, and clothes and car paint take any colour, so a
per-pixel colour classifier is not enough but a small CNN learns the scenes well.

`write_dataset` writes the plain folder layout of `kerasseg.data.folder` (RGB images, palette-PNG masks and a
``classes.json``), so the synthetic data is read back through exactly the loader that reads users' own data.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["CLASS_NAMES", "PALETTE", "IGNORE_LABEL", "generate_scene", "write_dataset", "read_params", "scene_seeds"]

CLASS_NAMES = ("road", "sidewalk", "building", "pole", "vegetation", "sky", "person", "vehicle")
PALETTE = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (153, 153, 153), (107, 142, 35), (70, 130, 180),
           (220, 20, 60), (0, 0, 142))
IGNORE_LABEL = 255
ROAD, SIDEWALK, BUILDING, POLE, VEGETATION, SKY, PERSON, VEHICLE = range(len(CLASS_NAMES))

# Bumped whenever the drawing changes, so that a dataset written by an older generator is never reused silently.
GENERATOR_VERSION = 2
PARAMS_FILE = "synthetic.json"
_MIN_SIZE = 32
_SPLIT_CODES = {"train": 0, "val": 1}

# Per-class texture amplitudes (pixel units): fine per-pixel grain and coarse 2x2 blotches. Sky stays smooth,
# asphalt is grainy, foliage is blotchy: texture is one of the cues besides shape and context.
_FINE_GRAIN = np.array([7.0, 4.0, 3.0, 2.0, 10.0, 1.0, 2.0, 2.0], np.float32)
_COARSE_GRAIN = np.array([3.0, 5.0, 4.0, 0.0, 22.0, 1.0, 2.0, 1.0], np.float32)


def _rgb(c) -> tuple[int, int, int]:
    c = np.clip(np.rint(np.asarray(c, np.float64)), 0, 255).astype(int)
    return int(c[0]), int(c[1]), int(c[2])


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """HSV (hue in degrees, s and v in 0..1) to an RGB float array in pixel units."""
    h = (h % 360.0) / 60.0
    c = v * s
    x = c * (1 - abs(h % 2 - 1))
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h) % 6]
    m = v - c
    return 255.0 * np.array([r + m, g + m, b + m])


class _Canvas:
    """Draws every shape twice: its colour on the image and its class on the label map."""

    def __init__(self, height: int, width: int):
        self.image = Image.new("RGB", (width, height))
        self.label = Image.new("L", (width, height), SKY)
        self._img = ImageDraw.Draw(self.image)
        self._lab = ImageDraw.Draw(self.label)

    def polygon(self, points, color, cls=None):
        points = [(float(x), float(y)) for x, y in points]
        self._img.polygon(points, fill=_rgb(color))
        if cls is not None:
            self._lab.polygon(points, fill=cls)

    def ellipse(self, cx, cy, rx, ry, color, cls=None):
        box = [float(cx - rx), float(cy - ry), float(cx + rx), float(cy + ry)]
        self._img.ellipse(box, fill=_rgb(color))
        if cls is not None:
            self._lab.ellipse(box, fill=cls)

    def rect(self, x0, y0, x1, y1, color, cls=None):
        self.polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], color, cls)


class _Street:
    """Perspective geometry of one scene.

    A ground point at lateral offset ``lat`` (pixels at the bottom row) and depth factor ``s`` (1 at the bottom row,
    0 at the horizon, ``s = 1 / distance``) projects to ``x = vx + s * lat``, ``y = horizon + s * (height - horizon)``.
    Heights scale with ``s`` too: an object ``k`` camera heights tall is ``k * s * (height - horizon)`` pixels.
    """

    def __init__(self, rng: np.random.Generator, height: int, width: int):
        self.h, self.w = height, width
        self.horizon = height * rng.uniform(0.36, 0.5)
        self.vx = width * rng.uniform(0.38, 0.62)
        self.unit = height - self.horizon  # one camera height at s = 1, in pixels
        self.road_left = -width * rng.uniform(0.28, 0.55)
        self.road_right = width * rng.uniform(0.28, 0.55)
        self.kerb = width * rng.uniform(0.012, 0.025)
        self.walk_left = self.road_left - self.kerb - width * rng.uniform(0.16, 0.4)
        self.walk_right = self.road_right + self.kerb + width * rng.uniform(0.16, 0.4)

    def x(self, lat, s):
        return self.vx + s * lat

    def y(self, s):
        return self.horizon + s * self.unit

    def pt(self, lat, s, up=0.0):
        """Image point of ground position (lat, s) raised by ``up`` camera heights."""
        return self.x(lat, s), self.y(s) - up * s * self.unit

    def s_at_edge(self, lat) -> float:
        """Depth factor where the line of lateral offset ``lat`` leaves the image (at least the bottom row)."""
        edge = -self.vx if lat < 0 else self.w - self.vx
        return max(1.05, 1.05 * edge / lat)


def _sky(canvas: _Canvas, rng, st: _Street, palette) -> None:
    top, bottom = palette["sky_top"], palette["sky_bottom"]
    n = 8
    for i in range(n):
        t = i / n
        canvas.rect(0, st.horizon * t - 1, st.w, st.horizon * (t + 1 / n) + 1, top * (1 - t) + bottom * t, SKY)
    for _ in range(rng.integers(0, 4)):
        cx, cy = rng.uniform(0, st.w), rng.uniform(0, st.horizon * 0.7)
        rx = st.w * rng.uniform(0.05, 0.15)
        canvas.ellipse(cx, cy, rx, rx * rng.uniform(0.2, 0.4), bottom * 0.5 + 255 * 0.5 * rng.uniform(0.8, 1.0))


def _skyline(canvas: _Canvas, rng, st: _Street, palette) -> None:
    """Far buildings and tree tops along the horizon, hazy (blended towards the sky colour)."""
    haze = rng.uniform(0.25, 0.5)
    x = rng.uniform(-st.w * 0.05, 0)
    while x < st.w:
        bw = st.w * rng.uniform(0.04, 0.14)
        bh = st.horizon * rng.uniform(0.08, 0.45)
        color = palette["building"] * rng.uniform(0.7, 1.15) * (1 - haze) + palette["sky_bottom"] * haze
        if rng.random() < 0.8:
            canvas.rect(x, st.horizon - bh, x + bw, st.horizon + 1, color, BUILDING)
        elif rng.random() < 0.7:
            green = palette["vegetation"] * (1 - haze) + palette["sky_bottom"] * haze
            r = bw * 0.5
            canvas.ellipse(x + r, st.horizon - r * 0.6, r, r * 0.8, green, VEGETATION)
            canvas.rect(x, st.horizon - r * 0.6, x + bw, st.horizon + 1, green, VEGETATION)
        x += bw


def _ground(canvas: _Canvas, rng, st: _Street, palette) -> None:
    far, near = 0.0, 2.0
    canvas.rect(-1, st.horizon, st.w + 1, st.h + 1, palette["sidewalk"], SIDEWALK)
    # Paving: transverse joints, equally spaced in distance, hence in 1/s.
    joint = palette["sidewalk"] * rng.uniform(0.75, 0.9)
    step = rng.uniform(0.4, 1.0)
    for side in (-1, 1):
        inner = st.road_left - st.kerb if side < 0 else st.road_right + st.kerb
        outer = st.walk_left if side < 0 else st.walk_right
        dist = rng.uniform(0.9, 1.1)
        while dist < 25:
            s = 1.0 / dist
            w = max(0.6, 0.006 * s * st.unit)
            canvas.polygon([st.pt(inner, s), st.pt(outer * 1.6, s), st.pt(outer * 1.6, s) + np.array([0, w]),
                            st.pt(inner, s) + np.array([0, w])], joint)
            dist += step
    canvas.polygon([st.pt(0, far), st.pt(st.road_left, near), st.pt(st.road_right, near)], palette["road"], ROAD)
    kerb_colour = palette["kerb"]
    for inner, outer in ((st.road_left, st.road_left - st.kerb), (st.road_right, st.road_right + st.kerb)):
        canvas.polygon([st.pt(0, far), st.pt(inner, near), st.pt(outer, near)], kerb_colour, SIDEWALK)
    # Lane markings: dashes of fixed length and period in distance.
    paint = palette["marking"]
    splits = ((0.5,), (0.33, 0.67), (0.5,))[rng.integers(0, 3)]
    lanes = [st.road_left + (st.road_right - st.road_left) * f for f in splits]
    mark_w = st.w * rng.uniform(0.008, 0.014)
    period, length = rng.uniform(1.5, 3.0), rng.uniform(0.5, 1.2)
    for lat in lanes:
        dist = rng.uniform(0.5, 1.0)
        while dist < 40:
            s0, s1 = 1.0 / (dist + length), 1.0 / dist
            canvas.polygon([st.pt(lat - mark_w / 2, s0), st.pt(lat + mark_w / 2, s0), st.pt(lat + mark_w / 2, s1),
                            st.pt(lat - mark_w / 2, s1)], paint)
            dist += period
    for lat in (st.road_left + mark_w * 1.5, st.road_right - mark_w * 1.5):
        if rng.random() < 0.5:
            canvas.polygon([st.pt(lat - mark_w / 3, far), st.pt(lat + mark_w / 3, far), st.pt(lat + mark_w / 3, near),
                            st.pt(lat - mark_w / 3, near)], paint)
    if rng.random() < 0.3:  # zebra crossing
        dist = rng.uniform(1.5, 5.0)
        s0, s1 = 1.0 / (dist + 0.7), 1.0 / dist
        stripes = 10
        span = (st.road_right - st.road_left) / stripes
        for i in range(stripes):
            a = st.road_left + (i + 0.25) * span
            b = a + span * 0.5
            canvas.polygon([st.pt(a, s0), st.pt(b, s0), st.pt(b, s1), st.pt(a, s1)], paint)


def _facades(canvas: _Canvas, rng, st: _Street, palette) -> None:
    """Building fronts parallel to the street on both sides, split into buildings of random height and colour."""
    for lat in (st.walk_left, st.walk_right):
        s = rng.uniform(0.05, 0.14)
        s_end = st.s_at_edge(lat)
        while s < s_end:
            s1 = s * rng.uniform(1.25, 1.9)
            if rng.random() < 0.88:
                _building(canvas, rng, st, lat, s, s1, palette)
            s = s1


def _building(canvas: _Canvas, rng, st: _Street, lat, s0, s1, palette) -> None:
    height = rng.uniform(2.5, 9.0)  # in camera heights (about 4 to 14 m)
    base = palette["building"] * rng.uniform(0.65, 1.3) + rng.normal(0, 12, 3)
    canvas.polygon([st.pt(lat, s0), st.pt(lat, s1), st.pt(lat, s1, height), st.pt(lat, s0, height)], base, BUILDING)

    def quad(t0, t1, v0, v1, color):
        # Distance is linear along the facade, so interpolate in 1/s.
        d0, d1 = 1 / s0, 1 / s1
        sa, sb = 1 / (d0 + (d1 - d0) * t0), 1 / (d0 + (d1 - d0) * t1)
        canvas.polygon([st.pt(lat, sa, v0), st.pt(lat, sb, v0), st.pt(lat, sb, v1), st.pt(lat, sa, v1)], color)

    floors = max(1, int(height / 2.0))
    cols = int(rng.integers(2, 7))
    glass = palette["window"] * rng.uniform(0.8, 1.2)
    win_w, win_h = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.6)
    floor_h = height / floors
    # Windows narrower than about a pixel are not drawn: far facades look plain, as in a real camera.
    if s0 * st.unit * floor_h * win_h >= 1.5:
        for f in range(floors):
            v0 = f * floor_h + floor_h * (1 - win_h) * 0.6
            for c in range(cols):
                t0 = (c + (1 - win_w) / 2) / cols
                quad(t0, t0 + win_w / cols, v0, v0 + floor_h * win_h, glass)
    if rng.random() < 0.5:  # cornice / floor lines
        line = base * rng.uniform(0.6, 0.85)
        for f in range(1, floors + 1):
            v = f * floor_h
            quad(0, 1, v - 0.08, v, line)
    if rng.random() < 0.35:  # hedge along the base
        hedge_h = rng.uniform(0.4, 0.9)
        green = palette["vegetation"] * rng.uniform(0.7, 1.1)
        canvas.polygon([st.pt(lat, s0), st.pt(lat, s1), st.pt(lat, s1, hedge_h), st.pt(lat, s0, hedge_h)], green,
                       VEGETATION)


def _walk_lat(rng, st: _Street, where: str | None = None) -> float:
    """A lateral position on a sidewalk (``where`` = ``"kerb"`` keeps it close to the road)."""
    side = rng.integers(0, 2)
    inner = st.road_left - st.kerb if side == 0 else st.road_right + st.kerb
    outer = st.walk_left if side == 0 else st.walk_right
    f = rng.uniform(0.1, 0.3) if where == "kerb" else rng.uniform(0.15, 0.85)
    return inner + (outer - inner) * f


def _pole(canvas: _Canvas, rng, st: _Street, lat, s, palette) -> None:
    x, y = st.pt(lat, s)
    width = max(3.0, s * st.w * rng.uniform(0.016, 0.026))
    top = y - s * st.unit * rng.uniform(2.5, 5.0)
    metal = palette["pole"] * rng.uniform(0.85, 1.15)
    canvas.rect(x - width / 2, top, x + width / 2, y, metal, POLE)
    # Lit and shaded sides of a cylinder, image only.
    canvas.rect(x - width / 2, top, x - width / 2 + max(1.0, width / 3), y, metal * 1.35 + 15)
    canvas.rect(x + width / 2 - max(1.0, width / 3), top, x + width / 2, y, metal * 0.65)
    if rng.random() < 0.6:  # street-light arm towards the road
        arm = s * st.unit * rng.uniform(0.4, 0.9) * (1 if lat < 0 else -1)
        thick = max(2.0, width * 0.6)
        x1 = x + arm
        canvas.polygon([(x, top), (x1, top - thick), (x1, top), (x, top + thick)], metal, POLE)
        canvas.rect(min(x1, x1 - arm * 0.25), top - thick * 0.5, max(x1, x1 - arm * 0.25), top + thick, metal * 0.6,
                    POLE)


def _tree(canvas: _Canvas, rng, st: _Street, lat, s, palette) -> None:
    x, y = st.pt(lat, s)
    unit = s * st.unit
    trunk_h = unit * rng.uniform(1.0, 2.0)
    trunk_w = max(2.0, s * st.w * rng.uniform(0.012, 0.022))
    canvas.rect(x - trunk_w / 2, y - trunk_h, x + trunk_w / 2, y, palette["trunk"] * rng.uniform(0.8, 1.2),
                VEGETATION)
    radius = unit * rng.uniform(0.6, 1.2)
    cy = y - trunk_h - radius * 0.6
    green = palette["vegetation"] * rng.uniform(0.85, 1.15)
    for _ in range(int(rng.integers(4, 9))):
        dx, dy = rng.normal(0, radius * 0.4, 2)
        r = radius * rng.uniform(0.45, 0.8)
        canvas.ellipse(x + dx, cy + dy, r, r * rng.uniform(0.8, 1.1), green * rng.uniform(0.8, 1.15), VEGETATION)
    for _ in range(int(rng.integers(3, 8))):  # shade inside the crown, image only
        dx, dy = rng.normal(0, radius * 0.45, 2)
        r = radius * rng.uniform(0.1, 0.25)
        canvas.ellipse(x + dx, cy + dy, r, r, green * rng.uniform(0.45, 0.7))


_SKIN = np.array([[235, 200, 170], [205, 160, 125], [160, 115, 80], [110, 75, 50], [80, 55, 40]], np.float64)


def _person(canvas: _Canvas, rng, st: _Street, lat, s, palette) -> None:
    x, y = st.pt(lat, s)
    h = s * st.unit * rng.uniform(1.05, 1.28)  # 1.6 - 1.9 m with the camera at 1.5 m
    skin = _SKIN[rng.integers(0, len(_SKIN))] * rng.uniform(0.9, 1.1)
    top = _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.9), rng.uniform(0.12, 0.9))
    legs = _hsv(rng.uniform(190, 250), rng.uniform(0.0, 0.6), rng.uniform(0.1, 0.55)) if rng.random() < 0.8 \
        else _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.8), rng.uniform(0.1, 0.8))
    hair = _hsv(rng.uniform(20, 45), rng.uniform(0.3, 0.8), rng.uniform(0.08, 0.6))
    shoulder, hip = h * rng.uniform(0.12, 0.15), h * rng.uniform(0.09, 0.11)
    y_sh, y_hip = y - h * 0.82, y - h * 0.47
    stride = h * rng.uniform(-0.12, 0.12)
    leg_w = h * 0.075
    for foot in (x - hip * 0.5 + stride / 2, x + hip * 0.5 - stride / 2):
        hx = x + (foot - x) * 0.3
        canvas.polygon([(hx - leg_w, y_hip), (hx + leg_w, y_hip), (foot + leg_w * 0.6, y), (foot - leg_w * 0.6, y)],
                       legs, PERSON)
    swing = h * rng.uniform(-0.06, 0.06)
    arm_w = h * 0.045
    for side in (-1, 1):
        sx = x + side * shoulder * 0.85
        hx = sx + side * h * 0.03 + swing * side
        canvas.polygon([(sx - arm_w, y_sh), (sx + arm_w, y_sh), (hx + arm_w * 0.8, y - h * 0.45),
                        (hx - arm_w * 0.8, y - h * 0.45)], top * 0.85, PERSON)
    canvas.polygon([(x - shoulder, y_sh), (x + shoulder, y_sh), (x + hip, y_hip + h * 0.03),
                    (x - hip, y_hip + h * 0.03)], top, PERSON)
    canvas.rect(x - h * 0.035, y_sh - h * 0.05, x + h * 0.035, y_sh + 1, skin, PERSON)  # neck
    head_r = h * 0.065
    canvas.ellipse(x, y - h * 0.9, head_r, head_r * 1.2, skin, PERSON)
    canvas.ellipse(x, y - h * 0.9 - head_r * 0.5, head_r * 1.02, head_r * 0.75, hair, PERSON)
    if rng.random() < 0.3:  # bag
        bx = x + shoulder * rng.choice([-1.1, 1.1])
        canvas.rect(bx - h * 0.05, y - h * 0.6, bx + h * 0.05, y - h * 0.45, _hsv(rng.uniform(0, 60), 0.5, 0.3),
                    PERSON)


def _paint(rng) -> np.ndarray:
    kind = rng.random()
    if kind < 0.45:  # white, black, silver, grey
        return np.full(3, rng.choice([rng.uniform(20, 50), rng.uniform(120, 190), rng.uniform(200, 240)]))
    return _hsv(rng.uniform(0, 360), rng.uniform(0.4, 0.95), rng.uniform(0.25, 0.85))


def _vehicle_rear(canvas: _Canvas, rng, st: _Street, lat, s, palette) -> None:
    """A car, van or bus on the road seen from behind (or the front)."""
    x, y = st.pt(lat, s)
    unit = s * st.unit
    kind = rng.choice(["car", "car", "car", "van", "bus"])
    w = unit * {"car": 1.2, "van": 1.35, "bus": 1.65}[kind] * rng.uniform(0.92, 1.08)
    h = unit * {"car": 0.95, "van": 1.35, "bus": 2.0}[kind] * rng.uniform(0.92, 1.08)
    body = _paint(rng)
    glass = palette["glass"] * rng.uniform(0.8, 1.2)
    tyre = np.array([20, 20, 22]) * rng.uniform(0.8, 1.5)
    wheel_h = h * 0.14
    for side in (-1, 1):
        canvas.rect(x + side * w * 0.42 - w * 0.08, y - wheel_h, x + side * w * 0.42 + w * 0.08, y, tyre, VEHICLE)
    if kind == "car":
        body_top = y - h * 0.55
        canvas.rect(x - w / 2, body_top, x + w / 2, y - wheel_h * 0.6, body, VEHICLE)
        roof = w * rng.uniform(0.3, 0.38)
        canvas.polygon([(x - w * 0.45, body_top + 1), (x + w * 0.45, body_top + 1), (x + roof, y - h),
                        (x - roof, y - h)], body, VEHICLE)
        canvas.polygon([(x - w * 0.38, body_top), (x + w * 0.38, body_top), (x + roof * 0.9, y - h * 0.93),
                        (x - roof * 0.9, y - h * 0.93)], glass)
    else:
        canvas.rect(x - w / 2, y - h, x + w / 2, y - wheel_h * 0.6, body, VEHICLE)
        canvas.rect(x - w * 0.42, y - h * 0.92, x + w * 0.42, y - h * (0.62 if kind == "van" else 0.55), glass)
    light = _hsv(rng.uniform(350, 370), 0.85, rng.uniform(0.6, 0.95))
    ly = y - h * 0.42
    for side in (-1, 1):
        canvas.rect(x + side * w * 0.44 - w * 0.06, ly, x + side * w * 0.44 + w * 0.06, ly + h * 0.08, light)
    plate = np.array([235, 235, 225]) if rng.random() < 0.7 else np.array([240, 200, 40])
    canvas.rect(x - w * 0.13, y - h * 0.28, x + w * 0.13, y - h * 0.19, plate)
    canvas.rect(x - w / 2, y - wheel_h * 1.3, x + w / 2, y - wheel_h * 0.6, body * 0.4, VEHICLE)  # bumper


def _vehicle_parked(canvas: _Canvas, rng, st: _Street, lat, dist, palette) -> None:
    """A car parked along the kerb: its side (facing the road) and its near end."""
    length = rng.uniform(2.6, 3.2)  # in camera heights (about 4 - 4.8 m)
    width, height = rng.uniform(1.1, 1.3), rng.uniform(0.9, 1.05)
    s_near, s_far = 1.0 / dist, 1.0 / (dist + length)
    inner = lat
    outer = lat - width if lat < 0 else lat + width
    body = _paint(rng)
    glass = palette["glass"] * rng.uniform(0.8, 1.2)
    belt = 0.55
    canvas.polygon([st.pt(inner, s_far, 0.15), st.pt(inner, s_near, 0.15), st.pt(inner, s_near, belt),
                    st.pt(inner, s_far, belt)], body, VEHICLE)
    canvas.polygon([st.pt(inner, 1 / (dist + length * 0.15), belt), st.pt(inner, 1 / (dist + length * 0.8), belt),
                    st.pt(inner, 1 / (dist + length * 0.72), height), st.pt(inner, 1 / (dist + length * 0.3), height)],
                   body, VEHICLE)
    canvas.polygon([st.pt(inner, 1 / (dist + length * 0.2), belt), st.pt(inner, 1 / (dist + length * 0.75), belt),
                    st.pt(inner, 1 / (dist + length * 0.68), height * 0.94),
                    st.pt(inner, 1 / (dist + length * 0.33), height * 0.94)], glass)
    tyre = np.array([22, 22, 24])
    for f in (0.18, 0.8):
        s = 1 / (dist + length * f)
        cx, cy = st.pt(inner, s, 0.16)
        r = 0.17 * s * st.unit
        canvas.ellipse(cx, cy, r * 0.55, r, tyre, VEHICLE)
    # Near end: a rectangle in the plane s = s_near.
    (xa, ya), (xb, _) = st.pt(inner, s_near, 0.1), st.pt(outer, s_near, 0.1)
    _, yt = st.pt(inner, s_near, belt + 0.05)
    canvas.rect(min(xa, xb), yt, max(xa, xb), ya, body * 0.85, VEHICLE)
    canvas.rect(min(xa, xb), ya - (ya - yt) * 0.3, max(xa, xb), ya, body * 0.45, VEHICLE)


def _scene_palette(rng) -> dict:
    """Per-scene base colours, inside ranges that keep the classes apart."""
    overcast = rng.random() < 0.35
    if overcast:
        g = rng.uniform(175, 225)
        sky_top = np.array([g - 8, g - 3, g + 8])
        sky_bottom = np.array([g + 12, g + 14, g + 18])
    else:
        sky_top = _hsv(rng.uniform(200, 225), rng.uniform(0.45, 0.7), rng.uniform(0.7, 0.9))
        sky_bottom = _hsv(rng.uniform(195, 215), rng.uniform(0.15, 0.35), rng.uniform(0.88, 1.0))
    road_v = rng.uniform(55, 105)
    road = np.array([road_v, road_v, road_v]) + rng.normal(0, 3, 3) + np.array([0, 0, rng.uniform(0, 6)])
    walk_v = road_v + rng.uniform(45, 90)
    walk = _hsv(rng.uniform(15, 40), rng.uniform(0.03, 0.22), min(walk_v, 230) / 255)
    building = _hsv(rng.uniform(0, 60) if rng.random() < 0.7 else rng.uniform(0, 360), rng.uniform(0.05, 0.35),
                    rng.uniform(0.3, 0.75))
    return {
        "sky_top": sky_top,
        "sky_bottom": sky_bottom,
        "road": road,
        "sidewalk": walk,
        "kerb": np.full(3, min(walk_v * rng.uniform(1.05, 1.25), 245)) if rng.random() < 0.7
        else np.full(3, road_v * 0.6),
        "marking": np.array([235, 235, 230]) if rng.random() < 0.8 else np.array([235, 200, 60]),
        "building": building,
        "window": _hsv(rng.uniform(190, 230), rng.uniform(0.1, 0.4), rng.uniform(0.12, 0.35)),
        "vegetation": _hsv(rng.uniform(75, 125), rng.uniform(0.45, 0.8), rng.uniform(0.3, 0.6)),
        "trunk": _hsv(rng.uniform(20, 35), rng.uniform(0.35, 0.6), rng.uniform(0.25, 0.45)),
        # Poles contrast with the facades behind them: mostly dark paint, sometimes mid-grey metal.
        "pole": np.full(3, rng.uniform(28, 65)) if rng.random() < 0.7 else np.full(3, rng.uniform(105, 150)),
        "glass": _hsv(rng.uniform(190, 230), rng.uniform(0.1, 0.4), rng.uniform(0.08, 0.25)),
    }


def _objects(canvas: _Canvas, rng, st: _Street, palette) -> None:
    """Places trees, poles, people and vehicles and draws them far to near, so that nearer ones occlude."""
    items = []  # (depth factor, draw function, arguments)
    for _ in range(rng.integers(0, 4)):
        items.append((rng.uniform(0.15, 0.9), _tree, _walk_lat(rng, st, "kerb")))
    for _ in range(rng.integers(2, 6)):
        items.append((rng.uniform(0.3, 1.4), _pole, _walk_lat(rng, st, "kerb")))
    for _ in range(rng.integers(2, 7)):
        s = rng.uniform(0.3, 1.05)
        lat = _walk_lat(rng, st) if rng.random() < 0.8 else rng.uniform(st.road_left, st.road_right)
        items.append((s, _person, lat))
    lanes = st.road_right - st.road_left
    for _ in range(rng.integers(1, 4)):
        s = rng.uniform(0.16, 0.95)
        lat = st.road_left + lanes * rng.uniform(0.2, 0.8)
        items.append((s, _vehicle_rear, lat))
    for _ in range(rng.integers(0, 3)):
        dist = rng.uniform(1.3, 6.0)
        side_lat = st.road_left + st.w * 0.01 if rng.random() < 0.5 else st.road_right - st.w * 0.01
        items.append((1.0 / dist, _vehicle_parked, side_lat, dist))
    items.sort(key=lambda item: item[0])
    for item in items:
        s, draw, lat = item[:3]
        draw(canvas, rng, st, lat, item[3] if len(item) > 3 else s, palette)


def _void_band(label: np.ndarray) -> np.ndarray:
    """Labels the pixels next to a class border as void.

    Both sides of a border become void (a 2 px band), except pixels of the thin classes (poles, people), which
    keep their label so that a 2 px pole is not erased; their borders get a 1 px band on the outside.
    """
    edge = np.zeros(label.shape, bool)
    dx = label[:, 1:] != label[:, :-1]
    dy = label[1:, :] != label[:-1, :]
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    edge &= (label != POLE) & (label != PERSON)
    out = label.copy()
    out[edge] = IGNORE_LABEL
    return out


def _finish(rng, canvas: _Canvas, st: _Street) -> np.ndarray:
    """Texture, shadow, lighting, colour cast, blur and sensor noise on the drawn image."""
    h, w = st.h, st.w
    label = np.asarray(canvas.label)
    img = np.asarray(canvas.image, np.float32)
    fine = rng.standard_normal((h, w), dtype=np.float32)
    coarse = rng.standard_normal(((h + 1) // 2, (w + 1) // 2), dtype=np.float32)
    coarse = np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)[:h, :w]
    img += (fine * _FINE_GRAIN[label] + coarse * _COARSE_GRAIN[label])[..., None]

    if rng.random() < 0.5:  # cast shadow of one row of facades across the street
        mask = Image.new("L", (w, h), 0)
        side = st.walk_left if rng.random() < 0.5 else st.walk_right
        edge = st.road_left + (st.road_right - st.road_left) * rng.uniform(0.2, 0.8)
        d0 = rng.uniform(1.0, 4.0)
        ImageDraw.Draw(mask).polygon(
            [st.pt(side * 3, 1 / (d0 + 6)), st.pt(edge, 1 / (d0 + 6)), st.pt(edge, 1 / d0), st.pt(side * 3, 1 / d0)],
            fill=1)
        shade = (np.asarray(mask) > 0) & (label <= SIDEWALK)
        img[shade] *= rng.uniform(0.55, 0.8)

    light = rng.standard_normal((3, 5)).astype(np.float32)
    light = np.asarray(Image.fromarray(light, "F").resize((w, h), Image.BILINEAR))
    gain = rng.uniform(0.7, 1.2) * (1 + 0.12 * light)
    cast = rng.uniform(0.9, 1.1, 3).astype(np.float32)
    img = img * gain[..., None] * cast
    gamma = rng.uniform(0.85, 1.2)
    img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** gamma
    blurred = Image.fromarray(np.rint(img).astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.7)))
    img = np.asarray(blurred, np.float32) + rng.normal(0, rng.uniform(1.0, 4.0), (h, w, 3)).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"Expected {name} to be an integer >= {minimum}. Received: {name}={value!r}")
    return int(value)


def generate_scene(seed: int, height: int = 128, width: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Draws one street scene.

    Args:
        seed: non-negative integer; the same seed (and size) always gives the same scene.
        height: image height in pixels (at least 32).
        width: image width in pixels (at least 32).

    Returns:
        ``(image, label)``: ``image`` uint8 ``(height, width, 3)`` RGB, ``label`` uint8 ``(height, width)`` with
        values in ``0..7`` (indices into `CLASS_NAMES`) and ``255`` (void, at object borders).
    """
    seed = _check_int("seed", seed, 0)
    height = _check_int("height", height, _MIN_SIZE)
    width = _check_int("width", width, _MIN_SIZE)
    rng = np.random.default_rng(seed)
    st = _Street(rng, height, width)
    palette = _scene_palette(rng)
    canvas = _Canvas(height, width)
    _sky(canvas, rng, st, palette)
    _skyline(canvas, rng, st, palette)
    _ground(canvas, rng, st, palette)
    _facades(canvas, rng, st, palette)
    _objects(canvas, rng, st, palette)
    image = _finish(rng, canvas, st)
    return image, _void_band(np.asarray(canvas.label))


def scene_seeds(seed: int, split: str, count: int) -> list[int]:
    """The scene seeds of a split: derived from ``seed``, and disjoint between ``"train"`` and ``"val"``.

    The low bit of each seed encodes the split, so the two splits can never share a scene.
    """
    if split not in _SPLIT_CODES:
        raise ValueError(f"Expected split to be one of {sorted(_SPLIT_CODES)}. Received: split={split!r}")
    seed = _check_int("seed", seed, 0)
    count = _check_int("count", count, 0)
    code = _SPLIT_CODES[split]
    states = np.random.SeedSequence([seed, 0x5EED, code]).generate_state(count, dtype=np.uint64) if count else []
    return [int(v) // 2 * 2 + code for v in states]


def _params(num_train, num_val, height, width, seed) -> dict:
    return {"generator": "kerasseg.data.synthetic", "generator_version": GENERATOR_VERSION, "num_train": num_train,
            "num_val": num_val, "height": height, "width": width, "seed": seed}


def _read_params(root: str) -> dict | None:
    try:
        with open(os.path.join(root, PARAMS_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _is_complete(root: str, params: dict) -> bool:
    for split in ("train", "val"):
        n = params.get(f"num_{split}")
        for sub in ("images", "masks"):
            folder = os.path.join(root, sub, split)
            if not os.path.isdir(folder) or len([f for f in os.listdir(folder) if f.endswith(".png")]) != n:
                return False
    return os.path.isfile(os.path.join(root, "classes.json"))


def read_params(root) -> dict | None:
    """The generation parameters of the complete synthetic dataset at ``root``, or ``None`` if there is none."""
    root = os.fspath(root)
    params = _read_params(root)
    if not isinstance(params, dict) or params.get("generator") != "kerasseg.data.synthetic":
        return None
    return params if _is_complete(root, params) else None


def _write_split(folder: str, split: str, seeds: list[int], height: int, width: int, palette_bytes: list) -> None:
    images, masks = os.path.join(folder, "images", split), os.path.join(folder, "masks", split)
    os.makedirs(images)
    os.makedirs(masks)
    for i, scene in enumerate(seeds):
        image, label = generate_scene(scene, height, width)
        name = f"{split}_{i:05d}.png"
        Image.fromarray(image, "RGB").save(os.path.join(images, name), format="PNG")
        mask = Image.fromarray(label, "P")
        mask.putpalette(palette_bytes)
        mask.save(os.path.join(masks, name), format="PNG")


def write_dataset(root, num_train: int = 300, num_val: int = 60, height: int = 128, width: int = 256, seed: int = 0,
                  overwrite: bool = False) -> str:
    """Writes a synthetic dataset in the plain folder layout (see `kerasseg.data.folder`).

    The dataset is generated in a hidden temporary folder beside ``root`` and renamed into place when complete,
    so an interrupted run never leaves a partial dataset at ``root``. The generation parameters are recorded in
    ``root/synthetic.json``: calling again with the same arguments reuses the existing dataset.

    Args:
        root: destination folder; must not exist, be empty, or hold a dataset written with the same arguments
            (unless ``overwrite=True``, which replaces whatever is there).
        num_train: number of training scenes (at least 1).
        num_val: number of validation scenes (at least 1).
        height: image height in pixels.
        width: image width in pixels.
        seed: dataset seed; the training and validation scenes use disjoint seeds derived from it.
        overwrite: replace an existing, different ``root``.

    Returns:
        ``root`` as a string.

    Raises:
        ValueError: an invalid argument, or ``root`` exists with other content and ``overwrite`` is False.
    """
    root = os.path.abspath(os.fspath(root))
    num_train = _check_int("num_train", num_train, 1)
    num_val = _check_int("num_val", num_val, 1)
    height = _check_int("height", height, _MIN_SIZE)
    width = _check_int("width", width, _MIN_SIZE)
    seed = _check_int("seed", seed, 0)
    params = _params(num_train, num_val, height, width, seed)

    if os.path.exists(root):
        if not os.path.isdir(root):
            raise ValueError(f"Expected root to be a folder. Received: root={root!r}, which is a file")
        existing = read_params(root)
        if existing == params:
            return root
        if os.listdir(root) and not overwrite:
            what = (f"a synthetic dataset written with other parameters {existing}" if existing
                    else "files that are not a complete synthetic dataset")
            raise ValueError(f"Expected root to be a new or empty folder, or a synthetic dataset written with "
                             f"{params}. Received: root={root!r}, which holds {what}. Pass overwrite=True to replace "
                             f"it.")

    from kerasseg.data.files import ClassInfo, write_classes

    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.", suffix=".partial", dir=parent)
    try:
        palette_bytes = [c for rgb in PALETTE for c in rgb] + [0] * (3 * (256 - len(PALETTE)))
        _write_split(tmp, "train", scene_seeds(seed, "train", num_train), height, width, palette_bytes)
        _write_split(tmp, "val", scene_seeds(seed, "val", num_val), height, width, palette_bytes)
        write_classes(tmp, ClassInfo(names=CLASS_NAMES, colors=PALETTE, ignore_label=IGNORE_LABEL))
        # Written last: its presence marks the dataset complete.
        with open(os.path.join(tmp, PARAMS_FILE), "w") as f:
            json.dump(params, f, indent=2, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o755)
        if os.path.exists(root):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.", suffix=".old", dir=parent)
            os.replace(root, os.path.join(old, "data"))
            os.replace(tmp, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, root)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return root
