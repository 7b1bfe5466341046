"""The `shapes` dataset: a pretraining corpus of drawn geometric figures, unlike the downstream data.

It stands in, offline, for the large generic corpus that a Hub checkpoint was pretrained on: a
backbone trained on it learns edges, outlines, positions and counts, none of which is a task of
`shop` or `digits`. Every row is drawn from `(seed, index)` alone, so any number can be made and
always gives the same rows. Each image shows one to four figures (random colours and sizes, nearly
upright) on a flat, graded or grainy background:

- `shape` (ClassLabel, classification): the largest figure's kind, one of eight;
- `count` (ClassLabel, classification): how many figures there are, 1 to 4;
- `position` (ClassLabel, classification): the quadrant of the largest figure's centre;
- `styles` (list of ClassLabel, multilabel): the largest figure drawn as an outline only; the
  background graded; the background grainy.
"""

from __future__ import annotations

import io
import math

import numpy as np
from datasets import ClassLabel, Dataset, Features, List
from datasets import Image as ImageFeature
from PIL import Image, ImageDraw

from ...errors import UserError

SHAPES = ["circle", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon"]
COUNTS = ["1", "2", "3", "4"]
POSITIONS = ["top_left", "top_right", "bottom_left", "bottom_right"]
STYLES = ["outlined", "graded", "grainy"]
SHAPES_FEATURES = Features(
    {
        "image": ImageFeature(),
        "shape": ClassLabel(names=SHAPES),
        "count": ClassLabel(names=COUNTS),
        "position": ClassLabel(names=POSITIONS),
        "styles": List(ClassLabel(names=STYLES)),
    }
)
_SUPERSAMPLE = 2


def shapes_row(index: int, *, seed: int = 0, image_size: int = 32) -> dict:
    """Row `index` of the shapes corpus for `seed`: a PNG `image` and its four label columns."""
    rng = np.random.default_rng([seed, index, 7])
    canvas = image_size * _SUPERSAMPLE
    graded, grainy = bool(rng.random() < 0.4), bool(rng.random() < 0.3)
    image = _background(rng, canvas, graded, grainy)
    draw = ImageDraw.Draw(image)

    count = int(rng.integers(1, len(COUNTS) + 1))
    shape = int(rng.integers(len(SHAPES)))
    outlined = bool(rng.random() < 0.3)
    # The largest figure first, kept clear of the centre lines so that its quadrant is never ambiguous.
    radius = rng.uniform(0.2, 0.3) * canvas
    quadrant = int(rng.integers(len(POSITIONS)))
    centre = _quadrant_centre(rng, quadrant, radius, canvas)
    # Nearly upright (turns within +-0.3 rad). The square, drawn by `_polygon`, stands on a corner as the diamond
    # does; the diamond is 0.6 as wide, so the two differ by their width alone.
    _figure(draw, SHAPES[shape], centre, radius, rng.uniform(-0.3, 0.3), _colour(rng), outlined, canvas)
    for _ in range(count - 1):  # smaller ones anywhere, 35-65% of its radius: still a few pixels at 16 px
        small = rng.uniform(0.35, 0.65) * radius
        where = rng.uniform(small, canvas - small, size=2)
        kind = SHAPES[int(rng.integers(len(SHAPES)))]
        _figure(draw, kind, where, small, rng.uniform(-0.3, 0.3), _colour(rng), rng.random() < 0.3, canvas)

    buffer = io.BytesIO()
    image.resize((image_size, image_size), Image.Resampling.BOX).save(buffer, format="PNG")
    styles = [i for i, has in enumerate((outlined, graded, grainy)) if has]
    return {
        "image": {"bytes": buffer.getvalue(), "path": None},
        "shape": shape,
        "count": count - 1,
        "position": quadrant,
        "styles": styles,
    }


def load_shapes_dataset(num_rows: int = 20_000, *, seed: int = 0, image_size: int = 32, start: int = 0) -> Dataset:
    """Rows `start` to `start + num_rows` of the shapes corpus, in memory."""
    if not isinstance(num_rows, int) or num_rows < 1:
        raise UserError(f"num_rows must be a positive integer, got {num_rows!r}")
    if image_size < 16:
        raise UserError(f"image_size must be at least 16 pixels, got {image_size}")
    rows = [shapes_row(index, seed=seed, image_size=image_size) for index in range(start, start + num_rows)]
    return Dataset.from_dict({column: [row[column] for row in rows] for column in SHAPES_FEATURES}, SHAPES_FEATURES)


def _background(rng, canvas: int, graded: bool, grainy: bool) -> Image.Image:
    first = rng.integers(0, 256, size=3).astype(np.float32)
    if graded:
        second = rng.integers(0, 256, size=3).astype(np.float32)
        angle = rng.uniform(0, 2 * math.pi)
        y, x = np.mgrid[0:canvas, 0:canvas] / (canvas - 1)
        ramp = (x * math.cos(angle) + y * math.sin(angle)) % 1.0
        pixels = first + (second - first) * ramp[..., None]
    else:
        pixels = np.broadcast_to(first, (canvas, canvas, 3)).copy()
    if grainy:
        pixels = pixels + rng.normal(0.0, 28.0, size=(canvas, canvas, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _colour(rng) -> tuple[int, int, int]:
    return tuple(int(value) for value in rng.integers(0, 256, size=3))


def _quadrant_centre(rng, quadrant: int, radius: float, canvas: int) -> np.ndarray:
    half = canvas / 2
    low, high = radius * 0.6, half - radius * 0.6
    offset = rng.uniform(low, high, size=2) if high > low else np.full(2, half / 2)
    return np.array([offset[0] + half * (quadrant % 2), offset[1] + half * (quadrant // 2)])


def _polygon(centre, radius: float, turn: float, corners: int, inner: float | None = None) -> list[tuple]:
    points = []
    steps = corners * (2 if inner else 1)
    for step in range(steps):
        reach = radius if inner is None or step % 2 == 0 else radius * inner
        angle = turn + 2 * math.pi * step / steps
        points.append((centre[0] + reach * math.cos(angle), centre[1] + reach * math.sin(angle)))
    return points


def _figure(draw, kind: str, centre, radius: float, turn: float, colour, outlined: bool, canvas: int) -> None:
    width = max(2, int(radius * 0.25))
    box = [centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius]
    if kind == "circle":
        draw.ellipse(box, outline=colour, width=width) if outlined else draw.ellipse(box, fill=colour)
        return
    if kind == "ring":  # a thick circle line, its centre left empty either way
        draw.ellipse(box, outline=colour, width=max(width, int(radius * 0.4)))
        return
    if kind == "cross":
        arm = radius * 0.35
        bars = [
            _rotated(centre, [(-radius, -arm), (radius, -arm), (radius, arm), (-radius, arm)], turn),
            _rotated(centre, [(-arm, -radius), (arm, -radius), (arm, radius), (-arm, radius)], turn),
        ]
        for bar in bars:
            draw.polygon(bar, outline=colour, width=width) if outlined else draw.polygon(bar, fill=colour)
        return
    corners = {
        "square": (4, None),
        "triangle": (3, None),
        "star": (5, 0.45),
        "diamond": (4, None),
        "hexagon": (6, None),
    }
    count, inner = corners[kind]
    if kind == "diamond":  # a square stood on its corner, stretched
        points = _rotated(centre, [(0, -radius), (radius * 0.6, 0), (0, radius), (-radius * 0.6, 0)], turn)
    else:
        points = _polygon(centre, radius, turn, count, inner)
    draw.polygon(points, outline=colour, width=width) if outlined else draw.polygon(points, fill=colour)


def _rotated(centre, points, turn: float) -> list[tuple]:
    cos, sin = math.cos(turn), math.sin(turn)
    return [(centre[0] + x * cos - y * sin, centre[1] + x * sin + y * cos) for x, y in points]


__all__ = ["COUNTS", "POSITIONS", "SHAPES", "SHAPES_FEATURES", "STYLES", "load_shapes_dataset", "shapes_row"]
