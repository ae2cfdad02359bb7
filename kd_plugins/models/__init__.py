from . import backbones, heads  # noqa: F401
from .atsc_head import ATSCSharedHead, SimKDProjector

__all__ = ['ATSCSharedHead', 'SimKDProjector']
