"""Build a teacher cache: run a distillation config's frozen teacher(s) once
over views of every training image (``tools/cache_teacher.py``).

Per image, ``views`` augmented views are drawn by the config's own train
pipeline (its random transforms replaced by the replay ones of
:mod:`kd_plugins.teacher_cache.replay`, which record what they draw) with a
seed of its own (``seed``, image index): the cache does not depend on the
number of processes or their order. ``views='all'`` enumerates a finite
augmentation space instead (RandomCrop with padding, RandomFlip).

Each view goes through the run's data preprocessor and the teacher forward
of the run itself (FastDistill's: eval mode, no grad, teacher_input,
teacher_dtype), and every teacher recorder's record is stored (they must be
the logits). Rank ``r`` of ``W`` processes writes shard ``r`` (images
``r, r + W, ...``); a row is marked done after its data, so a killed build
resumes at the first row not done. Rank 0 marks the index complete when
every shard is.
"""
from __future__ import annotations

import copy
import os
import os.path as osp
import time
from typing import Optional, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.logging import print_log

from .algorithms.fast_distill import FastDistill, student_classes
from .engine.pair_checks import num_classes
from .errors import ConfigError
from .teacher_cache import teacher_options
from .teacher_cache.dataset import unwrap_cached_views
from .teacher_cache.replay import (VIEW_KEY, ViewParams, enumerate_views,
                                   param_count, replay_pipeline)
from .teacher_cache.store import (FORMAT, INDEX, bytes_per_view, canonical,
                                  human_bytes, open_shard, rows_of,
                                  teacher_record, total_bytes, write_index)
from .teacher_cache.teacher import LOGIT_RECORDERS
from .utils.teacher import teacher_entries

# index keys that must agree for a build to resume (status, times excluded)
FINGERPRINT = ('format', 'length', 'world_size', 'views', 'views_per_sample',
               'params', 'classes_n', 'class_names', 'teachers', 'topk',
               'pipeline', 'dataset_type', 'logit_sources', 'teacher_options',
               'seed')


def sample_seed(seed: int, idx: int) -> int:
    """The RNG seed of image ``idx``'s views."""
    return int(np.random.SeedSequence([seed, idx]).generate_state(1)[0])


def train_dataset_cfg(cfg: Config) -> dict:
    return unwrap_cached_views(copy.deepcopy(dict(
        cfg.train_dataloader.dataset)))


def cache_model_cfg(cfg: Config) -> dict:
    """``cfg.model`` without ``teacher_cache``; a FastDistill family model
    with no batch augments (Mixup / CutMix mix images after the views)."""
    from mmrazor.registry import MODELS
    model = copy.deepcopy(dict(cfg.model))
    model.pop('teacher_cache', None)
    cls = MODELS.get(str(model.get('type')).split('.')[-1])
    if cls is None or not issubclass(cls, FastDistill):
        raise ConfigError(
            f'model.type={model.get("type")!r}: a teacher cache is built and '
            'read by FastDistill and MultiTeacherDistill (frozen teachers, '
            'logit losses). ATSC trains its teacher, IE-KD and the KD layer '
            'read teacher features: they need the live teacher.\n  Fix: use '
            "type='FastDistill' (or 'MultiTeacherDistill') with a logit loss.")
    pre = model.get('data_preprocessor') or cfg.get('data_preprocessor') or {}
    if pre.get('batch_augments'):
        raise ConfigError(
            f'the data preprocessor has batch_augments '
            f'{pre["batch_augments"]}: Mixup / CutMix mix the images of a '
            'batch, so no stored view is what the student sees.\n  Fix: drop '
            'batch_augments for a cached run, or train with the live teacher.')
    return model


def index_base(model_cfg: dict, ds_cfg: dict, replay: list) -> dict:
    """The index fields fixed by the config alone: the teachers (config,
    checkpoint and its sha256), the options that change their logits, the
    train pipeline and data set type, the parameters per view."""
    return dict(
        format=FORMAT, params=param_count(replay),
        teachers=[teacher_record(spec, ckpt)
                  for _, _, spec, ckpt in teacher_entries(model_cfg)],
        pipeline=canonical(ds_cfg.get('pipeline')),
        dataset_type=str(ds_cfg.get('type')),
        teacher_options=teacher_options(
            copy.deepcopy(model_cfg.get('data_preprocessor')),
            model_cfg.get('teacher_dtype'), model_cfg.get('teacher_input'),
            model_cfg.get('teacher_mode', 'tensor')))


def teacher_records(model: FastDistill, n: int) -> tuple[list, list]:
    """The recorded logits (K tensors (n, C)) and the recorders' sources,
    after checking that every teacher recorder holds (n, C) logits and they
    agree."""
    teachers = list(getattr(model.teacher, 'teachers', [model.teacher]))
    k, c = len(teachers), num_classes(teachers[0])
    out, sources = None, []
    for name, rec in model.distiller.teacher_recorders.recorders.items():
        rtype = type(rec).__name__
        buf = list(rec.data_buffer)
        if rtype not in LOGIT_RECORDERS or len(buf) != k or any(
                not torch.is_tensor(b) or b.dim() != 2 or b.shape[0] != n or
                (c is not None and b.shape[1] != c) for b in buf):
            shape = [tuple(b.shape) if torch.is_tensor(b) else type(b)
                     for b in buf]
            raise ConfigError(
                f'teacher recorder {name!r} ({rtype} of {rec.source!r}) '
                f'records {shape}, not the teacher\'s (N, {c}) logits: a '
                'teacher cache stores logits only. Methods that read teacher '
                'features (IE-KD, the KD layer) need the live teacher.\n  '
                'Fix: build caches for logit methods (KD, AEKT, DKD, ...).')
        if out is not None and not all(torch.equal(a, b)
                                       for a, b in zip(out, buf)):
            raise ConfigError(
                f'teacher recorders {sources[0]!r} and {rec.source!r} record '
                'different tensors; a cache stores one logits tensor per '
                'teacher.\n  Fix: record the logits at one module.')
        out = buf
        sources.append(rec.source)
    if out is None:
        raise ConfigError('the distiller has no teacher recorders: there is '
                          'nothing to cache.')
    return [o.float().cpu() for o in out], sources


class _ViewSource:
    """The packed views of an image and their parameters: the data side
    of a build, without the model (loader workers get a copy)."""

    def __init__(self, dataset, views: Union[int, str], n: int, p: int,
                 seed: int) -> None:
        self.dataset, self.views, self.n, self.p = dataset, views, n, p
        self.seed = seed

    def view(self, idx: int, params: ViewParams) -> dict:
        info = copy.deepcopy(self.dataset.get_data_info(idx))
        return self.dataset.pipeline(dict(info, **{VIEW_KEY: params}))

    def views_of(self, idx: int) -> tuple[list, np.ndarray]:
        """The packed views of image ``idx`` and their (V, P) parameters."""
        n, p = self.n, self.p
        if self.views == 'all':
            table = enumerate_views(self.dataset.pipeline,
                                    self.dataset.get_data_info(idx))
            if table.shape != (n, p):
                raise ConfigError(
                    f'image {idx} has {len(table)} views, image 0 has {n}: '
                    "--views all needs images of one size.\n  Fix: resize "
                    'them in the pipeline first, or give a view count.')
            return [self.view(idx, ViewParams('apply', r)) for r in table], \
                table
        np.random.seed(sample_seed(self.seed, idx))
        out, table = [], []
        for _ in range(n):
            vp = ViewParams('record')
            out.append(self.view(idx, vp))
            table.append(vp.params)
        return out, np.asarray(table, np.int32).reshape(n, p)


class _RowViews(torch.utils.data.Dataset):
    """Shard rows -> (row, packed views, (V, P) parameters) of its image
    (row r of rank k of W is image r * W + k)."""

    def __init__(self, source: _ViewSource, rows: list, world: int,
                 rank: int) -> None:
        self.source, self.rows = source, rows
        self.world, self.rank = world, rank

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        row = self.rows[i]
        views, table = self.source.views_of(row * self.world + self.rank)
        return row, views, table


def _as_list(batch: list) -> list:
    return batch


class CacheBuilder:
    """One rank's part of a cache build (module docstring).

    ``workers``: data loader processes that decode and augment the views
    (the config's ``train_dataloader.num_workers`` by default; 0: in this
    process); the views do not depend on it (each image has its own seed)."""

    def __init__(self, cfg: Config, out_dir: str,
                 views: Union[int, str] = 100, topk: Optional[int] = None,
                 batch_size: int = 256, seed: int = 0, rank: int = 0,
                 world: int = 1, device: str = 'cpu',
                 workers: Optional[int] = None) -> None:
        from mmpretrain.registry import DATASETS
        from mmrazor.registry import MODELS
        if views != 'all' and (not isinstance(views, int) or views < 1):
            raise ConfigError(f"--views must be a count >= 1 or 'all', got "
                              f'{views!r}.')
        self.out_dir, self.rank, self.world = str(out_dir), rank, world
        self.views, self.batch_size, self.seed = views, batch_size, seed
        if workers is None:
            workers = int((cfg.get('train_dataloader') or {}).get(
                'num_workers', 0) or 0)
        self.workers = max(0, int(workers))
        self.device = torch.device(device)
        ds_cfg = train_dataset_cfg(cfg)
        if 'pipeline' not in ds_cfg:
            raise ConfigError('the train data set config has no pipeline (a '
                              'wrapped data set such as RepeatDataset is not '
                              'supported by a teacher cache).')
        replay = replay_pipeline(ds_cfg['pipeline'])  # refuses before work
        model_cfg = cache_model_cfg(cfg)
        base = index_base(model_cfg, ds_cfg, replay)  # before the model
        # build below edits model_cfg
        self.dataset = DATASETS.build(dict(ds_cfg, pipeline=replay))
        self.model = MODELS.build(model_cfg).to(self.device).eval()
        if len(self.dataset) == 0:
            raise ConfigError('the train data set is empty.')
        info = self.dataset.get_data_info(0)
        if views == 'all':
            n_views = len(enumerate_views(self.dataset.pipeline, info))
        else:
            n_views = int(views)
        self.source = _ViewSource(self.dataset, views, n_views,
                                  base['params'], seed)
        # one batch: the recorders' sources and the class count
        logits, sources = self.teacher_logits(
            [self.source.view(0, ViewParams('record'))])
        classes = list(self.dataset.metainfo.get('classes') or [])
        self.index = dict(
            base, status='building', length=len(self.dataset),
            world_size=world, views=views, views_per_sample=n_views,
            classes_n=int(logits[0].shape[1]), class_names=classes or None,
            topk=int(topk) if topk else None, logit_sources=sources,
            seed=int(seed))
        if topk and not 0 < topk < self.index['classes_n']:
            raise ConfigError(f'--topk {topk}: give 0 < K < '
                              f'{self.index["classes_n"]} (the classes).')

    @torch.no_grad()
    def teacher_logits(self, packed: list) -> tuple[list, list]:
        """K (n, C) float32 logits of n packed views: the run's own data
        preprocessor and teacher forward."""
        data = self.model.data_preprocessor(pseudo_collate(packed), True)
        FastDistill._teacher_forward(self.model, data['inputs'],
                                     data['data_samples'])
        return teacher_records(self.model, len(packed))

    # -- the build -----------------------------------------------------
    def start(self) -> None:
        """Rank 0 writes (or checks) the index; the others wait for it."""
        path = osp.join(self.out_dir, INDEX)
        os.makedirs(self.out_dir, exist_ok=True)
        if self.rank == 0 and not osp.isfile(path):
            write_index(self.out_dir, self.index)
        deadline = time.time() + 600
        while not osp.isfile(path):
            if time.time() > deadline:
                raise ConfigError(f'rank {self.rank}: rank 0 wrote no '
                                  f'{path} in 10 minutes.')
            time.sleep(0.5)
        import json
        with open(path) as f:
            found = json.load(f)
        diff = [k for k in FINGERPRINT if found.get(k) != self.index[k]]
        if diff:
            raise ConfigError(
                f'{self.out_dir} holds a teacher cache of another build '
                f'(differs in {diff}).\n  Fix: give another OUT_DIR, or '
                'delete this one to rebuild it.')
        self.complete = found.get('status') == 'complete'

    def run(self, log_every: float = 30.0) -> None:
        self.start()
        idx = self.index
        size = human_bytes(total_bytes(idx))
        if self.complete:
            print_log(f'teacher cache {self.out_dir} is complete ({size}); '
                      'nothing to do.', logger='current')
            return
        shard = open_shard(self.out_dir, idx, self.rank, 'w+')
        rows = rows_of(idx['length'], self.world, self.rank)
        todo = [r for r in range(rows) if not shard['done'][r]]
        print_log(
            f'teacher cache {self.out_dir}: {idx["length"]} images x '
            f'{idx["views_per_sample"]} views ({idx["views"]}), '
            f'{len(idx["teachers"])} teacher(s), '
            f'{"top-%d" % idx["topk"] if idx["topk"] else "all"} of '
            f'{idx["classes_n"]} classes: {size} in all; rank {self.rank}/'
            f'{self.world}: {len(todo)} of {rows} images to do'
            f'{" (resuming)" if len(todo) < rows else ""}.', logger='current')
        t0 = last = time.time()
        done = 0
        per_batch = max(1, self.batch_size // idx['views_per_sample'])
        loader = torch.utils.data.DataLoader(
            _RowViews(self.source, todo, self.world, self.rank),
            batch_size=per_batch, shuffle=False, num_workers=self.workers,
            collate_fn=_as_list)
        for batch in loader:
            chunk = [row for row, _, _ in batch]
            packed = [v for _, views, _ in batch for v in views]
            self.write(shard, chunk, [t for _, _, t in batch], packed)
            done += len(chunk)
            now = time.time()
            if now - last >= log_every or done >= len(todo):
                last = now
                rate = done / max(now - t0, 1e-9)
                eta = (len(todo) - done) / max(rate, 1e-9)
                print_log(f'teacher cache rank {self.rank}: {done}/'
                          f'{len(todo)} images, {rate:.1f} images/s, ETA '
                          f'{time.strftime("%H:%M:%S", time.gmtime(eta))}',
                          logger='current')
            if os.environ.get('KD_CACHE_KILL_AFTER') and done >= int(
                    os.environ['KD_CACHE_KILL_AFTER']):  # tests: a real kill
                import signal
                os.kill(os.getpid(), signal.SIGKILL)
        if self.rank == 0:
            self.finish()

    def write(self, shard: dict, rows: list, tables: list,
              packed: list) -> None:
        """Store the views' parameters and logits, then mark the rows done
        (after the data: a kill leaves no row marked done without it)."""
        n = self.index['views_per_sample']
        k_all = self._stack(packed)  # K tensors (len(rows) * n, C)
        for j, row in enumerate(rows):
            shard['params'][row] = tables[j]
            for k, z in enumerate(k_all):
                zz = z[j * n:(j + 1) * n]
                self.put(shard, k, row, zz)
        for a in shard.values():
            a.flush()
        shard['done'][rows] = 1
        shard['done'].flush()

    def _stack(self, packed: list) -> list:
        outs = [self.teacher_logits(packed[i:i + self.batch_size])[0]
                for i in range(0, len(packed), self.batch_size)]
        return [torch.cat([o[k] for o in outs]) for k in range(len(outs[0]))]

    def put(self, shard: dict, k: int, row: int, z: torch.Tensor) -> None:
        """Teacher k's logits (V, C) of one image: fp16, or top-k
        log-probabilities and their classes."""
        if self.index['topk']:
            logp = torch.log_softmax(z, dim=-1)
            v, i = logp.topk(self.index['topk'], dim=-1)
            shard[f'topv{k}'][row] = v.numpy().astype(np.float16)
            shard[f'topi{k}'][row] = i.numpy().astype(np.int32)
        else:
            shard[f'logits{k}'][row] = z.numpy().astype(np.float16)

    def finish(self, timeout: float = 7 * 24 * 3600) -> None:
        """Rank 0: wait for every shard, then mark the index complete."""
        idx = self.index
        deadline = time.time() + timeout
        waited = False
        while True:
            left = 0
            for r in range(self.world):
                try:
                    d = open_shard(self.out_dir, idx, r, 'r')['done']
                    left += int((d == 0).sum())
                except (OSError, ValueError):  # MissingFileError too
                    # not created yet, or its header still being written
                    left += rows_of(idx['length'], self.world, r)
            if not left:
                break
            if time.time() > deadline:
                raise ConfigError(f'{left} images of the cache are still not '
                                  'done by the other ranks.')
            if not waited:
                print_log(f'teacher cache: waiting for the other ranks '
                          f'({left} images left)', logger='current')
                waited = True
            time.sleep(2)
        write_index(self.out_dir, dict(idx, status='complete'))
        print_log(f'teacher cache {self.out_dir} complete: '
                  f'{human_bytes(total_bytes(idx))}, '
                  f'{bytes_per_view(idx)} B per view.', logger='current')


def synthetic_cache(cfg: Config, out_dir: str, images: int = 256,
                    views: int = 1) -> str:
    """A cache of random logits for ``cfg``'s teacher(s), with no data and
    no teacher forward: for throughput runs only (``tools/benchmark.py
    --synthetic-cache``: a step's cost does not depend on the values). Its
    index says ``synthetic``; KDCachedViews refuses it, so nothing trains
    from it."""
    model_cfg = cache_model_cfg(cfg)
    ds_cfg = train_dataset_cfg(cfg)
    replay = replay_pipeline(ds_cfg.get('pipeline') or [])
    classes = student_classes(model_cfg.get('architecture'))
    recorders = (model_cfg.get('distiller') or {}).get(
        'teacher_recorders') or {}
    sources = [r.get('source') for r in recorders.values()
               if str(r.get('type', '')).split('.')[-1] in LOGIT_RECORDERS]
    if classes is None or not sources or len(sources) != len(recorders):
        raise ConfigError('a synthetic cache needs a logit method (teacher '
                          'recorders of the logits) and the student\'s '
                          'class count (model.architecture.head.num_classes).')
    index = dict(
        index_base(model_cfg, ds_cfg, replay), status='complete',
        synthetic=True, length=int(images), world_size=1, views=int(views),
        views_per_sample=int(views), classes_n=int(classes),
        class_names=None, topk=None, logit_sources=sources, seed=0)
    os.makedirs(out_dir, exist_ok=True)
    shard = open_shard(out_dir, index, 0, 'w+')
    rng = np.random.default_rng(0)
    for name, arr in shard.items():
        if name.startswith('logits'):
            arr[:] = rng.normal(0, 3, arr.shape).astype(np.float16)
        elif name == 'done':
            arr[:] = 1
        arr.flush()
    write_index(out_dir, index)
    return out_dir


__all__ = ['CacheBuilder', 'sample_seed', 'cache_model_cfg',
           'synthetic_cache']
