"""One way to turn a teacher spec into a ready teacher.

A spec is a model config dict, the name of an mmpretrain model-zoo model
(``'resnet34_8xb32_in1k'``, as in ``mmpretrain.get_model``) or a built
module. Every distiller (FastDistill, MultiTeacherDistill, ATSC) builds its
teachers with :func:`build_teacher`: one checkpoint policy (``module.``, the
prefix a DDP-wrapped save adds, is stripped) and, unless the method trains
the teacher, every parameter frozen.
"""
from __future__ import annotations

from typing import Iterator, List, Optional, Tuple, Union

import torch
import torch.nn as nn

from ..errors import ConfigError

TeacherSpec = Union[dict, str, nn.Module]

# the one prefix policy: a checkpoint saved from a DDP-wrapped model
REVISE_KEYS = [(r'^module\.', '')]


def zoo_model(name: str) -> nn.Module:
    """An mmpretrain model-zoo classifier by name, without weights (they come
    from the teacher checkpoint: a local file or the zoo's URL)."""
    import mmpretrain
    try:
        return mmpretrain.get_model(name, pretrained=False)
    except ValueError as err:
        near = mmpretrain.list_models(f'*{name.split("_")[0]}*')[:8]
        raise ConfigError(
            f'teacher={name!r} is not a model of mmpretrain\'s zoo ({err}). '
            f'Similar names: {near}.\n  Fix: use a name from '
            'mmpretrain.list_models(), or give the teacher as a config dict.'
        ) from err


STUDENT_PREFIX = 'architecture.'  # a distiller checkpoint's student


def teacher_state_dict(ckpt) -> Tuple[dict, bool]:
    """The tensors a teacher loads from a loaded checkpoint: ``module.``
    prefixes stripped; from a distillation run's checkpoint (a student
    promoted to teacher, as in born-again or teacher-assistant chains) its
    student (``architecture.*``). Returns (state dict, from a distiller)."""
    import torch
    sd = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else {}
    sd = {k[7:] if k.startswith('module.') else k: v
          for k, v in sd.items() if torch.is_tensor(v)}
    student = {k[len(STUDENT_PREFIX):]: v for k, v in sd.items()
               if k.startswith(STUDENT_PREFIX)}
    if student and any(k.startswith(('teacher.', 'teachers.', 'peer.'))
                       for k in sd):
        return student, True
    return sd, False


def load_teacher_weights(teacher: nn.Module, ckpt: str) -> None:
    """Load ``ckpt`` into ``teacher`` (:func:`teacher_state_dict`: also a
    distillation run's student) and mark it initialised, so that
    ``init_weights`` does not overwrite it. Local files are read with
    ``weights_only=True``; a URL goes through mmengine (its cache first)."""
    if '://' not in str(ckpt):
        from mmengine.logging import print_log

        from .checkpoint import load_local_checkpoint
        sd, promoted = teacher_state_dict(
            load_local_checkpoint(ckpt, map_location='cpu', role='teacher'))
        if promoted:
            print_log(f'kd_plugins: {ckpt} is a distillation checkpoint; '
                      'the teacher loads its student (architecture.*)',
                      logger='current')
        from mmengine.runner.checkpoint import load_state_dict
        load_state_dict(teacher, sd, strict=False, logger='current')
    else:
        load_url_checkpoint(teacher, ckpt)
    teacher._is_init = True


def load_url_checkpoint(teacher: nn.Module, url: str) -> None:
    """mmengine's download (into torch's hub cache), with one clear line
    when the node has no network and the file is not cached."""
    import os.path as osp
    import urllib.error

    import torch
    from mmengine.runner import load_checkpoint
    cached = osp.join(torch.hub.get_dir(), 'checkpoints',
                      osp.basename(url.split('?')[0]))
    try:
        load_checkpoint(teacher, url, map_location='cpu',
                        revise_keys=REVISE_KEYS)
    except (urllib.error.URLError, OSError, ConnectionError) as err:
        raise ConfigError(
            f'the teacher checkpoint {url} could not be downloaded ({err}); '
            'this node seems to have no network.\n  Fix: copy the file to '
            f'{cached} (mmengine reads it from there), or pass a local path: '
            '--cfg-options model.teacher_ckpt=/path/to/teacher.pth') from err


def freeze(teacher: nn.Module) -> nn.Module:
    """No gradient to any teacher parameter."""
    for p in teacher.parameters():
        p.requires_grad = False
    return teacher


def build_teacher(spec: TeacherSpec, ckpt: Optional[str] = None,
                  trainable: bool = False) -> nn.Module:
    """Build ``spec`` (config dict, zoo name or module), load ``ckpt`` (if
    given) and freeze it unless ``trainable``.

    A frozen teacher is built on a fork of torch's CPU random state: the
    student's initial weights and the run's random draws (drop path,
    dropout) do not depend on whether (or which) teacher is built, so a run
    from a teacher cache (no teacher) starts as the live run does."""
    from mmrazor.registry import MODELS
    if not isinstance(spec, (str, dict, nn.Module)):
        raise ConfigError(f'a teacher must be a model config dict, an '
                          f'mmpretrain model-zoo name or a module; got '
                          f'{type(spec).__name__}.')
    with torch.random.fork_rng(devices=[], enabled=not trainable):
        if isinstance(spec, str):
            teacher = zoo_model(spec)
        elif isinstance(spec, dict):
            teacher = MODELS.build(spec)
        else:
            teacher = spec
    if ckpt:
        load_teacher_weights(teacher, ckpt)
    return teacher if trainable else freeze(teacher)


def as_list(value, n: Optional[int] = None) -> list:
    """``value`` as a list: a dict/str/module/None is one item (repeated
    ``n`` times for None or a str when ``n`` is given)."""
    if value is None or isinstance(value, str):
        return [value] * (n if n is not None else 1)
    if isinstance(value, (dict, nn.Module)):
        return [value]
    return list(value)


def teachers_and_ckpts(teachers, ckpts, owner: str
                       ) -> Tuple[List[TeacherSpec], List[Optional[str]]]:
    """Teacher specs and one checkpoint (or None) per teacher."""
    teachers = as_list(teachers)
    if not teachers or teachers == [None]:
        raise ConfigError(f'{owner} needs at least one teacher '
                          '(model.teachers=[...]).')
    ckpts = as_list(ckpts, len(teachers))
    if len(ckpts) != len(teachers):
        raise ConfigError(
            f'{owner}: {len(teachers)} teachers but {len(ckpts)} '
            'teacher_ckpts; give one checkpoint (or None) per teacher.')
    return teachers, ckpts


def teacher_entries(model: dict) -> Iterator[Tuple[str, str, TeacherSpec,
                                                   Optional[str]]]:
    """``(where, ckpt_key, spec, ckpt)`` for every teacher of a distiller
    config (``teacher``/``teacher_ckpt`` or ``teachers``/``teacher_ckpts``);
    ``where`` names the teacher, ``ckpt_key`` its checkpoint's config key."""
    if isinstance(model.get('teacher'), (dict, str)):
        yield ('model.teacher', 'model.teacher_ckpt', model['teacher'],
               model.get('teacher_ckpt'))
    teachers = model.get('teachers')
    if teachers:
        teachers = as_list(teachers)
        ckpts = as_list(model.get('teacher_ckpts'), len(teachers))
        for i, (t, c) in enumerate(zip(teachers, ckpts)):
            yield f'model.teachers[{i}]', f'model.teacher_ckpts[{i}]', t, c


def clear_teacher_ckpts(model: dict) -> None:
    """Every teacher checkpoint of a distiller config set to None (a run
    whose teacher weights come from elsewhere: a distiller checkpoint, or
    none at all)."""
    if 'teacher_ckpt' in model:
        model['teacher_ckpt'] = None
    if 'teacher_ckpts' in model:
        model['teacher_ckpts'] = [None] * len(as_list(model.get('teachers')))


def first_teacher(model: dict) -> Optional[TeacherSpec]:
    """The (first) teacher spec of a distiller config, or None."""
    return next((spec for _, _, spec, _ in teacher_entries(model)), None)


__all__ = ['build_teacher', 'load_teacher_weights', 'freeze', 'zoo_model',
           'as_list', 'teachers_and_ckpts', 'teacher_entries',
           'clear_teacher_ckpts', 'first_teacher', 'REVISE_KEYS',
           'teacher_state_dict', 'load_url_checkpoint']
