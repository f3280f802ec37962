"""Draws the Comfy Registry icon (docs/icon.png, 400 x 400) and banner (docs/banner.png, 21:9): a falling loss curve
with checkpoint dots, the pack's name. Run once after changing the design; the files are committed.

    python tools/make_registry_images.py
"""
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

DOCS = Path(__file__).resolve().parents[1] / "docs"
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
BG, CURVE, DOT, TEXT, SUB = (24, 26, 38), (255, 170, 60), (120, 200, 255), (240, 240, 245), (170, 175, 190)


def _curve(draw, box, width):
    x0, y0, x1, y1 = box
    points = []
    for i in range(101):
        t = i / 100
        loss = 0.15 + 0.85 * math.exp(-4.2 * t) + 0.035 * math.sin(37 * t) * (1 - t)
        points.append((x0 + t * (x1 - x0), y1 - loss * (y1 - y0)))
    draw.line(points, fill=CURVE, width=width, joint="curve")
    for i in (20, 45, 70, 95):
        x, y = points[i]
        r = width * 1.3
        draw.ellipse((x - r, y - r, x + r, y + r), fill=DOT)


def icon(size=400) -> Image.Image:
    img = Image.new("RGB", (size, size), BG)
    draw = ImageDraw.Draw(img)
    _curve(draw, (40, 40, size - 40, size - 150), 12)
    font = ImageFont.truetype(FONT, 78)
    draw.text((size / 2, size - 100), "FLUX", font=font, fill=TEXT, anchor="mm")
    draw.text((size / 2, size - 38), "LoRA", font=ImageFont.truetype(FONT, 50), fill=CURVE, anchor="mm")
    return img


def banner(width=1260, height=540) -> Image.Image:
    img = Image.new("RGB", (width, height), BG)
    draw = ImageDraw.Draw(img)
    _curve(draw, (700, 70, width - 60, height - 70), 10)
    draw.text((70, 170), "Flux LoRA Trainer", font=ImageFont.truetype(FONT, 70), fill=TEXT, anchor="lm")
    draw.text((70, 265), "Train FLUX LoRAs inside ComfyUI", font=ImageFont.truetype(FONT, 34), fill=SUB, anchor="lm")
    draw.text((70, 330), "FLUX.1 dev · schnell · Kontext", font=ImageFont.truetype(FONT, 30), fill=CURVE, anchor="lm")
    draw.text((70, 380), "FLUX.2 klein · dev · Chroma", font=ImageFont.truetype(FONT, 30), fill=CURVE, anchor="lm")
    return img


if __name__ == "__main__":
    icon().save(DOCS / "icon.png", optimize=True)
    banner().save(DOCS / "banner.png", optimize=True)
    print("wrote docs/icon.png and docs/banner.png")
