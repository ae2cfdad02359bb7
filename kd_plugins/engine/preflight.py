"""Checks run before any model or data set is built.

A misconfigured run should fail in seconds with a message that names the
problem and the fix, not after an hour of data loading. ``tools/train.py``
and ``tools/test.py`` call :func:`preflight` on the merged config.
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Iterator

from mmengine.config import Config

from ..errors import PreflightError
from ..utils.config import find_key, innermost_dataset
from ..utils.teacher import teacher_entries
from .pair_checks import check_pairs

__all__ = ['PreflightError', 'preflight']


# What each standard data set expects below its ``data_root``.
DATA_LAYOUTS = {
    'ImageNet': (
        'ImageNet-1k in mmpretrain layout: {root}/train/<wnid>/*.JPEG and '
        '{root}/val/<wnid>/*.JPEG (or {root}/val/*.JPEG with '
        '{root}/meta/val.txt). See https://mmpretrain.readthedocs.io/en/'
        'latest/user_guides/dataset_prepare.html#imagenet'),
    'CIFAR100': (
        'CIFAR-100, python version: {root}/cifar-100-python/train, '
        '{root}/cifar-100-python/test and {root}/cifar-100-python/meta '
        '(extract cifar-100-python.tar.gz into {root})'),
    'CIFAR10': (
        'CIFAR-10, python version: {root}/cifar-10-batches-py/data_batch_1..5,'
        ' test_batch and batches.meta (extract cifar-10-python.tar.gz)'),
    'CustomDataset': (
        'an image folder: {root}/<class_name>/<image files> (or an ann_file '
        'listing "path label" lines)'),
}


def _dataset_cfgs(cfg: Config) -> Iterator[tuple[str, dict]]:
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(key)
        if not loader or not isinstance(loader, dict):
            continue
        ds = innermost_dataset(loader.get('dataset'))
        if isinstance(ds, dict):
            yield key, ds


def check_data(cfg: Config, keys: tuple[str, ...] | None = None) -> None:
    """Fail fast when a file-based data set's ``data_root`` is missing/empty.

    Args:
        cfg: the full run config.
        keys: restrict to these dataloaders (e.g. ``('test_dataloader',)``).
    """
    for key, ds in _dataset_cfgs(cfg):
        if keys is not None and key not in keys:
            continue
        ds_type = str(ds.get('type', '')).split('.')[-1]
        root = ds.get('data_root') or ''
        if ds_type not in DATA_LAYOUTS or not root:
            continue
        if osp.isdir(root) and os.listdir(root):
            continue
        what = 'does not exist' if not osp.exists(root) else 'is empty'
        layout = DATA_LAYOUTS[ds_type].format(root=root.rstrip('/'))
        raise PreflightError(
            f'{key}: data_root {root!r} of the {ds_type} data set {what}.\n'
            f'  Expected: {layout}.\n'
            f'  Fix: put the data there (a symlink is fine: '
            f'ln -s /path/to/data {root.rstrip("/")}), or point the config at '
            f'it: --cfg-options {key}.dataset.data_root=/path/to/data')


def check_teacher_ckpt(cfg: Config) -> None:
    """Local ``teacher_ckpt`` / ``teacher_ckpts`` files must exist (not
    with a teacher cache: the teacher is not loaded)."""
    model = cfg.get('model') or {}
    if not isinstance(model, dict) or model.get('teacher_cache'):
        return
    for _, key, _, ckpt in teacher_entries(model):
        if not ckpt or '://' in str(ckpt) or osp.isfile(ckpt):
            continue
        example = ('"[/path/t1.pth,/path/t2.pth]"' if key.endswith(']')
                   else '/path/to/teacher.pth')
        raise PreflightError(
            f'{key} {ckpt!r} does not exist.\n'
            f'  Fix: train the teacher first (see README) or pass its '
            f"checkpoint: --cfg-options {key.split('[')[0]}={example}")


# files a method needs before training: config key -> (what, how to make it)
METHOD_FILES = {
    'stage1_ckpt': (
        'IE-KD stage 2 needs the stage-1 checkpoint (the trained teacher '
        'encoder)', 'run stage 1 first (e.g. python tools/train.py '
        'configs/demo/ie_kd_stage1_digits.py)'),
    'stats_file': (
        'the KD layer needs the offline statistics of the teacher',
        'compute them first: python tools/kd_layer_stats.py CONFIG '
        'TEACHER_CKPT OUT.npz'),
}


def check_method_files(cfg: Config) -> None:
    """Stage-1 checkpoints, KD-layer statistics... must exist."""
    for key, (what, how) in METHOD_FILES.items():
        found = list(find_key(cfg.get('model') or {}, key, 'model'))
        for where, path in found:
            if path and not osp.isfile(path):
                # every key that names this file needs the new path (e.g.
                # both KD-layer losses share one statistics file)
                keys = [w for w, p in found if p == path]
                raise PreflightError(
                    f'{where} {path!r} does not exist: {what}.\n'
                    f'  Fix: {how}, then pass the file: --cfg-options '
                    + ' '.join(f'{w}=PATH' for w in keys))


def _optimizers(ckpt: dict):
    """The optimizer names a checkpoint holds: None for one optimizer,
    a sorted list for an OptimWrapperDict (ATSC, IE-DML)."""
    opt = ckpt.get('optimizer')
    if not isinstance(opt, dict) or 'param_groups' in opt:
        return None
    return sorted(opt)


def _model_type(cfg_text) -> str | None:
    import re
    if not isinstance(cfg_text, str):
        return None
    found = re.search(r"^model = dict\((.*?)^\S", cfg_text + '\nEND',
                      re.S | re.M)
    body = found.group(1) if found else ''
    # the distiller's own type: the first type= at the dict's top indent
    top = re.findall(r"^    type='([\w.]+)'", body, re.M)
    return top[0].split('.')[-1] if top else None


def check_resume(cfg: Config, path: str) -> None:
    """A ``--resume`` checkpoint must come from a run of this method: the
    same distiller type and the same optimizers (one, or ATSC's / IE-DML's
    named ones). Otherwise mmengine ends in ``KeyError: 'param_groups'``
    or loads a state into the wrong parts."""
    from ..utils.checkpoint import load_local_checkpoint
    ckpt = load_local_checkpoint(path, map_location='cpu', role='resume')
    if not isinstance(ckpt, dict):
        return
    meta = ckpt.get('meta') or {}
    have_type = _model_type(meta.get('cfg'))
    model = cfg.get('model') or {}
    want_type = str(model.get('type', '')).split('.')[-1] or None
    have_opt = _optimizers(ckpt)
    multi = (cfg.get('optim_wrapper') or {}).get(
        'constructor') == 'KDMultiOptimWrapperConstructor'
    type_differs = have_type and want_type and have_type != want_type
    opt_differs = 'optimizer' in ckpt and (have_opt is not None) != multi
    if not (type_differs or opt_differs):
        return

    def opts(names):
        return 'one optimizer' if names is None else \
            f'the optimizers {names}'
    want_opt = 'several named optimizers' if multi else 'one optimizer'
    raise PreflightError(
        f'--resume {path!r} holds a run of '
        f'{have_type or "another method"} with '
        f'{opts(have_opt)}, but this config trains {want_type} with '
        f'{want_opt}: it was written by another method or config.\n  Fix: '
        'resume from a checkpoint of this config\'s run (--resume alone '
        'picks the latest one in --work-dir), or start a new run that only '
        'loads weights: --cfg-options load_from=PATH.')


def check_schedule(cfg: Config) -> None:
    """Every parameter scheduler ends after it begins within the run's
    length (mmengine's own error is a traceback: "end should be larger than
    begin"), e.g. a warm-up + cosine schedule run with max_epochs=1."""
    train_cfg = cfg.get('train_cfg') or {}
    by_epoch = train_cfg.get('by_epoch', 'max_epochs' in train_cfg)
    length = train_cfg.get('max_epochs' if by_epoch else 'max_iters')
    schedulers = cfg.get('param_scheduler') or []
    if isinstance(schedulers, dict):
        schedulers = [schedulers]
    if not isinstance(length, int):
        return
    unit, key = (('epochs', 'max_epochs') if by_epoch else
                 ('iterations', 'max_iters'))
    for i, sched in enumerate(schedulers):
        if not isinstance(sched, dict) or \
                sched.get('by_epoch', True) != bool(by_epoch):
            continue
        begin, end = sched.get('begin', 0), sched.get('end', length)
        if isinstance(begin, int) and isinstance(end, int) and end <= begin:
            raise PreflightError(
                f'param_scheduler[{i}] ({sched.get("type")}) runs from '
                f'{unit[:-1]} {begin} to {end}, but it must end after it '
                f'begins; the run has train_cfg.{key}={length}.\n  Fix: '
                f'train for more than {begin} {unit}, or give the run a '
                'schedule that fits it (e.g. --cfg-options param_scheduler'
                f'=[] for a constant learning rate).')


def check_testable(cfg: Config) -> None:
    """A config to test has a test loader, loop and evaluator."""
    missing = [k for k in ('test_dataloader', 'test_cfg', 'test_evaluator')
               if cfg.get(k) is None]
    if missing:
        raise PreflightError(
            f'the config has no {" or ".join(missing)}: it evaluates nothing '
            '(IE-KD stage 1, for one, trains only the teacher\'s auto-encoder'
            ' and has no accuracy to test).\n  Fix: test the run of a config '
            'that trains a classifier (IE-KD: stage 2), or give this one a '
            'test_dataloader, test_cfg and test_evaluator.')


def preflight(cfg: Config, mode: str = 'train') -> None:
    """Run every check for ``mode`` ('train' or 'test')."""
    if mode == 'train':
        check_schedule(cfg)
        check_data(cfg, ('train_dataloader', 'val_dataloader'))
        check_teacher_ckpt(cfg)
        check_method_files(cfg)
        check_pairs(cfg)
    else:
        check_testable(cfg)
        check_data(cfg, ('test_dataloader',))
