from . import backbones, heads  # noqa: F401
from .atsc_head import ATSCSharedHead, SimKDProjector
from .kd_layer import CosineConv1x1, KDLayer, KDLayerBackbone

__all__ = ['ATSCSharedHead', 'SimKDProjector', 'CosineConv1x1', 'KDLayer',
           'KDLayerBackbone']
