"""A training folder like a user's: real photos (scikit-image's samples) plus the usual mess."""
import io
from pathlib import Path

import numpy as np
from PIL import Image


def _photo(name):
    import skimage.data
    return Image.fromarray(getattr(skimage.data, name)())


def write_photo_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    astronaut = _photo("astronaut")                                  # 512x512
    astronaut.save(folder / "astronaut.png")
    (folder / "astronaut.txt").write_text("a portrait of an astronaut holding a helmet")
    (folder / "astronaut_copy.png").write_bytes((folder / "astronaut.png").read_bytes())  # duplicate content
    cat = _photo("chelsea").resize((902, 600))                       # stored sideways, EXIF says rotate
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    cat.save(folder / "chelsea.jpg", exif=exif, quality=92)
    (folder / "chelsea.txt").write_text("a tabby cat looking up")
    _photo("coffee").resize((1200, 800)).save(folder / "coffee.webp")  # no caption file
    rocket = _photo("rocket").resize((1280, 854)).convert("RGBA")
    alpha = np.full((854, 1280), 255, np.uint8)
    alpha[:, 600:700] = 0                                             # transparent band -> white
    rocket.putalpha(Image.fromarray(alpha))
    rocket.save(folder / "rocket.png")
    (folder / "rocket.txt").write_text("a rocket on the launch pad")
    buf = io.BytesIO()
    _photo("astronaut").save(buf, format="JPEG")
    (folder / "corrupt.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])  # truncated
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not a picture")
    Image.new("RGB", (100, 100), (200, 30, 30)).save(folder / "tiny.png")
    (folder / "tiny.txt").write_text("a red square")
    (folder / "readme.md").write_text("dataset notes")
    return folder
