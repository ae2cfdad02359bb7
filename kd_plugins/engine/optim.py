"""One optimizer per parameter group of a method (same settings for all).

Methods with more than one update step per iteration (ATSC's teacher-bias
step, IE-DML's alternating students) define ``optim_param_groups()`` returning
``{name: [params]}`` and a ``train_step`` that uses ``optim_wrapper[name]``.

Config: ``optim_wrapper = dict(constructor='KDMultiOptimWrapperConstructor',
optimizer=dict(type='SGD', ...))`` (``type='AmpOptimWrapper'`` etc. apply to
every wrapper).

Distributed (world size > 1): the model must be wrapped by
:class:`~kd_plugins.engine.dist.KDModelWrapper` (``model_wrapper_cfg``), and
each wrapper becomes its gradient-synchronising variant
(``SyncGradOptimWrapper`` / ``SyncGradAmpOptimWrapper``).
"""
from __future__ import annotations

import copy

import torch.nn as nn
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.registry import (OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS,
                               OPTIMIZERS)

from ..errors import ConfigError


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
            raise ConfigError('KDMultiOptimWrapperConstructor does not '
                              'support paramwise_cfg.\n  Fix: remove '
                              'optim_wrapper.paramwise_cfg from the config.')
        self.cfg = optim_wrapper_cfg

    def __call__(self, model: nn.Module) -> OptimWrapperDict:
        from mmengine.dist import get_world_size
        from mmengine.model import is_model_wrapper

        from ..errors import ConfigError
        from .dist import SYNC_WRAPPER, KDModelWrapper
        wrapper = model
        model = model.module if is_model_wrapper(model) else model
        name = type(model).__name__
        if not hasattr(model, 'optim_param_groups'):
            raise ConfigError(f'{name} has a single update step; use a plain '
                              'optim_wrapper=dict(optimizer=...).')
        cfg = copy.deepcopy(self.cfg)
        if get_world_size() > 1:
            if not isinstance(wrapper, KDModelWrapper):
                raise ConfigError(
                    f'{name} makes several updates per iteration; in a '
                    'distributed run it is wrapped by '
                    f'{type(wrapper).__name__}'
                    ', which would not synchronise them.\n  Fix: add '
                    "model_wrapper_cfg = dict(type='KDModelWrapper') to the "
                    'config.')
            kind = cfg.get('type', 'OptimWrapper')
            if kind not in SYNC_WRAPPER:
                raise ConfigError(
                    f'optim_wrapper.type={kind!r} has no gradient-'
                    f'synchronising variant for distributed {name}; use one '
                    f'of {sorted(SYNC_WRAPPER)}.')
            cfg['type'] = SYNC_WRAPPER[kind]
        groups = model.optim_param_groups()
        return OptimWrapperDict(**{
            key: build_optim_wrapper_for(cfg, params)
            for key, params in groups.items()})
