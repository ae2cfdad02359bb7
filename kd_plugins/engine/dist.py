"""Data-parallel training for methods with their own ``train_step``.

mmengine's ``MMDistributedDataParallel`` runs one forward/backward/step per
iteration and never calls the model's own ``train_step``. The frozen-teacher
methods (KD, AEKT, IE-KD, KD layer) fit that and use it unchanged: the teacher
has no trainable parameter, so DDP never synchronises (or even sees) its
gradients. ATSC (teacher step + teacher-bias step) and IE-DML (two students
updated in turn) make several updates per iteration, so they use:

* :class:`KDModelWrapper` (``model_wrapper_cfg=dict(type='KDModelWrapper')``):
  broadcasts every parameter and buffer from rank 0 once, so all replicas
  start identical, then calls the method's own ``train_step``; before each
  step it broadcasts rank 0's batch-norm statistics (what DDP does with
  ``broadcast_buffers=True``).
* :class:`SyncGradOptimWrapper` / :class:`SyncGradAmpOptimWrapper`: before
  every optimizer step, the gradients of that optimizer's parameters are
  averaged over all ranks (one flattened all-reduce per dtype), so each update
  is the same on every rank and equals a one-process update on the global
  batch. ``KDMultiOptimWrapperConstructor`` picks them when world size > 1.

:class:`ReplicaCheckHook` verifies the result: it hashes every parameter and
persistent buffer on each rank and stops the run if the replicas differ.
"""
from __future__ import annotations

import hashlib
import socket

import torch
import torch.distributed as torch_dist
import torch.nn as nn
from mmengine.dist import (all_gather_object, get_rank, get_world_size,
                           is_distributed)
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import MODEL_WRAPPERS, OPTIM_WRAPPERS
from mmpretrain.registry import HOOKS
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import KDPluginsError


def _coalesced(tensors, op) -> None:
    """Apply ``op`` to each same-dtype/device group as one flat tensor."""
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
    groups: dict = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    for group in groups.values():
        flat = _flatten_dense_tensors(group)
        op(flat)
        for t, synced in zip(group, _unflatten_dense_tensors(flat, group)):
            t.copy_(synced)


def all_reduce_grads(params) -> None:
    """Average ``.grad`` of ``params`` over all ranks (in place)."""
    world = get_world_size()
    grads = [p.grad for p in params if p.grad is not None]
    if world == 1 or not grads:
        return

    def mean(flat):
        torch_dist.all_reduce(flat)
        flat.div_(world)

    _coalesced(grads, mean)


def broadcast_tensors(tensors, src: int = 0) -> None:
    if get_world_size() > 1 and tensors:
        _coalesced([t.data for t in tensors],
                   lambda flat: torch_dist.broadcast(flat, src))


class _SyncGradMixin:
    """Average this optimizer's gradients over ranks before each step."""

    def step(self, **kwargs) -> None:
        all_reduce_grads(p for g in self.optimizer.param_groups
                         for p in g['params'])
        super().step(**kwargs)


@OPTIM_WRAPPERS.register_module()
class SyncGradOptimWrapper(_SyncGradMixin, OptimWrapper):
    """``OptimWrapper`` whose ``step`` first all-reduces the gradients."""


@OPTIM_WRAPPERS.register_module()
class SyncGradAmpOptimWrapper(_SyncGradMixin, AmpOptimWrapper):
    """``AmpOptimWrapper`` whose ``step`` first all-reduces the gradients
    (before unscaling and clipping: the reduction is linear)."""


SYNC_WRAPPER = {'OptimWrapper': 'SyncGradOptimWrapper',
                'AmpOptimWrapper': 'SyncGradAmpOptimWrapper'}


@MODEL_WRAPPERS.register_module()
class KDModelWrapper(BaseModel):
    """Data-parallel wrapper that calls the method's own ``train_step``.

    Args:
        module: the algorithm (must define ``train_step`` that only updates
            parameters through ``optim_wrapper[...]``).
        broadcast_buffers: broadcast rank 0's batch-norm statistics before
            every step (as DDP does).
        **kwargs: accepted and ignored (DDP options such as
            ``find_unused_parameters`` shared with other configs).
    """

    def __init__(self, module: nn.Module, broadcast_buffers: bool = True,
                 **kwargs) -> None:
        super().__init__()
        self.module = module
        self.broadcast_buffers = broadcast_buffers
        # identical start on every rank, whatever each rank initialised
        broadcast_tensors(list(module.parameters()) + list(module.buffers()))
        self._bn_buffers = [b for m in module.modules()
                            if isinstance(m, _BatchNorm)
                            for b in m.buffers()]

    @property
    def data_preprocessor(self):
        return self.module.data_preprocessor

    def train_step(self, data, optim_wrapper):
        if self.broadcast_buffers:
            broadcast_tensors(self._bn_buffers)
        return self.module.train_step(data, optim_wrapper)

    def val_step(self, data):
        return self.module.val_step(data)

    def test_step(self, data):
        return self.module.test_step(data)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def replica_digests(model: nn.Module) -> list[tuple[str, str]]:
    """``(name, sha1)`` of every parameter and persistent buffer, except
    batch-norm statistics (each rank updates those on its own data between
    broadcasts)."""
    bn = {f'{n}.{b}' if n else b for n, m in model.named_modules()
          if isinstance(m, _BatchNorm) for b, _ in m.named_buffers()}
    out = []
    for name, t in model.state_dict().items():
        if name in bn or not torch.is_tensor(t):
            continue
        data = t.detach().contiguous().cpu()
        if data.dtype == torch.bfloat16:
            data = data.view(torch.int16)
        out.append((name, hashlib.sha1(data.numpy().tobytes()).hexdigest()))
    return out


@HOOKS.register_module()
class ReplicaCheckHook(Hook):
    """Stop a distributed run whose model replicas differ across ranks.

    Every ``interval`` iterations (``None``: at every epoch end only) each
    rank hashes its parameters and persistent buffers (ATSC's anchors, the
    teacher, ...); rank 0 compares them and logs which ranks took part. A
    no-op in one-process runs.
    """

    priority = 'LOW'

    def __init__(self, interval: int | None = None) -> None:
        self.interval = interval

    def _check(self, runner, where: str) -> None:
        if not is_distributed() or get_world_size() == 1:
            return
        from mmengine.model import is_model_wrapper
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        mine = (get_rank(), socket.gethostname(), replica_digests(model))
        everyone = all_gather_object(mine)
        ref = dict(everyone[0][2])
        for rank, host, digests in everyone[1:]:
            bad = [n for n, d in digests if ref.get(n) != d]
            if bad or len(digests) != len(ref):
                raise KDPluginsError(
                    f'model replicas differ at {where}: rank {rank} ({host}) '
                    f'disagrees with rank 0 on {len(bad)} tensors, e.g. '
                    f'{bad[:5]}. A parameter was updated without '
                    'synchronisation; set model_wrapper_cfg=dict(type='
                    "'KDModelWrapper') for methods with their own train_step"
                    ' (ATSC, IE-DML).')
        runner.logger.info(
            f'[ReplicaCheckHook] {where}: {len(ref)} tensors identical on '
            f'{len(everyone)} ranks (' + ', '.join(
                f'rank {r}@{h}' for r, h, _ in everyone) + ')')

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if self.interval and self.every_n_train_iters(runner, self.interval):
            self._check(runner, f'iteration {runner.iter + 1}')

    def after_train_epoch(self, runner) -> None:
        self._check(runner, f'end of epoch {runner.epoch + 1}')
