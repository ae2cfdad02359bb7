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
from typing import List

import numpy as np
from mmpretrain.registry import DATASETS

from ..errors import ConfigError
from .replay import VIEW_KEY, ViewParams, replay_pipeline
from .store import CacheReader, canonical, mismatch, read_complete_index
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


def is_cached_views(ds_cfg) -> bool:
    """Whether a data set config is a KDCachedViews wrapper."""
    return str(ds_cfg.get('type', '')).split('.')[-1] == 'KDCachedViews'


def wrap_cached_views(ds_cfg, cache: str) -> dict:
    """The train set config wrapped in KDCachedViews over ``cache`` (one
    already wrapped gets this cache)."""
    if is_cached_views(ds_cfg):
        return dict(ds_cfg, cache=cache)
    return dict(type='KDCachedViews', dataset=ds_cfg, cache=cache)


def cached_train_loader(loader_cfg: dict, cache) -> dict:
    """The training loader config of a run with ``model.teacher_cache =
    cache``: its data set wrapped in KDCachedViews (kd_plugins' training
    loops call it when they build the loader, so ``model.teacher_cache`` is
    all a config or ``--cfg-options`` needs to set)."""
    loader = dict(loader_cfg)
    loader['dataset'] = wrap_cached_views(loader['dataset'], cache)
    return loader


def unwrap_cached_views(ds_cfg) -> dict:
    """The data set a KDCachedViews config wraps (others as they are)."""
    return dict(ds_cfg['dataset']) if is_cached_views(ds_cfg) else ds_cfg


# what must agree between the caches of one run's teachers: the same views
VIEW_KEYS = ('views', 'views_per_sample', 'params', 'seed', 'length')


def as_caches(cache) -> List[str]:
    """``model.teacher_cache``: one directory, or a list (one per
    teacher, in teacher order)."""
    return [str(c) for c in cache] if isinstance(cache, (list, tuple)) \
        else [str(cache)]


@DATASETS.register_module()
class KDCachedViews:
    """The train set of a cached-teacher run.

    Args:
        dataset: the train dataset config (its ``pipeline`` is the one the
            cache was built with; its random transforms are replayed).
        cache: the teacher cache directory (``tools/cache_teacher.py``), or
            a list of them, one per teacher in teacher order (built with the
            same ``--views`` and ``--seed``: the same views of every image);
            a sample's logits are then stacked (K, C) in that order.
    """

    def __init__(self, dataset: dict, cache) -> None:
        self.caches = as_caches(cache)
        self.cache = self.caches[0] if len(self.caches) == 1 else self.caches
        self.indexes = [read_complete_index(c) for c in self.caches]
        self.index = self.indexes[0]
        for c, index in zip(self.caches, self.indexes):
            if index.get('synthetic'):
                raise ConfigError(
                    f'teacher_cache {c!r} is a synthetic cache (random '
                    'logits, made by tools/benchmark.py --synthetic-cache '
                    'for step timing): nothing trains from it.\n  Fix: build '
                    'a real one: python tools/cache_teacher.py CONFIG DIR.')
        ds_cfg = copy.deepcopy(dict(dataset))
        if 'pipeline' not in ds_cfg:
            raise ConfigError('KDCachedViews needs a dataset config with a '
                              'pipeline (a wrapped data set such as '
                              'RepeatDataset is not supported).')
        original = ds_cfg['pipeline']
        ds_cfg['pipeline'] = replay_pipeline(original)
        self.dataset = DATASETS.build(ds_cfg)
        for c, index in zip(self.caches, self.indexes):
            check_data(c, index, dict(dataset, pipeline=original),
                       self.dataset)
            for key in VIEW_KEYS:
                if index.get(key) != self.index.get(key):
                    raise ConfigError(mismatch(
                        f'other views: {key}', c, index.get(key),
                        f'{self.index.get(key)} in {self.caches[0]!r}',
                        'Fix: build the caches of one run\'s teachers with '
                        'the same --views and --seed.'))
        self.all_views = self.index['views'] == 'all'
        self.reader = CacheReader(self.caches, self.indexes)

    @property
    def metainfo(self) -> dict:
        return self.dataset.metainfo

    def __len__(self) -> int:
        return len(self.dataset)

    def get_data_info(self, idx: int) -> dict:
        return self.dataset.get_data_info(idx)

    def __getitem__(self, idx: int) -> dict:
        params = self.reader.params(idx)  # (V, P)
        for c in range(1, len(self.caches)):
            if not np.array_equal(self.reader.params(idx, c), params):
                raise ConfigError(
                    f'image {idx}: teacher_cache {self.caches[c]!r} stores '
                    f'other views than {self.caches[0]!r}.\n  Fix: build '
                    "the caches of one run's teachers with the same --views "
                    'and --seed.')
        info = copy.deepcopy(self.dataset.get_data_info(idx))
        if self.all_views:
            view = ViewParams('record')
            out = self.dataset.pipeline(dict(info, **{VIEW_KEY: view}))
            hits = np.flatnonzero((params == np.asarray(
                view.params, np.int32)).all(1))
            if not len(hits):
                raise ConfigError(
                    f'sample {idx}: the view drawn {view.params} is not in '
                    f'teacher_cache {self.caches[0]!r} (built with --views '
                    'all for images of another size?).\n  Fix: rebuild it.')
            v = int(hits[0])
        else:
            v = int(np.random.randint(len(params)))
            out = self.dataset.pipeline(dict(
                info, **{VIEW_KEY: ViewParams('apply', params[v])}))
        out['data_samples'].set_field(self.reader.logits(idx, v), LOGITS_KEY)
        return out
