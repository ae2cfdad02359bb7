"""Offline statistics of the KD layer (letKD) targets, from the teacher over
the training set (spec ``shared/specs/kd_layer.md``; supplementary Alg. 2).

The distillation config names what to compute::

    kd_layer_stats = dict(
        penultimate=dict(teacher_layer='backbone.layer4', num_templates=4096),
        intermediate=dict(teacher_layer='backbone.layer4.0', lda_dim=60,
                          subclasses=8),
        max_locations=500_000, seed=0)

Memory is bounded: at most ``max_locations`` feature vectors (spread evenly
over the batches) are kept per layer.
"""
from __future__ import annotations

import json
import math
import os
import os.path as osp
import time
from typing import Callable

import numpy as np
import torch


def _collect(cfg, teacher_ckpt: str, layers: dict, max_locations: int,
             seed: int, log: Callable) -> tuple[dict, np.ndarray, dict]:
    """Teacher features at ``layers`` ({kind: module name}) over the train
    set: ({kind: (n, C) float32}, labels per kind, dataset meta). In a
    distributed run each rank reads its shard and every rank returns all."""
    from mmengine.dist import all_gather_object, get_rank, get_world_size
    from mmengine.runner import Runner, load_checkpoint
    from mmpretrain.registry import MODELS as PT_MODELS
    from mmrazor.registry import MODELS

    teacher = MODELS.build(cfg.model.teacher)
    load_checkpoint(teacher, teacher_ckpt, map_location='cpu')
    teacher.eval()
    modules = dict(teacher.named_modules())
    for kind, name in layers.items():
        if name not in modules:
            near = [n for n in modules if n.startswith(name.split('.')[0])]
            raise KeyError(f'kd_layer_stats.{kind}.teacher_layer {name!r} is '
                           f'not a module of the teacher; e.g. {near[:8]}')
    preproc = PT_MODELS.build(cfg.data_preprocessor)
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=seed)
    # the sampler gives each rank its shard; the budget is split likewise
    world = get_world_size()
    quota = max(1, math.ceil(max_locations / world / max(1, len(loader))))
    gen = torch.Generator().manual_seed(seed + get_rank())
    captured, feats, labels = {}, {k: [] for k in layers}, \
        {k: [] for k in layers}
    handles = [modules[name].register_forward_hook(
        lambda m, i, o, k=kind: captured.__setitem__(k, o))
        for kind, name in layers.items()]
    t0 = time.time()
    try:
        with torch.no_grad():
            for it, data in enumerate(loader):
                data = preproc(data, False)
                teacher.extract_feat(data['inputs'], stage='backbone')
                y = torch.cat([ds.gt_label for ds in data['data_samples']])
                for kind, f in captured.items():
                    b, c, h, w = f.shape
                    flat = f.permute(0, 2, 3, 1).reshape(-1, c)
                    lab = y.repeat_interleave(h * w)
                    keep = torch.randperm(len(flat), generator=gen)[:quota]
                    feats[kind].append(flat[keep].float().numpy())
                    labels[kind].append(lab[keep].numpy())
                if (it + 1) % 20 == 0 or it + 1 == len(loader):
                    log(f'[kd_layer_stats] {it + 1}/{len(loader)} batches, '
                        f'{time.time() - t0:.0f} s')
    finally:
        for h in handles:
            h.remove()
    feats = {k: np.concatenate(v) for k, v in feats.items()}
    labels = {k: np.concatenate(v) for k, v in labels.items()}
    if world > 1:  # every rank saw its shard: gather them all
        shards = all_gather_object((feats, labels))
        feats = {k: np.concatenate([f[k] for f, _ in shards]) for k in feats}
        labels = {k: np.concatenate([y[k] for _, y in shards])
                  for k in labels}
        log(f'[kd_layer_stats] gathered {len(shards)} ranks: '
            + ', '.join(str(len(next(iter(f.values())))) for f, _ in shards)
            + ' locations')
    return feats, labels, dict(loader.dataset.metainfo)


def _kmeans(x: np.ndarray, k: int, seed: int):
    from sklearn.cluster import MiniBatchKMeans
    if len(x) < k:
        raise ValueError(f'only {len(x)} feature vectors for {k} clusters; '
                         'raise max_locations or lower the template count.')
    km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3,
                         batch_size=max(1024, 3 * k))
    return km.fit(x)


def intermediate_statistics(x: np.ndarray, y: np.ndarray, num_classes: int,
                            lda_dim: int, subclasses: int, seed: int) -> dict:
    """LDA + per-class k-means + decision matrix s_T (Algorithm 2)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    d = min(lda_dim, num_classes - 1, x.shape[1])
    lda = LinearDiscriminantAnalysis(n_components=d, solver='svd').fit(x, y)
    mean, proj = lda.xbar_, lda.scalings_[:, :d]
    z = (x - mean) @ proj
    s = num_classes * subclasses
    centers = np.zeros((s, d))
    assign = np.zeros(len(z), dtype=np.int64)
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)
        if len(idx) < subclasses:
            raise ValueError(f'class {c} has {len(idx)} sampled locations, '
                             f'fewer than {subclasses} subclasses; raise '
                             'max_locations.')
        km = _kmeans(z[idx], subclasses, seed)
        assign[idx] = c * subclasses + km.labels_
        for j in range(subclasses):  # prototypes: means of the members
            members = z[idx[km.labels_ == j]]
            centers[c * subclasses + j] = members.mean(0) if len(members) \
                else km.cluster_centers_[j]
    d2 = ((z[:, None, :] - centers[None]) ** 2).sum(-1) if len(z) * s < 5e7 \
        else np.stack([((z - ctr) ** 2).sum(1) for ctr in centers], 1)
    nearest = d2.argmin(1)
    s_t = np.zeros((s, s))
    np.add.at(s_t, (assign, nearest), 1.0)
    s_t /= np.maximum(s_t.sum(1, keepdims=True), 1.0)
    return dict(inter_mean=mean.astype(np.float32),
                inter_proj=proj.astype(np.float32),
                inter_centers=centers.astype(np.float32),
                inter_s_t=s_t.astype(np.float32))


def compute_kd_layer_stats(cfg, teacher_ckpt: str, out: str,
                           max_locations: int | None = None,
                           log: Callable = print) -> dict:
    """Compute and save the statistics named by ``cfg.kd_layer_stats``.

    Distributed (``tools/kd_layer_stats.py --launcher pytorch|slurm``): each
    rank extracts features of its shard of the data, the shards are gathered,
    and rank 0 alone fits the statistics and writes ``out``.
    """
    from mmengine.dist import get_world_size, is_main_process
    spec = cfg.get('kd_layer_stats')
    if not spec:
        raise KeyError('the config has no kd_layer_stats = dict(penultimate='
                       '..., intermediate=...) section.')
    seed = int(spec.get('seed', 0))
    max_locations = int(max_locations or spec.get('max_locations', 500_000))
    kinds = [k for k in ('penultimate', 'intermediate') if spec.get(k)]
    layers = {k: spec[k]['teacher_layer'] for k in kinds}
    feats, labels, dataset_meta = _collect(cfg, teacher_ckpt, layers,
                                           max_locations, seed, log)
    if not is_main_process():  # rank 0 fits and writes
        return {}
    classes = list(dataset_meta.get('classes') or [])
    num_classes = len(classes) or int(max(labels[kinds[0]]) + 1)
    arrays, meta = {}, dict(
        kinds=kinds, teacher_ckpt=osp.abspath(teacher_ckpt),
        teacher_type=cfg.model.teacher['backbone']['type'],
        layers=layers, num_classes=num_classes, classes=classes,
        max_locations=max_locations, seed=seed,
        num_locations={k: int(len(v)) for k, v in feats.items()},
        world_size=get_world_size())
    if 'penultimate' in kinds:
        k = int(spec['penultimate']['num_templates'])
        log(f'[kd_layer_stats] k-means: {k} centres over '
            f'{len(feats["penultimate"])} locations')
        arrays['penult_centers'] = _kmeans(
            feats['penultimate'], k, seed).cluster_centers_.astype(
                np.float32)
        meta['penultimate'] = dict(num_templates=k, channels=int(
            feats['penultimate'].shape[1]))
    if 'intermediate' in kinds:
        sub = int(spec['intermediate'].get('subclasses', 8))
        lda_dim = int(spec['intermediate'].get('lda_dim', 60))
        log(f'[kd_layer_stats] LDA ({lda_dim}) + {sub} subclasses x '
            f'{num_classes} classes over {len(feats["intermediate"])} '
            'locations')
        arrays.update(intermediate_statistics(
            feats['intermediate'], labels['intermediate'], num_classes,
            lda_dim, sub, seed))
        meta['subclasses'] = sub
        meta['intermediate'] = dict(
            num_templates=sub * num_classes,
            channels=int(feats['intermediate'].shape[1]))
    if osp.dirname(out):
        os.makedirs(osp.dirname(out), exist_ok=True)
    np.savez(out, meta=np.array(json.dumps(meta)), **arrays)
    log(f'[kd_layer_stats] wrote {out}')
    return meta
