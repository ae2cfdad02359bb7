from . import backbones, heads  # noqa: F401
from .heads import AEKTHead, ATSCSharedHead, SimKDProjector
from .kd_layer import CosineConv1x1, KDLayer, KDLayerBackbone

__all__ = ['AEKTHead', 'ATSCSharedHead', 'SimKDProjector', 'CosineConv1x1',
           'KDLayer', 'KDLayerBackbone']
