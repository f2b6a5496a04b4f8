"""Write the example's test images: a real photo and two stripe patterns.

The photo is the portrait of Grace Hopper that ships with matplotlib (a US Navy
photograph in the public domain). The stripes make the known answer visible:
a vertical-edge kernel gives zero response on horizontal stripes.
Run: python examples/edges/make_images.py
"""

from pathlib import Path

import numpy as np
from matplotlib import cbook
from PIL import Image

HERE = Path(__file__).parent / "images"


def stripes(horizontal: bool, size: int = 128, period: int = 16) -> np.ndarray:
    ramp = (np.arange(size) // (period // 2)) % 2 * 255
    img = np.tile(ramp[:, None] if horizontal else ramp[None, :], (1, size) if horizontal else (size, 1))
    return img.astype(np.uint8)


def main() -> None:
    HERE.mkdir(exist_ok=True)
    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        Image.open(fh).convert("RGB").resize((192, 224)).save(HERE / "grace_hopper.jpg", quality=90)
    Image.fromarray(stripes(horizontal=True)).save(HERE / "stripes_horizontal.png")
    Image.fromarray(stripes(horizontal=False)).save(HERE / "stripes_vertical.png")


if __name__ == "__main__":
    main()
