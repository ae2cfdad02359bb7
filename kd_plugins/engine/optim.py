"""One optimizer per parameter group of a method (same settings for all).

Methods with more than one update step per iteration (ATSC's teacher-bias
step, IE-DML's alternating students) define ``optim_param_groups()`` returning
``{name: [params]}`` and a ``train_step`` that uses ``optim_wrapper[name]``.

Config: ``optim_wrapper = dict(constructor='KDMultiOptimWrapperConstructor',
optimizer=dict(type='SGD', ...))`` (``type='AmpOptimWrapper'`` etc. apply to
every wrapper).
"""
from __future__ import annotations

import copy

import torch.nn as nn
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.registry import (OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS,
                               OPTIMIZERS)


def build_optim_wrapper_for(cfg: dict, params: list) -> OptimWrapper:
    """An OptimWrapper of ``cfg`` (wrapper settings + ``optimizer``)."""
    wrapper_cfg = copy.deepcopy(cfg)
    optim_cfg = wrapper_cfg.pop('optimizer')
    wrapper_cfg.setdefault('type', 'OptimWrapper')
    optimizer = OPTIMIZERS.build(dict(optim_cfg, params=params))
    return OPTIM_WRAPPERS.build(dict(wrapper_cfg, optimizer=optimizer))


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class KDMultiOptimWrapperConstructor:
    """Build ``OptimWrapperDict`` from ``model.optim_param_groups()``."""

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg=None):
        if paramwise_cfg:
            raise ValueError('KDMultiOptimWrapperConstructor does not '
                             'support paramwise_cfg.')
        self.cfg = optim_wrapper_cfg

    def __call__(self, model: nn.Module) -> OptimWrapperDict:
        from mmengine.dist import get_world_size
        from mmengine.model import is_model_wrapper
        model = model.module if is_model_wrapper(model) else model
        name = type(model).__name__
        if not hasattr(model, 'optim_param_groups'):
            raise TypeError(f'{name} has a single update step; use a plain '
                            'optim_wrapper=dict(optimizer=...).')
        if get_world_size() > 1:
            raise NotImplementedError(
                f'{name} has several update steps per iteration, which are '
                'not synchronised across processes yet: train it on one GPU '
                '(one process) for now.')
        groups = model.optim_param_groups()
        return OptimWrapperDict(**{
            key: build_optim_wrapper_for(self.cfg, params)
            for key, params in groups.items()})
