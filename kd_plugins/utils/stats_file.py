"""The KD layer's statistics file (``.npz``): its one definition.

Written by ``kd_plugins.kd_layer_stats`` (``tools/kd_layer_stats.py``), read
by ``kd_plugins.losses.kd_layer``. It holds ``meta`` (a JSON string: kinds,
num_classes, classes, teacher, K, subclasses, lda_dim, pooling...) and, per
kind of statistics, the arrays of :data:`LAYOUT`:

* penultimate: ``penult_centers`` (K, C_t) k-means centres rho_k;
* intermediate: ``inter_mean`` (C_t,) and ``inter_proj`` (C_t, d) the LDA
  (z = (f - mean) @ proj), ``inter_centers`` (S, d) the subclass prototypes
  (S = classes x subclasses), ``inter_s_t`` (S, S) the decision matrix s_T.
"""
from __future__ import annotations

import json
import os
import os.path as osp

import numpy as np

from ..errors import ConfigError, MissingFileError

LAYOUT = {
    'penultimate': ('penult_centers', ),
    'intermediate': ('inter_mean', 'inter_proj', 'inter_centers',
                     'inter_s_t'),
}


def _check(arrays: dict, meta: dict, path: str) -> None:
    for kind in meta.get('kinds', []):
        missing = [k for k in LAYOUT.get(kind, ()) if k not in arrays]
        if kind not in LAYOUT or missing:
            raise ConfigError(
                f'{path!r}: {kind} statistics without their arrays '
                f'{missing or kind} (layout of kd_plugins.utils.stats_file)'
                '.\n  Fix: recompute it with tools/kd_layer_stats.py.')


def save_stats(path: str, meta: dict, arrays: dict) -> None:
    """Write ``meta`` and the arrays of its kinds (float32)."""
    _check(arrays, meta, path)
    if osp.dirname(path):
        os.makedirs(osp.dirname(path), exist_ok=True)
    np.savez(path, meta=np.array(json.dumps(meta)),
             **{k: np.asarray(v, np.float32) for k, v in arrays.items()})


def load_stats(path: str) -> tuple[dict, dict]:
    """(arrays, metadata) of a statistics file; clear errors if unusable."""
    if not path or not osp.isfile(path):
        raise MissingFileError(
            f'KD-layer statistics file {path!r} does not exist.\n  Fix: '
            'compute it from the teacher first: python tools/kd_layer_stats.py'
            ' CONFIG TEACHER_CKPT OUT.npz, then set model.distiller.'
            'distill_losses.<loss>.stats_file=OUT.npz')
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop('meta')))
    _check(arrays, meta, path)
    return arrays, meta
