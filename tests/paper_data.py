"""Test-only: the papers' data sets in their real on-disk formats, tiny and
with random pixels, for the paper-path tests (tests/test_reproduce.py).

Importing this module drops mmpretrain's md5 check of the CIFAR files,
which generated files cannot pass; the shipped code keeps the check. The
tests import it in every process they start with :func:`site_dir` (a
``sitecustomize`` on ``PYTHONPATH``).
"""
from __future__ import annotations

import os
import os.path as osp
import pickle

import numpy as np
from mmpretrain.datasets import CIFAR100

CIFAR100.train_list = [[name, None] for name, _ in CIFAR100.train_list]
CIFAR100.test_list = [[name, None] for name, _ in CIFAR100.test_list]
CIFAR100.meta = dict(CIFAR100.meta, md5=None)


def write_cifar100(root: str, n_train: int = 128, n_test: int = 64,
                   seed: int = 0) -> str:
    """``root/cifar-100-python/{train,test,meta}`` as the python version of
    CIFAR-100 holds them (pickled dicts, uint8 rows of 3 x 32 x 32 pixels,
    ``fine_labels``); returns ``root``."""
    rng = np.random.default_rng(seed)
    folder = osp.join(root, 'cifar-100-python')
    os.makedirs(folder, exist_ok=True)
    for split, n in (('train', n_train), ('test', n_test)):
        labels = [i % 100 for i in range(n)]
        entry = {'filenames': [f'{split}_{i}.png' for i in range(n)],
                 'batch_label': f'{split} batch',
                 'fine_labels': labels,
                 'coarse_labels': [label // 5 for label in labels],
                 'data': rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        with open(osp.join(folder, split), 'wb') as f:
            pickle.dump(entry, f)
    meta = {'fine_label_names': [f'class_{i}' for i in range(100)],
            'coarse_label_names': [f'super_{i}' for i in range(20)]}
    with open(osp.join(folder, 'meta'), 'wb') as f:
        pickle.dump(meta, f)
    return root


def site_dir(folder: str) -> str:
    """A folder whose ``sitecustomize.py`` imports this module at the start
    of every Python process that has it (and the checkout) on PYTHONPATH."""
    os.makedirs(folder, exist_ok=True)
    with open(osp.join(folder, 'sitecustomize.py'), 'w') as f:
        f.write('import tests.paper_data  # noqa: F401 (test-only)\n')
    return folder


def write_imagenet(root: str, num_classes: int = 1000, per_class: int = 1,
                   size: int = 36, meta: bool = True, seed: int = 0) -> str:
    """``root/{train,val}/<wnid>/*.JPEG`` in mmpretrain's ImageNet layout
    (``num_classes`` wnid folders each, ``per_class`` random-pixel JPEGs of
    ``size`` px a folder) and, with ``meta``, ``root/meta/{train,val}.txt``
    (``<relative path> <label>`` lines, as mmpretrain's annotation files);
    returns ``root``."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split in ('train', 'val'):
        lines = []
        for c in range(num_classes):
            wnid = f'n{c:08d}'
            folder = osp.join(root, split, wnid)
            os.makedirs(folder, exist_ok=True)
            for i in range(per_class):
                name = f'{wnid}_{i}.JPEG'
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(osp.join(folder, name),
                                             quality=75)
                lines.append(f'{wnid}/{name} {c}')
        if meta:
            os.makedirs(osp.join(root, 'meta'), exist_ok=True)
            with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
                f.write('\n'.join(lines) + '\n')
    return root
