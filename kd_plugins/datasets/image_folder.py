"""Write a small ImageFolder tree (for tests of the file-based data path)."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .digits import DIGITS_CLASSES, load_digits_split, to_rgb_uint8


def write_digits_image_folder(root: str, split: str = 'train',
                              img_size: int = 32,
                              per_class: int | None = None,
                              classes: Sequence[str] = DIGITS_CLASSES) -> str:
    """Save Digits images as PNG files in ``root/<class>/<index>.png``.

    The tree is what mmpretrain's ``CustomDataset`` reads with
    ``data_prefix=root`` (sub-folder names are the classes).

    Args:
        root: output folder (created).
        split: which Digits split to write.
        img_size: side of the saved images.
        per_class: keep at most this many images per class (None: all).
        classes: folder names for labels 0..9.

    Returns:
        ``root``.
    """
    import cv2
    images, labels = load_digits_split(split)
    counts = np.zeros(len(classes), dtype=int)
    for i, (img, label) in enumerate(zip(images, labels)):
        if per_class is not None and counts[label] >= per_class:
            continue
        counts[label] += 1
        folder = os.path.join(root, classes[label])
        os.makedirs(folder, exist_ok=True)
        cv2.imwrite(os.path.join(folder, f'{i:05d}.png'),
                    to_rgb_uint8(img, img_size))
    return root
