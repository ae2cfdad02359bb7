"""Training hooks of kd_plugins (registered in mmpretrain's HOOKS)."""
from __future__ import annotations

import random

import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS

from ..errors import ConfigError


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A 32-bit seed that differs per (seed, epoch, rank)."""
    return (seed * 1_000_003 + epoch * 10_007 + rank) % (2**32)


@HOOKS.register_module()
class EpochSeedHook(Hook):
    """Re-seed python, numpy and torch at the start of every epoch.

    mmengine seeds the RNGs once, at start-up, so a run resumed at epoch k
    draws different augmentations (and dropout masks) than the uninterrupted
    run did. Seeding from ``(seed, epoch, rank)`` makes every epoch's random
    stream independent of what happened before it, hence ``--resume``
    reproduces the uninterrupted run exactly (CPU, deterministic kernels,
    ``num_workers=0`` or workers seeded by mmengine's ``worker_init_fn``).
    """

    priority = 'VERY_HIGH'

    def before_train_epoch(self, runner) -> None:
        base = runner.seed if runner.seed is not None else 0
        seed = epoch_seed(int(base), runner.epoch, get_rank())
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop training at the first NaN/inf loss, before anything is saved.

    Runs after every training iteration, ahead of the checkpoint hook, so the
    weights of a diverged step are never written: ``last_checkpoint`` keeps
    pointing at the last good checkpoint. The error names the loss term that
    went non-finite first (in the order the model reports them, the total
    ``loss`` last), the iteration, and the checkpoint to resume from.

    Args:
        interval: check every ``interval`` iterations (1: every iteration;
            the check is one device-to-host copy of the logged losses, which
            the logger hook makes anyway).
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, interval: int = 1) -> None:
        if interval < 1:
            raise ConfigError(f'interval must be >= 1, got {interval}.')
        self.interval = interval

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if not outputs or not self.every_n_train_iters(runner, self.interval):
            return
        names = [k for k in outputs if 'loss' in k and k != 'loss']
        if 'loss' in outputs:
            names.append('loss')
        if not names:
            return
        flat = torch.stack([
            torch.as_tensor(outputs[k]).detach().float().mean().cpu()
            for k in names
        ])
        finite = torch.isfinite(flat)
        if bool(finite.all()):
            return
        from ..errors import NonFiniteLossError
        bad = [f'{n}={float(v)}' for n, v, ok in zip(names, flat, finite)
               if not ok]
        first = bad[0].split('=')[0]
        from mmengine.runner.checkpoint import find_latest_checkpoint
        last = find_latest_checkpoint(runner.work_dir) if runner.work_dir \
            else None
        resume = (f'the last good checkpoint is {last}; resume from it with '
                  f'--resume {last}' if last else
                  'no checkpoint was saved before it')
        raise NonFiniteLossError(
            f'loss term {first!r} became non-finite at iteration '
            f'{runner.iter + 1} (epoch {runner.epoch + 1}, batch '
            f'{batch_idx + 1}); non-finite terms: {", ".join(bad)}. '
            f'Training stopped before the next checkpoint; {resume}.\n'
            '  Fix: lower the learning rate or that loss\'s loss_weight, '
            'add gradient clipping (optim_wrapper.clip_grad='
            'dict(max_norm=5.0)), or use --amp bf16 instead of fp16.')


@HOOKS.register_module()
class StudentCheckpointHook(Hook):
    """Write a student-only checkpoint beside every checkpoint of a distiller.

    After each checkpoint save (regular and best), ``X.pth`` in the work dir
    gets ``student_X.pth``: plain mmpretrain keys plus what the method keeps
    at deployment (the same split as ``tools/export_student.py``), loadable
    with ``student.py`` (written once, in the work dir) by mmpretrain's
    ``init_model``, ``ImageClassificationInferencer`` and ``tools/test.py``.
    When the checkpoint hook deletes an old checkpoint, its student copy goes
    too. Only rank 0 writes; a run that is not a distiller, or one whose
    student is not trained (``student_trainable=False``, e.g. IE-KD stage 1,
    which trains only the teacher auto-encoder), is left alone.
    """

    priority = 'LOWEST'  # after CheckpointHook has saved

    def __init__(self, prefix: str = 'student_') -> None:
        self.prefix = prefix
        self._start = None
        self._saved = False  # a checkpoint was saved since the last sync

    def before_train(self, runner) -> None:
        import time
        self._start = time.time() - 1.0

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        self._saved = True

    def _sync(self, runner) -> None:
        """Runs at the end of an iteration / epoch / validation, and only
        when the checkpoint hook saved (and maybe rotated) a file."""
        import glob
        import os
        import os.path as osp

        from mmengine.dist import is_main_process

        from ..export import write_student
        from ..utils.checkpoint import load_local_checkpoint
        if not self._saved or self._start is None:
            return
        self._saved = False
        model = runner.cfg.get('model')
        # distillers (and ATSC / IE-DML) keep their student in `architecture`
        if not is_main_process() or not (isinstance(model, dict)
                                         and 'architecture' in model):
            return
        if model.get('student_trainable', True) is False:
            return  # an untrained student is nothing to deploy
        wd = runner.work_dir
        ckpts = {osp.basename(p) for p in glob.glob(osp.join(wd, '*.pth'))
                 if not osp.basename(p).startswith(self.prefix)}
        for name in sorted(ckpts):
            src, dst = osp.join(wd, name), osp.join(wd, self.prefix + name)
            if osp.exists(dst) or osp.getmtime(src) < self._start:
                continue
            cfg_path = osp.join(wd, 'student.py')
            write_student(runner.cfg, load_local_checkpoint(src, 'cpu'),
                          None if osp.exists(cfg_path) else cfg_path, dst,
                          source=osp.abspath(src))
            runner.logger.info(f'[StudentCheckpointHook] {dst} (config: '
                               f'{cfg_path})')
        for path in glob.glob(osp.join(wd, self.prefix + '*.pth')):
            if osp.basename(path)[len(self.prefix):] not in ckpts:
                os.remove(path)  # its checkpoint was rotated out

    def after_train_epoch(self, runner) -> None:
        self._sync(runner)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        self._sync(runner)  # iteration-based checkpoints

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._sync(runner)  # the best checkpoint
