"""Save AEKT's learned serialization matrix as a heat-map PNG and a .npy.

    python tools/plot_serialization.py CHECKPOINT OUT_PREFIX \
        [--classes a b ...]

Reads ``head.serialization.weight`` (C x C) from a distiller checkpoint
(``architecture.head.serialization.weight``) or an exported student, and
writes OUT_PREFIX.npy and OUT_PREFIX.png (rows: output class, columns: input
class; the identity it was initialised to is subtracted in a second panel, so
the learned inter-class relations stand out).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
import kd_plugins  # noqa: E402,F401  (weights-only allow-list)
from _common import need_file, out_file, run_main  # noqa: E402
from kd_plugins.errors import ArgumentError  # noqa: E402
from kd_plugins.utils.checkpoint import load_local_checkpoint  # noqa: E402


def load_serialization(checkpoint: str) -> tuple[np.ndarray, list | None]:
    ckpt = load_local_checkpoint(checkpoint, map_location='cpu')
    state = ckpt.get('state_dict', ckpt)
    keys = [k for k in state if k.endswith('head.serialization.weight')]
    keys = [k for k in keys if not k.startswith('teacher.')]
    if not keys:
        raise ArgumentError(
            f'{checkpoint!r} has no AEKT serialization layer (looked for '
            "'*head.serialization.weight').\n  Fix: pass a checkpoint of an "
            'AEKT run (AEKTHead), e.g. work_dirs/demo/aekt/epoch_12.pth.')
    classes = (ckpt.get('meta') or {}).get('dataset_meta') or {}
    return state[keys[0]].float().numpy(), classes.get('classes')


def plot(matrix: np.ndarray, out_prefix: str, classes=None) -> tuple[str, str]:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    d = osp.dirname(out_prefix)
    if d:
        os.makedirs(d, exist_ok=True)
    np.save(out_prefix + '.npy', matrix)
    delta = matrix - np.eye(matrix.shape[0])
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, m, title in ((axes[0], matrix, 'serialization weight'),
                         (axes[1], delta, 'weight - identity')):
        lim = float(np.abs(m).max()) or 1.0
        im = ax.imshow(m, cmap='RdBu_r', vmin=-lim, vmax=lim)
        ax.set_title(title)
        ax.set_xlabel('input class (z_cls / z_kd)')
        ax.set_ylabel('output class')
        if classes is not None and len(classes) <= 30:
            ax.set_xticks(range(len(classes)), classes, rotation=90)
            ax.set_yticks(range(len(classes)), classes)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    png = out_prefix + '.png'
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return out_prefix + '.npy', png


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('checkpoint')
    parser.add_argument('out_prefix')
    parser.add_argument('--classes', nargs='+', help='class names for ticks')
    args = parser.parse_args(argv)
    need_file(args.checkpoint, 'checkpoint', 'pass a checkpoint of an AEKT '
              'run, e.g. work_dirs/demo/aekt/epoch_12.pth after make demo')
    out_file(args.out_prefix, 'OUT_PREFIX')
    matrix, classes = load_serialization(args.checkpoint)
    npy, png = plot(matrix, args.out_prefix, args.classes or classes)
    print(f'wrote {npy} and {png} ({matrix.shape[0]} classes)')


if __name__ == '__main__':
    run_main(main)
