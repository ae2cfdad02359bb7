from .dist import (KDModelWrapper, ReplicaCheckHook, SyncGradAmpOptimWrapper,
                   SyncGradOptimWrapper)
from .hooks import EpochSeedHook, NonFiniteLossHook, StudentCheckpointHook
from .optim import KDMultiOptimWrapperConstructor
from .preemption import (PreemptionHook, ResumableEpochBasedTrainLoop,
                         ResumableIterBasedTrainLoop, TrainingPreempted)
from .preflight import PreflightError, preflight

__all__ = ['EpochSeedHook', 'KDModelWrapper', 'KDMultiOptimWrapperConstructor',
           'NonFiniteLossHook', 'PreemptionHook', 'PreflightError',
           'ReplicaCheckHook', 'ResumableEpochBasedTrainLoop',
           'ResumableIterBasedTrainLoop', 'TrainingPreempted',
           'StudentCheckpointHook', 'SyncGradAmpOptimWrapper',
           'SyncGradOptimWrapper', 'preflight']
