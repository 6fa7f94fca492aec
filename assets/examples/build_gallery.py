"""Rebuild the example gallery: public-domain photos from scikit-image plus CIFAR-10 test images.

Run from the repository root: ``python3 assets/examples/build_gallery.py /path/to/cifar10``
(the unpacked ``cifar10-jpeg.tar.xz``). The first two test images of every class are copied
byte for byte (no choosing of flattering examples); the photos are resized to at most 512 px.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import skimage.data

HERE = Path(__file__).resolve().parent
PHOTO_SIDE = 512
PER_CLASS = 2
# name -> (title, credit and licence, as stated in scikit-image's skimage.data docstrings)
PHOTOS = {
    "chelsea": ("Chelsea the cat", "Stefan van der Walt, CC0 (via scikit-image)"),
    "coffee": ("Coffee cup", "Rachel Michetti, CC0 (via scikit-image)"),
    "astronaut": ("Astronaut Eileen Collins", "NASA, public domain (via scikit-image)"),
    "rocket": ("Falcon 9 launch", "SpaceX, public domain (via scikit-image)"),
    "camera": ("Camera operator (greyscale)", "Lav Varshney, CC0 (via scikit-image)"),
}
CIFAR_CREDIT = ("CIFAR-10 test set (Krizhevsky, 2009), JPEG quality-75 re-encode used by this "
                "project; for research and teaching")


def save_photo(name: str) -> str:
    image = getattr(skimage.data, name)()
    scale = PHOTO_SIDE / max(image.shape[:2])
    if scale < 1:
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    file_name = f"photo_{name}.jpg"
    cv2.imwrite(str(HERE / file_name), np.ascontiguousarray(image), [cv2.IMWRITE_JPEG_QUALITY, 88])
    return file_name


def main(cifar_root: Path) -> None:
    entries = []
    for name, (title, credit) in PHOTOS.items():
        entries.append({"file": save_photo(name), "title": title, "credit": credit, "label": None})
    test_dir = cifar_root / "test"
    for class_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        for source in sorted(class_dir.glob("*.jpg"))[:PER_CLASS]:
            file_name = f"cifar_{class_dir.name}_{source.stem}.jpg"
            shutil.copyfile(source, HERE / file_name)
            entries.append({"file": file_name, "title": f"CIFAR-10 {class_dir.name} #{source.stem}",
                            "credit": CIFAR_CREDIT, "label": class_dir.name})
    (HERE / "gallery.json").write_text(json.dumps({"examples": entries}, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python3 assets/examples/build_gallery.py /path/to/unpacked/cifar10")
    main(Path(sys.argv[1]))
