"""Procedural cartoon faces with known attributes, drawn offline and deterministically.

Each face is drawn with Pillow at 128x128 and downsampled (64x64 RGB by default), with slight
blur and pixel noise. Its attributes are booleans, in the order of ATTRIBUTES: eight binary ones
(smiling, glasses, beard, moustache, long_hair, bald, hat, sunglasses), then a one-hot hair colour
and skin tone. The binary ones are drawn independently with the chances in CHANCE, except that a
hat rules out baldness, baldness rules out long hair, and sunglasses count as glasses; every
attribute is visible (the hair colour also shows under a hat, in sideburns and in a bald head's
side tufts). Face i of a seed is the same whatever the count. `load_faces` draws COUNT faces once
and caches them as uint8 in ganforge's cache folder (a record: io.py).
"""

from __future__ import annotations

import colorsys

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from ganforge.data.images import ImageData
from ganforge.io import cache_dir, read_cache, save_record

VERSION = 1  # bump when a change to the drawing changes the images: the cache is keyed by it
COUNT = 20_000
SIZE = 64
CANVAS = 128  # faces are drawn at this size, then downsampled

HAIR_COLORS = {"black": (32, 28, 28), "brown": (92, 50, 20), "blond": (240, 206, 96), "red": (190, 64, 24),
               "gray": (170, 170, 176)}
SKIN_TONES = {"light": (250, 222, 198), "medium": (214, 160, 112), "dark": (140, 92, 64)}
# The chance of each binary attribute before the rules: bald is only drawn without a hat (so ~28% of
# faces), long hair only when not bald (~40%), sunglasses only with glasses (~27%).
CHANCE = {"smiling": 0.5, "glasses": 0.5, "beard": 0.35, "moustache": 0.35, "long_hair": 0.55, "bald": 0.4,
          "hat": 0.3, "sunglasses": 0.55}
ATTRIBUTES = list(CHANCE) + [f"hair_{c}" for c in HAIR_COLORS] + [f"skin_{t}" for t in SKIN_TONES]
# the attributes whose value each one's constrains by the rules above: its one-hot group's others, and the pairs
# that exclude or imply each other (a face gaining a hat loses its baldness; sunglasses come with glasses)
_PAIRS = [("hat", "bald"), ("bald", "long_hair"), ("glasses", "sunglasses")]
_GROUPS = [[f"hair_{c}" for c in HAIR_COLORS], [f"skin_{t}" for t in SKIN_TONES]]
TIED = {name: ({b for a, b in _PAIRS if a == name} | {a for a, b in _PAIRS if b == name}
               | next((set(g) - {name} for g in _GROUPS if name in g), set())) for name in ATTRIBUTES}
HAT_COLORS = [(40, 80, 190), (40, 140, 60), (120, 50, 160), (200, 40, 130), (20, 130, 140)]
FRAME_COLORS = [(20, 20, 20), (80, 44, 20), (40, 40, 100), (130, 20, 30)]
IRIS_COLORS = [(90, 56, 28), (50, 100, 170), (60, 120, 60), (36, 30, 30)]


def draw_face(rng: np.random.Generator, attributes: dict[str, bool] | None = None,
              size: int = SIZE) -> tuple[np.ndarray, dict[str, bool]]:
    """One face: uint8 (size, size, 3) and its attributes (every name of ATTRIBUTES).

    `attributes` fixes some of them (a colour or tone as e.g. hair_red=True); the rest are drawn. The
    same rng state with different fixed attributes draws the same face but for those attributes.
    """
    fixed = dict(attributes or {})
    unknown = sorted(set(fixed) - set(ATTRIBUTES))
    if unknown:
        raise ValueError(f"unknown face attributes {unknown}; choose from {', '.join(ATTRIBUTES)}")
    drawn = dict(zip(CHANCE, (rng.random(len(CHANCE)) < list(CHANCE.values())).tolist()))
    hair, skin = _pick(rng, "hair", HAIR_COLORS, fixed), _pick(rng, "skin", SKIN_TONES, fixed)
    a = drawn | {k: bool(v) for k, v in fixed.items() if k in CHANCE}
    _settle(a, fixed, "hat", "bald")
    _settle(a, fixed, "bald", "long_hair")
    if a["sunglasses"] and not a["glasses"]:  # sunglasses are glasses
        if "sunglasses" not in fixed:
            a["sunglasses"] = False
        elif "glasses" not in fixed:
            a["glasses"] = True
        else:
            raise ValueError("sunglasses are glasses: sunglasses=True needs glasses=True")
    a |= {f"hair_{c}": c == hair for c in HAIR_COLORS} | {f"skin_{t}": t == skin for t in SKIN_TONES}
    return _draw(rng, a, HAIR_COLORS[hair], SKIN_TONES[skin], size), {name: a[name] for name in ATTRIBUTES}


def face_mask(size: int = SIZE) -> torch.Tensor:
    """bool (size, size): an ellipse that lies inside every face's head, wherever _draw puts it and however large
    (centre within 6 and 5 canvas pixels of (64, 72), half-axes at least 24 and 33), with a margin: the pixels that
    are face (skin, eyes, hair, glasses, a beard, a hat), never background, in any image of the faces."""
    y, x = torch.meshgrid(*(torch.arange(size, dtype=torch.float64) + 0.5,) * 2, indexing="ij")
    scale = CANVAS / size
    return ((x * scale - 64) / 14) ** 2 + ((y * scale - 72) / 22) ** 2 <= 1


def draw_faces(n: int, seed: int = 0, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """n faces: uint8 (n, 3, size, size) and bool attributes (n, len(ATTRIBUTES))."""
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    attributes = np.empty((n, len(ATTRIBUTES)), dtype=bool)
    for i in tqdm(range(n), desc="drawing faces", unit="face", leave=False, disable=n < 2000):
        images[i], drawn = draw_face(np.random.default_rng([seed, i]), size=size)
        attributes[i] = [drawn[name] for name in ATTRIBUTES]
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(attributes)


def load_faces(count: int | None = None, seed: int = 0) -> ImageData:
    """COUNT (or count) faces at 64x64 RGB with their attributes, drawn on first use and then cached."""
    count = COUNT if count is None else count
    cache = cache_dir() / "faces" / f"faces-v{VERSION}-{count}-seed{seed}-{SIZE}px.safetensors"

    def check(meta, tensors):
        shapes = tuple(tensors["images"].shape), tuple(tensors["attributes"].shape)
        if shapes != ((count, 3, SIZE, SIZE), (count, len(ATTRIBUTES))):
            raise ValueError(f"holds {shapes[0]} images")

    cached = read_cache(cache, "drawing the faces again", check)
    if cached is not None:
        images, attributes = cached[1]["images"], cached[1]["attributes"]
    else:
        images, attributes = draw_faces(count, seed, SIZE)
        save_record(cache, {"images": images, "attributes": attributes}, {"version": VERSION, "seed": seed})
    return ImageData(images, attributes=attributes, attribute_names=list(ATTRIBUTES))


def _pick(rng: np.random.Generator, group: str, choices: dict, fixed: dict[str, bool]) -> str:
    """One of choices: the one fixed as true, else the drawn one unless fixed as false."""
    drawn = list(choices)[rng.integers(len(choices))]
    wanted = [c for c in choices if fixed.get(f"{group}_{c}")]
    allowed = [c for c in choices if fixed.get(f"{group}_{c}", True)]
    if len(wanted) > 1 or not allowed:
        raise ValueError(f"a face has exactly one {group}_* attribute; got {fixed}")
    return wanted[0] if wanted else drawn if drawn in allowed else allowed[0]


def _settle(a: dict[str, bool], fixed: dict, first: str, second: str) -> None:
    """first rules out second: where both are true, make second false unless only it was fixed."""
    if a[first] and a[second]:
        if first in fixed and second in fixed:
            raise ValueError(f"{first} and {second} cannot both be true")
        a[first if second in fixed else second] = False


def _shade(color: tuple, factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, c * factor)) for c in color)


def _shift(color: tuple, amount: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + amount, 0, 255)) for c in color)


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    return tuple(round(c * 255) for c in colorsys.hsv_to_rgb(h, s, v))


def _box(x: float, y: float, rx: float, ry: float) -> list[float]:
    return [x - rx, y - ry, x + rx, y + ry]


def _arc(x: float, y: float, rx: float, ry: float, start: float, end: float) -> list[tuple[float, float]]:
    """Points along an ellipse from start to end degrees (clockwise from 3 o'clock, as Pillow counts).

    Chords are drawn as polygons of these points: Pillow's own chord() fills wrong areas for some angles.
    """
    t = np.radians(np.linspace(start, end, 25))
    return list(zip((x + rx * np.cos(t)).tolist(), (y + ry * np.sin(t)).tolist()))


def _draw(rng: np.random.Generator, a: dict[str, bool], hair: tuple, skin: tuple, size: int) -> np.ndarray:
    u, pick = rng.uniform, rng.integers
    # Every random choice is made here, before drawing, so that the attributes do not change the rest.
    cx, cy, ry = 64 + u(-6, 6), 72 + u(-5, 5), 38 * u(0.88, 1.05)  # head centre and half-height
    rx, angle = ry * u(0.72, 0.88), u(-10, 10)
    skin, hair = _shift(skin, u(-8, 8)), _shift(hair, u(-8, 8))
    background, shirt = _hsv(u(0.25, 0.85), u(0.25, 0.5), u(0.82, 0.95)), _hsv(u(0, 1), u(0.35, 0.8), u(0.35, 0.8))
    hairline, hair_top, hair_style, long_len = cy - ry * u(0.32, 0.45), cy - ry * u(1.12, 1.22), pick(3), u(0.9, 1.4)
    eye_y, eye_dx, eye_rx, eye_ry = cy - ry * u(0.02, 0.12), rx * u(0.38, 0.44), rx * u(0.15, 0.19), ry * u(0.09, 0.12)
    eye_style, iris, gaze = pick(2), IRIS_COLORS[pick(len(IRIS_COLORS))], (u(-1.5, 1.5), u(-1, 1))
    brow_gap, brow_tilt, brow_width = ry * u(0.07, 0.13), u(-3, 3), int(pick(3, 5))
    nose_y, nose_style, nose_side = cy + ry * u(0.16, 0.25), pick(3), 1 if u() < 0.5 else -1
    mouth_y, mouth_w, mouth_color = cy + ry * u(0.52, 0.6), rx * u(0.3, 0.4), _hsv(u(0.95, 1.02) % 1, 0.7, u(0.45, 0.6))
    smile_style, neutral_style = pick(2), pick(2)
    beard_angle, moustache_w, moustache_h = u(18, 32), u(0.95, 1.2), ry * u(0.12, 0.17)
    glasses_square, frame = u() < 0.5, FRAME_COLORS[pick(len(FRAME_COLORS))]
    lens = _shift((16, 20, 26), u(-10, 16))
    hat_style, hat_color, pompom = pick(2), HAT_COLORS[pick(len(HAT_COLORS))], u() < 0.5
    hat_y, hat_h = cy - ry * u(0.7, 0.78), u(0.6, 0.72)
    blur, noise = u(0, 0.35), rng.standard_normal((size, size, 3), dtype=np.float32) * u(1, 4)

    skin_line, hair_line = _shade(skin, 0.7), _shade(hair, 0.7)
    picture = Image.new("RGB", (CANVAS, CANVAS), background)
    d = ImageDraw.Draw(picture)
    d.rectangle([cx - 0.36 * rx, cy + 0.4 * ry, cx + 0.36 * rx, cy + ry + 12], fill=_shade(skin, 0.88))  # neck
    d.ellipse(_box(cx, cy + 1.95 * ry + 8, 2.0 * rx, ry), fill=shirt, outline=_shade(shirt, 0.7), width=2)

    head = Image.new("RGBA", (CANVAS, CANVAS), (0, 0, 0, 0))
    d = ImageDraw.Draw(head)
    if a["long_hair"]:  # hair behind the head, falling past the chin
        d.rounded_rectangle([cx - 1.28 * rx, cy - 0.8 * ry, cx + 1.28 * rx, cy + long_len * ry], radius=0.6 * rx,
                            fill=hair, outline=hair_line, width=2)
    else:
        for side in (-1, 1):
            d.ellipse(_box(cx + side * 0.98 * rx, eye_y + 0.08 * ry, 0.15 * rx, 0.17 * ry), fill=skin,
                      outline=skin_line, width=2)
    d.ellipse(_box(cx, cy, rx, ry), fill=skin, outline=skin_line, width=2)
    if a["bald"]:  # side tufts in the hair colour, a shine on top
        for side in (-1, 1):
            d.ellipse(_box(cx + side * 0.9 * rx, cy - 0.3 * ry, 0.2 * rx, 0.27 * ry), fill=hair,
                      outline=hair_line, width=2)
        d.ellipse(_box(cx - 0.3 * rx, cy - 0.78 * ry, 0.18 * rx, 0.07 * ry), fill=_shift(skin, 30))
    else:
        width = 1.2 * rx if a["long_hair"] else 1.1 * rx
        d.polygon(_arc(cx, hairline, width, hairline - hair_top, 180, 360), fill=hair, outline=hair_line, width=2)
        for side in (-1, 1):  # sideburns
            x0, x1 = sorted((cx + side * 0.97 * rx, cx + side * 0.8 * rx))
            d.rectangle([x0, hairline - 2, x1, eye_y - 0.12 * ry], fill=hair)
        if hair_style == 1:  # a fringe swept to one side
            d.polygon([(cx - 0.9 * rx, hairline - 1), (cx + 0.5 * rx, hairline - 1),
                       (cx - 0.9 * rx, hairline + 0.22 * ry)], fill=hair)
        elif hair_style == 2:  # spikes on top
            for k in range(-2, 3):
                x = cx + k * 0.3 * rx
                d.polygon([(x - 0.18 * rx, hair_top + 0.12 * ry), (x, hair_top - 0.1 * ry),
                           (x + 0.18 * rx, hair_top + 0.12 * ry)], fill=hair)

    for side in (-1, 1):  # eyes and eyebrows
        x = cx + side * eye_dx
        if eye_style == 0:
            d.ellipse(_box(x, eye_y, eye_rx, eye_ry), fill=(248, 248, 248), outline=(60, 40, 40), width=1)
            d.ellipse(_box(x + gaze[0], eye_y + gaze[1], 0.75 * eye_ry, 0.75 * eye_ry), fill=iris)
            d.ellipse(_box(x + gaze[0], eye_y + gaze[1], 0.35 * eye_ry, 0.35 * eye_ry), fill=(10, 10, 10))
        else:
            d.ellipse(_box(x, eye_y, 0.6 * eye_rx, 0.85 * eye_ry), fill=(25, 20, 20))
        brow_y = eye_y - eye_ry - brow_gap
        d.line([(x - side * 0.2 * rx, brow_y + brow_tilt), (x + side * 0.22 * rx, brow_y - brow_tilt)],
               fill=_shade(hair, 0.8), width=brow_width)

    if nose_style == 0:  # a hooked line
        d.line([(cx + nose_side * 1, eye_y + 0.12 * ry), (cx + nose_side * 5, nose_y), (cx - nose_side * 3, nose_y)],
               fill=skin_line, width=2)
    elif nose_style == 1:  # a button
        d.ellipse(_box(cx, nose_y - 0.04 * ry, 0.12 * rx, 0.08 * ry), fill=_shade(skin, 0.86))
    else:  # nostrils
        for side in (-1, 1):
            d.ellipse(_box(cx + side * 0.08 * rx, nose_y, 1.6, 1.3), fill=skin_line)

    if a["beard"]:  # jaw and chin, around a bare patch for the mouth
        jaw = _arc(cx, cy + 0.04 * ry, 1.05 * rx, 1.06 * ry, beard_angle, 180 - beard_angle)
        bare = _arc(cx, mouth_y - 0.1 * ry, mouth_w + 0.15 * rx, 0.3 * ry, 180, 0)
        d.polygon(jaw + bare, fill=hair, outline=hair_line, width=2)
    if a["moustache"]:
        d.polygon(_arc(cx, mouth_y - 0.05 * ry, moustache_w * mouth_w, moustache_h, 180, 360), fill=hair,
                  outline=hair_line, width=1)
    if a["smiling"]:
        if smile_style == 0:  # an upward arc
            d.line(_arc(cx, mouth_y - 0.1 * ry, mouth_w, 0.2 * ry, 20, 160), fill=mouth_color, width=3, joint="curve")
        else:  # an open grin with teeth
            d.polygon(_arc(cx, mouth_y - 0.03 * ry, mouth_w, 0.15 * ry, 0, 180), fill=mouth_color)
            d.rectangle([cx - 0.7 * mouth_w, mouth_y - 0.03 * ry, cx + 0.7 * mouth_w, mouth_y + 0.02 * ry],
                        fill=(250, 250, 250))
    elif neutral_style == 0:  # a straight line
        d.line([(cx - 0.8 * mouth_w, mouth_y), (cx + 0.8 * mouth_w, mouth_y)], fill=mouth_color, width=3)
    else:  # open, surprised
        d.ellipse(_box(cx, mouth_y, 0.32 * mouth_w, 0.09 * ry), fill=_shade(mouth_color, 0.6))

    if a["glasses"]:
        lens_rx, lens_ry = 0.27 * rx, 0.2 * ry
        for side in (-1, 1):
            x = cx + side * eye_dx
            box = _box(x, eye_y, lens_rx, lens_ry)
            fill = lens if a["sunglasses"] else None
            if glasses_square:
                d.rounded_rectangle(box, radius=3, fill=fill, outline=frame, width=3)
            else:
                d.ellipse(box, fill=fill, outline=frame, width=3)
            d.line([(x + side * lens_rx, eye_y - 2), (cx + side * 0.97 * rx, eye_y - 4)], fill=frame, width=2)
        d.line([(cx - eye_dx + lens_rx, eye_y - 1), (cx + eye_dx - lens_rx, eye_y - 1)], fill=frame, width=3)

    if a["hat"]:
        top = hat_y - hat_h * ry
        if hat_style == 0:  # a beanie
            d.polygon(_arc(cx, hat_y, 1.12 * rx, hat_y - top, 180, 360), fill=hat_color,
                      outline=_shade(hat_color, 0.6), width=2)
            d.rectangle([cx - 1.12 * rx, hat_y - 0.12 * ry, cx + 1.12 * rx, hat_y + 0.04 * ry],
                        fill=_shade(hat_color, 0.8), outline=_shade(hat_color, 0.6), width=1)
            if pompom:
                d.ellipse(_box(cx, top, 0.16 * rx, 0.16 * rx), fill=(245, 245, 245), outline=(180, 180, 180))
        else:  # a brimmed hat with a band
            d.rounded_rectangle([cx - 0.92 * rx, top - 0.08 * ry, cx + 0.92 * rx, hat_y], radius=5, fill=hat_color,
                                outline=_shade(hat_color, 0.6), width=2)
            d.rectangle([cx - 0.92 * rx, hat_y - 0.14 * ry, cx + 0.92 * rx, hat_y - 0.04 * ry], fill=(30, 30, 30))
            d.ellipse(_box(cx, hat_y, 1.45 * rx, 0.09 * ry), fill=_shade(hat_color, 0.85),
                      outline=_shade(hat_color, 0.6), width=2)

    head = head.rotate(angle, center=(cx, cy + ry))  # tilt about the chin (nearest: the downsampling smooths)
    picture.paste(head, mask=head)
    picture = picture.resize((size, size), Image.Resampling.BOX).filter(ImageFilter.BoxBlur(blur))
    return np.clip(np.asarray(picture, dtype=np.float32) + noise, 0, 255).round().astype(np.uint8)
