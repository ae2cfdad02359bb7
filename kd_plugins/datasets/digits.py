"""scikit-learn's bundled handwritten digits as an mmpretrain data set.

1,797 real 8x8 grey-scale digits in 10 classes ship inside scikit-learn, so the
demo and the tests need no download. The train/test split is fixed
(stratified, 80/20, seed 0). Images are returned as ``uint8`` arrays of shape
(H, W, 3), upscaled to ``img_size`` (default 32, the CIFAR size), so the
standard mmpretrain pipelines (``RandomCrop``, ``RandomFlip``,
``PackInputs``...) apply unchanged.

Subsets of the train split, deterministic and stratified (the same images on
every call, whatever the seed of the run):

- ``val_per_class=V``: a validation split of V images per class is carved out
  of the train split (``split='val'`` returns it, ``split='train'`` the rest):
  tune hyper-parameters there, never on the test split;
- ``num_per_class=K``: keep K images per class of the (remaining) train split
  (the few-labels regime of the benchmark).
"""
from __future__ import annotations

from typing import List

import numpy as np
from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS

from ..errors import ConfigError

DIGITS_CLASSES = tuple(str(i) for i in range(10))


def load_digits_split(split: str, test_fraction: float = 0.2,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images, labels)`` of one split.

    Args:
        split: ``'train'`` or ``'test'``.
        test_fraction: share of each class that goes to the test split.
        seed: seed of the stratified shuffle (fixed: the split is part of
            the benchmark).

    Returns:
        images: (N, 8, 8) float array with values in [0, 16];
        labels: (N,) int64 array in [0, 9].
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in ('train', 'test'):
        raise ConfigError(f"Digits split must be 'train' or 'test', "
                          f'got {split!r}.')
    digits = load_digits()
    idx = np.arange(len(digits.target))
    train_idx, test_idx = train_test_split(
        idx, test_size=test_fraction, random_state=seed,
        stratify=digits.target)
    sel = np.sort(train_idx if split == 'train' else test_idx)
    return digits.images[sel], digits.target[sel].astype(np.int64)


def train_subset(labels: np.ndarray, split: str, val_per_class: int = 0,
                 num_per_class: int | None = None) -> np.ndarray:
    """Indices into the train split's ``labels`` for ``split`` 'train' or
    'val', stratified and deterministic: each class's images are put in a
    fixed pseudo-random order (seeded by the class); the first
    ``val_per_class`` are the validation split, the next ``num_per_class``
    (all when None) the train subset. Sorted."""
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        order = np.random.default_rng(1000 + int(c)).permutation(idx)
        if val_per_class + (num_per_class or 1) > len(order):
            raise ConfigError(
                f'Digits class {c} has {len(order)} train images: cannot '
                f'hold out {val_per_class} for validation and keep '
                f'{num_per_class or "the rest"} for training.')
        if split == 'val':
            keep.append(order[:val_per_class])
        else:
            rest = order[val_per_class:]
            keep.append(rest if num_per_class is None else
                        rest[:num_per_class])
    return np.sort(np.concatenate(keep))


def to_rgb_uint8(image: np.ndarray, img_size: int) -> np.ndarray:
    """(8, 8) digit in [0, 16] -> (img_size, img_size, 3) uint8 image."""
    import cv2
    img = np.clip(image * (255.0 / 16.0), 0, 255).astype(np.uint8)
    if img_size != img.shape[0]:
        img = cv2.resize(img, (img_size, img_size),
                         interpolation=cv2.INTER_LINEAR)
    return np.repeat(img[:, :, None], 3, axis=2)


@DATASETS.register_module()
class Digits(BaseDataset):
    """The scikit-learn digits data set (10 classes, real images).

    Args:
        split: ``'train'`` (1,437 images), ``'test'`` (360 images) or
            ``'val'`` (needs ``val_per_class``).
        img_size: side of the square output images; 32 suits CIFAR-style
            backbones.
        val_per_class: validation images per class carved out of the train
            split (0: none; ``'train'`` is then the whole train split).
        num_per_class: keep this many images per class of the (remaining)
            train split (None: all). Only for ``split='train'``.
        pipeline: mmpretrain transforms applied to ``results['img']``.
        **kwargs: passed to :class:`mmpretrain.datasets.BaseDataset`.
    """

    METAINFO = {'classes': DIGITS_CLASSES}

    def __init__(self, split: str = 'train', img_size: int = 32,
                 val_per_class: int = 0, num_per_class: int | None = None,
                 pipeline=(), **kwargs) -> None:
        if split not in ('train', 'val', 'test'):
            raise ConfigError(f"Digits split must be 'train', 'val' or "
                              f"'test', got {split!r}.")
        if split == 'val' and val_per_class <= 0:
            raise ConfigError("Digits split='val' needs val_per_class > 0 "
                              '(images per class carved out of the train '
                              'split).')
        if num_per_class is not None and (split != 'train' or
                                          num_per_class <= 0):
            raise ConfigError('Digits num_per_class applies to split='
                              f"'train' and must be > 0; got split={split!r}, "
                              f'num_per_class={num_per_class}.')
        self.split = split
        self.img_size = int(img_size)
        self.val_per_class = int(val_per_class)
        self.num_per_class = num_per_class
        kwargs.setdefault('ann_file', '')
        super().__init__(pipeline=pipeline, **kwargs)

    def load_data_list(self) -> List[dict]:
        images, labels = load_digits_split(
            'test' if self.split == 'test' else 'train')
        if self.split != 'test' and (self.val_per_class or
                                     self.num_per_class):
            sel = train_subset(labels, self.split, self.val_per_class,
                               self.num_per_class)
            images, labels = images[sel], labels[sel]
        return [
            dict(img=to_rgb_uint8(img, self.img_size), gt_label=int(label),
                 img_shape=(self.img_size, self.img_size),
                 ori_shape=(self.img_size, self.img_size))
            for img, label in zip(images, labels)
        ]

    def extra_repr(self) -> List[str]:
        return [f'Split: \t{self.split}', f'Image size: \t{self.img_size}',
                f'Validation per class: \t{self.val_per_class}',
                f'Train images per class: \t{self.num_per_class or "all"}']
