"""A teacher cache on disk: ``DIR/index.json`` plus memory-mapped ``.npy``
shards, one set per building rank ``r`` (sample ``i`` is row ``i // W`` of
shard ``i % W``, W the build's world size):

* ``params_r{r}.npy``  int32 (rows, V, P): each view's replay parameters
  (:mod:`.replay`);
* ``logits_t{k}_r{r}.npy`` fp16 (rows, V, C): teacher k's logits, or with
  top-k ``topv_t{k}_r{r}.npy`` fp16 (rows, V, K) log-probabilities and
  ``topi_t{k}_r{r}.npy`` int32 (rows, V, K) their classes;
* ``done_r{r}.npy`` uint8 (rows,): rows written (a build resumes there).

The index holds what a run is checked against: the teachers (config and
checkpoint sha256), the data preprocessor, the train pipeline, the data set
(type, length, classes), the views and the top-k.
"""
from __future__ import annotations

import hashlib
import json
import os
import os.path as osp
from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import ConfigError, MissingFileError

FORMAT = 1
INDEX = 'index.json'


def canonical(obj) -> str:
    """A stable text of a config value (dict keys sorted)."""
    def plain(o):
        if isinstance(o, dict):
            return {str(k): plain(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [plain(v) for v in o]
        if isinstance(o, (str, int, float, bool)) or o is None:
            return o
        return repr(o)
    return json.dumps(plain(obj), sort_keys=True)


def file_sha256(path: Optional[str]) -> Optional[str]:
    if not path or '://' in str(path) or not osp.isfile(path):
        return None
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 22), b''):
            h.update(block)
    return h.hexdigest()


def teacher_record(spec, ckpt: Optional[str]) -> dict:
    return dict(spec=canonical(spec), ckpt=str(ckpt) if ckpt else None,
                ckpt_sha256=file_sha256(ckpt))


def read_index(cache_dir: str) -> dict:
    path = osp.join(str(cache_dir), INDEX)
    if not osp.isfile(path):
        raise MissingFileError(
            f'teacher_cache {cache_dir!r} has no {INDEX}: it is not a teacher '
            'cache (or its build has not started).\n  Fix: build it: python '
            'tools/cache_teacher.py CONFIG ' + str(cache_dir))
    with open(path) as f:
        index = json.load(f)
    if index.get('format') != FORMAT:
        raise ConfigError(f'{path} has format {index.get("format")}, this '
                          f'kd_plugins reads {FORMAT}.\n  Fix: rebuild the '
                          'cache with tools/cache_teacher.py.')
    return index


def read_complete_index(cache_dir: str) -> dict:
    """:func:`read_index` of a cache whose build has finished."""
    index = read_index(cache_dir)
    if index.get('status') != 'complete':
        raise ConfigError(
            f'teacher_cache {cache_dir!r} is not complete (its build was '
            'interrupted).\n  Fix: run the same tools/cache_teacher.py '
            'command again: it resumes where it stopped.')
    return index


def write_index(cache_dir: str, index: dict) -> None:
    tmp = osp.join(cache_dir, INDEX + '.tmp')
    with open(tmp, 'w') as f:
        json.dump(index, f, indent=1)
    os.replace(tmp, osp.join(cache_dir, INDEX))


def rows_of(length: int, world: int, rank: int) -> int:
    return len(range(rank, length, world))


def shard_files(index: dict, rank: int) -> dict:
    """name -> (file, dtype, shape) of one shard."""
    rows = rows_of(index['length'], index['world_size'], rank)
    v, p, c = index['views_per_sample'], index['params'], index['classes_n']
    files = dict(params=(f'params_r{rank}.npy', np.int32, (rows, v, p)),
                 done=(f'done_r{rank}.npy', np.uint8, (rows, )))
    for k in range(len(index['teachers'])):
        if index['topk']:
            kk = index['topk']
            files[f'topv{k}'] = (f'topv_t{k}_r{rank}.npy', np.float16,
                                 (rows, v, kk))
            files[f'topi{k}'] = (f'topi_t{k}_r{rank}.npy', np.int32,
                                 (rows, v, kk))
        else:
            files[f'logits{k}'] = (f'logits_t{k}_r{rank}.npy', np.float16,
                                   (rows, v, c))
    return files


def bytes_per_view(index: dict) -> int:
    k = len(index['teachers'])
    per = (index['topk'] * 6 if index['topk'] else index['classes_n'] * 2)
    return 4 * index['params'] + k * per


def open_shard(cache_dir: str, index: dict, rank: int, mode: str) -> dict:
    """The shard's arrays as memory maps ('r' to read, 'r+' to write;
    'w+' creates them)."""
    out = {}
    for name, (fn, dtype, shape) in shard_files(index, rank).items():
        path = osp.join(cache_dir, fn)
        if mode == 'w+' and not osp.isfile(path):
            out[name] = np.lib.format.open_memmap(path, 'w+', dtype, shape)
            continue
        if not osp.isfile(path):
            raise MissingFileError(
                f'teacher cache {cache_dir!r} lacks {fn}.\n  Fix: rebuild '
                'it (tools/cache_teacher.py resumes an interrupted build).')
        arr = np.load(path, mmap_mode='r' if mode == 'r' else 'r+')
        if arr.shape != shape or arr.dtype != dtype:
            raise ConfigError(f'{path} holds {arr.dtype}{arr.shape}, the '
                              f'index says {np.dtype(dtype)}{shape}.\n  Fix: '
                              'rebuild the cache.')
        out[name] = arr
    return out


def topk_logits(values: np.ndarray, indices: np.ndarray,
                num_classes: int) -> torch.Tensor:
    """Logits (..., C) from top-k log-probabilities (FKD's "marginal
    smoothing"): the k stored classes keep their log p; every other class
    gets log((1 - sum_k p_k) / (C - k)), the rest's mass shared evenly. An
    approximation of the teacher's distribution (exact on the k classes)."""
    v = torch.from_numpy(np.asarray(values, np.float32))
    i = torch.from_numpy(np.asarray(indices, np.int64))
    k = v.shape[-1]
    rest = (1 - v.exp().sum(-1, keepdim=True)).clamp_min(1e-8)
    fill = torch.log(rest / max(num_classes - k, 1))
    out = fill.expand(*v.shape[:-1], num_classes).clone()
    return out.scatter_(-1, i, v)


def sample_logits(shard: dict, row: int, view: int,
                  index: dict) -> torch.Tensor:
    """(K, C) float32 logits of one stored view."""
    out = []
    for k in range(len(index['teachers'])):
        if index['topk']:
            out.append(topk_logits(shard[f'topv{k}'][row, view],
                                   shard[f'topi{k}'][row, view],
                                   index['classes_n']))
        else:
            out.append(torch.from_numpy(np.asarray(
                shard[f'logits{k}'][row, view], np.float32)))
    return torch.stack(out)


class CacheReader:
    """Image-indexed reads from one or several caches (several: one per
    teacher, their logits stacked in that order). Each cache's shards are
    memory-mapped on first use, in the process that reads (loader workers
    each map their own)."""

    def __init__(self, caches: Sequence[str], indexes: Sequence[dict]
                 ) -> None:
        self.caches, self.indexes = list(caches), list(indexes)
        self._shards: dict = {}  # (cache, rank) -> memory maps

    def _shard(self, c: int, idx: int) -> tuple:
        """Cache c's memory maps holding image ``idx``, and its row."""
        world = self.indexes[c]['world_size']
        r = idx % world
        if (c, r) not in self._shards:
            self._shards[c, r] = open_shard(self.caches[c], self.indexes[c],
                                            r, 'r')
        return self._shards[c, r], idx // world

    def params(self, idx: int, c: int = 0) -> np.ndarray:
        """(V, P) replay parameters of image ``idx``'s views in cache c."""
        shard, row = self._shard(c, idx)
        return shard['params'][row]

    def logits(self, idx: int, view: int) -> torch.Tensor:
        """(K, C) float32 logits of view ``view`` of image ``idx``, every
        cache's teachers in order."""
        return torch.cat([sample_logits(*self._shard(c, idx), view, index)
                          for c, index in enumerate(self.indexes)])


def human_bytes(n: float) -> str:
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
        if n < 1024 or unit == 'TiB':
            return f'{n:.1f} {unit}'
        n /= 1024
    return f'{n:.1f} TiB'


def total_bytes(index: dict) -> int:
    return index['length'] * index['views_per_sample'] * bytes_per_view(
        index)


def mismatch(what: str, cache_dir: str, cached, run, fix: str = '') -> str:
    return (f'teacher_cache {cache_dir!r} was built for {what} {cached}, '
            f'this run has {run}.' + (f' {fix}' if fix else ''))


__all__ = ['canonical', 'file_sha256', 'read_index', 'read_complete_index',
           'write_index',
           'open_shard', 'shard_files', 'topk_logits', 'sample_logits',
           'teacher_record', 'total_bytes', 'bytes_per_view', 'human_bytes',
           'rows_of', 'CacheReader']
