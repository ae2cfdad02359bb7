from .aekt_head import AEKTHead
from .atsc_head import ATSCSharedHead, SimKDProjector

__all__ = ['AEKTHead', 'ATSCSharedHead', 'SimKDProjector']
