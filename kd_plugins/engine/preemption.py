"""Preemption-safe training: stop on SIGTERM / SIGUSR1 with a checkpoint at
the current iteration, and resume from it mid-epoch, bit for bit.

Everything here is declared in the config, so mmpretrain's own
``tools/train.py``, ``mim train``, ``dist_train.sh`` / ``slurm_train.sh`` and
kd_plugins' ``tools/train.py`` run the same thing:

* ``train_cfg = dict(type='ResumableEpochBasedTrainLoop', ...)`` (the
  ``configs/_base_`` schedules and the configs ``tools/distill_config.py``
  writes) or ``'ResumableIterBasedTrainLoop'``: kd_plugins' training loops.
  They build the training set as the config asks (``model.teacher_cache``:
  the stored views and logits of a teacher cache; ``data_errors``: the
  bad-samples policy) and resume mid-epoch;
* ``custom_hooks`` with ``PreemptionHook`` (``configs/_base_/
  default_runtime.py``).

A cluster ends a job with a signal some seconds before it kills it (slurm:
SIGTERM on preemption, ``scancel`` or ``scontrol requeue``; SIGUSR1 when the
job asked for ``--signal=USR1@120``; torchrun forwards its own SIGTERM to every
rank). :class:`PreemptionHook` catches it, lets every rank finish its
iteration, agrees across ranks on the iteration to stop at, writes
``preempt_iter_N.pth`` (atomic; ``last_checkpoint`` names it; the student
copy beside it) and ends the process with one line and the exit status of a
process ended by that signal (:class:`TrainingPreempted`, a ``SystemExit``:
no traceback, whichever script runs the runner).

``--resume`` then continues from that checkpoint: the resumable loops
(:class:`ResumableEpochBasedTrainLoop`, :class:`ResumableIterBasedTrainLoop`)
replay the batches of the interrupted epoch that were already trained (they
load them, so that the data pipeline's random draws and the sampler order are
the same) and then restore the python / numpy / torch RNG states saved with
the checkpoint, one per rank. The weights at the end equal an uninterrupted
run's. Validation runs with the RNG states saved and restored around it, so
it never shifts the training's random stream.
"""
from __future__ import annotations

import os
import os.path as osp
import random
import signal
import subprocess
import sys
import threading

import numpy as np
import torch
from mmengine.dist import (all_gather_object, all_reduce, barrier, get_rank,
                           get_world_size, is_main_process)
from mmengine.hooks import Hook
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from mmpretrain.registry import HOOKS, LOOPS

from ..datasets.data_errors import guard_loader
from ..datasets.sample_seeds import SampleSeededSampler, seed_loader
from ..errors import ConfigError

RNG_KEY = 'kd_rng'  # checkpoint['meta'][RNG_KEY]: one state per rank
PREFIX = 'preempt_iter_'


class TrainingPreempted(SystemExit):
    """The run stopped on a signal after writing a checkpoint to resume.

    A ``SystemExit`` whose ``code`` is 128 + the signal number, as a shell
    reports a process ended by that signal (143 for SIGTERM, 138 for
    SIGUSR1): whatever script runs the runner (mmpretrain's tools/train.py,
    ``mim train``, a user's own) ends with that status and no traceback.
    The message (``str(err)``) has been printed by the hook already.
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(128 + signum)
        self.message = message
        self.exit_code = 128 + signum

    def __str__(self) -> str:
        return self.message


# -- RNG states that load with weights_only=True (tensors, ints, floats) ----
def get_rng_state() -> dict:
    """The python, numpy and torch (CPU and CUDA) RNG states of this
    process, as tensors and numbers (no numpy objects in the checkpoint)."""
    version, py_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = dict(
        python=dict(version=version, state=torch.tensor(py_state,
                                                        dtype=torch.int64),
                    gauss=gauss),
        numpy=dict(kind=kind, keys=torch.from_numpy(keys.astype(np.int64)),
                   pos=int(pos), has_gauss=int(has_gauss),
                   cached=float(cached)),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    py = state['python']
    random.setstate((py['version'], tuple(py['state'].tolist()),
                     py['gauss']))
    n = state['numpy']
    np.random.set_state((n['kind'], n['keys'].numpy().astype(np.uint32),
                         n['pos'], n['has_gauss'], n['cached']))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def _own_rng_state(states, runner) -> dict | None:
    """This rank's entry of a checkpoint's per-rank RNG states."""
    if not states:
        return None
    if len(states) != get_world_size():
        runner.logger.warning(
            f'kd_plugins: the checkpoint holds the RNG states of '
            f'{len(states)} processes and this run has {get_world_size()}; '
            'the run continues, but its random draws (augmentations, '
            'dropout) will not repeat the interrupted run\'s.')
        return None
    return states[get_rank()]


def train_loader(runner, dataloader):
    """The training data loader config as the run's config asks for it.

    * ``model.teacher_cache`` set (the built model's ``teacher_cache``): the
      train set is wrapped in ``KDCachedViews`` (the teacher's stored views
      and logits; :mod:`kd_plugins.teacher_cache.dataset`);
    * the config's ``data_errors`` policy (:class:`DataErrorGuard`, so a
      skipped sample is replaced by a readable one);
    * per-sample random draws (:mod:`kd_plugins.datasets.sample_seeds`,
      outermost): a sample's augmentation and cached view come from (run
      seed, epoch, sample index), whichever worker or rank loads it, so a
      resume skips the trained part of an epoch in the sampler.

    A built loader (a ``DataLoader`` object) is returned as it is. The
    config the run dumps stays the one the user wrote.
    """
    if not isinstance(dataloader, dict) or 'dataset' not in dataloader:
        return dataloader
    model = runner.model
    model = getattr(model, 'module', model)  # DDP / mmengine wrappers
    cache = getattr(model, 'teacher_cache', None)
    if cache:
        from ..teacher_cache.dataset import cached_train_loader
        dataloader = cached_train_loader(dataloader, cache)
    dataloader = guard_loader(dataloader, runner.cfg.get('data_errors',
                                                         None),
                              runner.work_dir)
    return seed_loader(dataloader, runner.seed)


def _seeded_sampler(dataloader):
    """The loader's :class:`SampleSeededSampler` when a resume can skip
    samples in it (a plain batch size), else None (batches are replayed)."""
    sampler = getattr(dataloader, 'sampler', None)
    if isinstance(sampler, SampleSeededSampler) and getattr(
            dataloader, 'batch_size', None):
        return sampler
    return None


class _ResumeMixin:
    """What both resumable loops share: the checkpoint's per-rank RNG
    states, restored after the replayed batches (set by
    PreemptionHook.after_load_checkpoint; this rank's entry is picked only
    when batches were replayed, so an epoch-end checkpoint of a DDP run,
    which holds rank 0's state only, needs none and warns of nothing)."""

    resume_rng: list | None = None

    def _restore_rng(self) -> None:
        own = _own_rng_state(self.resume_rng, self.runner)
        self.resume_rng = None
        if own is not None:
            set_rng_state(own)


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(_ResumeMixin, EpochBasedTrainLoop):
    """mmengine's epoch loop that resumes mid-epoch, and builds its training
    set as the config asks (a teacher cache's views, the ``data_errors``
    policy: :func:`train_loader`).

    A checkpoint written at iteration ``i`` of epoch ``e`` (0-based; ``i``
    counted from the start of training) resumes at batch
    ``k = i - e * len(dataloader)`` of epoch ``e``: batches ``0..k-1`` are
    loaded and dropped (same sampler order, same augmentation draws), the
    RNG states of the checkpoint are restored, and training goes on with
    batch ``k``. A checkpoint written at an epoch end (``k = 0``) resumes as
    mmengine's loop does. Arguments: those of ``EpochBasedTrainLoop``;
    ``by_epoch`` (from a plain ``train_cfg``) is accepted and must be True.
    """

    def __init__(self, runner, dataloader, max_epochs: int,
                 by_epoch: bool = True, **kwargs) -> None:
        if not by_epoch:
            raise ConfigError(
                'ResumableEpochBasedTrainLoop got by_epoch=False.\n  Fix: '
                "use train_cfg=dict(type='ResumableIterBasedTrainLoop', "
                'max_iters=...) for an iteration-based schedule.')
        super().__init__(runner, train_loader(runner, dataloader), max_epochs,
                         **kwargs)

    def run_epoch(self) -> None:
        """One epoch, from the batch where a mid-epoch checkpoint stopped."""
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        n = len(self.dataloader)
        skip = self._iter - self._epoch * n
        sampler = _seeded_sampler(self.dataloader)
        if skip > 0 and sampler is not None:
            # the draws are the samples' own: nothing to load for the skip
            sampler.skip(skip * self.dataloader.batch_size)
            self.runner.logger.info(
                f'kd_plugins: resuming epoch {self._epoch + 1} at batch '
                f'{skip + 1} of {n}: the sampler skips the {skip} batches '
                'already trained (nothing is loaded for them)')
            batches = iter(self.dataloader)
            self._restore_rng()
        elif skip > 0:
            batches = iter(self.dataloader)
            self.runner.logger.info(
                f'kd_plugins: resuming epoch {self._epoch + 1} at batch '
                f'{skip + 1} of {n}: replaying the {skip} batches already '
                'trained (loaded, not trained: this loader draws from its '
                'workers\' history)')
            for _ in range(skip):
                next(batches)
            self._restore_rng()
        else:
            batches = iter(self.dataloader)
            self.resume_rng = None  # EpochSeedHook seeded this epoch
        for idx, data_batch in enumerate(batches, start=max(skip, 0)):
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1


@LOOPS.register_module()
class ResumableIterBasedTrainLoop(_ResumeMixin, IterBasedTrainLoop):
    """mmengine's iteration loop, with the RNG states of the checkpoint
    restored after it has advanced the data loader past the trained
    iterations (mmengine's own loop advances it but leaves the RNGs as they
    were at start-up), and the training set built as the config asks
    (:func:`train_loader`). ``by_epoch`` is accepted and must be False."""

    def __init__(self, runner, dataloader, max_iters: int,
                 by_epoch: bool = False, **kwargs) -> None:
        if by_epoch:
            raise ConfigError(
                'ResumableIterBasedTrainLoop got by_epoch=True.\n  Fix: use '
                "train_cfg=dict(type='ResumableEpochBasedTrainLoop', "
                'max_epochs=...) for an epoch-based schedule.')
        super().__init__(runner, train_loader(runner, dataloader), max_iters,
                         **kwargs)

    def run(self):
        """mmengine 0.10's ``IterBasedTrainLoop.run`` plus the RNG restore
        after the data loader is advanced."""
        self.runner.call_hook('before_train')
        self.runner.call_hook('before_train_epoch')
        if self._iter > 0:
            self._advance()
            self._restore_rng()
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            data_batch = next(self.dataloader_iterator)
            self.run_iter(data_batch)
            self._decide_current_val_interval()
            if (self.runner.val_loop is not None
                    and self._iter >= self.val_begin
                    and (self._iter % self.val_interval == 0
                         or self._iter == self._max_iters)):
                self.runner.val_loop.run()
        self.runner.call_hook('after_train_epoch')
        self.runner.call_hook('after_train')
        return self.runner.model

    def _advance(self) -> None:
        """Put the data loader where iteration ``self._iter`` left it: with
        per-sample draws the sampler starts at that pass and position
        (nothing loaded); otherwise the trained batches are loaded again."""
        from mmengine.dataset import InfiniteSampler
        loader = self.dataloader
        sampler = _seeded_sampler(loader)
        if sampler is None:
            self.runner.logger.info(
                f'kd_plugins: resuming at iteration {self._iter + 1}: '
                f'replaying the {self._iter} batches already trained '
                '(loaded, not trained)')
            for _ in range(self._iter):
                next(self.dataloader_iterator)
            return
        if isinstance(sampler.sampler, InfiniteSampler):
            sampler.skip(self._iter * loader.batch_size)
        else:  # mmengine restarts a finite loader at each pass
            epoch, batch = divmod(self._iter, len(loader))
            self.dataloader_iterator._epoch = epoch
            sampler.set_epoch(epoch)
            sampler.skip(batch * loader.batch_size)
        self.dataloader_iterator._iterator = iter(loader)
        self.runner.logger.info(
            f'kd_plugins: resuming at iteration {self._iter + 1}: the sampler '
            f'skips the {self._iter} batches already trained (nothing is '
            'loaded for them)')


def resumable_train_cfg(train_cfg: dict) -> dict:
    """``train_cfg`` with mmengine's default loops replaced by the resumable
    ones (a custom loop type is left as it is). ``tools/distill_config.py``
    writes its configs' ``train_cfg`` with it."""
    cfg = dict(train_cfg)
    kind = cfg.pop('type', None)
    if kind is None:
        by_epoch = cfg.pop('by_epoch', True)  # mmengine: type or by_epoch
        kind = ('ResumableEpochBasedTrainLoop' if by_epoch
                else 'ResumableIterBasedTrainLoop')
    elif kind in ('EpochBasedTrainLoop', 'mmengine.EpochBasedTrainLoop'):
        kind = 'ResumableEpochBasedTrainLoop'
    elif kind in ('IterBasedTrainLoop', 'mmengine.IterBasedTrainLoop'):
        kind = 'ResumableIterBasedTrainLoop'
    cfg = dict(type=kind, **cfg)
    return cfg


def _close_process_group() -> None:
    """Shut the process group down before the process exits (mmengine
    leaves it open; a gloo group whose threads are still alive when a rank
    exits can abort that rank: "terminate called without an active
    exception")."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@HOOKS.register_module()
class PreemptionHook(Hook):
    """Stop on a signal with a checkpoint at the current iteration.

    - On each of ``signals`` (default SIGTERM and SIGUSR1) the handler only
      records the signal; the iteration in progress finishes.
    - After every iteration the ranks agree (one all-reduce of one number)
      whether any of them got a signal, so all stop at the same iteration.
    - They write ``preempt_iter_N.pth`` (N = iterations done) through the
      runner (atomic; optimizer, schedulers, message hub and every rank's RNG
      state), point ``last_checkpoint`` at it, write its student copy, and
      print one line (rank 0) and end the process with
      :class:`TrainingPreempted` (exit status 128 + the signal, no
      traceback).
    - Under slurm, on SIGUSR1 (the signal of ``--signal=USR1@SECONDS``) rank
      0 then runs ``scontrol requeue $SLURM_JOB_ID`` (``requeue=True``): the
      job comes back and its restart resumes. SIGTERM is not requeued by the
      hook: slurm's preemption requeues a ``--requeue`` job itself, and
      ``scancel`` means stop.
    - A preemption checkpoint is deleted once a later regular checkpoint
      supersedes it.

    Every checkpoint carries RNG states: a preemption checkpoint and an
    iteration-based one those of all ranks (so an iteration-based run
    resumes bit for bit as well), an epoch-end one rank 0's (EpochSeedHook
    re-seeds every epoch); validation is RNG-neutral (states saved before
    it, restored after it).

    Args:
        signals: names of the signals that stop the run.
        requeue: requeue the slurm job after a SIGUSR1 stop.
    """

    # after the scheduler step (LOW, registered first), before the checkpoint
    # hooks (VERY_LOW, LOWEST): the RNG states of a due save are gathered
    priority = 'LOW'

    def __init__(self, signals=('SIGTERM', 'SIGUSR1'),
                 requeue: bool = True) -> None:
        self.signals = []
        for name in signals:
            if not hasattr(signal, name):
                raise ConfigError(
                    f'PreemptionHook: unknown signal {name!r}.\n  Fix: use '
                    'signal names such as SIGTERM, SIGUSR1, SIGUSR2.')
            self.signals.append(getattr(signal, name))
        self.requeue = requeue
        self._got = 0  # the signal number received (0: none)
        self._old = {}
        self._val_rng = None
        self._saved = False  # a checkpoint was written since the last look
        self._pending_rng = None  # every rank's state, for the next save

    # -- signals --------------------------------------------------------
    def _handler(self, signum, frame) -> None:
        if not self._got:
            self._got = signum
            # no logging here: a handler can run inside the logger's lock
            os.write(2, (f'kd_plugins: {signal.Signals(signum).name} received'
                         f' (rank {get_rank()}); stopping after this '
                         'iteration with a checkpoint\n').encode())

    def before_train(self, runner) -> None:
        self._got = 0
        if threading.current_thread() is not threading.main_thread():
            runner.logger.warning('kd_plugins: PreemptionHook runs outside '
                                  'the main thread; signals are not caught.')
            return
        for s in self.signals:
            self._old[s] = signal.signal(s, self._handler)

    def after_train(self, runner) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}

    # -- RNG states in checkpoints, RNG-neutral validation -----------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # runs on rank 0 only (Runner.save_checkpoint is master_only): every
        # rank's state when after_train_iter gathered them for this save,
        # else rank 0's (enough in one process, and at epoch ends, where
        # EpochSeedHook re-seeds anyway)
        states = self._pending_rng or [get_rng_state()]
        self._pending_rng = None
        checkpoint.setdefault('meta', {})[RNG_KEY] = states
        self._saved = True

    @staticmethod
    def _iter_save_due(runner) -> bool:
        """The checkpoint hook saves at the end of this iteration."""
        from mmengine.hooks import CheckpointHook
        for hook in runner.hooks:
            if isinstance(hook, CheckpointHook) and not hook.by_epoch:
                return hook.every_n_train_iters(
                    runner, hook.interval, hook.save_begin) or (
                    hook.save_last and hook.is_last_train_iter(runner))
        return False

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.get('meta', {})
        loop = runner._train_loop  # not the property: it would build one
        if not getattr(runner, '_resume', False) or not isinstance(
                loop, (EpochBasedTrainLoop, IterBasedTrainLoop)):
            return  # weights only (load_from, test), or a loop of its own
        if isinstance(loop, EpochBasedTrainLoop):
            done = meta.get('iter', 0) - meta.get('epoch', 0) * len(
                loop.dataloader)
            if done > 0 and not isinstance(loop, _ResumeMixin):
                raise ConfigError(
                    f'this checkpoint was written mid-epoch (epoch '
                    f'{meta.get("epoch", 0) + 1}, after batch {done}) by a '
                    'preempted run, and mmengine\'s EpochBasedTrainLoop '
                    'would restart that epoch from its first batch.\n  Fix: '
                    "use kd_plugins' loop in the config: train_cfg = dict("
                    "type='ResumableEpochBasedTrainLoop', max_epochs=..., "
                    'val_interval=...) without by_epoch (the configs/_base_ '
                    'schedules have it).')
        if isinstance(loop, _ResumeMixin):
            loop.resume_rng = meta.get(RNG_KEY)

    def before_val(self, runner) -> None:
        self._val_rng = get_rng_state()

    def after_val(self, runner) -> None:
        if self._val_rng is not None:
            set_rng_state(self._val_rng)
            self._val_rng = None

    # -- the stop -------------------------------------------------------
    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        flag = torch.tensor([float(self._got)])
        if get_world_size() > 1:
            all_reduce(flag, op='max')  # any rank signalled: all stop here
        signum = int(flag.item())
        if signum or (get_world_size() > 1 and self._iter_save_due(runner)):
            # a collective, so here (all ranks), not in the rank-0-only save
            self._pending_rng = all_gather_object(get_rng_state())
        if signum:
            self._stop(runner, signum, batch_idx)
        self._drop_superseded(runner)

    def after_train_epoch(self, runner) -> None:
        self._drop_superseded(runner)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._drop_superseded(runner)

    def _drop_superseded(self, runner) -> None:
        """Remove preemption checkpoints once ``last_checkpoint`` names a
        later, regular one (their student copies follow)."""
        if not self._saved:
            return
        self._saved = False
        if not is_main_process() or not runner.work_dir:
            return
        last = osp.join(runner.work_dir, 'last_checkpoint')
        if not osp.isfile(last):
            return
        with open(last) as f:
            newest = osp.basename(f.read().strip())
        if newest.startswith(PREFIX):
            return
        for name in os.listdir(runner.work_dir):
            if name.startswith(PREFIX) or name.startswith(
                    'student_' + PREFIX):
                os.remove(osp.join(runner.work_dir, name))

    def _stop(self, runner, signum: int, batch_idx: int) -> None:
        from ..utils.checkpoint import atomic_write
        from .hooks import StudentCheckpointHook
        name = signal.Signals(signum).name
        done = runner.iter + 1  # this iteration is finished
        filename = f'{PREFIX}{done}.pth'
        where = (f'iteration {done}' if not isinstance(
            runner.train_loop, EpochBasedTrainLoop) else
            f'iteration {done} (epoch {runner.epoch + 1}, batch '
            f'{batch_idx + 1} of {len(runner.train_loop.dataloader)})')
        runner.logger.info(f'kd_plugins: {name}: saving {filename} at '
                           f'{where}')
        old = [n for n in os.listdir(runner.work_dir)
               if n.startswith(PREFIX)] if is_main_process() else []
        runner.save_checkpoint(runner.work_dir, filename, by_epoch=False)
        path = osp.join(runner.work_dir, filename)
        if is_main_process():
            atomic_write(path.encode(),
                         osp.join(runner.work_dir, 'last_checkpoint'))
            for n in old:  # an earlier preemption's checkpoint
                if n != filename:
                    os.remove(osp.join(runner.work_dir, n))
        for hook in runner.hooks:
            if isinstance(hook, StudentCheckpointHook):
                hook._sync(runner)  # student_preempt_iter_N.pth
        barrier()
        requeued = ''
        if (signum == getattr(signal, 'SIGUSR1', None) and self.requeue
                and os.environ.get('SLURM_JOB_ID')):
            requeued = self._requeue(runner)
        message = (
            f'training stopped by {name} after {where}; checkpoint {path} '
            f'(last_checkpoint names it).{requeued} Resume: the same '
            'training command with --resume continues from that batch.')
        if is_main_process():
            print(f'kd_plugins: {message}', file=sys.stderr, flush=True)
        _close_process_group()  # every rank stopped at the same iteration
        raise TrainingPreempted(message, signum)

    @staticmethod
    def _requeue(runner) -> str:
        if not is_main_process():
            return ' Rank 0 requeues the slurm job.'
        job = os.environ['SLURM_JOB_ID']
        try:
            proc = subprocess.run(['scontrol', 'requeue', job],
                                  capture_output=True, text=True,
                                  timeout=60)
        except (OSError, subprocess.SubprocessError) as err:
            return f' Requeue of slurm job {job} failed: {err}.'
        if proc.returncode:
            return (f' Requeue of slurm job {job} failed: '
                    f'{(proc.stderr or proc.stdout).strip()} (submit it with'
                    ' sbatch --requeue).')
        runner.logger.info(f'kd_plugins: requeued slurm job {job}')
        return f' Slurm job {job} was requeued; its restart resumes.'
