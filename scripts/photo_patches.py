#!/usr/bin/env python3
"""Write a folder of real colour images for gantry's `--dataset folder`: random 32x32 patches of
six photos that Debian's python3-skimage ships (the astronaut, the cat Chelsea, a coffee cup, an
immunohistochemistry slide, a motorcycle, a rocket), one class sub-folder per photo.

    apt-get download python3-skimage && dpkg -x python3-skimage_*.deb skimage-deb
    python3 scripts/photo_patches.py skimage-deb/usr/lib/python3/dist-packages/skimage/data photos

Each photo is halved (so a patch shows a 64-pixel region of it), then PER_CLASS patches are cut at
seeded random places. Needs numpy and Pillow.
"""
import os
import sys

import numpy as np
from PIL import Image

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "ihc.png", "motorcycle_left.png", "rocket.jpg"]
PER_CLASS = 1000
SIDE = 32


def main(source, out):
    rng = np.random.default_rng(0)
    for name in PHOTOS:
        photo = Image.open(os.path.join(source, name)).convert("RGB")
        photo = photo.resize((photo.width // 2, photo.height // 2), Image.LANCZOS)
        pixels = np.asarray(photo)
        folder = os.path.join(out, os.path.splitext(name)[0])
        os.makedirs(folder, exist_ok=True)
        for k in range(PER_CLASS):
            y = rng.integers(0, pixels.shape[0] - SIDE + 1)
            x = rng.integers(0, pixels.shape[1] - SIDE + 1)
            Image.fromarray(pixels[y : y + SIDE, x : x + SIDE]).save(os.path.join(folder, f"{k:04d}.png"))
    print(f"wrote {len(PHOTOS) * PER_CLASS} patches of {SIDE}x{SIDE} into {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
