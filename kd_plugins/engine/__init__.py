from .hooks import EpochSeedHook
from .optim import KDMultiOptimWrapperConstructor
from .preflight import PreflightError, preflight

__all__ = ['EpochSeedHook', 'KDMultiOptimWrapperConstructor',
           'PreflightError', 'preflight']
