"""Offline statistics of the KD layer (letKD) targets, from the teacher over
the training set (``docs/methods/kd_layer.md``; the paper's supplementary
Algorithm 2; official code ``adagorgun/letKD-framework``).

The distillation config names what to compute::

    kd_layer_stats = dict(
        penultimate=dict(teacher_layer='backbone.layer4', num_templates=4096),
        intermediate=dict(teacher_layer='backbone.layer4.0', lda_dim=60,
                          subclasses=8),
        max_memory_gb=8.0, min_per_class=1000, kmeans_iters=20, seed=0)

The teacher runs on the GPU when there is one (``device='cpu'`` forces the
CPU); k-means and LDA run on the CPU (scikit-learn).

What is computed, as in the official statistics step:

- the WHOLE training split, read through the TEST pipeline (no random crop or
  flip) in data-set order;
- EVERY spatial location of the teacher maps when they fit in
  ``max_memory_gb`` (float32, all layers together; CIFAR-100 resnet32x4:
  50,000 images x 64 locations x 256 channels x 4 B = 3.3 GB per layer,
  6.6 GB for letKD-2; resnet56: 0.8 GB per layer). When they do not fit
  (ImageNet ResNet-34 layer4: 1.28 M x 49 x 512 x 4 B = 128 GB) the same
  number of locations is kept from every image (spread evenly over the
  map), raised per class so that each class has at least ``min_per_class``
  locations (LDA and the subclass k-means work per class);
- the choice of locations is a fixed function of the image's index: the
  statistics do not depend on the seed, the batch size or the number of
  processes, except through the k-means initialisation (``seed``);
- when the teacher map is larger than the student's map it is compared with,
  it is average-pooled to the student's size BEFORE k-means / LDA (the
  official ``*_downscale`` statistics), so the centres live in the space of
  the targets computed in training (``KDLayerLoss`` pools the same way);
- k-means: full Lloyd k-means (scikit-learn ``KMeans``, k-means++ initial
  centres, one run of ``kmeans_iters`` = 20 iterations as in the official
  faiss run). Measured by ``tools/analysis/kmeans_choice.py`` (320,000 x 64
  points, K = 4096; figures in ``docs/methods/kd_layer.md``):
  MiniBatchKMeans (used before) is 3x faster but ends at a 2.7 % higher
  inertia, i.e. coarser templates than the official ones.
"""
from __future__ import annotations

import copy
import math
import os.path as osp
import time
from typing import Callable, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError
from .utils.config import innermost_dataset
from .utils.stats_file import LAYOUT, save_stats

KINDS = tuple(LAYOUT)  # ('penultimate', 'intermediate')
GOLDEN = 2654435761  # Knuth's multiplicative hash: per-image offsets


def _with_test_pipeline(ds_cfg: dict, pipeline) -> dict:
    """The training data set config with ``pipeline`` (through wrappers)."""
    ds_cfg = copy.deepcopy(ds_cfg)
    innermost_dataset(ds_cfg)['pipeline'] = copy.deepcopy(pipeline)
    return ds_cfg


def _test_pipeline(cfg) -> list:
    for key in ('test_dataloader', 'val_dataloader'):
        loader = cfg.get(key)
        if loader and loader.get('dataset', {}).get('pipeline') is not None:
            return loader['dataset']['pipeline']
    raise ConfigError('kd_layer_stats reads the training split through the '
                      'test pipeline, but the config has no test_dataloader.'
                      'dataset.pipeline (nor val_dataloader.dataset.pipeline)'
                      '.\n  Fix: give the config a test_dataloader (its data '
                      'set base has one).')


def student_sources(cfg) -> Dict[str, str]:
    """{kind: student module} whose map each kind's targets are compared
    with, from the distiller's loss mappings (a ``student_layer`` in the
    ``kd_layer_stats`` section overrides it)."""
    spec = cfg.get('kd_layer_stats', {})
    dist = cfg.model.get('distiller', {})
    out = {}
    for name, loss in dist.get('distill_losses', {}).items():
        kind = loss.get('kind', 'penultimate')
        if 'KDLayerLoss' not in str(loss.get('type')):
            continue
        rec = dist.get('loss_forward_mappings', {}).get(name, {}).get(
            'preds_S', {}).get('recorder')
        src = dist.get('student_recorders', {}).get(rec, {}).get('source')
        if src:
            out[kind] = src
    for kind in KINDS:
        if (spec.get(kind) or {}).get('student_layer'):
            out[kind] = spec[kind]['student_layer']
    return out


def _probe_student_hw(cfg, inputs: torch.Tensor, kinds, log) -> dict:
    """Spatial size of the student map each kind is compared with."""
    from mmrazor.registry import MODELS
    sources = student_sources(cfg)
    if not any(k in sources for k in kinds):
        return {}
    student = MODELS.build(cfg.model.architecture).eval()
    modules = dict(student.named_modules())
    sizes, handles = {}, []
    for kind in kinds:
        src = sources.get(kind)
        if src is None:
            continue
        if src not in modules:
            raise ConfigError(f'kd_layer_stats: the student has no module '
                              f'{src!r} (the {kind} loss compares with it).'
                              '\n  Fix: point the loss\'s student recorder '
                              'at a module of the student.')
        handles.append(modules[src].register_forward_hook(
            lambda m, i, o, k=kind: sizes.__setitem__(k, tuple(o.shape[2:]))))
    try:
        with torch.no_grad():
            student.extract_feat(inputs[:1].float().cpu(), stage='backbone')
    finally:
        for h in handles:
            h.remove()
    for kind, hw in sizes.items():
        log(f'[kd_layer_stats] {kind}: student map {hw[0]}x{hw[1]} at '
            f'{sources[kind]}')
    return sizes


def location_quota(labels: np.ndarray, hw: int, channels: int,
                   budget_bytes: float, min_per_class: int,
                   max_locations: Optional[int] = None) -> np.ndarray:
    """Locations kept per image (by data-set index) for one layer.

    Every location (``hw`` per image) when they fit in ``budget_bytes`` and
    ``max_locations``; otherwise the same count q for every image, raised
    for the images of small classes so that every class has at least
    ``min_per_class`` locations (or all of its locations).
    """
    n = len(labels)
    cap = budget_bytes / (4.0 * channels)
    if max_locations:
        cap = min(cap, max_locations)
    if n * hw <= cap:
        return np.full(n, hw, dtype=np.int64)
    q = max(1, int(cap // n))
    quota = np.full(n, min(q, hw), dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    for c, n_c in zip(classes, counts):
        need = min(hw, math.ceil(min_per_class / n_c))
        if need > q:
            quota[labels == c] = need
    return quota


def location_index(sample_idx: int, hw: int, q: int) -> np.ndarray:
    """Which ``q`` of the ``hw`` locations of image ``sample_idx`` are kept:
    evenly spaced, from an offset that depends on the index only."""
    if q >= hw:
        return np.arange(hw)
    offset = (sample_idx * GOLDEN) % hw
    return (offset + (np.arange(q) * hw) // q) % hw


def _plan(shapes: dict, student_hw: dict, labels_all: np.ndarray,
          spec: dict, max_locations: Optional[int], layers: dict,
          log: Callable) -> tuple[dict, dict]:
    """Pooling and locations per image for each layer, from the first
    batch's teacher map shapes ``{kind: (C, H, W)}``: ({kind: pooled size
    or None}, {kind: locations kept per image})."""
    pooled_to, sizes = {}, {}
    for kind, (c, h, w) in shapes.items():
        s_hw = student_hw.get(kind)
        pooled_to[kind] = (s_hw if s_hw and (s_hw[0] < h or s_hw[1] < w)
                           else None)
        sizes[kind] = pooled_to[kind] or (h, w)
    per_image = {k: shapes[k][0] * hw[0] * hw[1] for k, hw in sizes.items()}
    budget = float(spec.get('max_memory_gb', 8.0)) * 2**30
    min_per_class = int(spec.get('min_per_class', 1000))
    quota = {}
    for kind, (c, h, w) in shapes.items():
        hw = sizes[kind]
        quota[kind] = location_quota(
            labels_all, hw[0] * hw[1], c,
            budget * per_image[kind] / sum(per_image.values()),
            min_per_class, max_locations)
        total, full = int(quota[kind].sum()), len(labels_all) * hw[0] * hw[1]
        log(f'[kd_layer_stats] {kind}: teacher {layers[kind]} {c}x{h}x{w}'
            + (f' pooled to {hw[0]}x{hw[1]} (the student map size)'
               if pooled_to[kind] else '')
            + f'; keeping {total} of {full} locations '
            f'({total * c * 4 / 2**30:.2f} GB'
            + (', all of them)' if total == full else
               f', sampled: at least {min_per_class} per class)'))
    return pooled_to, quota


def teacher_type(spec) -> str:
    """The teacher backbone's type, recorded in the statistics file: from
    its config dict, or the model-zoo name it was given by."""
    if isinstance(spec, str):
        return spec
    return str(spec['backbone']['type'])


def _feature_source(cfg, teacher_ckpt: str, layers: dict, spec: dict,
                    log: Callable):
    """The teacher on its device (its ``layers`` checked), the run's data
    preprocessor, the map from its output to the teacher's input, and a
    loader of the train split through the test pipeline
    (in data-set order; each rank reads its shard)."""
    from mmengine.runner import Runner
    from mmpretrain.registry import MODELS as PT_MODELS

    from .utils.teacher import build_teacher
    device = spec.get('device') or ('cuda' if torch.cuda.is_available()
                                    else 'cpu')
    teacher = build_teacher(cfg.model.teacher, teacher_ckpt)
    teacher.eval().to(device)
    modules = dict(teacher.named_modules())
    for kind, name in layers.items():
        if name not in modules:
            near = [n for n in modules if n.startswith(name.split('.')[0])]
            raise ConfigError(f'kd_layer_stats.{kind}.teacher_layer {name!r} '
                              f'is not a module of the teacher.\n  Fix: use '
                              f'one of its modules, e.g. {near[:8]}')
    preproc = PT_MODELS.build(cfg.data_preprocessor).to(device)
    # the teacher sees what it sees in the distillation (its own
    # normalisation and size: FastDistill's teacher_input)
    adapt = cfg.model.get('teacher_input')
    if adapt:
        from .algorithms.teacher_input import TeacherInput
        teacher_input = TeacherInput(preproc, **adapt).to(device)
    else:
        def teacher_input(x):
            return x
    log(f'[kd_layer_stats] teacher on {device}')
    train = cfg.train_dataloader
    loader = Runner.build_dataloader(dict(
        batch_size=train.get('batch_size', 64),
        num_workers=train.get('num_workers', 0),
        persistent_workers=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=_with_test_pipeline(train['dataset'], _test_pipeline(cfg))))
    return teacher, modules, preproc, teacher_input, loader


def _place(feats: dict, offsets: dict, kind: str, idx, rows) -> None:
    """Rows of images ``idx`` into their slots (by image index)."""
    for i, sel in zip(idx, rows):
        start = int(offsets[kind][i])
        feats[kind][start:start + len(sel)] = sel


def _gather(local: dict, feats: dict, offsets: dict, world: int,
            log: Callable) -> None:
    """Rank 0 places the other ranks' rows; the others send theirs."""
    from mmengine.dist import gather_object, get_rank
    shards = gather_object(local, dst=0)
    if get_rank() == 0:
        for shard in shards:
            for kind, (idx, rows) in shard.items():
                _place(feats, offsets, kind, idx, rows)
        log(f'[kd_layer_stats] gathered {world} ranks')


def _collect(cfg, teacher_ckpt: str, layers: dict, spec: dict,
             max_locations: Optional[int], log: Callable
             ) -> tuple[dict, dict, dict, dict]:
    """Teacher features at ``layers`` ({kind: module name}) over the train
    split through the test pipeline: the source (:func:`_feature_source`),
    the memory plan on the first batch (:func:`_plan`), the extraction
    loop, then :func:`_gather` across ranks.

    Returns ({kind: (n, C) float32}, {kind: (n,) labels}, dataset meta,
    {kind: pooled size or None}) on rank 0 (empty dicts elsewhere). Rows are
    ordered by data-set index, whatever the number of processes.
    """
    from mmengine.dist import get_rank, get_world_size
    teacher, modules, preproc, teacher_input, loader = _feature_source(
        cfg, teacher_ckpt, layers, spec, log)
    dataset = loader.dataset
    labels_all = np.asarray(dataset.get_gt_labels(), dtype=np.int64)
    world, rank = get_world_size(), get_rank()

    captured = {}
    handles = [modules[name].register_forward_hook(
        lambda m, i, o, k=kind: captured.__setitem__(k, o))
        for kind, name in layers.items()]
    pooled_to, quota, feats, labels, offsets = {}, {}, {}, {}, {}
    local = {k: ([], []) for k in layers}  # (sample indices, rows): rank > 0
    t0 = time.time()
    try:
        with torch.no_grad():
            for it, data in enumerate(loader):
                data = preproc(data, False)
                inputs = data['inputs']
                teacher.extract_feat(teacher_input(inputs), stage='backbone')
                idx = [int(ds.metainfo['sample_idx'])
                       for ds in data['data_samples']]
                if it == 0:  # sizes, pooling and the memory plan
                    student_hw = _probe_student_hw(cfg, inputs, layers, log)
                    pooled_to, quota = _plan(
                        {k: tuple(f.shape[1:]) for k, f in captured.items()},
                        student_hw, labels_all, spec, max_locations, layers,
                        log)
                    offsets = {k: np.concatenate([[0], np.cumsum(q)])
                               for k, q in quota.items()}
                    if rank == 0:
                        for kind, q in quota.items():
                            feats[kind] = np.empty(
                                (int(offsets[kind][-1]),
                                 captured[kind].shape[1]), np.float32)
                            labels[kind] = np.repeat(labels_all, q)
                for kind, f in captured.items():
                    if pooled_to[kind]:
                        f = F.adaptive_avg_pool2d(f, pooled_to[kind])
                    hw = f.shape[2] * f.shape[3]
                    flat = f.float().flatten(2).transpose(1, 2).cpu().numpy()
                    rows = [flat[b, location_index(i, hw,
                                                   int(quota[kind][i]))]
                            for b, i in enumerate(idx)]
                    if rank == 0:
                        _place(feats, offsets, kind, idx, rows)
                    else:
                        local[kind][0].extend(idx)
                        local[kind][1].extend(rows)
                if (it + 1) % 20 == 0 or it + 1 == len(loader):
                    took = time.time() - t0
                    left = took / (it + 1) * (len(loader) - it - 1)
                    log(f'[kd_layer_stats] {it + 1}/{len(loader)} batches, '
                        f'{took:.0f} s, about {left:.0f} s left')
    finally:
        for h in handles:
            h.remove()
    if world > 1:
        _gather(local, feats, offsets, world, log)
    if rank != 0:
        return {}, {}, {}, {}
    return feats, labels, dict(dataset.metainfo), pooled_to


def _kmeans(x: np.ndarray, k: int, seed: int, iters: int = 20):
    """Full Lloyd k-means, k-means++ initial centres, one run of ``iters``
    iterations (official: faiss, 20 iterations)."""
    from sklearn.cluster import KMeans
    if len(x) < k:
        raise ConfigError(f'only {len(x)} feature vectors for {k} clusters.'
                          '\n  Fix: raise max_memory_gb / min_per_class or '
                          'lower the template count.')
    return KMeans(n_clusters=k, init='k-means++', n_init=1, max_iter=iters,
                  random_state=seed, algorithm='lloyd').fit(x)


def lda_dims(lda_dim: int, num_classes: int, channels: int) -> int:
    """LDA has at most classes - 1 (and channels) dimensions."""
    return min(lda_dim, num_classes - 1, channels)


def intermediate_statistics(x: np.ndarray, y: np.ndarray, num_classes: int,
                            lda_dim: int, subclasses: int, seed: int,
                            iters: int = 20) -> dict:
    """LDA + per-class k-means + decision matrix s_T (Algorithm 2)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    d = lda_dims(lda_dim, num_classes, x.shape[1])
    lda = LinearDiscriminantAnalysis(n_components=d, solver='svd').fit(x, y)
    found = lda.scalings_.shape[1]
    if found < d:  # rank-deficient features (e.g. dead channels)
        raise ConfigError(
            f'the teacher features at the intermediate layer give only '
            f'{found} LDA directions, fewer than the {d} asked for (lda_dim;'
            f' at most classes - 1 and channels). Their within-class scatter '
            f'has rank {found}: dead or duplicate channels, or too few '
            f'locations.\n  Fix: --cfg-options '
            f'kd_layer_stats.intermediate.lda_dim={found}, or use a '
            'better-trained teacher.')
    mean, proj = lda.xbar_, lda.scalings_[:, :d]
    z = (x - mean) @ proj
    s = num_classes * subclasses
    centers = np.zeros((s, d))
    assign = np.zeros(len(z), dtype=np.int64)
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)
        if len(idx) < subclasses:
            raise ConfigError(f'class {c} has {len(idx)} locations, fewer '
                              f'than {subclasses} subclasses.\n  Fix: lower '
                              'kd_layer_stats.intermediate.subclasses, or '
                              'use more images of that class.')
        km = _kmeans(z[idx], subclasses, seed, iters)
        assign[idx] = c * subclasses + km.labels_
        for j in range(subclasses):  # prototypes: means of the members
            members = z[idx[km.labels_ == j]]
            centers[c * subclasses + j] = members.mean(0) if len(members) \
                else km.cluster_centers_[j]
    nearest = np.empty(len(z), dtype=np.int64)
    # bounded memory: a chunk's (step, s, d) differences hold at most 5e7
    # values (400 MB); the bound was 5e7 // s rows, i.e. d times that (3.8
    # GB for 4,000 locations, 2,000 subclasses, 60 dimensions)
    step = max(1, int(5e7 // (s * d)))
    for i in range(0, len(z), step):
        d2 = ((z[i:i + step, None, :] - centers[None]) ** 2).sum(-1)
        nearest[i:i + step] = d2.argmin(1)
    s_t = np.zeros((s, s))
    np.add.at(s_t, (assign, nearest), 1.0)
    s_t /= np.maximum(s_t.sum(1, keepdims=True), 1.0)
    return dict(inter_mean=mean.astype(np.float32),
                inter_proj=proj.astype(np.float32),
                inter_centers=centers.astype(np.float32),
                inter_s_t=s_t.astype(np.float32))


def compute_kd_layer_stats(cfg, teacher_ckpt: str, out: str,
                           max_locations: Optional[int] = None,
                           log: Callable = print) -> dict:
    """Compute and save the statistics named by ``cfg.kd_layer_stats``.

    ``max_locations`` (optional) caps the locations per layer below what
    the memory budget allows (quick runs, tests).

    Distributed (``tools/kd_layer_stats.py --launcher pytorch|slurm``): each
    rank extracts features of its shard of the data, rank 0 gathers them,
    fits the statistics and writes ``out``.
    """
    from mmengine.registry import DefaultScope
    scope = (None if DefaultScope.get_current_instance() else
             cfg.get('default_scope', 'mmpretrain'))
    with DefaultScope.overwrite_default_scope(scope):
        return _compute(cfg, teacher_ckpt, out, max_locations, log)


def _compute(cfg, teacher_ckpt, out, max_locations, log) -> dict:
    from mmengine.dist import get_world_size, is_main_process
    spec = cfg.get('kd_layer_stats')
    if not spec:
        raise ConfigError('the config has no kd_layer_stats = dict('
                          'penultimate=..., intermediate=...) section.\n  '
                          'Fix: pass the KD-layer distillation config (e.g. '
                          'configs/kd_layer_r32x4_r8x4_cifar100.py).')
    seed = int(spec.get('seed', 0))
    iters = int(spec.get('kmeans_iters', 20))
    kinds = [k for k in KINDS if spec.get(k)]
    layers = {k: spec[k]['teacher_layer'] for k in kinds}
    feats, labels, dataset_meta, pooled_to = _collect(
        cfg, teacher_ckpt, layers, spec, max_locations, log)
    if not is_main_process():  # rank 0 fits and writes
        return {}
    classes = list(dataset_meta.get('classes') or [])
    num_classes = len(classes) or int(max(labels[kinds[0]]) + 1)
    arrays, meta = {}, dict(
        kinds=kinds, teacher_ckpt=(teacher_ckpt if '://' in teacher_ckpt
                                   else osp.abspath(teacher_ckpt)),
        teacher_type=teacher_type(cfg.model.teacher),
        layers=layers, num_classes=num_classes, classes=classes,
        pooled_to={k: (list(v) if v else None) for k, v in pooled_to.items()},
        max_memory_gb=float(spec.get('max_memory_gb', 8.0)),
        min_per_class=int(spec.get('min_per_class', 1000)),
        max_locations=max_locations, kmeans_iters=iters, seed=seed,
        pipeline='test', num_locations={k: int(len(v))
                                        for k, v in feats.items()},
        world_size=get_world_size())
    if 'penultimate' in kinds:
        k = int(spec['penultimate']['num_templates'])
        t0 = time.time()
        log(f'[kd_layer_stats] k-means (Lloyd, {iters} iterations): {k} '
            f'centres over {len(feats["penultimate"])} locations')
        km = _kmeans(feats['penultimate'], k, seed, iters)
        arrays['penult_centers'] = km.cluster_centers_.astype(np.float32)
        log(f'[kd_layer_stats] k-means done in {time.time() - t0:.0f} s, '
            f'inertia/location {km.inertia_ / len(feats["penultimate"]):.4g}')
        meta['penultimate'] = dict(num_templates=k, channels=int(
            feats['penultimate'].shape[1]))
    if 'intermediate' in kinds:
        sub = int(spec['intermediate'].get('subclasses', 8))
        lda_dim = int(spec['intermediate'].get('lda_dim', 60))
        x = feats['intermediate']
        used = lda_dims(lda_dim, num_classes, x.shape[1])
        log(f'[kd_layer_stats] LDA to {used} dimensions (lda_dim={lda_dim}; '
            f'at most classes - 1 = {num_classes - 1} exist) + {sub} '
            f'subclasses x {num_classes} classes over {len(x)} locations')
        arrays.update(intermediate_statistics(
            x, labels['intermediate'], num_classes, lda_dim, sub, seed,
            iters))
        meta['subclasses'] = sub
        meta['lda_dim'] = used
        meta['intermediate'] = dict(num_templates=sub * num_classes,
                                    channels=int(x.shape[1]))
    save_stats(out, meta, arrays)
    log(f'[kd_layer_stats] wrote {out}')
    return meta


def synthetic_stats(cfg, out: str, size: int = 32, seed: int = 0) -> dict:
    """A statistics file of the right shapes with random contents, for
    throughput benchmarks and plumbing tests only (``meta.synthetic``):
    K and the subclasses from the losses, the teacher widths from one
    forward of the (randomly initialised) teacher at ``size`` px."""
    from mmrazor.registry import MODELS
    dist = cfg.model.distiller
    rng = np.random.default_rng(seed)
    kinds, shapes, num_classes = [], {}, None
    teacher = MODELS.build(cfg.model.teacher).eval()
    modules = dict(teacher.named_modules())
    widths, hooks = {}, []
    for name, loss in dist.distill_losses.items():
        if 'KDLayerLoss' not in str(loss.get('type')):
            continue
        kind = loss.get('kind', 'penultimate')
        rec = dist.loss_forward_mappings[name]['preds_T']['recorder']
        src = dist.teacher_recorders[rec]['source']
        kinds.append(kind)
        shapes[kind] = int(loss['num_templates'])
        if kind == 'intermediate':
            num_classes = int(loss['num_classes'])
        hooks.append(modules[src].register_forward_hook(
            lambda m, i, o, k=kind: widths.__setitem__(k, o.shape[1])))
    with torch.no_grad():
        teacher.extract_feat(torch.zeros(1, 3, size, size), stage='backbone')
    for h in hooks:
        h.remove()
    arrays = {}
    meta = dict(kinds=kinds, synthetic=True, num_classes=num_classes or 0,
                classes=[], teacher_type=teacher_type(cfg.model.teacher))
    if 'penultimate' in kinds:
        arrays['penult_centers'] = rng.normal(
            size=(shapes['penultimate'], widths['penultimate'])).astype(
                np.float32)
    if 'intermediate' in kinds:
        c, s = widths['intermediate'], shapes['intermediate']
        d = lda_dims(60, num_classes, c)
        meta['subclasses'] = s // num_classes
        arrays.update(
            inter_mean=np.zeros(c, np.float32),
            inter_proj=rng.normal(size=(c, d)).astype(np.float32),
            inter_centers=rng.normal(size=(s, d)).astype(np.float32),
            inter_s_t=np.eye(s, dtype=np.float32))
    save_stats(out, meta, arrays)
    return meta
