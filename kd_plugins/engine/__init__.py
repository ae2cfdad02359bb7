from .dist import (KDModelWrapper, ReplicaCheckHook, SyncGradAmpOptimWrapper,
                   SyncGradOptimWrapper)
from .hooks import EpochSeedHook, NonFiniteLossHook, StudentCheckpointHook
from .optim import KDMultiOptimWrapperConstructor
from .preflight import PreflightError, preflight

__all__ = ['EpochSeedHook', 'KDModelWrapper', 'KDMultiOptimWrapperConstructor',
           'NonFiniteLossHook', 'PreflightError', 'ReplicaCheckHook',
           'StudentCheckpointHook', 'SyncGradAmpOptimWrapper',
           'SyncGradOptimWrapper', 'preflight']
