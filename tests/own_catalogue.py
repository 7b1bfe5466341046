"""A shop's own catalogue, drawn here (not with mtl_hf's `shop` generator): product photos as JPEG files and a CSV
exported the way shops export one.

Products are t-shirts, mugs, shoes and caps in six colours, some with SALE / NEW / eco badges; the price, in
dollars, follows the category and the product's size in the photo. The CSV has `sku,image_path,category,colour,
tags,price`, tags joined with `|`, an empty tags cell for a product without badges, about 10% blank cells, and
(with `broken=True`) two missing files, a truncated JPEG and an HTML page saved as `.jpg`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CATEGORIES = {"tshirt": 24.0, "mug": 9.0, "shoe": 80.0, "cap": 18.0}  # base prices in dollars
COLOURS = {
    "red": (205, 40, 45),
    "blue": (45, 80, 200),
    "green": (50, 150, 70),
    "yellow": (235, 200, 40),
    "black": (30, 30, 30),
    "white": (245, 245, 245),
}
BADGES = {"SALE": ((200, 0, 0), (0.04, 0.04)), "NEW": ((0, 90, 220), (0.70, 0.04)), "eco": ((0, 150, 60), (0.04, 0.76))}
FIELDS = ["sku", "image_path", "category", "colour", "tags", "price"]


def draw_product(rng: np.random.Generator, category: str, colour: str, badges: list[str], scale: float, size: int):
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(200, 235, 3)))
    draw = ImageDraw.Draw(image)
    fill, centre, half = COLOURS[colour], size / 2, size * scale / 2
    outline = (90, 90, 90) if colour == "white" else None
    left, top, right, bottom = centre - half, centre - half, centre + half, centre + half
    if category == "tshirt":
        w = right - left
        points = [
            (left + 0.3 * w, top),
            (left + 0.7 * w, top),
            (right, top + 0.25 * w),
            (right - 0.15 * w, top + 0.4 * w),
            (right - 0.2 * w, bottom),
            (left + 0.2 * w, bottom),
            (left + 0.15 * w, top + 0.4 * w),
            (left, top + 0.25 * w),
        ]
        draw.polygon(points, fill=fill, outline=outline)
    elif category == "mug":
        draw.rectangle([left, top + half * 0.3, right - half * 0.5, bottom], fill=fill, outline=outline)
        draw.ellipse(
            [right - half * 0.75, top + half * 0.7, right, bottom - half * 0.5], outline=fill, width=max(2, size // 24)
        )
    elif category == "shoe":
        draw.polygon(
            [(left, bottom), (left, centre), (centre, centre), (right, bottom - half * 0.4), (right, bottom)],
            fill=fill,
            outline=outline,
        )
    else:  # cap
        draw.pieslice(
            [left, top + half * 0.4, right - half * 0.3, bottom + half * 0.6], 180, 360, fill=fill, outline=outline
        )
        draw.rectangle([centre, centre + half * 0.25, right, centre + half * 0.4], fill=fill, outline=outline)
    for badge in badges:
        colour_rgb, (x, y) = BADGES[badge]
        box = [x * size, y * size, x * size + 0.24 * size, y * size + 0.16 * size]
        (draw.ellipse if badge == "eco" else draw.rectangle)(box, fill=colour_rgb)
    noise = rng.normal(0, 3, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8))


def write_catalogue(
    folder: str | Path, count: int = 320, *, seed: int = 7, size: int = 64, blank: float = 0.1, broken: bool = True
) -> Path:
    """Writes `count` product photos under `folder/photos/` and `folder/products.csv`; returns the CSV's path."""
    folder = Path(folder)
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        category = list(CATEGORIES)[int(rng.integers(len(CATEGORIES)))]
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        badges = [badge for badge in BADGES if rng.random() < 0.3]
        scale = float(rng.uniform(0.45, 0.9))
        price = round(CATEGORIES[category] * (0.5 + scale) * float(rng.uniform(0.95, 1.05)), 2)
        path = f"photos/p{index:04d}.jpg"
        buffer = io.BytesIO()
        draw_product(rng, category, colour, badges, scale, size).save(buffer, format="JPEG", quality=90)
        (folder / path).write_bytes(buffer.getvalue())
        row = {
            "sku": f"SKU-{10_000 + index}",
            "image_path": path,
            "category": category,
            "colour": colour,
            "tags": "|".join(badges),
            "price": f"{price:.2f}",
        }
        for column in ("category", "colour", "tags", "price"):
            if rng.random() < blank:
                row[column] = ""
        rows.append(row)
    if broken:
        (folder / rows[3]["image_path"]).unlink()  # two files that never arrived
        (folder / rows[11]["image_path"]).unlink()
        data = (folder / rows[19]["image_path"]).read_bytes()
        (folder / rows[19]["image_path"]).write_bytes(data[: len(data) // 3])  # a download cut short
        (folder / rows[27]["image_path"]).write_bytes(b"<!DOCTYPE html><html><body>Not Found</body></html>")
    table = folder / "products.csv"
    with open(table, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return table


__all__ = ["CATEGORIES", "COLOURS", "write_catalogue"]


def write_untrained_model(catalogue: str, folder: str) -> None:
    """A tiny model for the catalogue's tasks, untrained (the README's tagging walkthrough needs its answers'
    shape, not their quality), saved with its image processor as `mtl-hf train` saves one."""
    import torch
    from transformers import ViTConfig

    from mtl_hf import MultiTaskViTConfig, MultiTaskViTModel
    from mtl_hf.data import ImageTransforms, TaskSource

    tasks = {
        "category": "category",
        "colour": "colour",
        "tags": {"column": "tags", "type": "multilabel"},
        "price": "price",
    }
    source = TaskSource(catalogue, tasks, image_column="image_path", id_column="sku")
    backbone = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)
    MultiTaskViTModel(MultiTaskViTConfig(backbone_config=backbone, tasks=source.task_specs)).save_pretrained(folder)
    ImageTransforms(size=(32, 32)).image_processor().save_pretrained(folder)
