"""A small training set made on the spot (nothing is downloaded or read from the user's folders): two 512 px
pictures of simple shapes on colour gradients, each with a caption file, as a user's photo folder would hold them.
Two, because encoding them with the VAE is most of a CPU run's time."""
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from . import write_replacing

SIZE = 512   # Dataset Loader's smallest training resolution: smaller images would be skipped
PICTURES = (  # (caption, background from -> to, shape, shape colour)
    ("a red circle on a blue sky", (40, 90, 200), (150, 200, 250), "ellipse", (220, 40, 30)),
    ("a white triangle on green grass", (30, 120, 40), (120, 200, 90), "triangle", (245, 245, 245)),
)


def _picture(top, bottom, shape, colour) -> Image.Image:
    """A vertical gradient with one shape in the middle: smooth, like a photo, and different per picture."""
    t = np.linspace(0.0, 1.0, SIZE)[:, None, None]
    field = (1 - t) * np.array(top, float) + t * np.array(bottom, float)
    image = Image.fromarray(np.broadcast_to(field, (SIZE, SIZE, 3)).round().astype(np.uint8))
    draw = ImageDraw.Draw(image)
    a, b = SIZE // 4, SIZE * 3 // 4
    if shape == "triangle":
        draw.polygon([(SIZE // 2, a), (a, b), (b, b)], fill=colour)
    else:
        getattr(draw, shape)([a, a, b, b], fill=colour)
    return image


def write_photo_set(folder: Path) -> list:
    """Writes the pictures and their caption files into ``folder`` (the workflow's Trigger Word node adds the trigger,
    and Auto Caption finds nothing left to caption, so no captioning model is needed); returns the image names."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, (caption, top, bottom, shape, colour) in enumerate(PICTURES):
        png = BytesIO()
        _picture(top, bottom, shape, colour).save(png, format="PNG")
        write_replacing(str(folder / f"picture_{i}.png"), png.getvalue())
        write_replacing(str(folder / f"picture_{i}.txt"), f"{caption}\n".encode())
        names.append(f"picture_{i}.png")
    return names
