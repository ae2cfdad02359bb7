"""The KD layer's statistics file (``.npz``): its one definition.

Written by ``kd_plugins.kd_layer_stats`` (``tools/kd_layer_stats.py``), read
by ``kd_plugins.losses.kd_layer``. It holds ``meta`` (a JSON string: kinds,
num_classes, classes, teacher, K, subclasses, lda_dim, pooling...) and, per
kind of statistics, the arrays of :data:`LAYOUT`:

* penultimate: ``penult_centers`` (K, C_t) k-means centres rho_k;
* intermediate: ``inter_mean`` (C_t,) and ``inter_proj`` (C_t, d) the LDA
  (z = (f - mean) @ proj), ``inter_centers`` (S, d) the subclass prototypes
  (S = classes x subclasses), ``inter_s_t`` (S, S) the decision matrix s_T.

``meta`` carries ``kd_plugins_kind='kd_layer_stats'`` and ``format_version``
(:mod:`kd_plugins.utils.file_kinds`); :func:`load_stats` recognises the file
before the loss uses it.
"""
from __future__ import annotations

import json
import os.path as osp
import zipfile

import numpy as np

from ..errors import ConfigError, MissingFileError
from .file_kinds import check_marker, marker, sniff

LAYOUT = {
    'penultimate': ('penult_centers', ),
    'intermediate': ('inter_mean', 'inter_proj', 'inter_centers',
                     'inter_s_t'),
}


MAKE = ('compute it from the teacher: python tools/kd_layer_stats.py CONFIG '
        'TEACHER_CKPT OUT.npz, then set model.distiller.distill_losses.'
        '<loss>.stats_file=OUT.npz')


def _refuse(path: str, problem: str, fix: str = MAKE):
    return ConfigError(f'KD-layer statistics file {path!r} {problem}.\n  '
                       f'Fix: {fix}.')


def _check(arrays: dict, meta: dict, path: str) -> None:
    """Every kind of ``meta`` has its arrays, with consistent shapes (the
    layout above), and the metadata the loss reads."""
    kinds = meta.get('kinds')
    if not isinstance(kinds, list) or not kinds:
        raise _refuse(path, f'lists no kinds of statistics (meta kinds='
                      f'{kinds!r})')
    for kind in kinds:
        missing = [k for k in LAYOUT.get(kind, ()) if k not in arrays]
        if kind not in LAYOUT or missing:
            raise _refuse(path, f'has {kind} statistics without their arrays'
                          f' {missing or kind} (layout of kd_plugins.utils.'
                          'stats_file)', 'recompute it with '
                          'tools/kd_layer_stats.py')
    shapes = {k: tuple(np.shape(v)) for k, v in arrays.items()}
    ndim = dict(penult_centers=2, inter_mean=1, inter_proj=2,
                inter_centers=2, inter_s_t=2)
    bad = [f'{k} {shapes[k]}' for k, n in ndim.items()
           if k in shapes and len(shapes[k]) != n]
    if not bad and 'intermediate' in kinds:
        (c, ), (c2, d), (s, d2), st = (shapes[k] for k in
                                       LAYOUT['intermediate'])
        if (c2, d2, st) != (c, d, (s, s)):
            bad = [f'{k} {shapes[k]}' for k in LAYOUT['intermediate']]
        n, per = meta.get('num_classes'), meta.get('subclasses')
        if not (isinstance(n, int) and isinstance(per, int)
                and n * per == s):  # S = classes x subclasses
            bad.append(f'meta num_classes={n!r} subclasses={per!r}')
    if bad:
        raise _refuse(path, 'has arrays of inconsistent shapes or metadata '
                      f'({", ".join(bad)}; layout of kd_plugins.utils.'
                      'stats_file)', 'recompute it with '
                      'tools/kd_layer_stats.py')


def save_stats(path: str, meta: dict, arrays: dict) -> None:
    """Write ``meta`` (marked ``kd_plugins_kind='kd_layer_stats'``, format
    version 1) and the arrays of its kinds (float32) to exactly ``path``,
    atomically."""
    import io

    from .checkpoint import atomic_write
    meta = dict(meta, **marker('kd_layer_stats'))
    arrays = {k: np.asarray(v, np.float32) for k, v in arrays.items()}
    _check(arrays, meta, path)
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)
    atomic_write(buf.getvalue(), path)


def load_stats(path: str) -> tuple[dict, dict]:
    """(arrays, metadata) of a statistics file, after recognising it: a
    missing file, another kind of file (a checkpoint, JSON...), a cut-off
    or corrupt one, an ``.npz`` of other arrays, a newer format version and
    inconsistent arrays each end in one error naming the file, what it is
    and the fix. A file from before the ``kd_plugins_kind`` marker is
    recognised by its ``meta.kinds`` and the arrays of those kinds."""
    if not path or not osp.isfile(path):
        what = 'is a folder' if path and osp.isdir(path) else \
            'does not exist'
        error = ConfigError if path and osp.isdir(path) else MissingFileError
        raise error(
            f'KD-layer statistics file {path!r} {what}.\n  Fix: '
            'compute it from the teacher first: python tools/kd_layer_stats.py'
            ' CONFIG TEACHER_CKPT OUT.npz, then set model.distiller.'
            'distill_losses.<loss>.stats_file=OUT.npz')
    found = sniff(path)
    if found.kind != 'npz':
        problem = ('is unreadable - truncated or corrupt' if found.kind in (
            'npz_truncated', 'empty', 'unreadable') else
            'is not a KD-layer statistics file')
        raise _refuse(path, f'{problem}: it is {found.what}')
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(str(arrays.pop('meta'))) if 'meta' in arrays \
            else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        # a member cut off or corrupt; meta that is not JSON
        raise _refuse(path, 'is unreadable - truncated or corrupt ('
                      f'{type(err).__name__}: {err})') from err
    if not isinstance(meta, dict):
        raise _refuse(path, 'is a numpy .npz archive without kd_plugins\' '
                      f'meta entry (arrays {sorted(arrays)}), not a KD-layer '
                      'statistics file')
    check_marker(meta, path, 'kd_layer_stats', ConfigError, MAKE)
    _check(arrays, meta, path)
    return arrays, meta
