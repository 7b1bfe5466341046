"""The `shop` dataset: procedurally drawn product photos with several attribute tasks.

Every row is drawn from `(seed, index)` alone, so any size can be made, in any number of shards,
and always gives the same rows. Each image shows one product on a tinted background:

- `category` (ClassLabel, classification): the product's shape - tshirt, trousers, shoe, bag, hat;
- `colour` (ClassLabel, classification): one of eight colours;
- `pattern` (ClassLabel, classification): plain, striped, dotted or checked;
- `tags` (list of ClassLabel, multilabel): badges drawn in the corners - sale, new, eco;
- `size` (float, regression): how much of the frame the product fills (0.45 to 0.95).

A share `missing_rate` of each label column is left empty (None), as in real shop data where
attributes are not always filled in. `write_shop_parquet` writes Parquet shards, so the streaming
path runs on real files.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, Features, List, Value
from datasets import Image as ImageFeature
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from ...errors import UserError

CATEGORIES = ["tshirt", "trousers", "shoe", "bag", "hat"]
COLOURS = {
    "red": (200, 30, 30),
    "green": (40, 160, 60),
    "blue": (40, 70, 200),
    "yellow": (230, 210, 40),
    "purple": (130, 50, 170),
    "orange": (240, 130, 20),
    "black": (25, 25, 25),
    "white": (240, 240, 240),
}
PATTERNS = ["plain", "striped", "dotted", "checked"]
TAGS = ["sale", "new", "eco"]
SIZE_RANGE = (0.45, 0.95)
SHOP_FEATURES = Features(
    {
        "image": ImageFeature(),
        "category": ClassLabel(names=CATEGORIES),
        "colour": ClassLabel(names=list(COLOURS)),
        "pattern": ClassLabel(names=PATTERNS),
        "tags": List(ClassLabel(names=TAGS)),
        "size": Value("float32"),
    }
)

# Outlines in a unit frame ([-1, 1], y down), one per category.
_OUTLINES = {
    "tshirt": [
        (-0.5, -0.7),
        (-0.2, -0.8),
        (0.2, -0.8),
        (0.5, -0.7),
        (0.95, -0.3),
        (0.7, -0.05),
        (0.5, -0.25),
        (0.5, 0.85),
        (-0.5, 0.85),
        (-0.5, -0.25),
        (-0.7, -0.05),
        (-0.95, -0.3),
    ],
    "trousers": [(-0.5, -0.85), (0.5, -0.85), (0.62, 0.85), (0.15, 0.85), (0.0, -0.2), (-0.15, 0.85), (-0.62, 0.85)],
    "shoe": [
        (-0.85, 0.05),
        (-0.85, 0.5),
        (0.95, 0.5),
        (0.95, 0.25),
        (0.25, 0.0),
        (0.05, -0.45),
        (-0.5, -0.45),
        (-0.5, 0.05),
    ],
    "bag": [(-0.75, -0.2), (0.75, -0.2), (0.85, 0.85), (-0.85, 0.85)],
    "hat": [
        (-0.95, 0.5),
        (0.95, 0.5),
        (0.95, 0.3),
        (0.45, 0.3),
        (0.35, -0.5),
        (-0.35, -0.5),
        (-0.45, 0.3),
        (-0.95, 0.3),
    ],
}
_SUPERSAMPLE = 2
_TAG_PROBABILITY = 0.3


def shop_row(
    index: int,
    *,
    seed: int = 0,
    missing_rate: float = 0.2,
    image_size: int = 32,
    image_format: str = "PNG",
    grain: float = 0.0,
) -> dict:
    """Row `index` of the shop data for `seed`: an encoded `image` and the five label columns.

    `image_format="JPEG"` encodes at quality 90, as shops store photos; `grain` adds Gaussian noise
    of that many grey levels (a camera's), so that large JPEGs carry detail to decode, as photos do.
    """
    rng = np.random.default_rng([seed, index])
    category = int(rng.integers(len(CATEGORIES)))
    colour = int(rng.integers(len(COLOURS)))
    pattern = int(rng.integers(len(PATTERNS)))
    tags = [i for i in range(len(TAGS)) if rng.random() < _TAG_PROBABILITY]
    size = float(rng.uniform(*SIZE_RANGE))
    image = _draw(rng, category, colour, pattern, tags, size, image_size)
    if grain > 0:
        noise = np.random.default_rng([seed, index, 1]).normal(0.0, grain, size=(image_size, image_size, 3))
        image = Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8))

    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **({"quality": 90} if image_format == "JPEG" else {}))
    row = {
        "image": {"bytes": buffer.getvalue(), "path": None},
        "category": category,
        "colour": colour,
        "pattern": pattern,
        "tags": tags,
        "size": round(size, 4),
    }
    for column in ("category", "colour", "pattern", "tags", "size"):
        if rng.random() < missing_rate:
            row[column] = None
    return row


def iter_shop_rows(num_rows: int, *, start: int = 0, **options) -> Iterator[dict]:
    for index in range(start, start + num_rows):
        yield shop_row(index, **options)


def load_shop_dataset(
    num_rows: int = 2000, *, seed: int = 0, missing_rate: float = 0.2, image_size: int = 32, start: int = 0
) -> Dataset:
    """Rows `start` to `start + num_rows` of the shop data, in memory."""
    _check_options(num_rows, missing_rate, image_size)
    rows = list(iter_shop_rows(num_rows, start=start, seed=seed, missing_rate=missing_rate, image_size=image_size))
    return Dataset.from_dict({column: [row[column] for row in rows] for column in SHOP_FEATURES}, SHOP_FEATURES)


def write_shop_parquet(
    directory: str | Path,
    num_rows: int,
    *,
    rows_per_shard: int = 10_000,
    seed: int = 0,
    missing_rate: float = 0.2,
    image_size: int = 32,
    num_proc: int = 1,
) -> list[Path]:
    """Writes `num_rows` shop rows as Parquet shards under `directory` (`num_proc` processes); returns the paths."""
    _check_options(num_rows, missing_rate, image_size)
    if rows_per_shard < 1:
        raise UserError(f"rows_per_shard must be positive, got {rows_per_shard}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    num_shards = math.ceil(num_rows / rows_per_shard)
    jobs = [
        dict(
            path=directory / f"shop-{shard:05d}-of-{num_shards:05d}.parquet",
            start=shard * rows_per_shard,
            num_rows=min(rows_per_shard, num_rows - shard * rows_per_shard),
            seed=seed,
            missing_rate=missing_rate,
            image_size=image_size,
        )
        for shard in range(num_shards)
    ]
    with tqdm(total=num_rows, desc="drawing shop images", unit="img") as progress:
        if num_proc <= 1:
            for job in jobs:
                progress.update(_write_shard(**job))
        else:
            with ProcessPoolExecutor(num_proc) as pool:
                for written in pool.map(_write_shard_job, jobs):
                    progress.update(written)
    return [job["path"] for job in jobs]


BROKEN_PHOTOS = ("truncated", "html_page", "missing_file", "no_path")


def write_shop_catalogue(
    directory: str | Path,
    num_rows: int,
    *,
    image_sizes: tuple[int, ...] = (96, 128, 160),
    seed: int = 0,
    missing_rate: float = 0.2,
    broken_rate: float = 0.0,
) -> Path:
    """Writes a shop catalogue as a shop keeps one: JPEG photos in `directory/photos/` and
    `directory/catalogue.csv` with a `path` column (relative to the CSV) and the attributes as text
    (`tags` as `sale|new`; empty cells where missing). Row i's photo is `image_sizes[i % len]` px.

    A share `broken_rate` of the rows is broken, in turn each way of `BROKEN_PHOTOS`: a JPEG cut
    in half, an HTML error page saved as `.jpg`, a path to no file, an empty path. Returns the CSV.
    """
    import csv

    _check_options(num_rows, missing_rate, min(image_sizes))
    if not 0.0 <= broken_rate < 1.0:
        raise UserError(f"broken_rate must be in [0, 1), got {broken_rate!r}")
    directory = Path(directory)
    (directory / "photos").mkdir(parents=True, exist_ok=True)
    broken_rng = np.random.default_rng([seed, 2])
    csv_path = directory / "catalogue.csv"
    with open(csv_path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "category", "colour", "pattern", "tags", "size"])
        broken = 0
        for index in range(num_rows):
            size = image_sizes[index % len(image_sizes)]
            row = shop_row(index, seed=seed, missing_rate=missing_rate, image_size=size, image_format="JPEG", grain=2.0)
            path = f"photos/{index:07d}.jpg"
            photo = row["image"]["bytes"]
            if broken_rng.random() < broken_rate:
                kind = BROKEN_PHOTOS[broken % len(BROKEN_PHOTOS)]
                broken += 1
                error_page = b"<html><body>502 Bad Gateway</body></html>"
                photo = {"truncated": photo[: len(photo) // 2], "html_page": error_page}.get(kind)
                path = "" if kind == "no_path" else path
            if photo is not None:
                (directory / path).write_bytes(photo)
            tags = row["tags"]
            writer.writerow(
                [
                    path,
                    "" if row["category"] is None else CATEGORIES[row["category"]],
                    "" if row["colour"] is None else list(COLOURS)[row["colour"]],
                    "" if row["pattern"] is None else PATTERNS[row["pattern"]],
                    "" if tags is None else "|".join(TAGS[tag] for tag in tags),
                    "" if row["size"] is None else row["size"],
                ]
            )
    return csv_path


def _write_shard(path: Path, start: int, num_rows: int, **options) -> int:
    load_shop_dataset(num_rows, start=start, **options).to_parquet(str(path))
    return num_rows


def _write_shard_job(job: dict) -> int:
    return _write_shard(**job)


def _check_options(num_rows: int, missing_rate: float, image_size: int) -> None:
    if not isinstance(num_rows, int) or num_rows < 1:
        raise UserError(f"num_rows must be a positive integer, got {num_rows!r}")
    if not 0.0 <= missing_rate < 1.0:
        raise UserError(f"missing_rate must be in [0, 1), got {missing_rate!r}")
    if image_size < 16:
        raise UserError(f"image_size must be at least 16 pixels, got {image_size}")


def _draw(rng, category: int, colour: int, pattern: int, tags: list[int], size: float, image_size: int):
    canvas = image_size * _SUPERSAMPLE
    background = tuple(int(v) for v in rng.integers(95, 175, size=3))
    image = Image.new("RGB", (canvas, canvas), background)

    # The product: its outline, rotated a little and shifted, filled with its colour and pattern.
    angle = rng.uniform(-0.25, 0.25)
    centre = canvas / 2 + rng.uniform(-0.06, 0.06, size=2) * canvas
    half = size * canvas / 2
    cos, sin = math.cos(angle), math.sin(angle)
    outline = [
        (centre[0] + half * (x * cos - y * sin), centre[1] + half * (x * sin + y * cos))
        for x, y in _OUTLINES[CATEGORIES[category]]
    ]
    mask = Image.new("L", (canvas, canvas), 0)
    shape = ImageDraw.Draw(mask)
    shape.polygon(outline, fill=255)
    if CATEGORIES[category] == "bag":  # the handle
        box = [centre[0] - 0.45 * half, centre[1] - 0.75 * half, centre[0] + 0.45 * half, centre[1] + 0.2 * half]
        shape.arc(box, 180, 360, fill=255, width=max(2, canvas // 20))
    base = np.array(list(COLOURS.values())[colour]) + rng.integers(-15, 16, size=3)
    image.paste(_fill(PATTERNS[pattern], np.clip(base, 0, 255), canvas), (0, 0), mask)

    # Badges in the corners: sale (red square), new (yellow triangle), eco (green disc).
    draw = ImageDraw.Draw(image)
    badge = canvas * 0.2
    margin = canvas * 0.03
    if 0 in tags:
        draw.rectangle([margin, margin, margin + badge, margin + badge], fill=(220, 20, 60))
    if 1 in tags:
        right = canvas - margin
        draw.polygon(
            [(right - badge, margin), (right, margin), (right - badge / 2, margin + badge)], fill=(255, 230, 0)
        )
    if 2 in tags:
        bottom = canvas - margin
        draw.ellipse([margin, bottom - badge, margin + badge, bottom], fill=(20, 200, 90))
    return image.resize((image_size, image_size), Image.Resampling.BOX)


def _fill(pattern: str, colour: np.ndarray, canvas: int) -> Image.Image:
    dark = (colour * 0.45).astype(np.uint8) if colour.mean() > 60 else np.full(3, 150, dtype=np.uint8)
    y, x = np.mgrid[0:canvas, 0:canvas]
    period = max(4, canvas // 8)
    if pattern == "striped":
        second = ((y // (period // 2)) % 2).astype(bool)
    elif pattern == "dotted":
        second = ((y % period - period / 2) ** 2 + (x % period - period / 2) ** 2) < (period / 4) ** 2
    elif pattern == "checked":
        second = (((y // period) + (x // period)) % 2).astype(bool)
    else:
        second = np.zeros((canvas, canvas), dtype=bool)
    pixels = np.where(second[..., None], dark, colour.astype(np.uint8)).astype(np.uint8)
    return Image.fromarray(pixels)


__all__ = [
    "CATEGORIES",
    "COLOURS",
    "PATTERNS",
    "SHOP_FEATURES",
    "TAGS",
    "iter_shop_rows",
    "load_shop_dataset",
    "shop_row",
    "write_shop_catalogue",
    "write_shop_parquet",
]
