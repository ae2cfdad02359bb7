"""KDCachedViews: a training set whose samples carry their teacher's logits
from a teacher cache.

Each ``__getitem__`` picks one stored view of the image and runs the train
pipeline with the replay transforms (:mod:`.replay`), so the student sees
exactly the crop and flip the teacher saw; the view's logits (K teachers, C
classes) go on the data sample as ``kd_teacher_logits`` (K, C), which the
distiller's :class:`~.teacher.CachedTeacher` emits in place of a teacher.

* views = N: a stored view drawn uniformly (``np.random``, as the pipeline's
  own draws: seeded per worker by mmengine);
* views = all: the pipeline draws as the live one does (same RNG calls, same
  probabilities) and the drawn view is looked up: training from the cache is
  then training from the live teacher, step for step.
"""
from __future__ import annotations

import copy

import numpy as np
from mmpretrain.registry import DATASETS

from ..errors import ConfigError
from .replay import VIEW_KEY, ViewParams, replay_pipeline
from .store import (canonical, mismatch, open_shard, read_complete_index,
                    sample_logits)
from .teacher import LOGITS_KEY


def check_data(cache_dir: str, index: dict, ds_cfg: dict, dataset) -> None:
    """The data side of a run must be the cache's: pipeline, data set type,
    length and classes."""
    fix = ('Fix: rebuild the cache for this config (python '
           f'tools/cache_teacher.py CONFIG {cache_dir}), or point '
           'model.teacher_cache at the cache of this data.')
    pipeline = canonical(ds_cfg.get('pipeline'))
    if pipeline != index['pipeline']:
        raise ConfigError(mismatch('the train pipeline', cache_dir,
                                   index['pipeline'], pipeline, fix))
    if str(ds_cfg.get('type')) != index['dataset_type']:
        raise ConfigError(mismatch('the data set', cache_dir,
                                   index['dataset_type'], ds_cfg.get('type'),
                                   fix))
    if len(dataset) != index['length']:
        raise ConfigError(mismatch('a data set of length', cache_dir,
                                   index['length'], len(dataset), fix))
    classes = list(dataset.metainfo.get('classes') or [])
    if index.get('class_names') is not None and \
            classes != index['class_names']:
        raise ConfigError(mismatch(
            'the classes', cache_dir, f'{index["class_names"][:5]}... '
            f'({len(index["class_names"])})',
            f'{classes[:5]}... ({len(classes)})', fix))


@DATASETS.register_module()
class KDCachedViews:
    """The train set of a cached-teacher run.

    Args:
        dataset: the train dataset config (its ``pipeline`` is the one the
            cache was built with; its random transforms are replayed).
        cache: the teacher cache directory (``tools/cache_teacher.py``).
    """

    def __init__(self, dataset: dict, cache: str) -> None:
        self.cache = str(cache)
        self.index = read_complete_index(self.cache)
        ds_cfg = copy.deepcopy(dict(dataset))
        if 'pipeline' not in ds_cfg:
            raise ConfigError('KDCachedViews needs a dataset config with a '
                              'pipeline (a wrapped data set such as '
                              'RepeatDataset is not supported).')
        original = ds_cfg['pipeline']
        ds_cfg['pipeline'] = replay_pipeline(original)
        self.dataset = DATASETS.build(ds_cfg)
        check_data(self.cache, self.index, dict(dataset, pipeline=original),
                   self.dataset)
        self.world = self.index['world_size']
        self.all_views = self.index['views'] == 'all'
        self._shards: dict = {}  # rank -> memory maps, opened on first use

    @property
    def metainfo(self) -> dict:
        return self.dataset.metainfo

    def __len__(self) -> int:
        return len(self.dataset)

    def get_data_info(self, idx: int) -> dict:
        return self.dataset.get_data_info(idx)

    def _shard(self, idx: int):
        r = idx % self.world
        if r not in self._shards:
            self._shards[r] = open_shard(self.cache, self.index, r, 'r')
        return self._shards[r], idx // self.world

    def __getitem__(self, idx: int) -> dict:
        shard, row = self._shard(idx)
        params = shard['params'][row]  # (V, P)
        info = copy.deepcopy(self.dataset.get_data_info(idx))
        if self.all_views:
            view = ViewParams('record')
            out = self.dataset.pipeline(dict(info, **{VIEW_KEY: view}))
            hits = np.flatnonzero((params == np.asarray(
                view.params, np.int32)).all(1))
            if not len(hits):
                raise ConfigError(
                    f'sample {idx}: the view drawn {view.params} is not in '
                    f'teacher_cache {self.cache!r} (built with --views all '
                    'for images of another size?).\n  Fix: rebuild it.')
            v = int(hits[0])
        else:
            v = int(np.random.randint(len(params)))
            out = self.dataset.pipeline(dict(
                info, **{VIEW_KEY: ViewParams('apply', params[v])}))
        logits = sample_logits(shard, row, v, self.index)
        out['data_samples'].set_field(logits, LOGITS_KEY)
        return out
