"""Teacher/student checks run before training (part of the preflight).

The models are built on PyTorch's ``meta`` device where possible (no memory,
no weight initialisation), else on the CPU (a ResNet-50 in about a second),
so these checks cost nothing next to a training run and catch, in seconds:

* teacher and student predicting a different number of classes;
* a teacher checkpoint that does not fit the teacher architecture (missing /
  unexpected keys, shape mismatches), or that cannot be read at all;
* a data set whose class names differ from those the teacher was trained on;
* a recorder naming a module path that does not exist (nearest names listed);
* an option a loss / connector / head does not take (typos in configs).
"""
from __future__ import annotations

import difflib
import inspect
from typing import Iterator

import torch
from mmengine.config import Config, ConfigDict

from ..errors import PreflightError
from ..utils.checkpoint import state_dict_diff
from ..utils.config import innermost_dataset, iter_nodes
from ..utils.teacher import teacher_entries, teacher_state_dict, zoo_model


def _plain(obj):
    if isinstance(obj, ConfigDict):
        return obj.to_dict()
    return obj


def build_meta(cfg: dict) -> torch.nn.Module | None:
    """Build a model config on the meta device (on the CPU where a model's
    constructor computes with tensors, e.g. mmpretrain's ResNet drop-path
    schedule); ``None`` if it cannot be built (the real build then reports
    the problem itself)."""
    from mmrazor.registry import MODELS
    for device in ('meta', 'cpu'):
        try:
            with torch.device(device):
                if isinstance(cfg, str):  # an mmpretrain model-zoo name
                    return zoo_model(cfg)
                return MODELS.build(_plain(cfg))
        except Exception:  # noqa: BLE001 - the real build raises the error
            continue
    return None


def _pairs(model: dict) -> Iterator[tuple[str, dict, str | None]]:
    """``(where, teacher_cfg, ckpt)`` for every teacher of a distiller."""
    for where, _, spec, ckpt in teacher_entries(model):
        yield where, spec, ckpt


def num_classes(model: torch.nn.Module) -> int | None:
    """Classes a classifier predicts: ``head.num_classes`` (mmpretrain)."""
    head = getattr(model, 'head', None)
    n = getattr(head, 'num_classes', None)
    return int(n) if isinstance(n, int) else None


def check_class_counts(student: torch.nn.Module, where: str,
                       teacher: torch.nn.Module) -> None:
    ns, nt = num_classes(student), num_classes(teacher)
    if ns is not None and nt is not None and ns != nt:
        raise PreflightError(
            f'{where} predicts {nt} classes but the student '
            f'(model.architecture) predicts {ns}: distillation compares '
            'their class scores one to one.\n  Fix: train both on the same '
            f'classes - set model.architecture.head.num_classes={nt} (or use '
            f'a teacher trained on your {ns} classes).')


def _suggest(name: str, names: list[str], n: int = 5) -> str:
    near = difflib.get_close_matches(name, names, n=n, cutoff=0.4)
    if not near:  # share the longest prefix
        stem = name.rsplit('.', 1)[0]
        near = [m for m in names if m.startswith(stem)][:n]
    return ', '.join(repr(m) for m in near) or '(none close)'


RECORDER_TYPES = ('ModuleOutputs', 'ModuleInputs', 'ModuleOutputsRecorder',
                  'ModuleInputsRecorder')


def check_recorders(distiller: dict, side: str, net: torch.nn.Module,
                    where: str | None = None) -> None:
    """Every Module{Inputs,Outputs} recorder source must name a module
    (of every teacher, for a multi-teacher distiller: ``where`` names it)."""
    recorders = (distiller or {}).get(f'{side}_recorders') or {}
    names = [n for n, _ in net.named_modules() if n]
    for key, rec in recorders.items():
        if not isinstance(rec, dict):
            continue
        rtype = str(rec.get('type', '')).split('.')[-1]
        src = rec.get('source')
        if rtype not in RECORDER_TYPES or src in names:
            continue
        who = f'{side} ({where})' if where else side
        raise PreflightError(
            f'model.distiller.{side}_recorders.{key} records module '
            f'{src!r}, which the {who} does not have. Nearest module '
            f'names: {_suggest(str(src), names)}.\n  Fix: set '
            f'model.distiller.{side}_recorders.{key}.source to one of the '
            f'{side}\'s modules (print(model) lists them all).')


def check_teacher_weights(where: str, ckpt_path: str, teacher: torch.nn.Module,
                          ckpt: dict) -> None:
    """The checkpoint's tensors must fit the teacher exactly."""
    have, promoted = teacher_state_dict(ckpt)
    want = teacher.state_dict()
    missing, unexpected, shapes = state_dict_diff(have, want)
    shapes = [f'{k}: checkpoint {tuple(have[k].shape)} vs model '
              f'{tuple(want[k].shape)}' for k in shapes]
    if not (missing or unexpected or shapes):
        return

    def show(items):
        return ', '.join(items[:6]) + (f' ... ({len(items)} in all)'
                                       if len(items) > 6 else '')

    parts = []
    if missing:
        parts.append(f'missing keys: {show(missing)}')
    if unexpected:
        parts.append(f'unexpected keys: {show(unexpected)}')
    if shapes:
        parts.append(f'shape mismatches: {show(shapes)}')
    raise PreflightError(
        f'the checkpoint {ckpt_path!r} does not match the teacher '
        f'architecture {where}:\n  ' + '\n  '.join(parts) + '\n  Fix: set '
        f'{where} to the model the checkpoint was trained with (same '
        'backbone, depth, widths and num_classes), or pass the checkpoint '
        'of this architecture.' + (
            ' (It is a distillation checkpoint: its student, '
            'model.architecture of that run, was compared; a teacher '
            'network needs its own checkpoint or that run\'s student_*.pth '
            'with the student\'s architecture as model.teacher.)'
            if promoted else ''))


def _dataset_classes(cfg: Config):
    loader = cfg.get('train_dataloader') or {}
    ds = innermost_dataset(loader.get('dataset')) \
        if isinstance(loader, dict) else None
    if not isinstance(ds, dict):
        return None
    meta = ds.get('metainfo') or {}
    if meta.get('classes'):
        return list(meta['classes'])
    if ds.get('classes'):
        return list(ds['classes']) if not isinstance(ds['classes'], str) \
            else None
    from mmpretrain.registry import DATASETS
    try:
        cls = DATASETS.get(ds.get('type'))
    except Exception:  # noqa: BLE001
        cls = None
    classes = (getattr(cls, 'METAINFO', None) or {}).get('classes')
    return list(classes) if classes else None


def check_class_names(cfg: Config, where: str, ckpt_path: str,
                      ckpt: dict) -> None:
    """The teacher's label order must be the data set's label order."""
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    t_classes = ((meta or {}).get('dataset_meta') or {}).get('classes')
    d_classes = _dataset_classes(cfg)
    if not t_classes or not d_classes or list(t_classes) == d_classes:
        return
    t_classes = list(t_classes)
    diff = [f'{i}: teacher {a!r} vs data {b!r}'
            for i, (a, b) in enumerate(zip(t_classes, d_classes)) if a != b]
    raise PreflightError(
        f'the teacher {where} (checkpoint {ckpt_path!r}) was trained on '
        f'{len(t_classes)} classes that differ from the {len(d_classes)} '
        f'classes of train_dataloader.dataset'
        + (f' (first differences - {"; ".join(diff[:3])})' if diff else '')
        + ': its class scores would teach the student the wrong labels.\n'
        '  Fix: use a teacher trained on this data set with the same class '
        'order, or set train_dataloader.dataset.metainfo.classes (and '
        'val/test) to the teacher\'s class list.')


# ---------------------------------------------------------------------------
def _registered(type_name):
    from mmpretrain.registry import MODELS as CLS_MODELS
    from mmrazor.registry import MODELS
    if not isinstance(type_name, str):
        return type_name if inspect.isclass(type_name) else None
    for reg in (MODELS, CLS_MODELS):
        try:
            obj = reg.get(type_name)
        except Exception:  # noqa: BLE001
            obj = None
        if obj is not None:
            return obj
    return None


def _model_registries():
    """Where a type inside ``model`` may be registered: models, recorders
    and other task utilities, batch augments, weight initialisers."""
    from mmpretrain import registry as pt
    from mmrazor import registry as rz
    return (rz.MODELS, pt.MODELS, rz.TASK_UTILS, pt.TASK_UTILS,
            pt.BATCH_AUGMENTS, rz.WEIGHT_INITIALIZERS)


def _is_registered(type_name: str) -> bool:
    # mmrazor's recorder manager builds ``<type>Recorder`` (ModuleOutputs)
    for name in (type_name, type_name + 'Recorder'):
        for reg in _model_registries():
            try:
                if reg.get(name) is not None:
                    return True
            except Exception:  # noqa: BLE001 - an unknown scope prefix
                pass
    return False


def check_types(model: dict) -> None:
    """Every ``type`` in the model config is registered somewhere a model
    part can come from; a typo gets the closest registered names."""
    for path, sub in _typed_dicts(_plain(model), 'model'):
        name = sub['type']
        if not isinstance(name, str) or _is_registered(name):
            continue
        short = name.split('.')[-1]
        known = sorted({k for reg in _model_registries()
                        for k in reg.module_dict})
        raise PreflightError(
            f'{path}.type={name!r} is not a registered type (no model, '
            f'loss, connector, recorder or head of that name in mmrazor, '
            f'mmpretrain or kd_plugins). Closest: {_suggest(short, known)}.'
            f'\n  Fix: correct {path}.type in the config (or import the '
            'module that registers it with custom_imports).')


def _typed_dicts(obj, path: str):
    for here, node in iter_nodes(obj, path):
        if isinstance(node, dict) and 'type' in node:
            yield here, node


def check_options(model: dict) -> None:
    """Every option of a registered loss/connector/head/... must exist."""
    for path, sub in _typed_dicts(_plain(model), 'model'):
        cls = _registered(sub['type'])
        if cls is None or not inspect.isclass(cls):
            continue
        try:
            params = inspect.signature(cls.__init__).parameters
        except (TypeError, ValueError):
            continue
        if any(p.kind == p.VAR_KEYWORD for p in params.values()):
            continue
        valid = [n for n in params if n != 'self']
        for key in sub:
            if key in ('type', '_scope_') or key in valid:
                continue
            raise PreflightError(
                f'{path}: {cls.__name__} has no option {key!r}'
                f' (did you mean {_suggest(key, valid, 3)}?). Its options: '
                f'{", ".join(valid)}.\n  Fix: correct or remove '
                f'{path}.{key} in the config.')


def check_pairs(cfg: Config) -> None:
    """All teacher/student checks of a distillation config."""
    from ..utils.checkpoint import load_local_checkpoint
    model = cfg.get('model')
    if not isinstance(model, dict):
        return
    check_types(model)
    check_options(model)
    arch = model.get('architecture')
    teachers = list(_pairs(model))
    if not isinstance(arch, dict) or not teachers:
        return
    student = build_meta(arch)
    distiller = model.get('distiller') or {}
    if student is not None:
        check_recorders(distiller, 'student', student)
    for where, t_cfg, ckpt_path in teachers:
        teacher = build_meta(t_cfg)
        if teacher is None:
            continue
        if distiller:  # every teacher of a (multi-teacher) distiller
            check_recorders(distiller, 'teacher', teacher,
                            None if where == 'model.teacher' else where)
        if student is not None:
            check_class_counts(student, where, teacher)
        if not ckpt_path or '://' in str(ckpt_path) or \
                model.get('teacher_cache'):  # not loaded: the cache is used
            continue
        ckpt = load_local_checkpoint(ckpt_path, map_location='cpu',
                                     role='teacher')
        check_teacher_weights(where, ckpt_path, teacher, ckpt)
        check_class_names(cfg, where, ckpt_path, ckpt)
