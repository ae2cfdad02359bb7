"""Teacher caches: distil from stored teacher outputs (FKD-style).

``tools/cache_teacher.py`` runs a config's frozen teacher(s) once over views
of every training image and stores each view's replay parameters and the
teachers' logits (:mod:`.store`); a run with ``model.teacher_cache=DIR``
then trains on those views (:class:`.dataset.KDCachedViews`, the replay
transforms of :mod:`.replay`) with a weightless stand-in teacher
(:class:`.teacher.CachedTeacher`). Guide: docs/methods/teacher_cache.md.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from ..errors import ConfigError
from .dataset import KDCachedViews, as_caches
from .replay import (KDReplayRandomCrop, KDReplayRandomFlip,
                     KDReplayRandomResizedCrop, replay_pipeline)
from .store import canonical, read_complete_index
from .teacher import (LOGITS_KEY, CachedTeacher, check_teachers,
                      teacher_logit_sources)


def teacher_options(data_preprocessor, teacher_dtype, teacher_input,
                    teacher_mode) -> dict:
    """The distiller's options that change a teacher's logits: its data
    preprocessor (normalisation) and fast-path options (a cache built with
    them is only valid with them)."""
    return dict(data_preprocessor=canonical(data_preprocessor),
                teacher_dtype=teacher_dtype,
                teacher_input=canonical(teacher_input),
                teacher_mode=teacher_mode)


def cached_teachers(cache_dir, distiller: dict,
                    entries: Sequence[Tuple[object, Optional[str]]],
                    options: dict,
                    student_classes: Optional[int] = None
                    ) -> List[CachedTeacher]:
    """The stand-ins of a run's teachers (``entries``: (spec, ckpt) each),
    after checking that ``cache_dir`` was built for them, for these
    fast-path ``options`` and for the student's class count. ``cache_dir``:
    one cache of all the teachers, or a list of caches, one per teacher in
    teacher order (KDCachedViews stacks their logits in that order)."""
    caches = as_caches(cache_dir)
    if len(caches) == 1:
        groups = [(caches[0], list(entries))]
    elif len(caches) == len(entries):
        groups = [(c, [e]) for c, e in zip(caches, entries)]
    else:
        raise ConfigError(
            f'teacher_cache lists {len(caches)} caches for {len(entries)} '
            'teachers.\n  Fix: give one cache of all the teachers, or one '
            'cache per teacher, in teacher order.')
    out: List[CachedTeacher] = []
    for cache, group in groups:
        index = read_complete_index(cache)
        check_teachers(cache, index,
                       [dict(spec=canonical(s), ckpt=c) for s, c in group],
                       options)
        if student_classes is not None and \
                student_classes != index['classes_n']:
            raise ConfigError(
                f'teacher_cache {cache!r} holds logits of '
                f'{index["classes_n"]} classes but the student '
                f'(model.architecture) predicts {student_classes}.\n  Fix: '
                f'set model.architecture.head.num_classes='
                f'{index["classes_n"]}, or build a cache for a teacher of '
                'your classes.')
        sources = teacher_logit_sources(distiller, cache,
                                        index['logit_sources'])
        out += [CachedTeacher(sources, len(out) + k, index['classes_n'])
                for k in range(len(group))]
    return out


__all__ = ['KDCachedViews', 'KDReplayRandomCrop', 'KDReplayRandomFlip',
           'KDReplayRandomResizedCrop', 'replay_pipeline', 'CachedTeacher',
           'cached_teachers', 'teacher_options', 'LOGITS_KEY']
