from .hooks import EpochSeedHook
from .preflight import PreflightError, preflight

__all__ = ['EpochSeedHook', 'PreflightError', 'preflight']
