"""CachedTeacher: the stand-in a cached run holds in place of its teacher.

It has no weights. Its forward takes the stored logits off the data samples
(``kd_teacher_logits`` (K, C), put there by
:class:`~.dataset.KDCachedViews`) and passes teacher ``k``'s (N, C) through
*emitter* modules at the paths the distiller's teacher recorders name
(``head.fc``, ``head``, ...), so mmrazor's ``ModuleOutputs`` recorders record
them exactly as they record a live teacher's logits: the losses, the
multi-teacher combine rules and mmrazor's own loss classes run unchanged.
"""
from __future__ import annotations

import json
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from mmengine.model import BaseModel

from ..errors import ConfigError
from .store import file_sha256, mismatch

LOGITS_KEY = 'kd_teacher_logits'
# the one recorder type a cache can feed, the output of a logits module: its
# config name and its class name
LOGIT_RECORDERS = ('ModuleOutputs', 'ModuleOutputsRecorder')


class _Emitter(nn.Module):
    """Identity: its forward output is what the recorders see."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def teacher_logit_sources(distiller: dict, cache_dir: str,
                          logit_sources: Sequence[str]) -> List[str]:
    """The sources of the distiller's teacher recorders, each checked to be
    a logits module the cache was built for. Feature recorders (IE-KD, the KD
    layer) and method-input recorders are refused."""
    out = []
    recorders = (distiller or {}).get('teacher_recorders') or {}
    for name, rec in recorders.items():
        rtype = str(rec.get('type', '')).split('.')[-1]
        source = rec.get('source')
        if rtype not in LOGIT_RECORDERS or source not in logit_sources:
            raise ConfigError(
                f'teacher recorder {name!r} ({rtype} of {source!r}) reads '
                f'something teacher_cache {cache_dir!r} does not hold: a '
                f'cache stores the teacher\'s logits (recorded at '
                f'{list(logit_sources)}). Methods that read teacher features '
                '(IE-KD, the KD layer) or train the teacher (ATSC) need the '
                'live teacher.\n  Fix: drop model.teacher_cache for this '
                'method, or record the teacher\'s logits module '
                f'({list(logit_sources)[:1]}).')
        out.append(source)
    return out


class CachedTeacher(BaseModel):
    """Teacher ``k`` of a cache: emits its stored (N, C) logits at
    ``sources``.

    Args:
        sources: module paths of the teacher's logits ('head.fc', 'head').
        k: which cached teacher (multi-teacher caches hold K).
        num_classes: C, as the teacher's head (``head.num_classes``).
    """

    def __init__(self, sources: Sequence[str], k: int = 0,
                 num_classes: Optional[int] = None) -> None:
        super().__init__()
        self.k = int(k)
        self.sources = list(dict.fromkeys(sources))
        self._emitters: Dict[str, nn.Module] = {}
        for path in self.sources:
            parent = self
            parts = path.split('.')
            for part in parts[:-1]:
                if not hasattr(parent, part):
                    parent.add_module(part, nn.Module())
                parent = getattr(parent, part)
            if not hasattr(parent, parts[-1]):
                parent.add_module(parts[-1], _Emitter())
            self._emitters[path] = getattr(parent, parts[-1])
        if num_classes is not None and hasattr(self, 'head'):
            self.head.num_classes = int(num_classes)

    def stored_logits(self, data_samples) -> torch.Tensor:
        """(N, C) float32 logits of teacher k from the data samples."""
        if not data_samples or LOGITS_KEY not in data_samples[0]:
            raise ConfigError(
                'model.teacher_cache is set but the batch carries no cached '
                'teacher logits: the train data set is not wrapped in '
                "KDCachedViews (mmengine's own training loop does not do it)."
                "\n  Fix: use kd_plugins' loop, which wraps it: train_cfg = "
                "dict(type='ResumableEpochBasedTrainLoop', max_epochs=..., "
                "val_interval=...) (the configs/_base_ schedules have it), "
                "or set train_dataloader.dataset=dict(type='KDCachedViews', "
                'dataset=<your dataset>, cache=<the cache>).')
        return torch.stack([ds.get(LOGITS_KEY)[self.k] for ds in
                            data_samples])

    def forward(self, inputs: torch.Tensor, data_samples=None,
                mode: str = 'tensor') -> torch.Tensor:
        """``inputs`` (N, 3, H, W) only give the device and dtype."""
        logits = self.stored_logits(data_samples).to(inputs.device,
                                                     inputs.dtype)
        for emitter in self._emitters.values():
            emitter(logits)
        return logits


def first_difference(a, b, key: str = ''):
    """(dotted key, a's value, b's value) where two configs first differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k, '<unset>') != b.get(k, '<unset>'):
                return first_difference(a.get(k, '<unset>'),
                                        b.get(k, '<unset>'),
                                        f'{key}.{k}' if key else k)
    return key, a, b


def check_teachers(cache_dir: str, index: dict, records: Sequence[dict],
                   options: dict) -> None:
    """The run's teachers (``records``: dict(spec, ckpt) each, in order) and
    fast-path options (teacher dtype / input / mode: they change the
    logits) must be the cache's."""
    fix = ('Fix: build a cache for this teacher (python '
           'tools/cache_teacher.py CONFIG DIR), or point model.teacher_cache '
           'at its cache.')
    cached = index['teachers']
    if len(records) != len(cached):
        raise ConfigError(mismatch(f'{len(cached)} teacher(s), not',
                                   cache_dir, '', len(records), fix))
    for k, (c, r) in enumerate(zip(cached, records)):
        who = f'teacher {k}' if len(cached) > 1 else 'the teacher'
        if r['spec'] != c['spec']:
            key, a, b = first_difference(json.loads(c['spec']),
                                         json.loads(r['spec']))
            raise ConfigError(mismatch(
                f'another model as {who}: its {key or "config"} is', cache_dir,
                a, b, fix))
        sha = file_sha256(r['ckpt'])
        if sha is not None and c['ckpt_sha256'] is not None:
            if sha != c['ckpt_sha256']:
                raise ConfigError(mismatch(
                    f'another checkpoint of {who}: sha256', cache_dir,
                    f"{c['ckpt_sha256'][:12]} ({c['ckpt']})",
                    f"{sha[:12]} ({r['ckpt']})", fix))
        elif str(r['ckpt']) != str(c['ckpt']):
            raise ConfigError(mismatch(f'another checkpoint of {who}:',
                                       cache_dir, c['ckpt'], r['ckpt'], fix))
    for key, value in options.items():
        if index['teacher_options'].get(key) != value:
            raise ConfigError(mismatch(
                f'{key}=', cache_dir, index['teacher_options'].get(key),
                value, fix))


__all__ = ['CachedTeacher', 'teacher_logit_sources', 'check_teachers',
           'LOGITS_KEY']
